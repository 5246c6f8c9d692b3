//! [`SessionDirectory`]: every operation an HTTP request performs on a
//! SockJS session, behind one type. Transports never touch sessions
//! otherwise.
//!
//! A load balancer may spread one session's requests over several nodes:
//! the node that created a session owns it, and a request for a session
//! this node does not hold goes to its owner (`relay`, over
//! `crate::owner`), in the same shapes as for a local session: the owner's
//! frames as a [`FrameStream`], the owner's acknowledgement of a send. Only a
//! session held nowhere is created here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use metrics::{counter, gauge};
use parking_lot::Mutex;
use tokio::time::Instant;

use ferrocast_core::metrics as names;

use super::http_session::{Answering, Attach, HttpSession, HttpSocket, Receiving};
use super::service::{self, Kind};
use crate::admission::{Admission, Admitted, Caller, Refusal};
use crate::edge::Edge;

/// SockJS sessions served over HTTP that this node holds.
pub(crate) const SESSIONS: &str = "ferrocast_sockjs_sessions";

/// Why the directory refused a request.
#[derive(Debug)]
pub(crate) enum Refused {
    /// No such session (HTTP 404).
    NotFound,
    /// A new session was not admitted (draining, full, origin, token).
    Admission(Refusal),
}

/// The frames of one receiving request, in SockJS framing (`o`, `h`,
/// `a[…]`, `c[…]`), without the transport's wrapping; the stream ends when
/// the response must end.
pub(crate) struct FrameStream(BoxStream<'static, Bytes>);

impl From<BoxStream<'static, Bytes>> for FrameStream {
    fn from(frames: BoxStream<'static, Bytes>) -> Self {
        Self(frames)
    }
}

impl FrameStream {
    fn one(frame: Bytes) -> Self {
        Self(futures::stream::iter([frame]).boxed())
    }
}

impl Stream for FrameStream {
    type Item = Bytes;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        self.0.poll_next_unpin(cx)
    }
}

/// The SockJS sessions of one endpoint, by session id. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SessionDirectory {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) edge: Edge,
    kind: Kind,
    /// This endpoint's sessions in owner routing (`relay::owner_kind`).
    pub(super) owner_kind: String,
    /// Whether owner routing knows this endpoint's sessions (`relay`).
    pub(super) held: AtomicBool,
    /// A std-like lock held for map operations only, never across an await.
    sessions: Mutex<HashMap<Box<str>, Arc<HttpSession>>>,
    /// Whether the task that forgets idle sessions runs.
    sweeping: AtomicBool,
}

impl SessionDirectory {
    pub(crate) fn new(edge: Edge, kind: Kind, prefix: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                edge,
                kind,
                owner_kind: super::relay::owner_kind(prefix),
                held: AtomicBool::new(false),
                sessions: Mutex::new(HashMap::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// A receiving request (xhr, xhr_streaming, eventsource, htmlfile,
    /// jsonp) on session `id`. The first one creates the session, admitted
    /// like a WebSocket of `caller` (it holds a connection slot), and gets
    /// the open frame. A request while another is attached gets
    /// `c[2010,"Another connection still open"]`, one on a closed session its
    /// close frame.
    pub(crate) async fn receive(
        &self,
        id: &str,
        answering: Answering,
        caller: &Caller,
    ) -> Result<FrameStream, Refused> {
        let found = self.inner.sessions.lock().get(id).cloned();
        if let Some(session) = found {
            // A session living longer than its owner record is claimed again.
            if session.claimed.due() {
                self.claim(id).await;
            }
            return Ok(Self::attach(session, answering));
        }
        // A session this node does not hold may live on its owner (relay).
        if let Some(frames) = self.receive_elsewhere(id, &answering).await {
            return Ok(frames);
        }
        let session = self.create(id, caller)?;
        if session.claimed.due() {
            self.claim(id).await;
        }
        Ok(Self::attach(session, answering))
    }

    /// A receive on session `id` if this node holds it.
    pub(super) fn receive_here(&self, id: &str, answering: Answering) -> Option<FrameStream> {
        let found = self.inner.sessions.lock().get(id).cloned();
        found.map(|session| Self::attach(session, answering))
    }

    fn attach(session: Arc<HttpSession>, answering: Answering) -> FrameStream {
        match session.attach() {
            Attach::Attached { number, opened } => {
                FrameStream(Receiving::new(session, number, opened, answering).boxed())
            }
            Attach::Refused(frame) => FrameStream::one(frame),
        }
    }

    /// A send (xhr_send, jsonp_send) of `messages` to session `id`; returns
    /// once the session took them (it waits while the session's inbound
    /// queue is full).
    pub(crate) async fn send(&self, id: &str, messages: Vec<String>) -> Result<(), Refused> {
        let held = self.inner.sessions.lock().contains_key(id);
        if held {
            self.send_here(id, messages).await
        } else {
            // Its owner takes it before the answer (relay).
            self.send_elsewhere(id, &messages).await
        }
    }

    /// A send to session `id`, held by this node.
    pub(super) async fn send_here(&self, id: &str, messages: Vec<String>) -> Result<(), Refused> {
        let found = self.inner.sessions.lock().get(id).cloned();
        let inbound = found
            .and_then(|session| session.inbound())
            .ok_or(Refused::NotFound)?;
        for message in messages {
            if inbound.capacity() == 0 {
                counter!(names::LIMIT_HITS, "limit" => "sockjs_inbound").increment(1);
            }
            inbound.send(message).await.map_err(|_| Refused::NotFound)?;
        }
        Ok(())
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(super) fn weak(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(super) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Admits a new session `id` and starts the task that runs it.
    fn create(&self, id: &str, caller: &Caller) -> Result<Arc<HttpSession>, Refused> {
        let edge = &self.inner.edge;
        let Admitted { identity, permit } = Admission::SESSION
            .admit_connection(edge, caller)
            .map_err(Refused::Admission)?;
        let mut sessions = self.inner.sessions.lock();
        if let Some(session) = sessions.get(id) {
            // Another request created it meanwhile; this slot goes back.
            return Ok(session.clone());
        }
        let (session, messages) = HttpSession::new(edge.settings());
        let session = Arc::new(session);
        sessions.insert(id.into(), session.clone());
        gauge!(SESSIONS).increment(1.0);
        drop(sessions);
        tracing::debug!(session = id, kind = ?self.inner.kind, "SockJS session opened");
        let socket = HttpSocket::new(session.clone(), messages);
        tokio::spawn(service::run(
            self.inner.kind,
            edge.clone(),
            socket,
            permit,
            identity,
        ));
        if !self.inner.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.inner)));
        }
        Ok(session)
    }
}

/// Forgets the sessions that had no receiving request for the disconnect
/// delay (their tasks end), a few times per delay, until the directory is
/// dropped.
async fn sweep(directory: Weak<Inner>) {
    let Some(delay) = directory
        .upgrade()
        .map(|inner| inner.edge.settings().sockjs.disconnect_delay)
    else {
        return;
    };
    let tick = (delay / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = directory.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut sessions = inner.sessions.lock();
        sessions.retain(|id, session| {
            let idle = session.idle_for(delay, now);
            if idle {
                session.forget();
                gauge!(SESSIONS).decrement(1.0);
                tracing::debug!(
                    session = &**id,
                    "SockJS session forgotten: no receiving request within the disconnect delay"
                );
            }
            !idle
        });
    }
}
