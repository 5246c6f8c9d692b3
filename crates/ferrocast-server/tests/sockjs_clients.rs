//! SockJS with clients nobody on the team wrote, unchanged: `sockjs-client`
//! 1.6 carrying `@stomp/stompjs` 7 (`webSocketFactory: () => new
//! SockJS(url, null, { transports: [t] })`), once per forced transport,
//! in Node.js and in headless Chromium, against real nodes on real Redis;
//! and through HAProxy balancing round-robin with no affinity, where each
//! request of a session may land on another node, and the node owning the
//! session is killed mid-stream.
//!
//! Each test starts its nodes here and runs one scenario script from
//! `tests/sockjs_clients/` (Node.js), which asserts what a user would see:
//! every numbered message once, in order; RECEIPTs; a SEND reaching a JSON
//! WebSocket client on another node. The scripts drive Chromium with the
//! browser tests' harness (crates/ferrocast-web/tests/browser/harness.mjs).
//!
//! Install what they need with
//! `npm ci --prefix crates/ferrocast-server/tests/sockjs_clients`,
//! `npm ci --prefix crates/ferrocast-web/tests/browser` and
//! `apt-get install chromium haproxy` (`.ci/test` does all of it when
//! missing). A missing tool fails the test with the command that installs
//! it; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrocast_testkit::{free_port, require_npm_package, Cluster, HaProxy, NodeScenario};

/// A scenario has its own deadline (harness.mjs `run`); this one also covers
/// a script that hangs before it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(200);
const NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-server/tests/sockjs_clients";
const BROWSER_NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-web/tests/browser";

/// `orders` keeps history (what `ferrocast-since` resumes from); publishing
/// is not rate-limited (the scenarios publish thousands of messages from one
/// connection).
const NAMESPACES: &str = "publish_rate = 0
[namespaces.orders]
history_size = 5000
history_ttl = \"5m\"
";

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sockjs_clients")
}

/// The browser tests' directory, whose harness and packages the scripts use.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ferrocast-web/tests/browser")
}

/// `node <args>` in `tests/sockjs_clients/`, the packages it and the
/// browser harness need checked first.
fn scenario(args: &[&str]) -> NodeScenario {
    for package in ["sockjs-client", "@stomp/stompjs"] {
        require_npm_package(&scripts_dir(), package, NPM_INSTALL);
    }
    // The harness imports playwright-core and ws, and the SDK (the JSON client).
    for package in ["playwright-core", "ws"] {
        require_npm_package(&browser_dir(), package, BROWSER_NPM_INSTALL);
    }
    NodeScenario::new(&scripts_dir(), args)
}

/// Node.js: the client on one node of two on Redis, the JSON publisher on
/// the other.
async fn in_node(transport: &str) {
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .start()
        .await;
    scenario(&["delivery.mjs", "node", transport])
        .nodes(cluster.nodes())
        .run(SCRIPT_TIMEOUT)
        .await;
}

/// Chromium: as [`in_node`], the client in a page. The page's static server
/// listens on a port chosen here, so that the nodes' `--sockjs-client-url`
/// (the sockjs-client that the iframe transports' `iframe.html` loads) can
/// point at its copy of `sockjs.min.js`.
async fn in_chromium(transport: &str) {
    let port = free_port();
    let client_url = format!("http://127.0.0.1:{port}/sockjs-client/sockjs.min.js");
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .args(&["--sockjs-client-url", &client_url])
        .start()
        .await;
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    scenario(&["delivery.mjs", "chromium", transport])
        .nodes(cluster.nodes())
        .chromium(&artifacts)
        .env("FERROCAST_STATIC_PORT", port.to_string())
        .run(SCRIPT_TIMEOUT)
        .await;
}

/// Three nodes on Redis behind round-robin HAProxy; `mode` is `spread` or
/// `kill` (haproxy.mjs).
async fn through_round_robin_haproxy(mode: &str, transport: &str) {
    let cluster = Cluster::redis()
        .nodes(&["a", "b", "c"])
        .config(NAMESPACES)
        .start()
        .await;
    let proxy = HaProxy::start_round_robin(cluster.nodes());
    scenario(&["haproxy.mjs", mode, transport])
        .nodes(cluster.nodes())
        .proxy(&proxy)
        .run(SCRIPT_TIMEOUT)
        .await;
}

#[tokio::test]
async fn node_stompjs_over_sockjs_websocket_gets_1000_messages_once_in_order_and_sends() {
    in_node("websocket").await;
}

#[tokio::test]
async fn node_stompjs_over_sockjs_xhr_streaming_gets_1000_messages_once_in_order_and_sends() {
    in_node("xhr-streaming").await;
}

#[tokio::test]
async fn node_stompjs_over_sockjs_xhr_polling_gets_1000_messages_once_in_order_and_sends() {
    in_node("xhr-polling").await;
}

#[tokio::test]
async fn chromium_stompjs_over_sockjs_websocket_gets_1000_messages_once_in_order_and_sends() {
    in_chromium("websocket").await;
}

#[tokio::test]
async fn chromium_stompjs_over_sockjs_xhr_streaming_gets_1000_messages_once_in_order_and_sends() {
    in_chromium("xhr-streaming").await;
}

#[tokio::test]
async fn chromium_stompjs_over_sockjs_xhr_polling_gets_1000_messages_once_in_order_and_sends() {
    in_chromium("xhr-polling").await;
}

#[tokio::test]
async fn chromium_stompjs_over_sockjs_eventsource_gets_1000_messages_once_in_order_and_sends() {
    in_chromium("eventsource").await;
}

#[tokio::test]
async fn chromium_stompjs_over_sockjs_iframe_htmlfile_gets_1000_messages_once_in_order_and_sends() {
    in_chromium("iframe-htmlfile").await;
}

#[tokio::test]
async fn chromium_stompjs_over_sockjs_jsonp_polling_gets_1000_messages_once_in_order_and_sends() {
    in_chromium("jsonp-polling").await;
}

#[tokio::test]
async fn round_robin_haproxy_spreads_an_xhr_streaming_session_over_three_nodes_exactly_once() {
    through_round_robin_haproxy("spread", "xhr-streaming").await;
}

#[tokio::test]
async fn round_robin_haproxy_spreads_an_xhr_polling_session_over_three_nodes_exactly_once() {
    through_round_robin_haproxy("spread", "xhr-polling").await;
}

#[tokio::test]
async fn xhr_streaming_through_round_robin_haproxy_recovers_every_message_after_the_owner_is_killed(
) {
    through_round_robin_haproxy("kill", "xhr-streaming").await;
}

#[tokio::test]
async fn xhr_polling_through_round_robin_haproxy_recovers_every_message_after_the_owner_is_killed()
{
    through_round_robin_haproxy("kill", "xhr-polling").await;
}
