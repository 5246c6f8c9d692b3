//! ferrocast on backplanes that scale out: a real Redis Cluster and a real
//! NATS cluster, whose members are killed under load.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;

use ferrocast_testkit::{wait_readyz, JsonClient, NatsCluster, Node, RedisCluster, TestDir};

/// The testkit's Redis Cluster promotes the replica of a killed master, and
/// serves every slot again.
#[test]
fn redis_cluster_promotes_a_replica() {
    let mut cluster = RedisCluster::start();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters");
    let first = cluster.master_of_slot(0).expect("slot 0 served");
    let (promoted, took) = cluster.kill9_master(first);
    assert_ne!(promoted, first);
    assert_eq!(cluster.master_of_slot(0), Some(promoted));
    eprintln!("Redis Cluster failover took {took:?}");
}

/// The testkit's NATS cluster keeps a JetStream leader with one server gone
/// and takes it back.
#[test]
fn nats_cluster_survives_a_server() {
    let mut cluster = NatsCluster::start();
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.url().split(',').count(), 3);
    cluster.kill9(0);
    cluster.restart(0);
}

/// `chat` keeps 100 000 publications for 10 minutes: everything a test
/// publishes stays in the history.
const HISTORY: &str = "[namespaces.chat]\nhistory_size = 100000\nhistory_ttl = \"600s\"\n";

/// Three ferrocast nodes `a`, `b`, `c` on `backplane` (every node gets the
/// whole URL), with [`HISTORY`] and a 2 s backplane timeout, ready.
async fn nodes(backplane: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let dir = TestDir::new(&format!("node-{name}"));
        dir.write("node.toml", HISTORY);
        let args = [
            "--config",
            "node.toml",
            "--backplane",
            backplane,
            "--node-id",
            name,
            "--backplane-timeout",
            "2s",
        ];
        nodes.push(Node::spawn_in(env!("CARGO_BIN_EXE_ferrocast"), dir, &args));
    }
    for node in &nodes {
        wait_readyz(node.admin, 200).await;
    }
    nodes
}

/// kill -9 of the NATS server (of three) that leads the history stream while a
/// client publishes to a history
/// namespace (about 80 a second, within its rate limit): publishing
/// resumes without client action, and a client of every node that resumes
/// with `since` gets every acknowledged publication, at the offset its
/// publisher was told, and `recovered: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_under_load_loses_no_acknowledged_publication() {
    let mut cluster = NatsCluster::start();
    cluster.require_replication();
    let nodes = nodes(&cluster.url()).await;
    let mut publisher = JsonClient::connect(&nodes[0].ws_url()).await.unwrap();
    let mut acknowledged = BTreeMap::new();
    let mut epochs = BTreeSet::new();
    let mut refused = 0u32;
    let mut last_refusal = None;
    let mut killed_at = None;
    let mut resumed_after = None;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(16) {
        if killed_at.is_none() && started.elapsed() >= Duration::from_secs(2) {
            // The server that leads the history stream of `chat`.
            let leader = cluster.stream_leader("ferrocast_H_chat").unwrap();
            cluster.kill9(leader);
            killed_at = Some(Instant::now());
        }
        n += 1;
        // Within the connection's publish rate (100/s).
        tokio::time::sleep(Duration::from_millis(12)).await;
        let reply = publisher.publish("chat.failover", json!(n)).await.unwrap();
        if reply["op"] == "ok" {
            if let (Some(at), None) = (killed_at, resumed_after) {
                resumed_after = Some(at.elapsed());
            }
            epochs.insert(reply["epoch"].as_str().unwrap().to_string());
            acknowledged.insert(reply["offset"].as_u64().unwrap(), n);
        } else {
            refused += 1;
            let why = reply["code"].to_string();
            if last_refusal.as_ref() != Some(&why) {
                eprintln!("{:?}: {reply}", started.elapsed());
                last_refusal = Some(why);
            }
        }
    }
    eprintln!(
        "{} acknowledged, {refused} refused, publishing resumed {resumed_after:?} after the kill",
        acknowledged.len()
    );
    assert!(
        resumed_after.is_some(),
        "no publication acknowledged after the kill"
    );
    assert_eq!(epochs.len(), 1, "one epoch: {epochs:?}");
    let epoch = epochs.into_iter().next().unwrap();
    for node in &nodes {
        let mut reader = JsonClient::connect(&node.ws_url()).await.unwrap();
        let ok = reader
            .request(json!({"op": "subscribe", "topic": "chat.failover", "since": {"epoch": epoch, "offset": 0}}))
            .await
            .unwrap();
        assert_eq!(
            (ok["op"].as_str(), ok["recovered"].as_bool()),
            (Some("ok"), Some(true)),
            "{ok}"
        );
        let top = ok["offset"].as_u64().unwrap();
        let mut replayed = BTreeMap::new();
        while replayed.len() < top as usize {
            let message = reader.recv().await.unwrap();
            assert_eq!(message["op"], "message", "{message}");
            replayed.insert(
                message["offset"].as_u64().unwrap(),
                message["data"].as_u64().unwrap(),
            );
        }
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|(offset, data)| replayed.get(offset) != Some(data))
            .collect();
        assert!(
            lost.is_empty(),
            "node {}: acknowledged and not replayed: {lost:?}",
            node.id
        );
    }
}
