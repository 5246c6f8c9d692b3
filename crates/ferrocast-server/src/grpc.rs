//! Serves the gRPC server API, with TLS when configured.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

use ferrocast_core::metrics as names;

/// TLS connections that finished their handshake and wait for the server.
const READY_BACKLOG: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop`, over TLS with `tls` (its ALPN
/// set to `h2`); a client gets `handshake_timeout` for the TLS handshake.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<rustls::ServerConfig>,
    handshake_timeout: Duration,
    stop: CancellationToken,
) {
    let served = match tls {
        None => {
            // Small unary answers must not wait for Nagle's algorithm.
            let incoming = TcpListenerStream::new(listener).map(|accepted| {
                if let Ok(tcp) = &accepted {
                    let _ = tcp.set_nodelay(true);
                }
                accepted
            });
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
        Some(mut config) => {
            config.alpn_protocols = vec![b"h2".to_vec()];
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let (ready, incoming) = mpsc::channel(READY_BACKLOG);
            tokio::spawn(accept_tls(
                listener,
                acceptor,
                handshake_timeout,
                ready,
                stop.clone(),
            ));
            router
                .serve_with_incoming_shutdown(ReceiverStream::new(incoming), stop.cancelled_owned())
                .await
        }
    };
    if let Err(error) = served {
        tracing::error!(%error, "gRPC listener failed");
    }
}

/// Accepts TCP connections and hands each to `ready` once its TLS handshake
/// is done; one slow or failed handshake holds nobody else up.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    ready: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                counter!(names::ACCEPT_ERRORS, "listener" => "grpc").increment(1);
                tracing::warn!(%error, "gRPC listener cannot accept; retrying");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let reason = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send(Ok(stream)).await;
                    return;
                }
                Ok(Err(_)) => "tls",
                Err(_) => "timeout",
            };
            counter!(names::HANDSHAKE_FAILURES, "listener" => "grpc", "reason" => reason)
                .increment(1);
        });
    }
}
