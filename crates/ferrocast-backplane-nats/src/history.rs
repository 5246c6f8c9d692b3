//! History in NATS JetStream: positions and kept publications of the topics
//! whose namespace keeps history.
//!
//! # Layout
//! One stream per namespace, one subject per topic (module `streams`). Each
//! stored message is a publication's envelope with its position set. The
//! stream republishes every message it stores onto the live subject the
//! nodes subscribe to, so a publication reaches the other nodes only once
//! the stream accepted it, with the position it was stored under. (A
//! JetStream publish on a subject that core subscribers listen to would
//! reach them even when the stream rejects it, with a position that another
//! publication then holds.)
//!
//! # Appending: why offsets are never duplicated or skipped
//! The offset of a publication is its predecessor's plus one: the
//! predecessor is the last message stored on the topic's subject, whose
//! stream sequence and position this node knows (from its own previous
//! append, else by reading the subject's last message). The publication is
//! published with the header `Nats-Expected-Last-Subject-Sequence` set to
//! that sequence (0 when the subject holds nothing), and the stream stores
//! it only if the subject's last message is still that one, atomically: so
//! every stored message directly follows the one it counted from, and two
//! publications, from any nodes, can never count from the same one. If
//! another publication came in between, the stream refuses ("wrong last
//! sequence"), nothing is stored or republished, and this node reads the
//! new last message and tries again (a bounded number of times, with short
//! random pauses so that busy nodes do not keep colliding).
//!
//! A subject without messages (never published, or everything expired)
//! starts a new epoch at offset 1; a subject always keeps its last message
//! while it is younger than the time-to-live (`max_msgs_per_subject` drops
//! the oldest), so an epoch ends only when its whole history expired.
//!
//! Each node appends to one topic one publication at a time, in call order
//! (a chain of completions per topic, whose place `publish` takes when it is
//! called; each append runs in a task of its own): a node never collides
//! with itself, its publications keep their order, and a node that
//! publishes repeatedly knows its last message and needs one round trip per
//! publication. Different topics append in parallel.
//!
//! # Reading
//! The last message of the subject gives the epoch and the top offset. When
//! nothing after `after` is wanted, the first message gives the oldest
//! offset; otherwise an ephemeral consumer (in memory, without acks,
//! filtered on the subject) delivers the kept messages in order, and is
//! deleted afterwards. Messages are contiguous in offset and of one epoch
//! (a new epoch starts only on an empty subject), which the page relies on.
//!
//! # Limits
//! - One round trip per publication and topic: a node appends to one topic
//!   a few thousand times a second (more topics append in parallel).
//! - A topic that several nodes publish to as fast as they can makes their
//!   appends collide; each collision costs a read and a retry, and an append
//!   that loses 64 times fails with `Unavailable`.
//! - A publication whose acknowledgement is lost (timeout, connection lost)
//!   fails although the stream may have stored and republished it.
//! - Each read of more than the top creates (and deletes) an ephemeral
//!   consumer, which in a JetStream cluster involves its meta leader.
//! - Streams are created with file storage and the replicas of
//!   [`crate::NatsSettings::stream_replicas`]; an operator may change that (a
//!   later policy change keeps it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{ConsumerErrorKind, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::Client;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::oneshot;

use ferrocast_core::backplane::{envelope, BackplaneError, HistoryPage, HistoryPolicy};
use ferrocast_core::history::new_epoch;
use ferrocast_core::Publication;
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::Topic;

use crate::settings::{self, CLUSTER_STREAM_REPLICAS};
use crate::streams::{self, Names, Streams};

/// Most tries of one append that meet other nodes' publications.
const MAX_ATTEMPTS: u32 = 64;
/// Longest pause between two tries (the pause is random below a cap that
/// doubles from 1 ms).
const MAX_PAUSE: Duration = Duration::from_millis(16);
/// Topics whose last message a node remembers; beyond this, idle ones are
/// forgotten (their next append reads the last message first).
const REMEMBERED_TOPICS: usize = 4096;
/// Longest wait for the acknowledgement of one append before the same
/// message is sent again (at most a quarter of the timeout).
const ACK_PATIENCE: Duration = Duration::from_millis(500);
/// Reads of a topic's last publication, each with that patience, before an
/// append or a read gives up.
const LAST_READS: u32 = 4;
/// Reads of a history, and the pause between them, while the server the
/// reader was placed on has not yet applied the newest publication of a
/// replicated stream (in a healthy cluster, a few milliseconds behind).
const STALE_READS: usize = 20;
const STALE_PAUSE: Duration = Duration::from_millis(25);
/// Attempts of one JetStream read that fails while connected, and the pause
/// between them.
const READ_ATTEMPTS: u32 = 4;
const READ_PAUSE: Duration = Duration::from_millis(100);

/// The last message stored on a topic's subject.
#[derive(Debug, Clone)]
struct Stored {
    /// Its stream sequence; 0 for none.
    sequence: u64,
    /// Its position; `None` for none (or a message without one).
    position: Option<StreamPosition>,
}

impl Stored {
    const NONE: Self = Self {
        sequence: 0,
        position: None,
    };

    /// The position of the publication that follows this one.
    fn next(&self) -> StreamPosition {
        match &self.position {
            Some(p) => StreamPosition {
                epoch: p.epoch.clone(),
                offset: p.offset + 1,
            },
            None => StreamPosition {
                epoch: new_epoch(),
                offset: 1,
            },
        }
    }
}

/// One topic's appends from this node.
struct Chain {
    /// Completes when the latest append queued for the topic is done.
    tail: Option<oneshot::Receiver<()>>,
    /// The subject's last message as this node's last append left it; held
    /// (a second reference) by every append queued or in flight, so a chain
    /// with one reference is idle.
    last: Arc<Mutex<Option<Stored>>>,
}

/// How one try to store a message ended, short of success.
enum Refused {
    /// Another message became the subject's last.
    Conflict,
    /// The stream is gone (deleted by an operator).
    NoStream,
    /// No acknowledgement within [`ACK_PATIENCE`]: the stream may or may
    /// not have stored it. A replicated stream leaves some appends that
    /// lost a race unanswered; the same message (same id) is sent again,
    /// which the stream either stores or recognizes as stored.
    NoAnswer,
    Failed(BackplaneError),
}

/// The history side of the NATS backplane.
pub(crate) struct History {
    /// For the connection state: requests are not even tried while it is
    /// down.
    client: Client,
    /// JetStream requests and publishes, over the backplane's connection.
    pub(crate) context: jetstream::Context,
    pub(crate) names: Names,
    /// Which streams (history and presence) this node has made sure of.
    pub(crate) streams: Streams,
    /// Bound of one append (after the ones queued before it) and one read.
    timeout: Duration,
    /// Per topic, the order of this node's appends and their last message.
    chains: Mutex<HashMap<Topic, Chain>>,
    /// Replicas of the streams created, when configured; else see
    /// [`History::replicas`].
    replicas: Option<usize>,
}

impl History {
    pub(crate) fn new(
        client: Client,
        prefix: &str,
        timeout: Duration,
        replicas: Option<usize>,
    ) -> Self {
        let context = jetstream::ContextBuilder::new()
            // Our own deadlines (`timeout`) come first; this one only
            // bounds what async-nats waits for on its own.
            .timeout(timeout * 2)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Self {
            client,
            context,
            names: Names::new(prefix),
            streams: Streams::default(),
            timeout,
            chains: Mutex::new(HashMap::new()),
            replicas,
        }
    }

    /// Replicas of a stream created now: as configured, or 3 when the server
    /// connected to tells of a cluster of at least 3 servers (the client
    /// URLs of its cluster, its own included, in its INFO) and checks
    /// appends to replicated streams reliably, else 1.
    pub(crate) fn replicas(&self) -> usize {
        let info = self.client.server_info();
        let reliable = settings::replicated_appends_are_reliable(&info.version);
        if let Some(replicas) = self.replicas {
            if replicas > 1 && !reliable {
                tracing::warn!(
                    version = %info.version,
                    "nats-server before 2.10 may accept two racing appends to a replicated stream: \
                     history offsets may repeat; upgrade the NATS servers"
                );
            }
            return replicas;
        }
        if info.connect_urls.len() < CLUSTER_STREAM_REPLICAS {
            return 1;
        }
        if !reliable {
            tracing::warn!(
                version = %info.version,
                "history streams get one replica: nats-server before 2.10 may accept two racing \
                 appends to a replicated stream; upgrade the NATS servers for history that \
                 survives a server"
            );
            return 1;
        }
        CLUSTER_STREAM_REPLICAS
    }

    /// Appends `publication` to its topic's history and publishes it; yields
    /// its position. Takes the publication's place among the topic's appends
    /// from this node now, so that call order is append order, and appends
    /// in a task of its own: the append goes on whether or when the returned
    /// future is polled (a caller awaiting a later publication first, or
    /// dropping this one, holds up no other).
    pub(crate) fn append(
        self: &Arc<Self>,
        publication: Publication,
        policy: HistoryPolicy,
    ) -> BoxFuture<'static, Result<StreamPosition, BackplaneError>> {
        let (done, finished) = oneshot::channel::<()>();
        let (previous, last) = {
            let mut chains = self.chains.lock();
            if chains.len() >= REMEMBERED_TOPICS {
                chains.retain(|_, chain| Arc::strong_count(&chain.last) > 1);
            }
            let chain = chains
                .entry(publication.topic.clone())
                .or_insert_with(|| Chain {
                    tail: None,
                    last: Arc::new(Mutex::new(None)),
                });
            (chain.tail.replace(finished), chain.last.clone())
        };
        let history = self.clone();
        let (reply, appended) = oneshot::channel();
        tokio::spawn(async move {
            if let Some(previous) = previous {
                // Its task ends (and drops the sender) whatever happens.
                let _ = previous.await;
            }
            let timeout = history.timeout;
            let outcome =
                tokio::time::timeout(timeout, history.try_append(publication, policy, &last))
                    .await
                    .unwrap_or(Err(BackplaneError::Timeout(timeout)));
            drop(done);
            let _ = reply.send(outcome);
        });
        async move {
            appended.await.unwrap_or_else(|_| {
                Err(BackplaneError::Unavailable(
                    "the NATS backplane stopped while appending".to_string(),
                ))
            })
        }
        .boxed()
    }

    async fn try_append(
        &self,
        mut publication: Publication,
        policy: HistoryPolicy,
        last: &Mutex<Option<Stored>>,
    ) -> Result<StreamPosition, BackplaneError> {
        let namespace = publication.topic.namespace().to_string();
        self.ensure_history(&namespace, policy).await?;
        let stream = self.stream(&self.names.stream(&namespace)).await?;
        let subject = self.names.history_subject(&publication.topic);
        // Taken: known again only once an append succeeds.
        let mut known = last.lock().take();
        // The message to send again, unchanged, when the server did not
        // answer: the stream may have stored it.
        let mut resend: Option<(Stored, StreamPosition)> = None;
        for attempt in 0..MAX_ATTEMPTS {
            // Appends queued behind one that met an outage fail at once
            // instead of each waiting for its own timeout.
            if self.client.connection_state() != State::Connected {
                return Err(BackplaneError::Unavailable(
                    "not connected to NATS".to_string(),
                ));
            }
            let (previous, position) = match resend.take() {
                Some(unanswered) => unanswered,
                None => {
                    let previous = match known.take() {
                        Some(stored) => stored,
                        None => self.last_stored(&stream, &subject).await?,
                    };
                    let position = previous.next();
                    (previous, position)
                }
            };
            publication.position = Some(position.clone());
            let payload = envelope::encode(&publication);
            // One id per publication and position: a message sent again
            // after its acknowledgement went missing is stored once.
            let id = format!(
                "{}:{}:{}",
                publication.origin, position.epoch, position.offset
            );
            match self.store(&subject, payload, previous.sequence, &id).await {
                Ok(sequence) => {
                    *last.lock() = Some(Stored {
                        sequence,
                        position: Some(position.clone()),
                    });
                    return Ok(position);
                }
                Err(Refused::Conflict) => {
                    tracing::trace!(%subject, attempt, "another publication came first; trying again");
                    let cap = Duration::from_millis(1 << attempt.min(4)).min(MAX_PAUSE);
                    let pause = rand::rng().random_range(Duration::ZERO..=cap);
                    tokio::time::sleep(pause).await;
                }
                Err(Refused::NoAnswer) => {
                    tracing::debug!(%subject, attempt, "no acknowledgement of an append in time; sending it again");
                    resend = Some((previous, position));
                }
                Err(Refused::NoStream) => {
                    self.streams.forget(&self.names.stream(&namespace));
                    self.ensure_history(&namespace, policy).await?;
                }
                Err(Refused::Failed(error)) => return Err(error),
            }
        }
        Err(BackplaneError::Unavailable(format!(
            "{MAX_ATTEMPTS} tries to append to the history of {} met publications of other nodes",
            publication.topic
        )))
    }

    /// Publishes `payload` to the stream as message `id`, expecting
    /// `expected` as the subject's last sequence; yields the new message's
    /// sequence (or the stored one's, for a message sent again).
    async fn store(
        &self,
        subject: &str,
        payload: Bytes,
        expected: u64,
        id: &str,
    ) -> Result<u64, Refused> {
        let message = PublishMessage::build()
            .payload(payload)
            .expected_last_subject_sequence(expected)
            .message_id(id);
        let acked = match self
            .context
            .send_publish(subject.to_string(), message)
            .await
        {
            Ok(ack) => match tokio::time::timeout(ACK_PATIENCE.min(self.timeout / 4), ack).await {
                Ok(acked) => acked,
                Err(_) => return Err(Refused::NoAnswer),
            },
            Err(error) => Err(error),
        };
        match acked {
            Ok(ack) => Ok(ack.sequence),
            Err(error) => Err(match (error.kind(), api_code(&error)) {
                // Newer servers refuse some of these with the code without
                // the sequence, which async-nats does not tell apart.
                (PublishErrorKind::WrongLastSequence, _)
                | (_, Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)) => Refused::Conflict,
                // A replicated stream's leader cannot check the expected
                // sequence while appends to the subject are in flight: the
                // same message is sent again.
                (_, Some(ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY)) => {
                    Refused::NoAnswer
                }
                (PublishErrorKind::StreamNotFound, _) => Refused::NoStream,
                (PublishErrorKind::MaxPayloadExceeded, _) => Refused::Failed(
                    BackplaneError::Rejected(format!("NATS refused the publication: {error}")),
                ),
                _ => Refused::Failed(self.failed("store a publication", &error)),
            }),
        }
    }

    /// Reads `topic`'s history after `after`.
    pub(crate) async fn read(
        &self,
        topic: &Topic,
        policy: HistoryPolicy,
        after: u64,
    ) -> Result<HistoryPage, BackplaneError> {
        let namespace = topic.namespace();
        self.ensure_history(namespace, policy).await?;
        let stream = self.stream(&self.names.stream(namespace)).await?;
        let subject = self.names.history_subject(topic);
        let last = self.last_stored(&stream, &subject).await?;
        let Some(newest) = last.position else {
            return Ok(HistoryPage::empty());
        };
        if after >= newest.offset {
            if let Some(first) = self.first_stored(&stream, &subject).await? {
                if first.epoch == newest.epoch {
                    let oldest = first
                        .offset
                        .max((newest.offset + 1).saturating_sub(policy.size.max(1) as u64));
                    return Ok(HistoryPage {
                        epoch: newest.epoch,
                        top: newest.offset,
                        oldest,
                        publications: Vec::new(),
                    });
                }
            }
            // The history changed between the two reads: read it whole.
        }
        // The reader of a replicated stream may be placed on a server that
        // has not applied the newest messages yet, while the last message
        // came from the stream's leader: read again until the reader has
        // it, and never answer with a page that lacks it.
        for _ in 0..STALE_READS {
            let kept = self.kept(&stream, &subject).await?;
            let caught_up = kept
                .last()
                .and_then(|p| p.position.as_ref())
                .is_some_and(|p| p.epoch == newest.epoch && p.offset >= newest.offset);
            if caught_up {
                return Ok(page(kept, policy, after));
            }
            tracing::debug!(%topic, "a history reader is behind the stream's leader; reading again");
            tokio::time::sleep(STALE_PAUSE).await;
        }
        Err(BackplaneError::Unavailable(format!(
            "the history of {topic} is still being replicated; read it again"
        )))
    }

    /// Every message kept on `subject`, oldest first, decoded.
    async fn kept(
        &self,
        stream: &Stream<()>,
        subject: &str,
    ) -> Result<Vec<Publication>, BackplaneError> {
        self.messages(stream, subject, DeliverPolicy::All, "read a history")
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    /// The payloads of the messages on `filter` (a subject or a wildcard) that
    /// `deliver` selects, in stream order, read by a consumer made for the
    /// purpose; `what` names the read in errors. A read that fails while
    /// connected is made again, a few times: in a cluster, a reader just
    /// placed on a server can answer its first fetch with 503 (no
    /// responders) while the stream's placement settles.
    pub(crate) async fn messages(
        &self,
        stream: &Stream<()>,
        filter: &str,
        deliver: DeliverPolicy,
        what: &str,
    ) -> Result<Vec<Bytes>, BackplaneError> {
        let mut attempt = 1;
        loop {
            match self.read_once(stream, filter, deliver, what).await {
                Err(error)
                    if attempt < READ_ATTEMPTS
                        && self.client.connection_state() == State::Connected =>
                {
                    tracing::debug!(%error, attempt, "a JetStream read failed; reading again");
                    attempt += 1;
                    tokio::time::sleep(READ_PAUSE).await;
                }
                result => return result,
            }
        }
    }

    async fn read_once(
        &self,
        stream: &Stream<()>,
        filter: &str,
        deliver: DeliverPolicy,
        what: &str,
    ) -> Result<Vec<Bytes>, BackplaneError> {
        let config = pull::Config {
            filter_subject: filter.to_string(),
            deliver_policy: deliver,
            ack_policy: AckPolicy::None,
            memory_storage: true,
            num_replicas: 1,
            // Deleted below; this only cleans up after a node that died
            // while reading.
            inactive_threshold: self.timeout * 4,
            ..pull::Config::default()
        };
        let consumer = match stream.create_consumer(config).await {
            Ok(consumer) => consumer,
            // No stream, nothing kept (a presence stream is made by the
            // first update).
            Err(error) => match error.kind() {
                ConsumerErrorKind::JetStream(api)
                    if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    return Ok(Vec::new())
                }
                _ => return Err(self.failed(what, &error)),
            },
        };
        let info = consumer.cached_info();
        let name = info.name.clone();
        let count = usize::try_from(info.num_pending).unwrap_or(usize::MAX);
        let read = async {
            let mut kept = Vec::with_capacity(count);
            if count == 0 {
                return Ok(kept);
            }
            let mut messages = consumer
                .fetch()
                .max_messages(count)
                .messages()
                .await
                .map_err(|error| self.failed(what, &error))?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|error| self.failed(what, &error))?;
                kept.push(message.message.payload);
                if kept.len() == count {
                    break;
                }
            }
            Ok(kept)
        }
        .await;
        let stream = stream.clone();
        tokio::spawn(async move {
            if let Err(error) = stream.delete_consumer(&name).await {
                tracing::debug!(%error, "cannot delete a JetStream reader; it expires by itself");
            }
        });
        read
    }

    /// The last message of `subject`.
    async fn last_stored(
        &self,
        stream: &Stream<()>,
        subject: &str,
    ) -> Result<Stored, BackplaneError> {
        // A replicated stream's leader leaves some of these requests
        // unanswered while appends race; asking again is harmless.
        let patience = ACK_PATIENCE.min(self.timeout / 4);
        let mut asked = 1;
        let answer = loop {
            match tokio::time::timeout(patience, stream.get_last_raw_message_by_subject(subject))
                .await
            {
                Ok(answer) => break answer,
                Err(_) if asked < LAST_READS => {
                    tracing::debug!(%subject, "no answer to a read of the last publication in time; asking again");
                    asked += 1;
                }
                Err(_) => return Err(BackplaneError::Timeout(patience * LAST_READS)),
            }
        };
        match answer {
            Ok(message) => Ok(Stored {
                sequence: message.sequence,
                position: decode(message.payload)?.position,
            }),
            Err(error) => match error.kind() {
                LastRawMessageErrorKind::NoMessageFound => Ok(Stored::NONE),
                LastRawMessageErrorKind::JetStream(api)
                    if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(Stored::NONE)
                }
                LastRawMessageErrorKind::JetStream(api) => Err(streams::refused(&api)),
                _ => Err(self.failed("read the last publication of a topic", &error)),
            },
        }
    }

    /// The position of the first message of `subject`, if it has one.
    async fn first_stored(
        &self,
        stream: &Stream<()>,
        subject: &str,
    ) -> Result<Option<StreamPosition>, BackplaneError> {
        match stream.get_first_raw_message_by_subject(subject, 1).await {
            Ok(message) => Ok(decode(message.payload)?.position),
            Err(error) => match error.kind() {
                LastRawMessageErrorKind::NoMessageFound => Ok(None),
                LastRawMessageErrorKind::JetStream(api) => Err(streams::refused(&api)),
                _ => Err(self.failed("read the first publication of a topic", &error)),
            },
        }
    }

    /// Makes sure `namespace`'s history stream exists with `policy`.
    async fn ensure_history(
        &self,
        namespace: &str,
        policy: HistoryPolicy,
    ) -> Result<(), BackplaneError> {
        self.streams
            .ensure(
                &self.context,
                self.names.config(namespace, policy, self.replicas()),
            )
            .await
    }

    /// A handle on the stream `name` (no request is made).
    pub(crate) async fn stream(&self, name: &str) -> Result<Stream<()>, BackplaneError> {
        self.context
            .get_stream_no_info(name)
            .await
            .map_err(|error| BackplaneError::Rejected(format!("stream name {name:?}: {error}")))
    }

    /// What a failed request means for the caller: `Unavailable` either way,
    /// saying whether the connection is down.
    pub(crate) fn failed(&self, what: &str, error: &dyn std::fmt::Display) -> BackplaneError {
        if self.client.connection_state() == State::Connected {
            BackplaneError::Unavailable(format!("cannot {what} in NATS JetStream: {error}"))
        } else {
            BackplaneError::Unavailable("not connected to NATS".to_string())
        }
    }
}

fn decode(payload: Bytes) -> Result<Publication, BackplaneError> {
    envelope::decode(payload).map_err(|error| {
        BackplaneError::Rejected(format!("a history entry is not a publication: {error}"))
    })
}

/// The JetStream error code of a refused publication, when the server
/// gave one.
fn api_code(error: &jetstream::context::PublishError) -> Option<ErrorCode> {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code)
}

/// The page of the kept publications `kept` (oldest first): those of the
/// newest epoch, at most the policy's size of them.
fn page(mut kept: Vec<Publication>, policy: HistoryPolicy, after: u64) -> HistoryPage {
    let Some(newest) = kept.last().and_then(|p| p.position.clone()) else {
        return HistoryPage::empty();
    };
    kept.retain(|p| {
        p.position
            .as_ref()
            .is_some_and(|pos| pos.epoch == newest.epoch)
    });
    let excess = kept.len().saturating_sub(policy.size.max(1));
    kept.drain(..excess);
    let oldest = kept
        .first()
        .and_then(|p| p.position.as_ref())
        .map_or(newest.offset + 1, |p| p.offset);
    kept.retain(|p| p.position.as_ref().is_some_and(|pos| pos.offset > after));
    HistoryPage {
        epoch: newest.epoch,
        top: newest.offset,
        oldest,
        publications: kept,
    }
}
