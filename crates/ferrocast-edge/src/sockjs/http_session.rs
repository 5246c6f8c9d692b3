//! One SockJS session served over HTTP requests: the state its requests
//! share with the task that runs it ([`HttpSession`]), the task's side
//! ([`HttpSocket`], a [`Socket`]) and a receiving request's side
//! ([`Receiving`]).
//!
//! The task writes the client's messages to an outbox, bounded in bytes
//! (`outbound_queue_bytes`): past it the task stops taking from its
//! outbound queue, which then fills and closes the session as a slow
//! consumer. A receiving request takes the whole outbox as one `a[…]` frame.
//! The client's messages reach the task through a channel of
//! [`INBOUND_MESSAGES`]; a send waits while it is full.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{Sink, Stream};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::frame;
use crate::owner::ClaimClock;
use crate::session::Socket;
use crate::settings::EdgeSettings;
use crate::ws::WsError;

/// Client messages that may wait for the session's task; each at most a
/// request body (`max_message_size`).
pub(super) const INBOUND_MESSAGES: usize = 16;

/// What a session's requests and its task share.
#[derive(Debug)]
pub(super) struct HttpSession {
    state: Mutex<State>,
    /// Most bytes the outbox holds before the task waits.
    outbox_limit: usize,
    /// When this node last claimed the session in owner routing (`relay`).
    pub(super) claimed: ClaimClock,
}

#[derive(Debug)]
struct State {
    /// Messages for the client, each quoted, in order.
    outbox: Vec<Bytes>,
    outbox_bytes: usize,
    /// A heartbeat is due on the attached receiving request.
    heartbeat_due: bool,
    /// The close frame, once the session closed: every later receiving
    /// request gets it, until the session is forgotten.
    close: Option<Bytes>,
    /// The receiving request attached, by number.
    receiver: Option<u64>,
    next_receiver: u64,
    /// Since when no receiving request is attached.
    idle_since: Option<Instant>,
    /// Where sends go; taken when the session is forgotten or interrupted,
    /// which ends the task's stream.
    inbound: Option<mpsc::Sender<String>>,
    /// The client is gone (forgotten, or its receiving request was cut):
    /// the task's stream ends with an error that says so.
    gone: bool,
    /// The attached receiving request, waiting for something to send.
    receiver_waker: Option<Waker>,
    /// The task, waiting for room in the outbox.
    writer_waker: Option<Waker>,
}

/// What a new receiving request gets first.
pub(super) enum Attach {
    /// It is attached; the session is new when `opened`.
    Attached { number: u64, opened: bool },
    /// It gets this frame (a close frame) and ends.
    Refused(Bytes),
}

impl HttpSession {
    /// A new session and the receiving end of its inbound channel.
    pub(super) fn new(settings: &EdgeSettings) -> (Self, mpsc::Receiver<String>) {
        let (inbound, messages) = mpsc::channel(INBOUND_MESSAGES);
        let session = Self {
            state: Mutex::new(State {
                outbox: Vec::new(),
                outbox_bytes: 0,
                heartbeat_due: false,
                close: None,
                receiver: None,
                next_receiver: 0,
                idle_since: Some(Instant::now()),
                inbound: Some(inbound),
                gone: false,
                receiver_waker: None,
                writer_waker: None,
            }),
            outbox_limit: settings.outbound_queue_bytes,
            claimed: ClaimClock::unclaimed(),
        };
        (session, messages)
    }

    /// Attaches a receiving request, or says why it cannot be. The first
    /// one always opens the session (its task may have closed it already,
    /// as the close service does: the close frame then follows the open
    /// one), and a closed session's messages still waiting go out before its
    /// close frame; after that, a closed session answers its close frame.
    pub(super) fn attach(&self) -> Attach {
        let mut state = self.state.lock();
        let settled = state.next_receiver > 0 && state.outbox.is_empty();
        if let Some(close) = state.close.as_ref().filter(|_| settled) {
            return Attach::Refused(close.clone());
        }
        if state.receiver.is_some() {
            return Attach::Refused(frame::close(2010, "Another connection still open"));
        }
        let number = state.next_receiver;
        state.next_receiver += 1;
        state.receiver = Some(number);
        state.idle_since = None;
        Attach::Attached {
            number,
            opened: number == 0,
        }
    }

    /// Where a send goes, while the session takes them.
    pub(super) fn inbound(&self) -> Option<mpsc::Sender<String>> {
        let state = self.state.lock();
        state
            .inbound
            .clone()
            .filter(|_| state.close.is_none() && !state.gone)
    }

    /// Whether no receiving request came for `delay`: the client is gone.
    pub(super) fn idle_for(&self, delay: std::time::Duration, now: Instant) -> bool {
        let state = self.state.lock();
        state.idle_since.is_some_and(|since| since + delay <= now)
    }

    /// The client is gone: the task's stream ends.
    pub(super) fn forget(&self) {
        let mut state = self.state.lock();
        state.gone = true;
        state.inbound = None;
    }

    /// Detaches receiving request `number`. Cut before its response ended
    /// (`interrupted`), the session closes: what it carried may be lost.
    fn detach(&self, number: u64, interrupted: bool) {
        let mut state = self.state.lock();
        if state.receiver != Some(number) {
            return;
        }
        state.receiver = None;
        state.receiver_waker = None;
        state.heartbeat_due = false;
        state.idle_since = Some(Instant::now());
        if interrupted && state.close.is_none() {
            state.close = Some(frame::close(1002, "Connection interrupted"));
            state.gone = true;
            state.inbound = None;
        }
    }

    /// What attached receiving request `number` sends next; `Pending` (its
    /// waker kept) while there is nothing.
    fn poll_frame(&self, number: u64, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        let mut state = self.state.lock();
        if state.receiver != Some(number) {
            return Poll::Ready(None);
        }
        if !state.outbox.is_empty() {
            let frame = frame::messages(&state.outbox);
            state.outbox.clear();
            state.outbox_bytes = 0;
            if let Some(writer) = state.writer_waker.take() {
                writer.wake();
            }
            return Poll::Ready(Some(Next::Messages(frame)));
        }
        if let Some(close) = &state.close {
            return Poll::Ready(Some(Next::Close(close.clone())));
        }
        if std::mem::take(&mut state.heartbeat_due) {
            return Poll::Ready(Some(Next::Messages(frame::HEARTBEAT)));
        }
        state.receiver_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn wake_receiver(state: &mut State) {
        if let Some(waker) = state.receiver_waker.take() {
            waker.wake();
        }
    }
}

enum Next {
    Messages(Bytes),
    Close(Bytes),
}

/// How a receiving request answers: one frame (polling), or frames until
/// `limit` bytes went out (streaming).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answering {
    pub(crate) streaming: bool,
    pub(crate) limit: usize,
}

/// A receiving request's frames, local to this node; detaches on drop.
pub(super) struct Receiving {
    session: std::sync::Arc<HttpSession>,
    number: u64,
    answering: Answering,
    /// The open frame, for the request that opened the session.
    open: Option<Bytes>,
    sent: usize,
    done: bool,
}

impl Receiving {
    pub(super) fn new(
        session: std::sync::Arc<HttpSession>,
        number: u64,
        opened: bool,
        answering: Answering,
    ) -> Self {
        Self {
            session,
            number,
            answering,
            open: opened.then_some(frame::OPEN),
            sent: 0,
            done: false,
        }
    }

    /// Ends the response after `frame` when it must: a polling request
    /// after one frame, a streaming one past its byte limit.
    fn count(&mut self, frame: Bytes) -> Bytes {
        self.sent += frame.len();
        if !self.answering.streaming || self.sent >= self.answering.limit {
            self.finish();
        }
        frame
    }

    fn finish(&mut self) {
        self.done = true;
        self.session.detach(self.number, false);
    }
}

impl Stream for Receiving {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(open) = self.open.take() {
            return Poll::Ready(Some(self.count(open)));
        }
        match self.session.poll_frame(self.number, cx) {
            Poll::Ready(Some(Next::Messages(frame))) => Poll::Ready(Some(self.count(frame))),
            Poll::Ready(Some(Next::Close(frame))) => {
                self.finish();
                Poll::Ready(Some(frame))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if !self.done {
            self.session.detach(self.number, true);
        }
    }
}

/// The task's side of a session: its client's messages in, its messages
/// out to the outbox.
pub(super) struct HttpSocket {
    session: std::sync::Arc<HttpSession>,
    messages: mpsc::Receiver<String>,
}

impl HttpSocket {
    pub(super) fn new(
        session: std::sync::Arc<HttpSession>,
        messages: mpsc::Receiver<String>,
    ) -> Self {
        Self { session, messages }
    }
}

impl Stream for HttpSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        {
            let state = self.session.state.lock();
            if state.gone {
                // Counted as a client that went away, not one that closed.
                let gone = axum::Error::new(WsError::Closed);
                return Poll::Ready(Some(Err(gone)));
            }
            if state.close.is_some() {
                return Poll::Ready(None);
            }
        }
        self.messages
            .poll_recv(cx)
            .map(|message| message.map(|text| Ok(Message::Text(text.into()))))
    }
}

impl Sink<Message> for HttpSocket {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        let mut state = self.session.state.lock();
        if state.close.is_none() && state.outbox_bytes >= self.session.outbox_limit {
            state.writer_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), axum::Error> {
        let mut state = self.session.state.lock();
        if state.close.is_some() {
            return Ok(());
        }
        let quoted = match message {
            Message::Text(text) => frame::quoted(text.as_str()),
            // SockJS carries text only; protocols here write UTF-8.
            Message::Binary(bytes) => frame::quoted(&String::from_utf8_lossy(&bytes)),
            Message::Ping(_) => {
                // A heartbeat is worth sending only to a request waiting now.
                if state.receiver.is_some() {
                    state.heartbeat_due = true;
                    HttpSession::wake_receiver(&mut state);
                }
                return Ok(());
            }
            Message::Pong(_) => return Ok(()),
            Message::Close(frame) => {
                state.close = Some(close_frame(frame));
                HttpSession::wake_receiver(&mut state);
                return Ok(());
            }
        };
        state.outbox_bytes += quoted.len();
        state.outbox.push(quoted);
        HttpSession::wake_receiver(&mut state);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// The SockJS close frame of a WebSocket close frame.
pub(super) fn close_frame(frame: Option<CloseFrame>) -> Bytes {
    match frame {
        Some(frame) => frame::close(frame.code, frame.reason.as_str()),
        None => frame::close(1000, "closed"),
    }
}

impl Drop for HttpSocket {
    /// A task that ends without a close frame (its client went away) leaves
    /// one for a client that comes back before the session is forgotten.
    fn drop(&mut self) {
        let mut state = self.session.state.lock();
        if state.close.is_none() {
            state.close = Some(frame::close(1000, "closed"));
            HttpSession::wake_receiver(&mut state);
        }
    }
}

impl Socket for HttpSocket {
    const ANSWERS_PINGS: bool = false;

    fn label(protocol: &'static str) -> &'static str {
        super::label(protocol)
    }

    fn keepalive_interval(settings: &EdgeSettings) -> std::time::Duration {
        settings.sockjs.heartbeat
    }

    /// The close frame goes out after the outbox, even when the outbox is
    /// full (a slow consumer's close).
    fn send_close(
        &mut self,
        frame: CloseFrame,
    ) -> impl std::future::Future<Output = Result<(), axum::Error>> + Send {
        let mut state = self.session.state.lock();
        if state.close.is_none() {
            state.close = Some(close_frame(Some(frame)));
            HttpSession::wake_receiver(&mut state);
        }
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::{poll, SinkExt, StreamExt};

    use super::*;

    fn session(outbox_limit: usize) -> (Arc<HttpSession>, HttpSocket) {
        let settings = EdgeSettings {
            outbound_queue_bytes: outbox_limit,
            ..EdgeSettings::default()
        };
        let (session, messages) = HttpSession::new(&settings);
        let session = Arc::new(session);
        (session.clone(), HttpSocket::new(session, messages))
    }

    fn receive(session: &Arc<HttpSession>, streaming: bool) -> Receiving {
        let answering = Answering {
            streaming,
            limit: 64,
        };
        match session.attach() {
            Attach::Attached { number, opened } => {
                Receiving::new(session.clone(), number, opened, answering)
            }
            Attach::Refused(frame) => panic!("refused with {frame:?}"),
        }
    }

    fn refused(session: &HttpSession) -> Bytes {
        match session.attach() {
            Attach::Refused(frame) => frame,
            Attach::Attached { .. } => panic!("attached"),
        }
    }

    fn text(text: &str) -> Message {
        Message::Text(text.into())
    }

    #[tokio::test]
    async fn a_poll_takes_everything_waiting_as_one_frame() {
        let (session, mut socket) = session(1024);
        let mut opening = receive(&session, false);
        assert_eq!(opening.next().await, Some(frame::OPEN));
        assert_eq!(opening.next().await, None);
        socket.send(text("a")).await.unwrap();
        socket.send(text("b\n")).await.unwrap();
        let mut poll = receive(&session, false);
        assert_eq!(
            poll.next().await,
            Some(Bytes::from_static(br#"a["a","b\n"]"#))
        );
        assert_eq!(poll.next().await, None);
    }

    #[tokio::test]
    async fn a_streaming_response_ends_past_its_limit_and_the_session_goes_on() {
        let (session, mut socket) = session(1024);
        let mut stream = receive(&session, true);
        assert_eq!(stream.next().await, Some(frame::OPEN));
        socket.send(text(&"x".repeat(70))).await.unwrap();
        assert!(stream.next().await.is_some());
        assert_eq!(stream.next().await, None, "64 bytes is the limit");
        drop(stream);
        let mut next = receive(&session, true);
        socket.send(text("y")).await.unwrap();
        assert_eq!(next.next().await, Some(Bytes::from_static(br#"a["y"]"#)));
    }

    #[tokio::test]
    async fn a_second_receiver_gets_2010_and_a_cut_one_ends_the_session() {
        let (session, mut socket) = session(1024);
        let mut first = receive(&session, true);
        assert_eq!(first.next().await, Some(frame::OPEN));
        assert_eq!(
            refused(&session),
            frame::close(2010, "Another connection still open")
        );
        drop(first);
        let interrupted = frame::close(1002, "Connection interrupted");
        assert_eq!(refused(&session), interrupted);
        assert!(session.inbound().is_none(), "sends are refused");
        assert!(
            matches!(socket.next().await, Some(Err(_))),
            "the client is gone"
        );
        assert_eq!(refused(&session), interrupted, "again, until forgotten");
    }

    #[tokio::test]
    async fn a_full_outbox_holds_the_writer_until_a_receiver_takes_it() {
        let (session, mut socket) = session(8);
        let mut opening = receive(&session, false);
        opening.next().await;
        drop(opening);
        socket.send(text("0123456789")).await.unwrap();
        let ready = std::future::poll_fn(|cx| socket.poll_ready_unpin(cx));
        assert!(poll!(ready).is_pending(), "over the limit");
        let mut poll = receive(&session, false);
        assert!(poll.next().await.is_some());
        let ready = std::future::poll_fn(|cx| socket.poll_ready_unpin(cx));
        assert!(poll!(ready).is_ready(), "taken");
        // A close never waits behind the outbox.
        socket.send(text("0123456789")).await.unwrap();
        let close = CloseFrame {
            code: 4000,
            reason: "slow".into(),
        };
        socket.send_close(close).await.unwrap();
        assert!(socket.next().await.is_none(), "closed: the stream ends");
        let mut last = receive(&session, true);
        assert_eq!(
            last.next().await,
            Some(Bytes::from_static(br#"a["0123456789"]"#))
        );
        assert_eq!(last.next().await, Some(frame::close(4000, "slow")));
        assert_eq!(last.next().await, None);
    }

    #[tokio::test]
    async fn heartbeats_go_to_a_waiting_receiver_only() {
        let (session, mut socket) = session(1024);
        let mut opening = receive(&session, false);
        opening.next().await;
        drop(opening);
        socket.send(Message::Ping(Bytes::new())).await.unwrap();
        let mut poll = receive(&session, false);
        assert!(poll!(poll.next()).is_pending(), "no heartbeat was waiting");
        socket.send(Message::Ping(Bytes::new())).await.unwrap();
        assert_eq!(poll.next().await, Some(frame::HEARTBEAT));
        assert_eq!(poll.next().await, None);
    }

    #[tokio::test]
    async fn a_session_without_receivers_is_idle_for_the_disconnect_delay() {
        let (session, mut socket) = session(1024);
        let delay = std::time::Duration::from_secs(5);
        let now = Instant::now();
        assert!(!session.idle_for(delay, now));
        assert!(session.idle_for(delay, now + delay));
        let _attached = receive(&session, true);
        assert!(
            !session.idle_for(delay, now + delay),
            "a receiver is attached"
        );
        session.forget();
        assert!(matches!(socket.next().await, Some(Err(_))));
    }
}
