//! The JavaScript SDK (crates/ferrocast-web/js) in a real browser against
//! real nodes: Debian's Chromium driven by playwright-core, pages served as
//! static files, nodes on real Redis or NATS, HAProxy where a balancer is the
//! point. Each test starts its nodes here and runs one scenario script from
//! `tests/browser/` (Node.js), which drives the pages and asserts what a
//! person would see: messages arrive, in order, once.
//!
//! Install what the scripts need with
//! `npm ci --prefix crates/ferrocast-web/tests/browser` and
//! `apt-get install chromium` (`.ci/test` does both when missing). A missing
//! tool fails the test with the command that installs it; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrocast_testkit::{
    require_npm_package, Cluster, ClusterBuilder, HaProxy, Node, NodeScenario,
};

/// A scenario has its own deadline (harness.mjs `run`); this one also covers
/// a script that hangs before it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(200);
const NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-web/tests/browser";

/// Namespaces of the scenarios: `orders` and `chat` keep history (`chat` has
/// presence too), `room` has presence; publishing is not rate-limited (the
/// scenarios publish thousands of messages from one connection).
const NAMESPACES: &str = "publish_rate = 0
[namespaces.orders]
history_size = 5000
history_ttl = \"5m\"
[namespaces.chat]
history_size = 1000
history_ttl = \"5m\"
presence = true
[namespaces.room]
presence = true
";

/// The HS256 secret of the token scenario (at least 32 bytes).
const JWT_SECRET: &str = "browser-scenario-secret-0123456789abcdef";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `node <script>` in `tests/browser/`, its packages checked first.
fn node_script(args: &[&str]) -> NodeScenario {
    for package in ["playwright-core", "ws", "typescript"] {
        require_npm_package(&browser_dir(), package, NPM_INSTALL);
    }
    NodeScenario::new(&browser_dir(), args)
}

/// Runs the Chromium scenario `tests/browser/<script>` against `nodes` (and
/// `proxy`), with `env`.
async fn scenario(script: &str, nodes: &[Node], proxy: Option<&HaProxy>, env: &[(&str, &str)]) {
    // Screenshots stay out of git, under target/.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let mut run = node_script(&[script]).nodes(nodes).chromium(&artifacts);
    if let Some(proxy) = proxy {
        run = run.proxy(proxy);
    }
    for (key, value) in env {
        run = run.env(key, value);
    }
    run.run(SCRIPT_TIMEOUT).await;
}

fn with_namespaces(builder: ClusterBuilder, names: &[&str]) -> ClusterBuilder {
    builder.nodes(names).config(NAMESPACES)
}

#[tokio::test]
async fn a_page_subscribes_and_another_publishes_wildcard_unsubscribe_presence_history() {
    let cluster = with_namespaces(Cluster::redis(), &["a", "b"]).start().await;
    scenario(
        "basic.mjs",
        cluster.nodes(),
        None,
        &[("FERROCAST_HISTORY", "1")],
    )
    .await;
}

#[tokio::test]
async fn the_example_chat_page_loads_the_sdk_from_the_node_and_chats_across_nodes() {
    let cluster = with_namespaces(Cluster::redis(), &["a", "b"]).start().await;
    scenario("chat.mjs", cluster.nodes(), None, &[]).await;
}

/// 3 nodes behind HAProxy; the page's node is killed or drained mid-stream.
async fn failover(cluster: ClusterBuilder, how: &str, transports: &str) {
    let cluster = with_namespaces(cluster, &["a", "b", "c"])
        .args(&["--drain-timeout", "3s"])
        .start()
        .await;
    let proxy = if transports == "sse" {
        HaProxy::start_refusing_websocket(cluster.nodes())
    } else {
        HaProxy::start(cluster.nodes())
    };
    scenario(
        "failover.mjs",
        cluster.nodes(),
        Some(&proxy),
        &[("FAILOVER", how), ("TRANSPORTS", transports)],
    )
    .await;
}

#[tokio::test]
async fn a_page_behind_haproxy_gets_2000_messages_exactly_once_across_a_node_kill_on_redis() {
    failover(Cluster::redis(), "kill", "websocket").await;
}

#[tokio::test]
async fn a_page_behind_haproxy_gets_2000_messages_exactly_once_across_a_node_kill_on_nats() {
    failover(Cluster::nats(), "kill", "websocket").await;
}

#[tokio::test]
async fn a_page_behind_haproxy_gets_2000_messages_exactly_once_across_a_drain_on_redis() {
    failover(Cluster::redis(), "drain", "websocket").await;
}

#[tokio::test]
async fn a_page_behind_haproxy_gets_2000_messages_exactly_once_across_a_drain_on_nats() {
    failover(Cluster::nats(), "drain", "websocket").await;
}

#[tokio::test]
async fn a_page_whose_proxy_refuses_websocket_falls_back_to_sse_and_survives_a_node_kill() {
    failover(Cluster::redis(), "kill", "sse").await;
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_with_get_token_without_a_gap() {
    let cluster = with_namespaces(Cluster::redis(), &["a", "b"])
        .file("jwt.secret", JWT_SECRET)
        .args(&["--jwt-hmac-secret-file", "jwt.secret"])
        .start()
        .await;
    scenario(
        "token.mjs",
        cluster.nodes(),
        None,
        &[("FERROCAST_JWT_SECRET", JWT_SECRET)],
    )
    .await;
}

#[tokio::test]
async fn two_tabs_in_shared_mode_use_one_connection_and_survive_one_closing() {
    let cluster = with_namespaces(Cluster::memory(), &["a"]).start().await;
    scenario("shared.mjs", cluster.nodes(), None, &[]).await;
}

#[tokio::test]
async fn a_reloaded_page_resumes_from_its_stored_position_without_loss() {
    let cluster = with_namespaces(Cluster::redis(), &["a", "b"]).start().await;
    scenario("reload.mjs", cluster.nodes(), None, &[]).await;
}

/// permessage-deflate with Node.js `ws` and Chromium, their default offers:
/// a compressed 1 KiB JSON feed arrives intact for under 40 % of the bytes,
/// compressed client messages are inflated, a decompression bomb is refused
/// with 1009 and counted while the others go on.
#[tokio::test]
async fn compressing_clients_get_the_feed_for_fewer_bytes_and_a_bomb_is_refused() {
    let cluster = with_namespaces(Cluster::memory(), &["a"]).start().await;
    scenario("compression.mjs", cluster.nodes(), None, &[]).await;
}

/// The SDK's pure parts (backoff, positions, frames) and the client against
/// a scripted WebSocket, under Node's test runner.
#[tokio::test]
async fn the_sdk_unit_tests_pass_under_node() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    NodeScenario::new(&js, &["--test", "test/"])
        .run(Duration::from_secs(60))
        .await;
}

/// `tsc --noEmit` checks the hand-written index.d.ts against typecheck.ts.
#[tokio::test]
async fn index_d_ts_type_checks_the_documented_usage() {
    node_script(&["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"])
        .run(Duration::from_secs(60))
        .await;
}
