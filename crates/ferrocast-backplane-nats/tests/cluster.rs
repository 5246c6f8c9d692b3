//! The NATS backplane on a real 3-server NATS cluster with JetStream: the
//! conformance suite, replicated streams, and a server killed under a stream
//! of history publications.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use ferrocast_core::backplane::{conformance, Backplane, HistoryPolicy};
use ferrocast_testkit::NatsCluster;

/// A 3-server cluster, and a factory of nodes that get every server's URL.
fn cluster() -> (NatsCluster, conformance::Attach) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = NatsCluster::start();
    let url = cluster.url();
    let attach: conformance::Attach = Box::new(move |id, sink| {
        let settings = common::settings(&url, Duration::from_secs(5));
        async move { Arc::new(common::start_up(id, settings, sink).await) as Arc<dyn Backplane> }
            .boxed()
    });
    (cluster, attach)
}

/// The conformance suite, unchanged, one test per guarantee.
mod conforms {
    ferrocast_core::backplane_conformance_tests!(super::cluster());
}

const POLICY: HistoryPolicy = HistoryPolicy {
    size: 100_000,
    ttl: Duration::from_secs(600),
};

/// Whether the cluster's servers are 2.10 or later, which the backplane
/// needs to replicate history (earlier ones get one replica).
fn replicates(cluster: &NatsCluster) -> bool {
    cluster.version() >= (2, 10)
}

/// A history stream made on a 3-server cluster has 3 replicas, by default
/// (one on servers before 2.10, whose replicated appends may race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_streams_are_replicated_on_three_servers() {
    let cluster = NatsCluster::start();
    let id = common::node_id("replicas");
    let node = common::start_up(
        id.clone(),
        common::settings(&cluster.url(), Duration::from_secs(5)),
        common::Sink::new(),
    )
    .await;
    node.publish(common::publication("chat.r", "1", &id), Some(POLICY))
        .await
        .unwrap();
    let client = async_nats::connect(cluster.server_url(1)).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("ferrocast_H_chat")
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    let expected = if replicates(&cluster) { 3 } else { 1 };
    assert_eq!(info.config.num_replicas, expected);
    assert!(stream_leader(&cluster, "ferrocast_H_chat").await < cluster.len());
}

/// kill -9 of the history stream's leader while a node appends to a topic's
/// history as fast as it can: appends fail (or wait) while the stream elects a new leader,
/// then go on, and every publication the history acknowledged is in it
/// afterwards, at the position it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_history_publication_is_lost_when_a_server_dies() {
    let mut cluster = NatsCluster::start();
    cluster.require_replication();
    let id = common::node_id("writer");
    let node = common::start_up(
        id.clone(),
        common::settings(&cluster.url(), Duration::from_secs(2)),
        common::Sink::new(),
    )
    .await;
    node.publish(common::publication("chat.k", "0", &id), Some(POLICY))
        .await
        .unwrap();
    let leader = stream_leader(&cluster, "ferrocast_H_chat").await;
    let mut acknowledged = BTreeMap::new();
    let mut failed = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let mut killed_at = None;
    let mut first_ack_after_kill = None;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(15) {
        n += 1;
        if killed_at.is_none() && started.elapsed() >= Duration::from_secs(2) {
            cluster.kill9(leader);
            killed_at = Some(Instant::now());
        }
        let payload = n.to_string();
        match node
            .publish(common::publication("chat.k", &payload, &id), Some(POLICY))
            .await
        {
            Ok(Some(position)) => {
                if let (Some(at), None) = (killed_at, first_ack_after_kill) {
                    first_ack_after_kill = Some(at.elapsed());
                }
                acknowledged.insert(position.offset, payload);
            }
            Ok(None) => panic!("a history publication without a position"),
            Err(error) => {
                failed += 1;
                let error = error.to_string();
                if errors.last() != Some(&error) {
                    eprintln!(
                        "{:?} after the kill: {error}",
                        killed_at.map(|at| at.elapsed())
                    );
                    errors.push(error);
                }
            }
        }
    }
    assert!(
        first_ack_after_kill.is_some(),
        "no publication acknowledged after the kill"
    );
    let page = node
        .history(&common::topic("chat.k"), POLICY, 0)
        .await
        .unwrap();
    let kept: BTreeMap<u64, String> = page
        .publications
        .iter()
        .map(|p| {
            (
                p.position.as_ref().unwrap().offset,
                String::from_utf8_lossy(&p.payload).into_owned(),
            )
        })
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|(offset, payload)| kept.get(offset) != Some(payload))
        .collect();
    eprintln!(
        "{} acknowledged, {failed} failed, first acknowledgement {:?} after the kill, {} lost",
        acknowledged.len(),
        first_ack_after_kill,
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
}

/// The index of the server that leads the stream `name` (asked of server 0).
async fn stream_leader(cluster: &NatsCluster, name: &str) -> usize {
    let client = async_nats::connect(cluster.server_url(0)).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(name)
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    let leader = info.cluster.clone().and_then(|c| c.leader).unwrap();
    cluster.index_of(&leader).unwrap()
}
