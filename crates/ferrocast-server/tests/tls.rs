//! TLS on the node's listeners: `wss://` on the public one, `https://` on
//! the admin one, gRPC over TLS, with the self-signed test certificate of `tests/tls/`
//! (127.0.0.1 and localhost, valid until 2126).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use ferrocast_testkit::{http_get_on, metric, JsonClient, Node, WAIT};

const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/cert.pem");
const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/key.pem");

fn tls_node() -> Node {
    Node::spawn(
        env!("CARGO_BIN_EXE_ferrocast"),
        &[
            "--tls-cert",
            CERT,
            "--tls-key",
            KEY,
            "--admin-tls-cert",
            CERT,
            "--admin-tls-key",
            KEY,
            "--grpc-tls-cert",
            CERT,
            "--grpc-tls-key",
            KEY,
            "--handshake-timeout",
            "1s",
        ],
    )
}

/// A client that trusts the test certificate only.
fn connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(CERT).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls(addr: std::net::SocketAddr, name: &'static str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name).unwrap();
    connector().connect(name, tcp).await.unwrap()
}

async fn https_metrics(node: &Node) -> String {
    let stream = tls(node.admin, "localhost").await;
    let (status, body) = http_get_on(stream, "localhost", "/metrics").await.unwrap();
    assert_eq!(status, 200);
    body
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(node: &Node, name: &'static str) -> Wss {
    let stream = tls(node.public, name).await;
    let url = format!("wss://{name}:{}/ws", node.public.port());
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws
}

async fn request(ws: &mut Wss, request: Value) {
    ws.send(Message::text(request.to_string())).await.unwrap();
}

async fn next(ws: &mut Wss) -> Value {
    let message = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .expect("the connection is open")
        .unwrap();
    serde_json::from_str(message.to_text().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_and_metrics_over_https() {
    let node = tls_node();
    let mut subscriber = wss(&node, "localhost").await;
    let mut publisher = wss(&node, "127.0.0.1").await;
    request(
        &mut subscriber,
        json!({"op": "subscribe", "id": 1, "topic": "secure.a"}),
    )
    .await;
    assert_eq!(next(&mut subscriber).await, json!({"op": "ok", "id": 1}));
    request(
        &mut publisher,
        json!({"op": "publish", "id": 2, "topic": "secure.a", "data": {"x": 1}}),
    )
    .await;
    assert_eq!(next(&mut publisher).await, json!({"op": "ok", "id": 2}));
    assert_eq!(
        next(&mut subscriber).await,
        json!({"op": "message", "topic": "secure.a", "data": {"x": 1}})
    );

    // Plain WebSocket to the TLS port fails: counted as a TLS failure.
    let plain = JsonClient::connect(&node.ws_url()).await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that opens TCP and never starts TLS is cut after 1 s.
    let mut silent = TcpStream::connect(node.public).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("cut in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "{:?}",
        opened.elapsed()
    );

    let text = https_metrics(&node).await;
    assert_eq!(metric(&text, "ferrocast_connections", &[]), 2.0);
    let failures = |reason| {
        metric(
            &text,
            "ferrocast_handshake_failures_total",
            &[("listener", "public"), ("reason", reason)],
        )
    };
    assert_eq!(failures("tls"), 1.0);
    assert_eq!(failures("timeout"), 1.0);
}

#[tokio::test]
async fn the_grpc_api_over_tls() {
    use ferrocast_api::pb;
    use ferrocast_api::pb::ferrocast_api_client::FerrocastApiClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let node = tls_node();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(CERT).unwrap()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", node.grpc.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    // No API key is configured: the loopback listener serves without one.
    let mut api = FerrocastApiClient::new(channel);
    let info = api.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.nodes.len(), 1);

    // A plain-text gRPC client gets no service from the TLS listener.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", node.grpc.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    assert!(FerrocastApiClient::new(plain)
        .info(pb::InfoRequest {})
        .await
        .is_err());
}
