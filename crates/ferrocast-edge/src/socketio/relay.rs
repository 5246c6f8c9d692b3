//! Engine.IO long-polling sessions of other nodes: the endpoint's use of
//! owner routing (`crate::owner`, kind `eio`; `eio_echo` for the
//! conformance echo), as SockJS's HTTP transports
//! use it (docs/architecture.md, "Sessions across HTTP requests").
//!
//! A poll or a send for a session this node does not hold asks where it
//! lives and is served through that owner: a send forwarded and
//! acknowledged, a poll answered with the owner's payload. A new session is
//! claimed before its handshake is answered. This node in turn serves what
//! other nodes relay to its sessions ([`Held`]). A WebSocket needs none of
//! it: one connection, one node. The upgrade of a session held elsewhere is
//! refused, and the client keeps polling.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use metrics::counter;

use ferrocast_core::NodeId;

use super::engine::Packet;
use super::transports::{deliver, next_payload, Endpoint, EngineError, Sessions};
use crate::owner::{self, HeldSessions, RelayError, Relayed, Route};

/// Engine.IO requests served for a session held by another node, by what
/// happened: `relayed`, `unknown` (the owner no longer held it), `silent`
/// (the owner did not answer: gone), `lost` (packets lost between the
/// nodes).
pub(crate) const RELAYED: &str = "ferrocast_socketio_relayed_total";

/// What a relayed request answers: the payload, or a refusal as its
/// status and body.
pub(super) type Answer = Result<String, owner::Refused>;

fn counted(outcome: &'static str) {
    counter!(RELAYED, "outcome" => outcome).increment(1);
}

/// The refusal of a session that is not held (here or anywhere).
fn unknown() -> owner::Refused {
    owner::Refused {
        status: 404,
        body: String::new(),
    }
}

impl EngineError {
    /// The refusal a relayed request carries back.
    pub(super) fn refused(self) -> owner::Refused {
        owner::Refused {
            status: if self == Self::UnknownSid { 404 } else { 400 },
            body: self.body(),
        }
    }
}

impl Endpoint {
    /// Claims session `sid`, just created here, so that other nodes find it.
    pub(super) async fn claim(&self, sid: &str) {
        if let Err(error) = self.routing().claim(self.serves.owner_kind(), sid).await {
            tracing::warn!(%error, session = sid, "cannot record this node as an Engine.IO session's owner; other nodes will not find it");
        }
    }

    /// A poll of session `sid`, held by another node, answered by its
    /// owner; `None` when no other node holds it.
    pub(super) async fn poll_elsewhere(&self, sid: &str) -> Option<Answer> {
        let owner = self.owner_of(sid).await?;
        let owners = self.routing();
        match owners
            .receive(&owner, self.serves.owner_kind(), sid, "poll")
            .await
        {
            Ok(Ok(mut frames)) => {
                let mut payload = String::new();
                while let Some(relayed) = frames.next().await {
                    match relayed {
                        Relayed::Frame(frame) => payload.push_str(&frame),
                        Relayed::Lost => {
                            counted("lost");
                            // The session cannot go on with a hole: the
                            // client reconnects and recovers.
                            return Some(Ok(Packet::Close.encode_text()));
                        }
                    }
                }
                counted("relayed");
                Some(Ok(if payload.is_empty() {
                    Packet::Close.encode_text()
                } else {
                    payload
                }))
            }
            Ok(Err(refused)) => Some(Err(self.refused(sid, refused))),
            Err(error) => {
                self.lost_owner(sid, &error);
                None
            }
        }
    }

    /// A send to session `sid`, held by another node, taken by its owner;
    /// `None` when no other node holds it.
    pub(super) async fn send_elsewhere(
        &self,
        sid: &str,
        payload: String,
    ) -> Option<Result<(), owner::Refused>> {
        let owner = self.owner_of(sid).await?;
        match self
            .routing()
            .send(&owner, self.serves.owner_kind(), sid, payload)
            .await
        {
            Ok(Ok(())) => {
                counted("relayed");
                Some(Ok(()))
            }
            Ok(Err(refused)) => Some(Err(self.refused(sid, refused))),
            Err(error) => {
                self.lost_owner(sid, &error);
                None
            }
        }
    }

    /// The node holding session `sid`, if another one does.
    async fn owner_of(&self, sid: &str) -> Option<NodeId> {
        match self.routing().route(self.serves.owner_kind(), sid).await {
            Ok(Route::Owner(owner)) => Some(owner),
            Ok(Route::Here) => None,
            Err(error) => {
                tracing::warn!(%error, session = sid, "cannot find an Engine.IO session's owner");
                None
            }
        }
    }

    /// The owner's refusal, passed on; an unknown session is forgotten.
    fn refused(&self, sid: &str, refused: owner::Refused) -> owner::Refused {
        if refused.status == 404 {
            counted("unknown");
            self.routing().forget(self.serves.owner_kind(), sid);
        }
        refused
    }

    fn lost_owner(&self, sid: &str, error: &RelayError) {
        counted("silent");
        self.routing().forget(self.serves.owner_kind(), sid);
        tracing::info!(%error, session = sid, "an Engine.IO session's owner did not answer");
    }

    /// This node's owner routing, with this endpoint's sessions registered.
    fn routing(&self) -> &owner::Owners {
        let owners = self.edge.owners();
        if !self.held.swap(true, Ordering::Relaxed) {
            owners.hold(
                self.serves.owner_kind(),
                Arc::new(Held {
                    sessions: Arc::downgrade(&self.sessions),
                    max_payload: self.edge.settings().max_message_size,
                }),
            );
        }
        owners
    }
}

/// What this node does for requests other nodes relay to its sessions;
/// weak, so that owner routing keeps no endpoint alive.
struct Held {
    sessions: Weak<Sessions>,
    max_payload: usize,
}

impl HeldSessions for Held {
    fn send(&self, id: &str, body: String) -> BoxFuture<'static, Result<(), owner::Refused>> {
        let session = self
            .sessions
            .upgrade()
            .and_then(|sessions| sessions.lock().get(id).cloned());
        let max_payload = self.max_payload;
        async move {
            let session = session.ok_or_else(unknown)?;
            if body.len() > max_payload {
                return Err(EngineError::BadRequest.refused());
            }
            deliver(&session, body.as_bytes())
                .await
                .map_err(EngineError::refused)
        }
        .boxed()
    }

    fn receive(
        &self,
        id: &str,
        _transport: &str,
    ) -> Result<BoxStream<'static, String>, owner::Refused> {
        let session = self
            .sessions
            .upgrade()
            .and_then(|sessions| sessions.lock().get(id).cloned())
            .ok_or_else(unknown)?;
        let number = session
            .attach_poller()
            .map_err(|_| EngineError::BadRequest.refused())?;
        Ok(futures::stream::once(next_payload(session, number)).boxed())
    }
}
