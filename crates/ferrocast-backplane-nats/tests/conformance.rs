//! The backplane conformance suite against a real nats-server.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use ferrocast_core::backplane::{conformance, Backplane};
use ferrocast_testkit::NatsServer;

/// A nats-server, and a factory of nodes on it.
fn cluster() -> (NatsServer, conformance::Attach) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = NatsServer::start();
    let url = server.url();
    let attach: conformance::Attach = Box::new(move |id, sink| {
        let settings = common::settings(&url, Duration::from_secs(5));
        async move { Arc::new(common::start_up(id, settings, sink).await) as Arc<dyn Backplane> }
            .boxed()
    });
    (server, attach)
}

/// The conformance suite, one test per guarantee.
mod conforms {
    ferrocast_core::backplane_conformance_tests!(super::cluster());
}

/// Another prefix is another cluster: nodes on different prefixes of the same
/// NATS server do not see each other's publications.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subject_prefix_separates_clusters() {
    let server = NatsServer::start();
    let url = server.url();
    let mut other = common::settings(&url, Duration::from_secs(5));
    other.subject_prefix = "other.cluster".to_string();

    let a_id = common::node_id("a");
    let a = common::start_up(
        a_id.clone(),
        common::settings(&url, Duration::from_secs(5)),
        common::Sink::new(),
    )
    .await;
    let same_sink = common::Sink::new();
    let same = common::start_up(
        common::node_id("b"),
        common::settings(&url, Duration::from_secs(5)),
        same_sink.clone(),
    )
    .await;
    let other_sink = common::Sink::new();
    let other = common::start_up(common::node_id("c"), other, other_sink.clone()).await;

    let f = common::filter("prefix.>");
    same.subscribe(vec![f.clone()]).await.unwrap();
    other.subscribe(vec![f.clone()]).await.unwrap();
    a.publish(common::publication("prefix.x", "1", &a_id), None)
        .await
        .unwrap();
    assert!(same_sink.wait_for(1, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(other_sink.len(), 0, "a node on another prefix received");
}
