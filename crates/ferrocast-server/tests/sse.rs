//! Server-Sent Events and HTTP publish (issue #6), with raw HTTP clients:
//! events and their ids, resuming every topic of a stream with
//! `Last-Event-ID`, refusals, keep-alive comments, slow streams, drain, the
//! answers of `POST /publish`; and three real nodes on Redis and on NATS,
//! one killed with SIGKILL mid-stream, whose SSE subscribers resume on
//! another node and end with every message once, in order.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_core::backplane::memory::MemoryBus;
use ferrocast_core::{Hub, Namespaces, SubscriptionRegistry};
use ferrocast_edge::{public_router, Edge, EdgeSettings};
use ferrocast_testkit::{
    http_get, metric, wait_readyz, Cluster, ClusterBuilder, HttpPublisher, JsonClient, Node,
    RedisServer, SseClient, SseError, SseEvent, SseItem,
};

/// `chat` keeps history, `news` does not.
const NAMESPACES: &str = "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"60s\"\n";

/// A node on the memory backplane with [`NAMESPACES`], and `args`.
fn node(args: &[&str]) -> Node {
    Node::spawn_with_config(env!("CARGO_BIN_EXE_ferrocast"), NAMESPACES, args)
}

async fn open(node: &Node, path: &str, last_event_id: Option<&str>) -> SseClient {
    SseClient::connect(node.public, path, last_event_id)
        .await
        .unwrap()
}

/// The next `n` `subscribed` events (topics open concurrently, so in any
/// order), by topic; the retry hint may come first.
async fn subscribed(stream: &mut SseClient, n: usize) -> HashMap<String, Value> {
    let mut by_topic = HashMap::new();
    while by_topic.len() < n {
        let event = stream.next_event().await.unwrap();
        assert_eq!(event.event, "subscribed", "{event:?}");
        let data = event.json().unwrap();
        by_topic.insert(data["topic"].as_str().unwrap().to_string(), data);
    }
    by_topic
}

/// The next message event: its JSON and its id.
async fn message(stream: &mut SseClient) -> (Value, Option<String>) {
    let event = stream.next_event().await.unwrap();
    assert_eq!(event.event, "message", "{event:?}");
    (event.json().unwrap(), event.id)
}

/// The next `n` messages, as the `data` numbers per topic.
async fn numbers(stream: &mut SseClient, n: usize) -> HashMap<String, Vec<u64>> {
    resumed(stream, 0, n).await.1
}

/// The next `n` `subscribed` events by topic, and the next `messages`
/// messages as the `data` numbers per topic: when topics resume, the replay
/// of one may come before another is subscribed.
async fn resumed(
    stream: &mut SseClient,
    n: usize,
    messages: usize,
) -> (HashMap<String, Value>, HashMap<String, Vec<u64>>) {
    let mut opened = HashMap::new();
    let mut by_topic: HashMap<String, Vec<u64>> = HashMap::new();
    let mut received = 0;
    while opened.len() < n || received < messages {
        let event = stream.next_event().await.unwrap();
        // Every topic here keeps history: while one opens, the ids still
        // hold the position of the others.
        let id = event.id.clone().unwrap();
        assert!(!id.split(',').any(str::is_empty), "{id}");
        let data = event.json().unwrap();
        let topic = data["topic"].as_str().unwrap().to_string();
        if event.event == "subscribed" {
            assert!(
                !by_topic.contains_key(&topic),
                "{topic} got messages before subscribed"
            );
            opened.insert(topic, data);
        } else {
            assert!(opened.contains_key(&topic) || n == 0, "{topic}: {event:?}");
            by_topic
                .entry(topic)
                .or_default()
                .push(data["data"].as_u64().unwrap());
            received += 1;
        }
    }
    (opened, by_topic)
}

async fn nothing_more(stream: &mut SseClient) {
    loop {
        match stream.next_within(Duration::from_millis(300)).await {
            Err(SseError::Timeout) => return,
            Ok(SseItem::Comment(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The values of `series` (a metric name and labels) on `node`'s admin listener.
async fn metrics(node: &Node, series: &[(&str, &[(&str, &str)])]) -> Vec<f64> {
    let (_, text) = http_get(node.admin, "/metrics").await.unwrap();
    series
        .iter()
        .map(|(name, labels)| metric(&text, name, labels))
        .collect()
}

async fn publish(publisher: &mut HttpPublisher, topic: &str, data: Value) -> Value {
    let (status, reply) = publisher.publish(topic, &data).await.unwrap();
    assert_eq!((status, &reply["op"]), (200, &json!("ok")), "{reply}");
    reply
}

#[tokio::test]
async fn events_carry_the_json_message_and_a_position_per_topic() {
    let node = node(&[]);
    let mut stream = open(&node, "/sse?topic=chat.a&topic=news.*&topic=chat.b", None).await;
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    let Ok(SseItem::Retry(retry)) = stream.next().await else {
        panic!("no retry hint first");
    };
    assert!((1_000..=3_000).contains(&retry), "{retry}");
    let opened = subscribed(&mut stream, 3).await;
    assert_eq!(
        opened["chat.a"],
        json!({"topic": "chat.a", "epoch": "", "offset": 0})
    );
    assert_eq!(opened["news.*"], json!({"topic": "news.*"}));

    let mut publisher = HttpPublisher::new(node.public);
    let a = publish(&mut publisher, "chat.a", json!({"n": 1})).await;
    let (message, id) = self::message(&mut stream).await;
    let epoch_a = a["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        message,
        json!({"op": "message", "topic": "chat.a", "data": {"n": 1}, "offset": 1, "epoch": epoch_a})
    );
    assert_eq!(id.unwrap(), format!("{epoch_a}:1,,:0"));

    // Without history: no position, the id stays.
    assert_eq!(
        publish(&mut publisher, "news.x", json!("n")).await,
        json!({"op": "ok"})
    );
    let (message, id) = self::message(&mut stream).await;
    assert_eq!(
        message,
        json!({"op": "message", "topic": "news.x", "data": "n"})
    );
    assert_eq!(id.unwrap(), format!("{epoch_a}:1,,:0"));

    let b = publish(&mut publisher, "chat.b", json!(null)).await;
    let (_, id) = self::message(&mut stream).await;
    assert_eq!(
        id.unwrap(),
        format!("{epoch_a}:1,,{}:1", b["epoch"].as_str().unwrap())
    );
    nothing_more(&mut stream).await;

    let counts = metrics(
        &node,
        &[
            ("ferrocast_connections", &[("protocol", "sse")]),
            ("ferrocast_connections_opened_total", &[("protocol", "sse")]),
        ],
    )
    .await;
    assert_eq!(counts, [1.0, 1.0]);
}

#[tokio::test]
async fn last_event_id_resumes_every_topic_exactly() {
    let node = node(&[]);
    let path = "/sse?topic=chat.a&topic=chat.b";
    let mut publisher = HttpPublisher::new(node.public);
    let mut stream = open(&node, path, None).await;
    subscribed(&mut stream, 2).await;
    publish(&mut publisher, "chat.a", json!(1)).await;
    publish(&mut publisher, "chat.a", json!(2)).await;
    publish(&mut publisher, "chat.b", json!(1)).await;
    numbers(&mut stream, 3).await;
    let seen = stream.last_event_id.clone().unwrap();
    drop(stream);

    // Away: each topic moves on.
    publish(&mut publisher, "chat.a", json!(3)).await;
    publish(&mut publisher, "chat.b", json!(2)).await;
    publish(&mut publisher, "chat.a", json!(4)).await;

    let mut back = open(&node, path, Some(&seen)).await;
    let (opened, missed) = resumed(&mut back, 2, 3).await;
    assert_eq!(opened["chat.a"]["recovered"], true, "{opened:?}");
    assert_eq!(opened["chat.a"]["offset"], 4, "{opened:?}");
    assert_eq!(opened["chat.b"]["recovered"], true, "{opened:?}");
    assert_eq!(missed["chat.a"], [3, 4]);
    assert_eq!(missed["chat.b"], [2]);
    nothing_more(&mut back).await;
    publish(&mut publisher, "chat.a", json!(5)).await;
    assert_eq!(numbers(&mut back, 1).await["chat.a"], [5]);
    let latest = back.last_event_id.clone().unwrap();
    drop(back);

    // The same from the query, for clients that cannot set the header; the
    // header wins over it.
    let query = format!("{path}&lastEventId={latest}");
    let mut again = open(&node, &query, None).await;
    let opened = subscribed(&mut again, 2).await;
    assert!(
        opened.values().all(|s| s["recovered"] == true),
        "{opened:?}"
    );
    nothing_more(&mut again).await;
    let mut by_header = open(&node, &query, Some(&seen)).await;
    let (_, missed) = resumed(&mut by_header, 2, 4).await;
    assert_eq!(
        (&missed["chat.a"], &missed["chat.b"]),
        (&vec![3, 4, 5], &vec![2])
    );

    let counts = metrics(
        &node,
        &[("ferrocast_resumes_total", &[("outcome", "recovered")])],
    )
    .await;
    assert_eq!(counts, [6.0]);
}

#[tokio::test]
async fn a_position_the_history_does_not_know_is_not_recovered() {
    let node = node(&[]);
    let mut publisher = HttpPublisher::new(node.public);
    publish(&mut publisher, "chat.c", json!(1)).await;
    publish(&mut publisher, "chat.c", json!(2)).await;
    // Another epoch for chat.c; a position for news.a, which keeps none.
    let mut stream = open(
        &node,
        "/sse?topic=chat.c&topic=news.a",
        Some("0123456789abcdef:5,e:1"),
    )
    .await;
    let opened = subscribed(&mut stream, 2).await;
    assert_eq!(
        (&opened["chat.c"]["recovered"], &opened["chat.c"]["offset"]),
        (&json!(false), &json!(2)),
        "{opened:?}"
    );
    assert_eq!(
        opened["news.a"],
        json!({"topic": "news.a", "recovered": false})
    );
    nothing_more(&mut stream).await;
    // It goes on from the top.
    publish(&mut publisher, "chat.c", json!(3)).await;
    let (message, _) = message(&mut stream).await;
    assert_eq!(
        (&message["data"], &message["offset"]),
        (&json!(3), &json!(3))
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let node = node(&[]);
    let seventeen: String = (0..17).map(|i| format!("topic=news.t{i}&")).collect();
    let long = format!("/sse?topic=news.{}", "x".repeat(300));
    let cases: Vec<(String, Option<&str>, u16, &str)> = vec![
        ("/sse".into(), None, 400, "name the topics"),
        ("/sse?topic=news..a".into(), None, 400, "empty token"),
        ("/sse?topic=news.a%2Bb".into(), None, 400, "character '+'"),
        ("/sse?topic=chat.*".into(), None, 400, "keeps history"),
        ("/sse?topic=_user.u1.inbox".into(), None, 403, "_user"),
        (
            "/sse?topic=news.a&topic=news.a".into(),
            None,
            400,
            "named twice",
        ),
        (format!("/sse?{seventeen}"), None, 400, "at most 16"),
        (long, None, 400, "the limit is 255"),
        (
            "/sse?topic=chat.a".into(),
            Some("e:1,e:2"),
            400,
            "same topics",
        ),
        (
            "/sse?topic=chat.a".into(),
            Some("e:one"),
            400,
            "<epoch>:<offset>",
        ),
    ];
    for (path, last_event_id, status, reason) in &cases {
        match SseClient::connect(node.public, path, *last_event_id).await {
            Err(SseError::Refused { status: got, body }) => {
                assert_eq!(got, *status, "{path}: {body}");
                assert!(body.contains(reason), "{path}: {body:?} lacks {reason:?}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    let counts = metrics(
        &node,
        &[
            (
                "ferrocast_connections_rejected_total",
                &[("reason", "bad_request")],
            ),
            ("ferrocast_client_errors_total", &[("code", "forbidden")]),
            ("ferrocast_limit_hits_total", &[("limit", "subscriptions")]),
            ("ferrocast_connections", &[("protocol", "sse")]),
        ],
    )
    .await;
    assert_eq!(counts, [cases.len() as f64, 1.0, 1.0, 0.0]);
}

/// A node in this process, so that a test can pick any [`EdgeSettings`].
struct InProcess {
    addr: SocketAddr,
    edge: Edge,
    stop: CancellationToken,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn in_process(settings: EdgeSettings) -> InProcess {
    let registry = Arc::new(SubscriptionRegistry::new());
    let backplane = Arc::new(MemoryBus::new().attach(registry.clone()));
    let stop = CancellationToken::new();
    let hub = Hub::start(
        Arc::from("in-process"),
        registry,
        backplane,
        Namespaces::default(),
        &TaskTracker::new(),
        stop.clone(),
    );
    let edge = Edge::new(hub, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = public_router(edge.clone());
    let served = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(served.cancelled_owned())
            .await
    });
    InProcess { addr, edge, stop }
}

#[tokio::test]
async fn a_stream_takes_a_connection_slot() {
    let node = in_process(EdgeSettings {
        max_connections: 1,
        ..EdgeSettings::default()
    })
    .await;
    let path = "/sse?topic=news.slots";
    let mut first = SseClient::connect(node.addr, path, None).await.unwrap();
    first.next_event().await.unwrap();
    let refused = |result: Result<SseClient, SseError>| match result {
        Err(SseError::Refused { status, body }) => (status, body),
        other => panic!("{other:?}"),
    };
    let (status, body) = refused(SseClient::connect(node.addr, path, None).await);
    assert_eq!(status, 503);
    assert!(body.contains("limit of 1 connections"), "{body}");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.edge.connection_count() > 0 {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = SseClient::connect(node.addr, path, None).await.unwrap();
    second.next_event().await.unwrap();

    tokio::spawn({
        let edge = node.edge.clone();
        async move { edge.drain(Duration::from_secs(6)).await }
    });
    let (status, body) = loop {
        match SseClient::connect(node.addr, path, None).await {
            Err(SseError::Refused { status, body }) if body.contains("draining") => {
                break (status, body)
            }
            other => refused(other),
        };
    };
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let node = in_process(EdgeSettings {
        sse_keepalive: Duration::from_millis(150),
        ..EdgeSettings::default()
    })
    .await;
    let mut stream = SseClient::connect(node.addr, "/sse?topic=news.quiet", None)
        .await
        .unwrap();
    stream.next_event().await.unwrap();
    let started = Instant::now();
    let mut comments = 0;
    while comments < 3 {
        match stream.next_within(Duration::from_secs(1)).await.unwrap() {
            SseItem::Comment(text) => {
                assert_eq!(text, "ka");
                comments += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
}

#[tokio::test]
async fn a_stream_that_is_not_read_is_closed_and_its_slot_released() {
    let node = in_process(EdgeSettings {
        outbound_queue_bytes: 64 * 1024,
        sse_keepalive: Duration::from_millis(300),
        ..EdgeSettings::default()
    })
    .await;
    // A client that sends its request, then reads nothing more.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(node.addr).await.unwrap();
    let request = format!(
        "GET /sse?topic=news.flood HTTP/1.1\r\nHost: {}\r\n\r\n",
        node.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, request.as_bytes())
        .await
        .unwrap();
    let mut reader = SseClient::connect(node.addr, "/sse?topic=news.flood", None)
        .await
        .unwrap();
    reader.next_event().await.unwrap();
    assert_eq!(node.edge.connection_count(), 2);

    let payload = json!("x".repeat(4096)).to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut published = 0;
    let topic = ferrocast_protocol::Topic::parse("news.flood", 255).unwrap();
    while node.edge.connection_count() > 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled stream was never closed"
        );
        // Less than a queue's worth at a time: the reader keeps up.
        for _ in 0..8 {
            let data = payload.clone().into();
            node.edge.hub().publish(topic.clone(), data).await.unwrap();
            published += 1;
        }
        for _ in 0..8 {
            reader.next_event().await.unwrap();
        }
    }
    assert!(published > 16, "closed after {published} messages");
    drop(stalled);
}

#[tokio::test]
async fn drain_ends_streams_with_a_reason() {
    let mut node = node(&["--drain-timeout", "2s"]);
    let mut stream = open(&node, "/sse?topic=news.d&topic=chat.d", None).await;
    subscribed(&mut stream, 2).await;
    // The node handles SIGTERM only a moment after it reports listening.
    wait_readyz(node.admin, 200).await;
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGTERM).unwrap();
    let mut comments = Vec::new();
    let end = loop {
        match stream.next().await {
            Ok(SseItem::Comment(text)) => comments.push(text),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(end) => break end,
        }
    };
    assert!(matches!(end, SseError::Ended), "{end:?} {comments:?}");
    assert_eq!(
        comments.last().map(String::as_str),
        Some("node draining; reconnect to another node")
    );
    assert!(
        node.wait_exit(Duration::from_secs(5)).is_some(),
        "the node exits"
    );
}

#[tokio::test]
async fn http_publish_answers_like_the_json_protocol() {
    let node = node(&["--max-message-size", "1024"]);
    let mut json_client = JsonClient::connect(&node.ws_url()).await.unwrap();
    json_client.subscribe("chat.p").await.unwrap();
    let mut stream = open(&node, "/sse?topic=chat.p", None).await;
    subscribed(&mut stream, 1).await;

    let mut publisher = HttpPublisher::new(node.public);
    let reply = publish(&mut publisher, "chat.p", json!({"text": "hi"})).await;
    let epoch = reply["epoch"].as_str().unwrap();
    assert_eq!(reply, json!({"op": "ok", "epoch": epoch, "offset": 1}));
    let delivered = json!({"op": "message", "topic": "chat.p", "data": {"text": "hi"}, "offset": 1, "epoch": epoch});
    assert_eq!(json_client.recv().await.unwrap(), delivered);
    assert_eq!(message(&mut stream).await.0, delivered);
    assert_eq!(
        publish(&mut publisher, "news.p", json!(null)).await,
        json!({"op": "ok"})
    );

    let big = format!(r#"{{"topic":"news.p","data":"{}"}}"#, "x".repeat(2000));
    let long = format!(r#"{{"topic":"news.{}","data":1}}"#, "y".repeat(300));
    let cases: [(&str, &str, u16, &str); 8] = [
        (
            "text/plain",
            r#"{"topic":"news.p","data":1}"#,
            415,
            "bad_request",
        ),
        ("application/json", "{nope", 400, "bad_request"),
        ("application/json", r#"{"data":1}"#, 400, "bad_request"),
        (
            "application/json",
            r#"{"topic":"news.p"}"#,
            400,
            "bad_request",
        ),
        (
            "application/json",
            r#"{"topic":"news.*","data":1}"#,
            400,
            "bad_request",
        ),
        (
            "application/json",
            r#"{"topic":"news..p","data":1}"#,
            400,
            "bad_request",
        ),
        ("application/json", &long, 400, "too_large"),
        ("application/json", &big, 413, "too_large"),
    ];
    for (content_type, body, status, code) in cases {
        // A fresh connection each: the node may close one after a refusal.
        let mut publisher = HttpPublisher::new(node.public);
        let (got, reply) = publisher
            .post("/publish", content_type, body.as_bytes())
            .await
            .unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(
            (got, &reply["op"], &reply["code"]),
            (status, &json!("error"), &json!(code)),
            "{body:.60}: {reply}"
        );
        assert!(!reply["message"].as_str().unwrap().is_empty(), "{reply}");
    }
    let counts = metrics(
        &node,
        &[
            ("ferrocast_client_errors_total", &[("code", "bad_request")]),
            ("ferrocast_client_errors_total", &[("code", "too_large")]),
            ("ferrocast_messages_published_total", &[]),
        ],
    )
    .await;
    assert_eq!(counts, [6.0, 2.0, 2.0]);
}

#[tokio::test]
async fn http_publish_without_the_backplane_is_unavailable() {
    let mut redis = RedisServer::start();
    let node = node(&["--backplane", &redis.url(), "--backplane-timeout", "1s"]);
    wait_readyz(node.admin, 200).await;
    let mut publisher = HttpPublisher::new(node.public);
    publish(&mut publisher, "chat.u", json!(1)).await;
    redis.kill9();
    let (status, reply) = publisher.publish("chat.u", &json!(2)).await.unwrap();
    assert_eq!(
        (status, &reply["code"]),
        (503, &json!("unavailable")),
        "{reply}"
    );
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .ends_with("not published"),
        "{reply}"
    );
    let counts = metrics(
        &node,
        &[("ferrocast_client_errors_total", &[("code", "unavailable")])],
    )
    .await;
    assert_eq!(counts, [1.0]);
}

// ---------------------------------------------------------------------------
// Three nodes, one killed mid-stream.

const MESSAGES: u64 = 10_000;
/// Node 2 is killed once this many messages are published.
const FAULT_AT: u64 = 3_000;
/// Publishing runs at about this rate, so that the stream lasts ~4 s.
const PER_SECOND: u64 = 2_500;
const STREAMS_PER_NODE: usize = 2;
/// Every stream carries two topics: all numbers, and every tenth one.
const ORDERS: &str = "feed.orders";
const AUDIT: &str = "feed.audit";
const AUDIT_EVERY: u64 = 10;

/// One cluster test at a time: each keeps both cores of a small machine busy.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What one SSE subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// The node it started on.
    home: usize,
    orders: Vec<u64>,
    audit: Vec<u64>,
    /// The `subscribed` events of each connection it made, by topic.
    connections: Vec<HashMap<String, Value>>,
    /// Why each connection but the last ended.
    breaks: Vec<String>,
}

impl Seen {
    fn done(&self) -> bool {
        self.orders.len() as u64 >= MESSAGES && self.audit.len() as u64 >= MESSAGES / AUDIT_EVERY
    }

    fn take(&mut self, event: SseEvent) {
        let data = event.json().unwrap();
        match event.event.as_str() {
            "subscribed" => {
                let topic = data["topic"].as_str().unwrap().to_string();
                self.connections.last_mut().unwrap().insert(topic, data);
            }
            "message" => {
                let n = data["data"].as_u64().unwrap();
                match data["topic"].as_str().unwrap() {
                    ORDERS => self.orders.push(n),
                    _ => self.audit.push(n),
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }
}

/// An SSE subscriber of [`ORDERS`] and [`AUDIT`] that starts on node `home`
/// and, when its stream breaks, resumes on the next node with its
/// `Last-Event-ID`. Reports on `ready` once subscribed.
async fn sse_subscriber(
    nodes: Vec<SocketAddr>,
    home: usize,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Seen {
    let path = format!("/sse?topic={ORDERS}&topic={AUDIT}");
    let mut seen = Seen {
        home,
        ..Seen::default()
    };
    let mut ready = Some(ready);
    let mut at = home;
    let mut last_event_id: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.done() && Instant::now() < deadline {
        let mut stream = match SseClient::connect(nodes[at], &path, last_event_id.as_deref()).await
        {
            Ok(stream) => stream,
            Err(error) => {
                seen.breaks.push(format!("connect to node {at}: {error:?}"));
                at = (at + 1) % nodes.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seen.connections.push(HashMap::new());
        while !seen.done() {
            match stream.next().await {
                Ok(SseItem::Event(event)) => seen.take(event),
                Ok(_) => {}
                Err(error) => {
                    seen.breaks.push(format!("node {at}: {error:?}"));
                    at = (at + 1) % nodes.len();
                    break;
                }
            }
            if seen.connections.len() == 1 && seen.connections[0].len() == 2 {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
        }
        last_event_id = stream.last_event_id.clone();
    }
    seen
}

/// Why `got` is not exactly `want`, in a few words.
fn difference(got: &[u64], want: &[u64]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got.iter().zip(want).take_while(|(g, w)| g == w).count();
    let mut distinct = got.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    Some(format!(
        "{} received ({} distinct) of {}; from index {at} got {:?}, want {:?}",
        got.len(),
        distinct.len(),
        want.len(),
        &got[at..got.len().min(at + 5)],
        &want[at..want.len().min(at + 5)],
    ))
}

async fn sse_subscribers_resume_on_another_node(backplane: ClusterBuilder) {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = backplane
        .nodes(&["a", "b", "c"])
        .config("[namespaces.feed]\nhistory_size = 20000\nhistory_ttl = \"5m\"\n")
        .start()
        .await;
    let backplane = cluster.backplane().url();
    let nodes = cluster.nodes_mut();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.public).collect();
    let mut subscribers = Vec::new();
    for home in 0..nodes.len() {
        for _ in 0..STREAMS_PER_NODE {
            let (ready, subscribed) = tokio::sync::oneshot::channel();
            subscribers.push(tokio::spawn(sse_subscriber(addrs.clone(), home, ready)));
            tokio::time::timeout(Duration::from_secs(10), subscribed)
                .await
                .unwrap()
                .unwrap();
        }
    }

    let mut publisher = HttpPublisher::new(nodes[0].public);
    let publishing = Instant::now();
    for n in 1..=MESSAGES {
        let reply = publish(&mut publisher, ORDERS, json!(n)).await;
        assert_eq!(reply["offset"], n, "{reply}");
        if n % AUDIT_EVERY == 0 {
            let reply = publish(&mut publisher, AUDIT, json!(n)).await;
            assert_eq!(reply["offset"], n / AUDIT_EVERY, "{reply}");
        }
        if n == FAULT_AT {
            nodes[2].kill9();
        }
        if n % 100 == 0 {
            let due = publishing + Duration::from_millis(n * 1_000 / PER_SECOND);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let published = publishing.elapsed();

    let orders: Vec<u64> = (1..=MESSAGES).collect();
    let audit: Vec<u64> = (1..=MESSAGES / AUDIT_EVERY)
        .map(|i| i * AUDIT_EVERY)
        .collect();
    for subscriber in subscribers {
        let seen = subscriber.await.unwrap();
        let context = format!("subscriber of node {}: breaks {:?}", seen.home, seen.breaks);
        if let Some(difference) = difference(&seen.orders, &orders) {
            panic!("{ORDERS}: {difference}; {context}");
        }
        if let Some(difference) = difference(&seen.audit, &audit) {
            panic!("{AUDIT}: {difference}; {context}");
        }
        let first = &seen.connections[0];
        assert!(
            first.values().all(|s| s.get("recovered").is_none()),
            "{first:?}"
        );
        if seen.home == 2 {
            // One stream on the killed node, one resumed elsewhere.
            assert_eq!(seen.connections.len(), 2, "{context}");
            let resumed = &seen.connections[1];
            assert_eq!(resumed.len(), 2, "{resumed:?}");
            assert!(
                resumed.values().all(|s| s["recovered"] == true),
                "{resumed:?}"
            );
        } else {
            assert_eq!(seen.connections.len(), 1, "{context}");
        }
    }
    eprintln!(
        "{backplane}: {MESSAGES} messages to {} SSE streams, published in {published:?}, all checked after {:?}",
        nodes.len() * STREAMS_PER_NODE,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sse_subscribers_resume_on_another_node_after_a_kill() {
    sse_subscribers_resume_on_another_node(Cluster::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_sse_subscribers_resume_on_another_node_after_a_kill() {
    sse_subscribers_resume_on_another_node(Cluster::nats()).await;
}
