//! The server API with a client nobody on the team wrote: the stock Python
//! gRPC stack (grpcio, grpcio-tools) compiles `proto/` at run time and calls
//! a two-node cluster on a real Redis (`tests/api_python/api_client.py`).
//!
//! What Python publishes through node A reaches a WebSocket subscriber on
//! node B exactly (data, topic, offset, epoch); History over gRPC holds it
//! at that offset; Presence lists the subscriber (a user with a token) on
//! node B; Disconnect of that user through node A closes the WebSocket on
//! node B with 4002. A wrong or missing key is UNAUTHENTICATED, an invalid
//! topic INVALID_ARGUMENT (and the other error codes the script checks).
//!
//! Install the client with
//! `python3 -m pip install -r crates/ferrocast-server/tests/api_python/requirements.txt`
//! (`.ci/test` does when it is missing). A missing client fails the test
//! with that command; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use ferrocast_testkit::{
    http_get, metric, require, run_script, ClientError, Cluster, JsonClient, ScriptRun,
};

const PIP_INSTALL: &str =
    "python3 -m pip install -r crates/ferrocast-server/tests/api_python/requirements.txt";
/// The script bounds each of its waits (10 s) and calls (5 s); this also
/// covers a script that hangs.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(45);
const API_KEY: &str = "api-key-of-the-python-test-0123456789abcdef";
const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const TOPIC: &str = "chat.room1";
const NODES: [&str; 2] = ["pyapi-a", "pyapi-b"];
/// Published by Python as JSON text, received by the WebSocket client as the
/// `data` value (non-ASCII and nesting included).
const DATA: &str =
    r#"{"text":"héllo from Python ✓","n":42,"nested":{"ok":true,"list":[1,2.5,null]}}"#;

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_python")
}

/// Fails with the pip command unless python3 has grpcio and grpcio-tools.
fn require_grpcio() {
    let mut check = Command::new("python3");
    check.args(["-c", "import grpc, grpc_tools.protoc"]);
    require(
        check,
        "the Python packages grpcio and grpcio-tools",
        PIP_INSTALL,
    );
}

/// Runs the script against `grpc` with `args` and the key in its
/// environment, with a deadline; returns the command line and the run (whose
/// report is printed).
async fn script(grpc: std::net::SocketAddr, args: Vec<String>) -> (String, ScriptRun) {
    let mut command = Command::new("python3");
    command
        .arg(script_dir().join("api_client.py"))
        .args(["--target", &grpc.to_string()])
        .args(&args)
        .env("FERROCAST_API_KEY", API_KEY)
        .env("PYTHONUNBUFFERED", "1");
    let run = run_script(command, SCRIPT_TIMEOUT).await;
    let line = format!("api_client.py {}", args.join(" "));
    eprintln!("{}", run.report(&line));
    (line, run)
}

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 600}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The next object with `"op": op`; panics on a `message` when waiting for
/// something else (nothing but the one publication may arrive).
async fn next_op(client: &mut JsonClient, op: &str) -> Value {
    loop {
        let value = client.recv().await.unwrap();
        if value["op"] == op {
            return value;
        }
        assert_ne!(value["op"], "message", "unexpected publication: {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_backend_publishes_reads_history_and_presence_and_disconnects_a_user() {
    let started = Instant::now();
    require_grpcio();
    let cluster = Cluster::redis()
        .nodes(&NODES)
        .config("[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"10m\"\npresence = true\n")
        .file("jwt-secret", format!("{JWT_SECRET}\n"))
        .args(&["--api-key", API_KEY, "--jwt-hmac-secret-file", "jwt-secret"])
        .start()
        .await;
    let [a, b] = [&cluster[0], &cluster[1]];
    let user = format!("py-user-{}", std::process::id());

    // The subscriber: a user on node B.
    let bearer = format!("Bearer {}", token(&user));
    let mut subscriber =
        JsonClient::connect_with_headers(&b.ws_url(), &[("Authorization", &bearer)])
            .await
            .unwrap();
    let reply = subscriber.subscribe(TOPIC).await.unwrap();
    assert_eq!(reply["op"], "ok", "{reply}");
    // Its own join event comes once its presence entry is in the backplane.
    let joined = next_op(&mut subscriber, "join").await;
    assert_eq!(
        (&joined["user"], &joined["node"]),
        (&json!(user), &json!(NODES[1])),
        "{joined}"
    );
    let client_id = joined["client"].as_str().unwrap().to_string();

    // Python, through node A: the cluster as Info sees it, the error codes,
    // then one publication.
    let nodes_arg = NODES.join(",");
    let (command, run) = script(
        a.grpc,
        vec![
            "--nodes".into(),
            nodes_arg.clone(),
            "--topic".into(),
            TOPIC.into(),
            "--data".into(),
            DATA.into(),
            "info".into(),
            "errors".into(),
            "publish".into(),
        ],
    )
    .await;
    run.assert_success(&command);
    let position: Value = serde_json::from_str(run.stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| {
            panic!(
                "publish printed no position ({e}): {}",
                run.report(&command)
            )
        });
    let epoch = position["epoch"].as_str().unwrap().to_string();
    let offset = position["offset"].as_u64().unwrap();

    // The subscriber on node B received exactly that.
    let message = next_op(&mut subscriber, "message").await;
    let want: Value = serde_json::from_str(DATA).unwrap();
    assert_eq!(
        message,
        json!({"op": "message", "topic": TOPIC, "data": want, "offset": offset, "epoch": epoch}),
        "the WebSocket subscriber on node B got something else than Python published on node A"
    );

    // History, Presence and Disconnect, through node A.
    let (command, run) = script(
        a.grpc,
        vec![
            "--nodes".into(),
            nodes_arg,
            "--topic".into(),
            TOPIC.into(),
            "--data".into(),
            DATA.into(),
            "--epoch".into(),
            epoch.clone(),
            "--offset".into(),
            offset.to_string(),
            "--user".into(),
            user.clone(),
            "--client".into(),
            client_id.clone(),
            "--node".into(),
            NODES[1].into(),
            "history".into(),
            "presence".into(),
            "disconnect".into(),
        ],
    )
    .await;
    run.assert_success(&command);

    // The WebSocket on node B is closed with 4002, and nothing else came.
    let closed = loop {
        match subscriber.recv().await {
            Ok(value) => assert_ne!(value["op"], "message", "unexpected publication: {value}"),
            Err(ClientError::Closed(frame)) => break frame,
            Err(other) => panic!("the subscriber was not closed by Disconnect: {other:?}"),
        }
    };
    let (code, reason) = closed.expect("a close frame");
    assert_eq!(code, 4002, "close code after Disconnect ({reason})");

    // Node A counted the calls by method, transport and code.
    let (_, metrics) = http_get(a.admin, "/metrics").await.unwrap();
    let calls = |method: &str, code: &str| {
        metric(
            &metrics,
            "ferrocast_api_requests_total",
            &[("method", method), ("transport", "grpc"), ("code", code)],
        )
    };
    assert_eq!(calls("publish", "ok"), 1.0, "{metrics}");
    assert_eq!(calls("disconnect", "ok"), 1.0, "{metrics}");
    assert_eq!(calls("any", "unauthenticated"), 3.0, "{metrics}");
    assert!(calls("publish", "invalid_argument") >= 3.0, "{metrics}");
    assert_eq!(calls("disconnect", "not_found"), 1.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "ferrocast_api_request_duration_seconds_count",
            &[("method", "history")]
        ) >= 3.0,
        "{metrics}"
    );
    eprintln!("api_python: {:.1?} in all", started.elapsed());
}
