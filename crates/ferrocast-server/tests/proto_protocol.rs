//! The protobuf protocol (`ferrocast.v1.proto`) against real `ferrocast`
//! processes, with real WebSocket clients: what tests/json_protocol.rs checks
//! for JSON, plus resume from a position, authentication, bad frames,
//! presence, and JSON, STOMP and protobuf clients exchanging messages (binary
//! payloads included) across two nodes on a real Redis.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use ferrocast_protocol::proto_frames::pb::client_message::{self as request, Request};
use ferrocast_protocol::proto_frames::pb::server_message::{self as reply, Kind};
use ferrocast_protocol::proto_frames::pb::{ClientMessage, ServerMessage};
use ferrocast_testkit::{
    http_get, metric, ClientError, Cluster, JsonClient, Node, ProtoClient, StompClient,
};

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

/// A node with `config` (TOML) as its configuration file, and `args`.
fn configured(config: &str, args: &[&str]) -> Node {
    Node::spawn_with_config(env!("CARGO_BIN_EXE_ferrocast"), config, args)
}

async fn client(node: &Node) -> ProtoClient {
    ProtoClient::connect(&node.ws_url()).await.expect("connect")
}

async fn subscribed(node: &Node, topics: &[&str]) -> ProtoClient {
    let mut c = client(node).await;
    for topic in topics {
        let reply = c.subscribe(topic).await.expect("subscribe");
        ok(&reply);
    }
    c
}

fn ok(m: &ServerMessage) -> &reply::Ok {
    match &m.kind {
        Some(Kind::Ok(ok)) => ok,
        _ => panic!("expected ok, got {m:?}"),
    }
}

fn error(m: &ServerMessage) -> &reply::Error {
    match &m.kind {
        Some(Kind::Error(error)) => error,
        _ => panic!("expected an error, got {m:?}"),
    }
}

fn delivery(m: &ServerMessage) -> &reply::Message {
    match &m.kind {
        Some(Kind::Message(message)) => message,
        _ => panic!("expected a message, got {m:?}"),
    }
}

fn subscribe(topic: &str) -> Request {
    Request::Subscribe(request::Subscribe {
        topic: topic.into(),
        since: None,
    })
}

fn since(topic: &str, epoch: &str, offset: u64) -> Request {
    Request::Subscribe(request::Subscribe {
        topic: topic.into(),
        since: Some(request::subscribe::Since {
            epoch: epoch.into(),
            offset,
        }),
    })
}

fn publish(topic: &str, data: &[u8], content_type: &str) -> Request {
    Request::Publish(request::Publish {
        topic: topic.into(),
        data: Bytes::copy_from_slice(data),
        content_type: content_type.into(),
    })
}

fn ping() -> Request {
    Request::Ping(request::Ping {})
}

/// Reads messages until one on `until`; returns the (topic, data) before it.
async fn messages_until(c: &mut ProtoClient, until: &str) -> Vec<(String, Bytes)> {
    let mut seen = Vec::new();
    loop {
        let m = c.recv().await.expect("message");
        let m = delivery(&m);
        if m.topic == until {
            return seen;
        }
        seen.push((m.topic.clone(), m.data.clone()));
    }
}

async fn metrics(node: &Node) -> String {
    http_get(node.admin, "/metrics").await.unwrap().1
}

#[tokio::test]
async fn a_publication_reaches_every_subscriber() {
    let node = node(&[]);
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(subscribed(&node, &["chat.room1"]).await);
    }
    let mut publisher = client(&node).await;
    let data = br#"{"text":"hi","n":[1,2]}"#;
    let reply = publisher.publish("chat.room1", data, "").await.unwrap();
    assert_eq!(
        ok(&reply),
        &reply::Ok::default(),
        "no position without history"
    );

    for s in &mut subscribers {
        let m = s.recv().await.unwrap();
        assert_eq!(
            m,
            ServerMessage {
                id: None,
                kind: Some(Kind::Message(reply::Message {
                    topic: "chat.room1".into(),
                    data: Bytes::from_static(data),
                    content_type: String::new(),
                    offset: None,
                    epoch: None,
                })),
            }
        );
    }
    // The publisher is not subscribed: its next message is the pong.
    let pong = publisher.request(ping()).await.unwrap();
    assert!(matches!(pong.kind, Some(Kind::Pong(_))), "{pong:?}");
    assert!(publisher
        .recv_within(Duration::from_millis(200))
        .await
        .is_err());
}

#[tokio::test]
async fn wildcards_match_one_token_or_the_tail() {
    let node = node(&[]);
    let mut star = subscribed(&node, &["chat.*", "ctl.done"]).await;
    let mut tail = subscribed(&node, &["chat.>", "ctl.done"]).await;
    let mut mid = subscribed(&node, &["chat.*.typing", "ctl.done"]).await;

    let mut publisher = client(&node).await;
    for topic in [
        "chat.room1",
        "chat.room1.typing",
        "chat",
        "news.room1",
        "ctl.done",
    ] {
        let reply = publisher.publish(topic, b"1", "").await.unwrap();
        ok(&reply);
    }
    let topics = |seen: Vec<(String, Bytes)>| seen.into_iter().map(|(t, _)| t).collect::<Vec<_>>();
    assert_eq!(
        topics(messages_until(&mut star, "ctl.done").await),
        ["chat.room1"]
    );
    assert_eq!(
        topics(messages_until(&mut tail, "ctl.done").await),
        ["chat.room1", "chat.room1.typing"]
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
    publisher.publish("news.a", b"1", "").await.unwrap();
    assert_eq!(messages_until(&mut sub, "news.a").await, []);

    let reply = sub
        .request(Request::Unsubscribe(request::Unsubscribe {
            topic: "news.a".into(),
        }))
        .await
        .unwrap();
    ok(&reply);
    publisher.publish("news.a", b"2", "").await.unwrap();
    publisher.publish("ctl.done", b"null", "").await.unwrap();
    assert_eq!(
        messages_until(&mut sub, "ctl.done").await,
        [],
        "delivered after unsubscribe"
    );
}

#[tokio::test]
async fn subprotocol_negotiation() {
    let node = node(&[]);
    let mut offered = ProtoClient::connect_with(&node.ws_url(), &["mqtt", "ferrocast.v1.proto"])
        .await
        .unwrap();
    assert_eq!(offered.protocol.as_deref(), Some("ferrocast.v1.proto"));
    assert!(matches!(
        offered.request(ping()).await.unwrap().kind,
        Some(Kind::Pong(_))
    ));
    // The client's order of preference decides.
    let mut first =
        ProtoClient::connect_with(&node.ws_url(), &["ferrocast.v1.proto", "ferrocast.v1.json"])
            .await
            .unwrap();
    assert_eq!(first.protocol.as_deref(), Some("ferrocast.v1.proto"));
    let mut json =
        JsonClient::connect_with(&node.ws_url(), &["ferrocast.v1.json", "ferrocast.v1.proto"])
            .await
            .unwrap();
    assert_eq!(json.protocol.as_deref(), Some("ferrocast.v1.json"));
    // A round trip each: their sessions run (and count) by now.
    first.request(ping()).await.unwrap();
    assert_eq!(
        json.request(json!({"op": "ping"})).await.unwrap()["op"],
        "pong"
    );

    match ProtoClient::connect_with(&node.ws_url(), &["mqtt"]).await {
        Err(ClientError::Refused { status, body }) => {
            assert_eq!(status, 400);
            assert!(body.contains("ferrocast.v1.proto"), "{body}");
        }
        other => panic!("expected a 400 refusal, got {other:?}"),
    }
    let metrics = metrics(&node).await;
    assert_eq!(
        metric(&metrics, "ferrocast_connections", &[("protocol", "proto")]),
        2.0
    );
    assert_eq!(
        metric(&metrics, "ferrocast_connections", &[("protocol", "json")]),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_connections_opened_total",
            &[("protocol", "proto")]
        ),
        2.0
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

    // Frames that cannot be split or decoded: one error without id each.
    for garbage in [vec![0xff; 11], vec![10, 1, 2, 3], vec![3, 0x0f, 0, 0]] {
        bad.send_message(Message::binary(garbage.clone()))
            .await
            .unwrap();
        let m = bad.recv().await.unwrap();
        assert_eq!(m.id, None, "{garbage:?}: {m:?}");
        let e = error(&m);
        assert_eq!(e.code, "bad_request", "{garbage:?}: {e:?}");
        assert!(e.message.starts_with("malformed frame"), "{e:?}");
    }
    // What came before the bad part of a frame is served.
    let mut frame = Vec::new();
    prost::Message::encode_length_delimited(
        &ClientMessage {
            id: Some(99),
            request: Some(ping()),
        },
        &mut frame,
    )
    .unwrap();
    frame.extend_from_slice(&[5, 0xff]);
    bad.send_message(Message::binary(frame)).await.unwrap();
    let pong = bad.recv().await.unwrap();
    assert_eq!(
        (pong.id, matches!(pong.kind, Some(Kind::Pong(_)))),
        (Some(99), true)
    );
    assert_eq!(error(&bad.recv().await.unwrap()).code, "bad_request");

    let cases = [
        (None, "bad_request", "no request"),
        (Some(subscribe("a..b")), "bad_request", "empty token"),
        (Some(subscribe("a b")), "bad_request", "character"),
        (Some(subscribe("")), "bad_request", "needs a topic"),
        (Some(publish("a.*", b"1", "")), "bad_request", "wildcards"),
        (
            Some(publish("a", b"not json", "")),
            "bad_request",
            "not one JSON value",
        ),
        (
            Some(publish("a", b"x", "text/plain\r\nx: y")),
            "bad_request",
            "content_type",
        ),
        (
            Some(subscribe(&"x".repeat(256))),
            "too_large",
            "limit is 255",
        ),
    ];
    for (i, (request, code, text)) in cases.into_iter().enumerate() {
        let id = 100 + i as u64;
        bad.send(&[ClientMessage {
            id: Some(id),
            request: request.clone(),
        }])
        .await
        .unwrap();
        let m = bad.recv().await.unwrap();
        assert_eq!(m.id, Some(id), "{request:?} -> {m:?}");
        let e = error(&m);
        assert_eq!(e.code, code, "{request:?} -> {e:?}");
        assert!(e.message.contains(text), "{request:?} -> {e:?}");
    }

    // Subscription limit: two allowed, the third refused.
    ok(&bad.subscribe("s.one").await.unwrap());
    ok(&bad.subscribe("s.two").await.unwrap());
    assert_eq!(
        error(&bad.subscribe("s.three").await.unwrap()).code,
        "limit_exceeded"
    );
    // Re-subscribing to a held topic is not a new subscription.
    ok(&bad.subscribe("s.one").await.unwrap());

    // The node still serves everyone, the offender included.
    publisher
        .publish("ok.topic", br#""still here""#, "")
        .await
        .unwrap();
    assert_eq!(
        delivery(&bystander.recv().await.unwrap()).data,
        &br#""still here""#[..]
    );
    assert!(matches!(
        bad.request(ping()).await.unwrap().kind,
        Some(Kind::Pong(_))
    ));

    // An oversized message: a too_large error, then close 1009.
    bad.send(&[ClientMessage {
        id: Some(1),
        request: Some(publish("ok.topic", &[0; 5000], "application/octet-stream")),
    }])
    .await
    .unwrap();
    let (before, code, reason) = bad.expect_close().await.unwrap();
    assert_eq!(code, 1009, "{reason}");
    let [too_large] = &before[..] else {
        panic!("{before:?}")
    };
    assert_eq!(error(too_large).code, "too_large");

    publisher
        .publish("ok.topic", br#""after the close""#, "")
        .await
        .unwrap();
    assert_eq!(
        delivery(&bystander.recv().await.unwrap()).data,
        &br#""after the close""#[..]
    );

    let metrics = metrics(&node).await;
    let count = |name: &str, label: (&str, &str)| metric(&metrics, name, &[label]);
    assert_eq!(
        count("ferrocast_client_errors_total", ("code", "bad_request")),
        11.0
    );
    assert_eq!(
        count("ferrocast_client_errors_total", ("code", "too_large")),
        2.0
    );
    assert_eq!(
        count("ferrocast_client_errors_total", ("code", "limit_exceeded")),
        1.0
    );
    assert_eq!(
        count("ferrocast_limit_hits_total", ("limit", "subscriptions")),
        1.0
    );
    assert_eq!(
        count("ferrocast_limit_hits_total", ("limit", "topic_length")),
        1.0
    );
    assert_eq!(
        count("ferrocast_limit_hits_total", ("limit", "message_size")),
        1.0
    );
    assert_eq!(
        count(
            "ferrocast_connections_closed_total",
            ("reason", "too_large")
        ),
        1.0
    );
}

#[tokio::test]
async fn a_text_frame_closes_the_connection_with_1003() {
    let node = node(&[]);
    let mut bystander = subscribed(&node, &["ok.topic"]).await;
    let mut bad = client(&node).await;
    bad.send_message(Message::text(r#"{"op":"ping","id":1}"#))
        .await
        .unwrap();
    let (before, code, reason) = bad.expect_close().await.unwrap();
    assert_eq!((before.len(), code), (0, 1003), "{before:?} {reason}");
    assert!(reason.contains("binary frames"), "{reason}");

    let mut publisher = client(&node).await;
    publisher.publish("ok.topic", b"1", "").await.unwrap();
    assert_eq!(delivery(&bystander.recv().await.unwrap()).data, &b"1"[..]);
    let metrics = metrics(&node).await;
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_connections_closed_total",
            &[("reason", "protocol_error")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_client_errors_total",
            &[("code", "bad_request")]
        ),
        1.0
    );
}

#[tokio::test]
async fn requests_without_id_get_no_reply_and_payloads_keep_their_bytes() {
    let node = node(&[]);
    let mut sub = subscribed(&node, &["t.x"]).await;
    let mut publisher = client(&node).await;
    // (published data, content type, what the subscriber gets)
    let cases: [(&[u8], &str, &[u8]); 9] = [
        (b"null", "", b"null"),
        (b"true", "", b"true"),
        (b"-1.5", "", b"-1.5"),
        (br#""s\n\"q\"""#, "", br#""s\n\"q\"""#),
        (b"[{}]", "application/json", b"[{}]"),
        // Pretty-printed JSON is put on one line, as JSON clients' data.
        (b"{\n  \"k\": 1\n}", "", b"{   \"k\": 1 }"),
        (
            &[0x00, 0xff, 0x80, b'\n'],
            "application/octet-stream",
            &[0x00, 0xff, 0x80, b'\n'],
        ),
        (b"", "text/plain", b""),
        (
            "h\u{e9}llo\n".as_bytes(),
            "text/plain; charset=utf-8",
            "h\u{e9}llo\n".as_bytes(),
        ),
    ];
    // All in one frame, without ids.
    let requests: Vec<ClientMessage> = cases
        .iter()
        .map(|(data, content_type, _)| ClientMessage {
            id: None,
            request: Some(publish("t.x", data, content_type)),
        })
        .collect();
    publisher.send(&requests).await.unwrap();
    for (_, content_type, want) in cases {
        let m = sub.recv().await.unwrap();
        let m = delivery(&m);
        assert_eq!(&m.data[..], want);
        let want_type = if content_type == "application/json" {
            ""
        } else {
            content_type
        };
        assert_eq!(m.content_type, want_type);
    }
    let pong = publisher.request(ping()).await.unwrap();
    assert!(
        matches!(pong.kind, Some(Kind::Pong(_))),
        "a publish without id must not be answered: {pong:?}"
    );
    // A ping without id is answered all the same.
    publisher
        .send(&[ClientMessage {
            id: None,
            request: Some(ping()),
        }])
        .await
        .unwrap();
    let pong = publisher.recv().await.unwrap();
    assert_eq!(
        (pong.id, matches!(pong.kind, Some(Kind::Pong(_)))),
        (None, true)
    );
}

#[tokio::test]
async fn subscribe_since_reports_not_recovered_without_history() {
    let node = node(&[]);
    let mut c = client(&node).await;
    let reply = c.request(since("h.a", "e", 3)).await.unwrap();
    assert_eq!(
        ok(&reply),
        &reply::Ok {
            recovered: Some(false),
            ..reply::Ok::default()
        }
    );
}

#[tokio::test]
async fn since_replays_exactly_what_was_missed_then_continues_live() {
    let node = configured(
        "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"60s\"\n",
        &[],
    );
    let mut publisher = client(&node).await;
    let mut positions = Vec::new();
    for n in 1..=5 {
        let reply = publisher
            .publish("chat.room", n.to_string().as_bytes(), "")
            .await
            .unwrap();
        let ok = ok(&reply);
        positions.push((ok.epoch.clone().unwrap(), ok.offset.unwrap()));
    }
    let epoch = positions[0].0.clone();
    assert!(!epoch.is_empty());
    assert_eq!(
        positions,
        (1..=5).map(|n| (epoch.clone(), n)).collect::<Vec<_>>(),
        "publish replies carry positions"
    );

    // A subscriber that had seen offset 2 resumes: the reply, then 3, 4, 5.
    let mut resumed = client(&node).await;
    let reply = resumed
        .request(since("chat.room", &epoch, 2))
        .await
        .unwrap();
    assert_eq!(
        ok(&reply),
        &reply::Ok {
            epoch: Some(epoch.clone()),
            offset: Some(5),
            recovered: Some(true),
            presence: None,
            history: None,
        }
    );
    let position = |m: &ServerMessage| {
        let m = delivery(m);
        (m.data.clone(), m.offset, m.epoch.clone())
    };
    for n in 3..=5u64 {
        assert_eq!(
            position(&resumed.recv().await.unwrap()),
            (Bytes::from(n.to_string()), Some(n), Some(epoch.clone()))
        );
    }

    // A plain subscriber starts at the top, with the position in the reply.
    let mut fresh = client(&node).await;
    let reply = fresh.subscribe("chat.room").await.unwrap();
    assert_eq!((ok(&reply).offset, ok(&reply).recovered), (Some(5), None));

    publisher.publish("chat.room", b"6", "").await.unwrap();
    for c in [&mut resumed, &mut fresh] {
        assert_eq!(
            position(&c.recv().await.unwrap()),
            (Bytes::from_static(b"6"), Some(6), Some(epoch.clone()))
        );
    }

    // An epoch the history does not know: not recovered, nothing replayed.
    let mut lost = client(&node).await;
    let reply = lost.request(since("chat.room", "gone", 1)).await.unwrap();
    assert_eq!(ok(&reply).recovered, Some(false));
    assert!(lost.recv_within(Duration::from_millis(300)).await.is_err());
    // A pattern cannot resume.
    let reply = lost.request(since("chat.*", &epoch, 1)).await.unwrap();
    assert_eq!(error(&reply).code, "bad_request");
}

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

fn token(sub: &str, expires_in: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now + expires_in}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_connection_without_a_valid_token_is_refused() {
    let secret =
        std::env::temp_dir().join(format!("ferrocast-proto-{}-secret", std::process::id()));
    std::fs::write(&secret, SECRET).unwrap();
    let node = node(&["--jwt-hmac-secret-file", secret.to_str().unwrap()]);
    let url = node.ws_url();
    let auth = |token: String| Request::Auth(request::Auth { token });

    // A request before the token: unauthorized, then close 1008.
    let mut early = ProtoClient::connect(&url).await.unwrap();
    let reply = early.subscribe("chat.a").await.unwrap();
    assert_eq!(error(&reply).code, "unauthorized");
    assert!(error(&reply).message.contains("Auth"), "{reply:?}");
    assert_eq!(early.expect_close().await.unwrap().1, 1008);

    // A token that fails: unauthorized with the reason, then close 1008.
    let mut wrong = ProtoClient::connect(&url).await.unwrap();
    let reply = wrong.request(auth(token("bob", -120))).await.unwrap();
    assert_eq!(error(&reply).code, "unauthorized");
    assert!(error(&reply).message.contains("expired"), "{reply:?}");
    assert_eq!(wrong.expect_close().await.unwrap().1, 1008);

    // A valid token, in the Auth request or at the upgrade.
    let mut good = ProtoClient::connect(&url).await.unwrap();
    ok(&good.request(auth(token("bob", 600))).await.unwrap());
    ok(&good.subscribe("chat.a").await.unwrap());
    let bearer = format!("Bearer {}", token("carol", 600));
    let mut upgraded = ProtoClient::connect_with_headers(&url, &[("Authorization", &bearer)])
        .await
        .unwrap();
    ok(&upgraded.publish("chat.a", b"1", "").await.unwrap());
    assert_eq!(delivery(&good.recv().await.unwrap()).data, &b"1"[..]);
    // Permissions as for JSON clients: another user's private topic.
    assert_eq!(
        error(&good.subscribe("_user.alice.inbox").await.unwrap()).code,
        "forbidden"
    );
    // A second Auth on an authenticated connection is refused.
    let reply = good.request(auth(token("bob", 600))).await.unwrap();
    assert_eq!(error(&reply).code, "unauthorized");

    let metrics = metrics(&node).await;
    assert!(
        metric(
            &metrics,
            "ferrocast_auth_failures_total",
            &[("reason", "expired")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn presence_lists_and_events() {
    let node = configured("[namespaces.room]\npresence = true\n", &[]);
    let mut watcher = client(&node).await;
    ok(&watcher.subscribe("room.lobby").await.unwrap());
    // Its own join tells the client its id.
    let (kind, event) = next_presence(&mut watcher).await;
    assert_eq!(kind, "join");
    assert_eq!(event.topic, "room.lobby");
    let me = event.entry.unwrap();
    assert_eq!(me.user, None);

    // A JSON client joins and leaves.
    let mut other = JsonClient::connect(&node.ws_url()).await.unwrap();
    assert_eq!(other.subscribe("room.lobby").await.unwrap()["op"], "ok");
    let (kind, joined) = next_presence(&mut watcher).await;
    assert_eq!(kind, "join");
    let them = joined.entry.unwrap();
    assert_ne!(them.client, me.client);

    let reply = watcher
        .request(Request::Presence(request::Presence {
            topic: "room.lobby".into(),
        }))
        .await
        .unwrap();
    let mut listed: Vec<String> = ok(&reply)
        .presence
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .map(|e| e.client.clone())
        .collect();
    listed.sort();
    let mut want = vec![me.client.clone(), them.client.clone()];
    want.sort();
    assert_eq!(listed, want);

    other.close().await;
    let (kind, left) = next_presence(&mut watcher).await;
    assert_eq!((kind, left.entry.unwrap().client), ("leave", them.client));

    let reply = watcher
        .request(Request::Presence(request::Presence {
            topic: "plain.x".into(),
        }))
        .await
        .unwrap();
    assert_eq!(error(&reply).code, "bad_request");
}

/// The next join or leave (messages are skipped).
async fn next_presence(c: &mut ProtoClient) -> (&'static str, reply::PresenceEvent) {
    loop {
        match c.recv().await.unwrap().kind {
            Some(Kind::Join(event)) => return ("join", event),
            Some(Kind::Leave(event)) => return ("leave", event),
            _ => {}
        }
    }
}

/// Two nodes on one Redis: what a protobuf client publishes reaches JSON,
/// STOMP and protobuf subscribers on the other node with the same content,
/// binary payloads included, and a JSON publication reaches protobuf
/// subscribers as its JSON text.
#[tokio::test]
async fn protobuf_json_and_stomp_clients_see_the_same_messages_across_nodes() {
    let cluster = Cluster::redis().nodes(&["a", "b"]).start().await;
    let (a, b) = (&cluster[0], &cluster[1]);

    let mut json_sub = JsonClient::connect(&b.ws_url()).await.unwrap();
    assert_eq!(json_sub.subscribe("mix.>").await.unwrap()["op"], "ok");
    let mut stomp_sub = StompClient::connect(&b.ws_url(), "v12.stomp")
        .await
        .unwrap();
    stomp_sub.handshake().await.unwrap();
    stomp_sub
        .send(
            "SUBSCRIBE",
            &[
                ("id", "s1"),
                ("destination", "/topic/mix.>"),
                ("receipt", "r1"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(stomp_sub.recv().await.unwrap().command, "RECEIPT");
    let mut proto_sub = subscribed(b, &["mix.>"]).await;

    let mut proto_pub = client(a).await;
    let binary = [0xff, 0x00, 0xc3, 0x28, 0x80];
    let text = "h\u{e9}llo\nworld";
    // (topic, data, content type, what a JSON subscriber gets)
    let cases: [(&str, &[u8], &str, Value); 3] = [
        (
            "mix.json",
            br#"{"text":"hi","n":[1,2]}"#,
            "",
            json!({"op": "message", "topic": "mix.json", "data": {"text": "hi", "n": [1, 2]}}),
        ),
        (
            "mix.binary",
            &binary,
            "application/octet-stream",
            json!({"op": "message", "topic": "mix.binary", "data": "/wDDKIA=", "encoding": "base64",
                   "content_type": "application/octet-stream"}),
        ),
        (
            "mix.text",
            text.as_bytes(),
            "text/plain; charset=utf-8",
            json!({"op": "message", "topic": "mix.text", "data": text,
                   "content_type": "text/plain; charset=utf-8"}),
        ),
    ];
    for (topic, data, content_type, _) in &cases {
        ok(&proto_pub.publish(topic, data, content_type).await.unwrap());
    }
    for (topic, data, content_type, json_message) in &cases {
        assert_eq!(&json_sub.recv().await.unwrap(), json_message);

        let frame = stomp_sub.recv().await.unwrap();
        assert_eq!(frame.command, "MESSAGE");
        assert_eq!(
            frame.header("destination"),
            Some(&*format!("/topic/{topic}"))
        );
        let stomp_type = if content_type.is_empty() {
            "application/json"
        } else {
            content_type
        };
        assert_eq!(frame.header("content-type"), Some(stomp_type));
        assert_eq!(frame.body, *data, "{topic}");

        let m = proto_sub.recv().await.unwrap();
        assert_eq!(
            delivery(&m),
            &reply::Message {
                topic: topic.to_string(),
                data: Bytes::copy_from_slice(data),
                content_type: content_type.to_string(),
                offset: None,
                epoch: None,
            }
        );
    }

    // And the other way: a JSON publication reaches protobuf subscribers on
    // both nodes as its JSON text.
    let mut proto_local = subscribed(a, &["mix.>"]).await;
    let mut json_pub = JsonClient::connect(&a.ws_url()).await.unwrap();
    let reply = json_pub
        .publish("mix.from_json", json!({"k": [true, null]}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    for sub in [&mut proto_sub, &mut proto_local] {
        let m = sub.recv().await.unwrap();
        assert_eq!(
            delivery(&m),
            &reply::Message {
                topic: "mix.from_json".into(),
                data: Bytes::from_static(br#"{"k":[true,null]}"#),
                content_type: String::new(),
                offset: None,
                epoch: None,
            }
        );
    }
}
