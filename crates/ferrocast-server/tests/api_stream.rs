//! The HTTP mirror's Subscribe (`GET /api/subscribe`, Server-Sent Events)
//! and Config (`GET /api/config`) calls, and what Info tells of each node,
//! against real nodes: the API key, publications as `/api/history` shows
//! them, resuming from a position, bad requests in words, the end of a
//! stream when the node drains, and a configuration without secrets.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use ferrocast_testkit::{
    http_request, metric, node_binary, Cluster, JsonClient, Node, SseClient, SseError, WAIT,
};

const KEY: &str = "api-key-of-the-stream-tests-0123";
const BEARER: &str = "Bearer api-key-of-the-stream-tests-0123";
const NAMESPACES: &str = "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"10m\"\n";

async fn node() -> Cluster {
    Cluster::memory()
        .config(NAMESPACES)
        .args(&["--api-key", KEY])
        .start()
        .await
}

/// `POST /api/<method>` with `body` and the key; the status and JSON answer.
async fn call(node: &Node, method: &str, body: Value) -> (u16, Value) {
    let (status, text) = http_request(
        node.admin,
        "POST",
        &format!("/api/{method}"),
        &[
            ("authorization", BEARER),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await
    .unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// An open `/api/subscribe` stream of `query`, past its `subscribed` event
/// (returned).
async fn subscribe(node: &Node, query: &str) -> (SseClient, Value) {
    let mut stream = SseClient::connect_with_headers(
        node.admin,
        &format!("/api/subscribe?{query}"),
        &[("authorization", BEARER)],
    )
    .await
    .unwrap();
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let opened = stream.next_event().await.unwrap();
    assert_eq!(opened.event, "subscribed");
    (stream, opened.json().unwrap())
}

#[tokio::test]
async fn a_stream_carries_each_publication_as_history_shows_it() {
    let cluster = node().await;
    let node = &cluster[0];
    let (mut stream, opened) = subscribe(node, "topic=chat.%3E").await;
    assert_eq!(opened, json!({"recovered": null}));

    let (status, _) = call(
        node,
        "publish",
        json!({"topic": "chat.a", "data": {"n": 1}, "headers": {"kind": "greeting"}}),
    )
    .await;
    assert_eq!(status, 200);
    let mut client = JsonClient::connect(&node.ws_url()).await.unwrap();
    client
        .publish("chat.b", json!("from a client"))
        .await
        .unwrap();
    call(
        node,
        "publish",
        json!({"topic": "chat.c", "data_base64": "AAH/", "content_type": "application/octet-stream"}),
    )
    .await;

    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = stream.next_event().await.unwrap();
        assert_eq!(event.event, "publication");
        let mut publication = event.json().unwrap();
        assert!(publication["published_at_micros"].as_u64().unwrap() > 0);
        publication
            .as_object_mut()
            .unwrap()
            .remove("published_at_micros");
        publication.as_object_mut().unwrap().remove("epoch");
        seen.push(publication);
    }
    assert_eq!(
        seen,
        [
            json!({"topic": "chat.a", "data": {"n": 1}, "headers": {"kind": "greeting"}, "offset": 1}),
            json!({"topic": "chat.b", "data": "from a client", "offset": 1}),
            json!({"topic": "chat.c", "data": "AAH/", "encoding": "base64",
                   "content_type": "application/octet-stream", "offset": 1}),
        ]
    );
}

#[tokio::test]
async fn a_stream_resumes_from_a_position_of_a_topic_with_history() {
    let cluster = node().await;
    let node = &cluster[0];
    let mut epoch = String::new();
    for n in 1..=3 {
        let (_, answer) = call(node, "publish", json!({"topic": "chat.r", "data": n})).await;
        epoch = answer["position"]["epoch"].as_str().unwrap().to_string();
    }
    let (mut stream, opened) =
        subscribe(node, &format!("topic=chat.r&epoch={epoch}&offset=1")).await;
    assert_eq!(opened, json!({"recovered": true}));
    for n in 2..=3 {
        let publication = stream.next_event().await.unwrap().json().unwrap();
        assert_eq!(publication["data"], n);
        assert_eq!(publication["offset"], n);
    }
}

#[tokio::test]
async fn bad_requests_and_missing_keys_are_refused_in_words() {
    let cluster = node().await;
    let node = &cluster[0];
    let refused = |path: &'static str, headers: Vec<(&'static str, &'static str)>| async move {
        match SseClient::connect_with_headers(node.admin, path, &headers).await {
            Err(SseError::Refused { status, body }) => {
                let body: Value = serde_json::from_str(&body).unwrap();
                (
                    status,
                    body["error"]["code"].as_str().unwrap().to_string(),
                    body,
                )
            }
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    };
    let (status, code, _) = refused("/api/subscribe?topic=chat.a", vec![]).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    let key = vec![("authorization", BEARER)];
    for (path, wanted) in [
        ("/api/subscribe?topic=*.a", "wildcard"),
        ("/api/subscribe?topic=_ctl.status", "reserved"),
        ("/api/subscribe?topic=chat.a&offset=3", "epoch and offset"),
        ("/api/subscribe", "topic"),
        ("/api/subscribe?topic=live.a&epoch=x&offset=1", "history"),
    ] {
        let (status, _, body) = refused(path, key.clone()).await;
        assert!(status == 400 || status == 412, "{path}: {status} {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(wanted), "{path}: {message}");
    }
    let metrics = ferrocast_testkit::http_get(node.admin, "/metrics")
        .await
        .unwrap()
        .1;
    let refused = metric(
        &metrics,
        "ferrocast_api_requests_total",
        &[("method", "subscribe"), ("transport", "http")],
    );
    assert_eq!(refused, 5.0, "{metrics}");
}

#[tokio::test]
async fn a_stream_ends_with_an_error_event_when_the_node_drains() {
    let cluster = Cluster::memory()
        .args(&["--api-key", KEY, "--drain-timeout", "2s"])
        .start()
        .await;
    let node = &cluster[0];
    let (mut stream, _) = subscribe(node, "topic=news.a").await;
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGTERM).unwrap();
    let ended = stream.next_event().await.unwrap();
    assert_eq!(ended.event, "error");
    let error = ended.json().unwrap();
    assert_eq!(error["error"]["code"], "unavailable");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("draining"),
        "{error}"
    );
    let after = stream.next_within(WAIT).await;
    assert!(matches!(after, Err(SseError::Ended)), "{after:?}");
}

#[tokio::test]
async fn config_shows_the_effective_configuration_without_secrets() {
    let node = Node::spawn_with_config(
        node_binary(),
        NAMESPACES,
        &[
            "--api-key",
            KEY,
            "--node-id",
            "cfg",
            // Never reachable: the node starts unready, the API answers.
            "--backplane",
            "redis://operator:hunter2-secret@127.0.0.1:1/0",
        ],
    );
    let (status, text) = http_request(
        node.admin,
        "GET",
        "/api/config",
        &[("authorization", BEARER)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["node"], "cfg");
    let toml = config["toml"].as_str().unwrap();
    assert!(toml.contains("node_id = \"cfg\""), "{toml}");
    assert!(
        toml.contains("backplane = \"redis://***@127.0.0.1:1/0\""),
        "{toml}"
    );
    assert!(toml.contains("[namespaces.chat]"), "{toml}");
    assert_eq!(
        config["namespaces"],
        json!([{"name": "chat", "history_size": 100, "history_ttl_seconds": 600,
                "presence": false, "anonymous": true, "client_publish": true}])
    );
    let (status, _) = http_request(node.admin, "GET", "/api/config", &[], "")
        .await
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn info_tells_connections_by_protocol_messages_and_the_backplane_state() {
    let cluster = node().await;
    let node = &cluster[0];
    let mut client = JsonClient::connect(&node.ws_url()).await.unwrap();
    client.subscribe("chat.i").await.unwrap();
    client.publish("chat.i", json!(1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, info) = call(node, "info", json!({})).await;
        let own = &info["nodes"][0];
        if own["messages_delivered"].as_u64() >= Some(1) {
            assert_eq!(own["connections_by_protocol"], json!({"json": 1}));
            assert_eq!(own["messages_published"], 1);
            assert_eq!(own["backplane_up"], true);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_admin_ui_is_on_the_admin_listener_only_and_open_on_loopback_without_a_key() {
    let cluster = Cluster::memory().start().await;
    let node = &cluster[0];
    let (status, page) = ferrocast_testkit::http_get(node.admin, "/ui/")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>ferrocast admin</title>"), "{page}");
    let (status, info) = ferrocast_testkit::http_get(node.admin, "/api/info")
        .await
        .unwrap();
    assert_eq!(status, 200, "{info}");
    for path in ["/ui/", "/ui/app.js", "/api/info"] {
        let (status, _) = ferrocast_testkit::http_get(node.public, path)
            .await
            .unwrap();
        assert_eq!(status, 404, "{path} on the public listener");
    }
}
