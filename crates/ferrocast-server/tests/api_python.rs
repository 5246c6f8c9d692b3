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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use ferrocast_testkit::{
    http_get, metric, wait_readyz, ClientError, JsonClient, Node, RedisServer,
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
    let outcome = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .stdin(Stdio::null())
        .output();
    match outcome {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Python packages grpcio and grpcio-tools are missing; install them from the workspace root with: {PIP_INSTALL}\n(python3 -c 'import grpc, grpc_tools.protoc': {}: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("")
        ),
        Err(e) => panic!("cannot run python3 ({e}); install Python 3, then: {PIP_INSTALL}"),
    }
}

/// What a finished (or killed) script left.
struct Run {
    /// `None`: killed after [`SCRIPT_TIMEOUT`].
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    command: String,
}

impl Run {
    fn report(&self) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => format!("killed after {SCRIPT_TIMEOUT:?}"),
        };
        format!(
            "{}: {status} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.elapsed, self.stdout, self.stderr
        )
    }

    fn assert_success(&self) {
        assert!(
            self.status.is_some_and(|s| s.success()),
            "{}",
            self.report()
        );
        eprintln!("{}", self.report());
    }
}

/// Runs the script against `grpc` with `args`, the key in its environment,
/// with a deadline; its output is read by threads so it never blocks.
fn run_script(grpc: std::net::SocketAddr, args: &[String]) -> Run {
    let script = script_dir().join("api_client.py");
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--target", &grpc.to_string()])
        .args(args)
        .env("FERROCAST_API_KEY", API_KEY)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start python3 {}: {e}", script.display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed: started.elapsed(),
        command: format!("api_client.py {}", args.join(" ")),
    }
}

/// [`run_script`] off the async runtime.
async fn script(grpc: std::net::SocketAddr, args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || run_script(grpc, &args))
        .await
        .unwrap()
}

/// A config file (a namespace with history and presence) and the JWT
/// secret file, in a directory of this run.
fn files() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ferrocast-api-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        "[namespaces.chat]\nhistory_size = 100\nhistory_ttl = \"10m\"\npresence = true\n",
    )
    .unwrap();
    let secret = dir.join("jwt-secret");
    std::fs::write(&secret, format!("{JWT_SECRET}\n")).unwrap();
    (config, secret)
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
    let redis = RedisServer::start();
    let (config, secret) = files();
    let nodes = NODES.map(|name| {
        Node::spawn(
            env!("CARGO_BIN_EXE_ferrocast"),
            &[
                "--backplane",
                &redis.url(),
                "--node-id",
                name,
                "--api-key",
                API_KEY,
                "--config",
                config.to_str().unwrap(),
                "--jwt-hmac-secret-file",
                secret.to_str().unwrap(),
            ],
        )
    });
    for node in &nodes {
        wait_readyz(node.admin, 200).await;
    }
    let [a, b] = &nodes;
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
    let run = script(
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
    run.assert_success();
    let position: Value = serde_json::from_str(run.stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("publish printed no position ({e}): {}", run.report()));
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
    let run = script(
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
    run.assert_success();

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
