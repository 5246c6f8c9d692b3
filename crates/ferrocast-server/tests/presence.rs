//! Presence (issue #6): real nodes on the memory backplane and three-node
//! clusters on a real Redis and a real NATS. Clients on every node subscribe
//! to a topic of a namespace with presence: they see each other's join
//! events, every node lists all of them with their nodes, a client that
//! closes leaves (event and list), and the clients of a node killed with
//! SIGKILL vanish from the list within the presence ttl.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ferrocast_testkit::{Cluster, ClusterBuilder, JsonClient};

const TOPIC: &str = "room.lobby";
/// The presence ttl of the clusters: short, so that a dead node's clients
/// vanish within the test.
const TTL: Duration = Duration::from_secs(2);
/// What the backplane may add to the ttl before an expired entry is gone
/// (NATS expires messages on a timer of its own).
const EXPIRY_MARGIN: Duration = Duration::from_millis(1_500);

/// One cluster test runs at a time: two cores, three nodes and a backplane.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Nodes named `names` on `backplane`, with the namespace `room` keeping
/// presence (and `plain` not), ready to serve.
async fn nodes(backplane: ClusterBuilder, names: &[&str]) -> Cluster {
    let ttl = format!("{}s", TTL.as_secs());
    backplane
        .nodes(names)
        .args(&["--presence-ttl", &ttl])
        .config("[namespaces.room]\npresence = true\n")
        .start()
        .await
}

/// The next object with `"op": op` (others are skipped).
async fn next_op(client: &mut JsonClient, op: &str) -> Value {
    loop {
        let value = client.recv().await.unwrap();
        if value["op"] == op {
            return value;
        }
    }
}

/// Subscribes `client` to [`TOPIC`] and returns its client id, as its own
/// join event names it (the event comes once its entry is in the backplane).
async fn join(client: &mut JsonClient, node: &str) -> String {
    let reply = client.subscribe(TOPIC).await.unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    // A join of a client of another node may still be on its way: the
    // first join from this client's node is its own (clients of one node
    // join one after the other here).
    loop {
        let event = next_op(client, "join").await;
        assert_eq!(event["topic"], TOPIC, "{event}");
        if event["node"] == node {
            return event["client"].as_str().unwrap().to_string();
        }
    }
}

/// The presence list of [`TOPIC`] that `client` reads: (client, node) pairs,
/// sorted.
async fn presence(client: &mut JsonClient) -> Vec<(String, String)> {
    let reply = client
        .request(json!({"op": "presence", "topic": TOPIC}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    let mut entries: Vec<(String, String)> = reply["presence"]
        .as_array()
        .unwrap_or_else(|| panic!("no presence list in {reply}"))
        .iter()
        .map(|entry| {
            assert!(entry["joined_at"].as_u64().is_some(), "{entry}");
            (
                entry["client"].as_str().unwrap().to_string(),
                entry["node"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    entries.sort();
    entries
}

fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = entries
        .iter()
        .map(|(client, node)| (client.to_string(), node.to_string()))
        .collect();
    pairs.sort();
    pairs
}

async fn cluster_presence(backplane: ClusterBuilder) {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut nodes = nodes(backplane, &["a", "b", "c"]).await;
    let mut clients = Vec::new();
    for node in nodes.nodes() {
        clients.push(JsonClient::connect(&node.ws_url()).await.unwrap());
    }
    let mut ids = Vec::new();
    for (client, node) in clients.iter_mut().zip(["a", "b", "c"]) {
        ids.push(join(client, node).await);
    }
    for (id, node) in ids.iter().zip(["a", "b", "c"]) {
        assert!(
            id.starts_with(&format!("{node}-")),
            "client id {id} of node {node}"
        );
    }

    // The first client sees the others join, from their nodes.
    for (id, node) in ids[1..].iter().zip(["b", "c"]) {
        let event = next_op(&mut clients[0], "join").await;
        assert_eq!(
            (event["client"].as_str(), event["node"].as_str()),
            (Some(id.as_str()), Some(node)),
            "{event}"
        );
        assert!(
            event.get("user").is_none(),
            "an anonymous client has a user: {event}"
        );
    }
    // The second sees the third.
    let event = next_op(&mut clients[1], "join").await;
    assert_eq!(event["client"].as_str(), Some(ids[2].as_str()), "{event}");

    let everyone = pairs(&[(&ids[0], "a"), (&ids[1], "b"), (&ids[2], "c")]);
    for client in &mut clients {
        assert_eq!(presence(client).await, everyone);
    }

    // A namespace without presence has no list.
    let refused = clients[0]
        .request(json!({"op": "presence", "topic": "plain.x"}))
        .await
        .unwrap();
    assert_eq!(
        (refused["op"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{refused}"
    );

    // The client on b closes: a and c see it leave, and it leaves the list.
    let closing = clients.remove(1);
    closing.close().await;
    for client in &mut clients {
        let event = next_op(client, "leave").await;
        assert_eq!(event["client"].as_str(), Some(ids[1].as_str()), "{event}");
        assert_eq!(event["node"], "b", "{event}");
    }
    let remaining = pairs(&[(&ids[0], "a"), (&ids[2], "c")]);
    assert_eq!(presence(&mut clients[0]).await, remaining);

    // Node c dies without a word: its client stays listed until the ttl
    // passes without a refresh, then vanishes.
    nodes[2].kill9();
    let killed = Instant::now();
    assert_eq!(
        presence(&mut clients[0]).await,
        remaining,
        "a killed node's client vanished at once"
    );
    let alone = pairs(&[(&ids[0], "a")]);
    loop {
        let listed = presence(&mut clients[0]).await;
        if listed == alone {
            break;
        }
        assert_eq!(listed, remaining);
        assert!(
            killed.elapsed() < TTL + EXPIRY_MARGIN,
            "the killed node's client is still listed {:?} after the kill (ttl {TTL:?})",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The living node refreshes its own entry past the ttl.
    tokio::time::sleep(TTL).await;
    assert_eq!(
        presence(&mut clients[0]).await,
        alone,
        "a refreshed entry expired"
    );
}

#[tokio::test]
async fn presence_across_nodes_on_redis() {
    cluster_presence(Cluster::redis()).await;
}

#[tokio::test]
async fn presence_across_nodes_on_nats() {
    cluster_presence(Cluster::nats()).await;
}

/// One node on the memory backplane: joins, the list, leaves on unsubscribe
/// and on close, and no entry for a pattern subscription.
#[tokio::test]
async fn presence_on_one_node() {
    let nodes = nodes(Cluster::memory(), &["solo"]).await;
    let url = nodes[0].ws_url();
    let mut first = JsonClient::connect(&url).await.unwrap();
    let mut second = JsonClient::connect(&url).await.unwrap();
    let mut watcher = JsonClient::connect(&url).await.unwrap();
    let reply = watcher.subscribe("room.*").await.unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");

    let one = join(&mut first, "solo").await;
    let two = join(&mut second, "solo").await;
    assert_eq!(
        next_op(&mut first, "join").await["client"].as_str(),
        Some(two.as_str())
    );
    // The pattern subscriber gets the events but is not present itself.
    for id in [&one, &two] {
        let event = next_op(&mut watcher, "join").await;
        assert_eq!(event["client"].as_str(), Some(id.as_str()), "{event}");
    }
    assert_eq!(
        presence(&mut watcher).await,
        pairs(&[(&one, "solo"), (&two, "solo")])
    );

    let reply = second
        .request(json!({"op": "unsubscribe", "topic": TOPIC}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    for client in [&mut first, &mut watcher] {
        let event = next_op(client, "leave").await;
        assert_eq!(event["client"].as_str(), Some(two.as_str()), "{event}");
    }
    assert_eq!(presence(&mut second).await, pairs(&[(&one, "solo")]));

    first.close().await;
    let event = next_op(&mut watcher, "leave").await;
    assert_eq!(event["client"].as_str(), Some(one.as_str()), "{event}");
    assert_eq!(presence(&mut watcher).await, Vec::new());
}
