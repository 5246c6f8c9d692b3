//! Socket.IO with the client nobody on the team wrote, unchanged:
//! `socket.io-client` 4.8 in Node.js and in headless Chromium, once per
//! forced transport (websocket, polling, polling upgraded to websocket),
//! against real nodes on real Redis; and through HAProxy balancing
//! round-robin with no affinity over three nodes on Redis and on NATS,
//! where the node holding the socket is killed with SIGKILL mid-stream and
//! the client recovers on another one (`socket.recovered`).
//!
//! Each test starts its nodes here and runs one scenario script from
//! `tests/socketio_clients/` (Node.js), which asserts what a user would
//! see: every numbered message once, in order; acks with positions; the
//! client's JSON and binary publications on a JSON WebSocket client. The
//! scripts drive Chromium with the browser tests' harness
//! (crates/ferrocast-web/tests/browser/harness.mjs).
//!
//! Install what they need with
//! `npm ci --prefix crates/ferrocast-server/tests/socketio_clients`,
//! `npm ci --prefix crates/ferrocast-web/tests/browser` and
//! `apt-get install chromium haproxy` (`.ci/test` does all of it when
//! missing). A missing tool fails the test with the command that installs
//! it; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrocast_testkit::{
    require_npm_package, Cluster, ClusterBuilder, HaProxy, Node, NodeScenario,
};

/// A scenario has its own deadline (harness.mjs `run`); this one also covers
/// a script that hangs before it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(200);
const NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-server/tests/socketio_clients";
const BROWSER_NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-web/tests/browser";

/// `orders` keeps history (what recovery replays from); publishing is not
/// rate-limited (the scenarios publish thousands of messages from one
/// connection).
const NAMESPACES: &str = "publish_rate = 0
[namespaces.orders]
history_size = 5000
history_ttl = \"5m\"
";

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/socketio_clients")
}

/// The browser tests' directory, whose harness and packages the scripts use.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ferrocast-web/tests/browser")
}

/// `node <args>` in `tests/socketio_clients/` against `nodes` (and
/// `proxy`); in Chromium when `chromium`. The packages it and the browser
/// harness need are checked first.
fn scenario(
    args: &[&str],
    nodes: &[Node],
    proxy: Option<&HaProxy>,
    chromium: bool,
) -> NodeScenario {
    require_npm_package(&scripts_dir(), "socket.io-client", NPM_INSTALL);
    // The harness imports playwright-core and ws, and the SDK (the JSON client).
    for package in ["playwright-core", "ws"] {
        require_npm_package(&browser_dir(), package, BROWSER_NPM_INSTALL);
    }
    let mut run = NodeScenario::new(&scripts_dir(), args).nodes(nodes);
    if let Some(proxy) = proxy {
        run = run.proxy(proxy);
    }
    if chromium {
        run = run.chromium(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser"));
    }
    run
}

/// The client on one node of two on Redis, the JSON client on the other.
async fn delivery(place: &str, transports: &str) {
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .start()
        .await;
    scenario(
        &["delivery.mjs", place, transports],
        cluster.nodes(),
        None,
        place == "chromium",
    )
    .run(SCRIPT_TIMEOUT)
    .await;
}

/// Three nodes on `backplane` behind round-robin HAProxy; the node holding
/// the socket is killed (haproxy.mjs).
async fn killed_behind_round_robin(backplane: ClusterBuilder, place: &str, transports: &str) {
    let cluster = backplane
        .nodes(&["a", "b", "c"])
        .config(NAMESPACES)
        .start()
        .await;
    let proxy = HaProxy::start_round_robin(cluster.nodes());
    scenario(
        &["haproxy.mjs", place, transports],
        cluster.nodes(),
        Some(&proxy),
        place == "chromium",
    )
    .run(SCRIPT_TIMEOUT)
    .await;
}

/// The HS256 secret of the nodes that verify tokens.
const JWT_SECRET: &str = "socketio-clients-test-secret-of-32-bytes!";

#[tokio::test]
async fn node_socketio_client_authenticates_with_the_auth_payload_and_is_refused_without() {
    let namespaces = format!(
        "{NAMESPACES}[namespaces.members]\nanonymous = false\nhistory_size = 100\nhistory_ttl = \"5m\"\n"
    );
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(&namespaces)
        .file("jwt.secret", JWT_SECRET)
        .args(&["--jwt-hmac-secret-file", "jwt.secret"])
        .start()
        .await;
    scenario(&["auth.mjs"], cluster.nodes(), None, false)
        .env("FERROCAST_JWT_SECRET", JWT_SECRET)
        .run(SCRIPT_TIMEOUT)
        .await;
}

#[tokio::test]
async fn node_socketio_client_over_websocket_gets_1000_messages_once_in_order_and_publishes() {
    delivery("node", "websocket").await;
}

#[tokio::test]
async fn node_socketio_client_over_polling_gets_1000_messages_once_in_order_and_publishes() {
    delivery("node", "polling").await;
}

#[tokio::test]
async fn node_socketio_client_upgrading_polling_to_websocket_gets_1000_messages_once_in_order() {
    delivery("node", "polling,websocket").await;
}

#[tokio::test]
async fn chromium_socketio_client_over_websocket_gets_1000_messages_once_in_order_and_publishes() {
    delivery("chromium", "websocket").await;
}

#[tokio::test]
async fn chromium_socketio_client_over_polling_gets_1000_messages_once_in_order_and_publishes() {
    delivery("chromium", "polling").await;
}

#[tokio::test]
async fn chromium_socketio_client_upgrading_polling_to_websocket_gets_1000_messages_once_in_order()
{
    delivery("chromium", "polling,websocket").await;
}

#[tokio::test]
async fn chromium_page_on_redis_recovers_2000_messages_after_its_node_is_killed_over_websocket() {
    killed_behind_round_robin(Cluster::redis(), "chromium", "websocket").await;
}

#[tokio::test]
async fn chromium_page_on_redis_recovers_2000_messages_after_its_node_is_killed_over_polling() {
    killed_behind_round_robin(Cluster::redis(), "chromium", "polling").await;
}

#[tokio::test]
async fn chromium_page_on_nats_recovers_2000_messages_after_its_node_is_killed_over_websocket() {
    killed_behind_round_robin(Cluster::nats(), "chromium", "websocket").await;
}

#[tokio::test]
async fn chromium_page_on_nats_recovers_2000_messages_after_its_node_is_killed_over_polling() {
    killed_behind_round_robin(Cluster::nats(), "chromium", "polling").await;
}
