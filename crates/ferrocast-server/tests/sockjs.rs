//! SockJS 0.3 against a real node, spoken from Rust over HTTP and WebSocket
//! (docs/protocol.md, "SockJS").
//!
//! Written from the protocol and its reference test suite
//! (`sockjs-protocol.py` in sockjs/sockjs-protocol), against the conformance
//! services of `--sockjs-conformance` where the suite uses them. The suite's
//! test classes covered here: `BaseUrlGreeting`, `IframePage`, `InfoTest`,
//! `SessionURLs`, `Protocol`, `WebsocketHttpErrors`, `Websocket`,
//! `XhrPolling`, `XhrStreaming`, `EventSource`, `HtmlFile`, `JsonPolling`,
//! `JsessionidCookie`, `RawWebsocket`, `JSONEncoding`, `HandlingClose`
//! (each test names its class). Not covered: `Http10`/`Http11` (hyper's
//! HTTP framing, not SockJS) and the suite's Hixie-76 WebSocket cases
//! (retired from browsers; the node speaks RFC 6455 only).
//!
//! Then what a ferrocast session inside SockJS does: STOMP over
//! xhr-streaming with a JSON WebSocket client on the other side, the JSON
//! protocol over xhr-polling, drain (`c[1012,…]`), a slow consumer
//! (`c[4000,…]`), `ferrocast-since` resume, heartbeats, the disconnect
//! delay, and the endpoint's flags.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use ferrocast_testkit::{
    http_exchange, metric, next_text, HttpResponse, JsonClient, Node, StompFrame,
};

/// How long a test waits for anything the node sends.
const WAIT: Duration = Duration::from_secs(10);

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

/// A node with the reference suite's services.
fn conformance_node(extra: &[&str]) -> Node {
    let mut args = vec!["--sockjs-conformance"];
    args.extend_from_slice(extra);
    node(&args)
}

/// A session id no other test uses.
fn session_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "s{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn request(
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

async fn post(addr: SocketAddr, path: &str, body: &str) -> HttpResponse {
    request(addr, "POST", path, &[], body).await
}

async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path, &[], "").await
}

/// The messages of an `a[…]` frame.
fn messages(frame: &str) -> Vec<String> {
    let array = frame
        .trim_end()
        .strip_prefix('a')
        .unwrap_or_else(|| panic!("not a message frame: {frame:?}"));
    serde_json::from_str(array).unwrap()
}

const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";

fn assert_not_cached(response: &HttpResponse) {
    assert_eq!(
        response.header("cache-control"),
        Some(NO_CACHE),
        "{response:?}"
    );
    assert_eq!(response.header("expires"), None);
    assert_eq!(response.header("last-modified"), None);
}

/// The suite's `verify_cors`: the origin echoed with credentials, else `*`.
fn assert_cors(response: &HttpResponse, origin: Option<&str>) {
    match origin {
        Some(origin) => {
            assert_eq!(response.header("access-control-allow-origin"), Some(origin));
            assert_eq!(
                response.header("access-control-allow-credentials"),
                Some("true")
            );
        }
        None => {
            assert_eq!(response.header("access-control-allow-origin"), Some("*"));
            assert_eq!(response.header("access-control-allow-credentials"), None);
        }
    }
}

/// The suite's `verify_options`: a cacheable preflight.
async fn assert_preflight(addr: SocketAddr, path: &str, methods: &str) {
    for origin in ["test", "null"] {
        let response = request(
            addr,
            "OPTIONS",
            path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", methods),
            ],
            "",
        )
        .await;
        assert!(matches!(response.status, 200 | 204), "{response:?}");
        let cache = response.header("cache-control").unwrap();
        assert!(
            cache.contains("public") && cache.contains("max-age=31536000"),
            "{cache}"
        );
        assert!(response
            .header("expires")
            .is_some_and(|e| e.ends_with("GMT")));
        let max_age: u64 = response
            .header("access-control-max-age")
            .unwrap()
            .parse()
            .unwrap();
        assert!(max_age > 1_000_000);
        let allowed = response.header("access-control-allow-methods").unwrap();
        for method in methods.split(',') {
            assert!(allowed.contains(method.trim()), "{allowed} lacks {method}");
        }
        assert!(response.body.is_empty());
        assert_cors(&response, Some(origin));
    }
}

/// A response read as it arrives (HTTP/1.1, chunked): streaming transports.
struct Streaming {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
    /// Body bytes read and not yet expected.
    buffer: Vec<u8>,
    ended: bool,
}

impl Streaming {
    async fn open(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        tokio::time::timeout(WAIT, reader.read_line(&mut status_line))
            .await
            .expect("a response head in time")
            .unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut response_headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            response_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        Self {
            reader,
            status,
            headers: response_headers,
            buffer: Vec::new(),
            ended: false,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn as_response(&self) -> HttpResponse {
        HttpResponse {
            status: self.status,
            headers: self.headers.clone(),
            body: String::new(),
        }
    }

    /// Reads one chunk into the buffer; at the last one, `ended`.
    async fn read_chunk(&mut self) {
        let mut size = String::new();
        let read = self.reader.read_line(&mut size).await.unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if read == 0 || size == 0 {
            self.ended = true;
            return;
        }
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.unwrap();
        chunk.truncate(size);
        self.buffer.extend_from_slice(&chunk);
    }

    /// Expects `want` next in the body.
    async fn expect(&mut self, want: &str) {
        let read = async {
            while self.buffer.len() < want.len() && !self.ended {
                self.read_chunk().await;
            }
        };
        tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| {
            panic!(
                "{want:?} in time; got {:?}",
                String::from_utf8_lossy(&self.buffer)
            )
        });
        let got =
            String::from_utf8_lossy(&self.buffer[..want.len().min(self.buffer.len())]).into_owned();
        assert_eq!(got, want);
        self.buffer.drain(..want.len());
    }

    /// The body up to and including the next `end` (a frame's last bytes).
    async fn next_until(&mut self, end: &str) -> String {
        let read = async {
            loop {
                let text = String::from_utf8_lossy(&self.buffer).into_owned();
                if let Some(at) = text.find(end) {
                    let taken = text[..at + end.len()].to_string();
                    self.buffer.drain(..taken.len());
                    return taken;
                }
                assert!(!self.ended, "the response ended before {end:?}: {text:?}");
                self.read_chunk().await;
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a frame in time")
    }

    /// The messages of the next `a[…]` frame, past heartbeats.
    async fn next_messages(&mut self) -> Vec<String> {
        loop {
            let frame = self.next_until("\n").await;
            if frame != "h\n" {
                return messages(&frame);
            }
        }
    }

    /// Expects the response to end with nothing more.
    async fn expect_end(&mut self) {
        tokio::time::timeout(WAIT, async {
            while !self.ended {
                self.read_chunk().await;
            }
        })
        .await
        .expect("the response ends in time");
        assert!(
            self.buffer.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&self.buffer)
        );
    }
}

/// The xhr-streaming prelude: 2 KiB of `h` and a newline.
fn prelude() -> String {
    format!("{}\n", "h".repeat(2048))
}

// BaseUrlGreeting, InfoTest, IframePage

#[tokio::test]
async fn the_greeting_info_and_iframe_pages_are_the_protocols() {
    let node = conformance_node(&["--sockjs-client-url", "/static/sockjs.min.js"]);
    let addr = node.public;
    // BaseUrlGreeting
    for path in ["/echo", "/echo/", "/sockjs", "/sockjs/"] {
        let response = get(addr, path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=UTF-8")
        );
        assert_eq!(response.body, "Welcome to SockJS!\n");
        assert_eq!(response.header("set-cookie"), None);
    }
    for suffix in ["/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"] {
        assert_eq!(
            get(addr, &format!("/echo{suffix}")).await.status,
            404,
            "{suffix}"
        );
    }
    // InfoTest
    let response = request(addr, "GET", "/echo/info", &[("Origin", "test")], "").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=UTF-8")
    );
    assert_eq!(response.header("set-cookie"), None);
    assert_not_cached(&response);
    assert_cors(&response, Some("test"));
    let info: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(info["websocket"], true);
    assert_eq!(info["cookie_needed"], false);
    assert_eq!(info["origins"], json!(["*:*"]));
    let again: Value = serde_json::from_str(&get(addr, "/echo/info").await.body).unwrap();
    assert!(info["entropy"].is_u64() && again["entropy"].is_u64());
    assert_ne!(info["entropy"], again["entropy"]);
    assert_preflight(addr, "/echo/info", "OPTIONS, GET").await;
    let info: Value =
        serde_json::from_str(&get(addr, "/disabled_websocket_echo/info").await.body).unwrap();
    assert_eq!(info["websocket"], false);
    // IframePage
    let mut etag = None;
    for suffix in [
        "/iframe.html",
        "/iframe-a.html",
        "/iframe-.html",
        "/iframe-0.1.2.html",
        "/iframe-0.1.2abc-dirty.2144.html",
        "/iframe-a.html?t=1234",
    ] {
        let response = get(addr, &format!("/echo{suffix}")).await;
        assert_eq!(response.status, 200, "{suffix}");
        assert_eq!(
            response.header("content-type"),
            Some("text/html; charset=UTF-8")
        );
        let cache = response.header("cache-control").unwrap();
        assert!(cache.contains("public") && cache.contains("max-age=31536000"));
        assert!(response.header("expires").is_some());
        assert!(response.header("last-modified").is_none());
        assert!(response.header("set-cookie").is_none());
        assert!(response.body.starts_with("<!DOCTYPE html>"));
        assert!(response
            .body
            .contains(r#"<script src="/static/sockjs.min.js"></script>"#));
        assert!(response.body.contains("SockJS.bootstrap_iframe();"));
        let tag = response.header("etag").unwrap().to_string();
        assert_eq!(
            *etag.get_or_insert(tag.clone()),
            tag,
            "one ETag for every variant"
        );
    }
    let etag = etag.unwrap();
    let cached = request(
        addr,
        "GET",
        "/echo/iframe.html",
        &[("If-None-Match", &etag)],
        "",
    )
    .await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("content-type"), None);
    assert!(cached.body.is_empty());
    for suffix in [
        "/iframe.htm",
        "/iframe",
        "/IFRAME.HTML",
        "/IFRAME",
        "/iframe.HTML",
        "/iframe.xml",
        "/iframe-/.html",
    ] {
        assert_eq!(
            get(addr, &format!("/echo{suffix}")).await.status,
            404,
            "{suffix}"
        );
    }
    // The default page loads sockjs-client 1.6.1 from jsdelivr.
    let plain = node_default_iframe().await;
    assert!(plain.contains("https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js"));
}

async fn node_default_iframe() -> String {
    let node = node(&[]);
    get(node.public, "/sockjs/iframe.html").await.body
}

// SessionURLs, Protocol, XhrPolling

#[tokio::test]
async fn xhr_polling_carries_a_session_and_refuses_what_the_protocol_refuses() {
    let node = conformance_node(&[]);
    let addr = node.public;
    // SessionURLs: any server and session id, except empty ones and dots.
    for ids in ["/a/a1", "/_/_1", "/1/1", "/abcdefgh_i-j%20/abcdefg_i-j%201"] {
        let response = post(addr, &format!("/echo{ids}/xhr"), "").await;
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "o\n"),
            "{ids}"
        );
    }
    for ids in ["//", "/a./a", "/a/a.", "/./.", "/", "///"] {
        assert_eq!(
            get(addr, &format!("/echo{ids}/xhr")).await.status,
            404,
            "{ids}"
        );
        assert_eq!(
            post(addr, &format!("/echo{ids}/xhr"), "").await.status,
            404,
            "{ids}"
        );
    }
    let long = "x".repeat(129);
    assert_eq!(
        post(addr, &format!("/echo/0/{long}/xhr"), "").await.status,
        404
    );
    // Protocol.test_simpleSession, SessionURLs.test_ignoringServerId
    let id = session_id();
    let response = request(
        addr,
        "POST",
        &format!("/echo/000/{id}/xhr"),
        &[("Origin", "test")],
        "",
    )
    .await;
    assert_eq!((response.status, response.body.as_str()), (200, "o\n"));
    assert_eq!(
        response.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_cors(&response, Some("test"));
    assert_not_cached(&response);
    let sent = request(
        addr,
        "POST",
        &format!("/echo/000/{id}/xhr_send"),
        &[("Origin", "test")],
        r#"["x"]"#,
    )
    .await;
    assert_eq!(sent.status, 204);
    assert!(sent.body.is_empty());
    assert_eq!(
        sent.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    assert_cors(&sent, Some("test"));
    assert_not_cached(&sent);
    let polled = post(addr, &format!("/echo/999/{id}/xhr"), "").await;
    assert_eq!((polled.status, polled.body.as_str()), (200, "a[\"x\"]\n"));
    // XhrPolling.test_invalid_session
    assert_eq!(
        post(addr, "/echo/000/bad_session/xhr_send", r#"["a"]"#)
            .await
            .status,
        404
    );
    // XhrPolling.test_invalid_json, test_sending_empty_frame
    let broken = post(addr, &format!("/echo/000/{id}/xhr_send"), r#"["x"#).await;
    assert_eq!(broken.status, 500);
    assert!(broken.body.contains("Broken JSON encoding."));
    let empty = post(addr, &format!("/echo/000/{id}/xhr_send"), "").await;
    assert_eq!(empty.status, 500);
    assert!(empty.body.contains("Payload expected."));
    assert_eq!(
        post(addr, &format!("/echo/000/{id}/xhr_send"), "[]")
            .await
            .status,
        204
    );
    // XhrPolling.test_content_types
    let types = [
        "text/plain",
        "T",
        "application/json",
        "application/xml",
        "",
        "application/json; charset=utf-8",
        "text/xml; charset=utf-8",
        "text/xml",
    ];
    for content_type in types {
        let mut headers = vec![];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        let sent = request(
            addr,
            "POST",
            &format!("/echo/000/{id}/xhr_send"),
            &headers,
            r#"["a"]"#,
        )
        .await;
        assert_eq!(sent.status, 204, "{content_type}");
    }
    let polled = post(addr, &format!("/echo/000/{id}/xhr"), "").await;
    assert_eq!(messages(&polled.body), vec!["a"; types.len()]);
    // Protocol: a second receiving request while one waits.
    let mut waiting = Streaming::open(addr, "POST", &format!("/echo/000/{id}/xhr"), &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = post(addr, &format!("/echo/000/{id}/xhr"), "").await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (200, "c[2010,\"Another connection still open\"]\n")
    );
    // HandlingClose.test_abort_xhr_polling: cutting the waiting request ends the session.
    drop(waiting.reader);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = post(addr, &format!("/echo/000/{id}/xhr"), "").await;
    assert!(
        matches!(
            after.body.as_str(),
            "o\n" | "c[1002,\"Connection interrupted\"]\n"
        ),
        "{after:?}"
    );
    // XhrPolling.test_options, test_request_headers_cors
    for transport in ["xhr", "xhr_send", "xhr_streaming"] {
        assert_preflight(addr, &format!("/echo/abc/abc/{transport}"), "OPTIONS, POST").await;
    }
    let asked = request(
        addr,
        "OPTIONS",
        &format!("/echo/000/{id}/xhr"),
        &[
            ("Origin", "test"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "a, b, c"),
        ],
        "",
    )
    .await;
    assert_cors(&asked, Some("test"));
    assert_eq!(
        asked.header("access-control-allow-headers"),
        Some("a, b, c")
    );
    let unasked = request(
        addr,
        "OPTIONS",
        &format!("/echo/000/{id}/xhr"),
        &[
            ("Origin", "test"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", ""),
        ],
        "",
    )
    .await;
    assert_eq!(unasked.header("access-control-allow-headers"), None);
    waiting.buffer.clear();
}

// Protocol.test_closeSession, HandlingClose.test_close_frame, JsonPolling.test_close

#[tokio::test]
async fn a_closed_session_answers_its_close_frame_until_it_is_forgotten() {
    let node = conformance_node(&[]);
    let addr = node.public;
    let id = session_id();
    assert_eq!(
        post(addr, &format!("/close/000/{id}/xhr"), "").await.body,
        "o\n"
    );
    for _ in 0..2 {
        let polled = post(addr, &format!("/close/000/{id}/xhr"), "").await;
        assert_eq!(
            (polled.status, polled.body.as_str()),
            (200, "c[3000,\"Go away!\"]\n")
        );
    }
    let id = session_id();
    let mut first =
        Streaming::open(addr, "POST", &format!("/close/000/{id}/xhr_streaming"), &[]).await;
    first.expect(&prelude()).await;
    first.expect("o\n").await;
    first.expect("c[3000,\"Go away!\"]\n").await;
    first.expect_end().await;
    let mut second =
        Streaming::open(addr, "POST", &format!("/close/000/{id}/xhr_streaming"), &[]).await;
    second.expect(&prelude()).await;
    second.expect("c[3000,\"Go away!\"]\n").await;
    second.expect_end().await;
    let id = session_id();
    assert_eq!(
        get(addr, &format!("/close/000/{id}/jsonp?c=x")).await.body,
        "/**/x(\"o\");\r\n"
    );
    for _ in 0..2 {
        let polled = get(addr, &format!("/close/000/{id}/jsonp?c=x")).await;
        assert_eq!(polled.body, "/**/x(\"c[3000,\\\"Go away!\\\"]\");\r\n");
    }
}

// XhrStreaming, HandlingClose

#[tokio::test]
async fn xhr_streaming_frames_messages_and_ends_at_the_response_limit() {
    let node = conformance_node(&[]);
    let addr = node.public;
    let id = session_id();
    let path = format!("/echo/000/{id}");
    let mut stream = Streaming::open(
        addr,
        "POST",
        &format!("{path}/xhr_streaming"),
        &[("Origin", "test")],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_cors(&stream.as_response(), Some("test"));
    assert_not_cached(&stream.as_response());
    stream.expect(&prelude()).await;
    stream.expect("o\n").await;
    assert_eq!(
        post(addr, &format!("{path}/xhr_send"), r#"["x"]"#)
            .await
            .status,
        204
    );
    stream.expect("a[\"x\"]\n").await;
    // HandlingClose.test_close_request: a second receiver gets 2010 and ends.
    let mut second = Streaming::open(addr, "POST", &format!("{path}/xhr_streaming"), &[]).await;
    second.expect(&prelude()).await;
    second
        .expect("c[2010,\"Another connection still open\"]\n")
        .await;
    second.expect_end().await;
    // test_response_limit: the echo service ends a response after 4096 bytes.
    let message = format!("\"{}\"", "x".repeat(128));
    for _ in 0..30 {
        post(addr, &format!("{path}/xhr_send"), &format!("[{message}]")).await;
        stream.expect(&format!("a[{message}]\n")).await;
    }
    post(addr, &format!("{path}/xhr_send"), &format!("[{message}]")).await;
    stream.expect(&format!("a[{message}]\n")).await;
    stream.expect_end().await;
    // The session lives on: the next request continues it.
    post(addr, &format!("{path}/xhr_send"), r#"["y"]"#).await;
    assert_eq!(
        post(addr, &format!("{path}/xhr"), "").await.body,
        "a[\"y\"]\n"
    );
    // HandlingClose.test_abort_xhr_streaming
    let mut cut = Streaming::open(addr, "POST", &format!("{path}/xhr_streaming"), &[]).await;
    cut.expect(&prelude()).await;
    drop(cut);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut after = Streaming::open(addr, "POST", &format!("{path}/xhr_streaming"), &[]).await;
    after.expect(&prelude()).await;
    let frame = after.next_until("\n").await;
    assert!(
        matches!(
            frame.as_str(),
            "o\n" | "c[1002,\"Connection interrupted\"]\n"
        ),
        "{frame:?}"
    );
}

// EventSource, HtmlFile

#[tokio::test]
async fn eventsource_and_htmlfile_frame_as_their_browsers_read() {
    let node = conformance_node(&[]);
    let addr = node.public;
    let path = format!("/echo/000/{}", session_id());
    let mut events = Streaming::open(addr, "GET", &format!("{path}/eventsource"), &[]).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert_not_cached(&events.as_response());
    events.expect("\r\n").await;
    events.expect("data: o\r\n\r\n").await;
    assert_eq!(
        post(addr, &format!("{path}/xhr_send"), r#"["x"]"#)
            .await
            .status,
        204
    );
    events.expect("data: a[\"x\"]\r\n\r\n").await;
    post(addr, &format!("{path}/xhr_send"), r#"["  \u0000\n\r "]"#).await;
    events.expect("data: a[\"  \\u0000\\n\\r \"]\r\n\r\n").await;
    let big = format!("\"{}\"", "x".repeat(4096));
    post(addr, &format!("{path}/xhr_send"), &format!("[{big}]")).await;
    events.expect(&format!("data: a[{big}]\r\n\r\n")).await;
    events.expect_end().await;

    let path = format!("/echo/000/{}", session_id());
    let mut page =
        Streaming::open(addr, "GET", &format!("{path}/htmlfile?c=%63allback"), &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=UTF-8")
    );
    assert_not_cached(&page.as_response());
    let head = page.next_until("\r\n\r\n").await;
    assert!(head.len() > 1024);
    assert!(head.starts_with("<!doctype html>"));
    assert!(head.contains("var c = parent.callback;"));
    page.expect("<script>\np(\"o\");\n</script>\r\n").await;
    post(addr, &format!("{path}/xhr_send"), r#"["x"]"#).await;
    page.expect("<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n")
        .await;
    let big = "x".repeat(4096);
    post(addr, &format!("{path}/xhr_send"), &format!("[\"{big}\"]")).await;
    page.expect(&format!(
        "<script>\np(\"a[\\\"{big}\\\"]\");\n</script>\r\n"
    ))
    .await;
    page.expect_end().await;

    for transport in ["htmlfile", "jsonp"] {
        let missing = get(addr, &format!("/echo/a/a/{transport}")).await;
        assert_eq!(missing.status, 500);
        assert!(missing.body.contains("\"callback\" parameter required"));
        for callback in ["%20", "*", "abc(", "abc%28"] {
            let invalid = get(addr, &format!("/echo/a/a/{transport}?c={callback}")).await;
            assert_eq!(invalid.status, 500, "{callback}");
            assert!(invalid.body.contains("invalid \"callback\" parameter"));
        }
    }
}

// JsonPolling

#[tokio::test]
async fn jsonp_polling_takes_form_encoded_and_raw_sends() {
    let node = conformance_node(&[]);
    let addr = node.public;
    let path = format!("/echo/000/{}", session_id());
    let opened = get(addr, &format!("{path}/jsonp?c=%63allback")).await;
    assert_eq!(opened.status, 200);
    assert_eq!(
        opened.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_not_cached(&opened);
    assert_eq!(opened.body, "/**/callback(\"o\");\r\n");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let sent = request(
        addr,
        "POST",
        &format!("{path}/jsonp_send"),
        &form,
        "d=%5B%22x%22%5D",
    )
    .await;
    assert_eq!((sent.status, sent.body.as_str()), (200, "ok"));
    assert_eq!(
        sent.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    assert_not_cached(&sent);
    assert_eq!(
        get(addr, &format!("{path}/jsonp?c=%63allback")).await.body,
        "/**/callback(\"a[\\\"x\\\"]\");\r\n"
    );
    let broken = request(
        addr,
        "POST",
        &format!("{path}/jsonp_send"),
        &form,
        "d=%5B%22x",
    )
    .await;
    assert_eq!(broken.status, 500);
    assert!(broken.body.contains("Broken JSON encoding."));
    for body in ["", "d=", "p=p"] {
        let empty = request(addr, "POST", &format!("{path}/jsonp_send"), &form, body).await;
        assert_eq!(empty.status, 500, "{body:?}");
        assert!(empty.body.contains("Payload expected."), "{body:?}");
    }
    assert_eq!(
        request(
            addr,
            "POST",
            &format!("{path}/jsonp_send"),
            &form,
            "d=%5B%5D"
        )
        .await
        .body,
        "ok"
    );
    request(
        addr,
        "POST",
        &format!("{path}/jsonp_send"),
        &form,
        "d=%5B%22abc%22%5D",
    )
    .await;
    let raw = request(
        addr,
        "POST",
        &format!("{path}/jsonp_send"),
        &[("Content-Type", "text/plain")],
        r#"["%61bc"]"#,
    )
    .await;
    assert_eq!(raw.body, "ok");
    assert_eq!(
        get(addr, &format!("{path}/jsonp?c=x")).await.body,
        "/**/x(\"a[\\\"abc\\\",\\\"%61bc\\\"]\");\r\n"
    );
    assert_eq!(
        post(addr, "/echo/000/nobody/jsonp_send", "[\"x\"]")
            .await
            .status,
        404
    );
}

// JsessionidCookie

#[tokio::test]
async fn cookies_are_set_when_the_endpoint_needs_them() {
    let node = conformance_node(&[]);
    let addr = node.public;
    let info = get(addr, "/cookie_needed_echo/info").await;
    assert_eq!(info.header("set-cookie"), None);
    let info: Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["cookie_needed"], true);
    let path = format!("/cookie_needed_echo/000/{}", session_id());
    let opened = post(addr, &format!("{path}/xhr"), "").await;
    assert_eq!(opened.body, "o\n");
    assert_eq!(
        opened.header("set-cookie"),
        Some("JSESSIONID=dummy; path=/")
    );
    let echoed = request(
        addr,
        "POST",
        &format!("/cookie_needed_echo/000/{}/xhr", session_id()),
        &[("Cookie", "JSESSIONID=abcdef")],
        "",
    )
    .await;
    assert_eq!(
        echoed.header("set-cookie"),
        Some("JSESSIONID=abcdef; path=/")
    );
    let sent = request(
        addr,
        "POST",
        &format!("{path}/jsonp_send"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "d=%5B%22x%22%5D",
    )
    .await;
    assert_eq!(sent.header("set-cookie"), Some("JSESSIONID=dummy; path=/"));
    for (method, transport) in [
        ("POST", "xhr_streaming"),
        ("GET", "eventsource"),
        ("GET", "htmlfile?c=cb"),
        ("GET", "jsonp?c=cb"),
    ] {
        let stream = Streaming::open(
            addr,
            method,
            &format!("/cookie_needed_echo/000/{}/{transport}", session_id()),
            &[],
        )
        .await;
        assert_eq!(
            stream.header("set-cookie"),
            Some("JSESSIONID=dummy; path=/"),
            "{transport}"
        );
    }
    // Not on a service without it, and on ferrocast's own endpoint with --sockjs-cookie.
    assert_eq!(
        post(addr, &format!("/echo/000/{}/xhr", session_id()), "")
            .await
            .header("set-cookie"),
        None
    );
    let with_cookie = self::node(&["--sockjs-cookie"]);
    let info: Value =
        serde_json::from_str(&get(with_cookie.public, "/sockjs/info").await.body).unwrap();
    assert_eq!(info["cookie_needed"], true);
}

// JSONEncoding

#[tokio::test]
async fn the_node_escapes_what_browsers_mangle_and_decodes_what_they_escape() {
    let node = conformance_node(&[]);
    let addr = node.public;
    let server_escapes =
        |c: u32| matches!(c, 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfff0..=0xffff);
    let chars: Vec<char> = (255..0x10000u32)
        .filter(|&c| server_escapes(c))
        .filter_map(char::from_u32)
        .collect();
    let escaped: String = chars
        .iter()
        .map(|&c| format!("\\u{:04x}", c as u32))
        .collect();
    let path = format!("/echo/000/{}", session_id());
    post(addr, &format!("{path}/xhr"), "").await;
    let raw: String = chars.iter().collect();
    assert_eq!(
        post(addr, &format!("{path}/xhr_send"), &format!("[\"{raw}\"]"))
            .await
            .status,
        204
    );
    let polled = post(addr, &format!("{path}/xhr"), "").await;
    assert_eq!(polled.body.trim_end(), format!("a[\"{escaped}\"]"));
    // What sockjs-client escapes (a part of the suite's list: controls,
    // invisible and combining marks, specials) comes back as itself.
    let client_escapes = |c: u32| {
        matches!(c, 0x01..=0x1f | 0x7f..=0x9f | 0xad | 0x300..=0x333 | 0x600..=0x604 | 0x70f
            | 0x17b4 | 0x17b5 | 0x2000..=0x20ff | 0xfeff | 0xf900..=0xfa0d | 0xfff0..=0xffff)
    };
    let all: String = (1..0x10000u32)
        .filter(|&c| client_escapes(c))
        .filter_map(char::from_u32)
        .collect();
    let ascii_payload: String = all
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let ascii_payload = format!("[\"{ascii_payload}\"]");
    assert_eq!(
        post(addr, &format!("{path}/xhr_send"), &ascii_payload)
            .await
            .status,
        204
    );
    let polled = post(addr, &format!("{path}/xhr"), "").await;
    assert_eq!(messages(&polled.body), vec![all]);
}

// WebsocketHttpErrors, Websocket, RawWebsocket

#[tokio::test]
async fn websocket_transports_frame_or_not_and_refuse_plain_http() {
    let node = conformance_node(&["--sockjs-heartbeat", "300ms"]);
    let addr = node.public;
    let id = session_id();
    assert_eq!(get(addr, "/echo/0/0/websocket").await.status, 400);
    let bad = request(
        addr,
        "GET",
        "/echo/0/0/websocket",
        &[("Upgrade", "WebSocket"), ("Connection", "close")],
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
    for headers in [
        &[("Upgrade", "WebSocket"), ("Connection", "Upgrade")][..],
        &[],
    ] {
        let refused = request(addr, "POST", "/echo/0/0/websocket", headers, "").await;
        assert_eq!(refused.status, 405);
        assert_eq!(refused.header("content-type"), None);
        assert!(refused.header("allow").is_some());
        assert!(refused.body.is_empty());
    }
    assert_eq!(
        get(addr, "/disabled_websocket_echo/0/0/websocket")
            .await
            .status,
        404
    );
    // Websocket.test_transport, test_empty_frame, test_reuseSessionId
    let url = format!("ws://{addr}/echo/000/{id}/websocket");
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(next_text(&mut first).await, "o");
    assert_eq!(next_text(&mut second).await, "o");
    first.send(Message::text("")).await.unwrap();
    first.send(Message::text("[]")).await.unwrap();
    first.send(Message::text(r#"["a"]"#)).await.unwrap();
    second.send(Message::text(r#""b""#)).await.unwrap();
    assert_eq!(next_text(&mut first).await, r#"a["a"]"#);
    assert_eq!(next_text(&mut second).await, r#"a["b"]"#);
    // Heartbeats while idle.
    assert_eq!(next_text(&mut first).await, "h");
    // test_broken_json: the connection ends at once.
    second.send(Message::text(r#"["a"#)).await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match second.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "h" => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(other) => panic!("{other:?} after broken JSON"),
            }
        }
    });
    ended.await.expect("the connection ends after broken JSON");
    // Websocket.test_close
    let (mut closed, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/close/000/{id}/websocket"))
            .await
            .unwrap();
    assert_eq!(next_text(&mut closed).await, "o");
    assert_eq!(next_text(&mut closed).await, "c[3000,\"Go away!\"]");
    match closed.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 3000),
        other => panic!("a close frame, got {other:?}"),
    }
    // RawWebsocket
    let (mut raw, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo/websocket"))
        .await
        .unwrap();
    raw.send(Message::text("Hello world!\u{ffff}"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut raw).await, "Hello world!\u{ffff}");
    let (mut raw_closed, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/close/websocket"))
            .await
            .unwrap();
    match raw_closed.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (3000, "Go away!")
            );
        }
        other => panic!("a close frame, got {other:?}"),
    }
}

// Heartbeats and the disconnect delay

#[tokio::test]
async fn idle_sessions_get_heartbeats_and_silent_clients_are_forgotten() {
    let node = conformance_node(&[
        "--sockjs-heartbeat",
        "300ms",
        "--sockjs-disconnect-delay",
        "500ms",
    ]);
    let addr = node.public;
    let path = format!("/echo/000/{}", session_id());
    let mut stream = Streaming::open(addr, "POST", &format!("{path}/xhr_streaming"), &[]).await;
    stream.expect(&prelude()).await;
    stream.expect("o\n").await;
    stream.expect("h\n").await;
    stream.expect("h\n").await;
    drop(stream);
    // A poll waiting with nothing to carry answers a heartbeat.
    let path = format!("/echo/000/{}", session_id());
    assert_eq!(post(addr, &format!("{path}/xhr"), "").await.body, "o\n");
    assert_eq!(post(addr, &format!("{path}/xhr"), "").await.body, "h\n");
    // No receiving request for the disconnect delay: the session is gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        post(addr, &format!("{path}/xhr_send"), r#"["x"]"#)
            .await
            .status,
        404
    );
    assert_eq!(post(addr, &format!("{path}/xhr"), "").await.body, "o\n");
}

// The endpoint's flags

#[tokio::test]
async fn the_endpoint_moves_with_its_flag_and_can_be_turned_off() {
    let spring = node(&["--sockjs-path", "/ws-endpoint"]);
    assert_eq!(
        get(spring.public, "/ws-endpoint").await.body,
        "Welcome to SockJS!\n"
    );
    assert_eq!(get(spring.public, "/sockjs").await.status, 404);
    let off = node(&["--sockjs-path", "off"]);
    assert_eq!(get(off.public, "/sockjs").await.status, 404);
    assert_eq!(post(off.public, "/sockjs/0/0/xhr", "").await.status, 404);
    // The conformance services are off by default.
    assert_eq!(get(off.public, "/echo").await.status, 404);
}

// A ferrocast session inside SockJS

/// A STOMP frame as a SockJS message.
fn stomp(command: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut frame = format!("{command}\n");
    for (name, value) in headers {
        frame.push_str(&format!("{name}:{value}\n"));
    }
    frame.push('\n');
    frame.push_str(body);
    frame.push('\0');
    frame
}

/// The STOMP frames in a SockJS `a[…]` frame.
fn stomp_frames(frame: &str) -> Vec<StompFrame> {
    messages(frame)
        .iter()
        .flat_map(|message| message.split('\0').map(str::to_string).collect::<Vec<_>>())
        .map(|raw| raw.trim_start_matches('\n').to_string())
        .filter(|raw| !raw.is_empty())
        .map(|raw| {
            let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
            let mut lines = head.lines();
            let command = lines.next().unwrap_or_default().to_string();
            let headers = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            StompFrame {
                command,
                headers,
                body: body.as_bytes().to_vec(),
            }
        })
        .collect()
}

/// A STOMP client over xhr-streaming: frames from the stream, sends by xhr_send.
struct StompOverSockjs {
    addr: SocketAddr,
    path: String,
    stream: Streaming,
    pending: std::collections::VecDeque<StompFrame>,
}

impl StompOverSockjs {
    async fn open(addr: SocketAddr, query: &str) -> Self {
        let path = format!("/sockjs/000/{}", session_id());
        let mut stream =
            Streaming::open(addr, "POST", &format!("{path}/xhr_streaming{query}"), &[]).await;
        assert_eq!(stream.status, 200);
        stream.expect(&prelude()).await;
        stream.expect("o\n").await;
        Self {
            addr,
            path,
            stream,
            pending: Default::default(),
        }
    }

    async fn send(&self, frames: &[String]) {
        let body = serde_json::to_string(frames).unwrap();
        let response = post(self.addr, &format!("{}/xhr_send", self.path), &body).await;
        assert_eq!(response.status, 204, "{response:?}");
    }

    /// CONNECT (1.2, with `headers`) and expect CONNECTED.
    async fn connect(&mut self, headers: &[(&str, &str)]) -> StompFrame {
        let mut all = vec![("accept-version", "1.2"), ("host", "ferrocast")];
        all.extend_from_slice(headers);
        self.send(&[stomp("CONNECT", &all, "")]).await;
        let frame = self.recv().await;
        assert_eq!(frame.command, "CONNECTED", "{frame:?}");
        frame
    }

    async fn recv(&mut self) -> StompFrame {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return frame;
            }
            let frame = self.stream.next_until("\n").await;
            match frame.as_bytes()[0] {
                b'a' => self.pending.extend(stomp_frames(&frame)),
                b'h' => {}
                _ => panic!("a STOMP frame, got SockJS frame {frame:?}"),
            }
        }
    }
}

#[tokio::test]
async fn stomp_over_xhr_streaming_talks_with_json_websocket_clients() {
    let node = node(&[]);
    let addr = node.public;
    let mut stomp_client = StompOverSockjs::open(addr, "").await;
    let frame = stomp_client.connect(&[("heart-beat", "0,0")]).await;
    assert_eq!(frame.header("version"), Some("1.2"));
    stomp_client
        .send(&[stomp(
            "SUBSCRIBE",
            &[
                ("id", "sub-0"),
                ("destination", "/topic/chat.sockjs"),
                ("receipt", "r1"),
            ],
            "",
        )])
        .await;
    let frame = stomp_client.recv().await;
    let command = frame.command.clone();
    assert_eq!(
        (command.as_str(), frame.header("receipt-id")),
        ("RECEIPT", Some("r1"))
    );
    let body = metrics(&node).await;
    assert_eq!(
        metric(
            &body,
            "ferrocast_connections",
            &[("protocol", "sockjs_stomp")]
        ),
        1.0
    );
    assert!(
        metric(
            &body,
            "ferrocast_sockjs_requests_total",
            &[("transport", "xhr_streaming")]
        ) >= 1.0
    );

    let mut json = JsonClient::connect(&node.ws_url()).await.unwrap();
    json.subscribe("chat.sockjs").await.unwrap();
    // STOMP to JSON.
    stomp_client
        .send(&[stomp(
            "SEND",
            &[
                ("destination", "/topic/chat.sockjs"),
                ("content-type", "application/json"),
                ("receipt", "r2"),
            ],
            r#"{"from":"stomp"}"#,
        )])
        .await;
    let frame = stomp_client.recv().await;
    let (command, body) = (frame.command.clone(), frame.body_text());
    if command == "MESSAGE" {
        // Its own message may come before the receipt.
        assert_eq!(body, r#"{"from":"stomp"}"#);
        let frame = stomp_client.recv().await;
        let command = frame.command.clone();
        assert_eq!(
            (command.as_str(), frame.header("receipt-id")),
            ("RECEIPT", Some("r2"))
        );
    } else {
        assert_eq!(
            (command.as_str(), frame.header("receipt-id")),
            ("RECEIPT", Some("r2"))
        );
        let frame = stomp_client.recv().await;
        let (command, body) = (frame.command.clone(), frame.body_text());
        assert_eq!(
            (command.as_str(), body.as_str()),
            ("MESSAGE", r#"{"from":"stomp"}"#)
        );
    }
    let message = json.recv().await.unwrap();
    assert_eq!(message["op"], "message");
    assert_eq!(message["data"], json!({"from": "stomp"}));
    // JSON to STOMP, in order.
    for n in 0..20 {
        json.publish("chat.sockjs", json!({ "n": n }))
            .await
            .unwrap();
    }
    for n in 0..20 {
        let frame = stomp_client.recv().await;
        let (command, body) = (frame.command.clone(), frame.body_text());
        assert_eq!(command, "MESSAGE");
        assert_eq!(frame.header("subscription"), Some("sub-0"));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({ "n": n })
        );
    }
    stomp_client
        .send(&[stomp("DISCONNECT", &[("receipt", "bye")], "")])
        .await;
    let command = stomp_client.recv().await.command;
    assert_eq!(command, "RECEIPT");
}

async fn metrics(node: &Node) -> String {
    get(node.admin, "/metrics").await.body
}

#[tokio::test]
async fn the_json_protocol_runs_over_xhr_polling() {
    let node = node(&[]);
    let addr = node.public;
    let path = format!("/sockjs/000/{}", session_id());
    assert_eq!(post(addr, &format!("{path}/xhr"), "").await.body, "o\n");
    let subscribe = json!({"op": "subscribe", "id": 1, "topic": "chat.polling"}).to_string();
    post(
        addr,
        &format!("{path}/xhr_send"),
        &serde_json::to_string(&[subscribe]).unwrap(),
    )
    .await;
    let reply: Value =
        serde_json::from_str(&messages(&post(addr, &format!("{path}/xhr"), "").await.body)[0])
            .unwrap();
    assert_eq!(
        (reply["op"].as_str(), reply["id"].as_u64()),
        (Some("ok"), Some(1))
    );
    let body = metrics(&node).await;
    assert_eq!(
        metric(
            &body,
            "ferrocast_connections",
            &[("protocol", "sockjs_json")]
        ),
        1.0
    );
    let mut publisher = JsonClient::connect(&node.ws_url()).await.unwrap();
    publisher
        .publish("chat.polling", json!("hello"))
        .await
        .unwrap();
    let delivered = messages(&post(addr, &format!("{path}/xhr"), "").await.body);
    let delivered: Value = serde_json::from_str(delivered[0].lines().next().unwrap()).unwrap();
    assert_eq!(
        (delivered["op"].as_str(), &delivered["data"]),
        (Some("message"), &json!("hello"))
    );
    // A first message that is neither STOMP nor JSON closes the session.
    let path = format!("/sockjs/000/{}", session_id());
    post(addr, &format!("{path}/xhr"), "").await;
    post(addr, &format!("{path}/xhr_send"), r#"["hello"]"#).await;
    let refused = post(addr, &format!("{path}/xhr"), "").await;
    assert!(refused.body.starts_with("c[1002,"), "{refused:?}");
}

#[tokio::test]
async fn drain_closes_sockjs_sessions_with_1012() {
    let node = node(&["--drain-timeout", "7s"]);
    let addr = node.public;
    let mut client = StompOverSockjs::open(addr, "").await;
    client.connect(&[]).await;
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGTERM).unwrap();
    let frame = loop {
        let frame = client.stream.next_until("\n").await;
        if !frame.starts_with('h') {
            break frame;
        }
    };
    assert_eq!(
        frame,
        "c[1012,\"node draining; reconnect to another node\"]\n"
    );
    client.stream.expect_end().await;
}

#[tokio::test]
async fn a_client_that_stops_receiving_is_closed_as_a_slow_consumer() {
    let node = node(&[
        "--max-message-size",
        "1024",
        "--outbound-queue-bytes",
        "4096",
        "--sockjs-disconnect-delay",
        "30s",
        "--publish-rate",
        "0",
    ]);
    let addr = node.public;
    let path = format!("/sockjs/000/{}", session_id());
    post(addr, &format!("{path}/xhr"), "").await;
    let subscribe = json!({"op": "subscribe", "id": 1, "topic": "chat.slow"}).to_string();
    post(
        addr,
        &format!("{path}/xhr_send"),
        &serde_json::to_string(&[subscribe]).unwrap(),
    )
    .await;
    post(addr, &format!("{path}/xhr"), "").await;
    let mut publisher = JsonClient::connect(&node.ws_url()).await.unwrap();
    for n in 0..200 {
        publisher
            .publish("chat.slow", json!({ "n": n, "pad": "x".repeat(200) }))
            .await
            .unwrap();
    }
    let mut close = None;
    for _ in 0..10 {
        let polled = post(addr, &format!("{path}/xhr"), "").await;
        if polled.body.starts_with('c') {
            close = Some(polled.body);
            break;
        }
    }
    assert_eq!(
        close.as_deref(),
        Some("c[4000,\"slow consumer: more than 4096 bytes waiting\"]\n")
    );
    let body = metrics(&node).await;
    assert!(
        metric(
            &body,
            "ferrocast_connections_closed_total",
            &[("reason", "slow_consumer")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn stomp_over_sockjs_resumes_with_ferrocast_since() {
    let node = Node::spawn_with_config(
        env!("CARGO_BIN_EXE_ferrocast"),
        "[namespaces.orders]\nhistory_size = 100\nhistory_ttl = \"60s\"\n",
        &[],
    );
    let addr = node.public;
    let mut publisher = JsonClient::connect(&node.ws_url()).await.unwrap();
    for n in 0..5 {
        publisher
            .publish("orders.eu", json!({ "n": n }))
            .await
            .unwrap();
    }
    let mut client = StompOverSockjs::open(addr, "").await;
    client.connect(&[]).await;
    client
        .send(&[stomp(
            "SUBSCRIBE",
            &[
                ("id", "0"),
                ("destination", "/topic/orders.eu"),
                ("ferrocast-since", ":0"),
            ],
            "",
        )])
        .await;
    for n in 0..5 {
        let frame = client.recv().await;
        let (command, body) = (frame.command.clone(), frame.body_text());
        assert_eq!(command, "MESSAGE");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({ "n": n })
        );
        assert!(frame.header("ferrocast-offset").is_some());
    }
}

/// A node that serves no anonymous client, with the shared secret `SECRET`.
fn node_with_tokens(extra: &[&str]) -> Node {
    let dir = std::env::temp_dir().join(format!("ferrocast-sockjs-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.display().to_string();
    let mut args = vec!["--jwt-hmac-secret-file", &secret];
    args.extend_from_slice(extra);
    node(&args)
}

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_comes_with_the_first_request_or_in_stomp_connect() {
    let node = node_with_tokens(&["--auth-timeout", "500ms"]);
    let addr = node.public;
    // The token query parameter of the request that opens the session.
    let query = format!("?token={}", token("alice"));
    let mut alice = StompOverSockjs::open(addr, &query).await;
    alice.connect(&[]).await;
    // A user destination needs the token's user.
    alice
        .send(&[stomp(
            "SUBSCRIBE",
            &[
                ("id", "0"),
                ("destination", "/user/queue/inbox"),
                ("receipt", "r"),
            ],
            "",
        )])
        .await;
    assert_eq!(alice.recv().await.command, "RECEIPT");
    // A bad token is refused before a session exists.
    let refused = post(
        addr,
        &format!("/sockjs/000/{}/xhr?token=nonsense", session_id()),
        "",
    )
    .await;
    assert_eq!(refused.status, 401, "{refused:?}");
    // Without one in the URL: the CONNECT passcode.
    let mut bob = StompOverSockjs::open(addr, "").await;
    let passcode = token("bob");
    bob.connect(&[("passcode", &passcode)]).await;
    // Nothing within the auth timeout: the session is closed.
    let path = format!("/sockjs/000/{}", session_id());
    assert_eq!(post(addr, &format!("{path}/xhr"), "").await.body, "o\n");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let closed = post(addr, &format!("{path}/xhr"), "").await;
    assert!(closed.body.starts_with("c[1008,"), "{closed:?}");
}

#[tokio::test]
async fn sockjs_sessions_get_heartbeats_instead_of_pings_and_need_no_pongs() {
    let node = node(&[
        "--sockjs-heartbeat",
        "200ms",
        "--ping-interval",
        "200ms",
        "--pong-timeout",
        "300ms",
    ]);
    let addr = node.public;
    let path = format!("/sockjs/000/{}", session_id());
    let mut stream = Streaming::open(addr, "POST", &format!("{path}/xhr_streaming"), &[]).await;
    stream.expect(&prelude()).await;
    stream.expect("o\n").await;
    let ping = json!({"op": "ping", "id": 1}).to_string();
    post(
        addr,
        &format!("{path}/xhr_send"),
        &serde_json::to_string(&[&ping]).unwrap(),
    )
    .await;
    let pong: Value = serde_json::from_str(&stream.next_messages().await[0]).unwrap();
    assert_eq!(pong, json!({"op": "pong", "id": 1}));
    // Several pong timeouts pass with heartbeats only: the session lives on.
    for _ in 0..6 {
        stream.expect("h\n").await;
    }
    let ping = json!({"op": "ping", "id": 2}).to_string();
    post(
        addr,
        &format!("{path}/xhr_send"),
        &serde_json::to_string(&[&ping]).unwrap(),
    )
    .await;
    let pong: Value = serde_json::from_str(&stream.next_messages().await[0]).unwrap();
    assert_eq!(pong, json!({"op": "pong", "id": 2}));
    let body = metrics(&node).await;
    assert_eq!(
        metric(
            &body,
            "ferrocast_connections_closed_total",
            &[("reason", "ping_timeout")]
        ),
        0.0
    );
}
