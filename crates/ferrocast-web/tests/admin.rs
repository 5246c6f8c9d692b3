//! The admin UI (crates/ferrocast-web/admin) in Debian's Chromium against
//! two real nodes on Redis with an API key: `tests/browser/admin.mjs` logs
//! in, reads the Cluster page while test clients connect, publishes from the
//! Topic page to a real WebSocket client, follows a client's publication in
//! the live tail, disconnects a user on both nodes, shows the Config page,
//! and kills a node; it saves a screenshot of each page at 1280×800 under
//! `target/tmp/browser/`. The Server-Sent Events reader and the other pure
//! parts run under `node --test` (`admin.test.mjs`).
//!
//! Needs what `tests/browser.rs` needs (`npm ci --prefix
//! crates/ferrocast-web/tests/browser`, `apt-get install chromium`).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrocast_testkit::{require_npm_package, Cluster, NodeScenario};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);
const API_KEY: &str = "admin-ui-test-key-0123456789";
/// The HS256 secret that names the test clients' users.
const JWT_SECRET: &str = "admin-ui-scenario-secret-0123456789abcdef";
/// `chat` keeps history and presence; `live` keeps neither.
const NAMESPACES: &str = "[namespaces.chat]
history_size = 100
history_ttl = \"5m\"
presence = true
";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `node <args>` in `tests/browser/`, its packages checked first.
fn node_script(args: &[&str]) -> NodeScenario {
    for package in ["playwright-core", "ws"] {
        require_npm_package(
            &browser_dir(),
            package,
            "npm ci --prefix crates/ferrocast-web/tests/browser",
        );
    }
    NodeScenario::new(&browser_dir(), args)
}

#[tokio::test]
async fn the_admin_ui_shows_the_cluster_follows_a_topic_and_acts_on_users() {
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .file("secret", JWT_SECRET)
        .args(&["--api-key", API_KEY, "--jwt-hmac-secret-file", "secret"])
        .args(&["--allow-anonymous"])
        .start()
        .await;
    // Screenshots stay out of git, under target/.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    node_script(&["admin.mjs"])
        .nodes(cluster.nodes())
        .chromium(&artifacts)
        .env("FERROCAST_API_KEY", API_KEY)
        .env("FERROCAST_JWT_SECRET", JWT_SECRET)
        .run(SCRIPT_TIMEOUT)
        .await;
}

#[tokio::test]
async fn the_admin_ui_unit_tests_pass_under_node() {
    node_script(&["--test", "admin.test.mjs"])
        .run(SCRIPT_TIMEOUT)
        .await;
}
