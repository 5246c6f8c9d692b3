//! The Redis backplane: ferrocast nodes exchange publications through Redis
//! pub/sub (or sharded pub/sub on Redis Cluster).
//!
//! # Design
//!
//! A [`RedisBackplane`] holds two connections to Redis (on a Redis Cluster,
//! two connections to each member), each owned by its own task that
//! reconnects it on its own:
//!
//! - **The publisher connection** (`publisher.rs`). [`Backplane::publish`]
//!   encodes the publication as the protobuf envelope and pushes it, in call
//!   order, into a bounded queue owned by the publisher task, before it
//!   returns: the order of publish calls is the order on the wire. The task
//!   takes every queued publication at once (up to a batch limit), sends them
//!   as *one* pipeline of `PUBLISH` (or `SPUBLISH`) commands, waits for the
//!   replies within the timeout, and only then completes each publication's
//!   future. One round trip therefore carries thousands of publications under
//!   load, and a single publication when the node is quiet. A full queue, or a
//!   connection that is down, fails `publish` at once with
//!   [`BackplaneError::Unavailable`] instead of making callers wait.
//!   Publications with history and history reads are Lua scripts that travel
//!   in the same queue and pipelines (`history.rs` describes the keys, the
//!   scripts and why offsets are never duplicated or skipped), and so are
//!   presence updates and reads (`presence.rs`: a hash and a sorted set of
//!   expiry times per topic, by the server's clock).
//! - **The pub/sub connection** (`subscriber.rs`), a RESP3 connection whose
//!   push messages are handled as they are read (`receive.rs`): the envelope is
//!   decoded, this node's own publications (Redis echoes them) are dropped, and
//!   the rest go to the [`PublicationSink`] with the subscribed filter. Exact
//!   filters are `SUBSCRIBE`d (`SSUBSCRIBE` when sharded) on the channel
//!   `{prefix}{topic}`; wildcard filters are `PSUBSCRIBE`d as a glob in which
//!   each `*` or `>` token became `*`. A glob `*` also matches dots, so every
//!   pattern message is checked again with [`TopicFilter::matches`] and
//!   delivered with the original filter.
//!
//! The node's *desired* interest (`interest.rs`) lives apart from what the
//! current connection has subscribed: `subscribe` and `unsubscribe` change the
//! desired set and wake the pub/sub task, which sends the difference in
//! batches (one command with many channels) and completes the callers once
//! Redis confirmed. After a reconnect the task subscribes the whole desired
//! set again before it reports itself healthy, so interest survives outages
//! without callers doing anything.
//!
//! Both tasks detect a dead connection by an error, by the end of the stream,
//! or by a `PING` that gets no answer in time: a network path that silently
//! stalls is noticed within the configured timeout. They then report the
//! backplane down ([`Backplane::health`]), reconnect with exponential backoff
//! and full jitter (`backoff.rs`), and report it up again once connected (and,
//! for the pub/sub connection, resubscribed).
//!
//! [`Backplane::health`] is true while both connections are up. `publish`
//! follows the publisher connection alone: while only the pub/sub connection
//! is being re-established, publications still go out.
//!
//! # Deployment notes
//!
//! - Requires Redis 6.2 or newer (RESP3 push messages, `XTRIM MINID`), and
//!   for history a user allowed to run scripts (`SCRIPT LOAD`, `EVALSHA`).
//! - Sharded mode sends `SPUBLISH` and `SSUBSCRIBE` (Redis 7), one channel
//!   per `SSUBSCRIBE` command (in a cluster, the channels of one command must
//!   share a hash slot). On one server (`--redis-sharded`) it talks to the
//!   server in the URL and follows no `MOVED` redirection: a refused channel
//!   fails its `subscribe` with [`BackplaneError::Rejected`] and is tried
//!   again on the next reconnect.
//! - A Redis Cluster (`redis+cluster://seed,seed…`) is always sharded. Both
//!   tasks then hold the redis crate's cluster connection (`connection.rs`,
//!   `Link`): a connection to every member, each command
//!   routed to the master of its key's slot, `MOVED` and `ASK` followed. A
//!   publish batch goes as one pipeline per slot; a topic's channel and keys
//!   share its slot, so its requests keep their order. The pub/sub task
//!   treats the loss of any member's connection, and an `SUNSUBSCRIBE` that
//!   Redis sent for a channel still wanted (its slot moved), like the loss
//!   of its connection: it connects again, learns the slots and subscribes
//!   everything where it lives now; and so it does when the slot map
//!   (`CLUSTER SLOTS`, read at every health check) differs from the one it
//!   subscribed under, since a subscription made during a failover may not
//!   be served by the master that ends up with its slot. History across a
//!   failover: `history.rs`.
//! - `rediss://` uses rustls with the ring provider and the system's trust
//!   store (`SSL_CERT_FILE` / `SSL_CERT_DIR` override it).
//! - Logs and errors name Redis by its URL without user, password or query.
//!
//! [`BackplaneError::Rejected`]: ferrocast_core::backplane::BackplaneError::Rejected
//! [`Backplane::publish`]: ferrocast_core::backplane::Backplane::publish
//! [`Backplane::health`]: ferrocast_core::backplane::Backplane::health
//! [`BackplaneError::Unavailable`]: ferrocast_core::backplane::BackplaneError::Unavailable
//! [`PublicationSink`]: ferrocast_core::backplane::PublicationSink
//! [`TopicFilter::matches`]: ferrocast_protocol::TopicFilter::matches

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, BoxFuture, FutureExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use ferrocast_core::backplane::envelope;
use ferrocast_core::backplane::{
    Backplane, BackplaneError, HistoryPage, HistoryPolicy, PresenceEntry, PublicationSink,
};
use ferrocast_core::{NodeId, Publication};
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

mod backoff;
mod connection;
mod health;
mod history;
mod interest;
mod presence;
mod publisher;
mod receive;
mod subscriber;

use connection::Connector;
use health::Health;
use interest::{Interest, WaiterKind};
use publisher::{Outgoing, Reply, Request};

/// How many publications may wait for the publisher task. Beyond this,
/// `publish` fails at once: a backlog this deep means Redis cannot keep up,
/// and waiting would only grow memory and latency.
const PUBLISH_QUEUE: usize = 64 * 1024;

/// How to reach Redis and how to name channels there.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS) for
    /// one server; `redis+cluster://[user:password@]host:port,host:port…`
    /// or `rediss+cluster://…` for a Redis Cluster (the seeds; one is
    /// enough, more survive a seed being down).
    pub url: String,
    /// Prefix of channel names: topic `chat.a` travels on channel
    /// `{prefix}chat.a`. Default `"ferrocast:"`. Lets several clusters (or
    /// other applications) share one Redis. Must not contain glob characters
    /// `* ? [ ] \`, since it is also part of every `PSUBSCRIBE` pattern, nor
    /// braces, since the channel is the hash tag of the topic's history keys.
    pub channel_prefix: String,
    /// Sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) for Redis Cluster, where
    /// classic pub/sub broadcasts every message to every shard. Sharded
    /// pub/sub has no pattern subscriptions, so wildcard filters are refused.
    /// Default false; always on for a `redis+cluster://` URL.
    pub sharded: bool,
    /// Timeout of each operation (connect, a publish pipeline, a subscribe)
    /// and of the connection health check: a connection that does not answer
    /// a `PING` within it is considered dead. Default 5 s.
    pub timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_string(),
            channel_prefix: "ferrocast:".to_string(),
            sharded: false,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What the tasks of one backplane share with it and with each other.
pub(crate) struct Shared {
    /// Publications whose origin is this node are dropped on receipt: the hub
    /// delivered them locally already.
    pub(crate) node_id: NodeId,
    pub(crate) prefix: String,
    pub(crate) sharded: bool,
    pub(crate) timeout: Duration,
    /// Opens connections; knows the URL (and the credentials in it).
    pub(crate) connector: Connector,
    pub(crate) health: Health,
    /// The desired interest, also read by the receive path to map channels and
    /// patterns back to filters.
    pub(crate) interest: Interest,
    pub(crate) sink: Arc<dyn PublicationSink>,
}

impl Shared {
    /// `PUBLISH`, or `SPUBLISH` when sharded.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

/// A node's handle on the Redis backplane. Dropping it stops its tasks, which
/// closes both connections (Redis then forgets the node's subscriptions).
pub struct RedisBackplane {
    shared: Arc<Shared>,
    /// The publisher task's queue: bounded, filled with `try_send` so that
    /// `publish` never waits.
    queue: mpsc::Sender<Outgoing>,
    /// Cancelled on drop; both tasks stop on it.
    stop: CancellationToken,
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node_id", &self.shared.node_id)
            .field("url", &self.shared.connector.redacted_url())
            .field("prefix", &self.shared.prefix)
            .field("sharded", &self.shared.sharded)
            .field("up", &self.shared.health.is_up())
            .finish()
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Characters that have a meaning in Redis glob patterns.
const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '\\'];
/// Characters that delimit a Redis Cluster hash tag.
const HASH_TAG_CHARS: &[char] = &['{', '}'];

impl RedisBackplane {
    /// Validates the settings (a bad URL or prefix is
    /// `Err(BackplaneError::Rejected(reason))`) and starts the connection
    /// tasks. Does not wait for Redis: [`Backplane::health`] starts false and
    /// turns true once both connections are up.
    pub async fn start(
        node_id: NodeId,
        settings: RedisSettings,
        sink: Arc<dyn PublicationSink>,
    ) -> Result<Self, BackplaneError> {
        let forbidden = [
            (
                GLOB_CHARS,
                "a glob character (the prefix is part of PSUBSCRIBE patterns)",
            ),
            (
                HASH_TAG_CHARS,
                "a brace (the channel is the hash tag of history keys)",
            ),
        ];
        for (chars, why) in forbidden {
            if let Some(c) = settings.channel_prefix.chars().find(|c| chars.contains(c)) {
                return Err(BackplaneError::Rejected(format!(
                    "the redis channel prefix {:?} contains {c:?}, {why}",
                    settings.channel_prefix
                )));
            }
        }
        if settings.timeout.is_zero() {
            return Err(BackplaneError::Rejected(
                "the redis timeout must be greater than zero".to_string(),
            ));
        }
        let connector = Connector::new(&settings.url, settings.timeout)?;
        let shared = Arc::new(Shared {
            node_id,
            prefix: settings.channel_prefix,
            // Classic pub/sub on a cluster would broadcast every message to
            // every member.
            sharded: settings.sharded || connector.is_cluster(),
            timeout: settings.timeout,
            connector,
            health: Health::new(),
            interest: Interest::default(),
            sink,
        });
        let stop = CancellationToken::new();
        let (queue, queued) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(publisher::run(shared.clone(), queued, stop.clone()));
        tokio::spawn(subscriber::run(shared.clone(), stop.clone()));
        Ok(Self {
            shared,
            queue,
            stop,
        })
    }

    /// Queues `request` for the publisher task; the receiver gets Redis's
    /// reply. Fails at once while the publisher connection is down or the
    /// queue is full.
    fn enqueue(&self, request: Request) -> Result<oneshot::Receiver<Reply>, BackplaneError> {
        if !self.shared.health.publisher_up.load(Ordering::Acquire) {
            return Err(BackplaneError::Unavailable(
                "not connected to redis".to_string(),
            ));
        }
        let (done, reply) = oneshot::channel();
        match self.queue.try_send(Outgoing { request, done }) {
            Ok(()) => Ok(reply),
            Err(mpsc::error::TrySendError::Full(_)) => Err(BackplaneError::Unavailable(
                "the redis publish queue is full".to_string(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Self::stopped()),
        }
    }

    fn stopped() -> BackplaneError {
        BackplaneError::Unavailable("the redis backplane is stopped".to_string())
    }
}

impl Backplane for RedisBackplane {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish(
        &self,
        publication: Publication,
        history: Option<HistoryPolicy>,
    ) -> BoxFuture<'static, Result<Option<StreamPosition>, BackplaneError>> {
        let channel = interest::channel_name(&self.shared.prefix, publication.topic.as_str());
        let request = match history {
            None => Request::Publish {
                channel,
                envelope: envelope::encode(&publication),
            },
            Some(policy) => Request::Script(history::Call::append(
                channel,
                publication,
                policy,
                self.shared.publish_command(),
            )),
        };
        match self.enqueue(request) {
            Ok(reply) => async move {
                let reply = reply.await.unwrap_or_else(|_| Err(Self::stopped()))?;
                match history {
                    None => Ok(None),
                    Some(_) => history::position(reply).map(Some),
                }
            }
            .boxed(),
            Err(error) => future::ready(Err(error)).boxed(),
        }
    }

    fn history(
        &self,
        topic: &Topic,
        policy: HistoryPolicy,
        after: u64,
    ) -> BoxFuture<'static, Result<HistoryPage, BackplaneError>> {
        let channel = interest::channel_name(&self.shared.prefix, topic.as_str());
        let request = Request::Script(history::Call::read(&channel, policy, after));
        match self.enqueue(request) {
            Ok(reply) => {
                async move { history::page(reply.await.unwrap_or_else(|_| Err(Self::stopped()))?) }
                    .boxed()
            }
            Err(error) => future::ready(Err(error)).boxed(),
        }
    }

    fn subscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        if self.shared.sharded && filters.iter().any(TopicFilter::is_pattern) {
            let reason = if self.shared.connector.is_cluster() {
                "wildcard subscriptions are not available on a Redis Cluster \
                 (sharded pub/sub has no pattern subscriptions)"
            } else {
                "wildcard subscriptions need non-sharded pub/sub"
            };
            return future::ready(Err(BackplaneError::Rejected(reason.to_string()))).boxed();
        }
        self.change_interest(filters, WaiterKind::Subscribe)
    }

    fn unsubscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        self.change_interest(filters, WaiterKind::Unsubscribe)
    }

    fn health(&self) -> watch::Receiver<bool> {
        self.shared.health.subscribe()
    }

    /// One script call per topic, queued together (one pipeline).
    fn presence_update(
        &self,
        add: Vec<(Topic, PresenceEntry)>,
        remove: Vec<(Topic, String)>,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let mut by_topic: HashMap<Topic, (Vec<PresenceEntry>, Vec<String>)> = HashMap::new();
        for (topic, entry) in add {
            by_topic.entry(topic).or_default().0.push(entry);
        }
        for (topic, client) in remove {
            by_topic.entry(topic).or_default().1.push(client);
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut replies = Vec::with_capacity(by_topic.len());
        for (topic, (add, remove)) in &by_topic {
            let call = presence::update(&self.shared.prefix, topic, add, remove, ttl_ms);
            match self.enqueue(Request::Script(call)) {
                Ok(reply) => replies.push(reply),
                Err(error) => return future::ready(Err(error)).boxed(),
            }
        }
        async move {
            for reply in replies {
                reply.await.unwrap_or_else(|_| Err(Self::stopped()))?;
            }
            Ok(())
        }
        .boxed()
    }

    fn presence(
        &self,
        topic: &Topic,
    ) -> BoxFuture<'static, Result<Vec<PresenceEntry>, BackplaneError>> {
        let request = Request::Script(presence::read(&self.shared.prefix, topic));
        match self.enqueue(request) {
            Ok(reply) => async move {
                presence::entries(reply.await.unwrap_or_else(|_| Err(Self::stopped()))?)
            }
            .boxed(),
            Err(error) => future::ready(Err(error)).boxed(),
        }
    }
}

impl RedisBackplane {
    /// Changes the desired interest and lets the pub/sub task apply it; the
    /// future completes with the task's outcome.
    fn change_interest(
        &self,
        filters: Vec<TopicFilter>,
        kind: WaiterKind,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        if filters.is_empty() {
            return future::ready(Ok(())).boxed();
        }
        let outcome = self
            .shared
            .interest
            .change(&self.shared.prefix, filters, kind);
        self.shared.interest.wake();
        async move { outcome.await.unwrap_or_else(|_| Err(Self::stopped())) }.boxed()
    }
}
