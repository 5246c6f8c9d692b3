//! STOMP over WebSocket against a real node, with a raw STOMP client: the
//! handshake, messaging across protocols, receipts, transactions, heart-beats
//! and every ERROR path.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;

use ferrocast_testkit::{http_get, metric, ClientError, JsonClient, Node, StompClient};

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

async fn stomp(node: &Node) -> StompClient {
    StompClient::connect(&node.ws_url(), "v12.stomp")
        .await
        .unwrap()
}

async fn connected(node: &Node) -> StompClient {
    let mut c = stomp(node).await;
    c.handshake().await.unwrap();
    c
}

#[tokio::test]
async fn connect_negotiates_version_and_heart_beats() {
    let node = node(&["--ping-interval", "2s"]);
    let mut c = stomp(&node).await;
    c.send(
        "CONNECT",
        &[
            ("accept-version", "1.1,1.2"),
            ("heart-beat", "1000,500"),
            ("host", "x"),
        ],
        "",
    )
    .await
    .unwrap();
    let f = c.recv().await.unwrap();
    assert_eq!(f.command, "CONNECTED");
    assert_eq!(f.header("version"), Some("1.2"));
    assert_eq!(f.header("heart-beat"), Some("2000,2000"));
    assert!(f.header("session").is_some_and(|s| !s.is_empty()));
    assert!(f.header("server").unwrap().starts_with("ferrocast/"));

    // The STOMP command works as CONNECT does; v11.stomp caps the version.
    let mut c = StompClient::connect(&node.ws_url(), "v11.stomp")
        .await
        .unwrap();
    c.send(
        "STOMP",
        &[("accept-version", "1.0,1.1,1.2"), ("host", "x")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap().header("version"), Some("1.1"));

    // The client's order of preference picks the subprotocol (stomp.js offers all three).
    let mut c = StompClient::connect(&node.ws_url(), "v12.stomp, v11.stomp, v10.stomp")
        .await
        .unwrap();
    c.send(
        "CONNECT",
        &[("accept-version", "1.0,1.1,1.2"), ("host", "x")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap().header("version"), Some("1.2"));

    // STOMP 1.0 has no heart-beats, whatever the client asks.
    let mut c = StompClient::connect(&node.ws_url(), "v10.stomp")
        .await
        .unwrap();
    c.send("CONNECT", &[("heart-beat", "100,100")], "")
        .await
        .unwrap();
    let f = c.recv().await.unwrap();
    assert_eq!(
        (f.header("version"), f.header("heart-beat")),
        (Some("1.0"), Some("0,0"))
    );

    // No version in common: ERROR listing the supported ones, then close.
    let mut c = StompClient::connect(&node.ws_url(), "v11.stomp")
        .await
        .unwrap();
    c.send(
        "CONNECT",
        &[("accept-version", "1.2,2.0"), ("host", "x")],
        "",
    )
    .await
    .unwrap();
    let (frames, code) = c.expect_close().await.unwrap();
    assert_eq!(frames[0].command, "ERROR");
    assert_eq!(frames[0].header("version"), Some("1.0,1.1"));
    assert!(frames[0]
        .header("message")
        .unwrap()
        .contains("supported versions are 1.0,1.1"));
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn stomp_and_json_clients_see_each_others_messages() {
    let node = node(&[]);
    let mut sub = connected(&node).await;
    sub.send(
        "SUBSCRIBE",
        &[
            ("id", "s1"),
            ("destination", "/topic/chat.*"),
            ("receipt", "r1"),
        ],
        "",
    )
    .await
    .unwrap();
    let receipt = sub.recv().await.unwrap();
    assert_eq!(
        (receipt.command.as_str(), receipt.header("receipt-id")),
        ("RECEIPT", Some("r1"))
    );

    let mut json_sub = JsonClient::connect(&node.ws_url()).await.unwrap();
    json_sub.subscribe("chat.room1").await.unwrap();
    let mut json_pub = JsonClient::connect(&node.ws_url()).await.unwrap();
    json_pub
        .publish("chat.room1", json!({"text": "from json"}))
        .await
        .unwrap();

    let m = sub.recv().await.unwrap();
    assert_eq!(m.command, "MESSAGE");
    assert_eq!(m.header("destination"), Some("/topic/chat.room1"));
    assert_eq!(m.header("subscription"), Some("s1"));
    assert!(m.header("message-id").is_some());
    assert_eq!(m.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(body, json!({"text": "from json"}));
    assert_eq!(
        json_sub.recv().await.unwrap()["data"],
        json!({"text": "from json"})
    );

    // STOMP SEND with user headers and a text body.
    let mut publisher = connected(&node).await;
    publisher
        .send(
            "SEND",
            &[
                ("destination", "/topic/chat.room1"),
                ("content-type", "text/plain"),
                ("x-trace", "abc"),
            ],
            "hello",
        )
        .await
        .unwrap();
    let m = sub.recv().await.unwrap();
    assert_eq!(
        (m.body_text().as_str(), m.header("x-trace")),
        ("hello", Some("abc"))
    );
    assert_eq!(m.header("content-type"), Some("text/plain"));
    assert_eq!(m.header("content-length"), Some("5"));
    let j = json_sub.recv().await.unwrap();
    assert_eq!(
        (j["data"].as_str(), j["content_type"].as_str()),
        (Some("hello"), Some("text/plain"))
    );

    // A JSON body from STOMP reaches JSON clients as a value.
    publisher
        .send(
            "SEND",
            &[
                ("destination", "/topic/chat.room1"),
                ("content-type", "application/json"),
            ],
            "[1,2]",
        )
        .await
        .unwrap();
    assert_eq!(json_sub.recv().await.unwrap()["data"], json!([1, 2]));
    assert_eq!(sub.recv().await.unwrap().body_text(), "[1,2]");

    // Unsubscribe stops delivery to that subscription.
    sub.send("UNSUBSCRIBE", &[("id", "s1"), ("receipt", "r2")], "")
        .await
        .unwrap();
    assert_eq!(sub.recv().await.unwrap().header("receipt-id"), Some("r2"));
    json_pub.publish("chat.room1", json!(3)).await.unwrap();
    assert!(matches!(
        sub.recv_within(Duration::from_millis(300)).await,
        Err(ClientError::Timeout)
    ));
}

#[tokio::test]
async fn bodies_with_nul_bytes_and_escaped_headers_round_trip() {
    let node = node(&[]);
    let mut sub = connected(&node).await;
    sub.send(
        "SUBSCRIBE",
        &[
            ("id", "a"),
            ("destination", "/topic/bin.x"),
            ("receipt", "r"),
        ],
        "",
    )
    .await
    .unwrap();
    sub.recv().await.unwrap();
    let mut publisher = connected(&node).await;
    // content-length lets the body carry NUL; `\c` is an escaped colon.
    publisher
        .send_raw("SEND\ndestination:/topic/bin.x\ncontent-type:application/octet-stream\ncontent-length:3\nx-key:a\\cb\n\na\0b\0")
        .await
        .unwrap();
    let m = sub.recv().await.unwrap();
    assert_eq!(m.body, b"a\0b");
    assert_eq!(
        m.header("x-key"),
        Some("a\\cb"),
        "escaped on the wire again"
    );
}

#[tokio::test]
async fn transactions_hold_sends_until_commit() {
    let node = node(&[]);
    let mut sub = connected(&node).await;
    sub.send(
        "SUBSCRIBE",
        &[
            ("id", "a"),
            ("destination", "/topic/tx.t"),
            ("receipt", "r"),
        ],
        "",
    )
    .await
    .unwrap();
    sub.recv().await.unwrap();
    let mut publisher = connected(&node).await;
    publisher
        .send("BEGIN", &[("transaction", "t1")], "")
        .await
        .unwrap();
    publisher
        .send(
            "SEND",
            &[("destination", "/topic/tx.t"), ("transaction", "t1")],
            "\"one\"",
        )
        .await
        .unwrap();
    publisher
        .send(
            "SEND",
            &[("destination", "/topic/tx.t"), ("transaction", "t1")],
            "\"two\"",
        )
        .await
        .unwrap();
    assert!(
        matches!(
            sub.recv_within(Duration::from_millis(300)).await,
            Err(ClientError::Timeout)
        ),
        "sent before COMMIT"
    );
    publisher
        .send("COMMIT", &[("transaction", "t1"), ("receipt", "c1")], "")
        .await
        .unwrap();
    assert_eq!(
        publisher.recv().await.unwrap().header("receipt-id"),
        Some("c1")
    );
    assert_eq!(sub.recv().await.unwrap().body_text(), "\"one\"");
    assert_eq!(sub.recv().await.unwrap().body_text(), "\"two\"");

    publisher
        .send("BEGIN", &[("transaction", "t2")], "")
        .await
        .unwrap();
    publisher
        .send(
            "SEND",
            &[("destination", "/topic/tx.t"), ("transaction", "t2")],
            "\"aborted\"",
        )
        .await
        .unwrap();
    publisher
        .send("ABORT", &[("transaction", "t2")], "")
        .await
        .unwrap();
    publisher
        .send("BEGIN", &[("transaction", "t3")], "")
        .await
        .unwrap();
    publisher
        .send(
            "SEND",
            &[("destination", "/topic/tx.t"), ("transaction", "t3")],
            "\"lost\"",
        )
        .await
        .unwrap();
    // Disconnecting aborts t3.
    publisher
        .send("DISCONNECT", &[("receipt", "bye")], "")
        .await
        .unwrap();
    let (frames, code) = publisher.expect_close().await.unwrap();
    assert_eq!(
        frames.last().unwrap().header("receipt-id"),
        Some("bye"),
        "receipt before the close"
    );
    assert_eq!(code, 1000);
    publisher = connected(&node).await;
    publisher
        .send("SEND", &[("destination", "/topic/tx.t")], "\"after\"")
        .await
        .unwrap();
    assert_eq!(sub.recv().await.unwrap().body_text(), "\"after\"");
}

#[tokio::test]
async fn user_destinations_reach_every_session_of_the_user() {
    let node = node(&["--stomp-login-is-user"]);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut c = stomp(&node).await;
        c.send(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "x"),
                ("login", "bob.smith"),
            ],
            "",
        )
        .await
        .unwrap();
        c.recv().await.unwrap();
        c.send(
            "SUBSCRIBE",
            &[
                ("id", "u"),
                ("destination", "/user/queue/alerts"),
                ("receipt", "r"),
            ],
            "",
        )
        .await
        .unwrap();
        c.recv().await.unwrap();
        sessions.push(c);
    }
    let mut other = stomp(&node).await;
    other
        .send(
            "CONNECT",
            &[("accept-version", "1.2"), ("host", "x"), ("login", "alice")],
            "",
        )
        .await
        .unwrap();
    other.recv().await.unwrap();
    other
        .send(
            "SUBSCRIBE",
            &[
                ("id", "u"),
                ("destination", "/user/queue/alerts"),
                ("receipt", "r"),
            ],
            "",
        )
        .await
        .unwrap();
    other.recv().await.unwrap();

    let mut sender = connected(&node).await;
    sender
        .send(
            "SEND",
            &[("destination", "/user/bob.smith/queue/alerts")],
            "{\"a\":1}",
        )
        .await
        .unwrap();
    for s in &mut sessions {
        let m = s.recv().await.unwrap();
        assert_eq!(
            (m.header("destination"), m.body_text().as_str()),
            (Some("/user/queue/alerts"), "{\"a\":1}")
        );
    }
    assert!(
        matches!(
            other.recv_within(Duration::from_millis(300)).await,
            Err(ClientError::Timeout)
        ),
        "alice got bob's message"
    );

    // JSON clients cannot read the private namespace directly.
    let mut snoop = JsonClient::connect(&node.ws_url()).await.unwrap();
    let reply = snoop.subscribe("_user.>").await.unwrap();
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

#[tokio::test]
async fn a_silent_client_is_closed_after_its_heart_beat_window() {
    let node = node(&["--ping-interval", "200ms", "--pong-timeout", "10s"]);
    let mut c = stomp(&node).await;
    c.send(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", "x"),
            ("heart-beat", "200,200"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        c.recv().await.unwrap().header("heart-beat"),
        Some("200,200")
    );
    // The client reads (so it answers WebSocket pings) but sends no STOMP data.
    let (_, code) = c.expect_close().await.unwrap();
    assert_eq!(code, 4001);
    assert!(c.heartbeats >= 1, "the node sent no heart-beat");
}

/// Each case: frames to send after CONNECT (or none), what the ERROR message
/// must contain, and the close code.
#[tokio::test]
async fn every_error_path_sends_error_then_closes() {
    let node = node(&["--stomp-login-is-user=false"]);
    let cases: &[(&str, bool, &str, &str, u16)] = &[
        ("SEND\ndestination:/topic/a\n\nx\0", false, "expected CONNECT", "", 1002),
        ("FLY\n\n\0", true, "unknown command", "", 1002),
        ("SUBSCRIBE\nid:1\nreceipt:5\n\n\0", true, "destination", "5", 1002),
        ("SUBSCRIBE\ndestination:/topic/a\n\n\0", true, "needs the id header", "", 1002),
        ("SUBSCRIBE\nid:1\ndestination:/topic/a\nack:sometimes\n\n\0", true, "ack mode", "", 1002),
        ("SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\0", true, "unsupported destination", "", 1002),
        ("SUBSCRIBE\nid:1\ndestination:/topic/a..b\n\n\0", true, "invalid destination", "", 1002),
        ("SUBSCRIBE\nid:1\ndestination:/user/queue/x\n\n\0", true, "authenticated user", "", 1002),
        ("SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\0SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\0", true, "already in use", "", 1002),
        ("UNSUBSCRIBE\nid:9\n\n\0", true, "no subscription", "", 1002),
        ("COMMIT\ntransaction:nope\n\n\0", true, "no transaction", "", 1002),
        ("SEND\ndestination:/topic/a\ntransaction:nope\n\n\0", true, "BEGIN first", "", 1002),
        ("SEND\ndestination:/topic/a.*\n\n\0", true, "invalid destination", "", 1002),
        ("SEND\n\nno destination\0", true, "destination", "", 1002),
        ("ACK\n\n\0", true, "needs the id header", "", 1002),
        ("SEND\ndestination:/topic/a\nx-bad:a\\tb\n\n\0", true, "escape", "", 1002),
        ("MESSAGE\n\n\0", true, "server frame", "", 1002),
        ("CONNECT\naccept-version:1.2\n\n\0", true, "already connected", "", 1002),
    ];
    for (frames, handshake, message, receipt, code) in cases {
        let mut c = stomp(&node).await;
        if *handshake {
            c.handshake().await.unwrap();
        }
        c.send_raw(frames).await.unwrap();
        let (got, close) = c.expect_close().await.unwrap();
        let error = got
            .iter()
            .find(|f| f.command == "ERROR")
            .unwrap_or_else(|| panic!("{frames:?}: no ERROR in {got:?}"));
        let text = error.header("message").unwrap_or_default();
        assert!(
            text.contains(message),
            "{frames:?}: message {text:?} lacks {message:?}"
        );
        if !receipt.is_empty() {
            assert_eq!(error.header("receipt-id"), Some(*receipt), "{frames:?}");
        }
        assert_eq!(close, *code, "{frames:?}");
    }
    // The node still serves others.
    let mut c = connected(&node).await;
    c.send(
        "SUBSCRIBE",
        &[("id", "ok"), ("destination", "/topic/a"), ("receipt", "r")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap().command, "RECEIPT");
}

#[tokio::test]
async fn limits_give_error_then_close_and_are_counted() {
    let node = node(&["--max-message-size", "4096"]);
    // Too many headers.
    let mut c = connected(&node).await;
    let mut frame = String::from("SEND\ndestination:/topic/a\n");
    for i in 0..70 {
        frame.push_str(&format!("x-{i}:v\n"));
    }
    frame.push_str("\n\0");
    c.send_raw(&frame).await.unwrap();
    let (got, code) = c.expect_close().await.unwrap();
    assert!(
        got[0]
            .header("message")
            .unwrap()
            .contains("more than 64 headers"),
        "{got:?}"
    );
    assert_eq!(code, 1009);

    // A frame split over several WebSocket messages, larger than the limit in all.
    let mut c = connected(&node).await;
    c.send_raw("SEND\ndestination:/topic/a\n\n").await.unwrap();
    let chunk = "x".repeat(3000);
    let mut closed = None;
    for _ in 0..3 {
        if c.send_raw(&chunk).await.is_err() {
            break;
        }
    }
    if let Ok((got, code)) = c.expect_close().await {
        assert!(
            got[0]
                .header("message")
                .unwrap()
                .contains("maximum frame size"),
            "{got:?}"
        );
        closed = Some(code);
    }
    assert_eq!(closed, Some(1009));

    let (_, text) = http_get(node.admin, "/metrics").await.unwrap();
    assert_eq!(
        metric(
            &text,
            "ferrocast_limit_hits_total",
            &[("limit", "header_count")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "ferrocast_limit_hits_total",
            &[("limit", "frame_size")]
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "ferrocast_connections", &[("protocol", "stomp")]),
        0.0
    );
}
