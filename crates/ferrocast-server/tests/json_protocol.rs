//! The native JSON protocol against a real `ferrocast` process, with real
//! WebSocket clients.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use ferrocast_testkit::{http_get, metric, next_text, ClientError, JsonClient, Node};

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

async fn client(node: &Node) -> JsonClient {
    JsonClient::connect(&node.ws_url()).await.expect("connect")
}

async fn subscribed(node: &Node, topics: &[&str]) -> JsonClient {
    let mut c = client(node).await;
    for topic in topics {
        let reply = c.subscribe(topic).await.expect("subscribe");
        assert_eq!(reply["op"], "ok", "subscribe {topic}: {reply}");
    }
    c
}

/// Reads messages until one on `until`; returns the (topic, data) before it.
async fn messages_until(c: &mut JsonClient, until: &str) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    loop {
        let v = c.recv().await.expect("message");
        assert_eq!(v["op"], "message", "{v}");
        let topic = v["topic"].as_str().unwrap().to_string();
        if topic == until {
            return seen;
        }
        seen.push((topic, v["data"].clone()));
    }
}

#[tokio::test]
async fn a_publication_reaches_every_subscriber() {
    let node = node(&[]);
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(subscribed(&node, &["chat.room1"]).await);
    }
    let mut publisher = client(&node).await;
    let reply = publisher
        .publish("chat.room1", json!({"text": "hi", "n": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"op": "ok", "id": reply["id"]}));

    for s in &mut subscribers {
        let m = s.recv().await.unwrap();
        assert_eq!(
            m,
            json!({"op": "message", "topic": "chat.room1", "data": {"text": "hi", "n": [1, 2]}})
        );
    }
    // The publisher is not subscribed: its next object is the pong, not a message.
    let pong = publisher.request(json!({"op": "ping"})).await.unwrap();
    assert_eq!(pong["op"], "pong");
    assert!(publisher
        .recv_within(std::time::Duration::from_millis(200))
        .await
        .is_err());
}

#[tokio::test]
async fn wildcards_match_one_token_or_the_tail() {
    let node = node(&[]);
    let mut star = subscribed(&node, &["chat.*", "ctl.done"]).await;
    let mut tail = subscribed(&node, &["chat.>", "ctl.done"]).await;
    let mut exact = subscribed(&node, &["chat.room1", "ctl.done"]).await;
    let mut mid = subscribed(&node, &["chat.*.typing", "ctl.done"]).await;

    let mut publisher = client(&node).await;
    for topic in [
        "chat.room1",
        "chat.room1.typing",
        "chat",
        "news.room1",
        "ctl.done",
    ] {
        let reply = publisher.publish(topic, json!(topic)).await.unwrap();
        assert_eq!(reply["op"], "ok", "{reply}");
    }
    let topics = |seen: Vec<(String, Value)>| seen.into_iter().map(|(t, _)| t).collect::<Vec<_>>();
    assert_eq!(
        topics(messages_until(&mut star, "ctl.done").await),
        ["chat.room1"]
    );
    assert_eq!(
        topics(messages_until(&mut tail, "ctl.done").await),
        ["chat.room1", "chat.room1.typing"]
    );
    assert_eq!(
        topics(messages_until(&mut exact, "ctl.done").await),
        ["chat.room1"]
    );
    assert_eq!(
        topics(messages_until(&mut mid, "ctl.done").await),
        ["chat.room1.typing"]
    );
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let node = node(&[]);
    let mut sub = subscribed(&node, &["news.a", "ctl.done"]).await;
    let mut publisher = client(&node).await;
    publisher.publish("news.a", json!(1)).await.unwrap();
    assert_eq!(messages_until(&mut sub, "news.a").await, []);

    let reply = sub
        .request(json!({"op": "unsubscribe", "topic": "news.a"}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok");
    publisher.publish("news.a", json!(2)).await.unwrap();
    publisher.publish("ctl.done", json!(null)).await.unwrap();
    assert_eq!(
        messages_until(&mut sub, "ctl.done").await,
        [],
        "delivered after unsubscribe"
    );
}

#[tokio::test]
async fn subprotocol_negotiation() {
    let node = node(&[]);
    let offered_json = JsonClient::connect_with(&node.ws_url(), &["mqtt", "ferrocast.v1.json"])
        .await
        .unwrap();
    assert_eq!(offered_json.protocol.as_deref(), Some("ferrocast.v1.json"));

    // No subprotocol offered: the JSON protocol, and no header in the answer.
    let mut plain = JsonClient::connect_with(&node.ws_url(), &[]).await.unwrap();
    assert_eq!(plain.protocol, None);
    assert_eq!(
        plain.request(json!({"op": "ping"})).await.unwrap()["op"],
        "pong"
    );

    match JsonClient::connect_with(&node.ws_url(), &["mqtt", "wamp.2.json"]).await {
        Err(ClientError::Refused { status, body }) => {
            assert_eq!(status, 400);
            assert!(body.contains("mqtt, wamp.2.json"), "{body}");
            assert!(body.contains("ferrocast.v1.json"), "{body}");
        }
        other => panic!("expected a 400 refusal, got {other:?}"),
    }
    let (_, metrics) = http_get(node.admin, "/metrics").await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_connections_rejected_total",
            &[("reason", "subprotocol")]
        ),
        1.0
    );
}

#[tokio::test]
async fn every_error_path_is_answered_while_others_are_served() {
    let node = node(&[
        "--max-subscriptions-per-connection",
        "2",
        "--max-message-size",
        "4096",
    ]);
    let mut bystander = subscribed(&node, &["ok.topic"]).await;
    let mut publisher = client(&node).await;
    let mut bad = client(&node).await;

    // Malformed JSON: no id can be known.
    bad.send_message(Message::text("{\"op\":")).await.unwrap();
    let e = bad.recv().await.unwrap();
    assert_eq!(
        (e["op"].as_str(), e["code"].as_str(), e.get("id")),
        (Some("error"), Some("bad_request"), None)
    );

    let cases = [
        (json!({"op": "fly", "id": 1}), "bad_request", "unknown op"),
        (
            json!({"op": "subscribe", "id": 2, "topic": "a..b"}),
            "bad_request",
            "empty token",
        ),
        (
            json!({"op": "subscribe", "id": 3, "topic": "a b"}),
            "bad_request",
            "character",
        ),
        (
            json!({"op": "publish", "id": 4, "topic": "a.*", "data": 1}),
            "bad_request",
            "wildcards",
        ),
        (
            json!({"op": "publish", "id": 5, "topic": "a"}),
            "bad_request",
            "needs data",
        ),
        (
            json!({"op": "subscribe", "id": 6, "topic": "x".repeat(256)}),
            "too_large",
            "limit is 255",
        ),
        (
            json!({"op": "subscribe", "id": 7}),
            "bad_request",
            "needs a topic",
        ),
    ];
    for (request, code, text) in cases {
        bad.send(request.clone()).await.unwrap();
        let e = bad.recv().await.unwrap();
        assert_eq!(e["op"], "error", "{request} -> {e}");
        assert_eq!(e["id"], request["id"], "{e}");
        assert_eq!(e["code"], code, "{request} -> {e}");
        assert!(
            e["message"].as_str().unwrap().contains(text),
            "{request} -> {e}"
        );
    }

    bad.send_message(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let e = bad.recv().await.unwrap();
    assert_eq!(
        (e["code"].as_str(), e.get("id")),
        (Some("bad_request"), None),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("binary"), "{e}");

    // Subscription limit: two allowed, the third refused.
    assert_eq!(bad.subscribe("s.one").await.unwrap()["op"], "ok");
    assert_eq!(bad.subscribe("s.two").await.unwrap()["op"], "ok");
    let e = bad.subscribe("s.three").await.unwrap();
    assert_eq!(e["code"], "limit_exceeded", "{e}");
    // Re-subscribing to a held topic is not a new subscription.
    assert_eq!(bad.subscribe("s.one").await.unwrap()["op"], "ok");

    // The node still serves everyone, the offender included.
    publisher
        .publish("ok.topic", json!("still here"))
        .await
        .unwrap();
    assert_eq!(bystander.recv().await.unwrap()["data"], "still here");
    assert_eq!(
        bad.request(json!({"op": "ping"})).await.unwrap()["op"],
        "pong"
    );

    // An oversized message: a too_large error, then close 1009.
    bad.send_message(Message::text(format!(
        "{{\"op\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(5000)
    )))
    .await
    .unwrap();
    let e = bad.recv().await.unwrap();
    assert_eq!(e["code"], "too_large", "{e}");
    let (code, reason) = bad.expect_close().await.unwrap();
    assert_eq!(code, 1009, "{reason}");

    publisher
        .publish("ok.topic", json!("after the close"))
        .await
        .unwrap();
    assert_eq!(bystander.recv().await.unwrap()["data"], "after the close");

    let (_, metrics) = http_get(node.admin, "/metrics").await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_client_errors_total",
            &[("code", "bad_request")]
        ),
        8.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_client_errors_total",
            &[("code", "too_large")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_client_errors_total",
            &[("code", "limit_exceeded")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_limit_hits_total",
            &[("limit", "subscriptions")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_limit_hits_total",
            &[("limit", "topic_length")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_limit_hits_total",
            &[("limit", "message_size")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_connections_closed_total",
            &[("reason", "too_large")]
        ),
        1.0
    );
}

#[tokio::test]
async fn publish_without_id_gets_no_reply_and_data_of_any_json_type_passes() {
    let node = node(&[]);
    let mut sub = subscribed(&node, &["t.x"]).await;
    let mut publisher = client(&node).await;
    let values = [
        json!(null),
        json!(true),
        json!(-1.5),
        json!("s\n\"q\""),
        json!([{}]),
        json!({"a": {"b": []}}),
    ];
    for v in &values {
        publisher
            .send(json!({"op": "publish", "topic": "t.x", "data": v}))
            .await
            .unwrap();
    }
    // Pretty-printed requests (newlines inside) are accepted too.
    publisher
        .send_message(Message::text(
            "{\n  \"op\": \"publish\",\n  \"topic\": \"t.x\",\n  \"data\": {\n \"k\": 1\n }\n}",
        ))
        .await
        .unwrap();
    for v in values.iter().chain([&json!({"k": 1})]) {
        assert_eq!(&sub.recv().await.unwrap()["data"], v);
    }
    let pong = publisher.request(json!({"op": "ping"})).await.unwrap();
    assert_eq!(
        pong["op"], "pong",
        "a publish without id must not be answered"
    );
}

#[tokio::test]
async fn subscribe_since_reports_not_recovered_without_history() {
    let node = node(&[]);
    let mut c = client(&node).await;
    let reply = c
        .request(json!({"op": "subscribe", "topic": "h.a", "since": {"epoch": "e", "offset": 3}}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok");
    assert_eq!(reply["recovered"], false);
}

/// `--write-interval`: a quiet connection's first delivery is written at
/// once; what follows within the interval waits for the rest of it and comes
/// in one write (one frame, the deliveries joined by `\n`).
#[tokio::test]
async fn a_write_interval_gathers_what_follows_a_write_into_one_frame() {
    use futures::SinkExt;
    use std::time::{Duration, Instant};

    let node = node(&["--write-interval", "100ms"]);
    let (mut subscriber, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .unwrap();
    let subscribe = json!({"op": "subscribe", "topic": "paced.feed", "id": 1});
    subscriber
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let reply = next_text(&mut subscriber).await;
    assert!(reply.contains(r#""op":"ok""#), "{reply}");
    // Longer than the interval: the connection is quiet again.
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut publisher = client(&node).await;
    let started = Instant::now();
    let ok = publisher.publish("paced.feed", json!(0)).await.unwrap();
    assert_eq!(ok["op"], "ok", "{ok}");
    let mut frames = vec![next_text(&mut subscriber).await];
    for n in 1..=5 {
        let publish = json!({"op": "publish", "topic": "paced.feed", "data": n});
        publisher.send(publish).await.unwrap();
    }
    let mut data = Vec::new();
    loop {
        for line in frames.last().unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["op"], "message", "{v}");
            data.push(v["data"].as_i64().unwrap());
        }
        if data.len() >= 6 {
            break;
        }
        frames.push(next_text(&mut subscriber).await);
    }
    assert_eq!(data, [0, 1, 2, 3, 4, 5]);
    assert_eq!(
        frames[0],
        r#"{"op":"message","topic":"paced.feed","data":0}"#
    );
    // The next write waited for the interval after the first, and carried
    // what was published meanwhile.
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(frames.len() <= 3, "one frame per delivery: {frames:?}");
    // The node counts deliveries per write: 6 in as many batches as frames.
    let (_, metrics) = http_get(node.admin, "/metrics").await.unwrap();
    assert_eq!(
        metric(&metrics, "ferrocast_messages_delivered_total", &[]),
        6.0
    );
    assert_eq!(
        metric(&metrics, "ferrocast_delivery_batches_total", &[]),
        frames.len() as f64
    );
}
