//! The Redis backplane on a real Redis Cluster (three masters, three
//! replicas): the conformance suite, channels and history routed to the
//! master of their slot, wildcards refused, and a master killed under a
//! stream of history publications.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use common::{filter, init_tracing, publication};
use ferrocast_backplane_redis::{RedisBackplane, RedisSettings};
use ferrocast_core::backplane::{conformance, Backplane, BackplaneError, PublicationSink};
use ferrocast_core::NodeId;
use ferrocast_testkit::RedisCluster;

fn settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_string(),
        timeout: Duration::from_secs(5),
        ..RedisSettings::default()
    }
}

/// Starts a node on the cluster and waits until it reports up.
async fn start_up(
    id: NodeId,
    settings: RedisSettings,
    sink: Arc<dyn PublicationSink>,
) -> RedisBackplane {
    let backplane = RedisBackplane::start(id.clone(), settings, sink)
        .await
        .unwrap();
    let mut health = backplane.health();
    let up = tokio::time::timeout(Duration::from_secs(15), health.wait_for(|up| *up)).await;
    assert!(up.is_ok_and(|r| r.is_ok()), "{id} did not connect");
    backplane
}

/// A Redis Cluster, and a factory of nodes that get its URL.
fn cluster() -> (RedisCluster, conformance::Attach) {
    init_tracing();
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let attach: conformance::Attach = Box::new(move |id, sink| {
        let settings = settings(&url);
        async move { Arc::new(start_up(id, settings, sink).await) as Arc<dyn Backplane> }.boxed()
    });
    (cluster, attach)
}

/// The conformance suite, unchanged, one test per guarantee; except the three
/// guarantees that subscribe wildcard filters
/// (`wildcards_follow_topic_semantics`, `unsubscribe_stops_delivery`,
/// `history_keeps_every_field_and_separates_topics`), which a Redis Cluster
/// refuses: sharded pub/sub has no pattern subscriptions, and classic
/// pub/sub would broadcast every message to every member.
/// `wildcards_are_refused_with_a_clear_error` checks the refusal.
mod conforms {
    ferrocast_core::backplane_conformance_tests!(@each super::cluster();
        routes_only_to_interested_nodes,
        own_publications_are_not_delivered_back,
        keeps_order_per_topic_and_publisher,
        history_positions_are_contiguous_and_shared,
        history_keeps_the_newest,
        history_follows_the_policy_it_is_read_with,
        history_offsets_are_unique_under_concurrent_publishers,
        history_is_shared_with_a_node_that_joins_later,
        history_expires_into_a_new_epoch,
        presence_is_shared_and_removed,
        presence_expires_unless_refreshed,
        presence_events_reach_subscribed_nodes,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_are_refused_with_a_clear_error() {
    let (_cluster, attach) = cluster();
    let node = attach(
        NodeId::from("wild"),
        Arc::new(conformance::RecordingSink::default()),
    )
    .await;
    let refused = node.subscribe(vec![filter("room.*")]).await;
    assert_eq!(
        refused,
        Err(BackplaneError::Rejected(
            "wildcard subscriptions are not available on a Redis Cluster \
             (sharded pub/sub has no pattern subscriptions)"
                .to_string()
        ))
    );
}

/// The slot of `key`, as the cluster computes it.
fn slot(cluster: &RedisCluster, key: &str) -> u16 {
    let reply = cluster.command(0, &["CLUSTER", "KEYSLOT", key]).unwrap();
    reply.trim().trim_start_matches(':').parse().unwrap()
}

/// Topics spread over every master reach the subscribed node; after kill -9
/// of a master, its replica takes over and every topic is delivered again,
/// without the nodes being told anything: the publisher's failed
/// publications are retried by the test, the subscriber subscribes again
/// by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_of_every_master_survive_a_master_killed() {
    init_tracing();
    let mut cluster = RedisCluster::start();
    let sink = Arc::new(conformance::RecordingSink::default());
    let url = cluster.url();
    let publisher = start_up(
        NodeId::from("pub"),
        settings(&url),
        Arc::new(conformance::RecordingSink::default()),
    )
    .await;
    let subscriber = start_up(NodeId::from("sub"), settings(&url), sink.clone()).await;
    let topics: Vec<String> = (0..60).map(|i| format!("spread.t{i}")).collect();
    let mut owners = std::collections::BTreeSet::new();
    for topic in &topics {
        owners.insert(cluster.master_of_slot(slot(&cluster, &format!("ferrocast:{topic}"))));
    }
    assert_eq!(owners.len(), 3, "the topics do not spread over 3 masters");
    subscriber
        .subscribe(topics.iter().map(|t| filter(t)).collect())
        .await
        .unwrap();

    async fn publish_each(publisher: &RedisBackplane, topics: &[String], round: &str) {
        for topic in topics {
            publisher
                .publish(publication(topic, round, "pub"), None)
                .await
                .unwrap();
        }
    }
    publish_each(&publisher, &topics, "before").await;
    sink.wait_for(topics.len()).await;

    let victim = cluster
        .master_of_slot(slot(&cluster, &format!("ferrocast:{}", topics[0])))
        .unwrap();
    let (cluster, took) = tokio::task::spawn_blocking(move || {
        let (_, took) = cluster.kill9_master(victim);
        (cluster, took)
    })
    .await
    .unwrap();
    eprintln!("the replica took over {took:?} after the kill");

    // Every topic delivered again, within 20 s of the promotion.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut missing: Vec<String> = topics.clone();
    let mut round = 0;
    while !missing.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} topics not delivered after the failover: {missing:?}",
            missing.len()
        );
        round += 1;
        let payload = format!("after{round}");
        // All at once: a publication routed to the dead master waits up to
        // the timeout.
        futures::future::join_all(
            missing
                .iter()
                .map(|topic| publisher.publish(publication(topic, &payload, "pub"), None)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = sink.settled().await;
        missing.retain(|topic| {
            !got.iter()
                .any(|(_, p)| p.topic.as_str() == topic && p.payload.starts_with(b"after"))
        });
    }
    assert!(*publisher.health().borrow() && *subscriber.health().borrow());
    drop(cluster);
}

/// A topic's slot handed to another master (as a resharding does): the old
/// master unsubscribes the node, which subscribes again on the new one, and
/// publications, redirected there with `MOVED`, are delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_follows_its_slot_to_another_master() {
    init_tracing();
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let sink = Arc::new(conformance::RecordingSink::default());
    let publisher = start_up(
        NodeId::from("pub"),
        settings(&url),
        Arc::new(conformance::RecordingSink::default()),
    )
    .await;
    let subscriber = start_up(NodeId::from("sub"), settings(&url), sink.clone()).await;
    const TOPIC: &str = "moving.t";
    subscriber.subscribe(vec![filter(TOPIC)]).await.unwrap();
    publisher
        .publish(publication(TOPIC, "before", "pub"), None)
        .await
        .unwrap();
    sink.wait_for(1).await;

    let slot = slot(&cluster, &format!("ferrocast:{TOPIC}"));
    let from = cluster.master_of_slot(slot).unwrap();
    let to = cluster.masters().into_iter().find(|m| *m != from).unwrap();
    let id = |i: usize| {
        let reply = cluster.command(i, &["CLUSTER", "MYID"]).unwrap();
        reply.lines().nth(1).unwrap().to_string()
    };
    let (from_id, to_id) = (id(from), id(to));
    let slot_text = slot.to_string();
    let set = |i: usize, args: &[&str]| {
        let mut command = vec!["CLUSTER", "SETSLOT", slot_text.as_str()];
        command.extend_from_slice(args);
        let reply = cluster.command(i, &command).unwrap();
        assert!(reply.starts_with("+OK"), "{command:?}: {reply}");
    };
    set(to, &["IMPORTING", &from_id]);
    set(from, &["MIGRATING", &to_id]);
    // The topic has no keys (no history) to migrate: hand the slot over.
    for master in cluster.masters() {
        set(master, &["NODE", &to_id]);
    }
    assert_eq!(cluster.master_of_slot(slot), Some(to));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut round = 0;
    loop {
        round += 1;
        let _ = publisher
            .publish(publication(TOPIC, &format!("after{round}"), "pub"), None)
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = sink.settled().await;
        if got.iter().any(|(_, p)| p.payload.starts_with(b"after")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing delivered after the slot moved ({round} publications)"
        );
    }
    assert!(*subscriber.health().borrow());
}
