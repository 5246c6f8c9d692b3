use std::time::Duration;

use axum::http::HeaderName;

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
    /// The shortest time between two writes of deliveries to one
    /// connection: a message for a connection sent a delivery more recently
    /// waits for the rest of it, and goes out in one write with what else
    /// arrives meanwhile (replies alone start no interval). Less CPU per
    /// message on connections that get many, for up to this much more
    /// latency; zero (the default) writes at once.
    pub write_interval: Duration,
    /// Interval of server WebSocket pings.
    pub ping_interval: Duration,
    /// How long a client may stay silent after a ping before it is closed.
    pub pong_timeout: Duration,
    /// Per-connection read buffer of the WebSocket codec, in bytes.
    pub read_buffer_size: usize,
    /// permessage-deflate (RFC 7692) with clients that offer it.
    pub ws_compression: WsCompression,
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
    /// Publishes one connection may make: a client that floods the
    /// backplane gets `rate_limited` instead of slowing everyone's delivery.
    pub publish_rate: Rate,
    /// Subscribes one connection may make: each new filter costs a
    /// backplane subscription, so subscribe churn is bounded.
    pub subscribe_rate: Rate,
    /// Connection attempts (`GET /ws`, `GET /sse`) and HTTP publishes one
    /// client address may make, refused with 429 beyond it. Off by default:
    /// behind a load balancer every client has the balancer's address,
    /// unless `client_ip_header` names the header that carries the real one.
    pub ip_connection_rate: Rate,
    /// The request header that carries the client's address (its rightmost
    /// entry), set by a trusted proxy in front, e.g. `x-forwarded-for`.
    /// Without it the peer address of the TCP connection is the client's.
    /// Only safe behind a proxy that overwrites or appends to it: a client
    /// that reaches the node directly can put anything there.
    pub client_ip_header: Option<HeaderName>,
    /// SockJS on the public listener (docs/protocol.md, "SockJS").
    pub sockjs: SockjsSettings,
    /// Socket.IO on the public listener (docs/socketio.md).
    pub socketio: SocketioSettings,
}

/// Socket.IO (protocol v5 over Engine.IO v4, what `socket.io-client` 3.x
/// and 4.x speak) on the public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketioSettings {
    /// Where Socket.IO is served (`/socket.io`, the clients' default);
    /// `None` turns it off. Starts with `/`, does not end with one.
    pub path: Option<String>,
    /// Whether the public listener serves what the official test suites
    /// expect instead: an Engine.IO echo at `/engine.io/` and, at `path`,
    /// the Socket.IO suite's handlers. Conformance testing only.
    pub conformance: bool,
}

impl Default for SocketioSettings {
    fn default() -> Self {
        Self {
            path: Some("/socket.io".into()),
            conformance: false,
        }
    }
}

/// SockJS (protocol 0.3, what `sockjs-client` 1.x speaks) on the public
/// listener: the endpoint, its timers and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockjsSettings {
    /// Where SockJS is served (`/sockjs`; a Spring application's `/stomp`
    /// or `/ws-endpoint`); `None` turns SockJS off. Starts with `/`, does
    /// not end with one.
    pub path: Option<String>,
    /// How often a session's client gets a heartbeat frame `h` while
    /// nothing else is sent: below the idle cuts of common proxies.
    pub heartbeat: Duration,
    /// How long a session lives without a receiving request: a client that
    /// stops polling is gone after this.
    pub disconnect_delay: Duration,
    /// Bytes a streaming response (xhr-streaming, eventsource, htmlfile)
    /// carries before the node ends it and the client opens another, so
    /// that the browser can free what the response held.
    pub response_limit: usize,
    /// Whether `/info` asks clients for cookies and session responses set
    /// `JSESSIONID`: for load balancers whose stickiness keys on it.
    pub cookie_needed: bool,
    /// The sockjs-client script the iframe page (`/iframe.html`) loads.
    pub client_url: String,
    /// Whether the public listener serves the four services the SockJS
    /// reference test suite expects (`/echo`, `/disabled_websocket_echo`,
    /// `/cookie_needed_echo`, `/close`). Conformance testing only.
    pub conformance: bool,
}

impl Default for SockjsSettings {
    fn default() -> Self {
        Self {
            path: Some("/sockjs".into()),
            heartbeat: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            response_limit: 128 * 1024,
            cookie_needed: false,
            client_url: "https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js"
                .into(),
            conformance: false,
        }
    }
}

/// A rate limit: a sustained rate and a burst above it (GCRA, a token
/// bucket of `burst` tokens refilled at `per_second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per second; 0 turns the limit off.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate (at least 1 when
    /// the limit is on).
    pub burst: u32,
}

/// Whether the node compresses WebSocket messages (permessage-deflate) for
/// clients that offer it, and from which size. Messages from clients that
/// compress are inflated whenever the extension was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsCompression {
    /// Never negotiated.
    Off,
    /// Negotiated; messages of at least this many bytes are compressed.
    Above(usize),
}

impl WsCompression {
    /// The smallest message compressed, or `None` when compression is off.
    pub fn min_size(self) -> Option<usize> {
        match self {
            Self::Off => None,
            Self::Above(bytes) => Some(bytes),
        }
    }

    /// `off`, `on` (every message) or a size in bytes.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "off" | "false" => Ok(Self::Off),
            "on" | "true" => Ok(Self::Above(0)),
            bytes => bytes.parse().map(Self::Above).map_err(|_| {
                format!("ws_compression must be off, on or a size in bytes, not {value:?}")
            }),
        }
    }
}

impl std::fmt::Display for WsCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Above(0) => f.write_str("on"),
            Self::Above(bytes) => write!(f, "{bytes}"),
        }
    }
}

impl Rate {
    /// Whether the limit is on.
    pub fn is_on(&self) -> bool {
        self.per_second > 0
    }
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_subscriptions_per_connection: 1024,
            max_connections: 50_000,
            max_topic_length: ferrocast_protocol::MAX_TOPIC_LEN,
            outbound_queue_bytes: 1024 * 1024,
            write_interval: Duration::ZERO,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            read_buffer_size: 512,
            ws_compression: WsCompression::Above(256),
            ready_requires_backplane: true,
            stomp_login_is_user: false,
            sse_keepalive: Duration::from_secs(15),
            echo_endpoint: false,
            auth_timeout: Duration::from_secs(5),
            allowed_origins: Vec::new(),
            allow_missing_origin: true,
            publish_rate: Rate {
                per_second: 100,
                burst: 200,
            },
            subscribe_rate: Rate {
                per_second: 50,
                burst: 1024,
            },
            // Off; the burst applies once a rate is set.
            ip_connection_rate: Rate {
                per_second: 0,
                burst: 20,
            },
            client_ip_header: None,
            sockjs: SockjsSettings::default(),
            socketio: SocketioSettings::default(),
        }
    }
}
