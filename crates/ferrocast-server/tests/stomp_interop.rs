//! STOMP over WebSocket with clients nobody on the team wrote: @stomp/stompjs 7
//! on Node (with `ws`) and stomp.py 9 (its WebSocket transport), each across
//! two real nodes on one real Redis; and a JSON client that receives what
//! stompjs published on the other node.
//!
//! The client scripts live in `tests/interop/` with their pinned dependencies.
//! Install them with `npm ci --prefix crates/ferrocast-server/tests/interop`
//! and `python3 -m pip install -r crates/ferrocast-server/tests/interop/requirements.txt`
//! (`.ci/test` does both when they are missing). A missing client fails the
//! test with the command that installs it; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use ferrocast_testkit::{require, run_script, Cluster, JsonClient, ScriptRun};

/// A script has its own 30 s limit; this one also covers a script that hangs.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The nodes run with `--ping-interval 2s`, so they offer this in CONNECTED;
/// with clients asking for 1000,1000, heart-beats flow every 2 s both ways.
const HEART_BEAT: &str = "2000,2000";

const NPM_INSTALL: &str = "npm ci --prefix crates/ferrocast-server/tests/interop";
const PIP_INSTALL: &str =
    "python3 -m pip install -r crates/ferrocast-server/tests/interop/requirements.txt";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A topic no other run shares.
fn unique_topic(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("interop.{prefix}.p{}-{nanos}", std::process::id())
}

/// `program args` in `tests/interop/`.
fn interop_command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args).current_dir(interop_dir());
    command
}

fn require_stompjs() {
    require(
        interop_command("node", &["--version"]),
        "Node.js",
        &format!("apt-get install -y nodejs npm && {NPM_INSTALL}"),
    );
    let modules = interop_dir().join("node_modules");
    for package in ["@stomp/stompjs", "ws"] {
        assert!(
            modules.join(package).join("package.json").is_file(),
            "the npm package {package} is not installed in {}; install it from the workspace root with: {NPM_INSTALL}",
            modules.display()
        );
    }
}

fn require_stomppy() {
    require(
        interop_command(
            "python3",
            &["-c", "import stomp, websocket; stomp.WSStompConnection"],
        ),
        "the Python package stomp.py (with websocket-client)",
        PIP_INSTALL,
    );
}

/// Runs `program args` in `tests/interop/` with [`SCRIPT_TIMEOUT`].
async fn run_interop(program: &str, args: &[String]) -> ScriptRun {
    let mut command = interop_command(program, &[]);
    command
        .args(args)
        .env("FERROCAST_EXPECT_HEART_BEAT", HEART_BEAT)
        .env("PYTHONUNBUFFERED", "1");
    run_script(command, SCRIPT_TIMEOUT).await
}

/// Two nodes on one Redis, both ready.
async fn cluster() -> Cluster {
    Cluster::redis()
        .nodes(&["interop-a", "interop-b"])
        .args(&["--ping-interval", "2s"])
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_across_two_nodes_and_to_a_json_client() {
    require_stompjs();
    let cluster = cluster().await;
    let [node1, node2] = [&cluster[0], &cluster[1]];
    let topic = unique_topic("stompjs");
    let cross_topic = unique_topic("cross");

    // A JSON client on node 2 holds the topic stompjs ends with, on node 1.
    let mut json_client = JsonClient::connect(&node2.ws_url()).await.unwrap();
    let reply = json_client.subscribe(&cross_topic).await.unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");

    let args = vec![
        "stompjs.mjs".to_string(),
        node1.ws_url(),
        node2.ws_url(),
        topic,
        cross_topic.clone(),
    ];
    let command = format!("node {}", args.join(" "));
    let run = run_interop("node", &args).await;
    run.assert_success(&command);

    // stompjs sent the body as application/json: JSON clients get the value.
    let message = json_client.recv().await.unwrap_or_else(|e| {
        panic!(
            "the JSON client got nothing ({e:?})\n{}",
            run.report(&command)
        )
    });
    assert_eq!(
        message,
        json!({
            "op": "message",
            "topic": cross_topic,
            "data": {"from": "stompjs", "topic": cross_topic, "n": 42, "list": ["a", "b"]},
        })
    );
    json_client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomppy_across_two_nodes() {
    require_stomppy();
    let cluster = cluster().await;
    let [node1, node2] = [&cluster[0], &cluster[1]];
    let args = vec![
        "stomppy.py".to_string(),
        node1.ws_url(),
        node2.ws_url(),
        unique_topic("stomppy"),
    ];
    let command = format!("python3 {}", args.join(" "));
    let run = run_interop("python3", &args).await;
    run.assert_success(&command);
}
