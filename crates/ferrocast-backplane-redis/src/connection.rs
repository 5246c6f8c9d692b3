//! Opening connections to Redis (one server, or a Redis Cluster), and naming
//! Redis in logs without secrets.
//!
//! A cluster is named by `redis+cluster://[user:password@]host:port,host:port…[/]`
//! (`rediss+cluster://` with TLS): the seeds, any of which is enough to learn
//! the cluster's slots. The tasks then hold a [`Link`] either way; only the
//! few operations that differ between a server and a cluster look at which.

use std::collections::HashMap;
use std::time::Duration;

use futures::future;
use redis::aio::{AsyncPushSender, ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline,
    ProtocolVersion, Value,
};

use ferrocast_core::backplane::BackplaneError;

/// Why a connection failed or was given up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection was closed")]
    Closed,
    #[error("not connected to redis")]
    NotConnected,
    #[error("redis refused: {0}")]
    Refused(String),
    #[error("the cluster's slots moved to other masters")]
    SlotsMoved,
}

impl ConnectionError {
    /// Turns a failed command into this error: a server's error reply is a
    /// refusal (the connection is fine), anything else means the connection
    /// is gone or unusable.
    pub(crate) fn from_command(error: redis::RedisError) -> Self {
        if error.is_io_error()
            || error.is_unrecoverable_error()
            || error.is_connection_dropped()
            || error.is_timeout()
        {
            Self::Redis(error)
        } else {
            Self::Refused(error.to_string())
        }
    }

    /// Whether the connection is still usable after this error.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// What a caller waiting on the failed operation is told.
    pub(crate) fn to_backplane_error(&self) -> BackplaneError {
        match self {
            Self::Timeout(d) => BackplaneError::Timeout(*d),
            Self::Refused(reason) => BackplaneError::Rejected(reason.clone()),
            other => BackplaneError::Unavailable(other.to_string()),
        }
    }
}

/// What the URL names.
enum Target {
    /// One server.
    Server(Box<Client>),
    /// The seeds of a Redis Cluster, each with the credentials, TLS and
    /// RESP3 settings.
    Cluster(Vec<ConnectionInfo>),
}

/// Opens RESP3 connections to the configured Redis.
pub(crate) struct Connector {
    target: Target,
    /// The URL without user, password and query, for logs and errors.
    redacted: String,
    timeout: Duration,
}

impl Connector {
    /// Parses `url`: `redis://` or `rediss://` for one server,
    /// `redis+cluster://` or `rediss+cluster://` for a Redis Cluster.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, BackplaneError> {
        let redacted = redact(url);
        let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
        let (tls, cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            _ => {
                return Err(BackplaneError::Rejected(format!(
                    "the redis URL {redacted:?} must start with redis://, rediss://, \
                     redis+cluster:// or rediss+cluster://"
                )))
            }
        };
        let invalid = |e: redis::RedisError| {
            BackplaneError::Rejected(format!("invalid redis URL {redacted:?}: {e}"))
        };
        let seeds = if cluster {
            cluster_seeds(if tls { "rediss" } else { "redis" }, rest).map_err(|reason| {
                BackplaneError::Rejected(format!("invalid redis URL {redacted:?}: {reason}"))
            })?
        } else {
            if host_part(rest).contains(',') {
                return Err(BackplaneError::Rejected(format!(
                    "the redis URL {redacted:?} names several servers: a Redis Cluster is \
                     named by redis+cluster://host:port,host:port…"
                )));
            }
            vec![url.to_string()]
        };
        let infos = seeds
            .iter()
            .map(|seed| {
                let info = seed.as_str().into_connection_info().map_err(invalid)?;
                // RESP3: push messages let one multiplexed connection both
                // carry commands (PING, subscription changes) and deliver
                // messages.
                let redis_settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                Ok(info.set_redis_settings(redis_settings))
            })
            .collect::<Result<Vec<_>, BackplaneError>>()?;
        if tls {
            install_crypto_provider();
        }
        let target = if cluster {
            // Checks now what the builder checks: one user and password
            // for every seed.
            ClusterClientBuilder::new(infos.clone())
                .build()
                .map_err(invalid)?;
            Target::Cluster(infos)
        } else {
            let info = infos.into_iter().next().ok_or_else(|| {
                BackplaneError::Rejected(format!("invalid redis URL {redacted:?}"))
            })?;
            Target::Server(Box::new(Client::open(info).map_err(invalid)?))
        };
        Ok(Self {
            target,
            redacted,
            timeout,
        })
    }

    pub(crate) fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// Whether the URL names a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Connects (TCP, TLS, HELLO, AUTH, SELECT; on a cluster, also learns
    /// the slots from a seed and connects to every member) within the
    /// timeout. Push messages, and the notice that a connection was lost, go
    /// to `push`.
    pub(crate) async fn connect(
        &self,
        push: impl AsyncPushSender,
        write_buffer: usize,
    ) -> Result<Link, ConnectionError> {
        let connecting = async {
            match &self.target {
                Target::Server(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        // Each caller bounds its own operations with the timeout.
                        .set_response_timeout(None)
                        .set_write_backpressure_boundary(write_buffer)
                        .set_push_sender(push);
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Link::Server)
                }
                Target::Cluster(seeds) => ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(self.timeout)
                    // Bounds a request with its retries (MOVED, ASK, a
                    // reconnect), as callers bound their own operations.
                    .response_timeout(self.timeout)
                    .push_sender(push)
                    .build()?
                    .get_async_connection()
                    .await
                    .map(Link::Cluster),
            }
        };
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(ConnectionError::Redis(e)),
            Err(_) => Err(ConnectionError::Timeout(self.timeout)),
        }
    }
}

/// A connection to one server, or to every member of a cluster (the redis
/// crate's cluster connection, which routes each command to the master of
/// its key's slot, follows `MOVED` and `ASK` and learns the slots again when
/// they moved).
#[derive(Clone)]
pub(crate) enum Link {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// Replies to a batch of commands, one per command, in their order, and
/// what broke the connection, if something did.
pub(crate) struct Replies {
    pub(crate) replies: Vec<Result<Value, BackplaneError>>,
    pub(crate) broken: Option<ConnectionError>,
}

impl Link {
    /// Sends one command and waits for its reply within `deadline`. On a
    /// cluster, a command without a key goes where the redis crate routes it
    /// (`PING` and `SCRIPT LOAD` to every master, or every member).
    pub(crate) async fn command(
        &mut self,
        command: &Cmd,
        deadline: Duration,
    ) -> Result<Value, ConnectionError> {
        let sent = match self {
            Self::Server(connection) => {
                tokio::time::timeout(deadline, connection.send_packed_command(command)).await
            }
            Self::Cluster(connection) => {
                tokio::time::timeout(deadline, connection.req_packed_command(command)).await
            }
        };
        match sent {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(ConnectionError::from_command(error)),
            Err(_) => Err(ConnectionError::Timeout(deadline)),
        }
    }

    /// On a cluster, a fingerprint of which master serves which slots (one
    /// member's `CLUSTER SLOTS`), so that a change (a replica promoted, slots
    /// moved) can be noticed; `None` on one server.
    pub(crate) async fn slots(
        &mut self,
        deadline: Duration,
    ) -> Result<Option<u64>, ConnectionError> {
        if let Self::Server(_) = self {
            return Ok(None);
        }
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let reply = self.command(&slots, deadline).await?;
        Ok(Some(slots_fingerprint(&reply)))
    }

    /// Sends `commands` and returns one reply each, each within `deadline`.
    /// `key_of(i)` is a key (or sharded channel) of command `i`: on a server
    /// they go as one pipeline; on a cluster, as one pipeline per hash slot
    /// (a pipeline must not cross slots), all at once, each slot's commands
    /// in their order.
    pub(crate) async fn pipeline<'a>(
        &mut self,
        commands: Vec<Cmd>,
        key_of: impl Fn(usize) -> &'a [u8],
        deadline: Duration,
    ) -> Replies {
        let count = commands.len();
        match self {
            Self::Server(connection) => {
                let mut pipeline = Pipeline::with_capacity(count);
                for command in commands {
                    pipeline.add_command(command);
                }
                let sent = tokio::time::timeout(
                    deadline,
                    connection.send_packed_commands(&pipeline, 0, count),
                )
                .await;
                Replies::of_pipeline(count, sent, deadline)
            }
            Self::Cluster(connection) => {
                let mut by_slot: HashMap<Slot, (Pipeline, Vec<usize>)> = HashMap::new();
                for (i, command) in commands.into_iter().enumerate() {
                    let (pipeline, indices) = by_slot.entry(Slot::for_key(key_of(i))).or_default();
                    pipeline.add_command(command);
                    indices.push(i);
                }
                let sent = by_slot.into_values().map(|(pipeline, indices)| {
                    let mut connection = connection.clone();
                    async move {
                        let sent = tokio::time::timeout(
                            deadline,
                            connection.req_packed_commands(&pipeline, 0, indices.len()),
                        )
                        .await;
                        (indices.len(), indices, sent)
                    }
                });
                let mut replies: Vec<Result<Value, BackplaneError>> = (0..count)
                    .map(|_| Err(BackplaneError::Unavailable("no reply".to_string())))
                    .collect();
                let mut broken = None;
                for (n, indices, sent) in future::join_all(sent).await {
                    let part = Replies::of_pipeline(n, sent, deadline);
                    for (i, reply) in indices.into_iter().zip(part.replies) {
                        replies[i] = reply;
                    }
                    if broken.is_none() {
                        broken = part.broken;
                    }
                }
                Replies { replies, broken }
            }
        }
    }
}

/// A fingerprint of which master serves which slots, from `CLUSTER SLOTS`
/// (each range's first and last slot and its master's address).
fn slots_fingerprint(reply: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut ranges: Vec<(i64, i64, &[u8], i64)> = Vec::new();
    if let Value::Array(items) = reply {
        for item in items {
            if let Value::Array(range) = item {
                if let [Value::Int(first), Value::Int(last), Value::Array(master), ..] = &range[..]
                {
                    if let [Value::BulkString(ip), Value::Int(port), ..] = &master[..] {
                        ranges.push((*first, *last, ip, *port));
                    }
                }
            }
        }
    }
    ranges.sort_unstable();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ranges.hash(&mut hasher);
    hasher.finish()
}

impl Replies {
    /// The replies to one pipeline of `count` commands, or its failure given
    /// to each of them.
    fn of_pipeline(
        count: usize,
        sent: Result<redis::RedisResult<Vec<Value>>, tokio::time::error::Elapsed>,
        deadline: Duration,
    ) -> Self {
        let error = match sent {
            Ok(Ok(replies)) if replies.len() == count => {
                return Self {
                    replies: replies.into_iter().map(Ok).collect(),
                    broken: None,
                }
            }
            Ok(Ok(replies)) => ConnectionError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected number of replies to a pipeline",
                format!("{} replies to {count} commands", replies.len()),
            ))),
            Ok(Err(error)) => ConnectionError::from_command(error),
            Err(_) => ConnectionError::Timeout(deadline),
        };
        Self {
            replies: (0..count)
                .map(|_| Err(error.to_backplane_error()))
                .collect(),
            broken: (!error.is_refusal()).then_some(error),
        }
    }
}

/// The part of a URL (after its scheme) that names hosts.
fn host_part(rest: &str) -> &str {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let hosts = &rest[..end];
    hosts.rsplit_once('@').map_or(hosts, |(_, after)| after)
}

/// The seed URLs (`{scheme}://[credentials@]host:port[?query]` each) of a
/// cluster URL's part after `+cluster://`.
fn cluster_seeds(scheme: &str, rest: &str) -> Result<Vec<String>, String> {
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    if !(path.is_empty() || path == "0") {
        return Err("a Redis Cluster has database 0 only".to_string());
    }
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), authority),
    };
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                Err("an empty host in the list of seeds".to_string())
            } else {
                Ok(format!("{scheme}://{credentials}{host}{query}"))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(seeds)
}

/// Makes ring the process' rustls crypto provider unless one was chosen
/// already (by the application or another library), so that building a TLS
/// configuration never panics for want of one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `scheme://host:port/path` of `url`: user, password, query and fragment
/// removed, so that logs never carry credentials.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_string();
    };
    // Everything up to the last '@' may be credentials, even malformed ones.
    let host_on = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let end = host_on.find(['?', '#']).unwrap_or(host_on.len());
    format!("{scheme}://{}", &host_on[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_credentials() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://user:secret@example.com:6380/2"),
            "redis://example.com:6380/2"
        );
        assert_eq!(redact("rediss://:p@ss@h:1/0?x=1#f"), "rediss://h:1/0");
        assert_eq!(redact("nonsense"), "<not a URL>");
        assert!(!redact("redis://u:hunter2@h").contains("hunter2"));
        assert_eq!(
            redact("redis+cluster://u:pw@a:1,b:2/"),
            "redis+cluster://a:1,b:2/"
        );
    }

    #[test]
    fn cluster_urls_name_their_seeds() {
        assert_eq!(
            cluster_seeds("rediss", "u:p%40ss@a:1,b:2/?x=1"),
            Ok(vec![
                "rediss://u:p%40ss@a:1?x=1".to_string(),
                "rediss://u:p%40ss@b:2?x=1".to_string()
            ])
        );
        assert_eq!(
            cluster_seeds("redis", "a:1"),
            Ok(vec!["redis://a:1".to_string()])
        );
        assert!(cluster_seeds("redis", "a:1,,b:2").is_err());
        assert!(cluster_seeds("redis", "a:1/3").is_err());
    }

    #[test]
    fn slot_maps_are_compared_by_their_masters() {
        let range = |first, last, port, replica| {
            let node = |port| {
                Value::Array(vec![
                    Value::BulkString(b"10.0.0.1".to_vec()),
                    Value::Int(port),
                ])
            };
            Value::Array(vec![
                Value::Int(first),
                Value::Int(last),
                node(port),
                node(replica),
            ])
        };
        let map = |ranges: Vec<Value>| slots_fingerprint(&Value::Array(ranges));
        let before = map(vec![
            range(0, 8191, 7001, 7003),
            range(8192, 16383, 7002, 7004),
        ]);
        // The order of the ranges and the replicas do not matter.
        assert_eq!(
            before,
            map(vec![
                range(8192, 16383, 7002, 7005),
                range(0, 8191, 7001, 7003)
            ])
        );
        // A replica promoted does.
        assert_ne!(
            before,
            map(vec![
                range(0, 8191, 7003, 7001),
                range(8192, 16383, 7002, 7004)
            ])
        );
    }

    #[test]
    fn urls_are_checked() {
        let timeout = Duration::from_secs(1);
        assert!(
            Connector::new("redis+cluster://u:p@a:1,b:2", timeout).is_ok_and(|c| c.is_cluster())
        );
        assert!(Connector::new("redis://a:1", timeout).is_ok_and(|c| !c.is_cluster()));
        for bad in [
            "redis://a:1,b:2",
            "http://a",
            "redis+cluster://a:1,",
            "redis+cluster://a:1/2",
        ] {
            assert!(
                matches!(
                    Connector::new(bad, timeout),
                    Err(BackplaneError::Rejected(_))
                ),
                "{bad}"
            );
        }
    }
}
