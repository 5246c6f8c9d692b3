//! `rediss://`: two nodes exchange a publication through a redis-server that
//! only speaks TLS, with a certificate from a test CA.
//!
//! A test binary of its own: it points `SSL_CERT_FILE` (read by the system
//! trust store loader) at the test CA before any thread starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use ferrocast_backplane_redis::{RedisBackplane, RedisSettings};
use ferrocast_core::backplane::{Backplane, PublicationSink};
use ferrocast_core::{NodeId, Publication};
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};

#[derive(Debug, Default)]
struct Count(AtomicUsize);

impl PublicationSink for Count {
    fn deliver(&self, _filter: &TopicFilter, _publication: Publication) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Kills the TLS redis-server on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a certificate for localhost/127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ferrocast test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[test]
fn publications_cross_a_tls_connection() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no openssl to make test certificates");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrocast-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    // Before any other thread exists (the runtime starts below).
    std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem"));

    let port = ferrocast_testkit::free_port();
    let path = |name: &str| dir.join(name).display().to_string();
    let _server = Server(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                &path("server.pem"),
                "--tls-key-file",
                &path("server.key"),
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let settings = RedisSettings {
            url: format!("rediss://localhost:{port}"),
            ..RedisSettings::default()
        };
        let received = Arc::new(Count::default());
        let subscriber =
            RedisBackplane::start(NodeId::from("tls-sub"), settings.clone(), received.clone())
                .await
                .unwrap();
        let publisher = RedisBackplane::start(
            NodeId::from("tls-pub"),
            settings,
            Arc::new(Count::default()),
        )
        .await
        .unwrap();
        for node in [&subscriber, &publisher] {
            let mut health = node.health();
            let up = tokio::time::timeout(Duration::from_secs(10), health.wait_for(|u| *u)).await;
            assert!(matches!(up, Ok(Ok(_))), "no TLS connection to redis");
        }
        let topic = Topic::parse("tls.t", MAX_TOPIC_LEN).unwrap();
        subscriber
            .subscribe(vec![TopicFilter::from(topic.clone())])
            .await
            .unwrap();
        publisher
            .publish(
                Publication::new(topic, Bytes::from_static(b"1"), NodeId::from("tls-pub")),
                None,
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while received.0.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "nothing arrived over TLS");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
