//! STOMP transactions against a real node: a SEND in a transaction is
//! checked when it arrives, COMMIT publishes the held SENDs in order, and a
//! COMMIT whose publishes the backplane (a real redis-server) partly refuses
//! says which SENDs were published and which were not.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use ferrocast_testkit::{wait_readyz, ClientError, Node, RedisServer, StompClient, StompFrame};

/// `chat` keeps history, `news` takes no client publications, `live` is
/// neither.
const NAMESPACES: &str = "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"60s\"\n\
                          [namespaces.news]\nclient_publish = false\n";

/// A node with [`NAMESPACES`] and `args`; `name` keeps config files apart.
fn node(name: &str, args: &[&str]) -> Node {
    let config: PathBuf = std::env::temp_dir().join(format!(
        "ferrocast-stomp-tx-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&config, NAMESPACES).unwrap();
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), &all)
}

async fn connected(node: &Node) -> StompClient {
    let mut c = StompClient::connect(&node.ws_url(), "v12.stomp")
        .await
        .unwrap();
    c.handshake().await.unwrap();
    c
}

/// A STOMP client subscribed to `destination`, once the node routes it.
async fn subscriber(node: &Node, destination: &str) -> StompClient {
    let mut c = connected(node).await;
    c.send(
        "SUBSCRIBE",
        &[("id", "s"), ("destination", destination), ("receipt", "r")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap().header("receipt-id"), Some("r"));
    c
}

async fn frame(c: &mut StompClient, command: &str, headers: &[(&str, &str)]) {
    c.send(command, headers, "").await.unwrap();
}

async fn send_in(c: &mut StompClient, tx: &str, destination: &str, body: &str) {
    c.send(
        "SEND",
        &[("destination", destination), ("transaction", tx)],
        body,
    )
    .await
    .unwrap();
}

/// Sends SEND with `headers`, `body` and a `receipt`, and expects the RECEIPT.
async fn receipted(c: &mut StompClient, headers: &[(&str, &str)], body: &str, receipt: &str) {
    let mut all = headers.to_vec();
    all.push(("receipt", receipt));
    c.send("SEND", &all, body).await.unwrap();
    assert_eq!(c.recv().await.unwrap().header("receipt-id"), Some(receipt));
}

/// The ERROR the node sends before it closes, and the close code.
async fn error_then_close(c: &mut StompClient) -> (StompFrame, u16) {
    let (frames, close) = c.expect_close().await.unwrap();
    let error = frames
        .iter()
        .find(|f| f.command == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR in {frames:?}"))
        .clone();
    (error, close)
}

/// The ERROR's `message` header as sent, before STOMP 1.2 escaping.
fn message(error: &StompFrame) -> Option<String> {
    let escaped = error.header("message")?;
    Some(escaped.replace("\\c", ":").replace("\\\\", "\\"))
}

async fn nothing_within(c: &mut StompClient, limit: Duration) -> bool {
    matches!(c.recv_within(limit).await, Err(ClientError::Timeout))
}

#[tokio::test]
async fn a_transaction_delivers_every_send_in_order_at_commit() {
    let node = node("order", &[]);
    let mut sub = subscriber(&node, "/topic/live.>").await;
    let mut publisher = connected(&node).await;
    frame(&mut publisher, "BEGIN", &[("transaction", "t")]).await;
    for n in 1..=5 {
        let destination = if n % 2 == 0 {
            "/topic/live.b"
        } else {
            "/topic/live.a"
        };
        send_in(&mut publisher, "t", destination, &n.to_string()).await;
    }
    // A held SEND is receipted when it is held.
    let held = [("destination", "/topic/live.a"), ("transaction", "t")];
    receipted(&mut publisher, &held, "6", "held").await;
    assert!(
        nothing_within(&mut sub, Duration::from_millis(300)).await,
        "delivered before COMMIT"
    );
    frame(
        &mut publisher,
        "COMMIT",
        &[("transaction", "t"), ("receipt", "c")],
    )
    .await;
    assert_eq!(
        publisher.recv().await.unwrap().header("receipt-id"),
        Some("c")
    );
    let mut got = Vec::new();
    for _ in 1..=6 {
        let m = sub.recv().await.unwrap();
        got.push((m.header("destination").unwrap().to_string(), m.body_text()));
    }
    let expected: Vec<(String, String)> = (1..=6)
        .map(|n| {
            let topic = if n % 2 == 0 && n != 6 {
                "live.b"
            } else {
                "live.a"
            };
            (format!("/topic/{topic}"), n.to_string())
        })
        .collect();
    assert_eq!(got, expected);
}

/// Each case: the held SEND's destination, what its ERROR says, the close code.
#[tokio::test]
async fn a_send_in_a_transaction_is_refused_when_it_arrives() {
    let node = node("refused", &[]);
    let mut sub = subscriber(&node, "/topic/live.a").await;
    let cases = [
        ("/topic/news.a", "may not publish", 1008),
        ("/topic/live..a", "invalid destination", 1002),
        ("/queue/a", "unsupported destination", 1002),
    ];
    for (destination, message, code) in cases {
        let mut c = connected(&node).await;
        frame(&mut c, "BEGIN", &[("transaction", "t")]).await;
        send_in(&mut c, "t", "/topic/live.a", "\"held\"").await;
        c.send(
            "SEND",
            &[
                ("destination", destination),
                ("transaction", "t"),
                ("receipt", "bad"),
            ],
            "1",
        )
        .await
        .unwrap();
        // No COMMIT: the ERROR comes for the SEND itself.
        let (error, close) = error_then_close(&mut c).await;
        let text = error.header("message").unwrap_or_default();
        assert!(
            text.contains(message),
            "{destination}: {text:?} lacks {message:?}"
        );
        assert_eq!(error.header("receipt-id"), Some("bad"), "{destination}");
        assert_eq!(close, code, "{destination}");
    }
    // The connection ended, so each transaction was aborted: nothing held
    // was published.
    assert!(nothing_within(&mut sub, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn what_transactions_hold_is_bounded() {
    // 16 open transactions; held SENDs up to 16 × --max-message-size bytes.
    let node = node(
        "bounds",
        &["--max-message-size", "1024", "--publish-rate", "0"],
    );
    let mut c = connected(&node).await;
    for n in 0..16 {
        frame(&mut c, "BEGIN", &[("transaction", &format!("t{n}"))]).await;
    }
    frame(&mut c, "BEGIN", &[("transaction", "one too many")]).await;
    let (error, close) = error_then_close(&mut c).await;
    let text = message(&error).unwrap();
    assert!(text.contains("16 open transactions"), "{text}");
    assert_eq!(close, 1002);

    let mut c = connected(&node).await;
    frame(&mut c, "BEGIN", &[("transaction", "t")]).await;
    let body = "x".repeat(900);
    for _ in 0..18 {
        send_in(&mut c, "t", "/topic/live.a", &body).await;
    }
    let (error, close) = error_then_close(&mut c).await;
    let text = message(&error).unwrap();
    assert!(text.contains("more than 16384 bytes"), "{text}");
    assert_eq!(close, 1002);
}

#[tokio::test]
async fn a_commit_the_backplane_partly_refuses_names_what_was_published() {
    let mut redis = RedisServer::start();
    let node = node(
        "partly",
        &["--backplane", &redis.url(), "--backplane-timeout", "1s"],
    );
    wait_readyz(node.admin, 200).await;
    let mut live = subscriber(&node, "/topic/live.a").await;
    let mut chat = subscriber(&node, "/topic/chat.a").await;
    let mut publisher = connected(&node).await;
    // The topic's history exists before Redis runs out of memory: the
    // append script's first write is then one Redis refuses (for a new
    // history it would be a DEL, which Redis lets through, and the rest
    // of the script with it).
    receipted(
        &mut publisher,
        &[("destination", "/topic/chat.a")],
        "0",
        "r0",
    )
    .await;
    assert_eq!(chat.recv().await.unwrap().body_text(), "0");
    frame(&mut publisher, "BEGIN", &[("transaction", "t")]).await;
    send_in(&mut publisher, "t", "/topic/live.a", "1").await;
    let held = [("destination", "/topic/chat.a"), ("transaction", "t")];
    receipted(&mut publisher, &held, "2", "r2").await;
    send_in(&mut publisher, "t", "/topic/live.a", "3").await;
    // Redis now refuses writes (history appends) but still relays PUBLISH.
    let reply = redis.command(&["CONFIG", "SET", "maxmemory", "1"]).unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    frame(
        &mut publisher,
        "COMMIT",
        &[("transaction", "t"), ("receipt", "c")],
    )
    .await;
    let (error, close) = error_then_close(&mut publisher).await;
    assert_eq!(
        message(&error).as_deref(),
        Some(
            "COMMIT of transaction \"t\": 3 SENDs, published: 1, 3; not published: 2; \
             published ones are not sent again"
        )
    );
    assert_eq!(error.header("receipt-id"), Some("c"));
    let body = error.body_text();
    let lines: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{body}");
    assert_eq!(lines[0], "SEND 1 to /topic/live.a: published");
    assert!(
        lines[1].starts_with("SEND 2 to /topic/chat.a (receipt r2): backplane rejected")
            && lines[1].contains("OOM")
            && lines[1].ends_with("; not published"),
        "{body}"
    );
    assert_eq!(lines[2], "SEND 3 to /topic/live.a: published");
    assert_eq!(close, 1002);
    assert_eq!(live.recv().await.unwrap().body_text(), "1");
    assert_eq!(live.recv().await.unwrap().body_text(), "3");
    assert!(
        nothing_within(&mut chat, Duration::from_millis(300)).await,
        "the refused SEND was delivered"
    );

    // Redis stopped between the SENDs and the COMMIT: nothing in a
    // namespace with history is published.
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    let mut publisher = connected(&node).await;
    frame(&mut publisher, "BEGIN", &[("transaction", "u")]).await;
    send_in(&mut publisher, "u", "/topic/chat.a", "4").await;
    send_in(&mut publisher, "u", "/topic/chat.b", "5").await;
    redis.kill9();
    frame(&mut publisher, "COMMIT", &[("transaction", "u")]).await;
    let (error, _) = error_then_close(&mut publisher).await;
    assert_eq!(
        message(&error).as_deref(),
        Some(
            "COMMIT of transaction \"u\": 2 SENDs, published: none; not published: 1, 2; \
             published ones are not sent again"
        )
    );
    let body = error.body_text();
    for line in body.lines().skip(1) {
        assert!(line.ends_with("; not published"), "{body}");
    }
    assert!(nothing_within(&mut chat, Duration::from_millis(300)).await);
}
