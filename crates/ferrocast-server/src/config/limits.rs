//! Limits, timers and rates of client connections: the edge's settings.

use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::HeaderName;

use ferrocast_edge::{EdgeSettings, Rate, SocketioSettings, SockjsSettings, WsCompression};
use ferrocast_protocol::MAX_TOPIC_LEN;

use super::Config;

/// The longest `write_interval`: beyond it the wait is lag more than batching.
const MAX_WRITE_INTERVAL: Duration = Duration::from_millis(100);

impl Config {
    pub(crate) fn edge_settings(&self) -> EdgeSettings {
        EdgeSettings {
            max_message_size: self.max_message_size,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            max_connections: self.max_connections,
            max_topic_length: self.max_topic_length,
            outbound_queue_bytes: self.outbound_queue_bytes,
            write_interval: self.write_interval,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            read_buffer_size: self.ws_read_buffer_size,
            // Checked by `validate_limits`.
            ws_compression: WsCompression::parse(&self.ws_compression)
                .unwrap_or(WsCompression::Off),
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
            // Checked by `validate_limits`.
            client_ip_header: self.client_ip_header().ok().flatten(),
            sockjs: SockjsSettings {
                path: self.sockjs_path(),
                heartbeat: self.sockjs_heartbeat,
                disconnect_delay: self.sockjs_disconnect_delay,
                response_limit: self.sockjs_response_limit,
                cookie_needed: self.sockjs_cookie,
                client_url: self.sockjs_client_url.clone(),
                conformance: self.sockjs_conformance,
            },
            socketio: SocketioSettings {
                path: self.socketio_path(),
                conformance: self.socketio_conformance,
            },
        }
    }

    /// Where Socket.IO is served: `None` when turned off (`""` or `off`).
    fn socketio_path(&self) -> Option<String> {
        mount_path(&self.socketio_path)
    }

    fn validate_socketio(&self) -> anyhow::Result<()> {
        let Some(path) = self.socketio_path() else {
            return Ok(());
        };
        check_mount_path("socketio_path", &path, "/socket.io")?;
        if self.sockjs_path().as_deref() == Some(path.as_str()) {
            bail!("socketio_path {path:?} is a route the public listener already serves");
        }
        if self.socketio_conformance && path == "/engine.io" {
            bail!("socketio_path {path:?} is where socketio_conformance serves its Engine.IO echo");
        }
        Ok(())
    }

    /// Where SockJS is served: `None` when turned off (`""` or `off`).
    fn sockjs_path(&self) -> Option<String> {
        mount_path(&self.sockjs_path)
    }

    fn validate_sockjs(&self) -> anyhow::Result<()> {
        if let Some(path) = self.sockjs_path() {
            check_mount_path("sockjs_path", &path, "/sockjs or /stomp")?;
            if self.sockjs_conformance
                && [
                    "/echo",
                    "/disabled_websocket_echo",
                    "/cookie_needed_echo",
                    "/close",
                ]
                .contains(&path.as_str())
            {
                bail!("sockjs_path {path:?} is one of the conformance services' paths");
            }
        }
        if self.sockjs_conformance && self.ws_echo_endpoint {
            bail!("sockjs_conformance and ws_echo_endpoint both serve /echo: turn one off");
        }
        if self.sockjs_heartbeat < Duration::from_millis(100)
            || self.sockjs_disconnect_delay < Duration::from_millis(100)
        {
            bail!("sockjs_heartbeat and sockjs_disconnect_delay must be at least 100ms");
        }
        if self.sockjs_response_limit < 1024 {
            bail!("sockjs_response_limit must be at least 1024 bytes");
        }
        Ok(())
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

    pub(super) fn validate_limits(&self) -> anyhow::Result<()> {
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
        if self.write_interval > MAX_WRITE_INTERVAL {
            bail!("write_interval must be at most {MAX_WRITE_INTERVAL:?}");
        }
        WsCompression::parse(&self.ws_compression).map_err(anyhow::Error::msg)?;
        if self.ws_read_buffer_size < 256 {
            bail!("ws_read_buffer_size must be at least 256 bytes");
        }
        if self.sse_keepalive < Duration::from_millis(100) {
            bail!("sse_keepalive must be at least 100ms");
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
        self.validate_socketio()?;
        self.validate_sockjs()
    }
}

/// Routes of the public listener that another endpoint's path cannot take.
const SERVED_PATHS: [&str; 7] = [
    "/ws",
    "/sse",
    "/publish",
    "/echo",
    "/ferrocast.js",
    "/ferrocast.d.ts",
    "/ferrocast",
];

/// The path an endpoint's option names: `None` when turned off (`""` or
/// `off`).
fn mount_path(option: &str) -> Option<String> {
    let path = option.trim();
    (!path.is_empty() && !path.eq_ignore_ascii_case("off")).then(|| path.to_owned())
}

/// Refuses a path (of option `name`, e.g. `example`) the public listener
/// cannot mount an endpoint at: one not starting with `/`, ending with one,
/// with an empty segment or a character of the router's syntax, or one it
/// already serves.
fn check_mount_path(name: &str, path: &str, example: &str) -> anyhow::Result<()> {
    let valid = path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains(['{', '}', '*', '?', '#'])
        && !path.split('/').skip(1).any(str::is_empty);
    if !valid {
        bail!("{name} {path:?} must be a path such as {example}: starting with /, not ending with one, without empty segments or any of {{ }} * ? #");
    }
    if SERVED_PATHS.contains(&path) {
        bail!("{name} {path:?} is a route the public listener already serves");
    }
    Ok(())
}
