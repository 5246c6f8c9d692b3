use std::time::Duration;

/// Limits and timers of the edge. The binary fills them from flags,
/// environment and the config file; [`Default`] holds the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Largest WebSocket message (and frame) a client may send, in bytes. Larger
    /// ones close the connection with 1009.
    pub max_message_size: usize,
    /// Subscriptions one connection may hold; beyond it `limit_exceeded`.
    pub max_subscriptions_per_connection: usize,
    /// Connections this node accepts; beyond it the upgrade is refused with 503.
    pub max_connections: usize,
    /// Longest topic or pattern in bytes (at most 255).
    pub max_topic_length: usize,
    /// Bytes that may wait for one slow client before it is disconnected with 4000.
    pub outbound_queue_bytes: usize,
    /// Interval of server WebSocket pings.
    pub ping_interval: Duration,
    /// How long a client may stay silent after a ping before it is closed.
    pub pong_timeout: Duration,
    /// Per-connection read buffer of the WebSocket codec, in bytes.
    pub read_buffer_size: usize,
    /// Whether `/readyz` fails while the backplane is down. Local traffic is
    /// served either way; this decides whether the load balancer keeps sending
    /// new clients to a node that cannot reach the cluster.
    pub ready_requires_backplane: bool,
    /// Whether a STOMP CONNECT `login` header names the user (for
    /// `/user/queue/...` destinations) without any authentication. For
    /// development and trusted networks only.
    pub stomp_login_is_user: bool,
    /// How long a Server-Sent Events stream may stay silent before it gets a
    /// keep-alive comment: below the idle cuts of common proxies (30 s, 60 s).
    /// A client that takes nothing for this long while events wait is closed
    /// as a slow consumer.
    pub sse_keepalive: Duration,
    /// Whether the public listener serves `GET /echo`, a WebSocket echo on
    /// the same stack, settings and connection limit as `/ws`, for
    /// conformance testing (the Autobahn suite) only.
    pub echo_endpoint: bool,
    /// How long a connection that brought no token at the upgrade has to
    /// authenticate, when anonymous connections are not served.
    pub auth_timeout: Duration,
    /// Origins (`scheme://host[:port]`, or `*.example.com` for subdomains)
    /// browsers may connect from; empty allows every origin.
    pub allowed_origins: Vec<String>,
    /// Whether a client without an `Origin` header (not a browser) may connect
    /// when `allowed_origins` is set.
    pub allow_missing_origin: bool,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_subscriptions_per_connection: 1024,
            max_connections: 50_000,
            max_topic_length: ferrocast_protocol::MAX_TOPIC_LEN,
            outbound_queue_bytes: 1024 * 1024,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            read_buffer_size: 512,
            ready_requires_backplane: true,
            stomp_login_is_user: false,
            sse_keepalive: Duration::from_secs(15),
            echo_endpoint: false,
            auth_timeout: Duration::from_secs(5),
            allowed_origins: Vec::new(),
            allow_missing_origin: true,
        }
    }
}
