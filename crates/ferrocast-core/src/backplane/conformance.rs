//! The conformance suite every [`Backplane`] implementation runs unchanged.
//!
//! Each guarantee written in the [`super`] module docs is a public async
//! function of this module that runs on a [`Cluster`]: three nodes that an
//! [`Attach`] factory attached to one shared cluster (the same bus, the same
//! Redis, the same NATS). It panics with a description on the first violation.
//! [`backplane_conformance_tests!`](crate::backplane_conformance_tests) turns
//! the suite into one test per guarantee for an implementation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;

use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

use ferrocast_protocol::PRESENCE_CONTENT_TYPE;

use super::{Backplane, HistoryPage, HistoryPolicy, PresenceEntry, PublicationSink};
use crate::publication::{unix_micros, NodeId, Publication};

/// How long to wait for something that must arrive.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to watch for something that must not arrive.
const SILENCE: Duration = Duration::from_millis(300);

/// A sink that records what it receives.
#[derive(Debug, Default)]
pub struct RecordingSink {
    received: Mutex<Vec<(TopicFilter, Publication)>>,
    changed: Notify,
}

impl RecordingSink {
    /// Waits until at least `n` deliveries arrived, then returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<(TopicFilter, Publication)> {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let notified = self.changed.notified();
            {
                let received = self.received.lock();
                if received.len() >= n {
                    return received.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.received.lock().len();
                panic!("expected {n} deliveries within {ARRIVAL_TIMEOUT:?}, got {got}");
            }
        }
    }

    /// Everything received so far, after waiting [`SILENCE`] for stragglers.
    pub async fn settled(&self) -> Vec<(TopicFilter, Publication)> {
        tokio::time::sleep(SILENCE).await;
        self.received.lock().clone()
    }

    pub fn clear(&self) {
        self.received.lock().clear();
    }
}

impl PublicationSink for RecordingSink {
    fn deliver(&self, filter: &TopicFilter, publication: Publication) {
        self.received.lock().push((filter.clone(), publication));
        self.changed.notify_waiters();
    }
}

struct Node {
    id: NodeId,
    backplane: Arc<dyn Backplane>,
    sink: Arc<RecordingSink>,
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn topic(s: &str) -> Topic {
    Topic::parse(s, MAX_TOPIC_LEN).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn publication(topic_name: &str, payload: &str, origin: &Node) -> Publication {
    Publication::new(
        topic(topic_name),
        Bytes::copy_from_slice(payload.as_bytes()),
        origin.id.clone(),
    )
}

/// Attaches a new node to the cluster under test: called with the node's id
/// and the sink it delivers to, it returns the node's backplane once it is up.
/// Boxed, so that [`Cluster`] and every guarantee stay free of the factory's
/// type.
pub type Attach = Box<
    dyn Fn(NodeId, Arc<dyn PublicationSink>) -> BoxFuture<'static, Arc<dyn Backplane>>
        + Send
        + Sync,
>;

/// Three nodes attached to one cluster (the same bus, the same Redis, the same
/// NATS), and the means to attach more: what every guarantee runs on.
pub struct Cluster {
    nodes: Vec<Node>,
    /// Prefix of every topic and node id, so that clusters sharing a server do
    /// not interfere.
    run_id: String,
    attach: Attach,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("run_id", &self.run_id)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Attaches three nodes with `attach` and checks that each reports up.
    pub async fn start(attach: Attach) -> Self {
        let run_id = format!("conf{}", unix_micros());
        let mut cluster = Self {
            nodes: Vec::new(),
            run_id,
            attach,
        };
        for i in 0..3 {
            let node = cluster.attach_node(&format!("node{i}")).await;
            assert!(
                *node.backplane.health().borrow(),
                "a fresh {} backplane reports down",
                node.backplane.kind()
            );
            cluster.nodes.push(node);
        }
        cluster
    }

    async fn attach_node(&self, name: &str) -> Node {
        let id: NodeId = Arc::from(format!("{}-{name}", self.run_id));
        let sink = Arc::new(RecordingSink::default());
        Node {
            backplane: (self.attach)(id.clone(), sink.clone()).await,
            id,
            sink,
        }
    }
}

/// One `#[tokio::test]` per guarantee of the suite, named after it, so that a
/// failure names the guarantee and each can run (and be filtered) alone.
///
/// `$setup` is evaluated in each test and yields `(guard, attach)`: `guard`
/// keeps what the cluster needs (a server process) alive for the test, and
/// `attach` (an [`Attach`]) attaches nodes to it.
#[macro_export]
macro_rules! backplane_conformance_tests {
    ($setup:expr) => {
        $crate::backplane_conformance_tests!(@each $setup;
            routes_only_to_interested_nodes,
            own_publications_are_not_delivered_back,
            keeps_order_per_topic_and_publisher,
            wildcards_follow_topic_semantics,
            unsubscribe_stops_delivery,
            history_positions_are_contiguous_and_shared,
            history_keeps_the_newest,
            history_follows_the_policy_it_is_read_with,
            history_keeps_every_field_and_separates_topics,
            history_offsets_are_unique_under_concurrent_publishers,
            history_is_shared_with_a_node_that_joins_later,
            history_expires_into_a_new_epoch,
            presence_is_shared_and_removed,
            presence_expires_unless_refreshed,
            presence_events_reach_subscribed_nodes,
        );
    };
    (@each $setup:expr; $($guarantee:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $guarantee() {
            let (_guard, attach) = $setup;
            let cluster = $crate::backplane::conformance::Cluster::start(attach).await;
            $crate::backplane::conformance::$guarantee(&cluster).await;
        }
    )+};
}

async fn subscribe(node: &Node, filters: &[&TopicFilter]) {
    let filters = filters.iter().map(|f| (*f).clone()).collect();
    if let Err(e) = node.backplane.subscribe(filters).await {
        panic!("subscribe failed: {e}");
    }
}

async fn unsubscribe(node: &Node, filters: &[&TopicFilter]) {
    let filters = filters.iter().map(|f| (*f).clone()).collect();
    if let Err(e) = node.backplane.unsubscribe(filters).await {
        panic!("unsubscribe failed: {e}");
    }
}

async fn publish(node: &Node, p: Publication) {
    if let Err(e) = node.backplane.publish(p, None).await {
        panic!("publish failed: {e}");
    }
}

async fn publish_kept(node: &Node, p: Publication, policy: HistoryPolicy) -> StreamPosition {
    match node.backplane.publish(p, Some(policy)).await {
        Ok(Some(position)) => position,
        Ok(None) => panic!("a publication with history got no position"),
        Err(e) => panic!("publish with history failed: {e}"),
    }
}

/// Publishes the payloads "1" to "`count`" on `name` from `node`, one after
/// the other.
async fn publish_numbered(node: &Node, name: &str, count: usize, policy: HistoryPolicy) {
    for i in 1..=count {
        publish_kept(node, publication(name, &i.to_string(), node), policy).await;
    }
}

async fn history(node: &Node, name: &str, policy: HistoryPolicy, after: u64) -> HistoryPage {
    match node.backplane.history(&topic(name), policy, after).await {
        Ok(page) => page,
        Err(e) => panic!("history of {name} failed: {e}"),
    }
}

fn payloads(publications: &[Publication]) -> Vec<String> {
    publications
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications
        .iter()
        .map(|p| p.position.as_ref().map_or(0, |pos| pos.offset))
        .collect()
}

/// A policy that keeps `size` publications for a minute.
fn kept_a_minute(size: usize) -> HistoryPolicy {
    HistoryPolicy {
        size,
        ttl: Duration::from_secs(60),
    }
}

fn position(epoch: &str, offset: u64) -> StreamPosition {
    StreamPosition {
        epoch: epoch.to_string(),
        offset,
    }
}

fn clear(nodes: &[Node]) {
    nodes.iter().for_each(|n| n.sink.clear());
}

pub async fn routes_only_to_interested_nodes(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let name = format!("{run_id}.route");
    let f = filter(&name);
    subscribe(&nodes[1], &[&f]).await;
    let mut sent = publication(&name, r#"{"n":1,"s":"a:b@c=d"}"#, &nodes[0]);
    sent.content_type = Some(Arc::from("application/octet-stream"));
    sent.headers = vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())];
    sent.position = Some(ferrocast_protocol::StreamPosition {
        epoch: "ep".into(),
        offset: 7,
    });
    publish(&nodes[0], sent.clone()).await;

    let got = nodes[1].sink.wait_for(1).await;
    assert_eq!(got.len(), 1, "the subscribed node got {} copies", got.len());
    let (via, received) = &got[0];
    assert_eq!(via, &f, "delivered with the wrong filter");
    assert_eq!(received.topic, sent.topic);
    assert_eq!(received.payload, sent.payload, "payload changed in transit");
    assert_eq!(
        received.content_type, sent.content_type,
        "content type changed in transit"
    );
    assert_eq!(received.headers, sent.headers, "headers changed in transit");
    assert_eq!(
        received.position, sent.position,
        "position changed in transit"
    );
    assert_eq!(received.origin, sent.origin, "origin changed in transit");
    assert_eq!(
        received.published_at_micros, sent.published_at_micros,
        "publish time changed in transit"
    );

    assert!(
        nodes[0].sink.settled().await.is_empty(),
        "the publishing node has no interest but received"
    );
    assert!(
        nodes[2].sink.settled().await.is_empty(),
        "a node without interest received"
    );
    unsubscribe(&nodes[1], &[&f]).await;
}

pub async fn own_publications_are_not_delivered_back(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let name = format!("{run_id}.own");
    let f = filter(&name);
    subscribe(&nodes[0], &[&f]).await;
    subscribe(&nodes[1], &[&f]).await;
    publish(&nodes[0], publication(&name, "1", &nodes[0])).await;
    nodes[1].sink.wait_for(1).await;
    let others = nodes[1].sink.settled().await.len();
    assert_eq!(others, 1, "another node got it {others} times");
    assert!(
        nodes[0].sink.settled().await.is_empty(),
        "own publication delivered back"
    );
    unsubscribe(&nodes[0], &[&f]).await;
    unsubscribe(&nodes[1], &[&f]).await;
}

pub async fn keeps_order_per_topic_and_publisher(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let name = format!("{run_id}.order");
    let f = filter(&name);
    subscribe(&nodes[1], &[&f]).await;
    subscribe(&nodes[2], &[&f]).await;
    const N: usize = 2_000;
    // Futures are created in order and awaited together: the order of the
    // publish calls is what counts.
    let pending: Vec<_> = (0..N)
        .map(|i| {
            nodes[0]
                .backplane
                .publish(publication(&name, &i.to_string(), &nodes[0]), None)
        })
        .collect();
    for result in futures::future::join_all(pending).await {
        if let Err(e) = result {
            panic!("publish failed: {e}");
        }
    }
    for node in &nodes[1..] {
        let got = node.sink.wait_for(N).await;
        let order: Vec<usize> = got
            .iter()
            .map(|(_, p)| {
                std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(usize::MAX)
            })
            .collect();
        let expected: Vec<usize> = (0..N).collect();
        assert!(
            order == expected,
            "publications arrived out of order or altered"
        );
    }
    unsubscribe(&nodes[1], &[&f]).await;
    unsubscribe(&nodes[2], &[&f]).await;
}

pub async fn wildcards_follow_topic_semantics(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let star = filter(&format!("{run_id}.wild.*"));
    let tail = filter(&format!("{run_id}.wild.>"));
    let exact = filter(&format!("{run_id}.wild.a"));
    let mid = filter(&format!("{run_id}.*.a"));
    subscribe(&nodes[1], &[&star, &tail, &exact, &mid]).await;

    // Not matched by any filter.
    publish(
        &nodes[0],
        publication(&format!("{run_id}.wild"), "0", &nodes[0]),
    )
    .await;
    publish(
        &nodes[0],
        publication(&format!("{run_id}.wildx.b"), "0", &nodes[0]),
    )
    .await;
    // Matched by all four.
    publish(
        &nodes[0],
        publication(&format!("{run_id}.wild.a"), "1", &nodes[0]),
    )
    .await;
    // Matched by `wild.>` only.
    publish(
        &nodes[0],
        publication(&format!("{run_id}.wild.a.b"), "2", &nodes[0]),
    )
    .await;
    // Matched by `wild.*` and `wild.>`.
    publish(
        &nodes[0],
        publication(&format!("{run_id}.wild.b"), "3", &nodes[0]),
    )
    .await;

    nodes[1].sink.wait_for(7).await;
    let got = nodes[1].sink.settled().await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|(f, p)| {
            (
                f.to_string(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (star.to_string(), "1".to_string()),
        (tail.to_string(), "1".to_string()),
        (exact.to_string(), "1".to_string()),
        (mid.to_string(), "1".to_string()),
        (tail.to_string(), "2".to_string()),
        (star.to_string(), "3".to_string()),
        (tail.to_string(), "3".to_string()),
    ];
    expected.sort();
    assert_eq!(
        seen, expected,
        "wildcard deliveries (filter, payload) differ"
    );
    unsubscribe(&nodes[1], &[&star, &tail, &exact, &mid]).await;
}

pub async fn unsubscribe_stops_delivery(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let name = format!("{run_id}.unsub");
    let f = filter(&name);
    let pattern = filter(&format!("{run_id}.unsub2.*"));
    subscribe(&nodes[1], &[&f, &pattern]).await;
    publish(&nodes[0], publication(&name, "1", &nodes[0])).await;
    nodes[1].sink.wait_for(1).await;
    unsubscribe(&nodes[1], &[&f, &pattern]).await;
    clear(nodes);
    publish(&nodes[0], publication(&name, "2", &nodes[0])).await;
    publish(
        &nodes[0],
        publication(&format!("{run_id}.unsub2.x"), "3", &nodes[0]),
    )
    .await;
    assert!(
        nodes[1].sink.settled().await.is_empty(),
        "delivered after unsubscribe"
    );
}

/// Offsets 1, 2, 3… in one epoch, whichever node publishes; other nodes
/// receive them with their positions, each once (also the one a node
/// publishes after another node's, which it has not seen); history returns
/// them in order.
pub async fn history_positions_are_contiguous_and_shared(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let policy = kept_a_minute(100);
    let name = format!("{run_id}h1.stream");
    let f = filter(&name);
    let empty = history(&nodes[2], &name, policy, 0).await;
    assert_eq!(
        (empty.epoch.as_str(), empty.top, empty.publications.len()),
        ("", 0, 0),
        "a topic never published to has history"
    );
    subscribe(&nodes[1], &[&f]).await;
    let mut positions = Vec::new();
    for i in 1..=3 {
        positions.push(
            publish_kept(
                &nodes[0],
                publication(&name, &i.to_string(), &nodes[0]),
                policy,
            )
            .await,
        );
    }
    positions.push(publish_kept(&nodes[2], publication(&name, "4", &nodes[2]), policy).await);
    positions.push(publish_kept(&nodes[0], publication(&name, "5", &nodes[0]), policy).await);
    let epoch = positions[0].epoch.clone();
    assert!(
        !epoch.is_empty(),
        "the epoch of a topic with history is empty"
    );
    assert_eq!(
        positions,
        (1..=5)
            .map(|offset| StreamPosition {
                epoch: epoch.clone(),
                offset
            })
            .collect::<Vec<_>>(),
        "positions are not contiguous in one epoch across nodes"
    );
    nodes[1].sink.wait_for(5).await;
    let got = nodes[1].sink.settled().await;
    let received: Vec<Publication> = got.into_iter().map(|(_, p)| p).collect();
    let mut by_offset = received.clone();
    by_offset.sort_by_key(|p| p.position.as_ref().map_or(0, |pos| pos.offset));
    assert_eq!(
        offsets(&by_offset),
        [1, 2, 3, 4, 5],
        "live deliveries lack their positions or came twice"
    );
    assert_eq!(payloads(&by_offset), ["1", "2", "3", "4", "5"]);
    assert!(
        nodes[0].sink.settled().await.is_empty(),
        "a publication with history was delivered back to its origin"
    );

    let page = history(&nodes[1], &name, policy, 0).await;
    assert_eq!(
        (page.epoch.as_str(), page.top, page.oldest),
        (epoch.as_str(), 5, 1)
    );
    assert_eq!(offsets(&page.publications), [1, 2, 3, 4, 5]);
    assert_eq!(payloads(&page.publications), ["1", "2", "3", "4", "5"]);
    assert_eq!(
        page.publications[3].origin, nodes[2].id,
        "history lost the origin"
    );
    let after = history(&nodes[0], &name, policy, 2).await;
    assert_eq!(
        offsets(&after.publications),
        [3, 4, 5],
        "history after offset 2"
    );
    assert_eq!(after.top, 5);
    unsubscribe(&nodes[1], &[&f]).await;
}

/// History is trimmed to its size, newest kept.
pub async fn history_keeps_the_newest(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    let policy = kept_a_minute(3);
    let name = format!("{run_id}h2.stream");
    publish_numbered(&nodes[0], &name, 5, policy).await;
    let page = history(&nodes[1], &name, policy, 0).await;
    assert_eq!(
        (page.top, page.oldest),
        (5, 3),
        "history not trimmed to its size"
    );
    assert_eq!(payloads(&page.publications), ["3", "4", "5"]);
}

/// A topic without a publication for the time-to-live loses its history; the
/// next publication starts a new epoch at offset 1.
pub async fn history_expires_into_a_new_epoch(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    let policy = HistoryPolicy {
        size: 10,
        ttl: Duration::from_secs(1),
    };
    let name = format!("{run_id}h3.stream");
    let first = publish_kept(&nodes[0], publication(&name, "1", &nodes[0]), policy).await;
    assert_eq!(history(&nodes[1], &name, policy, 0).await.top, 1);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let page = history(&nodes[1], &name, policy, 0).await;
    assert!(
        page.publications.is_empty(),
        "history older than its time-to-live was returned"
    );
    let next = publish_kept(&nodes[0], publication(&name, "2", &nodes[0]), policy).await;
    assert_eq!(next.offset, 1, "offsets did not restart after expiry");
    assert_ne!(
        next.epoch, first.epoch,
        "the epoch did not change after expiry"
    );
}

/// Reading with a smaller size or after the top gives what the policy and
/// the offset ask for, whatever was kept before.
pub async fn history_follows_the_policy_it_is_read_with(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    let policy = kept_a_minute(5);
    let name = format!("{run_id}h4.stream");
    publish_numbered(&nodes[0], &name, 5, policy).await;
    let smaller = HistoryPolicy { size: 2, ..policy };
    let page = history(&nodes[1], &name, smaller, 0).await;
    assert_eq!(
        (page.top, page.oldest),
        (5, 4),
        "history read with a smaller size"
    );
    assert_eq!(payloads(&page.publications), ["4", "5"]);
    for after in [5, 9] {
        let page = history(&nodes[2], &name, smaller, after).await;
        assert_eq!(page.top, 5, "top when reading after {after}");
        assert!(
            page.publications.is_empty(),
            "publications after offset {after} of 5"
        );
    }
}

/// History keeps every field of a publication; each topic has its own
/// offsets, also topics that extend one another and the one-token topic
/// that is just the namespace; wildcard subscribers get the positions too.
pub async fn history_keeps_every_field_and_separates_topics(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let policy = kept_a_minute(10);
    let namespace = format!("{run_id}h5");
    let short = format!("{namespace}.a");
    let long = format!("{namespace}.a.b");
    let everything = filter(&format!("{namespace}.>"));
    let just_namespace = filter(&namespace);
    subscribe(&nodes[1], &[&everything, &just_namespace]).await;

    let mut rich = publication(&short, "", &nodes[0]);
    rich.payload = Bytes::from((0..=255u8).collect::<Vec<_>>());
    rich.content_type = Some(Arc::from("application/octet-stream"));
    rich.headers = vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())];
    // A position given by the caller is replaced by the backplane's.
    rich.position = Some(position("caller", 99));
    let order = [
        (&short, rich.clone()),
        (&long, publication(&long, "long1", &nodes[0])),
        (&namespace, publication(&namespace, "ns1", &nodes[0])),
        (&short, publication(&short, "short2", &nodes[0])),
        (&long, publication(&long, "long2", &nodes[0])),
    ];
    let mut positions = Vec::new();
    for (_, p) in order.iter().cloned() {
        positions.push(publish_kept(&nodes[0], p, policy).await);
    }
    let offsets_given: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(
        offsets_given,
        [1, 1, 1, 2, 2],
        "topics sharing a namespace or a prefix share offsets"
    );

    let page = history(&nodes[2], &short, policy, 0).await;
    assert_eq!(offsets(&page.publications), [1, 2]);
    let kept = &page.publications[0];
    let expected = Publication {
        position: Some(positions[0].clone()),
        ..rich
    };
    assert_eq!(kept, &expected, "history changed a publication");
    assert_eq!(
        payloads(&history(&nodes[2], &long, policy, 0).await.publications),
        ["long1", "long2"]
    );
    let single = history(&nodes[2], &namespace, policy, 0).await;
    assert_eq!(
        (payloads(&single.publications), single.top),
        (vec!["ns1".to_string()], 1)
    );

    let got = nodes[1].sink.wait_for(order.len()).await;
    let mut live: Vec<(String, Option<StreamPosition>)> = got
        .into_iter()
        .map(|(via, p)| {
            assert!(via.matches(&p.topic), "delivered with the wrong filter");
            (p.topic.to_string(), p.position)
        })
        .collect();
    live.sort_by_key(|(topic, _)| topic.clone());
    let mut expected: Vec<(String, Option<StreamPosition>)> = order
        .iter()
        .zip(&positions)
        .map(|((topic, _), position)| (topic.to_string(), Some(position.clone())))
        .collect();
    expected.sort_by_key(|(topic, _)| topic.clone());
    assert_eq!(
        live, expected,
        "live deliveries to a wildcard lack their positions"
    );
    unsubscribe(&nodes[1], &[&everything, &just_namespace]).await;
}

/// Three nodes publish to one topic at once, each many publications
/// awaited together: every offset from 1 is given exactly once, each node's
/// in the order of its calls; every other node receives each publication
/// once, with the position its publisher got; history returns them all in
/// offset order.
pub async fn history_offsets_are_unique_under_concurrent_publishers(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    const EACH: usize = 200;
    let policy = kept_a_minute(1_000);
    let name = format!("{run_id}h6.busy");
    let f = filter(&name);
    for node in nodes {
        subscribe(node, &[&f]).await;
    }
    let per_node = nodes.iter().enumerate().map(|(n, node)| {
        let pending: Vec<_> = (0..EACH)
            .map(|i| {
                node.backplane
                    .publish(publication(&name, &format!("{n}:{i}"), node), Some(policy))
            })
            .collect();
        futures::future::join_all(pending)
    });
    let results = futures::future::join_all(per_node).await;

    let total = nodes.len() * EACH;
    // Payload → the position its publisher got.
    let mut given = std::collections::HashMap::new();
    let mut epochs = std::collections::HashSet::new();
    for (n, positions) in results.into_iter().enumerate() {
        let positions: Vec<StreamPosition> = positions
            .into_iter()
            .map(|r| match r {
                Ok(Some(position)) => position,
                other => panic!("concurrent publish with history: {other:?}"),
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0].offset < w[1].offset),
            "node {n}'s offsets do not follow its calls"
        );
        for (i, position) in positions.into_iter().enumerate() {
            epochs.insert(position.epoch.clone());
            given.insert(format!("{n}:{i}"), position);
        }
    }
    assert_eq!(epochs.len(), 1, "concurrent publishers got several epochs");
    let mut all: Vec<u64> = given.values().map(|p| p.offset).collect();
    all.sort_unstable();
    assert!(
        all == (1..=total as u64).collect::<Vec<_>>(),
        "offsets are not 1..={total} exactly once each"
    );

    let page = history(&nodes[0], &name, policy, 0).await;
    assert_eq!((page.top, page.oldest), (total as u64, 1));
    assert!(
        offsets(&page.publications) == (1..=total as u64).collect::<Vec<_>>(),
        "history is not in offset order"
    );
    for p in &page.publications {
        let payload = String::from_utf8_lossy(&p.payload).into_owned();
        assert_eq!(
            given.get(&payload),
            p.position.as_ref(),
            "history has {payload} at another position than its publisher got"
        );
    }

    for (n, node) in nodes.iter().enumerate() {
        let others = total - EACH;
        node.sink.wait_for(others).await;
        let got = node.sink.settled().await;
        assert_eq!(got.len(), others, "node {n} received {} copies", got.len());
        let mut last_offset = std::collections::HashMap::new();
        for (_, p) in got {
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            assert!(
                !payload.starts_with(&format!("{n}:")),
                "node {n} received its own publication"
            );
            let position = p
                .position
                .unwrap_or_else(|| panic!("{payload} arrived without position"));
            assert_eq!(
                given.get(&payload),
                Some(&position),
                "{payload} arrived with another position"
            );
            let previous = last_offset.insert(p.origin.clone(), position.offset);
            assert!(
                previous.is_none_or(|previous| previous < position.offset),
                "node {n} received a publisher's publications out of order"
            );
        }
    }
    for node in nodes {
        unsubscribe(node, &[&f]).await;
    }
}

/// A node attached after the publications (a fresh connection, nothing
/// cached) reads the same history and continues its offsets.
pub async fn history_is_shared_with_a_node_that_joins_later(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    let policy = kept_a_minute(100);
    let name = format!("{run_id}h7.stream");
    publish_numbered(&nodes[0], &name, 3, policy).await;
    let late = &cluster.attach_node("late").await;
    let known = history(&nodes[1], &name, policy, 0).await;
    let seen = history(late, &name, policy, 0).await;
    assert_eq!(
        seen, known,
        "a node that joined later reads another history"
    );
    let next = publish_kept(late, publication(&name, "late", late), policy).await;
    assert_eq!(
        next,
        position(&known.epoch, known.top + 1),
        "a node that joined later does not continue the offsets"
    );
    let after = history(&nodes[0], &name, policy, known.top).await;
    assert_eq!(payloads(&after.publications), ["late"]);
}

fn presence_entry(client: &str, user: Option<&str>, node: &Node) -> PresenceEntry {
    PresenceEntry {
        client: client.to_string(),
        user: user.map(str::to_string),
        node: node.id.to_string(),
        joined_at: unix_micros() / 1000,
    }
}

async fn presence_update(
    node: &Node,
    add: &[(&str, &PresenceEntry)],
    remove: &[(&str, &str)],
    ttl: Duration,
) {
    let add = add
        .iter()
        .map(|(name, entry)| (topic(name), (*entry).clone()))
        .collect();
    let remove = remove
        .iter()
        .map(|(name, client)| (topic(name), client.to_string()))
        .collect();
    if let Err(e) = node.backplane.presence_update(add, remove, ttl).await {
        panic!("presence update failed: {e}");
    }
}

/// `name`'s presence as `node` reads it, sorted by client.
async fn presence(node: &Node, name: &str) -> Vec<PresenceEntry> {
    match node.backplane.presence(&topic(name)).await {
        Ok(mut entries) => {
            entries.sort_by(|a, b| a.client.cmp(&b.client));
            entries
        }
        Err(e) => panic!("presence of {name} failed: {e}"),
    }
}

/// Entries that two nodes add are read, whole, by every node, once each
/// however often they are refreshed; a removal is seen by every node; topics
/// (also one extending another) keep apart.
pub async fn presence_is_shared_and_removed(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    let ttl = Duration::from_secs(30);
    let name = format!("{run_id}p1.room");
    let longer = format!("{name}.more");
    // Client ids as nodes make them, and one with every character a topic
    // token may carry.
    let a = presence_entry(&format!("{}-1", nodes[0].id), Some("alice"), &nodes[0]);
    let b = presence_entry(&format!("{}-2", nodes[1].id), None, &nodes[1]);
    let odd = presence_entry("c:l@i=e_n-t", Some("ü \"x\""), &nodes[1]);
    assert!(
        presence(&nodes[2], &name).await.is_empty(),
        "a topic nobody joined has presence"
    );
    presence_update(&nodes[0], &[(&name, &a)], &[], ttl).await;
    presence_update(&nodes[1], &[(&name, &b), (&longer, &odd)], &[], ttl).await;
    // A refresh is the same update again.
    presence_update(&nodes[0], &[(&name, &a)], &[], ttl).await;
    let mut both = vec![a.clone(), b.clone()];
    both.sort_by(|x, y| x.client.cmp(&y.client));
    for node in nodes {
        assert_eq!(
            presence(node, &name).await,
            both,
            "presence as {} reads it",
            node.id
        );
        assert_eq!(
            presence(node, &longer).await,
            vec![odd.clone()],
            "presence of a longer topic"
        );
    }
    presence_update(
        &nodes[0],
        &[],
        &[(&name, &a.client), (&name, "never-joined")],
        ttl,
    )
    .await;
    for node in nodes {
        assert_eq!(
            presence(node, &name).await,
            vec![b.clone()],
            "a removed entry is still read by {}",
            node.id
        );
    }
    presence_update(
        &nodes[1],
        &[],
        &[(&name, &b.client), (&longer, &odd.client)],
        ttl,
    )
    .await;
    assert!(presence(&nodes[2], &name).await.is_empty());
    assert!(presence(&nodes[2], &longer).await.is_empty());
}

/// An entry that its node stops refreshing vanishes within the ttl (plus
/// the backplane's expiry granularity); one refreshed in time stays.
pub async fn presence_expires_unless_refreshed(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    let ttl = Duration::from_secs(1);
    let name = format!("{run_id}p2.room");
    let dead = presence_entry("dead-1", None, &nodes[2]);
    let alive = presence_entry("alive-1", Some("bob"), &nodes[0]);
    presence_update(&nodes[2], &[(&name, &dead)], &[], ttl).await;
    presence_update(&nodes[0], &[(&name, &alive)], &[], ttl).await;
    assert_eq!(presence(&nodes[1], &name).await.len(), 2);
    let written = tokio::time::Instant::now();
    let mut refreshed = written;
    loop {
        if refreshed.elapsed() >= ttl / 3 {
            presence_update(&nodes[0], &[(&name, &alive)], &[], ttl).await;
            refreshed = tokio::time::Instant::now();
        }
        let entries = presence(&nodes[1], &name).await;
        if !entries.iter().any(|e| e.client == dead.client) {
            assert_eq!(entries, vec![alive.clone()], "a refreshed entry expired");
            break;
        }
        assert!(
            written.elapsed() < ttl + Duration::from_secs(2),
            "an entry not refreshed is still read {:?} after its update with a ttl of {ttl:?}",
            written.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        written.elapsed() >= ttl / 2,
        "an entry vanished long before its ttl"
    );
    presence_update(&nodes[0], &[], &[(&name, &alive.client)], ttl).await;
}

/// A join event is a publication with the presence content type: it reaches
/// the other subscribed nodes unchanged and without a position.
pub async fn presence_events_reach_subscribed_nodes(cluster: &Cluster) {
    let Cluster { nodes, run_id, .. } = cluster;
    clear(nodes);
    let name = format!("{run_id}p3.room");
    let f = filter(&name);
    subscribe(&nodes[1], &[&f]).await;
    subscribe(&nodes[2], &[&f]).await;
    let mut event = publication(&name, r#"{"op":"join","topic":"x"}"#, &nodes[0]);
    event.content_type = Some(Arc::from(PRESENCE_CONTENT_TYPE));
    publish(&nodes[0], event.clone()).await;
    for node in &nodes[1..] {
        let got = node.sink.wait_for(1).await;
        assert_eq!(got[0].1, event, "a presence event changed in transit");
    }
    unsubscribe(&nodes[1], &[&f]).await;
    unsubscribe(&nodes[2], &[&f]).await;
}
