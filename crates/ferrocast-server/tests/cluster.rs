//! Three real `ferrocast` nodes on one real Redis and on one real NATS:
//! routing, interest, and faults (backplane crash, node crash, stalled path).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ferrocast_testkit::{
    http_get, metric, wait_readyz, ClientError, Cluster, ClusterBackplane, ClusterBuilder,
    JsonClient, Node, TcpProxy,
};

/// Subscriptions the backplane server holds for the cluster's topic `topic`.
async fn subscriptions(backplane: &ClusterBackplane, topic: &str) -> u64 {
    match backplane {
        ClusterBackplane::Redis(r) => r.subscribers(&format!("ferrocast:{topic}")).unwrap(),
        ClusterBackplane::Nats(n) => {
            let (_, body) = http_get(n.monitor(), "/connz?subs=1").await.unwrap();
            let v: Value = serde_json::from_str(&body).unwrap();
            let subject = format!("ferrocast.{topic}");
            let connections = v["connections"].as_array().cloned().unwrap_or_default();
            connections
                .iter()
                .flat_map(|c| {
                    c["subscriptions_list"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|s| s.as_str() == Some(subject.as_str()))
                .count() as u64
        }
        ClusterBackplane::Memory => panic!("a cluster test on the memory backplane"),
    }
}

async fn wait_ready(node: &Node, want: u16) -> Duration {
    wait_readyz(node.admin, want).await
}

/// Nodes `a`, `b` and `c` on `backplane`, ready.
async fn cluster(backplane: ClusterBuilder) -> Cluster {
    backplane
        .nodes(&["a", "b", "c"])
        .args(&["--backplane-timeout", "1s"])
        .start()
        .await
}

async fn subscriber(node: &Node, topics: &[&str]) -> JsonClient {
    let mut c = JsonClient::connect(&node.ws_url()).await.unwrap();
    for t in topics {
        let reply = c.subscribe(t).await.unwrap();
        assert_eq!(reply["op"], "ok", "{reply}");
    }
    c
}

async fn received(node: &Node) -> f64 {
    let (_, text) = http_get(node.admin, "/metrics").await.unwrap();
    metric(&text, "ferrocast_backplane_messages_received_total", &[])
}

async fn publications_reach_every_node(backplane: ClusterBuilder) {
    let cluster = cluster(backplane).await;
    let nodes = cluster.nodes();
    let mut subs = Vec::new();
    for node in nodes {
        subs.push(subscriber(node, &["room.1"]).await);
    }
    let mut pattern = subscriber(&nodes[2], &["room.*"]).await;
    let mut solo = subscriber(&nodes[2], &["solo.x"]).await;
    let mut publisher = JsonClient::connect(&nodes[0].ws_url()).await.unwrap();

    let reply = publisher.publish("room.1", json!({"n": 1})).await.unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    for s in &mut subs {
        let m = s.recv().await.unwrap();
        assert_eq!(
            (m["topic"].as_str(), &m["data"]),
            (Some("room.1"), &json!({"n": 1}))
        );
    }
    assert_eq!(pattern.recv().await.unwrap()["topic"], "room.1");

    // Published on B, matched only by C's wildcard.
    let mut publisher_b = JsonClient::connect(&nodes[1].ws_url()).await.unwrap();
    publisher_b.publish("room.2", json!(2)).await.unwrap();
    assert_eq!(pattern.recv().await.unwrap()["topic"], "room.2");

    // Interest-based routing: only C has interest in solo.x; B receives none of it.
    let (b_before, c_before) = (received(&nodes[1]).await, received(&nodes[2]).await);
    for i in 0..50 {
        publisher
            .send(json!({"op": "publish", "topic": "solo.x", "data": i}))
            .await
            .unwrap();
    }
    for i in 0..50 {
        assert_eq!(solo.recv().await.unwrap()["data"], i);
    }
    assert_eq!(received(&nodes[2]).await - c_before, 50.0);
    assert_eq!(
        received(&nodes[1]).await,
        b_before,
        "a node without interest received"
    );
    // The first subscribers saw nothing else.
    for s in &mut subs {
        assert!(matches!(
            s.recv_within(Duration::from_millis(200)).await,
            Err(ClientError::Timeout)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_routes_publications_to_every_interested_node() {
    publications_reach_every_node(Cluster::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_routes_publications_to_every_interested_node() {
    publications_reach_every_node(Cluster::nats()).await;
}

/// Publishes on `from` until `to` receives one (bounded); returns how long it took.
async fn until_cross_node(
    from: &mut JsonClient,
    to: &mut JsonClient,
    topic: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let mut seq = 0;
    loop {
        seq += 1;
        let _ = from
            .send(json!({"op": "publish", "topic": topic, "data": {"probe": seq}}))
            .await;
        if let Ok(m) = to.recv_within(Duration::from_millis(100)).await {
            if m["op"] == "message" {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < limit,
            "no cross-node delivery within {limit:?}"
        );
    }
}

async fn drain_messages(c: &mut JsonClient) {
    while c.recv_within(Duration::from_millis(100)).await.is_ok() {}
}

async fn survives_a_backplane_crash(backplane: ClusterBuilder) {
    let mut cluster = cluster(backplane).await;
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for node in cluster.nodes() {
        subs.push(subscriber(node, &["out.t"]).await);
        pubs.push(JsonClient::connect(&node.ws_url()).await.unwrap());
    }
    let (head, tail) = subs.split_at_mut(1);
    until_cross_node(&mut pubs[0], &mut tail[0], "out.t", Duration::from_secs(5)).await;
    for s in head.iter_mut().chain(tail.iter_mut()) {
        drain_messages(s).await;
    }

    cluster.backplane_mut().kill9();
    for node in cluster.nodes() {
        let took = wait_ready(node, 503).await;
        assert!(
            took < Duration::from_secs(3),
            "{}: down noticed after {took:?}",
            cluster.backplane().scheme()
        );
    }
    let (_, body) = http_get(cluster[0].admin, "/readyz").await.unwrap();
    assert_eq!(body, "not ready: backplane down\n");

    // A publish gets a clear error, and local delivery goes on.
    for (i, p) in pubs.iter_mut().enumerate() {
        let reply = p.publish("out.t", json!({"during": i})).await.unwrap();
        assert_eq!(reply["code"], "unavailable", "{reply}");
        let m = subs[i].recv().await.unwrap();
        assert_eq!(m["data"], json!({"during": i}), "local delivery stopped");
    }
    for node in cluster.nodes_mut() {
        assert!(node.is_running(), "a node died with the backplane");
    }

    cluster.backplane_mut().restart();
    let restarted = Instant::now();
    let (a, rest) = subs.split_at_mut(1);
    let (b, c) = rest.split_at_mut(1);
    let (p0, prest) = pubs.split_at_mut(1);
    until_cross_node(&mut p0[0], &mut b[0], "out.t", Duration::from_secs(5)).await;
    until_cross_node(&mut prest[1], &mut a[0], "out.t", Duration::from_secs(5)).await;
    until_cross_node(&mut prest[0], &mut c[0], "out.t", Duration::from_secs(5)).await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "cross-node delivery resumed after {took:?}"
    );
    for node in cluster.nodes() {
        wait_ready(node, 200).await;
    }
    let (_, text) = http_get(cluster[0].admin, "/metrics").await.unwrap();
    assert!(metric(&text, "ferrocast_backplane_reconnects_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_is_survived_and_delivery_resumes() {
    survives_a_backplane_crash(Cluster::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_crash_is_survived_and_delivery_resumes() {
    survives_a_backplane_crash(Cluster::nats()).await;
}

async fn a_killed_node_leaves_nothing_subscribed(backplane: ClusterBuilder) {
    let mut cluster = cluster(backplane).await;
    let mut subs = Vec::new();
    for node in cluster.nodes() {
        subs.push(subscriber(node, &["k.t"]).await);
    }
    let before = subscriptions(cluster.backplane(), "k.t").await;
    assert!(before >= 3, "{before} backplane subscriptions for 3 nodes");

    cluster[2].kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = subscriptions(cluster.backplane(), "k.t").await;
        if now < before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead node is still subscribed ({now})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut publisher = JsonClient::connect(&cluster[0].ws_url()).await.unwrap();
    assert_eq!(
        publisher.publish("k.t", json!("after")).await.unwrap()["op"],
        "ok"
    );
    assert_eq!(subs[0].recv().await.unwrap()["data"], "after");
    assert_eq!(subs[1].recv().await.unwrap()["data"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_node_leaves_nothing_subscribed() {
    a_killed_node_leaves_nothing_subscribed(Cluster::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_node_leaves_nothing_subscribed() {
    a_killed_node_leaves_nothing_subscribed(Cluster::nats()).await;
}

async fn a_stalled_path_is_detected_and_recovered(backplane: ClusterBuilder) {
    let cluster = backplane
        .nodes(&["direct"])
        .args(&["--backplane-timeout", "1s"])
        .start()
        .await;
    let direct = &cluster[0];
    let server = cluster.backplane();
    let proxy = TcpProxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();
    let via_proxy = format!("{}://{}", server.scheme(), proxy.addr());
    let stalled_node = cluster.spawn_node("stalled", &via_proxy);
    wait_ready(&stalled_node, 200).await;
    let mut sub = subscriber(&stalled_node, &["st.t"]).await;
    let mut publisher = JsonClient::connect(&direct.ws_url()).await.unwrap();
    until_cross_node(&mut publisher, &mut sub, "st.t", Duration::from_secs(5)).await;

    proxy.set_stalled(true);
    let took = wait_ready(&stalled_node, 503).await;
    assert!(
        took < Duration::from_secs(4),
        "stall noticed after {took:?} (timeout 1s)"
    );
    proxy.set_stalled(false);
    wait_ready(&stalled_node, 200).await;
    drain_messages(&mut sub).await;
    until_cross_node(&mut publisher, &mut sub, "st.t", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_path_is_detected_and_recovered() {
    a_stalled_path_is_detected_and_recovered(Cluster::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stalled_path_is_detected_and_recovered() {
    a_stalled_path_is_detected_and_recovered(Cluster::nats()).await;
}
