//! Engine.IO v4 and Socket.IO v5 against a real node, spoken from Rust over
//! HTTP and WebSocket (docs/socketio.md).
//!
//! Written from the two protocols and their official test suites
//! (`test-suite/test-suite.js` in socketio/engine.io-protocol and
//! socketio/socket.io-protocol), against the node's endpoint at
//! `/socket.io/`. Cases of the suites covered here (each test names its
//! `describe` block): Engine.IO `handshake` (long-polling and WebSocket:
//! the open packet, invalid `EIO`, invalid `transport`, invalid method),
//! `message` (one packet, several, text and binary, the invalid packet
//! format, duplicate polls), `heartbeat` (pings and pongs on both
//! transports, the ping timeout), `close` (forced by the client on both
//! transports), `upgrade` (probe, noop, upgrade; HTTP and WebSocket
//! requests with the same sid refused afterwards); Socket.IO `connect` (the
//! main namespace, with a payload, an unknown namespace refused, an invalid
//! handshake), `disconnect` (the main namespace, a custom one), `message`
//! (plain and binary packets, with and without acks, the three invalid
//! formats). The suites' echo handlers (`message-back`, the `auth` event,
//! the `/custom` namespace) are their test server's: the node serves them
//! with `--socketio-conformance` (the `conformance_` tests), and otherwise
//! the same packets carry ferrocast's events.
//!
//! Then what only ferrocast does: publications as events named by their
//! `event` header, binary publications as attachments, a JSON WebSocket
//! client on the other side, the JWT in the CONNECT `auth`, recovery of
//! rooms and missed publications from the offset, CORS, `maxPayload`, and
//! drain.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use ferrocast_protocol::proto_frames::pb::server_message::Kind as ProtoKind;
use ferrocast_testkit::{
    http_exchange, metric, Cluster, HttpResponse, JsonClient, Node, ProtoClient, StompClient,
    TestDir,
};

/// How long a test waits for anything the node sends.
const WAIT: Duration = Duration::from_secs(10);

/// `news` keeps history (recovery replays it); `closed` takes no client
/// publications.
const NAMESPACES: &str = "publish_rate = 0
[namespaces.news]
history_size = 100
history_ttl = \"5m\"
[namespaces.closed]
client_publish = false
";

fn node(args: &[&str]) -> Node {
    Node::spawn_with_config(env!("CARGO_BIN_EXE_ferrocast"), NAMESPACES, args)
}

/// A node whose pings come every 300 ms and wait 200 ms for their pong:
/// what the suites' test server is configured with.
fn fast_node() -> Node {
    node(&["--ping-interval", "300ms", "--pong-timeout", "200ms"])
}

const EIO: &str = "/socket.io/?EIO=4";

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpResponse {
    request_with(addr, method, path, &[], body).await
}

async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    tokio::time::timeout(WAIT, http_exchange(addr, method, path, headers, body))
        .await
        .expect("an answer in time")
        .unwrap()
}

/// The Engine.IO refusal `{code, message}` with status 400.
fn assert_refused(response: &HttpResponse, code: u64, message: &str) {
    assert_eq!(response.status, 400, "{response:?}");
    let body: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body, json!({"code": code, "message": message}));
}

/// An Engine.IO session over long-polling, spoken by hand.
struct Polling {
    addr: SocketAddr,
    sid: String,
    open: Value,
}

impl Polling {
    /// The same session, its requests sent to `addr` (another node).
    fn through(&self, addr: SocketAddr) -> Self {
        Self {
            addr,
            sid: self.sid.clone(),
            open: self.open.clone(),
        }
    }
}

impl Polling {
    async fn open(addr: SocketAddr) -> Self {
        let response = request(addr, "GET", &format!("{EIO}&transport=polling&t=N1"), "").await;
        assert_eq!(response.status, 200, "{response:?}");
        let open: Value = serde_json::from_str(response.body.strip_prefix('0').unwrap()).unwrap();
        Self {
            addr,
            sid: open["sid"].as_str().unwrap().to_owned(),
            open,
        }
    }

    fn path(&self) -> String {
        format!("{EIO}&transport=polling&sid={}", self.sid)
    }

    async fn send(&self, payload: &str) -> HttpResponse {
        request(self.addr, "POST", &self.path(), payload).await
    }

    async fn poll(&self) -> HttpResponse {
        request(self.addr, "GET", &self.path(), "").await
    }

    /// The packets of the next poll, pings answered and left out.
    async fn packets(&self) -> Vec<String> {
        loop {
            let response = self.poll().await;
            assert_eq!(response.status, 200, "{response:?}");
            let packets: Vec<String> = response
                .body
                .split('\x1e')
                .filter(|packet| *packet != "2")
                .map(str::to_owned)
                .collect();
            if response.body.split('\x1e').any(|packet| packet == "2") {
                assert_eq!(self.send("3").await.status, 200);
            }
            if !packets.is_empty() {
                return packets;
            }
        }
    }

    /// Connects Socket.IO to `/` with `auth`; returns the CONNECT reply.
    async fn connect(&self, auth: Option<Value>) -> Value {
        let packet = match auth {
            Some(auth) => format!("40{auth}"),
            None => "40".into(),
        };
        assert_eq!(self.send(&packet).await.body, "ok");
        let packets = self.packets().await;
        let reply = packets[0].strip_prefix("40").unwrap();
        serde_json::from_str(reply).unwrap()
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket to the endpoint with `query` (after `EIO=4`).
async fn websocket(addr: SocketAddr, query: &str) -> Ws {
    let url = format!("ws://{addr}{EIO}{query}");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next message that is not an Engine.IO ping (which is answered).
async fn next(ws: &mut Ws) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        if message == Message::text("2") {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        return message;
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// A Socket.IO client over a WebSocket, connected to `/` with `auth`.
async fn socketio(addr: SocketAddr, auth: Option<Value>) -> (Ws, Value) {
    let mut ws = websocket(addr, "&transport=websocket").await;
    assert!(next_text(&mut ws).await.starts_with("0{"));
    let connect = match auth {
        Some(auth) => format!("40{auth}"),
        None => "40".into(),
    };
    ws.send(Message::text(connect)).await.unwrap();
    let reply = next_text(&mut ws).await;
    let reply = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
    (ws, reply)
}

/// Emits `event` with `args` and ack id `id`; returns the ack's argument,
/// skipping (and returning) the events that come first.
async fn emit(ws: &mut Ws, id: u64, args: Value) -> (Value, Vec<Value>) {
    ws.send(Message::text(format!("42{id}{args}")))
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let text = next_text(ws).await;
        if let Some(ack) = text.strip_prefix(&format!("43{id}")) {
            let ack: Value = serde_json::from_str(ack).unwrap();
            return (ack[0].clone(), events);
        }
        events.push(event(&text));
    }
}

/// The arguments (name first) of an EVENT packet's text.
fn event(text: &str) -> Value {
    serde_json::from_str(
        text.strip_prefix("42")
            .unwrap_or_else(|| panic!("not an event: {text:?}")),
    )
    .unwrap()
}

/// The event named `name`: among `seen` (what came before an ack), else
/// the next one.
async fn seen_or_next(ws: &mut Ws, seen: &[Value], name: &str) -> Value {
    match seen.iter().find(|args| args[0] == name) {
        Some(args) => args.clone(),
        None => event_named(ws, name).await,
    }
}

/// Waits for the event named `name`.
async fn event_named(ws: &mut Ws, name: &str) -> Value {
    loop {
        let args = event(&next_text(ws).await);
        if args[0] == name {
            return args;
        }
    }
}

// Engine.IO `handshake`.

#[tokio::test]
async fn handshake_over_long_polling_opens_a_session() {
    let node = fast_node();
    let response = request(node.public, "GET", &format!("{EIO}&transport=polling"), "").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    let open: Value = serde_json::from_str(response.body.strip_prefix('0').unwrap()).unwrap();
    let mut keys: Vec<_> = open.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert!(open["sid"].is_string());
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 65536);
}

#[tokio::test]
async fn handshake_refuses_bad_queries_and_methods_with_the_official_codes() {
    let node = fast_node();
    let addr = node.public;
    for path in [
        "/socket.io/?transport=polling",
        "/socket.io/?EIO=abc&transport=polling",
        "/socket.io/?EIO=3&transport=polling",
    ] {
        let response = request(addr, "GET", path, "").await;
        assert_refused(&response, 5, "Unsupported protocol version");
    }
    for path in [EIO.to_owned(), format!("{EIO}&transport=abc")] {
        assert_refused(
            &request(addr, "GET", &path, "").await,
            0,
            "Transport unknown",
        );
    }
    for method in ["POST", "PUT"] {
        let response = request(addr, method, &format!("{EIO}&transport=polling"), "").await;
        assert_refused(&response, 2, "Bad handshake method");
    }
    let unknown = request(
        addr,
        "GET",
        &format!("{EIO}&transport=polling&sid=nope"),
        "",
    )
    .await;
    assert_refused(&unknown, 1, "Session ID unknown");
}

#[tokio::test]
async fn handshake_over_websocket_opens_a_session_without_upgrades() {
    let node = fast_node();
    let mut ws = websocket(node.public, "&transport=websocket").await;
    let open = next_text(&mut ws).await;
    let open: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert!(open["sid"].is_string());
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["pingInterval"], 300);
    for query in [
        "/socket.io/?transport=websocket",
        "/socket.io/?EIO=abc&transport=websocket",
        "/socket.io/?EIO=4",
    ] {
        let url = format!("ws://{}{query}", node.public);
        assert!(
            tokio_tungstenite::connect_async(url).await.is_err(),
            "{query}"
        );
    }
}

// Engine.IO `message`.

#[tokio::test]
async fn message_long_polling_carries_several_and_binary_packets() {
    let node = fast_node();
    let session = Polling::open(node.public).await;
    session.connect(None).await;
    // Two events in one payload; the second publishes a binary attachment
    // (`b<base64>`) that comes back as one.
    let payload = "421[\"subscribe\",\"chat.a\"]\x1e451-2[\"publish\",\"chat.a\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==";
    assert_eq!(session.send(payload).await.body, "ok");
    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(session.packets().await);
    }
    // Requests run concurrently: their answers come in any order.
    assert!(got.contains(&"431[{\"ok\":true}]".to_owned()), "{got:?}");
    assert!(got
        .iter()
        .any(|p| p.starts_with("42[\"subscribed\",\"chat.a\"")));
    let at = got.iter().position(|p| p.starts_with("451-")).unwrap();
    let args: Value = serde_json::from_str(got[at].strip_prefix("451-").unwrap()).unwrap();
    assert_eq!(args[0], "message");
    assert_eq!(args[1], json!({"_placeholder": true, "num": 0}));
    assert_eq!(args[2], json!({"topic": "chat.a"}));
    assert_eq!(got[at + 1], "bAQIDBA==");
    assert!(got.contains(&"432[{\"ok\":true}]".to_owned()), "{got:?}");
}

#[tokio::test]
async fn message_an_invalid_packet_closes_the_session() {
    let node = fast_node();
    let session = Polling::open(node.public).await;
    let response = session.send("abc").await;
    assert_refused(&response, 3, "Bad request");
    assert_eq!(session.poll().await.status, 400);

    assert_closed_after(node.public, "abc").await;
}

#[tokio::test]
async fn message_duplicate_polls_close_the_session() {
    let node = fast_node();
    let session = Polling::open(node.public).await;
    let (addr, path) = (session.addr, session.path());
    let first = tokio::spawn(async move { request(addr, "GET", &path, "").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = request(
        node.public,
        "GET",
        &format!("{}&t=burst", session.path()),
        "",
    )
    .await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "1");
    assert_eq!(session.poll().await.status, 400);
}

// Engine.IO `heartbeat`.

#[tokio::test]
async fn heartbeat_pings_need_pongs_on_both_transports() {
    let node = fast_node();
    let session = Polling::open(node.public).await;
    for _ in 0..3 {
        assert_eq!(session.poll().await.body, "2");
        assert_eq!(session.send("3").await.body, "ok");
    }
    // No pong: the session ends after the ping timeout.
    assert_eq!(session.poll().await.body, "2");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(session.send("3").await.status, 400);

    let mut ws = websocket(node.public, "&transport=websocket").await;
    next_text(&mut ws).await;
    for _ in 0..3 {
        assert_eq!(next_raw(&mut ws).await, Message::text("2"));
        ws.send(Message::text("3")).await.unwrap();
    }
    assert_eq!(next_raw(&mut ws).await, Message::text("2"));
    assert!(matches!(next_raw(&mut ws).await, Message::Close(_)));
}

/// A new session over a WebSocket that sends `packet` is closed.
async fn assert_closed_after(addr: SocketAddr, packet: &str) {
    let mut ws = websocket(addr, "&transport=websocket").await;
    next_text(&mut ws).await;
    ws.send(Message::text(packet.to_owned())).await.unwrap();
    assert!(
        matches!(next(&mut ws).await, Message::Close(_)),
        "{packet:?}"
    );
}

/// The next message, pings included.
async fn next_raw(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .unwrap()
        .unwrap()
}

// Engine.IO `close`.

#[tokio::test]
async fn close_by_the_client_ends_the_session() {
    let node = node(&[]);
    let session = Polling::open(node.public).await;
    let (addr, path) = (session.addr, session.path());
    let pending = tokio::spawn(async move { request(addr, "GET", &path, "").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(session.send("1").await.body, "ok");
    assert_eq!(pending.await.unwrap().body, "6");
    assert_eq!(session.poll().await.status, 400);

    assert_closed_after(node.public, "1").await;
}

// Engine.IO `upgrade`.

#[tokio::test]
async fn upgrade_from_long_polling_to_websocket() {
    let node = node(&[]);
    let session = Polling::open(node.public).await;
    session.connect(None).await;
    let mut ws = websocket(
        node.public,
        &format!("&transport=websocket&sid={}", session.sid),
    )
    .await;
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe");
    // The noop ends the poll, so that the client can pause polling.
    assert_eq!(session.poll().await.body, "6");
    ws.send(Message::text("5")).await.unwrap();
    let (ack, _) = emit(&mut ws, 1, json!(["subscribe", "chat.up"])).await;
    assert_eq!(ack, json!({"ok": true}));
    // The session is the WebSocket's now.
    assert_refused(&session.poll().await, 3, "Bad request");
    let again = format!(
        "ws://{}{EIO}&transport=websocket&sid={}",
        node.public, session.sid
    );
    assert!(tokio_tungstenite::connect_async(again).await.is_err());
    let (ack, _) = emit(&mut ws, 2, json!(["publish", "chat.up", "after"])).await;
    assert_eq!(ack, json!({"ok": true}));
}

#[tokio::test]
async fn upgrade_sent_at_once_is_taken_in_order() {
    let node = node(&[]);
    let session = Polling::open(node.public).await;
    let mut ws = websocket(
        node.public,
        &format!("&transport=websocket&sid={}", session.sid),
    )
    .await;
    ws.send(Message::text("2probe")).await.unwrap();
    ws.send(Message::text("5")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe");
    // The noop meant for the poll goes over the WebSocket instead.
    assert_eq!(next_text(&mut ws).await, "6");
    assert_eq!(session.poll().await.status, 400);
}

// Socket.IO `connect` and `disconnect`.

#[tokio::test]
async fn connect_to_the_main_namespace_only() {
    let node = node(&[]);
    let (mut ws, reply) = socketio(node.public, None).await;
    assert!(reply["sid"].is_string());
    // The recovery id: every connection gets one.
    assert!(reply["pid"].is_string());
    ws.send(Message::text("40/random,")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
    ws.send(Message::text("41")).await.unwrap();
    assert!(matches!(next(&mut ws).await, Message::Close(_)));

    let (_, reply) = socketio(node.public, Some(json!({"token": null}))).await;
    assert!(reply["sid"].is_string());

    assert_closed_after(node.public, "4abc").await;
}

// Socket.IO `message`, and the pub/sub mapping.

#[tokio::test]
async fn events_subscribe_publish_and_receive_with_acks() {
    let node = node(&[]);
    let (mut ws, _) = socketio(node.public, None).await;
    let (ack, events) = emit(&mut ws, 1, json!(["subscribe", "news.a"])).await;
    assert_eq!(ack["ok"], true);
    assert!(ack["position"]["epoch"].is_string());
    assert!(events.is_empty());
    let subscribed = event_named(&mut ws, "subscribed").await;
    assert_eq!(subscribed[1], "news.a");

    // From a JSON WebSocket client to the Socket.IO client.
    let mut json_client = JsonClient::connect(&node.ws_url()).await.unwrap();
    json_client.subscribe("news.a").await.unwrap();
    json_client
        .publish("news.a", json!({"n": 1}))
        .await
        .unwrap();
    let message = event_named(&mut ws, "message").await;
    assert_eq!(message[1], json!({"n": 1}));
    assert_eq!(message[2]["topic"], "news.a");
    assert_eq!(message[2]["position"]["offset"], 1);
    // The recovery offset comes last.
    assert!(message[3].as_str().unwrap().starts_with("news.a~1~"));
    let _ = json_client.recv().await.unwrap();

    // From the Socket.IO client, named by `event`, to both.
    let (ack, seen) = emit(
        &mut ws,
        2,
        json!(["publish", "news.a", [1, "two"], {"event": "custom"}]),
    )
    .await;
    assert_eq!(ack["ok"], true);
    assert_eq!(ack["position"]["offset"], 2);
    let custom = seen_or_next(&mut ws, &seen, "custom").await;
    assert_eq!(custom[1], json!([1, "two"]));
    // A name socket.io-client keeps for itself arrives as `message`.
    let (ack, seen) = emit(
        &mut ws,
        7,
        json!(["publish", "news.a", 3, {"event": "connect"}]),
    )
    .await;
    assert_eq!(ack["ok"], true);
    let renamed = seen_or_next(&mut ws, &seen, "message").await;
    assert_eq!(renamed[1], 3);
    let delivered = json_client.recv().await.unwrap();
    assert_eq!(delivered["data"], json!([1, "two"]));

    // Refusals through the ack.
    let (ack, _) = emit(&mut ws, 3, json!(["publish", "closed.x", 1])).await;
    assert_eq!(ack["error"]["code"], "forbidden");
    let (ack, _) = emit(&mut ws, 4, json!(["subscribe", "a..b"])).await;
    assert_eq!(ack["error"]["code"], "bad_request");
    let (ack, _) = emit(&mut ws, 5, json!(["dance", "a.b"])).await;
    assert_eq!(ack["error"]["code"], "bad_request");

    let (ack, seen) = emit(&mut ws, 6, json!(["unsubscribe", "news.a"])).await;
    assert_eq!(ack, json!({"ok": true}));
    let unsubscribed = seen_or_next(&mut ws, &seen, "unsubscribed").await;
    assert_eq!(unsubscribed[1], "news.a");
    assert_eq!(unsubscribed[3], "");
}

#[tokio::test]
async fn binary_publications_travel_as_attachments() {
    let node = node(&[]);
    let (mut ws, _) = socketio(node.public, None).await;
    emit(&mut ws, 1, json!(["subscribe", "chat.bin"])).await;
    ws.send(Message::text(
        r#"451-["publish","chat.bin",{"_placeholder":true,"num":0}]"#,
    ))
    .await
    .unwrap();
    ws.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    let mut header = None;
    let mut attachment = None;
    while attachment.is_none() {
        match next(&mut ws).await {
            Message::Text(text) if text.starts_with("451-") => header = Some(text.to_string()),
            Message::Binary(bytes) => attachment = Some(bytes.to_vec()),
            _ => {}
        }
    }
    let header: Value =
        serde_json::from_str(header.unwrap().strip_prefix("451-").unwrap()).unwrap();
    assert_eq!(header[0], "message");
    assert_eq!(header[1], json!({"_placeholder": true, "num": 0}));
    assert_eq!(attachment.unwrap(), vec![0u8, 159, 146, 150]);
}

/// STOMP publishers name the event with an `event` header; their binary
/// bodies arrive as attachments and their text as strings, and a Socket.IO
/// client's binary publication reaches a STOMP subscriber as its bytes.
#[tokio::test]
async fn stomp_publications_name_their_event_and_keep_their_type() {
    let node = node(&[]);
    let (mut ws, _) = socketio(node.public, None).await;
    emit(&mut ws, 1, json!(["subscribe", "chat.stomp"])).await;
    let mut stomp = StompClient::connect(&node.ws_url(), "v12.stomp")
        .await
        .unwrap();
    stomp.handshake().await.unwrap();
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("id", "s1"),
                ("destination", "/topic/chat.stomp"),
                ("receipt", "r1"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(stomp.recv().await.unwrap().command, "RECEIPT");
    stomp
        .send(
            "SEND",
            &[
                ("destination", "/topic/chat.stomp"),
                ("event", "order"),
                ("content-type", "application/octet-stream"),
            ],
            "\u{1}bin",
        )
        .await
        .unwrap();
    let header = loop {
        if let Message::Text(text) = next(&mut ws).await {
            if let Some(header) = text.strip_prefix("451-") {
                break serde_json::from_str::<Value>(header).unwrap();
            }
        }
    };
    assert_eq!(header[0], "order");
    assert_eq!(header[2]["topic"], "chat.stomp");
    assert_eq!(next(&mut ws).await, Message::binary(b"\x01bin".to_vec()));
    stomp
        .send(
            "SEND",
            &[
                ("destination", "/topic/chat.stomp"),
                ("content-type", "text/plain"),
            ],
            "plain words",
        )
        .await
        .unwrap();
    let text = event_named(&mut ws, "message").await;
    assert_eq!(text[1], "plain words");
    // A body declared JSON that does not parse goes as bytes: it cannot
    // break the Socket.IO client's parser.
    stomp
        .send(
            "SEND",
            &[
                ("destination", "/topic/chat.stomp"),
                ("content-type", "application/json"),
            ],
            "{not json",
        )
        .await
        .unwrap();
    loop {
        if let Message::Text(text) = next(&mut ws).await {
            if text.starts_with("451-") {
                break;
            }
        }
    }
    assert_eq!(next(&mut ws).await, Message::binary(b"{not json".to_vec()));

    ws.send(Message::text(
        r#"451-["publish","chat.stomp",{"_placeholder":true,"num":0}]"#,
    ))
    .await
    .unwrap();
    ws.send(Message::binary(vec![7u8, 8, 9])).await.unwrap();
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(stomp.recv().await.unwrap());
    }
    let binary = frames.iter().find(|f| {
        f.header("content-type") == Some("application/octet-stream") && f.body == [7, 8, 9]
    });
    assert!(binary.is_some(), "{frames:?}");
}

/// Binary both ways with a protobuf client: its opaque bytes arrive as an
/// attachment (the event named by no header: `message`), and a Socket.IO
/// client's attachment reaches it as the same bytes and media type.
#[tokio::test]
async fn binary_travels_both_ways_with_a_protobuf_client() {
    let node = node(&[]);
    let (mut ws, _) = socketio(node.public, None).await;
    emit(&mut ws, 1, json!(["subscribe", "chat.pb"])).await;
    let mut proto = ProtoClient::connect(&node.ws_url()).await.unwrap();
    proto.subscribe("chat.pb").await.unwrap();
    proto
        .publish("chat.pb", &[0xde, 0xad, 0xbe, 0xef], "image/png")
        .await
        .unwrap();
    let header = loop {
        if let Message::Text(text) = next(&mut ws).await {
            if let Some(header) = text.strip_prefix("451-") {
                break serde_json::from_str::<Value>(header).unwrap();
            }
        }
    };
    assert_eq!(header[0], "message");
    assert_eq!(
        next(&mut ws).await,
        Message::binary(vec![0xde, 0xad, 0xbe, 0xef])
    );
    ws.send(Message::text(
        r#"451-["publish","chat.pb",{"_placeholder":true,"num":0}]"#,
    ))
    .await
    .unwrap();
    ws.send(Message::binary(vec![1u8, 2])).await.unwrap();
    let delivered = loop {
        let message = proto.recv().await.unwrap();
        if let Some(ProtoKind::Message(delivered)) = message.kind {
            if delivered.data[..] == [1, 2] {
                break delivered;
            }
        }
    };
    assert_eq!(delivered.content_type, "application/octet-stream");
}

// Authentication.

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

#[tokio::test]
async fn the_token_comes_in_the_connect_auth() {
    let dir = TestDir::new("socketio-auth");
    let secret = dir.write("secret", SECRET);
    let config = dir.write("node.toml", "[namespaces.members]\nanonymous = false\n");
    let node = Node::spawn(
        env!("CARGO_BIN_EXE_ferrocast"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--jwt-hmac-secret-file",
            secret.to_str().unwrap(),
            "--allow-anonymous",
            "false",
            "--auth-timeout",
            "1s",
        ],
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ada", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();

    let mut ws = websocket(node.public, "&transport=websocket").await;
    next_text(&mut ws).await;
    ws.send(Message::text("40")).await.unwrap();
    let refused = next_text(&mut ws).await;
    assert!(refused.starts_with("44{\"message\":"), "{refused}");
    ws.send(Message::text(r#"40{"token":"forged"}"#))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.starts_with("44{\"message\":"));
    // No valid token in time: a Socket.IO DISCONNECT (the client does not
    // reconnect), then the close.
    assert_eq!(next_text(&mut ws).await, "41");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected close 1008, got {other:?}"),
    }

    let (mut ws, reply) = socketio(node.public, Some(json!({ "token": token }))).await;
    assert!(reply["sid"].is_string());
    let (ack, _) = emit(&mut ws, 1, json!(["subscribe", "members.a"])).await;
    assert_eq!(ack["ok"], true);
}

// Recovery.

/// The offset of the last event in `events` with one.
fn last_offset(args: &Value) -> String {
    args.as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn recovery_restores_rooms_and_replays_what_was_missed() {
    let node = node(&[]);
    let (mut ws, reply) = socketio(node.public, None).await;
    let pid = reply["pid"].as_str().unwrap().to_owned();
    emit(&mut ws, 1, json!(["subscribe", "news.r"])).await;
    event_named(&mut ws, "subscribed").await;
    emit(&mut ws, 2, json!(["subscribe", "news.s"])).await;
    event_named(&mut ws, "subscribed").await;
    let (ack, seen) = emit(&mut ws, 3, json!(["publish", "news.r", 1])).await;
    assert_eq!(ack["ok"], true);
    let first = seen_or_next(&mut ws, &seen, "message").await;
    assert_eq!(first[1], 1);
    // What socket.io-client keeps: the last event's offset, naming both rooms.
    let offset = last_offset(&first);
    assert!(
        offset.starts_with("news.r~1~") && offset.contains(" news.s~0~"),
        "{offset}"
    );
    drop(ws);

    let mut publisher = JsonClient::connect(&node.ws_url()).await.unwrap();
    for n in 2..=4 {
        publisher.publish("news.r", json!(n)).await.unwrap();
    }
    publisher.publish("news.s", json!("s1")).await.unwrap();

    let (mut ws, reply) = socketio(node.public, Some(json!({"pid": pid, "offset": offset}))).await;
    assert_eq!(reply["pid"], pid, "recovered: the same pid");
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(event_named(&mut ws, "message").await[1].clone());
    }
    // Each room's publications in order, once.
    let numbers: Vec<_> = got.iter().filter(|v| v.is_number()).cloned().collect();
    assert_eq!(numbers, [json!(2), json!(3), json!(4)]);
    assert!(got.contains(&json!("s1")), "{got:?}");

    // An offset the history no longer reaches: not recovered.
    let stale = format!("news.r~1~{}", "0".repeat(16));
    let (_, reply) = socketio(node.public, Some(json!({"pid": pid, "offset": stale}))).await;
    assert_ne!(reply["pid"], pid);
}

// Owner routing.

/// Long-polling without sticky sessions: a session opened on one node is
/// served through another, which relays its sends and polls to the owner;
/// a WebSocket upgrade on the other node is refused (the client keeps
/// polling), and one on the owner succeeds.
#[tokio::test]
async fn polling_requests_on_another_node_reach_the_sessions_owner() {
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .start()
        .await;
    let (a, b) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let owned = Polling::open(a.public).await;
    let elsewhere = owned.through(b.public);
    let reply = elsewhere.connect(None).await;
    assert!(reply["pid"].is_string());
    assert_eq!(
        elsewhere
            .send("421[\"subscribe\",\"news.relay\"]")
            .await
            .body,
        "ok"
    );
    let mut got = Vec::new();
    while !got.iter().any(|p: &String| p.starts_with("431")) {
        got.extend(elsewhere.packets().await);
    }
    let mut publisher = JsonClient::connect(&a.ws_url()).await.unwrap();
    publisher
        .publish("news.relay", json!("relayed"))
        .await
        .unwrap();
    let mut message = None;
    while message.is_none() {
        message = elsewhere
            .packets()
            .await
            .into_iter()
            .find(|p| p.starts_with("42[\"message\""));
    }
    assert_eq!(event(&message.unwrap())[1], "relayed");

    let refused = format!(
        "ws://{}{EIO}&transport=websocket&sid={}",
        b.public, owned.sid
    );
    assert!(tokio_tungstenite::connect_async(refused).await.is_err());
    let metrics = ferrocast_testkit::http_get(b.admin, "/metrics")
        .await
        .unwrap()
        .1;
    assert!(
        metric(
            &metrics,
            "ferrocast_socketio_relayed_total",
            &[("outcome", "relayed")]
        ) >= 3.0
    );
    assert_eq!(
        request(
            b.public,
            "GET",
            &format!("{EIO}&transport=polling&sid=nobody"),
            ""
        )
        .await
        .status,
        400
    );
}

// Conformance mode: what the official suites' test servers do.

/// A node serving the suites' expectations (`--socketio-conformance`),
/// with their test server's timers and `maxPayload`.
fn conformance_node() -> Node {
    node(&[
        "--socketio-conformance",
        "--ping-interval",
        "300ms",
        "--pong-timeout",
        "200ms",
        "--max-message-size",
        "1000000",
    ])
}

/// The Engine.IO suite's `message` cases against the echo at `/engine.io/`.
#[tokio::test]
async fn conformance_engine_echo_returns_text_and_binary_packets() {
    let node = conformance_node();
    let open = request(
        node.public,
        "GET",
        "/engine.io/?EIO=4&transport=polling",
        "",
    )
    .await;
    let open: Value = serde_json::from_str(open.body.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["maxPayload"], 1_000_000);
    assert_eq!(open["pingInterval"], 300);
    let path = format!(
        "/engine.io/?EIO=4&transport=polling&sid={}",
        open["sid"].as_str().unwrap()
    );
    for payload in [
        "4hello",
        "4test1\x1e4test2\x1e4test3",
        "4hello\x1ebAQIDBA==",
    ] {
        assert_eq!(
            request(node.public, "POST", &path, payload).await.body,
            "ok"
        );
        assert_eq!(request(node.public, "GET", &path, "").await.body, payload);
    }
    let url = format!("ws://{}/engine.io/?EIO=4&transport=websocket", node.public);
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    next_text(&mut ws).await;
    ws.send(Message::text("4hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "4hello");
    ws.send(Message::binary(vec![1u8, 2, 3, 4])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![1u8, 2, 3, 4]));
}

/// A WebSocket connected to the suite handlers' main namespace: the
/// suite's `initSocketIOConnection`.
async fn suite_connection(addr: SocketAddr) -> Ws {
    let mut ws = websocket(addr, "&transport=websocket").await;
    next_text(&mut ws).await;
    ws.send(Message::text("40")).await.unwrap();
    let handshake = next_text(&mut ws).await;
    let handshake: Value = serde_json::from_str(handshake.strip_prefix("40").unwrap()).unwrap();
    assert_eq!(
        handshake.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["sid"]
    );
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{}]"#);
    ws
}

/// The Socket.IO suite's `connect`, `disconnect` and `message` cases.
#[tokio::test]
async fn conformance_suite_handlers_answer_as_the_suites_test_server() {
    let node = conformance_node();
    let addr = node.public;
    let mut ws = websocket(addr, "&transport=websocket").await;
    next_text(&mut ws).await;
    ws.send(Message::text(r#"40{"token":"123"}"#))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.starts_with("40{\"sid\""));
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{"token":"123"}]"#);
    ws.send(Message::text(r#"40/custom,{"token":"abc"}"#))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.starts_with("40/custom,{\"sid\""));
    assert_eq!(
        next_text(&mut ws).await,
        r#"42/custom,["auth",{"token":"abc"}]"#
    );
    ws.send(Message::text("40/random")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
    ws.send(Message::text("41/custom")).await.unwrap();
    ws.send(Message::text(
        r#"42["message","message to main namespace"]"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"42["message-back","message to main namespace"]"#
    );
    ws.send(Message::text(
        r#"42456["message-with-ack",1,"2",{"3":[false]}]"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await, r#"43456[1,"2",{"3":[false]}]"#);
    for (sent, answer) in [
        (
            r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        ),
        (
            r#"452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        ),
    ] {
        ws.send(Message::text(sent)).await.unwrap();
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        ws.send(Message::binary(vec![4u8, 5, 6])).await.unwrap();
        assert_eq!(next_text(&mut ws).await, answer);
        assert_eq!(next(&mut ws).await, Message::binary(vec![1u8, 2, 3]));
        assert_eq!(next(&mut ws).await, Message::binary(vec![4u8, 5, 6]));
    }
    ws.send(Message::text("41")).await.unwrap();
    assert!(matches!(next(&mut ws).await, Message::Close(_)));

    for broken in [
        "4abc",
        "42{}",
        r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#,
    ] {
        let mut ws = suite_connection(addr).await;
        ws.send(Message::text(broken)).await.unwrap();
        assert!(matches!(next(&mut ws).await, Message::Close(_)), "{broken}");
    }
}

// CORS and limits.

#[tokio::test]
async fn polling_answers_other_origins_and_bounds_payloads() {
    let node = node(&["--max-message-size", "1024"]);
    let response = request_with(
        node.public,
        "GET",
        &format!("{EIO}&transport=polling"),
        &[("Origin", "https://app.example")],
        "",
    )
    .await;
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let session = Polling::open(node.public).await;
    assert_eq!(session.open["maxPayload"], 1024);
    let big = format!("42[\"publish\",\"chat.a\",\"{}\"]", "x".repeat(2000));
    assert_eq!(session.send(&big).await.status, 413);
}

// Drain.

#[tokio::test]
async fn drain_closes_the_transport_so_that_clients_reconnect() {
    let node = node(&["--drain-timeout", "2s"]);
    let session = Polling::open(node.public).await;
    session.connect(None).await;
    let (mut ws, _) = socketio(node.public, None).await;
    let (addr, path) = (session.addr, session.path());
    let pending = tokio::spawn(async move { request(addr, "GET", &path, "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGTERM).unwrap();
    // An Engine.IO close, not a Socket.IO DISCONNECT: the client reconnects.
    assert_eq!(pending.await.unwrap().body, "1");
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1012),
        other => panic!("expected close 1012, got {other:?}"),
    }
}
