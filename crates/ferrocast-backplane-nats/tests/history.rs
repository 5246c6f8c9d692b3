//! History in JetStream beyond the conformance suite: it survives a crash of
//! the server (and a backlog of appends fails fast then), a stream deleted by an operator is made again, a policy change
//! reaches the stream without undoing what an operator set, and a stream
//! that takes the history subjects is reported.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::stream::Config;

use ferrocast_backplane_nats::NatsBackplane;
use ferrocast_core::backplane::{Backplane, BackplaneError, HistoryPolicy};
use ferrocast_core::NodeId;
use ferrocast_protocol::StreamPosition;
use ferrocast_testkit::NatsServer;

use common::{publication, Sink};

const POLICY: HistoryPolicy = HistoryPolicy {
    size: 10,
    ttl: Duration::from_secs(60),
};

/// The stream of namespace `ns` under the default prefix.
fn stream_name(namespace: &str) -> String {
    format!("ferrocast_H_{namespace}")
}

async fn node(server: &NatsServer, name: &str) -> (NodeId, NatsBackplane) {
    let id = common::node_id(name);
    let backplane = common::start_up(
        id.clone(),
        common::settings(&server.url(), Duration::from_secs(5)),
        Sink::new(),
    )
    .await;
    (id, backplane)
}

async fn publish_kept(
    backplane: &NatsBackplane,
    id: &NodeId,
    topic: &str,
    policy: HistoryPolicy,
) -> Result<StreamPosition, BackplaneError> {
    backplane
        .publish(publication(topic, "\"x\"", id), Some(policy))
        .await
        .map(|position| position.unwrap())
}

async fn operator(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

/// JetStream keeps the history on disk: after the server was killed and
/// restarted, the node reads it and continues its offsets in the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_survives_a_crash_of_the_server() {
    let mut server = NatsServer::start();
    let (id, backplane) = node(&server, "crash").await;
    for offset in 1..=3 {
        let position = publish_kept(&backplane, &id, "crash.t", POLICY)
            .await
            .unwrap();
        assert_eq!(position.offset, offset);
    }
    let epoch = publish_kept(&backplane, &id, "crash.t", POLICY)
        .await
        .unwrap()
        .epoch;

    // A backlog of appends on one topic when the server dies: the one in
    // flight waits for its timeout at most, the others fail at once.
    let backlog: Vec<_> = (0..500)
        .map(|_| backplane.publish(publication("crash.backlog", "1", &id), Some(POLICY)))
        .collect();
    server.kill9();
    let killed = Instant::now();
    let outcomes = futures::future::join_all(backlog).await;
    assert!(
        killed.elapsed() < Duration::from_secs(7),
        "the backlog took {:?} to fail",
        killed.elapsed()
    );
    assert!(outcomes.iter().any(Result::is_err), "nothing failed");
    let mut health = backplane.health();
    assert!(
        common::wait_health(&mut health, false, Duration::from_secs(10))
            .await
            .is_some()
    );
    let during = publish_kept(&backplane, &id, "crash.t", POLICY).await;
    assert!(
        matches!(during, Err(BackplaneError::Unavailable(_))),
        "{during:?}"
    );
    server.restart();
    assert!(
        common::wait_health(&mut health, true, Duration::from_secs(10))
            .await
            .is_some()
    );

    let page = backplane
        .history(&common::topic("crash.t"), POLICY, 0)
        .await
        .unwrap();
    assert_eq!(
        (page.epoch.as_str(), page.top, page.oldest),
        (epoch.as_str(), 4, 1)
    );
    assert_eq!(page.publications.len(), 4);
    let next = publish_kept(&backplane, &id, "crash.t", POLICY)
        .await
        .unwrap();
    assert_eq!(next, StreamPosition { epoch, offset: 5 });
}

/// A stream deleted while a node knew its topics' last messages is made
/// again on the next publication, which starts a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_stream_is_made_again() {
    let server = NatsServer::start();
    let (id, backplane) = node(&server, "deleted").await;
    let first = publish_kept(&backplane, &id, "gone.t", POLICY)
        .await
        .unwrap();
    publish_kept(&backplane, &id, "gone.t", POLICY)
        .await
        .unwrap();
    operator(&server)
        .await
        .delete_stream(stream_name("gone"))
        .await
        .unwrap();
    let page = backplane
        .history(&common::topic("gone.t"), POLICY, 0)
        .await
        .unwrap();
    assert_eq!((page.top, page.publications.len()), (0, 0));
    let again = publish_kept(&backplane, &id, "gone.t", POLICY)
        .await
        .unwrap();
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, first.epoch);
}

/// A namespace's new policy becomes the stream's limits; limits the policy
/// does not cover, set by an operator, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_change_updates_the_stream() {
    let server = NatsServer::start();
    let (id, backplane) = node(&server, "policy").await;
    publish_kept(&backplane, &id, "policy.t", POLICY)
        .await
        .unwrap();
    let js = operator(&server).await;
    let mut stream = js.get_stream(stream_name("policy")).await.unwrap();
    let mut config: Config = stream.info().await.unwrap().config.clone();
    assert_eq!(
        (config.max_messages_per_subject, config.max_age),
        (10, POLICY.ttl)
    );
    config.max_bytes = 1 << 20;
    js.update_stream(config).await.unwrap();

    // Another node, which has not seen the stream yet, with a new policy.
    let (other_id, other) = node(&server, "policy2").await;
    let smaller = HistoryPolicy {
        size: 2,
        ttl: Duration::from_secs(30),
    };
    let position = publish_kept(&other, &other_id, "policy.t", smaller)
        .await
        .unwrap();
    assert_eq!(position.offset, 2);
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(
        (
            config.max_messages_per_subject,
            config.max_age,
            config.max_bytes
        ),
        (2, smaller.ttl, 1 << 20)
    );
}

/// A stream of another application that takes the history subjects makes
/// history fail with JetStream's reason, and publications without history
/// still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_stream_on_the_history_subjects_is_reported() {
    let server = NatsServer::start();
    operator(&server)
        .await
        .create_stream(Config {
            name: "FOREIGN".to_string(),
            subjects: vec!["ferrocast-history.>".to_string()],
            ..Config::default()
        })
        .await
        .unwrap();
    let (id, backplane) = node(&server, "foreign").await;
    let result = publish_kept(&backplane, &id, "taken.t", POLICY).await;
    match result {
        Err(BackplaneError::Rejected(reason)) => {
            assert!(reason.contains("overlap"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    backplane
        .publish(publication("taken.t", "1", &id), None)
        .await
        .unwrap();
}
