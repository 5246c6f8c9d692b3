//! Limits, keep-alive, slow consumers, admin endpoints and drain, against a
//! real `ferrocast` process.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use ferrocast_testkit::{http_get, metric, ClientError, JsonClient, Node};

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

async fn metrics(node: &Node) -> String {
    let (status, body) = http_get(node.admin, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200);
    body
}

/// Polls /metrics until `name{labels}` reaches `want` (or 10 s pass) and
/// returns the last value seen.
async fn await_metric(node: &Node, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(&metrics(node).await, name, labels);
        if value >= want || Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_with_4000_while_others_get_everything() {
    // Publishing faster than any reader drains needs no publish limit.
    let node = node(&[
        "--max-message-size",
        "8192",
        "--outbound-queue-bytes",
        "65536",
        "--publish-rate",
        "0",
    ]);
    let url = node.ws_url();
    // A small receive buffer makes the stalled client fill up quickly.
    let mut stalled = JsonClient::connect_tuned(&url, &[], Some(4096))
        .await
        .unwrap();
    assert_eq!(stalled.subscribe("feed.x").await.unwrap()["op"], "ok");

    // Healthy subscribers read continuously until the "last" message and
    // return the sequence numbers they saw.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut c = JsonClient::connect(&url).await.unwrap();
        assert_eq!(c.subscribe("feed.x").await.unwrap()["op"], "ok");
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let m = c.recv().await.expect("healthy subscriber keeps receiving");
                match m["data"]["n"].as_u64() {
                    Some(n) => seen.push(n),
                    None => return seen,
                }
            }
        }));
    }

    // Publish in paced rounds until the node reports the slow consumer (bounded).
    let mut publisher = JsonClient::connect(&url).await.unwrap();
    let payload = "p".repeat(1000);
    let mut sent = 0u64;
    let mut dropped = false;
    // Rounds stay well under the queue bound, so only a reader that stopped overflows.
    for _round in 0..2000 {
        for _ in 0..20 {
            publisher
                .send(
                    json!({"op": "publish", "topic": "feed.x", "data": {"n": sent, "p": payload}}),
                )
                .await
                .unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if metric(
            &metrics(&node).await,
            "ferrocast_messages_dropped_total",
            &[("reason", "slow_consumer")],
        ) > 0.0
        {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "no slow consumer detected after {sent} messages");

    // The stalled client now reads: what was already on the wire, then 4000.
    let (code, reason) = stalled.expect_close().await.expect("a close frame");
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");

    // The others received every message, in order.
    publisher
        .publish("feed.x", json!({"n": "last"}))
        .await
        .unwrap();
    for reader in readers {
        let seen = reader.await.unwrap();
        assert_eq!(
            seen,
            (0..sent).collect::<Vec<_>>(),
            "a healthy subscriber missed messages"
        );
    }
    let closed = await_metric(
        &node,
        "ferrocast_connections_closed_total",
        &[("reason", "slow_consumer")],
        1.0,
    )
    .await;
    assert_eq!(closed, 1.0);
    // The whole dropped backlog is counted, not one per overflow.
    let text = metrics(&node).await;
    let dropped = metric(
        &text,
        "ferrocast_messages_dropped_total",
        &[("reason", "slow_consumer")],
    );
    assert!(dropped > 1.0, "dropped {dropped}");
}

#[tokio::test]
async fn a_client_that_vanishes_is_counted_as_gone() {
    let node = node(&[]);
    let mut c = JsonClient::connect(&node.ws_url()).await.unwrap();
    assert_eq!(c.subscribe("g.a").await.unwrap()["op"], "ok");
    drop(c); // the socket closes without a close handshake
    let gone = await_metric(
        &node,
        "ferrocast_connections_closed_total",
        &[("reason", "client_gone")],
        1.0,
    )
    .await;
    assert_eq!(gone, 1.0);
    let text = metrics(&node).await;
    assert_eq!(metric(&text, "ferrocast_subscriptions", &[]), 0.0);
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_503() {
    let node = node(&["--max-connections", "2"]);
    let url = node.ws_url();
    let first = JsonClient::connect(&url).await.unwrap();
    let _second = JsonClient::connect(&url).await.unwrap();
    match JsonClient::connect(&url).await {
        Err(ClientError::Refused { status, body }) => {
            assert_eq!(status, 503);
            assert!(body.contains("limit of 2 connections"), "{body}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    first.close().await;
    // The slot is free once the node has seen the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match JsonClient::connect(&url).await {
            Ok(_) => break,
            Err(ClientError::Refused { status: 503, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("slot not released: {other:?}"),
        }
    }
    let text = metrics(&node).await;
    assert!(
        metric(
            &text,
            "ferrocast_connections_rejected_total",
            &[("reason", "node_limit")]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "ferrocast_limit_hits_total",
            &[("limit", "connections")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed() {
    let node = node(&["--ping-interval", "200ms", "--pong-timeout", "300ms"]);
    let url = node.ws_url();
    let mut silent = JsonClient::connect(&url).await.unwrap();
    let mut alive = JsonClient::connect(&url).await.unwrap();
    assert_eq!(alive.subscribe("k.a").await.unwrap()["op"], "ok");

    // `alive` keeps reading (the client answers pings while it reads);
    // `silent` reads nothing for a while, so it never answers.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        match alive.recv_within(Duration::from_millis(100)).await {
            Err(ClientError::Timeout) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let (code, reason) = silent.expect_close().await.unwrap();
    assert_eq!(code, 4001, "{reason}");
    assert_eq!(
        alive.request(json!({"op": "ping"})).await.unwrap()["op"],
        "pong"
    );
    let closed = await_metric(
        &node,
        "ferrocast_connections_closed_total",
        &[("reason", "ping_timeout")],
        1.0,
    )
    .await;
    assert_eq!(closed, 1.0);
}

#[tokio::test]
async fn admin_endpoints_and_the_documented_metrics() {
    let node = node(&[]);
    assert_eq!(
        http_get(node.admin, "/healthz").await.unwrap(),
        (200, "ok\n".into())
    );
    assert_eq!(
        http_get(node.admin, "/readyz").await.unwrap(),
        (200, "ready\n".into())
    );

    let mut sub = JsonClient::connect(&node.ws_url()).await.unwrap();
    sub.subscribe("m.a").await.unwrap();
    sub.subscribe("m.*").await.unwrap();
    let mut publisher = JsonClient::connect(&node.ws_url()).await.unwrap();
    publisher.publish("m.a", json!(1)).await.unwrap();
    sub.recv().await.unwrap();
    sub.recv().await.unwrap();

    let text = metrics(&node).await;
    for name in [
        "ferrocast_connections",
        "ferrocast_connections_opened_total",
        "ferrocast_subscriptions",
        "ferrocast_topics",
        "ferrocast_messages_published_total",
        "ferrocast_messages_delivered_total",
        "ferrocast_messages_dropped_total",
        "ferrocast_backplane_up",
        "ferrocast_backplane_publish_duration_seconds_bucket",
        "ferrocast_delivery_lag_seconds_bucket",
        "ferrocast_build_info",
        "ferrocast_runtime_tasks",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
    assert_eq!(
        metric(&text, "ferrocast_connections", &[("protocol", "json")]),
        2.0
    );
    assert_eq!(metric(&text, "ferrocast_subscriptions", &[]), 2.0);
    assert_eq!(metric(&text, "ferrocast_topics", &[]), 2.0);
    assert_eq!(
        metric(&text, "ferrocast_messages_published_total", &[]),
        1.0
    );
    // One publication, two matching subscriptions of the same connection.
    assert_eq!(
        metric(&text, "ferrocast_messages_delivered_total", &[]),
        2.0
    );
    assert_eq!(metric(&text, "ferrocast_backplane_up", &[]), 1.0);
    // Read at the scrape: the two connections' tasks and the node's own.
    assert!(metric(&text, "ferrocast_runtime_tasks", &[]) >= 3.0);
    assert_eq!(
        metric(
            &text,
            "ferrocast_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn sigterm_drains_with_1012_and_exits_within_the_window() {
    let window = Duration::from_secs(3);
    let mut node = node(&["--drain-timeout", "3s"]);
    let url = node.ws_url();
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = JsonClient::connect(&url).await.unwrap();
        c.subscribe(&format!("d.{i}")).await.unwrap();
        clients.push(c);
    }
    // This client does not read, so it does not answer the close handshake;
    // the node must still exit within the window.
    let _stubborn = JsonClient::connect(&url).await.unwrap();

    let signalled = Instant::now();
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGTERM).unwrap();
    for c in &mut clients {
        let (code, reason) = c.expect_close().await.unwrap();
        assert_eq!(code, 1012, "{reason}");
        assert!(reason.contains("reconnect"), "{reason}");
    }
    // Still draining (the stubborn client holds on): not ready, no new clients.
    let (status, body) = http_get(node.admin, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "not ready: draining\n"));
    match JsonClient::connect(&url).await {
        Err(ClientError::Refused { status: 503, .. }) | Err(ClientError::Ws(_)) => {}
        other => panic!("a new connection during drain: {other:?}"),
    }

    let status = node
        .wait_exit(window + Duration::from_secs(2))
        .expect("exited");
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < window + Duration::from_millis(1500),
        "exit took {took:?}"
    );
}
