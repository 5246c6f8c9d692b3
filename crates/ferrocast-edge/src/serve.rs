//! The node's accept loop for its HTTP listeners (public and admin), in
//! place of `axum::serve`, which cannot bound how long a client takes to
//! send its request head.
//!
//! Each accepted TCP connection (with `TCP_NODELAY`) gets a task of its
//! own: the TLS handshake when the listener terminates TLS, then HTTP/1.1
//! through hyper with upgrades (WebSocket), the peer address as axum's
//! [`ConnectInfo`], and [`ServeSettings::handshake_timeout`] for the TLS
//! handshake and for every request head (a client that trickles its
//! headers, or an idle keep-alive connection, is cut). Accept errors (out of
//! file descriptors, ...) are counted and retried after a short pause.
//!
//! On shutdown the loop stops accepting, asks every connection to finish
//! its request in flight and close (hyper's graceful shutdown), and returns
//! when they have: WebSocket connections, already handed off to their
//! sessions, are not waited for (the edge drains them).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use ferrocast_core::metrics as names;

/// Largest request head (request line and headers); beyond it 431.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// First pause after a failed accept; doubled on each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How one listener serves its connections.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Names the listener in logs and in the `listener` label of its
    /// metrics (`public`, `admin`).
    pub name: &'static str,
    /// How long a client has for the TLS handshake, and then for the head of
    /// each request (from when the node waits for it): a client that
    /// trickles its request, or opens connections and sends nothing, holds
    /// a socket and a task no longer than this.
    pub handshake_timeout: Duration,
    /// The TLS configuration, when the listener terminates TLS itself
    /// ([`crate::tls::server_config`]); its ALPN is set to `http/1.1`.
    pub tls: Option<rustls::ServerConfig>,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and returns once every connection finished its request in
/// flight (upgraded connections are not waited for).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let ServeSettings {
        name,
        handshake_timeout,
        tls,
    } = settings;
    let tls = tls.map(|mut config| {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    });
    let connection = Connection {
        listener: name,
        router,
        handshake_timeout,
        stop: CancellationToken::new(),
    };
    let tasks = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            // The connection failed before it was accepted: nothing to wait for.
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                counter!(names::ACCEPT_ERRORS, "listener" => name).increment(1);
                tracing::warn!(listener = name, %error, pause_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        // Small writes (replies, deliveries) go out at once.
        let _ = tcp.set_nodelay(true);
        tasks.spawn(connection.clone().run(tcp, peer, tls.clone()));
    }
    drop(listener);
    connection.stop.cancel();
    tasks.close();
    tasks.wait().await;
}

/// Errors of `accept` that concern one connection, not the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// What serves one accepted connection; one clone per connection.
#[derive(Debug, Clone)]
struct Connection {
    /// The `listener` label.
    listener: &'static str,
    /// The listener's routes.
    router: Router,
    /// For the TLS handshake and each request head.
    handshake_timeout: Duration,
    /// Cancelled when the listener shuts down: finish the request in flight
    /// and close.
    stop: CancellationToken,
}

impl Connection {
    async fn run(self, tcp: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.serve_http(tcp, peer).await;
        };
        let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp));
        let handshake = tokio::select! {
            handshake = handshake => handshake,
            () = self.stop.cancelled() => return,
        };
        match handshake {
            Ok(Ok(stream)) => self.serve_http(stream, peer).await,
            Ok(Err(error)) => {
                tracing::debug!(listener = self.listener, %peer, %error, "TLS handshake failed");
                self.count_failure("tls");
            }
            Err(_) => self.count_failure("timeout"),
        }
    }

    /// Serves HTTP/1.1 requests, and an upgrade, on `io`.
    async fn serve_http<I>(self, io: I, peer: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // A head timeout after a request is the end of an idle keep-alive
        // connection, not a failed handshake.
        let served = Arc::new(AtomicBool::new(false));
        let service = {
            let router = self.router.clone();
            let served = served.clone();
            service_fn(move |mut request: Request<Incoming>| {
                served.store(true, Ordering::Relaxed);
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().call(request)
            })
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            .max_header_size(MAX_HEAD_BYTES);
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut connection = pin!(connection);
        let mut stopping = pin!(self.stop.cancelled());
        let mut asked_to_stop = false;
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                () = &mut stopping, if !asked_to_stop => {
                    asked_to_stop = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        };
        let Err(error) = result else {
            return;
        };
        let first_request = !served.load(Ordering::Relaxed);
        if error.is_timeout() && first_request {
            self.count_failure("timeout");
        } else if error.is_parse_too_large() {
            self.count_failure("too_large");
        } else if error.is_parse() {
            self.count_failure("malformed");
        }
        tracing::debug!(listener = self.listener, %peer, %error, "HTTP connection ended with an error");
    }

    fn count_failure(&self, reason: &'static str) {
        counter!(names::HANDSHAKE_FAILURES, "listener" => self.listener, "reason" => reason)
            .increment(1);
    }
}
