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
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use ferrocast_testkit::{require, run_script, Cluster, ClusterBuilder, HaProxy, Node};

/// A scenario has its own deadline (harness.mjs `run`); this one also covers
/// a script that hangs before it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(200);
const NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-server/tests/socketio_clients";
const BROWSER_NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-web/tests/browser";
const CHROMIUM: &str = "/usr/bin/chromium";

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

/// Fails with the install command unless `package` is in `dir/node_modules`.
fn require_package(dir: &Path, package: &str, install: &str) {
    let manifest = dir.join("node_modules").join(package).join("package.json");
    assert!(
        manifest.is_file(),
        "the npm package {package} is not installed in {}; install it from the workspace root with: {install}",
        dir.display()
    );
}

fn require_tools(chromium: bool) {
    let mut node = Command::new("node");
    node.arg("--version");
    require(node, "Node.js", "apt-get install -y nodejs npm");
    require_package(&scripts_dir(), "socket.io-client", NPM_INSTALL);
    // The harness imports playwright-core and ws, and the SDK (the JSON client).
    for package in ["playwright-core", "ws"] {
        require_package(&browser_dir(), package, BROWSER_NPM_INSTALL);
    }
    if chromium {
        let mut browser = Command::new(CHROMIUM);
        browser.arg("--version");
        require(browser, "Chromium", "apt-get install -y chromium");
    }
}

/// Runs `node <args>` in `tests/socketio_clients/` against `nodes` (and
/// `proxy`).
async fn scenario(args: &[&str], nodes: &[Node], proxy: Option<&HaProxy>) {
    scenario_with(args, nodes, proxy, &[]).await;
}

/// [`scenario`] with `env` set for the script.
async fn scenario_with(
    args: &[&str],
    nodes: &[Node],
    proxy: Option<&HaProxy>,
    env: &[(&str, &str)],
) {
    let described: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            json!({
                "name": format!("node-{}", i + 1),
                "pid": node.pid(),
                "public": node.public.to_string(),
                "admin": node.admin.to_string(),
            })
        })
        .collect();
    let mut command = Command::new("node");
    command
        .args(args)
        .current_dir(scripts_dir())
        .env(
            "FERROCAST_NODES",
            serde_json::to_string(&described).unwrap(),
        )
        .env("CHROMIUM", CHROMIUM);
    if let Some(proxy) = proxy {
        command.env("FERROCAST_PROXY", proxy.addr().to_string());
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let described = format!("node {}", args.join(" "));
    let run = run_script(command, SCRIPT_TIMEOUT).await;
    run.assert_success(&described);
    eprintln!("{}", run.report(&described));
}

/// The client on one node of two on Redis, the JSON client on the other.
async fn delivery(place: &str, transports: &str) {
    require_tools(place == "chromium");
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .start()
        .await;
    scenario(&["delivery.mjs", place, transports], cluster.nodes(), None).await;
}

/// Three nodes on `backplane` behind round-robin HAProxy; the node holding
/// the socket is killed (haproxy.mjs).
async fn killed_behind_round_robin(backplane: ClusterBuilder, place: &str, transports: &str) {
    require_tools(place == "chromium");
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
    )
    .await;
}

/// The HS256 secret of the nodes that verify tokens.
const JWT_SECRET: &str = "socketio-clients-test-secret-of-32-bytes!";

#[tokio::test]
async fn node_socketio_client_authenticates_with_the_auth_payload_and_is_refused_without() {
    require_tools(false);
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
    scenario_with(
        &["auth.mjs"],
        cluster.nodes(),
        None,
        &[("FERROCAST_JWT_SECRET", JWT_SECRET)],
    )
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
