//! The server API's operations, shared by gRPC ([`crate::grpc`]) and the
//! HTTP mirror ([`crate::http`]): requests and replies are the messages of
//! `proto/ferrocast/v1/api.proto`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use metrics::{counter, histogram};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_core::metrics as names;
use ferrocast_core::{is_reserved, CloseReason, Publication};
use ferrocast_edge::{Edge, Feed};
use ferrocast_protocol::{publication_payload, StreamPosition};
use ferrocast_protocol::{Topic, TopicFilter};

use crate::control::{target_of, Control, Outcome};
use crate::error::ApiError;
use crate::node_facts::{NodeConfig, NodeFacts};
use crate::pb;

/// Most topics one Broadcast may name.
pub const MAX_BROADCAST_TOPICS: usize = 1000;

/// The server API of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    edge: Edge,
    control: Control,
    /// What the Config call answers.
    config: Arc<NodeConfig>,
}

/// What a Subscribe call yields: publications, then at most one error that
/// ends the stream.
pub type PublicationStream = BoxStream<'static, Result<pb::Publication, ApiError>>;

/// An open Subscribe.
pub struct Subscribed {
    /// With `since`: whether the replay reached back to it (nothing missed
    /// before the live part). `None` without `since`.
    pub recovered: Option<bool>,
    pub publications: PublicationStream,
}

impl std::fmt::Debug for Subscribed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribed")
            .field("recovered", &self.recovered)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API over `edge` in the node that `facts` describe; joins the
    /// control channel (its task stops on `shutdown`). Cluster-wide
    /// operations wait at most `timeout` for the other nodes.
    pub fn start(
        edge: Edge,
        facts: NodeFacts,
        timeout: Duration,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let control = Control::start(edge.clone(), facts.metrics, timeout, tasks, shutdown);
        Self {
            edge,
            control,
            config: facts.config,
        }
    }

    /// This node's effective configuration, secrets redacted.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        self.edge.hub().node_id()
    }

    pub async fn publish(
        &self,
        request: pb::PublishRequest,
    ) -> Result<pb::PublishResponse, ApiError> {
        let topic = self.topic(&request.topic)?;
        let (payload, content_type) = self.payload(request.data, &request.content_type)?;
        let position = self
            .publish_one(topic, payload, content_type, headers(request.headers)?)
            .await?;
        Ok(pb::PublishResponse { position })
    }

    pub async fn broadcast(
        &self,
        request: pb::BroadcastRequest,
    ) -> Result<pb::BroadcastResponse, ApiError> {
        if request.topics.is_empty() || request.topics.len() > MAX_BROADCAST_TOPICS {
            return Err(ApiError::InvalidArgument(format!(
                "a broadcast names 1 to {MAX_BROADCAST_TOPICS} topics"
            )));
        }
        let distinct: HashSet<&String> = request.topics.iter().collect();
        if distinct.len() != request.topics.len() {
            return Err(ApiError::InvalidArgument(
                "a broadcast names each topic once".into(),
            ));
        }
        let (payload, content_type) = self.payload(request.data, &request.content_type)?;
        let headers = headers(request.headers)?;
        let publishes = request.topics.iter().map(|name| {
            let topic = self.topic(name);
            let payload = payload.clone();
            let headers = headers.clone();
            let content_type = content_type.clone();
            async move {
                let outcome = match topic {
                    Ok(topic) => {
                        self.publish_one(topic, payload, content_type, headers)
                            .await
                    }
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok(position) => pb::BroadcastResult {
                        topic: name.clone(),
                        position,
                        error: None,
                    },
                    Err(error) => pb::BroadcastResult {
                        topic: name.clone(),
                        position: None,
                        error: Some(pb::Error {
                            code: error.code().into(),
                            message: error.to_string(),
                        }),
                    },
                }
            }
        });
        let results = futures::future::join_all(publishes).await;
        Ok(pb::BroadcastResponse { results })
    }

    async fn publish_one(
        &self,
        topic: Topic,
        payload: Bytes,
        content_type: Option<Arc<str>>,
        headers: Vec<(String, String)>,
    ) -> Result<Option<pb::StreamPosition>, ApiError> {
        let position = self
            .edge
            .hub()
            .publish_message(topic, payload, content_type, headers)
            .await?;
        Ok(position.map(position_pb))
    }

    pub async fn history(
        &self,
        request: pb::HistoryRequest,
    ) -> Result<pb::HistoryResponse, ApiError> {
        let topic = self.topic(&request.topic)?;
        let hub = self.edge.hub();
        if hub.namespace(topic.namespace()).history.is_none() {
            return Err(ApiError::FailedPrecondition(format!(
                "namespace {} keeps no history (history_size)",
                topic.namespace()
            )));
        }
        let limit = match request.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let read = hub
            .read_history(&topic, request.since.map(position_of), limit)
            .await
            .map_err(|error| ApiError::Unavailable(format!("cannot read the history: {error}")))?;
        Ok(pb::HistoryResponse {
            top: Some(position_pb(read.top)),
            publications: read.publications.into_iter().map(publication_pb).collect(),
            recovered: read.recovered,
        })
    }

    pub async fn presence(
        &self,
        request: pb::PresenceRequest,
    ) -> Result<pb::PresenceResponse, ApiError> {
        let topic = self.topic(&request.topic)?;
        let hub = self.edge.hub();
        if !hub.namespace(topic.namespace()).presence {
            return Err(ApiError::FailedPrecondition(format!(
                "namespace {} keeps no presence (presence = true)",
                topic.namespace()
            )));
        }
        let entries = hub
            .presence(&topic)
            .await
            .map_err(|error| ApiError::Unavailable(format!("cannot read presence: {error}")))?;
        let mut clients: Vec<pb::PresenceEntry> = entries
            .into_iter()
            .map(|entry| pb::PresenceEntry {
                client: entry.client,
                user: entry.user.unwrap_or_default(),
                node: entry.node,
                joined_at_millis: entry.joined_at,
            })
            .collect();
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(pb::PresenceResponse { clients })
    }

    pub async fn presence_stats(
        &self,
        request: pb::PresenceRequest,
    ) -> Result<pb::PresenceStatsResponse, ApiError> {
        let clients = self.presence(request).await?.clients;
        let users: BTreeSet<&str> = clients
            .iter()
            .map(|c| c.user.as_str())
            .filter(|u| !u.is_empty())
            .collect();
        Ok(pb::PresenceStatsResponse {
            clients: u32::try_from(clients.len()).unwrap_or(u32::MAX),
            users: u32::try_from(users.len()).unwrap_or(u32::MAX),
        })
    }

    pub async fn disconnect(
        &self,
        request: pb::DisconnectRequest,
    ) -> Result<pb::DisconnectResponse, ApiError> {
        let target = request.target.unwrap_or_default();
        let described = describe(&target)?;
        let outcome = self
            .control
            .command(pb::command::Action::Disconnect(target))
            .await;
        let Outcome { affected, coverage } = found(outcome, &described)?;
        Ok(pb::DisconnectResponse {
            disconnected: affected,
            coverage: Some(coverage),
        })
    }

    pub async fn unsubscribe(
        &self,
        request: pb::UnsubscribeRequest,
    ) -> Result<pb::UnsubscribeResponse, ApiError> {
        let target = request.target.clone().unwrap_or_default();
        let described = describe(&target)?;
        self.filter(&request.topic)?;
        let outcome = self
            .control
            .command(pb::command::Action::Unsubscribe(request.clone()))
            .await;
        let Outcome { affected, coverage } = found(
            outcome,
            &format!("{described} subscribed to {}", request.topic),
        )?;
        Ok(pb::UnsubscribeResponse {
            unsubscribed: affected,
            coverage: Some(coverage),
        })
    }

    pub fn info(&self) -> pb::InfoResponse {
        let nodes = self.control.nodes();
        pb::InfoResponse {
            connections: nodes.iter().map(|n| n.connections).sum(),
            subscriptions: nodes.iter().map(|n| n.subscriptions).sum(),
            nodes,
        }
    }

    /// The publications of `request.topic` from now on (after a replay from
    /// `since` for a topic with history), until the node drains or the
    /// consumer falls too far behind.
    pub async fn subscribe(&self, request: pb::SubscribeRequest) -> Result<Subscribed, ApiError> {
        let filter = self.filter(&request.topic)?;
        let since = request.since.map(position_of);
        let kept = filter.as_topic().is_some_and(|topic| {
            self.edge
                .hub()
                .namespace(topic.namespace())
                .history
                .is_some()
        });
        if since.is_some() && !kept {
            return Err(ApiError::FailedPrecondition(
                "since needs a single topic in a namespace with history".into(),
            ));
        }
        let queue_bytes = self.edge.settings().outbound_queue_bytes;
        // Subscribed before the history is read: nothing published meanwhile
        // is lost, and the feed's gate puts replay and live in offset order.
        let (feed, opened) = Feed::open(&self.edge, filter, since, queue_bytes)
            .await
            .map_err(|error| ApiError::Unavailable(format!("cannot subscribe: {error}")))?;
        let recovered = opened.and_then(|opened| opened.recovered);
        let live = feed_stream(feed);
        let draining = self.edge.draining().clone();
        let ended = stream::once(async move {
            draining.cancelled().await;
            Err(ApiError::Unavailable(
                "the node is draining; subscribe again elsewhere".into(),
            ))
        });
        Ok(Subscribed {
            recovered,
            publications: until_error(stream::select(live, ended).boxed()),
        })
    }

    /// The payload to publish and its content type (`None`: JSON): at most
    /// `--max-message-size` bytes, as for clients, and mapped like a
    /// protobuf client's ([`publication_payload`]).
    fn payload(
        &self,
        data: Bytes,
        content_type: &str,
    ) -> Result<(Bytes, Option<Arc<str>>), ApiError> {
        let limit = self.edge.settings().max_message_size;
        if data.len() > limit {
            return Err(ApiError::InvalidArgument(format!(
                "data over {limit} bytes (--max-message-size)"
            )));
        }
        publication_payload(data, content_type)
            .map_err(|error| ApiError::InvalidArgument(error.to_string()))
    }

    fn topic(&self, name: &str) -> Result<Topic, ApiError> {
        let topic = Topic::parse(name, self.edge.settings().max_topic_length)
            .map_err(|e| ApiError::InvalidArgument(format!("invalid topic {name:?}: {e}")))?;
        refuse_reserved(topic.namespace())?;
        Ok(topic)
    }

    fn filter(&self, name: &str) -> Result<TopicFilter, ApiError> {
        let filter =
            TopicFilter::parse(name, self.edge.settings().max_topic_length).map_err(|e| {
                ApiError::InvalidArgument(format!("invalid topic or pattern {name:?}: {e}"))
            })?;
        if matches!(filter.namespace(), "*" | ">") {
            return Err(ApiError::InvalidArgument(
                "a pattern's first token (the namespace) must not be a wildcard".into(),
            ));
        }
        refuse_reserved(filter.namespace())?;
        Ok(filter)
    }
}

/// Ends a stream with its first error, which is still yielded, without
/// polling it again: the live part of a Subscribe never ends by itself, so
/// a caller would otherwise wait for an item that never comes.
fn until_error(publications: PublicationStream) -> PublicationStream {
    stream::unfold(Some(publications), |publications| async move {
        let mut publications = publications?;
        let item = publications.next().await?;
        let rest = item.is_ok().then_some(publications);
        Some((item, rest))
    })
    .boxed()
}

/// A Subscribe's publications: the feed's, then the reason the feed ended.
fn feed_stream(feed: Feed) -> BoxStream<'static, Result<pb::Publication, ApiError>> {
    stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        match feed.next().await {
            Some(publication) => Some((Ok(publication_pb(publication)), Some(feed))),
            None => {
                let error = match feed.closed() {
                    Some(CloseReason::SlowConsumer) => ApiError::Unavailable(
                        "the stream fell too far behind (slow consumer); subscribe again, with since to resume".into(),
                    ),
                    Some(CloseReason::HistoryUnavailable) => ApiError::Unavailable(
                        "the history needed to fill a gap cannot be read; subscribe again, with since to resume".into(),
                    ),
                    _ => ApiError::Unavailable("the subscription ended; subscribe again".into()),
                };
                Some((Err(error), None))
            }
        }
    })
    .boxed()
}

fn refuse_reserved(namespace: &str) -> Result<(), ApiError> {
    if is_reserved(namespace) {
        return Err(ApiError::InvalidArgument(format!(
            "namespace {namespace} is reserved for the node (names starting with _ other than _user)"
        )));
    }
    Ok(())
}

/// A request's target in words, or the error that it names nothing (or two things).
fn describe(target: &pb::Target) -> Result<String, ApiError> {
    match target_of(target) {
        Some(ferrocast_edge::Target::User(user)) => Ok(format!("no session of user {user:?}")),
        Some(ferrocast_edge::Target::Client(client)) => Ok(format!("no client {client:?}")),
        None => Err(ApiError::InvalidArgument(
            "target needs exactly one of user or client".into(),
        )),
    }
}

/// The outcome, or NotFound when nothing was acted on.
fn found(outcome: Outcome, nothing: &str) -> Result<Outcome, ApiError> {
    if outcome.affected > 0 {
        return Ok(outcome);
    }
    let answered = outcome.coverage.answered.len();
    let mut message = format!("{nothing} on the {answered} node(s) that answered");
    if !outcome.coverage.missing.is_empty() {
        message.push_str(&format!(
            "; no answer in time from {}",
            outcome.coverage.missing.join(", ")
        ));
    }
    Err(ApiError::NotFound(message))
}

/// Headers as a publication carries them. They reach STOMP subscribers as
/// frame headers (STOMP 1.0 escapes nothing), so a name must be non-empty
/// and free of `:`, and neither may hold a line break or NUL.
fn headers(headers: Vec<pb::Header>) -> Result<Vec<(String, String)>, ApiError> {
    let breaks = |s: &str| s.contains(['\r', '\n', '\0']);
    headers
        .into_iter()
        .map(|h| {
            if h.name.is_empty() || h.name.contains(':') || breaks(&h.name) || breaks(&h.value) {
                return Err(ApiError::InvalidArgument(format!(
                    "header {:?}: a name is non-empty without ':', and neither name nor value holds a line break or NUL",
                    h.name
                )));
            }
            Ok((h.name, h.value))
        })
        .collect()
}

fn position_pb(position: StreamPosition) -> pb::StreamPosition {
    pb::StreamPosition {
        epoch: position.epoch,
        offset: position.offset,
    }
}

fn position_of(position: pb::StreamPosition) -> StreamPosition {
    StreamPosition {
        epoch: position.epoch,
        offset: position.offset,
    }
}

pub(crate) fn publication_pb(publication: Publication) -> pb::Publication {
    pb::Publication {
        topic: publication.topic.as_str().to_string(),
        data: publication.payload,
        content_type: publication
            .content_type
            .map(|c| c.to_string())
            .unwrap_or_default(),
        headers: publication
            .headers
            .into_iter()
            .map(|(name, value)| pb::Header { name, value })
            .collect(),
        position: publication.position.map(position_pb),
        published_at_micros: publication.published_at_micros,
    }
}

/// Counts a finished call in `ferrocast_api_requests_total` and its time in
/// `ferrocast_api_request_duration_seconds`.
pub(crate) fn record(
    method: &'static str,
    transport: &'static str,
    started: Instant,
    code: &'static str,
) {
    counter!(names::API_REQUESTS, "method" => method, "transport" => transport, "code" => code)
        .increment(1);
    histogram!(names::API_REQUEST_DURATION, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_exactly_one_thing() {
        let target = |user: &str, client: &str| pb::Target {
            user: user.into(),
            client: client.into(),
        };
        assert!(describe(&target("u", "")).is_ok());
        assert!(describe(&target("", "n-1")).is_ok());
        assert!(describe(&target("u", "n-1")).is_err());
        assert!(describe(&target("", "")).is_err());
    }

    #[test]
    fn nothing_found_names_the_missing_nodes() {
        let outcome = Outcome {
            affected: 0,
            coverage: pb::Coverage {
                answered: vec!["a".into()],
                missing: vec!["b".into()],
            },
        };
        let Err(ApiError::NotFound(message)) = found(outcome, "no session of user \"x\"") else {
            panic!("expected NotFound");
        };
        assert!(
            message.contains("1 node(s)") && message.contains("from b"),
            "{message}"
        );
    }

    #[test]
    fn a_stream_ends_after_its_first_error() {
        let items: Vec<Result<pb::Publication, ApiError>> = vec![
            Ok(pb::Publication::default()),
            Err(ApiError::Unavailable("x".into())),
            Ok(pb::Publication::default()),
        ];
        // After the error the stream would never yield again.
        let publications = stream::iter(items).chain(stream::pending()).boxed();
        let kept: Vec<_> =
            futures::executor::block_on(until_error(publications).collect::<Vec<_>>());
        assert_eq!(kept.len(), 2);
        assert!(kept[1].is_err());
    }
}
