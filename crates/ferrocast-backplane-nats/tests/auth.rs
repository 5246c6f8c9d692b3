//! Credentials in the URL against a nats-server that requires them (and has
//! no JetStream, which history then reports), and settings that are refused
//! before connecting.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferrocast_backplane_nats::{NatsBackplane, NatsSettings};
use ferrocast_core::backplane::{Backplane, BackplaneError, HistoryPolicy};
use ferrocast_testkit::free_port;

use common::{publication, Sink};

/// A nats-server with the given auth arguments, killed on drop.
struct AuthServer {
    port: u16,
    child: Child,
}

impl AuthServer {
    fn start(auth: &[&str]) -> Self {
        let port = free_port();
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(auth)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            assert!(child.try_wait().unwrap().is_none(), "nats-server exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }

    fn url(&self, credentials: &str) -> String {
        format!("nats://{credentials}@127.0.0.1:{}", self.port)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything logged by this test binary.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("ferrocast_backplane_nats=debug")
            .with_writer(move || Capture(sink.clone()))
            .init();
        logs
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_with(needle: &str) -> Vec<String> {
    let logs = captured_logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Two nodes authenticate with `good`; a third with `bad` stays down, logs a
/// clear error naming its node and never the secret.
async fn check_auth(server: &AuthServer, good: &str, bad: &str, secret: &str, name: &str) {
    captured_logs();
    let timeout = Duration::from_secs(2);
    let a_id = common::node_id(&format!("{name}-a"));
    let a = common::start_up(
        a_id.clone(),
        common::settings(&server.url(good), timeout),
        Sink::new(),
    )
    .await;
    let sink = Sink::new();
    let b = common::start_up(
        common::node_id(&format!("{name}-b")),
        common::settings(&server.url(good), timeout),
        sink.clone(),
    )
    .await;
    b.subscribe(vec![common::filter("auth.x")]).await.unwrap();
    a.publish(publication("auth.x", "1", &a_id), None)
        .await
        .unwrap();
    assert!(sink.wait_for(1, Duration::from_secs(5)).await);

    let wrong_id = common::node_id(&format!("{name}-wrong"));
    let wrong = NatsBackplane::start(
        wrong_id.clone(),
        common::settings(&server.url(bad), timeout),
        Sink::new(),
    )
    .await
    .unwrap();
    let mut health = wrong.health();
    assert!(
        common::wait_health(&mut health, true, Duration::from_secs(3))
            .await
            .is_none(),
        "wrong credentials reported up"
    );
    let refused = log_lines_with(&wrong_id);
    assert!(
        refused
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("refused the credentials")),
        "no clear error logged for wrong credentials: {refused:#?}"
    );
    let errors = refused.iter().filter(|l| l.contains("ERROR")).count();
    assert_eq!(
        errors, 1,
        "the error is logged once, not per attempt: {refused:#?}"
    );
    assert!(
        matches!(
            wrong
                .publish(publication("auth.x", "2", &wrong_id), None)
                .await,
            Err(BackplaneError::Unavailable(_))
        ),
        "publish without a connection"
    );
    let logs = captured_logs().lock().unwrap();
    let text = String::from_utf8_lossy(&logs);
    assert!(!text.contains(secret), "a secret appeared in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_auth() {
    let server = AuthServer::start(&["--auth", "s3cr3t-token"]);
    check_auth(
        &server,
        "s3cr3t-token",
        "wrong-token",
        "s3cr3t-token",
        "token",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_and_password_auth() {
    // The password has characters that must be percent-encoded in a URL.
    let server = AuthServer::start(&["--user", "ferro", "--pass", "p@ss/w:rd"]);
    check_auth(
        &server,
        "ferro:p%40ss%2Fw%3Ard",
        "ferro:nope",
        "p@ss/w:rd",
        "userpass",
    )
    .await;
}

/// These servers run without JetStream: history fails with a reason that
/// tells the operator what to change, publications without history go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_without_jetstream_says_so() {
    let server = AuthServer::start(&["--auth", "t0ken"]);
    let id = common::node_id("nojs");
    let backplane = common::start_up(
        id.clone(),
        common::settings(&server.url("t0ken"), Duration::from_secs(5)),
        Sink::new(),
    )
    .await;
    let policy = HistoryPolicy {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    let published = backplane
        .publish(publication("nojs.t", "1", &id), Some(policy))
        .await;
    let read = backplane.history(&common::topic("nojs.t"), policy, 0).await;
    for result in [published.map(|_| ()), read.map(|_| ())] {
        match result {
            Err(BackplaneError::Rejected(reason)) => {
                assert!(
                    reason.contains("JetStream") && reason.contains("-js"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    backplane
        .publish(publication("nojs.t", "1", &id), None)
        .await
        .unwrap();
}

async fn rejected(settings: NatsSettings) -> String {
    match NatsBackplane::start(common::node_id("bad"), settings, Sink::new()).await {
        Err(BackplaneError::Rejected(reason)) => reason,
        Err(other) => panic!("expected Rejected, got {other}"),
        Ok(backplane) => panic!("accepted: {backplane:?}"),
    }
}

#[tokio::test]
async fn invalid_settings_are_rejected() {
    let ok = || common::settings("nats://127.0.0.1:4222", Duration::from_secs(5));
    let dir = std::env::temp_dir().join(format!("ferrocast-nats-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();

    for url in [
        "",
        "http://127.0.0.1:4222",
        "nats://127.0.0.1:port",
        "nats://:secret@h:1",
    ] {
        let reason = rejected(NatsSettings {
            url: url.to_string(),
            ..ok()
        })
        .await;
        assert!(!reason.contains("secret"), "{reason}");
    }
    for prefix in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
        let reason = rejected(NatsSettings {
            subject_prefix: prefix.to_string(),
            ..ok()
        })
        .await;
        assert!(reason.contains("prefix"), "{reason}");
    }
    let reason = rejected(NatsSettings {
        credentials_file: Some(dir.join("missing.creds")),
        ..ok()
    })
    .await;
    assert!(reason.contains("missing.creds"), "{reason}");
    let reason = rejected(NatsSettings {
        credentials_file: Some(garbage.clone()),
        ..ok()
    })
    .await;
    assert!(reason.contains("credentials file"), "{reason}");
    rejected(NatsSettings {
        url: "nats://user:pw@127.0.0.1:4222".to_string(),
        credentials_file: Some(garbage.clone()),
        ..ok()
    })
    .await;
    let reason = rejected(NatsSettings {
        tls_ca_file: Some(dir.join("missing.pem")),
        ..ok()
    })
    .await;
    assert!(reason.contains("CA file"), "{reason}");
    let reason = rejected(NatsSettings {
        tls_ca_file: Some(garbage),
        ..ok()
    })
    .await;
    assert!(reason.contains("no PEM certificate"), "{reason}");
    rejected(NatsSettings {
        timeout: Duration::ZERO,
        ..ok()
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starting does not wait for NATS: a backplane pointed at nothing starts,
/// reports down, and refuses work with `Unavailable`.
#[tokio::test]
async fn starts_without_nats() {
    let port = free_port();
    let id = common::node_id("nobody");
    let backplane = NatsBackplane::start(
        id.clone(),
        common::settings(&format!("nats://127.0.0.1:{port}"), Duration::from_secs(1)),
        Sink::new(),
    )
    .await
    .unwrap();
    let mut health = backplane.health();
    assert!(!*health.borrow());
    assert!(
        common::wait_health(&mut health, true, Duration::from_millis(500))
            .await
            .is_none()
    );
    assert!(matches!(
        backplane.publish(publication("x.y", "1", &id), None).await,
        Err(BackplaneError::Unavailable(_))
    ));
    assert!(matches!(
        backplane.subscribe(vec![common::filter("x.y")]).await,
        Err(BackplaneError::Unavailable(_))
    ));
}
