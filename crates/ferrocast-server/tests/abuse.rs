//! Hostile clients against a real node: thousands of subscriptions on one
//! connection, publish floods (JSON and STOMP), 10,000 connection attempts
//! from one address, and malformed, oversized and trickled upgrades. In each
//! case a [`Bystander`], a well-behaved client on the same node, keeps
//! getting every publication meant for it, promptly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use ferrocast_testkit::{http_get, metric, ClientError, JsonClient, Node, StompClient};

/// The longest a bystander's publication may take to arrive.
const PROMPT: Duration = Duration::from_secs(2);

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

async fn metrics(node: &Node) -> String {
    let (status, body) = http_get(node.admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    body
}

/// A well-behaved subscriber and publisher on the node under attack: the
/// publisher publishes a sequence number to the subscriber's topic every
/// 25 ms, and the subscriber must get each one, in order, within [`PROMPT`].
struct Bystander {
    started: Instant,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Served>,
}

/// What a bystander got.
#[derive(Debug)]
struct Served {
    delivered: u64,
    slowest: Duration,
}

impl Bystander {
    /// Connects both clients (from `source`, else 127.0.0.1) and starts.
    async fn start(url: &str, source: Option<IpAddr>, topic: &'static str) -> Self {
        let connect = || async {
            match source {
                Some(ip) => JsonClient::connect_from(url, ip).await.unwrap(),
                None => JsonClient::connect(url).await.unwrap(),
            }
        };
        let mut subscriber = connect().await;
        let mut publisher = connect().await;
        assert_eq!(subscriber.subscribe(topic).await.unwrap()["op"], "ok");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut served = Served {
                delivered: 0,
                slowest: Duration::ZERO,
            };
            while !stopped.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let seq = served.delivered;
                let reply = publisher.publish(topic, json!(seq)).await.unwrap();
                assert_eq!(reply["op"], "ok", "bystander publish {seq}: {reply}");
                let message = subscriber.recv_within(PROMPT).await.unwrap_or_else(|e| {
                    panic!("bystander: publication {seq} not delivered within {PROMPT:?}: {e:?}")
                });
                assert_eq!(message["op"], "message", "{message}");
                assert_eq!(message["data"], json!(seq), "{message}");
                served.slowest = served.slowest.max(sent.elapsed());
                served.delivered += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            served
        });
        Self {
            started: Instant::now(),
            stop,
            task,
        }
    }

    /// Stops (after running for half a second at least) and checks that
    /// the bystander was served all along.
    async fn finish(self) -> Served {
        tokio::time::sleep_until((self.started + Duration::from_millis(500)).into()).await;
        self.stop.store(true, Ordering::Relaxed);
        let served = self.task.await.expect("the bystander was served");
        assert!(served.delivered >= 5, "{served:?}");
        eprintln!("bystander: {served:?}");
        served
    }
}

/// Sends `requests` as frames of 100 objects each (one line per object).
async fn send_batched(client: &mut JsonClient, requests: impl Iterator<Item = Value>) {
    let requests: Vec<String> = requests.map(|r| r.to_string()).collect();
    for chunk in requests.chunks(100) {
        client
            .send_message(Message::text(chunk.join("\n")))
            .await
            .unwrap();
    }
}

/// Reads `n` replies; returns the ids by outcome (`ok` or the error code).
async fn replies(client: &mut JsonClient, n: usize) -> HashMap<String, BTreeSet<u64>> {
    let mut by_outcome: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for _ in 0..n {
        let reply = client.recv().await.unwrap();
        let outcome = match reply["op"].as_str() {
            Some("ok") => "ok".to_string(),
            Some("error") => reply["code"].as_str().unwrap().to_string(),
            _ => panic!("not a reply: {reply}"),
        };
        if outcome == "rate_limited" {
            let message = reply["message"].as_str().unwrap();
            assert!(message.starts_with("rate limited: more than "), "{message}");
        }
        by_outcome
            .entry(outcome)
            .or_default()
            .insert(reply["id"].as_u64().unwrap());
    }
    by_outcome
}

fn count(outcomes: &HashMap<String, BTreeSet<u64>>, outcome: &str) -> usize {
    outcomes.get(outcome).map_or(0, BTreeSet::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_subscriptions_meet_the_subscription_and_rate_limits() {
    let node = node(&[
        "--max-subscriptions-per-connection",
        "1000",
        "--subscribe-rate",
        "100",
        "--subscribe-burst",
        "1500",
    ]);
    let url = node.ws_url();
    let bystander = Bystander::start(&url, None, "calm.subs").await;
    let mut abuser = JsonClient::connect(&url).await.unwrap();
    const N: u64 = 3000;
    send_batched(
        &mut abuser,
        (1..=N).map(|id| json!({"op": "subscribe", "id": id, "topic": format!("many.t{id}")})),
    )
    .await;
    let outcomes = replies(&mut abuser, N as usize).await;
    let (ok, limited, rated) = (
        count(&outcomes, "ok"),
        count(&outcomes, "limit_exceeded"),
        count(&outcomes, "rate_limited"),
    );
    eprintln!("subscribes: {ok} ok, {limited} limit_exceeded, {rated} rate_limited");
    assert_eq!(ok + limited + rated, N as usize, "{outcomes:?}");
    assert_eq!(ok, 1000, "exactly the subscription limit is held");
    // The burst admits 1500 at once, the rate a few more while they arrive.
    assert!(limited >= 500, "{limited}");
    assert!(rated >= 1000, "{rated}");

    let text = metrics(&node).await;
    assert_eq!(
        metric(
            &text,
            "ferrocast_rate_limited_total",
            &[("kind", "subscribe")]
        ),
        rated as f64
    );
    assert_eq!(
        metric(
            &text,
            "ferrocast_limit_hits_total",
            &[("limit", "subscriptions")]
        ),
        limited as f64
    );
    assert_eq!(metric(&text, "ferrocast_subscriptions", &[]), 1001.0);

    // The connection stays open and, once the rate allows, subscribes again.
    let pong = abuser.request(json!({"op": "ping"})).await.unwrap();
    assert_eq!(pong["op"], "pong");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = abuser
        .request(json!({"op": "unsubscribe", "topic": "many.t1"}))
        .await
        .unwrap();
    assert_eq!(reply["op"], "ok");
    assert_eq!(abuser.subscribe("many.again").await.unwrap()["op"], "ok");
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_floods_are_rate_limited_without_losing_accepted_publications() {
    let node = node(&["--publish-rate", "100", "--publish-burst", "200"]);
    let url = node.ws_url();
    let bystander = Bystander::start(&url, None, "calm.pubs").await;

    // JSON: refused publishes get `rate_limited`, the connection goes on.
    let mut subscriber = JsonClient::connect(&url).await.unwrap();
    assert_eq!(
        subscriber.subscribe("flood.json").await.unwrap()["op"],
        "ok"
    );
    let mut flooder = JsonClient::connect(&url).await.unwrap();
    const N: u64 = 2000;
    send_batched(
        &mut flooder,
        (1..=N).map(|id| json!({"op": "publish", "id": id, "topic": "flood.json", "data": id})),
    )
    .await;
    let outcomes = replies(&mut flooder, N as usize).await;
    let accepted = outcomes.get("ok").cloned().unwrap_or_default();
    let refused = count(&outcomes, "rate_limited");
    eprintln!(
        "JSON publishes: {} accepted, {refused} rate_limited",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused, N as usize, "{outcomes:?}");
    assert!(accepted.len() >= 200, "the burst is admitted");
    assert!(refused >= 1000, "{refused}");
    // Every accepted publication arrives, in order, and nothing else.
    let mut received = Vec::new();
    while received.len() < accepted.len() {
        let message = subscriber.recv().await.unwrap();
        received.push(message["data"].as_u64().unwrap());
    }
    assert!(matches!(
        subscriber.recv_within(Duration::from_millis(300)).await,
        Err(ClientError::Timeout)
    ));
    assert_eq!(received, accepted.iter().copied().collect::<Vec<_>>());
    let pong = flooder.request(json!({"op": "ping"})).await.unwrap();
    assert_eq!(pong["op"], "pong", "the flooder's connection stays open");

    // STOMP: the first SEND over the limit gets ERROR, then close 1008;
    // every SEND before it is delivered.
    let mut listener = JsonClient::connect(&url).await.unwrap();
    assert_eq!(listener.subscribe("flood.stomp").await.unwrap()["op"], "ok");
    let mut stomp = StompClient::connect(&url, "v12.stomp").await.unwrap();
    stomp.handshake().await.unwrap();
    for chunk in (0..400u32).collect::<Vec<_>>().chunks(50) {
        let frames: String = chunk
            .iter()
            .map(|seq| {
                format!("SEND\ndestination:/topic/flood.stomp\ncontent-type:application/json\n\n{seq}\0")
            })
            .collect();
        if stomp.send_raw(&frames).await.is_err() {
            break; // Closed by the node already.
        }
    }
    let (frames, code) = stomp.expect_close().await.unwrap();
    assert_eq!(code, 1008);
    let error = frames.last().unwrap();
    assert_eq!(error.command, "ERROR", "{frames:?}");
    assert!(
        error.body_text().starts_with(
            "rate limited: more than 100 publishes per second on this connection (burst 200)"
        ),
        "{error:?}"
    );
    let mut delivered = Vec::new();
    while let Ok(message) = listener.recv_within(Duration::from_millis(500)).await {
        delivered.push(message["data"].as_u64().unwrap());
    }
    eprintln!(
        "STOMP SENDs delivered before the ERROR: {}",
        delivered.len()
    );
    assert!(
        delivered.len() >= 200 && delivered.len() < 400,
        "{}",
        delivered.len()
    );
    assert_eq!(delivered, (0..delivered.len() as u64).collect::<Vec<_>>());

    let text = metrics(&node).await;
    assert_eq!(
        metric(
            &text,
            "ferrocast_rate_limited_total",
            &[("kind", "publish")]
        ),
        (refused + 1) as f64
    );
    assert_eq!(
        metric(
            &text,
            "ferrocast_connections_closed_total",
            &[("reason", "rate_limited")]
        ),
        1.0
    );
    bystander.finish().await;
}

/// What a raw HTTP exchange ended with.
#[derive(Debug)]
enum Outcome {
    /// A response: status, head (lower case) and body.
    Response(u16, String, String),
    /// The node closed the connection without a response.
    Closed,
}

/// Reads one response (head, then a `content-length` body) within 5 s.
async fn read_response(stream: &mut TcpStream) -> Outcome {
    let mut data = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    return Some((head, end));
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the node answers or closes within 5 s");
    match read {
        None => Outcome::Closed,
        Some((head, end)) => {
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
            let body = String::from_utf8_lossy(&data[end + 4..]).into_owned();
            Outcome::Response(status, head, body)
        }
    }
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connection_attempts_from_one_address_get_429() {
    let node = node(&["--ip-connection-rate", "50", "--ip-connection-burst", "50"]);
    let url = node.ws_url();
    let public = node.public;
    let bystander = Bystander::start(&url, None, "calm.conns").await;

    const ATTEMPTS: u64 = 10_000;
    const WORKERS: u64 = 32;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<JoinHandle<HashMap<u16, u64>>> = (0..WORKERS)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut statuses = HashMap::new();
                while next.fetch_add(1, Ordering::Relaxed) < ATTEMPTS {
                    let mut stream = TcpStream::connect(public).await.unwrap();
                    // Reset on close: no TIME_WAIT left behind per attempt.
                    stream.set_zero_linger().unwrap();
                    stream.write_all(UPGRADE.as_bytes()).await.unwrap();
                    let status = match read_response(&mut stream).await {
                        Outcome::Response(429, head, body) => {
                            let retry_after = head
                                .lines()
                                .find_map(|l| l.strip_prefix("retry-after:"))
                                .and_then(|v| v.trim().parse::<u64>().ok());
                            assert!(retry_after.is_some_and(|s| s >= 1), "{head}");
                            assert!(
                                body.starts_with("rate limited: more than 50 connection attempts and HTTP publishes per second from this address"),
                                "{body}"
                            );
                            429
                        }
                        Outcome::Response(status, ..) => status,
                        Outcome::Closed => 0,
                    };
                    *statuses.entry(status).or_insert(0) += 1;
                }
                statuses
            })
        })
        .collect();

    // Meanwhile a client from another address connects and is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let newcomer = Bystander::start(&url, Some(other), "calm.newcomer").await;

    let mut statuses: HashMap<u16, u64> = HashMap::new();
    for worker in workers {
        for (status, n) in worker.await.unwrap() {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{ATTEMPTS} attempts in {elapsed:?}: {statuses:?}");
    assert!(elapsed < Duration::from_secs(40), "{elapsed:?}");
    let refused = statuses.get(&429).copied().unwrap_or(0);
    let upgraded = statuses.get(&101).copied().unwrap_or(0);
    assert_eq!(refused + upgraded, ATTEMPTS, "{statuses:?}");
    // The burst, then 50 per second.
    let allowed = 50 + (elapsed.as_secs_f64() * 50.0).ceil() as u64;
    assert!(upgraded <= allowed, "{upgraded} upgrades > {allowed}");
    assert!(refused >= 9_000, "{refused}");

    let newcomer = newcomer.finish().await;
    assert!(newcomer.delivered >= 5, "{newcomer:?}");
    bystander.finish().await;
    let text = metrics(&node).await;
    assert_eq!(
        metric(
            &text,
            "ferrocast_rate_limited_total",
            &[("kind", "connection")]
        ),
        refused as f64
    );
    assert_eq!(
        metric(
            &text,
            "ferrocast_connections_rejected_total",
            &[("reason", "rate_limited")]
        ),
        refused as f64
    );
}

/// Connects to `addr` and writes `request`.
async fn send(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpSocket::new_v4().unwrap().connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream
}

/// Expects a response with `status` whose body contains `message`.
async fn expect_refusal(addr: SocketAddr, request: &[u8], status: u16, message: &str) {
    let mut stream = send(addr, request).await;
    match read_response(&mut stream).await {
        Outcome::Response(got, head, body) => {
            assert_eq!(got, status, "{head}\n{body}");
            assert!(body.contains(message), "{status}: {body:?}");
        }
        Outcome::Closed => panic!("closed without the {status} response"),
    }
}

/// Expects the node to close the connection between `at_least` and
/// `at_most` after it was opened, while `trickle` bytes keep coming (one
/// every 100 ms, up to 5 s).
async fn expect_cut(
    addr: SocketAddr,
    start: &[u8],
    trickle: &[u8],
    at_least: Duration,
    at_most: Duration,
) {
    let opened = Instant::now();
    let stream = send(addr, start).await;
    let (mut reader, mut writer) = stream.into_split();
    let trickle = trickle.to_vec();
    // Holds the write half open (dropping it would end the request).
    let writing = tokio::spawn(async move {
        let mut bytes = trickle.iter().cycle();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(byte) = bytes.next() {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return opened.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the node cuts the connection");
    writing.abort();
    assert!(ended >= at_least && ended <= at_most, "cut after {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_trickled_upgrades_are_refused() {
    let node = node(&["--handshake-timeout", "1s"]);
    let url = node.ws_url();
    let addr = node.public;
    let bystander = Bystander::start(&url, None, "calm.malformed").await;

    expect_refusal(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
        400,
        "Sec-WebSocket-Key",
    )
    .await;
    expect_refusal(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        400,
        "Sec-WebSocket-Version",
    )
    .await;
    expect_refusal(
        addr,
        b"POST /ws HTTP/1.1\r\nHost: node\r\nContent-Length: 0\r\n\r\n",
        405,
        "",
    )
    .await;
    // Not HTTP: 400 from the HTTP layer, then the connection is closed.
    let mut garbage = send(addr, b"\x16\x03\x01 HELLO? \x00\xff\r\n\r\n").await;
    match read_response(&mut garbage).await {
        Outcome::Response(status, ..) => assert_eq!(status, 400),
        Outcome::Closed => {}
    }
    // A request head over 32 KiB: 431.
    let mut big = b"GET /ws HTTP/1.1\r\nHost: node\r\nX-Padding: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 40 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let mut oversized = send(addr, &big).await;
    match read_response(&mut oversized).await {
        Outcome::Response(status, ..) => assert_eq!(status, 431),
        Outcome::Closed => panic!("closed without 431"),
    }
    // Headers trickled a byte at a time, and a connection that sends
    // nothing: cut at the handshake timeout (1 s).
    let (at_least, at_most) = (Duration::from_millis(900), Duration::from_millis(2500));
    expect_cut(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: node\r\n",
        b"X-Slow: 1\r\n",
        at_least,
        at_most,
    )
    .await;
    expect_cut(addr, b"", b"", at_least, at_most).await;

    // The node is still whole: a WebSocket client connects and is served.
    let mut client = JsonClient::connect(&url).await.unwrap();
    assert_eq!(
        client.request(json!({"op": "ping"})).await.unwrap()["op"],
        "pong"
    );
    let text = metrics(&node).await;
    let failures = |reason| {
        metric(
            &text,
            "ferrocast_handshake_failures_total",
            &[("listener", "public"), ("reason", reason)],
        )
    };
    assert_eq!(failures("timeout"), 2.0);
    assert_eq!(failures("too_large"), 1.0);
    assert_eq!(failures("malformed"), 1.0);
    assert_eq!(
        metric(
            &text,
            "ferrocast_connections_rejected_total",
            &[("reason", "bad_request")]
        ),
        2.0
    );
    bystander.finish().await;
}

/// An HTTP request from the client address `forwarded` (as a trusted proxy
/// would write it in `X-Forwarded-For`).
fn from(forwarded: &str, head: &str, body: &str) -> Vec<u8> {
    format!(
        "{head}\r\nHost: node\r\nX-Forwarded-For: {forwarded}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_limit_covers_sse_and_http_publish_and_follows_the_forwarded_header() {
    let node = node(&[
        "--ip-connection-rate",
        "1",
        "--ip-connection-burst",
        "1",
        "--client-ip-header",
        "x-forwarded-for",
    ]);
    let addr = node.public;
    let publish = |forwarded: &str| {
        from(
            forwarded,
            "POST /publish HTTP/1.1\r\nContent-Type: application/json",
            r#"{"topic":"ip.a","data":1}"#,
        )
    };
    let outcome = |request: Vec<u8>| async move {
        let mut stream = send(addr, &request).await;
        match read_response(&mut stream).await {
            Outcome::Response(status, head, body) => (status, head, body),
            Outcome::Closed => panic!("closed without a response"),
        }
    };
    let (status, _, body) = outcome(publish("192.0.2.1")).await;
    assert_eq!((status, body.as_str()), (200, r#"{"op":"ok"}"#));
    // The same address again, by HTTP publish and by SSE: over its budget.
    let (status, head, body) = outcome(publish("192.0.2.1")).await;
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "rate_limited", "{body}");
    let sse = |forwarded: &str| from(forwarded, "GET /sse?topic=ip.a HTTP/1.1", "");
    let (status, _, body) = outcome(sse("192.0.2.1")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.starts_with("rate limited: more than 1 connection attempts and HTTP publishes per second from this address"), "{body}");
    // Other addresses have budgets of their own: the rightmost entry counts,
    // whatever the client wrote to its left.
    let (status, ..) = outcome(sse("192.0.2.1, 192.0.2.2")).await;
    assert_eq!(status, 200);
    let (status, ..) = outcome(publish("192.0.2.3")).await;
    assert_eq!(status, 200);
    // Without the header, the peer address (127.0.0.1) counts.
    let mut upgrade = send(addr, UPGRADE.as_bytes()).await;
    assert!(matches!(
        read_response(&mut upgrade).await,
        Outcome::Response(101, ..)
    ));

    let text = metrics(&node).await;
    assert_eq!(
        metric(
            &text,
            "ferrocast_rate_limited_total",
            &[("kind", "publish")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "ferrocast_rate_limited_total",
            &[("kind", "connection")]
        ),
        1.0
    );
}
