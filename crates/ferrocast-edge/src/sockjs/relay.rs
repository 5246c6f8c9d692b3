//! SockJS sessions of other nodes: the directory's use of owner routing
//! (`crate::owner`, docs/architecture.md "Sessions across HTTP requests").
//!
//! A request for a session this node does not hold asks where it lives;
//! one held by another node is served through that owner (a send forwarded
//! and acknowledged, a receive fed frame by frame); one held nowhere is
//! created here, and this node claims it before answering. This node in turn
//! serves the requests other nodes relay for the sessions it holds
//! ([`Held`]).

use std::sync::Weak;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use metrics::counter;

use super::directory::{FrameStream, Inner, Refused, SessionDirectory};
use super::frame;
use super::http_session::Answering;
use crate::owner::{self, HeldSessions, RelayError, Relayed, Route};

/// SockJS requests served for a session held by another node, by what
/// happened: `relayed`, `unknown` (the owner no longer held it), `silent`
/// (the owner did not answer: gone).
pub(crate) const RELAYED: &str = "ferrocast_sockjs_relayed_total";

/// The owner kind of the endpoint at `prefix`: one token (`sockjs_stomp`
/// for `/stomp`), so endpoints of one node never share session ids.
pub(super) fn owner_kind(prefix: &str) -> String {
    let mut kind = String::from("sockjs");
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        kind.push('_');
        kind.extend(
            part.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    kind
}

/// How a receive is answered, as a relayed request names it.
fn transport(answering: &Answering) -> String {
    if answering.streaming {
        format!("stream:{}", answering.limit)
    } else {
        "poll".into()
    }
}

fn answering(transport: &str) -> Answering {
    match transport
        .strip_prefix("stream:")
        .and_then(|limit| limit.parse().ok())
    {
        Some(limit) => Answering {
            streaming: true,
            limit,
        },
        None => Answering {
            streaming: false,
            limit: 0,
        },
    }
}

fn counted(outcome: &'static str) {
    counter!(RELAYED, "outcome" => outcome).increment(1);
}

impl SessionDirectory {
    /// Serves a receive for session `id`, which this node does not hold,
    /// from its owner; `None` when no other node holds it (create it here).
    pub(super) async fn receive_elsewhere(
        &self,
        id: &str,
        answering: &Answering,
    ) -> Option<FrameStream> {
        let (owners, kind) = self.routing();
        let owner = match owners.route(kind, id).await {
            Ok(Route::Owner(owner)) => owner,
            Ok(Route::Here) => return None,
            Err(error) => {
                tracing::warn!(%error, session = id, "cannot find a SockJS session's owner; serving it here");
                return None;
            }
        };
        match owners
            .receive(&owner, kind, id, &transport(answering))
            .await
        {
            Ok(Ok(frames)) => {
                counted("relayed");
                Some(FrameStream::from(
                    frames
                        .map(|relayed| match relayed {
                            Relayed::Frame(frame) => Bytes::from(frame),
                            Relayed::Lost => {
                                counted("lost");
                                frame::close(1011, "frames lost between nodes; reconnect")
                            }
                        })
                        .boxed(),
                ))
            }
            Ok(Err(refused)) if refused.status == 404 => {
                counted("unknown");
                owners.forget(kind, id);
                None
            }
            Ok(Err(refused)) => Some(FrameStream::from(
                futures::stream::iter([frame::close(1013, &refused.body)]).boxed(),
            )),
            Err(error) => {
                self.lost_owner(id, &error);
                None
            }
        }
    }

    /// Forwards a send for session `id`, which this node does not hold, to
    /// its owner; [`Refused::NotFound`] when nobody holds it.
    pub(super) async fn send_elsewhere(
        &self,
        id: &str,
        messages: &[String],
    ) -> Result<(), Refused> {
        let (owners, kind) = self.routing();
        let owner = match owners.route(kind, id).await {
            Ok(Route::Owner(owner)) => owner,
            Ok(Route::Here) => return Err(Refused::NotFound),
            Err(error) => {
                tracing::warn!(%error, session = id, "cannot find a SockJS session's owner");
                return Err(Refused::NotFound);
            }
        };
        let body = serde_json::to_string(messages).map_err(|_| Refused::NotFound)?;
        match owners.send(&owner, kind, id, body).await {
            Ok(Ok(())) => {
                counted("relayed");
                Ok(())
            }
            Ok(Err(_)) => {
                counted("unknown");
                owners.forget(kind, id);
                Err(Refused::NotFound)
            }
            Err(error) => {
                self.lost_owner(id, &error);
                Err(Refused::NotFound)
            }
        }
    }

    /// Claims session `id`, just created here, so that other nodes find it.
    pub(super) async fn claim(&self, id: &str) {
        let (owners, kind) = self.routing();
        if let Err(error) = owners.claim(kind, id).await {
            tracing::warn!(%error, session = id, "cannot record this node as a SockJS session's owner; other nodes will not find it");
        }
    }

    fn lost_owner(&self, id: &str, error: &RelayError) {
        counted("silent");
        let (owners, kind) = self.routing();
        owners.forget(kind, id);
        tracing::info!(%error, session = id, "a SockJS session's owner did not answer");
    }

    /// This node's owner routing, with this endpoint's sessions registered.
    fn routing(&self) -> (&owner::Owners, &str) {
        let inner = self.inner();
        let owners = inner.edge.owners();
        if !inner.held.swap(true, std::sync::atomic::Ordering::Relaxed) {
            owners.hold(&inner.owner_kind, std::sync::Arc::new(Held(self.weak())));
        }
        (owners, &inner.owner_kind)
    }
}

/// What this node does for requests other nodes relay to the sessions it
/// holds; weak, so that the node's owner routing keeps no directory alive.
struct Held(Weak<Inner>);

impl HeldSessions for Held {
    fn send(&self, id: &str, body: String) -> BoxFuture<'static, Result<(), owner::Refused>> {
        let directory = self.0.upgrade().map(SessionDirectory::from_inner);
        let id = id.to_string();
        async move {
            let messages: Vec<String> =
                serde_json::from_str(&body).map_err(|_| owner::Refused {
                    status: 500,
                    body: "Broken JSON encoding.".into(),
                })?;
            match directory {
                Some(directory) => directory
                    .send_here(&id, messages)
                    .await
                    .map_err(|_| unknown()),
                None => Err(unknown()),
            }
        }
        .boxed()
    }

    fn receive(
        &self,
        id: &str,
        transport: &str,
    ) -> Result<BoxStream<'static, String>, owner::Refused> {
        let directory = self
            .0
            .upgrade()
            .map(SessionDirectory::from_inner)
            .ok_or_else(unknown)?;
        let frames = directory
            .receive_here(id, answering(transport))
            .ok_or_else(unknown)?;
        Ok(frames
            .map(|frame| String::from_utf8_lossy(&frame).into_owned())
            .boxed())
    }
}

fn unknown() -> owner::Refused {
    owner::Refused {
        status: 404,
        body: "unknown session".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_is_one_owner_kind_token() {
        assert_eq!(owner_kind("/sockjs"), "sockjs_sockjs");
        assert_eq!(owner_kind("/ws-endpoint"), "sockjs_ws_endpoint");
        assert_eq!(owner_kind("/api/v1.stomp"), "sockjs_api_v1_stomp");
    }

    #[test]
    fn a_relayed_receive_keeps_how_it_is_answered() {
        let streaming = answering(&transport(&Answering {
            streaming: true,
            limit: 131_072,
        }));
        assert!(streaming.streaming);
        assert_eq!(streaming.limit, 131_072);
        assert!(
            !answering(&transport(&Answering {
                streaming: false,
                limit: 0
            }))
            .streaming
        );
        assert!(!answering("stream:x").streaming);
    }
}
