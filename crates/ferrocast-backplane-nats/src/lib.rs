//! The NATS backplane: publications travel between nodes over NATS core
//! pub/sub, one subject per topic.
//!
//! - **Subjects.** Topic `chat.a` is published on `{prefix}.chat.a`; a filter
//!   subscribes `{prefix}.{filter}`. ferrocast's wildcards are NATS's (`*` one
//!   token, `>` one or more trailing tokens) and topic tokens are valid NATS
//!   tokens, so NATS does the matching and a node receives only what it has
//!   interest in.
//! - **Payload.** The protobuf envelope of
//!   [`ferrocast_core::backplane::envelope`], which carries the topic, the
//!   origin node and everything else of the publication.
//! - **Own publications.** The connection is opened with `no_echo`, so NATS
//!   does not send a node its own publications; envelopes whose origin is this
//!   node are dropped as well, because `no_echo` is per connection and another
//!   connection may carry them.
//! - **Publishing** goes through a bounded queue and one task that batches
//!   and flushes (module `publisher`); **interest** is one NATS subscription
//!   per filter, all forwarded into the node by one task (module
//!   `subscriptions`);
//!   **health** follows the connection and **stalls** are detected by pings
//!   (module `connection`).
//! - **Server round trips.** Subscribe and unsubscribe complete only when the
//!   NATS server has processed the SUB/UNSUB, so that a publication another
//!   node makes afterwards is routed accordingly. async-nats's `flush` only
//!   flushes the socket, so the round trip is a request on the bare prefix
//!   subject (`ferrocast`), which the server answers with "no responders".
//!   The NATS account therefore needs publish permission on `{prefix}` and
//!   `{prefix}.>`, and subscribe permission on `{prefix}.>` and `_INBOX.>`.
//!   A foreign subscriber covering the bare prefix (`nats sub '>'`) swallows
//!   the round trip: subscribe then fails with `Timeout` although the interest
//!   is applied (logged with that cause).
//!
//! Live delivery is at most once: NATS core does not store messages, so what
//! is published while a node is disconnected does not reach it (of topics
//! with history, a node reads back what it missed).
//!
//! # History
//! Namespaces with history keep it in NATS JetStream (module `history`, and
//! module `streams` for the streams): one stream per namespace, created on
//! first use, whose subjects are `{prefix}-history.{namespace}.{topic}`. A
//! publication with history is published to the stream with the position it
//! should get, and stored only if no other publication came in between; the
//! stream then republishes it to `{prefix}.{topic}`, where the other nodes
//! receive it like any publication. History therefore needs JetStream on the
//! server (nats-server 2.9 or newer) and, with permissions, publish rights on
//! `{prefix}-history.>` and `$JS.API.>` for the account.
//!
//! # NATS clusters
//! The URL may list several servers of a cluster (comma-separated); the
//! client connects to one and moves to another when it fails, learning the
//! others from the cluster as well. Streams are created with
//! [`NatsSettings::stream_replicas`] replicas: by default 3 when the server
//! is in a cluster of at least 3, so that a publication the history
//! acknowledged is stored on a majority of servers and survives one of them
//! dying. Live delivery stays at most once across a failover: what is
//! published on the NATS core subjects while a node reconnects is lost to it,
//! and recovered from the history (or reported as not recovered). Replicated
//! history needs nats-server 2.10 or later: earlier servers may store two
//! racing appends that expected the same sequence, so on them streams get
//! one replica (and a warning is logged). Presence streams keep one replica:
//! the nodes' refreshes rebuild presence after a server dies.
//!
//! # Presence
//! Presence entries are kept in JetStream too (module `presence`): one
//! in-memory stream per namespace, one subject per topic and client, the
//! presence ttl as the stream's `max_age`, so that entries nobody refreshes
//! expire on the server.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Subject};
use futures::future::{self, BoxFuture, FutureExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use ferrocast_core::backplane::{
    envelope, Backplane, BackplaneError, HistoryPage, HistoryPolicy, PresenceEntry, PublicationSink,
};
use ferrocast_core::{NodeId, Publication};
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

mod connection;
mod history;
mod presence;
mod publisher;
mod settings;
mod streams;
mod subscriptions;

pub use settings::NatsSettings;

use connection::ConnectionState;
use history::History;
use publisher::Outgoing;
use settings::UrlAuth;
use subscriptions::{Forwarding, Interest};

/// A node's connection to the NATS backplane. Dropping it stops its tasks and
/// closes its connection, which removes its subscriptions from the server.
pub struct NatsBackplane {
    state: Arc<ConnectionState>,
    client: Client,
    timeout: Duration,
    sync_subject: Subject,
    forwarding: Forwarding,
    interest: Mutex<Interest>,
    queue: mpsc::Sender<Outgoing>,
    /// Publications with history and history reads (JetStream).
    history: Arc<History>,
    publisher: JoinHandle<()>,
    monitor: JoinHandle<()>,
    /// Forwards every subscription's messages to the sink (module
    /// `subscriptions`).
    forwarder: JoinHandle<()>,
}

impl fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("node_id", &self.state.node_id)
            .field("url", &self.state.url)
            .field("subject_prefix", &self.forwarding.prefix)
            .field("up", &self.state.is_up())
            .field("filters", &self.interest.lock().len())
            .finish()
    }
}

impl NatsBackplane {
    /// Validates the settings and starts connecting.
    ///
    /// Returns `Rejected` with the reason for a bad URL, subject prefix,
    /// timeout, or an unreadable credentials or CA file. Does not wait for
    /// NATS: a node starts (and serves its local clients) while the backplane
    /// is still unreachable; [`Backplane::health`] starts false and turns true
    /// once connected.
    pub async fn start(
        node_id: NodeId,
        settings: NatsSettings,
        sink: Arc<dyn PublicationSink>,
    ) -> Result<Self, BackplaneError> {
        let NatsSettings {
            url,
            subject_prefix,
            credentials_file,
            tls_ca_file,
            timeout,
            stream_replicas,
        } = settings;
        if timeout.is_zero() {
            return Err(BackplaneError::Rejected(
                "the NATS timeout must be greater than zero".to_string(),
            ));
        }
        if let Some(replicas) = stream_replicas {
            if !(1..=settings::MAX_STREAM_REPLICAS).contains(&replicas) {
                return Err(BackplaneError::Rejected(format!(
                    "NATS stream replicas must be 1 to {}, not {replicas}",
                    settings::MAX_STREAM_REPLICAS
                )));
            }
        }
        settings::validate_prefix(&subject_prefix)?;
        let parsed = settings::parse_url(&url)?;

        let state = ConnectionState::new(node_id.clone(), parsed.redacted.clone());
        let mut options = ConnectOptions::new()
            .name(format!("ferrocast {node_id}"))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            // Three unanswered ping intervals drop the connection: see
            // `connection` for why this detects a stall within `timeout`.
            .ping_interval((timeout / 3).max(Duration::from_millis(10)))
            .event_callback({
                let state = state.clone();
                move |event| {
                    let state = state.clone();
                    async move { state.on_event(event) }
                }
            })
            .reconnect_delay_callback({
                let state = state.clone();
                move |attempts| state.reconnect_delay(attempts)
            });
        let url_has_credentials = !matches!(parsed.auth, UrlAuth::None);
        options = match parsed.auth {
            UrlAuth::None => options,
            UrlAuth::Token(token) => options.token(token),
            UrlAuth::UserPassword(user, password) => options.user_and_password(user, password),
        };
        if let Some(path) = credentials_file {
            if url_has_credentials {
                return Err(BackplaneError::Rejected(
                    "give NATS credentials either in the URL or as a credentials file, not both"
                        .to_string(),
                ));
            }
            options = options.credentials_file(&path).await.map_err(|error| {
                BackplaneError::Rejected(format!(
                    "cannot use the NATS credentials file {}: {error}",
                    path.display()
                ))
            })?;
        }
        if let Some(path) = tls_ca_file {
            let pem = tokio::fs::read(&path).await.map_err(|error| {
                BackplaneError::Rejected(format!(
                    "cannot read the NATS CA file {}: {error}",
                    path.display()
                ))
            })?;
            if !pem
                .windows(b"-----BEGIN CERTIFICATE-----".len())
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(BackplaneError::Rejected(format!(
                    "the NATS CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            options = options.add_root_certificates(path).require_tls(true);
        }

        let client = options.connect(parsed.servers).await.map_err(|error| {
            BackplaneError::Rejected(format!("invalid NATS connection settings: {error}"))
        })?;
        tracing::info!(url = %state.url, node = %node_id, "connecting to the NATS backplane");

        let sync_subject = Subject::from(subject_prefix.clone());
        let (queue, queued) = mpsc::channel(publisher::QUEUE_CAPACITY);
        let publisher = tokio::spawn(publisher::run(
            client.clone(),
            queued,
            state.health.subscribe(),
            timeout,
        ));
        let monitor = tokio::spawn(connection::monitor(
            client.clone(),
            state.clone(),
            sync_subject.clone(),
            timeout,
        ));
        let history = Arc::new(History::new(
            client.clone(),
            &subject_prefix,
            timeout,
            stream_replicas,
        ));
        let (forwarding, forwarder) = Forwarding::start(
            client.clone(),
            node_id,
            Arc::from(subject_prefix),
            sink,
            timeout,
        );
        Ok(Self {
            forwarding,
            forwarder,
            state,
            client,
            timeout,
            sync_subject,
            interest: Mutex::new(Interest::new()),
            queue,
            history,
            publisher,
            monitor,
        })
    }

    /// Up, as far as this node can tell right now: the health watch (which
    /// follows the connection events) and the client's own connection state
    /// (which changes first).
    fn is_connected(&self) -> bool {
        self.state.is_up() && self.client.connection_state() == State::Connected
    }

    fn unavailable() -> BackplaneError {
        BackplaneError::Unavailable("not connected to NATS".to_string())
    }
}

/// A server round trip within what is left until `deadline`; a timeout is
/// reported as the operation's `timeout`.
async fn round_trip_until(
    client: &Client,
    subject: &Subject,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), BackplaneError> {
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    connection::round_trip(client, subject, remaining.max(Duration::from_millis(1)))
        .await
        .map_err(|error| match error {
            BackplaneError::Timeout(_) => BackplaneError::Timeout(timeout),
            other => other,
        })
}

impl Drop for NatsBackplane {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Relaxed);
        self.publisher.abort();
        self.monitor.abort();
        self.forwarder.abort();
        for entry in self.interest.lock().values() {
            entry.abort();
        }
        // The last `Client` handles go with `self`, the aborted tasks and
        // their subscribers; async-nats then closes the connection.
    }
}

impl Backplane for NatsBackplane {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn publish(
        &self,
        publication: Publication,
        history: Option<HistoryPolicy>,
    ) -> BoxFuture<'static, Result<Option<StreamPosition>, BackplaneError>> {
        if !self.is_connected() {
            return future::ready(Err(Self::unavailable())).boxed();
        }
        if let Some(policy) = history {
            return self
                .history
                .append(publication, policy)
                .map(|appended| appended.map(Some))
                .boxed();
        }
        let payload = envelope::encode(&publication);
        if payload.len() > self.client.max_payload() {
            return future::ready(Err(BackplaneError::Rejected(format!(
                "publication of {} bytes exceeds the NATS max_payload of {} bytes",
                payload.len(),
                self.client.max_payload()
            ))))
            .boxed();
        }
        let (done, completion) = oneshot::channel();
        let outgoing = Outgoing {
            subject: self.forwarding.subject(publication.topic.as_str()),
            payload,
            done,
        };
        if let Err(error) = self.queue.try_send(outgoing) {
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "NATS publish queue is full",
                mpsc::error::TrySendError::Closed(_) => "NATS publisher has stopped",
            };
            return future::ready(Err(BackplaneError::Unavailable(reason.to_string()))).boxed();
        }
        async move {
            completion
                .await
                .unwrap_or_else(|_| {
                    Err(BackplaneError::Unavailable(
                        "NATS publisher stopped before sending".to_string(),
                    ))
                })
                .map(|()| None)
        }
        .boxed()
    }

    fn history(
        &self,
        topic: &Topic,
        policy: HistoryPolicy,
        after: u64,
    ) -> BoxFuture<'static, Result<HistoryPage, BackplaneError>> {
        if !self.is_connected() {
            return future::ready(Err(Self::unavailable())).boxed();
        }
        let history = self.history.clone();
        let topic = topic.clone();
        let timeout = self.timeout;
        async move {
            tokio::time::timeout(timeout, history.read(&topic, policy, after))
                .await
                .unwrap_or(Err(BackplaneError::Timeout(timeout)))
        }
        .boxed()
    }

    /// Records the interest and starts one subscription per new filter;
    /// completes when the server has processed the SUBs. While disconnected it
    /// fails at once with `Unavailable`, and the subscriptions are sent when
    /// the connection is back.
    fn subscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let readiness: Vec<_> = {
            let mut interest = self.interest.lock();
            filters
                .into_iter()
                .map(|filter| {
                    interest
                        .entry(filter.clone())
                        .or_insert_with(|| self.forwarding.spawn(filter))
                        .ready()
                })
                .collect()
        };
        if readiness.is_empty() {
            return future::ready(Ok(())).boxed();
        }
        if !self.is_connected() {
            return future::ready(Err(Self::unavailable())).boxed();
        }
        let client = self.client.clone();
        let subject = self.sync_subject.clone();
        let timeout = self.timeout;
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            for mut ready in readiness {
                let outcome = tokio::time::timeout_at(deadline, ready.wait_for(Option::is_some))
                    .await
                    .map_err(|_| BackplaneError::Timeout(timeout))?;
                // Otherwise subscribed, or unsubscribed before it was: either
                // way there is nothing left to wait for.
                if let Ok(Some(Err(error))) = outcome.as_deref() {
                    return Err(error.clone());
                }
            }
            // The SUBs are queued in async-nats ahead of the request.
            round_trip_until(&client, &subject, deadline, timeout).await
        }
        .boxed()
    }

    /// Removes the interest at once (nothing more is delivered for these
    /// filters once this completes); while connected, completes when the
    /// server has processed the UNSUBs.
    fn unsubscribe(
        &self,
        filters: Vec<TopicFilter>,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let stopping: Vec<JoinHandle<()>> = {
            let mut interest = self.interest.lock();
            filters
                .iter()
                .filter_map(|filter| interest.remove(filter))
                .map(|entry| entry.cancel())
                .collect()
        };
        if stopping.is_empty() {
            return future::ready(Ok(())).boxed();
        }
        if !self.is_connected() {
            // The server drops a lost connection's subscriptions, and
            // async-nats does not re-send a cancelled one; the tasks finish
            // on their own.
            return future::ready(Ok(())).boxed();
        }
        let client = self.client.clone();
        let subject = self.sync_subject.clone();
        let timeout = self.timeout;
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            for task in stopping {
                if tokio::time::timeout_at(deadline, task).await.is_err() {
                    return Err(BackplaneError::Timeout(timeout));
                }
            }
            round_trip_until(&client, &subject, deadline, timeout).await
        }
        .boxed()
    }

    fn health(&self) -> watch::Receiver<bool> {
        self.state.health.subscribe()
    }

    fn presence_update(
        &self,
        add: Vec<(Topic, PresenceEntry)>,
        remove: Vec<(Topic, String)>,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        if !self.is_connected() {
            return future::ready(Err(Self::unavailable())).boxed();
        }
        let history = self.history.clone();
        let timeout = self.timeout;
        async move {
            tokio::time::timeout(timeout, history.presence_update(add, remove, ttl))
                .await
                .unwrap_or(Err(BackplaneError::Timeout(timeout)))
        }
        .boxed()
    }

    fn presence(
        &self,
        topic: &Topic,
    ) -> BoxFuture<'static, Result<Vec<PresenceEntry>, BackplaneError>> {
        if !self.is_connected() {
            return future::ready(Err(Self::unavailable())).boxed();
        }
        let history = self.history.clone();
        let topic = topic.clone();
        let timeout = self.timeout;
        async move {
            tokio::time::timeout(timeout, history.presence_read(&topic))
                .await
                .unwrap_or(Err(BackplaneError::Timeout(timeout)))
        }
        .boxed()
    }
}
