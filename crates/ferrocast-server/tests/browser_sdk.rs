//! What the public listener serves to browsers (issue #15), on real nodes:
//! the SDK's entry and modules with their caching headers (304 for a held
//! version, 404 for another version's module), CORS for the SDK's fallback
//! (`GET /sse` and `POST /publish` from pages of other origins, with and
//! without `--allowed-origins`), and HAProxy refusing WebSocket upgrades
//! while the plain HTTP the fallback uses passes.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use ferrocast_testkit::{
    http_exchange, http_get, metric, ClientError, HaProxy, HttpResponse, JsonClient, Node,
    SseClient,
};

/// The origin a node is configured to allow, and one it refuses.
const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";
const JS: &str = "text/javascript; charset=utf-8";

fn node(args: &[&str]) -> Node {
    Node::spawn(env!("CARGO_BIN_EXE_ferrocast"), args)
}

async fn request(
    node: &Node,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    http_exchange(node.public, method, path, headers, body)
        .await
        .unwrap()
}

async fn get(node: &Node, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(node, "GET", path, headers, "").await
}

/// The directory of the modules that the entry re-exports,
/// `/ferrocast/<version>/`.
fn modules_dir(entry: &HttpResponse) -> String {
    let dir = entry
        .body
        .strip_prefix("export * from \".")
        .and_then(|rest| rest.strip_suffix("index.js\";\n"))
        .unwrap_or_else(|| panic!("not the entry module: {:?}", entry.body));
    let version = dir
        .strip_prefix("/ferrocast/")
        .and_then(|v| v.strip_suffix('/'))
        .unwrap();
    assert_eq!(version.len(), 12, "{version}");
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");
    dir.to_string()
}

async fn metrics(node: &Node) -> String {
    http_get(node.admin, "/metrics").await.unwrap().1
}

#[tokio::test]
async fn the_sdk_is_served_with_caching_headers_and_without_admission() {
    // Static files: an origin that may not connect still loads them.
    let node = node(&["--allowed-origins", APP]);
    let entry = get(&node, "/ferrocast.js", &[("Origin", EVIL)]).await;
    assert_eq!(entry.status, 200, "{entry:?}");
    assert_eq!(entry.header("content-type"), Some(JS));
    assert_eq!(entry.header("cache-control"), Some("no-cache"));
    assert_eq!(entry.header("access-control-allow-origin"), Some("*"));
    assert_eq!(entry.header("x-content-type-options"), Some("nosniff"));
    let etag = entry.header("etag").unwrap().to_string();
    let dir = modules_dir(&entry);

    // Every module the SDK loads, including the worker it starts by URL.
    for file in ["index.js", "shared-worker.js"] {
        let module = get(&node, &format!("{dir}{file}"), &[]).await;
        assert_eq!(module.status, 200, "{file}: {module:?}");
        assert_eq!(module.header("content-type"), Some(JS));
        assert_eq!(
            module.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(module.header("etag"), Some(etag.as_str()));
        assert_eq!(module.header("access-control-allow-origin"), Some("*"));
        assert!(!module.body.is_empty());
    }
    let typings = get(&node, "/ferrocast.d.ts", &[]).await;
    assert_eq!(typings.status, 200);
    assert_eq!(
        typings.header("content-type"),
        Some("application/typescript; charset=utf-8")
    );
    assert_eq!(typings.header("cache-control"), Some("no-cache"));
    let versioned = get(&node, &format!("{dir}index.d.ts"), &[]).await;
    assert_eq!(versioned.body, typings.body);

    // A browser that holds this version revalidates without a body.
    for path in ["/ferrocast.js".to_string(), format!("{dir}index.js")] {
        let held = get(&node, &path, &[("If-None-Match", &etag)]).await;
        assert_eq!(held.status, 304, "{path}: {held:?}");
        assert_eq!(held.body, "");
        assert_eq!(held.header("etag"), Some(etag.as_str()));
    }
    // A page of an older version asks for its modules: 404, naming the entry.
    let stale = get(&node, "/ferrocast/000000000000/index.js", &[]).await;
    assert_eq!(stale.status, 404, "{stale:?}");
    assert!(stale.body.contains("/ferrocast.js"), "{}", stale.body);
    assert!(stale.body.contains(&dir), "{}", stale.body);
    assert_eq!(get(&node, &format!("{dir}nope.js"), &[]).await.status, 404);

    let head = request(&node, "HEAD", "/ferrocast.js", &[], "").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("content-type"), Some(JS));

    let text = metrics(&node).await;
    let answered = |status| metric(&text, "ferrocast_web_requests_total", &[("status", status)]);
    assert_eq!(answered("304"), 2.0, "{text}");
    assert_eq!(answered("404"), 2.0, "{text}");
    assert!(answered("200") >= 5.0, "{text}");
    // Nothing was refused: the files are not behind admission.
    assert_eq!(
        metric(&text, "ferrocast_connections_rejected_total", &[]),
        0.0
    );
}

/// The CORS headers a preflight for `method` from `origin` gets.
fn assert_preflight_allows(answer: &HttpResponse, origin: &str, method: &str) {
    assert_eq!(answer.status, 204, "{answer:?}");
    names_origin(answer, origin);
    assert_eq!(answer.header("access-control-allow-methods"), Some(method));
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("authorization, content-type, last-event-id")
    );
    assert_eq!(answer.header("access-control-max-age"), Some("600"));
}

async fn preflight(node: &Node, path: &str, origin: &str, method: &str) -> HttpResponse {
    let headers = [
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
        (
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ),
    ];
    request(node, "OPTIONS", path, &headers, "").await
}

#[tokio::test]
async fn preflights_allow_the_allowed_origins_and_refuse_others() {
    let node = node(&["--allowed-origins", APP]);
    for (path, method) in [("/sse", "GET"), ("/publish", "POST")] {
        assert_preflight_allows(&preflight(&node, path, APP, method).await, APP, method);
        let refused = preflight(&node, path, EVIL, method).await;
        assert_eq!(refused.status, 403, "{refused:?}");
        assert_eq!(refused.body, "this origin may not connect to this node\n");
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }
    let text = metrics(&node).await;
    assert_eq!(
        metric(
            &text,
            "ferrocast_connections_rejected_total",
            &[("reason", "origin")]
        ),
        2.0,
        "{text}"
    );

    // Without --allowed-origins every origin is allowed, and named.
    let open = self::node(&[]);
    for (path, method) in [("/sse", "GET"), ("/publish", "POST")] {
        assert_preflight_allows(&preflight(&open, path, EVIL, method).await, EVIL, method);
    }
}

async fn publish(node: &Node, origin: Option<&str>, body: &str) -> HttpResponse {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(origin.map(|origin| ("Origin", origin)));
    request(node, "POST", "/publish", &headers, body).await
}

fn json_body(answer: &HttpResponse) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}

/// The CORS headers of an answer to an allowed `origin`, each once; never
/// `allow-credentials` (tokens, not cookies).
fn names_origin(answer: &HttpResponse, origin: &str) {
    let values = |name: &str| -> Vec<&str> {
        answer
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        values("access-control-allow-origin"),
        [origin],
        "{answer:?}"
    );
    assert_eq!(values("vary"), ["origin"], "{answer:?}");
    assert_eq!(answer.header("access-control-allow-credentials"), None);
}

#[tokio::test]
async fn answers_to_an_allowed_origin_name_it_on_success_and_on_error() {
    let node = node(&["--allowed-origins", APP]);
    let publication = r#"{"topic":"news.a","data":{"text":"hi"}}"#;

    // A stream and a publish from the allowed page.
    let stream =
        SseClient::connect_with_headers(node.public, "/sse?topic=news.a", &[("Origin", APP)])
            .await
            .unwrap();
    assert_eq!(stream.header("access-control-allow-origin"), Some(APP));
    assert_eq!(stream.header("vary"), Some("origin"));
    let published = publish(&node, Some(APP), publication).await;
    assert_eq!(published.status, 200, "{published:?}");
    names_origin(&published, APP);

    // Its errors too, so that the page can read why.
    let no_topic = get(&node, "/sse", &[("Origin", APP)]).await;
    assert_eq!(no_topic.status, 400, "{no_topic:?}");
    names_origin(&no_topic, APP);
    let no_data = publish(&node, Some(APP), r#"{"topic":"news.a"}"#).await;
    assert_eq!(no_data.status, 400);
    assert_eq!(json_body(&no_data)["code"], "bad_request");
    names_origin(&no_data, APP);

    // Another origin is refused, and its page may not read the answer.
    let refused = publish(&node, Some(EVIL), publication).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        json_body(&refused),
        json!({"op":"error","code":"forbidden","message":"this origin may not connect to this node"})
    );
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let refused_stream = get(&node, "/sse?topic=news.a", &[("Origin", EVIL)]).await;
    assert_eq!(refused_stream.status, 403);
    assert_eq!(refused_stream.header("access-control-allow-origin"), None);
    // A backend (no Origin) publishes as before.
    let backend = publish(&node, None, publication).await;
    assert_eq!(backend.status, 200, "{backend:?}");
    assert_eq!(backend.header("access-control-allow-origin"), None);

    // Without --allowed-origins any page's origin is named.
    let open = self::node(&[]);
    let anywhere = publish(&open, Some(EVIL), publication).await;
    assert_eq!(anywhere.status, 200, "{anywhere:?}");
    names_origin(&anywhere, EVIL);
}

#[tokio::test]
async fn haproxy_refusing_websocket_upgrades_passes_plain_http() {
    let node = node(&[]);
    let proxy = HaProxy::start_refusing_websocket([&node]);
    match JsonClient::connect(&proxy.ws_url()).await {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 403),
        other => panic!("the upgrade went through: {other:?}"),
    }
    let entry = http_exchange(proxy.addr(), "GET", "/ferrocast.js", &[], "")
        .await
        .unwrap();
    assert_eq!(entry.status, 200, "{entry:?}");
    let module = http_exchange(
        proxy.addr(),
        "GET",
        &format!("{}index.js", modules_dir(&entry)),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(module.status, 200);
    let mut stream = SseClient::connect(proxy.addr(), "/sse?topic=news.a", None)
        .await
        .unwrap();
    let subscribed = stream.next_event().await.unwrap();
    assert_eq!(subscribed.event, "subscribed", "{subscribed:?}");
    let published = http_exchange(
        proxy.addr(),
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        r#"{"topic":"news.a","data":7}"#,
    )
    .await
    .unwrap();
    assert_eq!(published.status, 200, "{published:?}");
    let message = stream.next_event().await.unwrap();
    assert_eq!(message.json().unwrap()["data"], 7);
    // The same node serves WebSocket without the rule.
    assert!(JsonClient::connect(&node.ws_url()).await.is_ok());
}
