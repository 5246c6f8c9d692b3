//! The JetStream streams that keep history: their names, their
//! configuration, and making sure each exists with its namespace's policy.
//!
//! One stream per namespace keeps every topic of the namespace: a topic is
//! one subject of the stream, `{prefix}-history.{namespace}.{topic}`, and
//! the policy maps onto the stream's limits: `max_msgs_per_subject` is the
//! size, `max_age` the time-to-live, old messages are discarded. The history
//! subjects lie outside `{prefix}.>`, where nodes subscribe, so that no
//! subscriber sees a publication before the stream accepted it: the stream
//! *republishes* each message it stores to `{prefix}.{topic}` (its
//! `republish` setting maps `{prefix}-history.{namespace}.>` onto
//! `{prefix}.>`), which is how the other nodes receive it live, in the order
//! the stream stored it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, UpdateStreamErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, Republish, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use parking_lot::RwLock;

use ferrocast_core::backplane::{BackplaneError, HistoryPolicy};
use ferrocast_protocol::Topic;

/// Longest stream name made; longer ones end in a hash of the whole name.
/// Stream names become directory names in the server's store.
const MAX_STREAM_NAME: usize = 96;

/// What operators see when JetStream is missing.
const JETSTREAM_DISABLED: &str =
    "history needs NATS JetStream, which is not enabled on the server or for this account: \
     start nats-server with -js (or a `jetstream {}` block in its configuration) and give \
     the account JetStream";

/// How topics and namespaces map onto subjects and streams.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The subject prefix: live subjects are `{prefix}.{topic}`.
    prefix: String,
    /// `{prefix}-history`
    history_root: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            history_root: format!("{prefix}-history"),
        }
    }

    /// The subject that keeps `topic`'s history.
    pub(crate) fn history_subject(&self, topic: &Topic) -> String {
        format!(
            "{}.{}.{}",
            self.history_root,
            topic.namespace(),
            topic.as_str()
        )
    }

    /// The stream of `namespace`: `{prefix}_H_{namespace}`, each escaped so
    /// that it holds only characters stream names allow and no two
    /// prefixes or namespaces share a name (see [`escape`]).
    pub(crate) fn stream(&self, namespace: &str) -> String {
        bounded(format!("{}_H_{}", escape(&self.prefix), escape(namespace)))
    }

    /// The stream that keeps `namespace`'s presence: `{prefix}_P_{namespace}`.
    pub(crate) fn presence_stream(&self, namespace: &str) -> String {
        bounded(format!("{}_P_{}", escape(&self.prefix), escape(namespace)))
    }

    /// The subjects of `topic`'s presence entries (one token per client).
    pub(crate) fn presence_subjects(&self, topic: &Topic) -> String {
        format!(
            "{}-presence.{}.{}.*",
            self.prefix,
            topic.namespace(),
            topic.as_str()
        )
    }

    /// The subject of `client`'s entry on `topic`; the client id is
    /// escaped into one token.
    pub(crate) fn presence_subject(&self, topic: &Topic, client: &str) -> String {
        format!(
            "{}-presence.{}.{}.{}",
            self.prefix,
            topic.namespace(),
            topic.as_str(),
            escape(client)
        )
    }

    /// The configuration of `namespace`'s presence stream: the last entry
    /// per client, for `ttl`, in memory, on one server (presence is rebuilt
    /// by the nodes' refreshes if the server restarts or dies; and the
    /// reader of a one-server stream sees every acknowledged write, which a
    /// reader placed on a follower of a replicated stream may not yet).
    pub(crate) fn presence_config(&self, namespace: &str, ttl: Duration) -> Config {
        Config {
            name: self.presence_stream(namespace),
            description: Some(format!("ferrocast presence of the namespace {namespace}")),
            subjects: vec![format!("{}-presence.{namespace}.>", self.prefix)],
            max_messages_per_subject: 1,
            max_age: ttl.max(Duration::from_millis(1)),
            discard: DiscardPolicy::Old,
            storage: StorageType::Memory,
            num_replicas: 1,
            ..Config::default()
        }
    }

    /// The configuration of `namespace`'s stream under `policy`, on
    /// `replicas` servers.
    pub(crate) fn config(&self, namespace: &str, policy: HistoryPolicy, replicas: usize) -> Config {
        let subjects = format!("{}.{namespace}.>", self.history_root);
        Config {
            name: self.stream(namespace),
            description: Some(format!("ferrocast history of the namespace {namespace}")),
            subjects: vec![subjects.clone()],
            max_messages_per_subject: i64::try_from(policy.size.max(1)).unwrap_or(i64::MAX),
            // JetStream reads 0 as "forever".
            max_age: policy.ttl.max(Duration::from_millis(1)),
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: replicas,
            republish: Some(Republish {
                source: subjects,
                destination: format!("{}.>", self.prefix),
                headers_only: false,
            }),
            ..Config::default()
        }
    }
}

/// `name`, or, when longer than [`MAX_STREAM_NAME`], its start and a hash of
/// the whole.
fn bounded(mut name: String) -> String {
    if name.len() > MAX_STREAM_NAME {
        let hash = fnv1a(name.as_bytes());
        name.truncate(MAX_STREAM_NAME - 17);
        let _ = write!(name, "_{hash:016x}");
    }
    name
}

/// Keeps ASCII letters, digits and `-`; writes every other byte as `_XX`
/// (upper-case hex). `_` itself is escaped, so the result decodes to one
/// input only, and `_H_` (H is no hex digit) cannot come out of it.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "_{b:02X}");
        }
    }
    out
}

/// 64-bit FNV-1a: stable across builds and machines, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The streams this node made sure of, by name, with the limits each has
/// (most messages per subject, age).
#[derive(Debug, Default)]
pub(crate) struct Streams {
    ensured: RwLock<HashMap<String, (i64, Duration)>>,
    /// One stream change at a time from this node.
    changing: tokio::sync::Mutex<()>,
    /// Whether the missing JetStream was logged (once per node).
    reported_disabled: AtomicBool,
}

impl Streams {
    /// Makes sure the stream `wanted` exists with its limits: creates it, or
    /// changes the limits of an existing one that differs (keeping what an
    /// operator may have set, such as replicas or placement). Costs nothing
    /// once done for those limits on this node.
    pub(crate) async fn ensure(
        &self,
        context: &jetstream::Context,
        wanted: Config,
    ) -> Result<(), BackplaneError> {
        let limits = (wanted.max_messages_per_subject, wanted.max_age);
        if self.ensured.read().get(&wanted.name) == Some(&limits) {
            return Ok(());
        }
        let _changing = self.changing.lock().await;
        if self.ensured.read().get(&wanted.name) == Some(&limits) {
            return Ok(());
        }
        match create_or_update(context, &wanted).await {
            Ok(()) => {
                tracing::debug!(stream = %wanted.name, ?limits, "stream ready");
                self.ensured.write().insert(wanted.name, limits);
                Ok(())
            }
            Err(BackplaneError::Rejected(reason)) if reason == JETSTREAM_DISABLED => {
                if !self.reported_disabled.swap(true, Ordering::Relaxed) {
                    tracing::error!("{JETSTREAM_DISABLED}");
                }
                Err(BackplaneError::Rejected(reason))
            }
            Err(error) => Err(error),
        }
    }

    /// Forgets what was made sure of the stream `name` (it was deleted).
    pub(crate) fn forget(&self, name: &str) {
        self.ensured.write().remove(name);
    }
}

/// Creates the stream `wanted`, or gives the existing one `wanted`'s
/// subjects, limits and republishing.
async fn create_or_update(
    context: &jetstream::Context,
    wanted: &Config,
) -> Result<(), BackplaneError> {
    // Creating is idempotent: an existing stream of the same configuration
    // is no error.
    let error = match context.create_stream(wanted.clone()).await {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    match error.kind() {
        CreateStreamErrorKind::JetStream(api)
            if api.error_code() == ErrorCode::STREAM_NAME_EXIST =>
        {
            update(context, wanted).await
        }
        CreateStreamErrorKind::JetStreamUnavailable => {
            Err(BackplaneError::Rejected(JETSTREAM_DISABLED.to_string()))
        }
        CreateStreamErrorKind::JetStream(api) => Err(refused(&api)),
        _ => Err(BackplaneError::Unavailable(format!(
            "cannot create the NATS stream {}: {error}",
            wanted.name
        ))),
    }
}

/// Gives the existing stream `wanted`'s subjects, limits and republishing,
/// keeping the rest of its configuration.
async fn update(context: &jetstream::Context, wanted: &Config) -> Result<(), BackplaneError> {
    let stream = context.get_stream(&wanted.name).await.map_err(|error| {
        BackplaneError::Unavailable(format!(
            "cannot read the NATS stream {}: {error}",
            wanted.name
        ))
    })?;
    let mut config = stream.cached_info().config.clone();
    if config.subjects == wanted.subjects
        && config.max_messages_per_subject == wanted.max_messages_per_subject
        && config.max_age == wanted.max_age
        && config.discard == wanted.discard
        && config.republish == wanted.republish
    {
        return Ok(());
    }
    tracing::info!(
        stream = %wanted.name,
        size = wanted.max_messages_per_subject,
        ttl = ?wanted.max_age,
        "changing the limits of a history stream to its namespace's policy"
    );
    config.subjects.clone_from(&wanted.subjects);
    config.max_messages_per_subject = wanted.max_messages_per_subject;
    config.max_age = wanted.max_age;
    // JetStream wants the window of duplicate detection within the age.
    config.duplicate_window = config.duplicate_window.min(wanted.max_age);
    config.discard = wanted.discard;
    config.republish.clone_from(&wanted.republish);
    match context.update_stream(config).await {
        Ok(_) => Ok(()),
        Err(error) => match error.kind() {
            UpdateStreamErrorKind::JetStream(api) => Err(refused(&api)),
            _ => Err(BackplaneError::Unavailable(format!(
                "cannot update the NATS stream {}: {error}",
                wanted.name
            ))),
        },
    }
}

/// A JetStream API error: the server refused the request.
pub(crate) fn refused(api: &jetstream::Error) -> BackplaneError {
    let code = api.error_code();
    if code == ErrorCode::JETSTREAM_NOT_ENABLED
        || code == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
    {
        BackplaneError::Rejected(JETSTREAM_DISABLED.to_string())
    } else {
        BackplaneError::Rejected(format!("NATS JetStream refused: {api}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_protocol::MAX_TOPIC_LEN;

    #[test]
    fn subjects_and_streams() {
        let names = Names::new("fc.app");
        let topic = Topic::parse("chat:x.room_1", MAX_TOPIC_LEN).unwrap();
        assert_eq!(
            names.history_subject(&topic),
            "fc.app-history.chat:x.chat:x.room_1"
        );
        assert_eq!(names.stream("chat:x"), "fc_2Eapp_H_chat_3Ax");
        let config = names.config(
            "chat:x",
            HistoryPolicy {
                size: 0,
                ttl: Duration::from_secs(5),
            },
            3,
        );
        assert_eq!(config.num_replicas, 3);
        assert_eq!(config.subjects, ["fc.app-history.chat:x.>"]);
        assert_eq!(config.max_messages_per_subject, 1);
        assert_eq!(
            config.republish.map(|r| r.destination),
            Some("fc.app.>".to_string())
        );
    }

    #[test]
    fn stream_names_are_valid_distinct_and_bounded() {
        let names = Names::new("ferrocast");
        let long = "n".repeat(255);
        let longer = format!("{long}x");
        let all = [
            names.stream("a_b"),
            names.stream("a_5Fb"),
            names.stream("a:b"),
            names.stream("a=b"),
            Names::new("a_H").stream("b"),
            Names::new("a").stream("H_b"),
            names.stream(&long),
            names.stream(&longer[1..]),
            names.stream(&longer),
        ];
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        for name in &all {
            assert!(name.len() <= MAX_STREAM_NAME, "{name}");
            assert!(!name.contains(['.', '*', '>', ' ', '/', '\\']), "{name}");
        }
    }
}
