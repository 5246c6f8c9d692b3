//! History and resume on one node (memory backplane), with real clients:
//! positions on messages, `since` replays exactly what was missed, expiry and
//! unknown epochs answer `recovered:false`, STOMP carries the same.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};

use ferrocast_testkit::{http_get, metric, Cluster, JsonClient, Node, StompClient};

/// The namespaces `chat` (100 kept, 60 s) and `brief` (3 kept, 1 s); `news`
/// keeps nothing.
const NAMESPACES: &str = "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"60s\"\n\
     [namespaces.brief]\nhistory_size = 3\nhistory_ttl = \"1s\"\n";

/// A node on the memory backplane with [`NAMESPACES`].
fn node() -> Node {
    Node::spawn_with_config(env!("CARGO_BIN_EXE_ferrocast"), NAMESPACES, &[])
}

async fn client(node: &Node) -> JsonClient {
    JsonClient::connect(&node.ws_url()).await.expect("connect")
}

async fn publish_numbers(
    c: &mut JsonClient,
    topic: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> Vec<Value> {
    let mut replies = Vec::new();
    for n in numbers {
        let reply = c.publish(topic, json!(n)).await.unwrap();
        assert_eq!(reply["op"], "ok", "{reply}");
        replies.push(reply);
    }
    replies
}

/// The next `n` messages as (data, offset, epoch).
async fn messages(c: &mut JsonClient, n: usize) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = c.recv().await.unwrap();
        assert_eq!(v["op"], "message", "{v}");
        out.push((
            v["data"].as_u64().unwrap(),
            v["offset"].as_u64().unwrap(),
            v["epoch"].as_str().unwrap().to_string(),
        ));
    }
    out
}

async fn nothing_more(c: &mut JsonClient) {
    if let Ok(v) = c.recv_within(Duration::from_millis(300)).await {
        panic!("unexpected {v}");
    }
}

#[tokio::test]
async fn since_replays_exactly_what_was_missed_then_continues_live() {
    let node = node();
    let mut publisher = client(&node).await;
    let replies = publish_numbers(&mut publisher, "chat.room", 1..=5).await;
    let epoch = replies[0]["epoch"].as_str().unwrap().to_string();
    assert!(!epoch.is_empty());
    let offsets: Vec<u64> = replies
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5], "publish replies carry positions");

    // A subscriber that had seen offset 2 resumes.
    let mut resumed = client(&node).await;
    let ok = resumed
        .request(json!({"op": "subscribe", "topic": "chat.room", "since": {"epoch": epoch, "offset": 2}}))
        .await
        .unwrap();
    assert_eq!(ok["op"], "ok", "{ok}");
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(
        (ok["epoch"].as_str(), ok["offset"].as_u64()),
        (Some(epoch.as_str()), Some(5))
    );
    let replayed = messages(&mut resumed, 3).await;
    assert_eq!(
        replayed,
        (3..=5).map(|n| (n, n, epoch.clone())).collect::<Vec<_>>()
    );

    // A plain subscriber starts at the top, with the position in the reply.
    let mut fresh = client(&node).await;
    let ok = fresh.subscribe("chat.room").await.unwrap();
    assert_eq!(
        (ok["offset"].as_u64(), ok.get("recovered")),
        (Some(5), None),
        "{ok}"
    );

    publish_numbers(&mut publisher, "chat.room", 6..=7).await;
    assert_eq!(
        messages(&mut resumed, 2).await,
        [(6, 6, epoch.clone()), (7, 7, epoch.clone())]
    );
    assert_eq!(
        messages(&mut fresh, 2).await,
        [(6, 6, epoch.clone()), (7, 7, epoch.clone())]
    );
    nothing_more(&mut resumed).await;
    nothing_more(&mut fresh).await;

    // Resuming at the top replays nothing and is recovered; an epoch this
    // history never had is not.
    let mut at_top = client(&node).await;
    let ok = at_top
        .request(json!({"op": "subscribe", "topic": "chat.room", "since": {"epoch": epoch, "offset": 7}}))
        .await
        .unwrap();
    assert_eq!(ok["recovered"], true, "{ok}");
    nothing_more(&mut at_top).await;
    let mut stale = client(&node).await;
    let ok = stale
        .request(json!({"op": "subscribe", "topic": "chat.room", "since": {"epoch": "gone", "offset": 3}}))
        .await
        .unwrap();
    assert_eq!(
        (ok["recovered"].as_bool(), ok["offset"].as_u64()),
        (Some(false), Some(7)),
        "{ok}"
    );
    nothing_more(&mut stale).await;

    let (_, metrics) = http_get(node.admin, "/metrics").await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_resumes_total",
            &[("outcome", "recovered")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ferrocast_resumes_total",
            &[("outcome", "not_recovered")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_subscriber_from_before_the_first_publication_gets_everything() {
    let node = node();
    let mut early = client(&node).await;
    let ok = early.subscribe("chat.new").await.unwrap();
    assert_eq!(
        (ok["epoch"].as_str(), ok["offset"].as_u64()),
        (Some(""), Some(0)),
        "{ok}"
    );
    early.close().await;

    let mut publisher = client(&node).await;
    publish_numbers(&mut publisher, "chat.new", 1..=3).await;
    let mut back = client(&node).await;
    let ok = back
        .request(
            json!({"op": "subscribe", "topic": "chat.new", "since": {"epoch": "", "offset": 0}}),
        )
        .await
        .unwrap();
    assert_eq!(ok["recovered"], true, "{ok}");
    let got: Vec<u64> = messages(&mut back, 3)
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(got, [1, 2, 3]);
}

#[tokio::test]
async fn trimmed_or_expired_history_is_reported_never_a_silent_gap() {
    let node = node();
    let mut publisher = client(&node).await;
    let replies = publish_numbers(&mut publisher, "brief.t", 1..=5).await;
    let epoch = replies[0]["epoch"].as_str().unwrap().to_string();

    // Only 3..=5 are kept: resuming from 1 misses 2.
    let mut behind = client(&node).await;
    let ok = behind
        .request(
            json!({"op": "subscribe", "topic": "brief.t", "since": {"epoch": epoch, "offset": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(ok["recovered"], false, "{ok}");
    let got: Vec<u64> = messages(&mut behind, 3)
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(got, [3, 4, 5], "what is kept is still replayed");

    // After the time-to-live the history is gone.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut late = client(&node).await;
    let ok = late
        .request(
            json!({"op": "subscribe", "topic": "brief.t", "since": {"epoch": epoch, "offset": 5}}),
        )
        .await
        .unwrap();
    assert_eq!(ok["recovered"], false, "{ok}");
    nothing_more(&mut late).await;
}

#[tokio::test]
async fn namespaces_without_history_and_patterns() {
    let node = node();
    let mut c = client(&node).await;
    let ok = c
        .request(
            json!({"op": "subscribe", "topic": "news.a", "since": {"epoch": "e", "offset": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (ok["recovered"].as_bool(), ok.get("offset")),
        (Some(false), None),
        "{ok}"
    );
    let err = c
        .request(
            json!({"op": "subscribe", "topic": "chat.*", "since": {"epoch": "e", "offset": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (err["op"].as_str(), err["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{err}"
    );

    // A pattern in a namespace with history gets positioned messages live.
    let ok = c.subscribe("chat.*").await.unwrap();
    assert_eq!(ok["op"], "ok", "{ok}");
    let mut publisher = client(&node).await;
    publish_numbers(&mut publisher, "chat.x", 1..=2).await;
    publish_numbers(&mut publisher, "news.a", 3..=3).await;
    let first = messages(&mut c, 2).await;
    assert_eq!(first.iter().map(|m| m.1).collect::<Vec<_>>(), [1, 2]);
    let v = c.recv().await.unwrap();
    assert_eq!(
        (v["data"].as_u64(), v.get("offset")),
        (Some(3), None),
        "{v}"
    );
}

#[tokio::test]
async fn stomp_resumes_with_ferrocast_since() {
    let node = node();
    let mut publisher = client(&node).await;
    let replies = publish_numbers(&mut publisher, "chat.s", 1..=4).await;
    let epoch = replies[0]["epoch"].as_str().unwrap().to_string();

    let mut stomp = StompClient::connect(&node.ws_url(), "v12.stomp")
        .await
        .unwrap();
    stomp.handshake().await.unwrap();
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("id", "0"),
                ("destination", "/topic/chat.s"),
                ("receipt", "r1"),
                ("ferrocast-since", &format!("{epoch}:2")),
            ],
            "",
        )
        .await
        .unwrap();
    let receipt = stomp.recv().await.unwrap();
    assert_eq!(receipt.command, "RECEIPT");
    assert_eq!(receipt.header("ferrocast-recovered"), Some("true"));
    assert_eq!(receipt.header("ferrocast-offset"), Some("4"));
    for expected in 3..=5u64 {
        if expected == 5 {
            publish_numbers(&mut publisher, "chat.s", 5..=5).await;
        }
        let message = stomp.recv().await.unwrap();
        assert_eq!(message.command, "MESSAGE");
        assert_eq!(message.body_text(), expected.to_string());
        assert_eq!(
            message.header("ferrocast-offset"),
            Some(expected.to_string().as_str())
        );
        assert_eq!(message.header("ferrocast-epoch"), Some(epoch.as_str()));
    }
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("id", "1"),
                ("destination", "/topic/chat.t"),
                ("ferrocast-since", "nonsense"),
            ],
            "",
        )
        .await
        .unwrap();
    let error = stomp.recv().await.unwrap();
    assert_eq!(error.command, "ERROR");
    assert!(
        error.header("message").unwrap().contains("ferrocast-since"),
        "{error:?}"
    );
}

/// With history, the publishing node delivers to its own subscribers once the
/// backplane gave the position: a publisher that closes right after sending
/// must not take that delivery with it.
#[tokio::test]
async fn a_publication_sent_just_before_closing_reaches_local_subscribers() {
    let cluster = Cluster::redis().config(NAMESPACES).start().await;
    let node = &cluster[0];
    let mut subscriber = client(node).await;
    assert_eq!(subscriber.subscribe("chat.last").await.unwrap()["op"], "ok");
    for n in 1..=20u64 {
        let mut publisher = client(node).await;
        publisher
            .send(json!({"op": "publish", "topic": "chat.last", "data": n}))
            .await
            .unwrap();
        publisher.close().await;
    }
    let got: Vec<u64> = messages(&mut subscriber, 20)
        .await
        .into_iter()
        .map(|m| m.1)
        .collect();
    assert_eq!(
        got,
        (1..=20).collect::<Vec<_>>(),
        "offsets in order, none missing"
    );
}
