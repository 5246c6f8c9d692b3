//! Every option of the node, in the order `--help` lists them. The defaults
//! of the edge's limits and timers are the edge's own ([`EdgeSettings`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use ferrocast_core::DEFAULT_PRESENCE_TTL;
use ferrocast_edge::EdgeSettings;

use super::declare::declare_options;
use super::namespaces::NamespaceConfig;

/// The edge's defaults, which the edge's options take as theirs.
static EDGE: LazyLock<EdgeSettings> = LazyLock::new(EdgeSettings::default);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

declare_options! {
    // Listeners and the server API.

    /// Public listener: GET /ws for clients.
    #[arg(env = "FERROCAST_LISTEN", value_name = "ADDR")]
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),

    /// Admin listener: /metrics, /healthz, /readyz. Keep it private.
    #[arg(env = "FERROCAST_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8081)),

    /// gRPC listener: the server API for backends (proto/ferrocast/v1/api.proto).
    #[arg(env = "FERROCAST_GRPC_LISTEN", value_name = "ADDR")]
    grpc_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 50051)),

    /// The server API key, required as `Authorization: Bearer <key>` by gRPC and the admin
    /// listener's /api/. Prefer the environment variable or --api-key-file to a flag (visible
    /// in the process list). Without a key the API is served only on loopback listeners.
    #[arg(env = "FERROCAST_API_KEY", value_name = "KEY", hide_env_values = true)]
    // A secret: from the flag or environment only, never read from nor written
    // to the file, which names `api_key_file` instead.
    #[serde(skip)]
    api_key: String,

    /// A file holding the server API key (a trailing newline is ignored).
    #[arg(env = "FERROCAST_API_KEY_FILE", value_name = "FILE")]
    api_key_file: PathBuf,

    /// How long the server API's cluster-wide calls (Disconnect, Unsubscribe) wait for other
    /// nodes before answering with the ones that did.
    #[arg(env = "FERROCAST_API_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    api_timeout: Duration = Duration::from_secs(2),

    /// Name of this node in the cluster, unique per process.
    #[arg(env = "FERROCAST_NODE_ID", value_name = "ID")]
    // Empty until `Config::load` picks one.
    node_id: String = String::new() => "$HOSTNAME, else a random name",

    // The backplane.

    /// Backplane between nodes: `memory` (single node, no dependency),
    /// `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS),
    /// `redis+cluster://[user:pass@]host:port,host:port…` (a Redis Cluster, by its seeds),
    /// `rediss+cluster://…`, `nats://[user:pass@|token@]host:port[,…]` or `tls://…`.
    #[arg(env = "FERROCAST_BACKPLANE", value_name = "URL")]
    backplane: String = "memory".into(),

    /// Namespace of this cluster on the backplane: Redis channels are `<prefix>:<topic>`, NATS
    /// subjects `<prefix>.<topic>`.
    #[arg(env = "FERROCAST_BACKPLANE_PREFIX", value_name = "NAME")]
    backplane_prefix: String = "ferrocast".into(),

    /// Timeout of backplane operations; a stalled backplane connection is detected within it.
    #[arg(env = "FERROCAST_BACKPLANE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    backplane_timeout: Duration = Duration::from_secs(5),

    /// Whether /readyz fails while the backplane is down (the node still serves local traffic).
    #[arg(env = "FERROCAST_READY_REQUIRES_BACKPLANE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    ready_requires_backplane: bool = EDGE.ready_requires_backplane,

    /// Redis: use sharded pub/sub (SPUBLISH/SSUBSCRIBE) on one server; wildcard
    /// subscriptions are then refused. Always on with `redis+cluster://`.
    #[arg(env = "FERROCAST_REDIS_SHARDED", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    redis_sharded: bool = false,

    /// NATS: credentials file (JWT and nkey seed) for decentralized authentication.
    #[arg(env = "FERROCAST_NATS_CREDENTIALS", value_name = "FILE")]
    nats_credentials: PathBuf,

    /// NATS: a PEM root certificate to trust for TLS (implies TLS).
    #[arg(env = "FERROCAST_NATS_TLS_CA", value_name = "FILE")]
    nats_tls_ca: PathBuf,

    /// NATS: replicas of the history streams the node creates (1 to 5); by default 3 in a
    /// cluster of 3 or more servers on nats-server 2.10 or later, else 1.
    #[arg(env = "FERROCAST_NATS_STREAM_REPLICAS", value_name = "N")]
    nats_stream_replicas: usize,

    // Logging.

    /// Log format.
    #[arg(env = "FERROCAST_LOG_FORMAT", value_name = "FORMAT")]
    log_format: LogFormat = LogFormat::Text,

    /// Log filter in tracing-subscriber EnvFilter syntax, e.g. `info,ferrocast_edge=debug`.
    #[arg(env = "FERROCAST_LOG_FILTER", value_name = "FILTER")]
    log_filter: String = "info".into(),

    // Limits and timers of client connections.

    /// Largest WebSocket message a client may send, in bytes; larger ones close the connection
    /// with 1009.
    #[arg(env = "FERROCAST_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    max_message_size: usize = EDGE.max_message_size,

    /// Subscriptions one connection may hold; beyond it requests get `limit_exceeded`.
    #[arg(env = "FERROCAST_MAX_SUBSCRIPTIONS_PER_CONNECTION", value_name = "N")]
    max_subscriptions_per_connection: usize = EDGE.max_subscriptions_per_connection,

    /// Connections this node accepts; beyond it upgrades are refused with HTTP 503.
    #[arg(env = "FERROCAST_MAX_CONNECTIONS", value_name = "N")]
    max_connections: usize = EDGE.max_connections,

    /// Longest topic or pattern, in bytes (1 to 255); longer ones get `too_large`.
    #[arg(env = "FERROCAST_MAX_TOPIC_LENGTH", value_name = "BYTES")]
    max_topic_length: usize = EDGE.max_topic_length,

    /// Bytes that may wait for one client; a client that falls further behind is closed with
    /// 4000.
    #[arg(env = "FERROCAST_OUTBOUND_QUEUE_BYTES", value_name = "BYTES")]
    outbound_queue_bytes: usize = EDGE.outbound_queue_bytes,

    /// Shortest time between two writes of deliveries to one connection (at most 100ms): a
    /// message for a connection sent a delivery more recently waits for the rest of it and goes
    /// out in one write with what else arrives meanwhile; a message for a quieter connection goes
    /// at once, and replies alone start no interval. Fewer writes cost less CPU per message on
    /// connections that get many messages a second, for up to this much more latency; 0 (the
    /// default) writes at once.
    #[arg(env = "FERROCAST_WRITE_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    write_interval: Duration = EDGE.write_interval,

    /// Interval of server WebSocket pings; keep it below the idle timeout of every proxy in
    /// front.
    #[arg(env = "FERROCAST_PING_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    ping_interval: Duration = EDGE.ping_interval,

    /// A client silent this long after a ping is closed with 4001.
    #[arg(env = "FERROCAST_PONG_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pong_timeout: Duration = EDGE.pong_timeout,

    /// Time from SIGTERM to exit; connections are closed with 1012 in batches spread over it.
    #[arg(env = "FERROCAST_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    drain_timeout: Duration = Duration::from_secs(10),

    /// Presence: how long an entry lives in the backplane without a refresh; the node
    /// refreshes its entries every third of it, so a dead node's clients vanish within it.
    #[arg(env = "FERROCAST_PRESENCE_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    presence_ttl: Duration = DEFAULT_PRESENCE_TTL,

    /// STOMP: take the CONNECT `login` header as the user id for /user/queue destinations,
    /// WITHOUT authentication. Development and trusted networks only.
    #[arg(env = "FERROCAST_STOMP_LOGIN_IS_USER", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    stomp_login_is_user: bool = EDGE.stomp_login_is_user,

    /// Server-Sent Events: a stream silent this long gets a keep-alive comment; keep it below
    /// the idle timeout of every proxy in front.
    #[arg(env = "FERROCAST_SSE_KEEPALIVE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    sse_keepalive: Duration = EDGE.sse_keepalive,

    // SockJS (docs/protocol.md, "SockJS").

    /// Where SockJS is served on the public listener (sockjs-client 1.x, Spring's
    /// `new SockJS(url)`): `/sockjs`, or a Spring application's `/stomp`, `/ws-endpoint`, ...
    /// `""` or `off` turns SockJS off.
    #[arg(env = "FERROCAST_SOCKJS_PATH", value_name = "PATH")]
    sockjs_path: String = EDGE.sockjs.path.clone().unwrap_or_default(),

    /// SockJS: a session silent this long gets a heartbeat frame; keep it below the idle timeout
    /// of every proxy in front.
    #[arg(env = "FERROCAST_SOCKJS_HEARTBEAT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    sockjs_heartbeat: Duration = EDGE.sockjs.heartbeat,

    /// SockJS: how long a session lives without a receiving request before the node closes it.
    #[arg(env = "FERROCAST_SOCKJS_DISCONNECT_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    sockjs_disconnect_delay: Duration = EDGE.sockjs.disconnect_delay,

    /// SockJS: bytes one streaming response (xhr-streaming, eventsource, htmlfile) carries before
    /// the node ends it and the client opens the next.
    #[arg(env = "FERROCAST_SOCKJS_RESPONSE_LIMIT", value_name = "BYTES")]
    sockjs_response_limit: usize = EDGE.sockjs.response_limit,

    /// SockJS: tell clients cookies are needed and set `JSESSIONID` on session requests, for load
    /// balancers whose stickiness keys on it (ferrocast itself needs no stickiness).
    #[arg(env = "FERROCAST_SOCKJS_COOKIE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    sockjs_cookie: bool = EDGE.sockjs.cookie_needed,

    /// SockJS: the sockjs-client script the iframe page loads (transports without CORS).
    #[arg(env = "FERROCAST_SOCKJS_CLIENT_URL", value_name = "URL")]
    sockjs_client_url: String = EDGE.sockjs.client_url.clone(),

    /// SockJS: also serve the reference test suite's services (/echo, /disabled_websocket_echo,
    /// /cookie_needed_echo, /close) on the public listener. For conformance testing only; never in
    /// production. Not together with --ws-echo-endpoint (both serve /echo).
    #[arg(env = "FERROCAST_SOCKJS_CONFORMANCE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    sockjs_conformance: bool = EDGE.sockjs.conformance,

    // Socket.IO (docs/socketio.md).

    /// Where Socket.IO (Engine.IO v4, socket.io-client 3.x/4.x) is served on the public listener:
    /// `/socket.io`, the clients' default `path`. `""` or `off` turns it off.
    #[arg(env = "FERROCAST_SOCKETIO_PATH", value_name = "PATH")]
    socketio_path: String = EDGE.socketio.path.clone().unwrap_or_default(),

    /// Socket.IO: serve what the official test suites expect instead of ferrocast's events: an
    /// Engine.IO echo at /engine.io/ and, at --socketio-path, the Socket.IO suite's handlers.
    /// For conformance testing only; never in production.
    #[arg(env = "FERROCAST_SOCKETIO_CONFORMANCE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    socketio_conformance: bool = EDGE.socketio.conformance,

    // Authentication of clients.

    /// JWT: a file holding the HS256 shared secret (its bytes; a trailing newline is ignored).
    #[arg(env = "FERROCAST_JWT_HMAC_SECRET_FILE", value_name = "FILE")]
    jwt_hmac_secret_file: PathBuf,

    /// JWT: a PEM public key, RSA (for RS256) or EC P-256 (for ES256).
    #[arg(env = "FERROCAST_JWT_PUBLIC_KEY_FILE", value_name = "FILE")]
    jwt_public_key_file: PathBuf,

    /// JWT: a JWKS file of RSA and EC public keys, reloaded when it changes (tokens pick a key
    /// by `kid`).
    #[arg(env = "FERROCAST_JWT_JWKS_FILE", value_name = "FILE")]
    jwt_jwks_file: PathBuf,

    /// JWT: the `iss` claim tokens must carry, if set.
    #[arg(env = "FERROCAST_JWT_ISSUER", value_name = "ISSUER")]
    jwt_issuer: String,

    /// JWT: the `aud` claim tokens must carry, if set.
    #[arg(env = "FERROCAST_JWT_AUDIENCE", value_name = "AUDIENCE")]
    jwt_audience: String,

    /// Serve clients without a token (namespace rules then decide what they may do).
    #[arg(env = "FERROCAST_ALLOW_ANONYMOUS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    // Unset: decided by `Config::auth_config` and `validate_auth`.
    allow_anonymous: bool => "true without JWT keys, false with; a node whose public listener \
        is not on loopback and has no JWT keys refuses to start unless this is set explicitly",

    /// When anonymous clients are not served: how long a connection without a token at the
    /// upgrade has to send one (JSON `auth`, STOMP CONNECT passcode) before it is closed with
    /// 1008.
    #[arg(env = "FERROCAST_AUTH_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    auth_timeout: Duration = EDGE.auth_timeout,

    /// Origins browsers may connect from, comma-separated: `https://app.example.com`,
    /// `https://*.example.com`, or `*`. Unset: every origin.
    #[arg(env = "FERROCAST_ALLOWED_ORIGINS", value_name = "ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String> = EDGE.allowed_origins.clone() => "every origin",

    /// With --allowed-origins: whether clients sending no Origin header (not browsers) may
    /// connect.
    #[arg(env = "FERROCAST_ALLOW_MISSING_ORIGIN", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_missing_origin: bool = EDGE.allow_missing_origin,

    /// Bytes a WebSocket asks of the kernel per read. The buffer is held only while bytes wait
    /// to be parsed (an idle connection holds none); larger messages arrive in several reads.
    #[arg(env = "FERROCAST_WS_READ_BUFFER_SIZE", value_name = "BYTES")]
    ws_read_buffer_size: usize = EDGE.read_buffer_size,

    /// permessage-deflate with WebSocket clients that offer it (browsers do): `off`, `on`, or a
    /// size in bytes below which messages go uncompressed. A publication is compressed once per
    /// node and the same bytes go to every subscriber that negotiated it; no connection holds a
    /// compressor. Compressed client messages are inflated up to --max-message-size.
    #[arg(env = "FERROCAST_WS_COMPRESSION", value_name = "off|on|BYTES")]
    ws_compression: String = EDGE.ws_compression.to_string(),

    // Rate limits.

    /// Publishes one connection may make per second, sustained; beyond the burst a JSON client
    /// gets `rate_limited` (the connection stays open), a STOMP client an ERROR and the close.
    /// 0: no limit.
    #[arg(env = "FERROCAST_PUBLISH_RATE", value_name = "N")]
    publish_rate: u32 = EDGE.publish_rate.per_second,

    /// Publishes one connection may make at once above --publish-rate.
    #[arg(env = "FERROCAST_PUBLISH_BURST", value_name = "N")]
    publish_burst: u32 = EDGE.publish_rate.burst,

    /// Subscribes one connection may make per second, sustained (as --publish-rate). 0: no
    /// limit.
    #[arg(env = "FERROCAST_SUBSCRIBE_RATE", value_name = "N")]
    subscribe_rate: u32 = EDGE.subscribe_rate.per_second,

    /// Subscribes one connection may make at once above --subscribe-rate: a reconnecting
    /// client restores its subscriptions in one go.
    #[arg(env = "FERROCAST_SUBSCRIBE_BURST", value_name = "N")]
    subscribe_burst: u32 = EDGE.subscribe_rate.burst,

    /// Connection attempts (GET /ws, GET /sse) and HTTP publishes one client address may make
    /// per second; beyond it HTTP 429 with Retry-After. Behind a load balancer every client has
    /// its address: use --client-ip-header there, or keep this off. 0: off.
    #[arg(env = "FERROCAST_IP_CONNECTION_RATE", value_name = "N")]
    ip_connection_rate: u32 = EDGE.ip_connection_rate.per_second,

    /// Connection attempts one client address may make at once above --ip-connection-rate.
    #[arg(env = "FERROCAST_IP_CONNECTION_BURST", value_name = "N")]
    ip_connection_burst: u32 = EDGE.ip_connection_rate.burst,

    /// The request header a trusted proxy in front sets to the client's address, e.g.
    /// `x-forwarded-for` (its rightmost entry counts). ONLY behind such a proxy: a client
    /// reaching the node directly can write any address there. Unset: the TCP peer address.
    #[arg(env = "FERROCAST_CLIENT_IP_HEADER", value_name = "HEADER")]
    client_ip_header: String,

    // HTTP and TLS on the listeners.

    /// Time a client has for the TLS handshake and then for each HTTP request head (both
    /// listeners); a slower client, or an idle keep-alive connection, is cut.
    #[arg(env = "FERROCAST_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    handshake_timeout: Duration = Duration::from_secs(10),

    /// TLS on the public listener: the certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(env = "FERROCAST_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf,

    /// TLS on the public listener: the private key (PEM).
    #[arg(env = "FERROCAST_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf,

    /// TLS on the admin listener: the certificate chain (PEM, leaf first). Needs
    /// --admin-tls-key.
    #[arg(env = "FERROCAST_ADMIN_TLS_CERT", value_name = "FILE")]
    admin_tls_cert: PathBuf,

    /// TLS on the admin listener: the private key (PEM).
    #[arg(env = "FERROCAST_ADMIN_TLS_KEY", value_name = "FILE")]
    admin_tls_key: PathBuf,

    /// TLS on the gRPC listener: the certificate chain (PEM, leaf first). Needs
    /// --grpc-tls-key.
    #[arg(env = "FERROCAST_GRPC_TLS_CERT", value_name = "FILE")]
    grpc_tls_cert: PathBuf,

    /// TLS on the gRPC listener: the private key (PEM).
    #[arg(env = "FERROCAST_GRPC_TLS_KEY", value_name = "FILE")]
    grpc_tls_key: PathBuf,

    /// Serve GET /echo on the public listener: a WebSocket echo on the same stack, settings and
    /// connection limit as /ws. For conformance testing only (the Autobahn suite,
    /// docs/security.md); never in production.
    #[arg(env = "FERROCAST_WS_ECHO_ENDPOINT", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    ws_echo_endpoint: bool = EDGE.echo_endpoint,
}
