//! The clients' `history` request (JSON and protobuf) on a two-node Redis
//! cluster: publications made on one node read on the other, newest first
//! without `since` and forward from it with `since`, `limit` and its cap, a
//! foreign epoch not recovered, payloads that are not JSON carried as in
//! `message` objects, the errors (pattern, namespace without history,
//! forbidden topic), and the subscribe rate it counts against.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use ferrocast_protocol::proto_frames::pb::client_message::{self as request, Request};
use ferrocast_protocol::proto_frames::pb::server_message::Kind;
use ferrocast_testkit::{Cluster, JsonClient, Node, ProtoClient};

/// `chat` keeps history (more than the request cap), `news` does not.
const NAMESPACES: &str = "[namespaces.chat]\nhistory_size = 500\nhistory_ttl = \"60s\"\n";
/// What a `history` request returns at most.
const CAP: usize = 100;

async fn history(client: &mut JsonClient, request: Value) -> Value {
    let mut request = request;
    request["op"] = json!("history");
    client.request(request).await.unwrap()
}

/// The `data` of each publication of a history reply.
fn data(reply: &Value) -> Vec<Value> {
    reply["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("no publications in {reply}"))
        .iter()
        .map(|p| p["data"].clone())
        .collect()
}

fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<Value> {
    range.map(|n| json!({ "n": n })).collect()
}

#[tokio::test]
async fn history_is_read_on_any_node_newest_first_or_forward_from_a_position() {
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .start()
        .await;
    let (a, b) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let mut publisher = JsonClient::connect(&a.ws_url()).await.unwrap();
    for n in 1..=8 {
        let reply = publisher
            .publish("chat.h", json!({ "n": n }))
            .await
            .unwrap();
        assert_eq!(reply["offset"], n, "{reply}");
    }
    let epoch = publisher.publish("chat.h", json!({"n": 9})).await.unwrap()["epoch"].clone();
    let mut reader = JsonClient::connect(&b.ws_url()).await.unwrap();

    // The last three: the top, recovered, in offset order, each with its position.
    let newest = history(&mut reader, json!({"topic": "chat.h", "limit": 3})).await;
    assert_eq!(newest["op"], "ok", "{newest}");
    assert_eq!(
        (&newest["epoch"], &newest["offset"], &newest["recovered"]),
        (&epoch, &json!(9), &json!(true))
    );
    assert_eq!(data(&newest), numbered(7..=9));
    assert_eq!(
        newest["publications"][0],
        json!({"data": {"n": 7}, "epoch": epoch, "offset": 7})
    );
    // Without a limit: everything kept, up to the cap.
    let all = history(&mut reader, json!({"topic": "chat.h"})).await;
    assert_eq!(data(&all), numbered(1..=9));

    // From a position: what came after it, the oldest first.
    let since = json!({"epoch": epoch, "offset": 5});
    let rest = history(&mut reader, json!({"topic": "chat.h", "since": since})).await;
    assert_eq!(rest["recovered"], true, "{rest}");
    assert_eq!(data(&rest), numbered(6..=9));
    let page = history(
        &mut reader,
        json!({"topic": "chat.h", "since": since, "limit": 2}),
    )
    .await;
    assert_eq!(data(&page), numbered(6..=7));
    assert_eq!(page["offset"], 9, "the ok carries the top: {page}");

    // A position of a history that is gone: not recovered, what is kept.
    let foreign = history(
        &mut reader,
        json!({"topic": "chat.h", "since": {"epoch": "0123456789abcdef", "offset": 3}}),
    )
    .await;
    assert_eq!(foreign["recovered"], false, "{foreign}");
    assert_eq!(data(&foreign), numbered(1..=9));

    // A topic never published on: its empty top, nothing to read.
    let empty = history(&mut reader, json!({"topic": "chat.empty"})).await;
    assert_eq!(
        (&empty["epoch"], &empty["offset"], data(&empty).len()),
        (&json!(""), &json!(0), 0),
        "{empty}"
    );

    // The cap: more than 100 kept, 100 returned, the newest.
    for n in 1..=(CAP as u64 + 5) {
        publisher
            .publish("chat.big", json!({ "n": n }))
            .await
            .unwrap();
    }
    let capped = history(&mut reader, json!({"topic": "chat.big", "limit": 1000})).await;
    assert_eq!(data(&capped), numbered(6..=CAP as u64 + 5));

    // A payload that is not JSON reads as a `message` carries it.
    let mut binary = ProtoClient::connect(&a.ws_url()).await.unwrap();
    binary
        .publish("chat.bin", &[0xff, 0x00], "application/octet-stream")
        .await
        .unwrap();
    let read = history(&mut reader, json!({"topic": "chat.bin"})).await;
    assert_eq!(
        read["publications"][0],
        json!({"data": "/wA=", "encoding": "base64", "content_type": "application/octet-stream",
               "epoch": read["epoch"], "offset": 1})
    );

    // The same read over protobuf: the same top and publications.
    let mut proto = ProtoClient::connect(&b.ws_url()).await.unwrap();
    let reply = proto
        .request(Request::History(request::History {
            topic: "chat.h".into(),
            since: Some(request::subscribe::Since {
                epoch: epoch.as_str().unwrap().into(),
                offset: 7,
            }),
            limit: None,
        }))
        .await
        .unwrap();
    let Some(Kind::Ok(ok)) = reply.kind else {
        panic!("{reply:?}");
    };
    assert_eq!(
        (ok.epoch.as_deref(), ok.offset, ok.recovered),
        (epoch.as_str(), Some(9), Some(true))
    );
    let read: Vec<(Vec<u8>, Option<u64>, String)> = ok
        .history
        .unwrap()
        .publications
        .into_iter()
        .map(|m| (m.data.to_vec(), m.offset, m.topic))
        .collect();
    assert_eq!(
        read,
        [
            (br#"{"n":8}"#.to_vec(), Some(8), "chat.h".to_string()),
            (br#"{"n":9}"#.to_vec(), Some(9), "chat.h".to_string()),
        ]
    );
}

#[tokio::test]
async fn history_requests_are_refused_like_subscribes_and_rate_limited_like_them() {
    let node = Node::spawn_with_config(
        env!("CARGO_BIN_EXE_ferrocast"),
        NAMESPACES,
        &["--subscribe-rate", "1", "--subscribe-burst", "6"],
    );
    let mut client = JsonClient::connect(&node.ws_url()).await.unwrap();
    let error = |reply: &Value| (reply["op"].clone(), reply["code"].clone());
    for (request, code) in [
        (json!({"topic": "chat.*"}), "bad_request"),
        (json!({}), "bad_request"),
        (json!({"topic": "news.a"}), "bad_request"),
        (json!({"topic": "_user.bob.inbox"}), "forbidden"),
    ] {
        let reply = history(&mut client, request.clone()).await;
        assert_eq!(
            error(&reply),
            (json!("error"), json!(code)),
            "{request}: {reply}"
        );
    }
    let no_history = history(&mut client, json!({"topic": "news.a"})).await;
    assert!(
        no_history["message"]
            .as_str()
            .unwrap()
            .contains("keeps no history"),
        "{no_history}"
    );
    // The three refused after decoding and three reads spend the burst of
    // six (the undecodable ones never reached it): the next is refused, and
    // the connection goes on.
    for _ in 0..3 {
        assert_eq!(
            history(&mut client, json!({"topic": "chat.a"})).await["op"],
            "ok"
        );
    }
    let limited = history(&mut client, json!({"topic": "chat.a"})).await;
    assert_eq!(
        error(&limited),
        (json!("error"), json!("rate_limited")),
        "{limited}"
    );
    assert_eq!(
        client.request(json!({"op": "ping"})).await.unwrap()["op"],
        "pong"
    );
}
