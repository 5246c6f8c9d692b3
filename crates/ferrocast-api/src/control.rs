//! The control channel: how nodes carry out the server API's cluster-wide
//! operations and know about each other.
//!
//! It rides on the backplane like any topic, in the reserved namespace
//! [`CONTROL_NAMESPACE`] that clients can neither read nor write (three
//! topics, each node subscribed to all three):
//!
//! - `_ctl.status`: every node publishes its [`pb::NodeInfo`] every
//!   [`STATUS_INTERVAL`], at once when it sees a node it did not know, and
//!   with `leaving` when it stops. A node not heard from for
//!   [`NODE_EXPIRY`] is gone. This table answers Info without asking
//!   anybody, and says which nodes a command waits for.
//! - `_ctl.command`: a Disconnect or Unsubscribe for every node, this one
//!   included (a node gets its own publications through local delivery).
//! - `_ctl.reply`: each node's answer, matched to the waiting call by id.
//!
//! A command waits for the nodes it knows, at most the API timeout; the
//! nodes that did not answer are reported as missing instead of holding the
//! call (a crashed node stays known for up to [`NODE_EXPIRY`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryFutureExt};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ferrocast_core::CONTROL_NAMESPACE;
use ferrocast_edge::{Edge, Feed, MetricsRender, Target};
use ferrocast_protocol::{Topic, TopicFilter};

use crate::node_facts::Figures;
use crate::pb;

/// How often each node publishes its status.
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// A node silent this long is taken for gone.
pub(crate) const NODE_EXPIRY: Duration = Duration::from_secs(6);
/// Bound of the control feed's queue; the channel carries little.
const FEED_BYTES: usize = 16 * 1024 * 1024;
/// Pause before subscribing again after the control feed failed.
const RETRY: Duration = Duration::from_secs(1);
const CONTENT_TYPE: &str = "application/x-protobuf; ferrocast.v1.ControlMessage";

/// What a node knows of another.
#[derive(Debug, Clone)]
struct Known {
    info: pb::NodeInfo,
    heard: Instant,
}

/// The node's end of the control channel. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    edge: Edge,
    /// The node's metrics, whose figures each status carries.
    metrics: MetricsRender,
    started: Instant,
    /// Every node heard from, by id (this one included once its own status
    /// came back).
    nodes: Mutex<HashMap<String, Known>>,
    /// Calls waiting for replies, by command id.
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<pb::CommandReply>>>,
    /// How long a command waits for the other nodes.
    timeout: Duration,
    status_topic: Topic,
    command_topic: Topic,
    reply_topic: Topic,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("edge", &self.edge)
            .field("nodes", &self.nodes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How a cluster-wide command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Sessions or subscriptions acted on, over the nodes that answered.
    pub(crate) affected: u32,
    pub(crate) coverage: pb::Coverage,
}

impl Control {
    /// Joins the control channel and starts the task that serves it (until
    /// `shutdown`, when it says this node is leaving).
    pub(crate) fn start(
        edge: Edge,
        metrics: MetricsRender,
        timeout: Duration,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let topic = |name: &str| {
            Topic::parse(&format!("{CONTROL_NAMESPACE}.{name}"), usize::MAX)
                .unwrap_or_else(|_| unreachable!("control topics follow the topic grammar"))
        };
        let control = Self {
            inner: Arc::new(Inner {
                edge,
                metrics,
                started: Instant::now(),
                nodes: Mutex::new(HashMap::new()),
                waiting: Mutex::new(HashMap::new()),
                timeout,
                status_topic: topic("status"),
                command_topic: topic("command"),
                reply_topic: topic("reply"),
            }),
        };
        tasks.spawn(control.clone().run(shutdown));
        control
    }

    /// This node's status now.
    pub(crate) fn own_info(&self) -> pb::NodeInfo {
        let edge = &self.inner.edge;
        let hub = edge.hub();
        let (subscriptions, topics) = hub.counts();
        let figures = Figures::read(&(self.inner.metrics)());
        pb::NodeInfo {
            id: hub.node_id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            backplane: hub.backplane_kind().to_string(),
            uptime_seconds: self.inner.started.elapsed().as_secs(),
            connections: edge.connection_count() as u64,
            subscriptions,
            topics,
            draining: edge.is_draining(),
            last_seen_millis: 0,
            connections_by_protocol: figures.connections_by_protocol,
            messages_delivered: figures.messages_delivered,
            messages_published: figures.messages_published,
            backplane_up: *hub.backplane_health().borrow(),
        }
    }

    /// Every node heard from within [`NODE_EXPIRY`], this one first and
    /// always present (with its status now).
    pub(crate) fn nodes(&self) -> Vec<pb::NodeInfo> {
        let own = self.own_info();
        let mut others: Vec<pb::NodeInfo> = self
            .live()
            .into_iter()
            .filter(|(id, _)| *id != own.id)
            .map(|(_, known)| pb::NodeInfo {
                last_seen_millis: known.heard.elapsed().as_millis() as u64,
                ..known.info
            })
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        let mut nodes = vec![own];
        nodes.extend(others);
        nodes
    }

    fn live(&self) -> Vec<(String, Known)> {
        let mut nodes = self.inner.nodes.lock();
        nodes.retain(|_, known| known.heard.elapsed() < NODE_EXPIRY);
        nodes
            .iter()
            .map(|(id, known)| (id.clone(), known.clone()))
            .collect()
    }

    /// Has every node carry out `action` and waits for their replies, at
    /// most the API timeout.
    pub(crate) async fn command(&self, action: pb::command::Action) -> Outcome {
        let own = self.inner.edge.hub().node_id().to_string();
        let mut expected: BTreeSet<String> = self.live().into_iter().map(|(id, _)| id).collect();
        expected.insert(own.clone());
        let id = format!("{own}/{:016x}", rand::random::<u64>());
        let (tx, mut replies) = mpsc::unbounded_channel();
        self.inner.waiting.lock().insert(id.clone(), tx);
        let command = pb::ControlMessage {
            kind: Some(pb::control_message::Kind::Command(pb::Command {
                id: id.clone(),
                from_node: own,
                action: Some(action),
            })),
        };
        if let Err(error) = self.send(&self.inner.command_topic, command).await {
            tracing::warn!(%error, "control command did not reach the backplane; only this node acts on it");
        }
        let mut affected = 0;
        let mut answered = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        while !expected.is_subset(&answered) {
            match tokio::time::timeout_at(deadline, replies.recv()).await {
                Ok(Some(reply)) => {
                    if answered.insert(reply.node) {
                        affected += reply.affected;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        self.inner.waiting.lock().remove(&id);
        let missing = expected.difference(&answered).cloned().collect();
        Outcome {
            affected,
            coverage: pb::Coverage {
                answered: answered.into_iter().collect(),
                missing,
            },
        }
    }

    async fn send(
        &self,
        topic: &Topic,
        message: pb::ControlMessage,
    ) -> Result<(), ferrocast_core::PublishError> {
        let payload = Bytes::from(message.encode_to_vec());
        self.inner
            .edge
            .hub()
            .publish_message(
                topic.clone(),
                payload,
                Some(Arc::from(CONTENT_TYPE)),
                Vec::new(),
            )
            .await
            .map(|_| ())
    }

    async fn send_status(&self, leaving: bool) {
        let status = pb::ControlMessage {
            kind: Some(pb::control_message::Kind::Status(pb::NodeStatus {
                info: Some(self.own_info()),
                leaving,
            })),
        };
        if let Err(error) = self.send(&self.inner.status_topic, status).await {
            tracing::debug!(%error, "cannot publish this node's status");
        }
    }

    /// Serves the channel until `shutdown`: subscribes (again after a
    /// failure), publishes the status, answers commands.
    async fn run(self, shutdown: CancellationToken) {
        // Three topics rather than one pattern: Redis sharded pub/sub
        // (--redis-sharded) refuses patterns.
        let topics = [
            &self.inner.status_topic,
            &self.inner.command_topic,
            &self.inner.reply_topic,
        ];
        let mut tick = tokio::time::interval(STATUS_INTERVAL);
        'subscribe: loop {
            let open = futures::future::try_join_all(topics.iter().map(|topic| {
                Feed::open(
                    &self.inner.edge,
                    TopicFilter::from((*topic).clone()),
                    None,
                    FEED_BYTES,
                )
                .map_ok(|(feed, _)| feed)
            }));
            let opened = tokio::select! {
                opened = open => opened,
                () = shutdown.cancelled() => return,
            };
            let mut feed = match opened {
                // Each feed ends with a `None`: one feed ending (a
                // backplane failure, an overflow) rejoins all three.
                Ok(feeds) => futures::stream::select_all(feeds.into_iter().map(|feed| {
                    feed.map(Some)
                        .chain(futures::stream::once(async { None }))
                        .boxed()
                })),
                Err(error) => {
                    tracing::warn!(%error, "cannot join the control channel; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => continue 'subscribe,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    publication = feed.next() => match publication {
                        Some(Some(publication)) => self.handle(publication.payload).await,
                        Some(None) | None => {
                            tracing::warn!("control channel feed ended; joining again");
                            continue 'subscribe;
                        }
                    },
                    _ = tick.tick() => self.send_status(false).await,
                    () = shutdown.cancelled() => {
                        self.send_status(true).await;
                        return;
                    }
                }
            }
        }
    }

    async fn handle(&self, payload: Bytes) {
        let message = match pb::ControlMessage::decode(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "undecodable control message ignored");
                return;
            }
        };
        match message.kind {
            Some(pb::control_message::Kind::Status(status)) => self.heard(status).await,
            Some(pb::control_message::Kind::Command(command)) => {
                let affected = self.carry_out(command.action);
                let reply = pb::ControlMessage {
                    kind: Some(pb::control_message::Kind::Reply(pb::CommandReply {
                        id: command.id,
                        node: self.inner.edge.hub().node_id().to_string(),
                        affected,
                    })),
                };
                if let Err(error) = self.send(&self.inner.reply_topic, reply).await {
                    tracing::warn!(%error, "cannot answer a control command");
                }
            }
            Some(pb::control_message::Kind::Reply(reply)) => {
                if let Some(waiting) = self.inner.waiting.lock().get(&reply.id) {
                    let _ = waiting.send(reply);
                }
            }
            None => {}
        }
    }

    /// Records a node's status; a node seen for the first time gets this
    /// one's status at once, so that nodes learn of each other quickly.
    async fn heard(&self, status: pb::NodeStatus) {
        let Some(info) = status.info else {
            return;
        };
        let own = info.id == **self.inner.edge.hub().node_id();
        let new = {
            let mut nodes = self.inner.nodes.lock();
            if status.leaving {
                nodes.remove(&info.id);
                false
            } else {
                let id = info.id.clone();
                let known = Known {
                    info,
                    heard: Instant::now(),
                };
                nodes.insert(id, known).is_none()
            }
        };
        if new && !own {
            self.send_status(false).await;
        }
    }

    /// Acts on this node's sessions; returns how many were affected.
    fn carry_out(&self, action: Option<pb::command::Action>) -> u32 {
        let edge = &self.inner.edge;
        let affected = match action {
            Some(pb::command::Action::Disconnect(target)) => match target_of(&target) {
                Some(target) => edge.disconnect(&target),
                None => 0,
            },
            Some(pb::command::Action::Unsubscribe(request)) => {
                let target = request.target.as_ref().and_then(target_of);
                let filter = TopicFilter::parse(&request.topic, usize::MAX).ok();
                match (target, filter) {
                    (Some(target), Some(filter)) => edge.unsubscribe(&target, &filter),
                    _ => 0,
                }
            }
            None => 0,
        };
        u32::try_from(affected).unwrap_or(u32::MAX)
    }
}

/// The edge's target for a request's, if it names exactly one thing.
pub(crate) fn target_of(target: &pb::Target) -> Option<Target> {
    match (target.user.is_empty(), target.client.is_empty()) {
        (false, true) => Some(Target::User(target.user.clone())),
        (true, false) => Some(Target::Client(target.client.clone())),
        _ => None,
    }
}
