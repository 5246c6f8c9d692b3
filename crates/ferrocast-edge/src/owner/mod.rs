//! Session owners: serving a session that lives across HTTP requests
//! (SockJS's HTTP transports, Engine.IO long-polling) on whichever node a
//! load balancer sends each request to, without sticky sessions.
//!
//! The node that creates such a session **owns** it: the session (its
//! ferrocast session, subscriptions, queue) runs there and nowhere else. A
//! request for it that reaches another node is served by talking to the
//! owner over the backplane:
//!
//! - **Finding the owner, without a broadcast.** The owner *claims* the
//!   session: it publishes its node id to the topic
//!   `_owner.<kind>-<session>` (hashed when that is not one topic token
//!   that fits) of the reserved namespace [`OWNER_NAMESPACE`],
//!   whose history keeps one publication per topic for
//!   [`OWNER_RECORD_TTL`]. Another node reads that history once (one
//!   backplane round trip) and caches the answer ([`CACHE_LIMIT`] entries).
//!   No node is asked who owns what; a record that outlives its session names
//!   an owner that answers "unknown session".
//! - **Talking to the owner.** Every node subscribes to its inbox,
//!   `_ctl.owner.<node>` (interest-based routing: only the addressed node
//!   receives it). A *send* (client → session messages) is forwarded and
//!   acknowledged by the owner before the HTTP answer. A *receive* (a
//!   polling or streaming response) attaches a receiver at the owner, which
//!   publishes the session's frames, numbered, to the requesting node's inbox
//!   until the response ends, and detaches it when its HTTP response ends.
//! - **Liveness, per pair of nodes.** A node with relayed receives on an
//!   owner pings that owner every [`PING_EVERY`]; the pong says the owner
//!   lives, the ping says the requester does. An owner not heard of for
//!   [`OWNER_SILENCE`] is gone: its relayed receives end at once (the client
//!   gets a close frame and reconnects, instead of waiting for its next
//!   send). A requester not heard of for [`REQUESTER_SILENCE`] is gone: the
//!   owner detaches its receivers.
//! - **Bounds.** At most [`MAX_RELAYED`] relayed requests wait on a node, each
//!   receive buffers at most [`FRAMES_BUFFERED`] frames (a requester that
//!   falls behind loses the receive, never memory), a missing owner is
//!   known after [`RELAY_TIMEOUT`] (a send) or [`OWNER_SILENCE`] (a receive).
//! - **Loss.** Frames travel as live messages: at most once. A requester
//!   that sees a hole in the numbering ends its response with
//!   [`Relayed::Lost`], and the transport closes the session, so that the
//!   client reconnects and resumes from its last position (STOMP
//!   `ferrocast-since`) instead of missing messages silently. An owner that
//!   died takes its sessions with it: requests for them get the transport's
//!   "unknown session" answer, and the client reconnects.
//!
//! A session kind (`"sockjs"`, `"eio"`) registers what it holds with
//! [`Owners::hold`]; its HTTP handlers ask [`Owners::route`] where a session
//! lives and use [`Owners::send`] / [`Owners::receive`] for a remote one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use ferrocast_core::{ConnId, Hub, NodeId, OWNER_NAMESPACE};
use ferrocast_protocol::{Topic, TopicFilter, MAX_TOPIC_LEN};
use sha2::{Digest, Sha256};

use crate::Feed;

#[cfg(test)]
mod tests;

/// How often an owner claims a session it still holds again, on one of the
/// session's requests: well within the owner record's lifetime
/// ([`ferrocast_core::OWNER_RECORD_TTL`]).
pub const CLAIM_EVERY: Duration =
    Duration::from_secs(ferrocast_core::OWNER_RECORD_TTL.as_secs() / 3);

/// When an owner last claimed one session it holds: each session kind's
/// session keeps one and asks it on the session's requests.
#[derive(Debug)]
pub struct ClaimClock(Mutex<Option<Instant>>);

impl ClaimClock {
    /// A session not claimed yet.
    pub fn unclaimed() -> Self {
        Self(Mutex::new(None))
    }

    /// A session claimed just now.
    pub fn claimed_now() -> Self {
        Self(Mutex::new(Some(Instant::now())))
    }

    /// Whether the session must be claimed (again): never claimed, or not
    /// for [`CLAIM_EVERY`]; counts it claimed now when it must.
    pub fn due(&self) -> bool {
        let mut claimed = self.0.lock();
        let due = claimed.is_none_or(|at| at.elapsed() >= CLAIM_EVERY);
        if due {
            *claimed = Some(Instant::now());
        }
        due
    }
}

/// How long a relayed request waits for the owner's first answer.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node pings each owner it has relayed receives on.
pub const PING_EVERY: Duration = Duration::from_secs(2);
/// An owner that answered no ping for this long is gone.
pub const OWNER_SILENCE: Duration = Duration::from_secs(6);
/// An owner detaches the receivers of a requesting node not heard of for
/// this long (it died).
pub const REQUESTER_SILENCE: Duration = Duration::from_secs(10);
/// Relayed requests one node waits on at once; past it, requests for
/// sessions of other nodes are refused (the transport answers 503).
pub const MAX_RELAYED: usize = 65_536;
/// Frames one relayed receive buffers for its HTTP response.
pub const FRAMES_BUFFERED: usize = 1024;
/// Owners remembered per node.
pub const CACHE_LIMIT: usize = 100_000;
/// The inbox's queue: frames for every relayed receive of this node.
const INBOX_BYTES: usize = 64 * 1024 * 1024;
/// Where the inboxes are: `_ctl.owner.<node>`.
const INBOX_NAMESPACE: &str = "_ctl.owner";
/// Pause before subscribing the inbox again after it failed.
const RETRY: Duration = Duration::from_secs(1);

/// An answer the owner gives instead of serving: what the transport sends
/// as its HTTP answer (say `404`, unknown session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// The sessions of one kind that this node holds: what an owner does for a
/// request another node relays.
pub trait HeldSessions: Send + Sync + 'static {
    /// Hands `body` (the request body of a send) to session `id`.
    fn send(&self, id: &str, body: String) -> BoxFuture<'static, Result<(), Refused>>;
    /// Attaches a receiver of `transport` to session `id`: its frames, until
    /// the response must end. Dropping the stream detaches it.
    fn receive(&self, id: &str, transport: &str) -> Result<BoxStream<'static, String>, Refused>;
}

/// Where a session lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Held here, or not known anywhere (the caller creates it or answers
    /// "unknown session").
    Here,
    /// Held by another node.
    Owner(NodeId),
}

/// Why a relayed request got no answer from the owner.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the backplane did not take the request: {0}")]
    Backplane(String),
    #[error("the session's node {0} did not answer within {RELAY_TIMEOUT:?}")]
    OwnerSilent(NodeId),
    #[error("more than {MAX_RELAYED} requests wait on other nodes")]
    Overloaded,
}

/// An item of a relayed receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// The next frame of the session.
    Frame(String),
    /// Frames were lost between the nodes (a hole in the numbering, or this
    /// node fell behind): the session cannot go on without a hole.
    Lost,
}

/// The messages of the owner channel, as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    Send {
        from: String,
        id: u64,
        kind: String,
        session: String,
        body: String,
    },
    Ack {
        id: u64,
        refused: Option<Refused>,
    },
    Receive {
        from: String,
        id: u64,
        kind: String,
        session: String,
        transport: String,
    },
    Attached {
        id: u64,
        refused: Option<Refused>,
    },
    Frame {
        id: u64,
        seq: u64,
        body: String,
    },
    End {
        id: u64,
        seq: u64,
    },
    Ping {
        from: String,
    },
    Pong {
        from: String,
    },
    Detach {
        from: String,
        id: u64,
    },
}

/// What a relayed receive gets from the inbox.
#[derive(Debug)]
enum Incoming {
    Attached(Option<Refused>),
    Frame(u64, String),
    End(u64),
    /// Its owner stopped answering pings.
    OwnerGone,
}

/// A request of this node waiting for an owner.
#[derive(Debug)]
enum Waiter {
    Ack(oneshot::Sender<Option<Refused>>),
    /// A relayed receive, and the owner feeding it.
    Receive(mpsc::Sender<Incoming>, NodeId),
}

/// A receiver this node feeds for another node.
#[derive(Debug)]
struct Feeding {
    stop: CancellationToken,
}

/// This node's end of owner routing. Cheap to clone.
#[derive(Clone)]
pub struct Owners {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    /// The inbox's subscriber id.
    conn: ConnId,
    node: NodeId,
    /// The owner of sessions seen here, by registry topic.
    cache: Mutex<HashMap<String, NodeId>>,
    /// This node's relayed requests, by id.
    waiting: Mutex<HashMap<u64, Waiter>>,
    /// Receivers fed for other nodes, by (requesting node, request id).
    feeding: Mutex<HashMap<(String, u64), Feeding>>,
    /// When each other node was last heard from (a ping or a pong).
    heard: Mutex<HashMap<String, Instant>>,
    /// What this node holds, by session kind.
    held: Mutex<HashMap<String, Arc<dyn HeldSessions>>>,
    next_id: AtomicU64,
    stop: CancellationToken,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("node", &self.inner.node)
            .field("waiting", &self.inner.waiting.lock().len())
            .field("feeding", &self.inner.feeding.lock().len())
            .finish_non_exhaustive()
    }
}

/// `text` as one topic token of at most `room` bytes: as is when it is
/// one and fits, else `x` and the first 32 hex digits of its SHA-256 — so a
/// session id or a configured path of any length and any characters makes
/// a valid topic, and two ids never share one by truncation.
fn token(text: &str, room: usize) -> String {
    let plain = !text.is_empty()
        && text.len() <= room
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:@=".contains(&b));
    if plain {
        return text.to_string();
    }
    let digest = Sha256::digest(text.as_bytes());
    let mut hashed = String::with_capacity(33);
    hashed.push('x');
    for b in &digest[..16] {
        hashed.push_str(&format!("{b:02x}"));
    }
    hashed
}

/// `namespace.rest` as a topic, `rest` made one token that fits.
fn topic(namespace: &str, rest: &str) -> Topic {
    let name = format!(
        "{namespace}.{}",
        token(rest, MAX_TOPIC_LEN - namespace.len() - 1)
    );
    // A reserved namespace and one token of the grammar, within the length.
    Topic::parse(&name, MAX_TOPIC_LEN)
        .unwrap_or_else(|e| unreachable!("owner topics follow the topic grammar: {name}: {e}"))
}

fn inbox(node: &str) -> Topic {
    topic(INBOX_NAMESPACE, node)
}

fn record(kind: &str, session: &str) -> Topic {
    topic(OWNER_NAMESPACE, &format!("{kind}-{session}"))
}

#[derive(Debug, Serialize, Deserialize)]
struct OwnerRecord {
    node: String,
}

impl Owners {
    /// Joins owner routing: subscribes to this node's inbox (as subscriber
    /// `conn`, again after failures) until `stop`.
    pub fn start(hub: Hub, conn: ConnId, stop: CancellationToken) -> Self {
        let node = hub.node_id().clone();
        let owners = Self {
            inner: Arc::new(Inner {
                hub,
                conn,
                node,
                cache: Mutex::new(HashMap::new()),
                waiting: Mutex::new(HashMap::new()),
                feeding: Mutex::new(HashMap::new()),
                heard: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                stop,
            }),
        };
        tokio::spawn(owners.clone().serve_inbox());
        tokio::spawn(owners.clone().watch_nodes());
        owners
    }

    /// Registers the sessions of `kind` this node holds.
    pub fn hold(&self, kind: &str, sessions: Arc<dyn HeldSessions>) {
        self.inner.held.lock().insert(kind.to_string(), sessions);
    }

    /// Records this node as the owner of session `id` of `kind`, in the
    /// backplane; a node that gets a request for it then finds this one.
    /// Claim before answering the request that created the session, and
    /// again within [`OWNER_RECORD_TTL`] for a session that lives longer.
    pub async fn claim(&self, kind: &str, id: &str) -> Result<(), RelayError> {
        let topic = record(kind, id);
        let body = serde_json::to_vec(&OwnerRecord {
            node: self.inner.node.to_string(),
        })
        .map_err(|e| RelayError::Backplane(e.to_string()))?;
        self.inner
            .hub
            .publish(topic.clone(), Bytes::from(body))
            .await
            .map_err(|e| RelayError::Backplane(e.to_string()))?;
        self.remember(topic.as_str(), self.inner.node.clone());
        Ok(())
    }

    /// Where session `id` of `kind` lives: here (or nowhere), or on another
    /// node.
    pub async fn route(&self, kind: &str, id: &str) -> Result<Route, RelayError> {
        let topic = record(kind, id);
        let cached = self.inner.cache.lock().get(topic.as_str()).cloned();
        let owner = match cached {
            Some(owner) => Some(owner),
            None => {
                let page = self
                    .inner
                    .hub
                    .history(&topic, 0)
                    .await
                    .map_err(|e| RelayError::Backplane(e.to_string()))?;
                let owner = page
                    .publications
                    .last()
                    .and_then(|p| serde_json::from_slice::<OwnerRecord>(&p.payload).ok())
                    .map(|r| NodeId::from(r.node));
                if let Some(owner) = &owner {
                    self.remember(topic.as_str(), owner.clone());
                }
                owner
            }
        };
        Ok(match owner {
            Some(owner) if owner != self.inner.node => Route::Owner(owner),
            _ => Route::Here,
        })
    }

    /// Forgets the cached owner of session `id` (it answered "unknown").
    pub fn forget(&self, kind: &str, id: &str) {
        self.inner.cache.lock().remove(record(kind, id).as_str());
    }

    fn remember(&self, topic: &str, owner: NodeId) {
        let mut cache = self.inner.cache.lock();
        if cache.len() >= CACHE_LIMIT {
            // Crude but bounded: an owner found again costs one history read.
            cache.clear();
        }
        cache.insert(topic.to_string(), owner);
    }

    /// Hands `body` to session `id` on `owner`; returns once the owner took
    /// it (or refused).
    pub async fn send(
        &self,
        owner: &NodeId,
        kind: &str,
        id: &str,
        body: String,
    ) -> Result<Result<(), Refused>, RelayError> {
        let (tx, rx) = oneshot::channel();
        let request = self.wait(Waiter::Ack(tx))?;
        let sent = self
            .publish(
                owner,
                &Wire::Send {
                    from: self.inner.node.to_string(),
                    id: request.id,
                    kind: kind.to_string(),
                    session: id.to_string(),
                    body,
                },
            )
            .await;
        sent?;
        match tokio::time::timeout(RELAY_TIMEOUT, rx).await {
            Ok(Ok(None)) => Ok(Ok(())),
            Ok(Ok(Some(refused))) => Ok(Err(refused)),
            Ok(Err(_)) | Err(_) => Err(RelayError::OwnerSilent(owner.clone())),
        }
    }

    /// Attaches a receiver of `transport` to session `id` on `owner`: the
    /// session's frames as they come, until the owner ends the response.
    /// Dropping the stream detaches the receiver.
    pub async fn receive(
        &self,
        owner: &NodeId,
        kind: &str,
        id: &str,
        transport: &str,
    ) -> Result<Result<RemoteFrames, Refused>, RelayError> {
        let (tx, mut rx) = mpsc::channel(FRAMES_BUFFERED);
        // The owner counts as heard now: its silence is measured from here.
        self.inner
            .heard
            .lock()
            .insert(owner.to_string(), Instant::now());
        let request = self.wait(Waiter::Receive(tx, owner.clone()))?;
        self.publish(
            owner,
            &Wire::Receive {
                from: self.inner.node.to_string(),
                id: request.id,
                kind: kind.to_string(),
                session: id.to_string(),
                transport: transport.to_string(),
            },
        )
        .await?;
        match tokio::time::timeout(RELAY_TIMEOUT, rx.recv()).await {
            Ok(Some(Incoming::Attached(None))) => {}
            Ok(Some(Incoming::Attached(Some(refused)))) => return Ok(Err(refused)),
            Ok(_) | Err(_) => return Err(RelayError::OwnerSilent(owner.clone())),
        }
        Ok(Ok(RemoteFrames {
            owner: owner.clone(),
            request: Some(request),
            frames: rx,
            next: 0,
            done: false,
        }))
    }

    /// Registers a waiting request; the guard unregisters it when dropped.
    fn wait(&self, waiter: Waiter) -> Result<Request, RelayError> {
        let mut waiting = self.inner.waiting.lock();
        if waiting.len() >= MAX_RELAYED {
            return Err(RelayError::Overloaded);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        waiting.insert(id, waiter);
        Ok(Request {
            owners: self.clone(),
            id,
        })
    }

    async fn publish(&self, node: &str, message: &Wire) -> Result<(), RelayError> {
        let body = serde_json::to_vec(message).map_err(|e| RelayError::Backplane(e.to_string()))?;
        self.inner
            .hub
            .publish(inbox(node), Bytes::from(body))
            .await
            .map(|_| ())
            .map_err(|e| RelayError::Backplane(e.to_string()))
    }

    /// Reads this node's inbox until stopped, subscribing again after a
    /// failure.
    async fn serve_inbox(self) {
        let filter = TopicFilter::from(inbox(&self.inner.node));
        while !self.inner.stop.is_cancelled() {
            match Feed::open_on(
                &self.inner.hub,
                self.inner.conn,
                filter.clone(),
                None,
                INBOX_BYTES,
            )
            .await
            {
                Ok((mut feed, _)) => loop {
                    tokio::select! {
                        () = self.inner.stop.cancelled() => return,
                        next = feed.next() => match next {
                            Some(publication) => self.dispatch(&publication.payload),
                            None => {
                                tracing::warn!(reason = ?feed.closed(), "the owner inbox ended; subscribing again");
                                break;
                            }
                        },
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe to the owner inbox; retrying");
                }
            }
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    fn dispatch(&self, payload: &[u8]) {
        let message = match serde_json::from_slice::<Wire>(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "an owner message this node cannot read (another version?)");
                return;
            }
        };
        match message {
            Wire::Ack { id, refused } => {
                if let Some(Waiter::Ack(tx)) = self.inner.waiting.lock().remove(&id) {
                    let _ = tx.send(refused);
                }
            }
            Wire::Attached { id, refused } => self.to_receive(id, Incoming::Attached(refused)),
            Wire::Frame { id, seq, body } => self.to_receive(id, Incoming::Frame(seq, body)),
            Wire::End { id, seq } => self.to_receive(id, Incoming::End(seq)),
            Wire::Send {
                from,
                id,
                kind,
                session,
                body,
            } => {
                let held = self.inner.held.lock().get(kind.as_str()).cloned();
                let owners = self.clone();
                tokio::spawn(async move {
                    let refused = match held {
                        Some(held) => held.send(&session, body).await.err(),
                        None => Some(unknown_session()),
                    };
                    if let Err(error) = owners.publish(&from, &Wire::Ack { id, refused }).await {
                        tracing::debug!(%error, node = %from, "cannot acknowledge a relayed send");
                    }
                });
            }
            Wire::Receive {
                from,
                id,
                kind,
                session,
                transport,
            } => {
                self.inner.heard.lock().insert(from.clone(), Instant::now());
                let held = self.inner.held.lock().get(kind.as_str()).cloned();
                let frames = match held {
                    Some(held) => held.receive(&session, &transport),
                    None => Err(unknown_session()),
                };
                tokio::spawn(self.clone().feed(from, id, frames));
            }
            Wire::Ping { from } => {
                self.inner.heard.lock().insert(from.clone(), Instant::now());
                let owners = self.clone();
                tokio::spawn(async move {
                    let pong = Wire::Pong {
                        from: owners.inner.node.to_string(),
                    };
                    let _ = owners.publish(&from, &pong).await;
                });
            }
            Wire::Pong { from } => {
                self.inner.heard.lock().insert(from, Instant::now());
            }
            Wire::Detach { from, id } => {
                if let Some(feeding) = self.inner.feeding.lock().remove(&(from, id)) {
                    feeding.stop.cancel();
                }
            }
        }
    }

    /// Passes `item` to this node's relayed receive `id`; one that cannot
    /// take it (its buffer is full) is ended: its response falls behind.
    fn to_receive(&self, id: u64, item: Incoming) {
        let mut waiting = self.inner.waiting.lock();
        let full = match waiting.get(&id) {
            Some(Waiter::Receive(tx, _)) => tx.try_send(item).is_err(),
            _ => false,
        };
        if full {
            waiting.remove(&id);
        }
    }

    /// Feeds the receiver another node attached, until its session ends the
    /// response, the node detaches it, or it goes silent.
    async fn feed(
        self,
        from: String,
        id: u64,
        frames: Result<BoxStream<'static, String>, Refused>,
    ) {
        let stop = self.inner.stop.child_token();
        let frames = frames.and_then(|frames| {
            let mut feeding = self.inner.feeding.lock();
            if feeding.len() >= MAX_RELAYED {
                return Err(Refused {
                    status: 503,
                    body: "this node feeds too many receivers for other nodes".into(),
                });
            }
            feeding.insert((from.clone(), id), Feeding { stop: stop.clone() });
            Ok(frames)
        });
        let mut frames = match frames {
            Ok(frames) => frames,
            Err(refused) => {
                let refused = Some(refused);
                let _ = self.publish(&from, &Wire::Attached { id, refused }).await;
                return;
            }
        };
        let mut seq = 0;
        let mut ok = self
            .publish(&from, &Wire::Attached { id, refused: None })
            .await
            .is_ok();
        while ok {
            let body = tokio::select! {
                () = stop.cancelled() => break,
                body = frames.next() => body,
            };
            let message = match body {
                Some(body) => Wire::Frame { id, seq, body },
                None => {
                    let _ = self.publish(&from, &Wire::End { id, seq }).await;
                    break;
                }
            };
            seq += 1;
            ok = self.publish(&from, &message).await.is_ok();
        }
        self.inner.feeding.lock().remove(&(from, id));
    }

    /// Every [`PING_EVERY`]: pings the owners this node has relayed
    /// receives on, ends the receives of owners gone silent, and detaches
    /// the receivers of requesting nodes gone silent.
    async fn watch_nodes(self) {
        let mut tick = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let owners: std::collections::HashSet<NodeId> = self
                .inner
                .waiting
                .lock()
                .values()
                .filter_map(|waiter| match waiter {
                    Waiter::Receive(_, owner) => Some(owner.clone()),
                    Waiter::Ack(_) => None,
                })
                .collect();
            let silent: Vec<NodeId> = {
                let heard = self.inner.heard.lock();
                owners
                    .iter()
                    .filter(|owner| {
                        heard
                            .get(owner.as_ref())
                            .is_none_or(|at| at.elapsed() > OWNER_SILENCE)
                    })
                    .cloned()
                    .collect()
            };
            if !silent.is_empty() {
                self.inner.waiting.lock().retain(|_, waiter| match waiter {
                    Waiter::Receive(tx, owner) if silent.contains(owner) => {
                        let _ = tx.try_send(Incoming::OwnerGone);
                        false
                    }
                    _ => true,
                });
            }
            for owner in owners.iter().filter(|owner| !silent.contains(owner)) {
                let owners = self.clone();
                let owner = owner.clone();
                tokio::spawn(async move {
                    let ping = Wire::Ping {
                        from: owners.inner.node.to_string(),
                    };
                    let _ = owners.publish(&owner, &ping).await;
                });
            }
            let requesters: std::collections::HashSet<String> = {
                let heard = self.inner.heard.lock();
                self.inner
                    .feeding
                    .lock()
                    .keys()
                    .map(|(from, _)| from.clone())
                    .filter(|from| {
                        heard
                            .get(from)
                            .is_none_or(|at| at.elapsed() > REQUESTER_SILENCE)
                    })
                    .collect()
            };
            if !requesters.is_empty() {
                self.inner.feeding.lock().retain(|(from, _), feeding| {
                    let gone = requesters.contains(from);
                    if gone {
                        feeding.stop.cancel();
                    }
                    !gone
                });
            }
        }
    }
}

/// What an owner answers for a session it does not hold.
fn unknown_session() -> Refused {
    Refused {
        status: 404,
        body: "unknown session".into(),
    }
}

/// A relayed request of this node; unregistered when dropped.
struct Request {
    owners: Owners,
    id: u64,
}

impl Drop for Request {
    fn drop(&mut self) {
        self.owners.inner.waiting.lock().remove(&self.id);
    }
}

/// The frames of a session on another node, for one HTTP response. Ends
/// when the owner ends the response; yields [`Relayed::Lost`] (then ends)
/// when frames were lost on the way. Dropping it detaches the receiver.
pub struct RemoteFrames {
    owner: NodeId,
    request: Option<Request>,
    frames: mpsc::Receiver<Incoming>,
    next: u64,
    done: bool,
}

impl std::fmt::Debug for RemoteFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFrames")
            .field("owner", &self.owner)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RemoteFrames {
    fn tell_owner(&self, make: impl FnOnce(String, u64) -> Wire) {
        if let Some(request) = &self.request {
            let owners = request.owners.clone();
            let message = make(owners.inner.node.to_string(), request.id);
            let owner = self.owner.clone();
            tokio::spawn(async move {
                let _ = owners.publish(&owner, &message).await;
            });
        }
    }
}

impl Stream for RemoteFrames {
    type Item = Relayed;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Relayed>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match self.frames.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        let this = &mut *self;
        match item {
            Some(Incoming::Frame(seq, body)) if seq == this.next => {
                this.next += 1;
                Poll::Ready(Some(Relayed::Frame(body)))
            }
            Some(Incoming::End(seq)) if seq == this.next => {
                this.done = true;
                this.request = None; // nothing to detach: the owner ended it
                Poll::Ready(None)
            }
            // A hole, the buffer overflowed (the sender is gone), or a stray
            // second attach.
            _ => {
                this.done = true;
                Poll::Ready(Some(Relayed::Lost))
            }
        }
    }
}

impl Drop for RemoteFrames {
    fn drop(&mut self) {
        // `request` is gone once the owner ended the response itself.
        self.tell_owner(|from, id| Wire::Detach { from, id });
    }
}
