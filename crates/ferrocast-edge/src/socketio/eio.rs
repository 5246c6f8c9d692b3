//! One Engine.IO session: the state its transports share with the task that
//! runs it ([`EioSession`]), and the task's side ([`EioSocket`], a
//! [`Socket`], so that the session runs the same `session::serve` as every
//! other kind).
//!
//! The task writes Engine.IO packets to an outbox, bounded in bytes
//! (`outbound_queue_bytes`): past it the task stops taking from its
//! outbound queue, which then fills and closes the session as a slow
//! consumer. Whatever transport holds the session takes the outbox: a poll
//! request all of it as one payload, the WebSocket packet by packet. The
//! client's packets reach the task through a channel of [`INBOUND_MESSAGES`];
//! a POST (or the WebSocket's reader) waits while it is full.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use axum::extract::ws::{CloseFrame, Message};
use futures::{Sink, Stream};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::engine::{farewell, Packet};
use crate::owner::ClaimClock;
use crate::session::Socket;
use crate::settings::EdgeSettings;
use crate::ws::WsError;

/// Client messages that may wait for the session's task.
pub(super) const INBOUND_MESSAGES: usize = 16;

/// Which transport takes the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    Polling,
    /// A WebSocket answered the probe; polling still takes the outbox until
    /// the client sends the upgrade packet.
    Upgrading,
    WebSocket,
}

/// What a session's transports and its task share.
#[derive(Debug)]
pub(super) struct EioSession {
    state: Mutex<State>,
    /// Most bytes the outbox holds before the task waits.
    outbox_limit: usize,
    /// When this node last claimed the session in owner routing (`relay`).
    pub(super) claimed: ClaimClock,
}

#[derive(Debug)]
struct State {
    outbox: VecDeque<Packet>,
    outbox_bytes: usize,
    transport: Transport,
    /// The poll request attached, by number.
    poller: Option<u64>,
    next_poller: u64,
    /// The transport waiting for something to send.
    reader_waker: Option<Waker>,
    /// The task, waiting for room in the outbox.
    writer_waker: Option<Waker>,
    /// Where the client's messages go; taken when the session ends.
    inbound: Option<mpsc::Sender<Message>>,
    /// The session ended: the last packet a poll gets (`1`, or `6` when
    /// the client closed it), and the WebSocket close frame.
    ended: Option<(Packet, Option<CloseFrame>)>,
    /// The client broke the session (overlapping polls, a broken packet) or
    /// went away: the task's stream ends with an error that says so.
    gone: bool,
}

/// The client broke the protocol or went away; the session is over.
#[derive(Debug)]
pub(super) struct Ended;

impl EioSession {
    /// A new session on long-polling, and the receiving end of its inbound
    /// channel.
    pub(super) fn new(settings: &EdgeSettings) -> (Self, mpsc::Receiver<Message>) {
        let (inbound, messages) = mpsc::channel(INBOUND_MESSAGES);
        let session = Self {
            state: Mutex::new(State {
                outbox: VecDeque::new(),
                outbox_bytes: 0,
                transport: Transport::Polling,
                poller: None,
                next_poller: 0,
                reader_waker: None,
                writer_waker: None,
                inbound: Some(inbound),
                ended: None,
                gone: false,
            }),
            outbox_limit: settings.outbound_queue_bytes,
            // Claimed by the handshake that creates it.
            claimed: ClaimClock::claimed_now(),
        };
        (session, messages)
    }

    pub(super) fn transport(&self) -> Transport {
        self.state.lock().transport
    }

    /// Whether the session still takes the client's packets.
    pub(super) fn is_open(&self) -> bool {
        let state = self.state.lock();
        state.ended.is_none() && !state.gone
    }

    /// Hands one packet of the client to the session; `Err` when the
    /// session is over (or the packet ended it).
    pub(super) async fn receive(&self, packet: Packet) -> Result<(), Ended> {
        let message = match packet {
            Packet::Message(text) => Message::Text(text.into()),
            Packet::Binary(bytes) => Message::Binary(bytes),
            Packet::Pong(_) => Message::Pong(Default::default()),
            Packet::Ping(data) => {
                self.push(Packet::Pong(data));
                return Ok(());
            }
            Packet::Noop => return Ok(()),
            Packet::Close => {
                self.end(Packet::Noop, None);
                return Err(Ended);
            }
            Packet::Open(_) | Packet::Upgrade => {
                self.break_off();
                return Err(Ended);
            }
        };
        let inbound = {
            let state = self.state.lock();
            state.inbound.clone().filter(|_| state.ended.is_none())
        };
        let inbound = inbound.ok_or(Ended)?;
        if inbound.capacity() == 0 {
            metrics::counter!(ferrocast_core::metrics::LIMIT_HITS, "limit" => "socketio_inbound")
                .increment(1);
        }
        inbound.send(message).await.map_err(|_| Ended)
    }

    /// The client broke the protocol (or went away): the session ends, a
    /// pending poll gets the close packet.
    pub(super) fn break_off(&self) {
        let mut state = self.state.lock();
        state.gone = true;
        state.inbound = None;
        if state.ended.is_none() {
            state.ended = Some((Packet::Close, None));
        }
        Self::wake_reader(&mut state);
    }

    /// Ends the session with `last` for a pending poll.
    fn end(&self, last: Packet, frame: Option<CloseFrame>) {
        let mut state = self.state.lock();
        state.inbound = None;
        if state.ended.is_none() {
            state.ended = Some((last, frame));
        }
        Self::wake_reader(&mut state);
    }

    fn push(&self, packet: Packet) {
        let mut state = self.state.lock();
        if state.ended.is_some() {
            return;
        }
        state.outbox_bytes += packet.size();
        state.outbox.push_back(packet);
        Self::wake_reader(&mut state);
    }

    /// Attaches a poll request; a second one while one waits breaks the
    /// session (the protocol allows one poll at a time).
    pub(super) fn attach_poller(&self) -> Result<u64, Ended> {
        let mut state = self.state.lock();
        // An ended session is gone once a poll took its last packets.
        let over = state.ended.is_some() && state.outbox.is_empty();
        if state.transport == Transport::WebSocket || over {
            return Err(Ended);
        }
        if state.poller.is_some() {
            drop(state);
            self.break_off();
            return Err(Ended);
        }
        let number = state.next_poller;
        state.next_poller += 1;
        state.poller = Some(number);
        Ok(number)
    }

    /// Detaches poll request `number` (answered, or its client went away).
    pub(super) fn detach_poller(&self, number: u64) {
        let mut state = self.state.lock();
        if state.poller == Some(number) {
            state.poller = None;
            state.reader_waker = None;
        }
    }

    /// What poll request `number` answers: the whole outbox, the last
    /// packet of an ended session, or a noop once the session moved to a
    /// WebSocket; `Pending` while there is nothing.
    pub(super) fn poll_payload(&self, number: u64, cx: &mut Context<'_>) -> Poll<Vec<Packet>> {
        let mut state = self.state.lock();
        if state.poller != Some(number) {
            return Poll::Ready(vec![Packet::Noop]);
        }
        let mut packets = Vec::new();
        if state.transport != Transport::WebSocket {
            packets = Self::take(&mut state);
        }
        if let Some((last, _)) = &state.ended {
            packets.push(last.clone());
        } else if state.transport == Transport::WebSocket && packets.is_empty() {
            packets.push(Packet::Noop);
        }
        if packets.is_empty() {
            state.reader_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(packets)
    }

    /// What the WebSocket sends next: packets, or `Err` with the close
    /// frame once the session ended.
    pub(super) fn poll_websocket(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Vec<Packet>, Option<CloseFrame>>> {
        let mut state = self.state.lock();
        let packets = Self::take(&mut state);
        if !packets.is_empty() {
            return Poll::Ready(Ok(packets));
        }
        if let Some((_, frame)) = &state.ended {
            return Poll::Ready(Err(frame.clone()));
        }
        state.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn take(state: &mut State) -> Vec<Packet> {
        if state.outbox.is_empty() {
            return Vec::new();
        }
        state.outbox_bytes = 0;
        if let Some(writer) = state.writer_waker.take() {
            writer.wake();
        }
        state.outbox.drain(..).collect()
    }

    /// A WebSocket answered the probe: a noop ends the pending poll, so
    /// that the client can pause polling and upgrade. `false` when the
    /// session cannot be upgraded (already upgrading or upgraded).
    pub(super) fn probe(&self) -> bool {
        let mut state = self.state.lock();
        if state.transport != Transport::Polling || state.ended.is_some() {
            return false;
        }
        state.transport = Transport::Upgrading;
        state.outbox_bytes += 1;
        state.outbox.push_back(Packet::Noop);
        Self::wake_reader(&mut state);
        true
    }

    /// The probing WebSocket went away before the upgrade packet: polling
    /// goes on, and may probe again.
    pub(super) fn cancel_upgrade(&self) {
        let mut state = self.state.lock();
        if state.transport == Transport::Upgrading {
            state.transport = Transport::Polling;
        }
    }

    /// The client sent the upgrade packet: the WebSocket takes the outbox.
    pub(super) fn upgrade(&self) {
        let mut state = self.state.lock();
        state.transport = Transport::WebSocket;
        Self::wake_reader(&mut state);
    }

    fn wake_reader(state: &mut State) {
        if let Some(waker) = state.reader_waker.take() {
            waker.wake();
        }
    }
}

/// The task's side of a session: its client's messages in, its packets
/// out to the outbox. Dropped when the task ends, which ends the session.
pub(super) struct EioSocket {
    session: std::sync::Arc<EioSession>,
    messages: mpsc::Receiver<Message>,
    /// Forgets the session in the endpoint's directory when the task ends.
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl EioSocket {
    pub(super) fn new(
        session: std::sync::Arc<EioSession>,
        messages: mpsc::Receiver<Message>,
        on_drop: Box<dyn FnOnce() + Send>,
    ) -> Self {
        Self {
            session,
            messages,
            on_drop: Some(on_drop),
        }
    }
}

impl Stream for EioSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        {
            let state = self.session.state.lock();
            if state.gone {
                // Counted as a client that went away, not one that closed.
                let gone = axum::Error::new(WsError::Closed);
                return Poll::Ready(Some(Err(gone)));
            }
            if state.ended.is_some() {
                return Poll::Ready(None);
            }
        }
        self.messages.poll_recv(cx).map(|message| message.map(Ok))
    }
}

impl Sink<Message> for EioSocket {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        let mut state = self.session.state.lock();
        if state.ended.is_none() && state.outbox_bytes >= self.session.outbox_limit {
            state.writer_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        let packet = match message {
            Message::Text(text) => Packet::Message(text.as_str().to_owned()),
            Message::Binary(bytes) => Packet::Binary(bytes),
            Message::Ping(_) => Packet::Ping(String::new()),
            Message::Pong(_) => return Ok(()),
            Message::Close(frame) => {
                self.session.end(Packet::Close, frame);
                return Ok(());
            }
        };
        self.session.push(packet);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl Socket for EioSocket {
    /// The client answers the node's Engine.IO ping (`2`) with a pong (`3`).
    const ANSWERS_PINGS: bool = true;

    /// The close packet to a pending poll, after [`farewell`]'s packet.
    fn send_close(
        &mut self,
        frame: CloseFrame,
    ) -> impl std::future::Future<Output = Result<(), axum::Error>> + Send {
        if let Some(packet) = farewell(&frame) {
            self.session.push(packet);
        }
        self.session.end(Packet::Close, Some(frame));
        std::future::ready(Ok(()))
    }
}

impl Drop for EioSocket {
    fn drop(&mut self) {
        self.session.end(Packet::Close, None);
        if let Some(forget) = self.on_drop.take() {
            forget();
        }
    }
}
