//! Configuration: defaults, then an optional TOML file, then `FERROCAST_*`
//! environment variables, then command-line flags (each overriding the last).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::HeaderName;
use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use ferrocast_core::backplane::HistoryPolicy;
use ferrocast_core::{NamespaceSettings, Namespaces, DEFAULT_PRESENCE_TTL};
use ferrocast_edge::{tls, AuthConfig, EdgeSettings, Rate, ServeSettings};
use ferrocast_protocol::{Topic, MAX_TOPIC_LEN};

const ABOUT: &str = "ferrocast: a clustered WebSocket publish/subscribe broker.";
const LONG_ABOUT: &str = "\
ferrocast: a clustered WebSocket publish/subscribe broker.

Clients connect to GET /ws on the public listener and speak the native
protocol in JSON (subprotocol ferrocast.v1.json) or protobuf
(ferrocast.v1.proto), or STOMP 1.0-1.2 (v12.stomp, ...);
clients without WebSocket use GET /sse (Server-Sent Events) and POST /publish
(see docs/protocol.md). Clients authenticate with a JWT when --jwt-* keys are
set (docs/security.md); a node listening beyond loopback without keys refuses
to start unless --allow-anonymous is given. The admin listener serves
/metrics (Prometheus), /healthz and /readyz.

Backends use the server API (docs/api.md): gRPC on --grpc-listen
(proto/ferrocast/v1/api.proto) and the same calls as JSON under /api/ on the
admin listener, with the key of --api-key; without a key the API serves only
on loopback listeners.

Every option can also be set by a FERROCAST_* environment variable (shown with
each flag) or in the TOML file given with --config, under the flag's name with
dashes as underscores (e.g. max_connections = 20000). Flags override the
environment, which overrides the file. Durations take units: 500ms, 25s, 2m.
Sizes are in bytes.

Namespaces (the first token of a topic) are configured in the file only, one
table each, e.g. to keep the last 100 messages of every chat.* topic for 10
minutes so that clients can resume after a reconnect:

  [namespaces.chat]
  history_size = 100
  history_ttl = \"10m\"

On SIGTERM or Ctrl-C the node drains: /readyz fails, new connections are
refused, and open ones are closed with code 1012 in paced batches over
--drain-timeout, after which the process exits.";

/// Command-line interface of the `ferrocast` binary.
#[derive(Debug, Parser)]
#[command(name = "ferrocast", version, about = ABOUT, long_about = LONG_ABOUT)]
pub(crate) struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "FERROCAST_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Print the effective configuration (all sources merged) as TOML and exit.
    #[arg(long)]
    pub(crate) print_config: bool,

    #[command(flatten)]
    pub(crate) overrides: Overrides,
}

/// Options that override the file; `None` when not given.
#[derive(Debug, Default, Args)]
pub(crate) struct Overrides {
    /// Public listener: GET /ws for clients. [default: 127.0.0.1:8080]
    #[arg(long, env = "FERROCAST_LISTEN", value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,

    /// Admin listener: /metrics, /healthz, /readyz. Keep it private. [default: 127.0.0.1:8081]
    #[arg(long, env = "FERROCAST_ADMIN_LISTEN", value_name = "ADDR")]
    pub(crate) admin_listen: Option<SocketAddr>,

    /// gRPC listener: the server API for backends (proto/ferrocast/v1/api.proto). [default: 127.0.0.1:50051]
    #[arg(long, env = "FERROCAST_GRPC_LISTEN", value_name = "ADDR")]
    pub(crate) grpc_listen: Option<SocketAddr>,

    /// The server API key, required as `Authorization: Bearer <key>` by gRPC and the admin listener's /api/. Prefer the environment variable or --api-key-file to a flag (visible in the process list). Without a key the API is served only on loopback listeners.
    #[arg(
        long,
        env = "FERROCAST_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub(crate) api_key: Option<String>,

    /// A file holding the server API key (a trailing newline is ignored).
    #[arg(long, env = "FERROCAST_API_KEY_FILE", value_name = "FILE")]
    pub(crate) api_key_file: Option<PathBuf>,

    /// How long the server API's cluster-wide calls (Disconnect, Unsubscribe) wait for other nodes before answering with the ones that did. [default: 2s]
    #[arg(long, env = "FERROCAST_API_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) api_timeout: Option<Duration>,

    /// Name of this node in the cluster, unique per process. [default: $HOSTNAME, else a random name]
    #[arg(long, env = "FERROCAST_NODE_ID", value_name = "ID")]
    pub(crate) node_id: Option<String>,

    /// Backplane between nodes: `memory` (single node, no dependency), `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS), `nats://[user:pass@|token@]host:port[,…]` or `tls://…`. [default: memory]
    #[arg(long, env = "FERROCAST_BACKPLANE", value_name = "URL")]
    pub(crate) backplane: Option<String>,

    /// Namespace of this cluster on the backplane: Redis channels are `<prefix>:<topic>`, NATS subjects `<prefix>.<topic>`. [default: ferrocast]
    #[arg(long, env = "FERROCAST_BACKPLANE_PREFIX", value_name = "NAME")]
    pub(crate) backplane_prefix: Option<String>,

    /// Timeout of backplane operations; a stalled backplane connection is detected within it. [default: 5s]
    #[arg(long, env = "FERROCAST_BACKPLANE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) backplane_timeout: Option<Duration>,

    /// Whether /readyz fails while the backplane is down (the node still serves local traffic). [default: true]
    #[arg(long, env = "FERROCAST_READY_REQUIRES_BACKPLANE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) ready_requires_backplane: Option<bool>,

    /// Redis: use sharded pub/sub (SPUBLISH/SSUBSCRIBE) for Redis Cluster; wildcard subscriptions are then refused. [default: false]
    #[arg(long, env = "FERROCAST_REDIS_SHARDED", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) redis_sharded: Option<bool>,

    /// NATS: credentials file (JWT and nkey seed) for decentralized authentication.
    #[arg(long, env = "FERROCAST_NATS_CREDENTIALS", value_name = "FILE")]
    pub(crate) nats_credentials: Option<PathBuf>,

    /// NATS: a PEM root certificate to trust for TLS (implies TLS).
    #[arg(long, env = "FERROCAST_NATS_TLS_CA", value_name = "FILE")]
    pub(crate) nats_tls_ca: Option<PathBuf>,

    /// Log format. [default: text]
    #[arg(long, env = "FERROCAST_LOG_FORMAT", value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,

    /// Log filter in tracing-subscriber EnvFilter syntax, e.g. `info,ferrocast_edge=debug`. [default: info]
    #[arg(long, env = "FERROCAST_LOG_FILTER", value_name = "FILTER")]
    pub(crate) log_filter: Option<String>,

    /// Largest WebSocket message a client may send, in bytes; larger ones close the connection with 1009. [default: 65536]
    #[arg(long, env = "FERROCAST_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub(crate) max_message_size: Option<usize>,

    /// Subscriptions one connection may hold; beyond it requests get `limit_exceeded`. [default: 1024]
    #[arg(
        long,
        env = "FERROCAST_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        value_name = "N"
    )]
    pub(crate) max_subscriptions_per_connection: Option<usize>,

    /// Connections this node accepts; beyond it upgrades are refused with HTTP 503. [default: 50000]
    #[arg(long, env = "FERROCAST_MAX_CONNECTIONS", value_name = "N")]
    pub(crate) max_connections: Option<usize>,

    /// Longest topic or pattern, in bytes (1 to 255); longer ones get `too_large`. [default: 255]
    #[arg(long, env = "FERROCAST_MAX_TOPIC_LENGTH", value_name = "BYTES")]
    pub(crate) max_topic_length: Option<usize>,

    /// Bytes that may wait for one client; a client that falls further behind is closed with 4000. [default: 1048576]
    #[arg(long, env = "FERROCAST_OUTBOUND_QUEUE_BYTES", value_name = "BYTES")]
    pub(crate) outbound_queue_bytes: Option<usize>,

    /// Interval of server WebSocket pings; keep it below the idle timeout of every proxy in front. [default: 25s]
    #[arg(long, env = "FERROCAST_PING_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) ping_interval: Option<Duration>,

    /// A client silent this long after a ping is closed with 4001. [default: 10s]
    #[arg(long, env = "FERROCAST_PONG_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) pong_timeout: Option<Duration>,

    /// Time from SIGTERM to exit; connections are closed with 1012 in batches spread over it. [default: 10s]
    #[arg(long, env = "FERROCAST_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) drain_timeout: Option<Duration>,

    /// Presence: how long an entry lives in the backplane without a refresh; the node refreshes its entries every third of it, so a dead node's clients vanish within it. [default: 30s]
    #[arg(long, env = "FERROCAST_PRESENCE_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) presence_ttl: Option<Duration>,

    /// STOMP: take the CONNECT `login` header as the user id for /user/queue destinations, WITHOUT authentication. Development and trusted networks only. [default: false]
    #[arg(long, env = "FERROCAST_STOMP_LOGIN_IS_USER", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) stomp_login_is_user: Option<bool>,

    /// Server-Sent Events: a stream silent this long gets a keep-alive comment; keep it below the idle timeout of every proxy in front. [default: 15s]
    #[arg(long, env = "FERROCAST_SSE_KEEPALIVE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) sse_keepalive: Option<Duration>,

    /// JWT: a file holding the HS256 shared secret (its bytes; a trailing newline is ignored).
    #[arg(long, env = "FERROCAST_JWT_HMAC_SECRET_FILE", value_name = "FILE")]
    pub(crate) jwt_hmac_secret_file: Option<PathBuf>,

    /// JWT: a PEM public key, RSA (for RS256) or EC P-256 (for ES256).
    #[arg(long, env = "FERROCAST_JWT_PUBLIC_KEY_FILE", value_name = "FILE")]
    pub(crate) jwt_public_key_file: Option<PathBuf>,

    /// JWT: a JWKS file of RSA and EC public keys, reloaded when it changes (tokens pick a key by `kid`).
    #[arg(long, env = "FERROCAST_JWT_JWKS_FILE", value_name = "FILE")]
    pub(crate) jwt_jwks_file: Option<PathBuf>,

    /// JWT: the `iss` claim tokens must carry, if set.
    #[arg(long, env = "FERROCAST_JWT_ISSUER", value_name = "ISSUER")]
    pub(crate) jwt_issuer: Option<String>,

    /// JWT: the `aud` claim tokens must carry, if set.
    #[arg(long, env = "FERROCAST_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub(crate) jwt_audience: Option<String>,

    /// Serve clients without a token (namespace rules then decide what they may do). [default: true without JWT keys, false with; a node whose public listener is not on loopback and has no JWT keys refuses to start unless this is set explicitly]
    #[arg(long, env = "FERROCAST_ALLOW_ANONYMOUS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) allow_anonymous: Option<bool>,

    /// When anonymous clients are not served: how long a connection without a token at the upgrade has to send one (JSON `auth`, STOMP CONNECT passcode) before it is closed with 1008. [default: 5s]
    #[arg(long, env = "FERROCAST_AUTH_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) auth_timeout: Option<Duration>,

    /// Origins browsers may connect from, comma-separated: `https://app.example.com`, `https://*.example.com`, or `*`. Unset: every origin. [default: every origin]
    #[arg(
        long,
        env = "FERROCAST_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub(crate) allowed_origins: Option<Vec<String>>,

    /// With --allowed-origins: whether clients sending no Origin header (not browsers) may connect. [default: true]
    #[arg(long, env = "FERROCAST_ALLOW_MISSING_ORIGIN", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) allow_missing_origin: Option<bool>,

    /// Read buffer per WebSocket connection, in bytes; allocated for every connection, so it weighs on memory per idle connection. Larger messages still arrive, in several reads (the buffer grows). [default: 512]
    #[arg(long, env = "FERROCAST_WS_READ_BUFFER_SIZE", value_name = "BYTES")]
    pub(crate) ws_read_buffer_size: Option<usize>,

    /// Publishes one connection may make per second, sustained; beyond the burst a JSON client gets `rate_limited` (the connection stays open), a STOMP client an ERROR and the close. 0: no limit. [default: 100]
    #[arg(long, env = "FERROCAST_PUBLISH_RATE", value_name = "N")]
    pub(crate) publish_rate: Option<u32>,

    /// Publishes one connection may make at once above --publish-rate. [default: 200]
    #[arg(long, env = "FERROCAST_PUBLISH_BURST", value_name = "N")]
    pub(crate) publish_burst: Option<u32>,

    /// Subscribes one connection may make per second, sustained (as --publish-rate). 0: no limit. [default: 50]
    #[arg(long, env = "FERROCAST_SUBSCRIBE_RATE", value_name = "N")]
    pub(crate) subscribe_rate: Option<u32>,

    /// Subscribes one connection may make at once above --subscribe-rate: a reconnecting client restores its subscriptions in one go. [default: 1024]
    #[arg(long, env = "FERROCAST_SUBSCRIBE_BURST", value_name = "N")]
    pub(crate) subscribe_burst: Option<u32>,

    /// Connection attempts (GET /ws, GET /sse) and HTTP publishes one client address may make per second; beyond it HTTP 429 with Retry-After. Behind a load balancer every client has its address: use --client-ip-header there, or keep this off. 0: off. [default: 0]
    #[arg(long, env = "FERROCAST_IP_CONNECTION_RATE", value_name = "N")]
    pub(crate) ip_connection_rate: Option<u32>,

    /// Connection attempts one client address may make at once above --ip-connection-rate. [default: 20]
    #[arg(long, env = "FERROCAST_IP_CONNECTION_BURST", value_name = "N")]
    pub(crate) ip_connection_burst: Option<u32>,

    /// The request header a trusted proxy in front sets to the client's address, e.g. `x-forwarded-for` (its rightmost entry counts). ONLY behind such a proxy: a client reaching the node directly can write any address there. Unset: the TCP peer address.
    #[arg(long, env = "FERROCAST_CLIENT_IP_HEADER", value_name = "HEADER")]
    pub(crate) client_ip_header: Option<String>,

    /// Time a client has for the TLS handshake and then for each HTTP request head (both listeners); a slower client, or an idle keep-alive connection, is cut. [default: 10s]
    #[arg(long, env = "FERROCAST_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) handshake_timeout: Option<Duration>,

    /// TLS on the public listener: the certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(long, env = "FERROCAST_TLS_CERT", value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// TLS on the public listener: the private key (PEM).
    #[arg(long, env = "FERROCAST_TLS_KEY", value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,

    /// TLS on the admin listener: the certificate chain (PEM, leaf first). Needs --admin-tls-key.
    #[arg(long, env = "FERROCAST_ADMIN_TLS_CERT", value_name = "FILE")]
    pub(crate) admin_tls_cert: Option<PathBuf>,

    /// TLS on the admin listener: the private key (PEM).
    #[arg(long, env = "FERROCAST_ADMIN_TLS_KEY", value_name = "FILE")]
    pub(crate) admin_tls_key: Option<PathBuf>,

    /// TLS on the gRPC listener: the certificate chain (PEM, leaf first). Needs --grpc-tls-key.
    #[arg(long, env = "FERROCAST_GRPC_TLS_CERT", value_name = "FILE")]
    pub(crate) grpc_tls_cert: Option<PathBuf>,

    /// TLS on the gRPC listener: the private key (PEM).
    #[arg(long, env = "FERROCAST_GRPC_TLS_KEY", value_name = "FILE")]
    pub(crate) grpc_tls_key: Option<PathBuf>,

    /// Serve GET /echo on the public listener: a WebSocket echo on the same stack, settings and connection limit as /ws. For conformance testing only (the Autobahn suite, docs/security.md); never in production. [default: false]
    #[arg(long, env = "FERROCAST_WS_ECHO_ENDPOINT", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) ws_echo_endpoint: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) node_id: String,
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) grpc_listen: SocketAddr,
    /// From the flag or environment only: never read from nor written to
    /// the file (a secret); the file names `api_key_file` instead.
    #[serde(skip)]
    pub(crate) api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_key_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub(crate) api_timeout: Duration,
    pub(crate) backplane: String,
    pub(crate) backplane_prefix: String,
    #[serde(with = "humantime_serde")]
    pub(crate) backplane_timeout: Duration,
    pub(crate) ready_requires_backplane: bool,
    pub(crate) redis_sharded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nats_credentials: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nats_tls_ca: Option<PathBuf>,
    pub(crate) log_format: LogFormat,
    pub(crate) log_filter: String,
    pub(crate) max_message_size: usize,
    pub(crate) max_subscriptions_per_connection: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_topic_length: usize,
    pub(crate) outbound_queue_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub(crate) ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) pong_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) drain_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) presence_ttl: Duration,
    pub(crate) ws_read_buffer_size: usize,
    pub(crate) ws_echo_endpoint: bool,
    pub(crate) stomp_login_is_user: bool,
    #[serde(with = "humantime_serde")]
    pub(crate) sse_keepalive: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwt_hmac_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwt_public_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwt_jwks_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwt_issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwt_audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) allow_anonymous: Option<bool>,
    #[serde(with = "humantime_serde")]
    pub(crate) auth_timeout: Duration,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) allow_missing_origin: bool,
    pub(crate) publish_rate: u32,
    pub(crate) publish_burst: u32,
    pub(crate) subscribe_rate: u32,
    pub(crate) subscribe_burst: u32,
    pub(crate) ip_connection_rate: u32,
    pub(crate) ip_connection_burst: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_ip_header: Option<String>,
    #[serde(with = "humantime_serde")]
    pub(crate) handshake_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) admin_tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) admin_tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) grpc_tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) grpc_tls_key: Option<PathBuf>,
    /// Settings per namespace, by name (file only: `[namespaces.<name>]`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) namespaces: BTreeMap<String, NamespaceConfig>,
}

/// The settings of one namespace in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NamespaceConfig {
    /// Publications kept per topic for recovery; 0 keeps no history.
    pub(crate) history_size: usize,
    /// How long a publication is kept.
    #[serde(with = "humantime_serde")]
    pub(crate) history_ttl: Duration,
    /// Whether connections without a token may subscribe and publish here.
    pub(crate) anonymous: bool,
    /// Whether clients may publish here (else only backends).
    pub(crate) client_publish: bool,
    /// Whether the cluster keeps who is subscribed to each topic here.
    pub(crate) presence: bool,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            anonymous: true,
            client_publish: true,
            presence: false,
        }
    }
}

/// Time for the TLS handshake and each request head (`handshake_timeout`).
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most publications a namespace may keep per topic.
const MAX_HISTORY_SIZE: usize = 100_000;

impl Default for Config {
    fn default() -> Self {
        let edge = EdgeSettings::default();
        Self {
            node_id: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            api_key: None,
            api_key_file: None,
            api_timeout: Duration::from_secs(2),
            backplane: "memory".into(),
            backplane_prefix: "ferrocast".into(),
            backplane_timeout: Duration::from_secs(5),
            ready_requires_backplane: edge.ready_requires_backplane,
            redis_sharded: false,
            nats_credentials: None,
            nats_tls_ca: None,
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            max_message_size: edge.max_message_size,
            max_subscriptions_per_connection: edge.max_subscriptions_per_connection,
            max_connections: edge.max_connections,
            max_topic_length: edge.max_topic_length,
            outbound_queue_bytes: edge.outbound_queue_bytes,
            ping_interval: edge.ping_interval,
            pong_timeout: edge.pong_timeout,
            drain_timeout: Duration::from_secs(10),
            presence_ttl: DEFAULT_PRESENCE_TTL,
            ws_read_buffer_size: edge.read_buffer_size,
            ws_echo_endpoint: edge.echo_endpoint,
            stomp_login_is_user: edge.stomp_login_is_user,
            sse_keepalive: edge.sse_keepalive,
            jwt_hmac_secret_file: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            allow_anonymous: None,
            auth_timeout: edge.auth_timeout,
            allowed_origins: edge.allowed_origins.clone(),
            allow_missing_origin: edge.allow_missing_origin,
            publish_rate: edge.publish_rate.per_second,
            publish_burst: edge.publish_rate.burst,
            subscribe_rate: edge.subscribe_rate.per_second,
            subscribe_burst: edge.subscribe_rate.burst,
            ip_connection_rate: edge.ip_connection_rate.per_second,
            ip_connection_burst: edge.ip_connection_rate.burst,
            client_ip_header: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls_cert: None,
            tls_key: None,
            admin_tls_cert: None,
            admin_tls_key: None,
            grpc_tls_cert: None,
            grpc_tls_key: None,
            namespaces: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Merges defaults, the file named by `cli.config`, and the overrides
    /// (clap has already put environment variables under flags), then checks
    /// the result.
    pub(crate) fn load(cli: &Cli) -> anyhow::Result<Self> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(&cli.overrides);
        if config.node_id.is_empty() {
            config.node_id = default_node_id();
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    fn apply(&mut self, o: &Overrides) {
        macro_rules! set {
            ($($field:ident),* $(,)?) => {
                $(if let Some(value) = &o.$field { self.$field = value.clone(); })*
            };
        }
        if o.nats_credentials.is_some() {
            self.nats_credentials.clone_from(&o.nats_credentials);
        }
        if o.nats_tls_ca.is_some() {
            self.nats_tls_ca.clone_from(&o.nats_tls_ca);
        }
        macro_rules! set_optional {
            ($($field:ident),* $(,)?) => {
                $(if o.$field.is_some() { self.$field.clone_from(&o.$field); })*
            };
        }
        set_optional!(
            jwt_hmac_secret_file,
            jwt_public_key_file,
            jwt_jwks_file,
            jwt_issuer,
            jwt_audience,
            allow_anonymous,
            api_key,
            api_key_file,
            client_ip_header,
            tls_cert,
            tls_key,
            admin_tls_cert,
            admin_tls_key,
            grpc_tls_cert,
            grpc_tls_key,
        );
        set!(
            grpc_listen,
            api_timeout,
            node_id,
            listen,
            admin_listen,
            backplane,
            backplane_prefix,
            backplane_timeout,
            ready_requires_backplane,
            redis_sharded,
            log_format,
            log_filter,
            max_message_size,
            max_subscriptions_per_connection,
            max_connections,
            max_topic_length,
            outbound_queue_bytes,
            ping_interval,
            pong_timeout,
            drain_timeout,
            presence_ttl,
            ws_read_buffer_size,
            ws_echo_endpoint,
            stomp_login_is_user,
            sse_keepalive,
            auth_timeout,
            allowed_origins,
            allow_missing_origin,
            publish_rate,
            publish_burst,
            subscribe_rate,
            subscribe_burst,
            ip_connection_rate,
            ip_connection_burst,
            handshake_timeout,
        );
    }

    fn validate(&self) -> anyhow::Result<()> {
        if BackplaneKind::of(&self.backplane).is_none() {
            bail!(
                "backplane {:?} is not supported: use memory, redis://…, rediss://…, nats://… or tls://…",
                self.backplane
            );
        }
        let prefix_ok = !self.backplane_prefix.is_empty()
            && self
                .backplane_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !prefix_ok {
            bail!("backplane_prefix must be non-empty and made of A-Z a-z 0-9 _ -");
        }
        if self.backplane_timeout < Duration::from_millis(100) {
            bail!("backplane_timeout must be at least 100ms");
        }
        if !(1..=MAX_TOPIC_LEN).contains(&self.max_topic_length) {
            bail!("max_topic_length must be between 1 and {MAX_TOPIC_LEN}");
        }
        if self.max_message_size < 128 {
            bail!("max_message_size must be at least 128 bytes");
        }
        if self.outbound_queue_bytes < self.max_message_size {
            bail!("outbound_queue_bytes must be at least max_message_size, or one message could never be queued");
        }
        if !(1..=10_000_000).contains(&self.max_connections) {
            bail!("max_connections must be between 1 and 10000000");
        }
        if self.max_subscriptions_per_connection == 0 {
            bail!("max_subscriptions_per_connection must be at least 1");
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            bail!("ping_interval and pong_timeout must be above zero");
        }
        if self.ws_read_buffer_size < 256 {
            bail!("ws_read_buffer_size must be at least 256 bytes");
        }
        let has_keys = self.jwt_hmac_secret_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_file.is_some();
        if self.allow_anonymous.is_none() && !has_keys && !self.listen.ip().is_loopback() {
            bail!(
                "refusing to start: the public listener {} is reachable from other hosts and no \
                 authentication is configured; set jwt_hmac_secret_file, jwt_public_key_file or \
                 jwt_jwks_file, or serve anonymous clients explicitly with allow_anonymous = true",
                self.listen
            );
        }
        if self.sse_keepalive < Duration::from_millis(100) {
            bail!("sse_keepalive must be at least 100ms");
        }
        if self.auth_timeout.is_zero() {
            bail!("auth_timeout must be above zero");
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|key| key.trim().len() < 16)
        {
            bail!("api_key must be at least 16 characters");
        }
        if self.api_timeout < Duration::from_millis(100) {
            bail!("api_timeout must be at least 100ms");
        }
        if self.presence_ttl < Duration::from_secs(1) {
            bail!("presence_ttl must be at least 1s");
        }
        for (name, rate, burst) in [
            ("publish", self.publish_rate, self.publish_burst),
            ("subscribe", self.subscribe_rate, self.subscribe_burst),
            (
                "ip_connection",
                self.ip_connection_rate,
                self.ip_connection_burst,
            ),
        ] {
            if rate > 0 && burst == 0 {
                bail!("{name}_burst must be at least 1 while {name}_rate is set");
            }
        }
        self.client_ip_header()?;
        if self.handshake_timeout < Duration::from_millis(100) {
            bail!("handshake_timeout must be at least 100ms");
        }
        for (listener, cert, key) in [
            ("tls", &self.tls_cert, &self.tls_key),
            ("admin_tls", &self.admin_tls_cert, &self.admin_tls_key),
            ("grpc_tls", &self.grpc_tls_cert, &self.grpc_tls_key),
        ] {
            if cert.is_some() != key.is_some() {
                bail!("{listener}_cert and {listener}_key go together: set both or neither");
            }
        }
        for (name, namespace) in &self.namespaces {
            let valid = Topic::parse(name, MAX_TOPIC_LEN).is_ok_and(|t| t.namespace() == name);
            if !valid {
                bail!(
                    "namespaces.{name:?}: a namespace is one topic token (A-Z a-z 0-9 _ - : @ =)"
                );
            }
            if namespace.history_size > MAX_HISTORY_SIZE {
                bail!("namespaces.{name}.history_size must be at most {MAX_HISTORY_SIZE}");
            }
            if namespace.history_size > 0 && namespace.history_ttl < Duration::from_secs(1) {
                bail!("namespaces.{name}.history_ttl must be at least 1s");
            }
        }
        Ok(())
    }

    /// The server API key, from the flag or environment, else its file.
    pub(crate) fn api_key(&self) -> anyhow::Result<Option<String>> {
        if let Some(key) = &self.api_key {
            // A secret mounted as an environment variable often ends in a newline.
            return Ok(Some(key.trim().to_string()));
        }
        let Some(path) = &self.api_key_file else {
            return Ok(None);
        };
        let key = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read api_key_file {}", path.display()))?;
        let key = key.trim();
        if key.len() < 16 {
            bail!(
                "the key in api_key_file {} must be at least 16 characters",
                path.display()
            );
        }
        Ok(Some(key.to_string()))
    }

    /// The authentication settings, with the key files read.
    pub(crate) fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let read = |path: &Option<PathBuf>, what: &str| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
                })
                .transpose()
        };
        let hmac_secret = read(&self.jwt_hmac_secret_file, "jwt_hmac_secret_file")?.map(|mut s| {
            while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                s.pop();
            }
            s
        });
        if hmac_secret.as_ref().is_some_and(|s| s.len() < 32) {
            bail!("jwt_hmac_secret_file must hold at least 32 bytes");
        }
        let config = AuthConfig {
            hmac_secret,
            public_key_pem: read(&self.jwt_public_key_file, "jwt_public_key_file")?,
            jwks_file: self.jwt_jwks_file.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            allow_anonymous: false,
        };
        let allow_anonymous = self.allow_anonymous.unwrap_or(!config.has_keys());
        Ok(AuthConfig {
            allow_anonymous,
            ..config
        })
    }

    /// The namespaces as the hub uses them.
    pub(crate) fn namespaces(&self) -> Namespaces {
        let by_name: HashMap<String, NamespaceSettings> = self
            .namespaces
            .iter()
            .map(|(name, ns)| {
                let history = (ns.history_size > 0).then_some(HistoryPolicy {
                    size: ns.history_size,
                    ttl: ns.history_ttl,
                });
                (
                    name.clone(),
                    NamespaceSettings {
                        history,
                        presence: ns.presence,
                        anonymous: ns.anonymous,
                        client_publish: ns.client_publish,
                    },
                )
            })
            .collect();
        Namespaces::new(by_name).with_presence_ttl(self.presence_ttl)
    }

    pub(crate) fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }

    pub(crate) fn edge_settings(&self) -> EdgeSettings {
        EdgeSettings {
            max_message_size: self.max_message_size,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            max_connections: self.max_connections,
            max_topic_length: self.max_topic_length,
            outbound_queue_bytes: self.outbound_queue_bytes,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            read_buffer_size: self.ws_read_buffer_size,
            ready_requires_backplane: self.ready_requires_backplane,
            stomp_login_is_user: self.stomp_login_is_user,
            sse_keepalive: self.sse_keepalive,
            echo_endpoint: self.ws_echo_endpoint,
            auth_timeout: self.auth_timeout,
            allowed_origins: self.allowed_origins.clone(),
            allow_missing_origin: self.allow_missing_origin,
            publish_rate: Rate {
                per_second: self.publish_rate,
                burst: self.publish_burst,
            },
            subscribe_rate: Rate {
                per_second: self.subscribe_rate,
                burst: self.subscribe_burst,
            },
            ip_connection_rate: Rate {
                per_second: self.ip_connection_rate,
                burst: self.ip_connection_burst,
            },
            // Checked by `validate`.
            client_ip_header: self.client_ip_header().ok().flatten(),
        }
    }

    /// The header that carries client addresses, if set and valid.
    fn client_ip_header(&self) -> anyhow::Result<Option<HeaderName>> {
        self.client_ip_header
            .as_deref()
            .map(|name| {
                HeaderName::from_bytes(name.trim().as_bytes()).with_context(|| {
                    format!("client_ip_header {name:?} is not an HTTP header name")
                })
            })
            .transpose()
    }

    /// How the public and the admin listener serve connections, with their
    /// TLS certificates read.
    pub(crate) fn serve_settings(&self) -> anyhow::Result<(ServeSettings, ServeSettings)> {
        let listener = |name, cert: &Option<PathBuf>, key: &Option<PathBuf>, flags| {
            let tls = match (cert, key) {
                (Some(cert), Some(key)) => {
                    Some(tls::server_config(cert, key).with_context(|| format!("TLS ({flags})"))?)
                }
                _ => None,
            };
            anyhow::Ok(ServeSettings {
                name,
                handshake_timeout: self.handshake_timeout,
                tls,
            })
        };
        Ok((
            listener(
                "public",
                &self.tls_cert,
                &self.tls_key,
                "--tls-cert, --tls-key",
            )?,
            listener(
                "admin",
                &self.admin_tls_cert,
                &self.admin_tls_key,
                "--admin-tls-cert, --admin-tls-key",
            )?,
        ))
    }

    /// The gRPC listener's TLS configuration, when it has one.
    pub(crate) fn grpc_tls(&self) -> anyhow::Result<Option<rustls::ServerConfig>> {
        match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(cert), Some(key)) => Ok(Some(
                tls::server_config(cert, key).context("TLS (--grpc-tls-cert, --grpc-tls-key)")?,
            )),
            _ => Ok(None),
        }
    }

    pub(crate) fn backplane_kind(&self) -> BackplaneKind {
        BackplaneKind::of(&self.backplane).unwrap_or(BackplaneKind::Memory)
    }
}

/// Which backplane `--backplane` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackplaneKind {
    Memory,
    Redis,
    Nats,
}

impl BackplaneKind {
    fn of(url: &str) -> Option<Self> {
        if url == "memory" {
            return Some(Self::Memory);
        }
        let scheme = url.split_once("://")?.0;
        match scheme {
            "redis" | "rediss" => Some(Self::Redis),
            "nats" | "tls" => Some(Self::Nats),
            _ => None,
        }
    }
}

fn default_node_id() -> String {
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() => host,
        _ => format!("ferrocast-{:08x}", rand::random::<u32>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["ferrocast"];
        argv.extend_from_slice(args);
        Config::load(&Cli::try_parse_from(argv)?)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(&["--node-id", "n1"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(config.backplane, "memory");
        assert_eq!(config.ping_interval, Duration::from_secs(25));
        assert_eq!(config.node_id, "n1");
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("ferrocast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "max_connections = 7\nping_interval = \"3s\"\nlisten = \"127.0.0.1:9000\"\n\
             [namespaces.chat]\nhistory_size = 50\nhistory_ttl = \"2m\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();

        let config = load(&["--config", path, "--listen", "127.0.0.1:9001"]).unwrap();
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.ping_interval, Duration::from_secs(3));
        assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
        let namespaces = config.namespaces();
        assert_eq!(
            namespaces.get("chat").history,
            Some(HistoryPolicy {
                size: 50,
                ttl: Duration::from_secs(120)
            })
        );
        assert_eq!(namespaces.get("news").history, None);

        // What --print-config prints loads back to the same configuration.
        let round_trip: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(round_trip, config);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rate_limits_timeouts_and_tls_settings() {
        let edge = load(&[]).unwrap().edge_settings();
        assert_eq!(
            (
                edge.publish_rate,
                edge.subscribe_rate,
                edge.ip_connection_rate
            ),
            (
                Rate {
                    per_second: 100,
                    burst: 200
                },
                Rate {
                    per_second: 50,
                    burst: 1024
                },
                Rate {
                    per_second: 0,
                    burst: 20
                }
            )
        );
        assert_eq!(edge.client_ip_header, None);
        let config = load(&[
            "--publish-rate",
            "5",
            "--ip-connection-rate",
            "3",
            "--client-ip-header",
            "X-Forwarded-For",
            "--handshake-timeout",
            "2s",
        ])
        .unwrap();
        let edge = config.edge_settings();
        assert_eq!(edge.publish_rate.per_second, 5);
        assert_eq!(edge.ip_connection_rate.per_second, 3);
        assert_eq!(
            edge.client_ip_header.as_ref().map(HeaderName::as_str),
            Some("x-forwarded-for")
        );
        let (public, admin) = config.serve_settings().unwrap();
        assert_eq!(public.handshake_timeout, Duration::from_secs(2));
        assert!(public.tls.is_none() && admin.tls.is_none());
        let round_trip: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(round_trip, config);

        for (args, complaint) in [
            (
                &["--subscribe-rate", "5", "--subscribe-burst", "0"][..],
                "subscribe_burst",
            ),
            (&["--client-ip-header", "x forwarded"], "client_ip_header"),
            (&["--handshake-timeout", "10ms"], "handshake_timeout"),
            (&["--tls-cert", "cert.pem"], "tls_cert and tls_key"),
            (&["--admin-tls-key", "key.pem"], "admin_tls_cert"),
        ] {
            let err = load(args).unwrap_err();
            assert!(format!("{err:#}").contains(complaint), "{args:?}: {err:#}");
        }
        let missing = load(&[
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .unwrap()
        .serve_settings()
        .unwrap_err();
        assert!(
            format!("{missing:#}").contains("--tls-cert, --tls-key"),
            "{missing:#}"
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        let err = load(&["--max-topic-length", "300"]).unwrap_err();
        assert!(err.to_string().contains("max_topic_length"), "{err}");
        let err = load(&["--backplane", "mqtt://localhost"]).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        assert_eq!(
            load(&["--backplane", "redis://h:1"])
                .unwrap()
                .backplane_kind(),
            BackplaneKind::Redis
        );
        assert_eq!(
            load(&["--backplane", "tls://h:1"])
                .unwrap()
                .backplane_kind(),
            BackplaneKind::Nats
        );
        let err = load(&["--backplane-prefix", "a.b"]).unwrap_err();
        assert!(err.to_string().contains("backplane_prefix"), "{err}");
        assert!(
            !load(&["--ready-requires-backplane=false"])
                .unwrap()
                .ready_requires_backplane
        );
        assert!(load(&["--redis-sharded"]).unwrap().redis_sharded);
        assert!(!load(&[]).unwrap().edge_settings().echo_endpoint);
        assert!(
            load(&["--ws-echo-endpoint"])
                .unwrap()
                .edge_settings()
                .echo_endpoint
        );
        assert!(load(&["--ping-interval", "soon"]).is_err());

        let dir = std::env::temp_dir().join(format!("ferrocast-badcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "max_conections = 7\n").unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("max_conections"), "{err:#}");
        std::fs::write(&file, "[namespaces.\"a.b\"]\nhistory_size = 5\n").unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("one topic token"), "{err:#}");
        std::fs::write(
            &file,
            "[namespaces.chat]\nhistory_size = 5\nhistory_ttl = \"10ms\"\n",
        )
        .unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("history_ttl"), "{err:#}");
        std::fs::write(&file, "[namespaces.chat]\nhistory_sise = 5\n").unwrap();
        let err = load(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("history_sise"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
