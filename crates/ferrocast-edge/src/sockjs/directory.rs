//! [`SessionDirectory`]: every operation an HTTP request performs on a
//! SockJS session, behind one type. Transports never touch sessions
//! otherwise.
//!
//! Today every session a request names is looked up on this node. Where a
//! load balancer spreads one session's requests over several nodes, the node
//! that created a session owns it, and a request for a session this node
//! does not hold is the one place where a remote owner plugs in: in
//! [`SessionDirectory::receive`] and [`SessionDirectory::send`], at the
//! lookup that finds no local session (marked `REMOTE OWNER` below), the
//! directory asks the owner instead of answering 404 or creating a session,
//! and hands back the owner's frames as a [`FrameStream`] (or the owner's
//! acknowledgement of a send) in the same shapes as for a local session.

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

struct Inner {
    edge: Edge,
    kind: Kind,
    /// A std-like lock held for map operations only, never across an await.
    sessions: Mutex<HashMap<Box<str>, Arc<HttpSession>>>,
    /// Whether the task that forgets idle sessions runs.
    sweeping: AtomicBool,
}

impl SessionDirectory {
    pub(crate) fn new(edge: Edge, kind: Kind) -> Self {
        Self {
            inner: Arc::new(Inner {
                edge,
                kind,
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
        // REMOTE OWNER: a session this node does not hold may live on its
        // owner; relay the owner's frames here before creating one.
        let session = match found {
            Some(session) => session,
            None => self.create(id, caller)?,
        };
        Ok(match session.attach() {
            Attach::Attached { number, opened } => {
                FrameStream(Receiving::new(session, number, opened, answering).boxed())
            }
            Attach::Refused(frame) => FrameStream::one(frame),
        })
    }

    /// A send (xhr_send, jsonp_send) of `messages` to session `id`; returns
    /// once the session took them (it waits while the session's inbound
    /// queue is full).
    pub(crate) async fn send(&self, id: &str, messages: Vec<String>) -> Result<(), Refused> {
        let found = self.inner.sessions.lock().get(id).cloned();
        // REMOTE OWNER: a send for a session this node does not hold goes to
        // its owner, acknowledged before the answer.
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
        sessions.retain(|_, session| {
            let idle = session.idle_for(delay, now);
            if idle {
                session.forget();
                gauge!(SESSIONS).decrement(1.0);
            }
            !idle
        });
    }
}
