//! Interest is in place when subscribe completes, gone when the backplane is
//! dropped; oversized publications are refused, with or without history.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;

use ferrocast_core::backplane::{Backplane, BackplaneError, HistoryPolicy};
use ferrocast_core::Publication;
use ferrocast_testkit::NatsServer;

use common::{publication, Sink};

/// `subscribe` completes only once the server has processed the SUB: a
/// publication from another node right after it is received, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_is_in_place_when_it_completes() {
    let server = NatsServer::start();
    let timeout = Duration::from_secs(5);
    let common::Pair {
        publisher_id,
        publisher,
        subscriber,
        sink,
    } = common::start_pair("sync", &server.url(), &server.url(), timeout).await;
    const ROUNDS: usize = 200;
    for i in 0..ROUNDS {
        let name = format!("sync.t{i}");
        subscriber
            .subscribe(vec![common::filter(&name)])
            .await
            .unwrap();
        publisher
            .publish(publication(&name, "1", &publisher_id), None)
            .await
            .unwrap();
    }
    assert!(
        sink.wait_for(ROUNDS, Duration::from_secs(5)).await,
        "only {} of {ROUNDS} publications made right after subscribe arrived",
        sink.len()
    );
}

/// Dropping a backplane closes its connection: the server forgets its
/// subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_removes_subscriptions_from_the_server() {
    let server = NatsServer::start();
    let empty = common::server_subscriptions(server.monitor()).await;

    let backplane = common::start_up(
        common::node_id("drop"),
        common::settings(&server.url(), Duration::from_secs(5)),
        Sink::new(),
    )
    .await;
    let filters: Vec<_> = ["drop.a", "drop.*", "drop.>"]
        .into_iter()
        .map(common::filter)
        .collect();
    backplane.subscribe(filters.clone()).await.unwrap();
    let subscribed = common::server_subscriptions(server.monitor()).await;
    assert!(
        subscribed >= empty + 3,
        "server holds {subscribed} subscriptions, {empty} before subscribing 3"
    );
    // Unsubscribing one removes it from the server before completing.
    backplane
        .unsubscribe(vec![filters[0].clone()])
        .await
        .unwrap();
    assert_eq!(
        common::server_subscriptions(server.monitor()).await,
        subscribed - 1
    );

    drop(backplane);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = subscribed;
    while Instant::now() < deadline {
        now = common::server_subscriptions(server.monitor()).await;
        if now == empty {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        now, empty,
        "subscriptions left on the server after the drop"
    );
}

/// A publication larger than the server's max_payload is refused with a
/// reason, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuses_oversized_publications() {
    let server = NatsServer::start();
    let id = common::node_id("big");
    let backplane = common::start_up(
        id.clone(),
        common::settings(&server.url(), Duration::from_secs(5)),
        Sink::new(),
    )
    .await;
    let big = Publication::new(
        common::topic("big.a"),
        Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
        id.clone(),
    );
    let policy = HistoryPolicy {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    for history in [None, Some(policy)] {
        let result = backplane.publish(big.clone(), history).await;
        assert!(
            matches!(result, Err(BackplaneError::Rejected(_))),
            "{history:?}: {result:?}"
        );
    }
    // The connection is still fine.
    backplane
        .publish(publication("big.a", "1", &id), None)
        .await
        .unwrap();
}

/// A filter unsubscribed and subscribed again without waiting in between,
/// many times, while another filter's messages keep flowing: every
/// publication made after the last subscribe completed arrives once (the
/// cancelled subscription forwards nothing more, the new one everything), and
/// the other filter loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filter_subscribed_again_at_once_delivers_each_publication_once() {
    let server = NatsServer::start();
    let common::Pair {
        publisher_id,
        publisher,
        subscriber,
        sink,
    } = common::start_pair(
        "again",
        &server.url(),
        &server.url(),
        Duration::from_secs(5),
    )
    .await;
    let steady = common::filter("again.steady");
    let flapping = common::filter("again.flap");
    subscriber
        .subscribe(vec![steady.clone(), flapping.clone()])
        .await
        .unwrap();
    const ROUNDS: usize = 50;
    for i in 0..ROUNDS {
        // Not awaited before the subscribe: the hub may overlap them too.
        let unsubscribed = subscriber.unsubscribe(vec![flapping.clone()]);
        let subscribed = subscriber.subscribe(vec![flapping.clone()]);
        publisher
            .publish(
                publication("again.steady", &i.to_string(), &publisher_id),
                None,
            )
            .await
            .unwrap();
        unsubscribed.await.unwrap();
        subscribed.await.unwrap();
    }
    const AFTER: usize = 20;
    for i in 0..AFTER {
        publisher
            .publish(
                publication("again.flap", &i.to_string(), &publisher_id),
                None,
            )
            .await
            .unwrap();
    }
    assert!(
        sink.wait_for(ROUNDS + AFTER, Duration::from_secs(5)).await,
        "only {} of {} publications arrived",
        sink.len(),
        ROUNDS + AFTER
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = sink.all();
    let payloads = |filter: &ferrocast_protocol::TopicFilter| -> Vec<String> {
        all.iter()
            .filter(|(f, _)| f == filter)
            .map(|(_, p)| String::from_utf8_lossy(&p.payload).into_owned())
            .collect()
    };
    let expected = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
    assert_eq!(
        payloads(&steady),
        expected(ROUNDS),
        "the steady filter, in order"
    );
    assert_eq!(
        payloads(&flapping),
        expected(AFTER),
        "the re-subscribed filter, once each"
    );
}
