//! What other NATS clients put on the backplane's subjects: garbage is
//! counted and dropped, an envelope with this node's own origin is dropped.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusBuilder;

use ferrocast_core::backplane::{envelope, Backplane};
use ferrocast_core::metrics as names;
use ferrocast_testkit::{metric, NatsServer};

use common::{publication, Sink};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drops_garbage_and_own_origin() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    let server = NatsServer::start();
    let id = common::node_id("guarded");
    let sink = Sink::new();
    let node = common::start_up(
        id.clone(),
        common::settings(&server.url(), Duration::from_secs(5)),
        sink.clone(),
    )
    .await;
    node.subscribe(vec![common::filter("foreign.*")])
        .await
        .unwrap();

    // A plain NATS client, as any other application on the account could be.
    let raw = async_nats::connect(server.url()).await.unwrap();
    raw.publish(
        "ferrocast.foreign.a",
        Bytes::from_static(b"\xff\xff not protobuf"),
    )
    .await
    .unwrap();
    // A valid envelope whose topic is not the subject's.
    raw.publish(
        "ferrocast.foreign.b",
        envelope::encode(&publication("elsewhere.b", "1", &common::node_id("other"))),
    )
    .await
    .unwrap();
    // A valid envelope claiming to come from this node: no_echo cannot stop
    // it (another connection sent it); the origin check does.
    raw.publish(
        "ferrocast.foreign.c",
        envelope::encode(&publication("foreign.c", "1", &id)),
    )
    .await
    .unwrap();
    // And one that is fine.
    raw.publish(
        "ferrocast.foreign.d",
        envelope::encode(&publication(
            "foreign.d",
            "\"ok\"",
            &common::node_id("other"),
        )),
    )
    .await
    .unwrap();
    raw.flush().await.unwrap();

    assert!(sink.wait_for(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.all();
    assert_eq!(got.len(), 1, "delivered: {got:?}");
    assert_eq!(got[0].1.topic.as_str(), "foreign.d");

    let text = metrics.render();
    assert_eq!(
        metric(&text, names::BACKPLANE_ERRORS, &[("op", "decode")]),
        2.0,
        "{text}"
    );
    assert_eq!(metric(&text, names::BACKPLANE_RECEIVED, &[]), 1.0, "{text}");
    assert!(*node.health().borrow(), "garbage took the backplane down");
}

/// The documented limitation of the round trip: a foreign subscriber on `>`
/// swallows it, so subscribe cannot be confirmed and fails with `Timeout`
/// after the timeout; the interest is applied nonetheless, and the backplane
/// still reports up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_catch_all_subscriber_delays_confirmation_only() {
    let server = NatsServer::start();
    let raw = async_nats::connect(server.url()).await.unwrap();
    let _catch_all = raw.subscribe(">").await.unwrap();
    raw.flush().await.unwrap();

    let timeout = Duration::from_millis(500);
    let common::Pair {
        publisher_id,
        publisher,
        subscriber,
        sink,
    } = common::start_pair("catchall", &server.url(), &server.url(), timeout).await;
    let result = subscriber
        .subscribe(vec![common::filter("catchall.a")])
        .await;
    assert_eq!(
        result,
        Err(ferrocast_core::backplane::BackplaneError::Timeout(timeout))
    );
    publisher
        .publish(publication("catchall.a", "1", &publisher_id), None)
        .await
        .unwrap();
    assert!(sink.wait_for(1, Duration::from_secs(5)).await);
}
