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
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use ferrocast_testkit::{require, run_script, Cluster};

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

/// Runs `node <args>` in `tests/browser/` with `env`, and asserts it passed.
async fn node_script(args: &[&str], env: &[(&str, String)]) {
    let mut node = Command::new("node");
    node.arg("--version");
    require(node, "Node.js", "apt-get install -y nodejs npm");
    let mut command = Command::new("node");
    command.args(args).current_dir(browser_dir());
    for (key, value) in env {
        command.env(key, value);
    }
    let run = run_script(command, SCRIPT_TIMEOUT).await;
    run.assert_success(&args.join(" "));
    eprintln!("{}", run.report(&args.join(" ")));
}

#[tokio::test]
async fn the_admin_ui_shows_the_cluster_follows_a_topic_and_acts_on_users() {
    let chromium = "/usr/bin/chromium";
    let mut version = Command::new(chromium);
    version.arg("--version");
    require(version, "Chromium", "apt-get install -y chromium");
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed; run: npm ci --prefix crates/ferrocast-web/tests/browser"
    );
    let cluster = Cluster::redis()
        .nodes(&["a", "b"])
        .config(NAMESPACES)
        .file("secret", JWT_SECRET)
        .args(&["--api-key", API_KEY, "--jwt-hmac-secret-file", "secret"])
        .args(&["--allow-anonymous"])
        .start()
        .await;
    let nodes: Vec<_> = cluster
        .nodes()
        .iter()
        .zip(["a", "b"])
        .map(|(node, id)| {
            json!({
                "name": id,
                "id": id,
                "pid": node.pid(),
                "public": node.public.to_string(),
                "admin": node.admin.to_string(),
            })
        })
        .collect();
    // Screenshots stay out of git, under target/.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&artifacts).unwrap();
    node_script(
        &["admin.mjs"],
        &[
            ("FERROCAST_NODES", serde_json::to_string(&nodes).unwrap()),
            ("FERROCAST_ARTIFACTS", artifacts.display().to_string()),
            ("FERROCAST_API_KEY", API_KEY.to_string()),
            ("FERROCAST_JWT_SECRET", JWT_SECRET.to_string()),
            ("CHROMIUM", chromium.to_string()),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_admin_ui_unit_tests_pass_under_node() {
    node_script(&["--test", "admin.test.mjs"], &[]).await;
}
