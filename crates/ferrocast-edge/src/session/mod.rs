//! One client session, whatever its transport and subprotocol.
//!
//! The transport is a [`Socket`]: the node's WebSocket (`crate::ws`; the
//! common case, and the one whose idle size the tests below keep small), or
//! an adapter of a SockJS transport (`crate::sockjs`). A single task serves
//! the connection ([`serve`]). It polls, in this order:
//! the writer (moves the connection's [`OutboundQueue`] to the socket in
//! batches), requests that finished waiting on the backplane, the socket, and
//! the keep-alive timers. What differs per subprotocol (decoding requests,
//! encoding batches, protocol heart-beats) is a [`Protocol`]; what a protocol
//! may do with its connection is a [`Link`]. Requests that wait on the
//! backplane run concurrently, up to [`MAX_IN_FLIGHT`]; past that the session
//! stops reading, which pushes back on the client through TCP.

mod close;
mod json;
mod keepalive;
mod link;
mod native;
mod proto;
mod protocol;
mod socket;
mod stomp;
mod writer;

pub(crate) use close::{code, shutdown_frame, End};
pub(crate) use json::JsonProtocol;
pub(crate) use link::Link;
pub(crate) use proto::ProtoProtocol;
pub(crate) use protocol::{count_error, text_or_binary, Heartbeat, Protocol};
pub(crate) use socket::Socket;
pub(crate) use stomp::{rand_suffix, StompProtocol};
pub(crate) use writer::{SharedFormat, Staged};

use close::{classify, close};
use keepalive::Keepalive;
use link::Done;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::{Context, Poll};
use writer::{pump, Writer};

use axum::extract::ws::Message;
use futures::StreamExt;
use metrics::{counter, gauge};
use tokio::sync::OwnedSemaphorePermit;

use ferrocast_core::metrics as names;
use ferrocast_core::{Outbound, OutboundQueue, WritePacing};

use crate::auth::Identity;

use crate::edge::Edge;

/// Requests of one connection that may wait on the backplane at once.
const MAX_IN_FLIGHT: usize = 256;

/// One connection: its socket, protocol state, queue and timers, polled by
/// hand as one future (no split socket, no per-source futures), which keeps
/// an idle connection small.
struct Session<P: Protocol, S: Socket> {
    socket: S,
    protocol: P,
    link: Link<P::Completion>,
    writer: Writer,
    keepalive: Keepalive,
}

/// Serves one connection over `socket` with `protocol` until it closes.
/// `permit` is the connection's slot under `max_connections`, released at the
/// end.
pub(crate) fn serve<P: Protocol, S: Socket>(
    edge: Edge,
    socket: S,
    permit: OwnedSemaphorePermit,
    protocol: P,
    identity: Option<Identity>,
) -> impl Future<Output = ()> + Send {
    let queue = Arc::new(OutboundQueue::new(edge.settings().outbound_queue_bytes));
    let label = S::label(P::LABEL);
    gauge!(names::CONNECTIONS, "protocol" => label).increment(1.0);
    counter!(names::CONNECTIONS_OPENED, "protocol" => label).increment(1);
    let settings = edge.settings();
    let pong_timeout = S::ANSWERS_PINGS.then_some(settings.pong_timeout);
    let keepalive = Keepalive::new(S::keepalive_interval(settings), pong_timeout);
    let writer = Writer::new(
        edge.delivery_metrics().clone(),
        WritePacing::new(settings.write_interval),
    );
    let mut session = Session {
        socket,
        protocol,
        link: Link::new(edge, queue, identity),
        writer,
        keepalive,
    };
    let closes_at = session.link.closes_at();
    session.keepalive.close_at(closes_at);
    // An async block that uses `session` in place: an `async fn` taking it
    // by value would hold it twice.
    async move {
        let end = poll_fn(|cx| session.poll_end(cx)).await;
        session.finish(end).await;
        drop(permit);
    }
}

impl<P: Protocol, S: Socket> Session<P, S> {
    /// Closes the connection for `end` and releases what it held.
    async fn finish(&mut self, end: End) {
        let edge = self.link.edge.clone();
        // Boxed: only a closing connection pays for the close handshake.
        Box::pin(close(&mut self.protocol, &edge, end, &mut self.socket)).await;
        self.protocol.on_end(&mut self.link);
        self.link.release();
        let label = S::label(P::LABEL);
        gauge!(names::CONNECTIONS, "protocol" => label).decrement(1.0);
        counter!(names::CONNECTIONS_CLOSED, "reason" => end.label()).increment(1);
        tracing::debug!(
            conn = self.link.conn(),
            protocol = label,
            reason = end.label(),
            "connection closed"
        );
    }

    /// Polls, in this order, the writer, requests that finished waiting on
    /// the backplane, the socket (unless [`MAX_IN_FLIGHT`] requests wait) and
    /// the keep-alive timer, until none has anything to do or the session
    /// ends.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let written = pump(
                cx,
                &mut self.socket,
                &mut self.writer,
                &mut self.protocol,
                &mut self.link.subscriptions,
            );
            match written {
                Poll::Ready(Ok(reason)) => return Poll::Ready(End::Queue(reason)),
                Poll::Ready(Err(error)) => return Poll::Ready(classify(error)),
                Poll::Pending => {}
            }
            if !self.writer.unsubscribed.is_empty() {
                for filter in std::mem::take(&mut self.writer.unsubscribed) {
                    if self.link.holds(&filter) {
                        self.protocol.on_server_unsubscribe(&mut self.link, &filter);
                    }
                }
                continue;
            }
            self.link.resync();
            if !self.link.in_flight.is_empty() {
                if let Poll::Ready(Some(done)) = self.link.in_flight.poll_next(cx) {
                    match done {
                        Done::Protocol(done) => self.protocol.on_completion(&mut self.link, done),
                        Done::Resynced(read) => self.link.subscriptions.resynced(read),
                    }
                    continue;
                }
            }
            if self.link.in_flight.len() < MAX_IN_FLIGHT {
                if let Poll::Ready(incoming) = self.socket.poll_next_unpin(cx) {
                    match incoming {
                        None => return Poll::Ready(End::ClientClosed),
                        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                            self.keepalive.heard(true);
                            if let Some(end) = self.protocol.on_message(&mut self.link, message) {
                                return Poll::Ready(end);
                            }
                            self.keepalive.agree(self.protocol.heartbeat());
                            self.keepalive.close_at(self.link.closes_at());
                        }
                        // Pings are answered and a close is echoed by the
                        // codec; after a close the stream ends.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {
                            self.keepalive.heard(false);
                        }
                        Some(Err(error)) => return Poll::Ready(classify(error)),
                    }
                    continue;
                }
            }
            if let Poll::Ready(due) = self.keepalive.poll_due(cx) {
                if due.deadline {
                    return Poll::Ready(End::TokenDeadline);
                }
                if due.timed_out {
                    return Poll::Ready(End::PingTimeout);
                }
                if due.ping {
                    // A full queue has already closed the session as slow.
                    let _ = self.link.queue().push(Outbound::Ping);
                }
                if due.heartbeat {
                    self.link.send(self.protocol.heartbeat_frame());
                }
                continue;
            }
            return Poll::Pending;
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function of five arguments returns.
    fn future_size<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    use crate::ws::WebSocket;

    /// An idle connection is mostly this future (plus the socket's kernel
    /// buffers and the codec's read buffer): a budget that keeps it from
    /// growing unnoticed (docs/benchmarks.md, memory per connection).
    #[test]
    fn the_state_of_an_idle_connection_stays_small() {
        let json = future_size(serve::<JsonProtocol, WebSocket>);
        let proto = future_size(serve::<ProtoProtocol, WebSocket>);
        let stomp = future_size(serve::<StompProtocol, WebSocket>);
        eprintln!("idle session futures: JSON {json} B, protobuf {proto} B, STOMP {stomp} B");
        assert!(json <= 768, "a JSON connection's future takes {json} bytes");
        assert!(
            proto <= 768,
            "a protobuf connection's future takes {proto} bytes"
        );
        assert!(
            stomp <= 1280,
            "a STOMP connection's future takes {stomp} bytes"
        );
    }
}
