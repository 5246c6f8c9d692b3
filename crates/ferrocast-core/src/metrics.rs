//! Metric names (the contract in docs/operations.md) and their descriptions.
//!
//! Every name is exported with the `ferrocast_` prefix. Labels take values from
//! small fixed sets only: never a topic, user or connection id.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const CONNECTIONS: &str = "ferrocast_connections";
pub const CONNECTIONS_OPENED: &str = "ferrocast_connections_opened_total";
pub const CONNECTIONS_CLOSED: &str = "ferrocast_connections_closed_total";
pub const CONNECTIONS_REJECTED: &str = "ferrocast_connections_rejected_total";
pub const SUBSCRIPTIONS: &str = "ferrocast_subscriptions";
pub const TOPICS: &str = "ferrocast_topics";
/// Tasks alive in the node's runtime: one per connection plus a fixed few.
pub const RUNTIME_TASKS: &str = "ferrocast_runtime_tasks";
pub const MESSAGES_PUBLISHED: &str = "ferrocast_messages_published_total";
pub const MESSAGES_DELIVERED: &str = "ferrocast_messages_delivered_total";
/// Batches the writers took from connection queues, each written in one go:
/// `MESSAGES_DELIVERED` over this is deliveries per write.
pub const DELIVERY_BATCHES: &str = "ferrocast_delivery_batches_total";
pub const MESSAGES_DROPPED: &str = "ferrocast_messages_dropped_total";
pub const CLIENT_ERRORS: &str = "ferrocast_client_errors_total";
pub const LIMIT_HITS: &str = "ferrocast_limit_hits_total";
/// Requests refused by a rate limit, by `kind` (publish, subscribe, connection).
pub const RATE_LIMITED: &str = "ferrocast_rate_limited_total";
/// Failed accepts of a listener (out of file descriptors, ...), by `listener`.
pub const ACCEPT_ERRORS: &str = "ferrocast_accept_errors_total";
/// Connections closed before their first request was read, by `listener`
/// and `reason` (timeout, tls, malformed, too_large).
pub const HANDSHAKE_FAILURES: &str = "ferrocast_handshake_failures_total";
pub const BACKPLANE_UP: &str = "ferrocast_backplane_up";
pub const BACKPLANE_PUBLISH_DURATION: &str = "ferrocast_backplane_publish_duration_seconds";
pub const BACKPLANE_ERRORS: &str = "ferrocast_backplane_errors_total";
pub const BACKPLANE_SUBSCRIPTIONS: &str = "ferrocast_backplane_subscriptions";
pub const BACKPLANE_RECONNECTS: &str = "ferrocast_backplane_reconnects_total";
pub const BACKPLANE_RECEIVED: &str = "ferrocast_backplane_messages_received_total";
/// Subscriptions that resumed from a position, by `outcome` (`recovered`,
/// `not_recovered`).
pub const RESUMES: &str = "ferrocast_resumes_total";
/// Gaps or reorderings in a live stream that a subscription filled from history.
pub const STREAM_RESYNCS: &str = "ferrocast_stream_resyncs_total";
/// Tokens refused, by `reason` (expired, bad_signature, algorithm, …).
pub const AUTH_FAILURES: &str = "ferrocast_auth_failures_total";
/// Requests refused by permissions, by `reason` (unauthorized, forbidden).
pub const ACCESS_DENIED: &str = "ferrocast_access_denied_total";
/// Presence entries this node keeps in the backplane for its connections.
pub const PRESENCE_ENTRIES: &str = "ferrocast_presence_entries";
/// Presence lists read for clients.
pub const PRESENCE_READS: &str = "ferrocast_presence_reads_total";
pub const DELIVERY_LAG: &str = "ferrocast_delivery_lag_seconds";
/// Server API calls, by `method`, `transport` (grpc, http) and `code`
/// (ok or the error's name).
pub const API_REQUESTS: &str = "ferrocast_api_requests_total";
/// Time to answer a server API call (a Subscribe: to open the stream), by `method`.
pub const API_REQUEST_DURATION: &str = "ferrocast_api_request_duration_seconds";
/// Answers of the browser SDK's routes, by `status` (200, 304, 404).
pub const WEB_REQUESTS: &str = "ferrocast_web_requests_total";
pub const BUILD_INFO: &str = "ferrocast_build_info";
pub const DRAINING: &str = "ferrocast_draining";

/// Histograms, for exporters that need their bucket layout.
pub const HISTOGRAMS: &[&str] = &[
    BACKPLANE_PUBLISH_DURATION,
    DELIVERY_LAG,
    API_REQUEST_DURATION,
];

/// Registers the description of every metric with the installed recorder.
pub fn describe() {
    describe_gauge!(CONNECTIONS, "Open client connections, by protocol.");
    describe_counter!(
        CONNECTIONS_OPENED,
        "Client connections accepted, by protocol."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Client connections closed, by reason (normal, client_gone, slow_consumer, shutdown, ping_timeout, too_large, protocol_error, history_unavailable, unauthorized, rate_limited, error)."
    );
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Connection attempts (WebSocket upgrades, SSE streams) refused, by reason (node_limit, draining, subprotocol, bad_request, origin, unauthorized, rate_limited)."
    );
    describe_gauge!(SUBSCRIPTIONS, "Subscriptions held by local connections.");
    describe_gauge!(
        TOPICS,
        "Distinct topics and patterns with at least one local subscriber."
    );
    describe_counter!(
        MESSAGES_PUBLISHED,
        "Publications accepted from clients of this node."
    );
    describe_counter!(
        MESSAGES_DELIVERED,
        "Messages written to local client connections."
    );
    describe_counter!(
        DELIVERY_BATCHES,
        "Batches of messages written to local client connections, each in one go: messages_delivered_total over this is messages per write (raised by --write-interval)."
    );
    describe_counter!(
        MESSAGES_DROPPED,
        "Deliveries not made, by reason: slow_consumer (the backlog dropped when a queue overflowed), closing (to a connection already closing)."
    );
    describe_counter!(CLIENT_ERRORS, "Error replies sent to clients, by code.");
    describe_counter!(
        LIMIT_HITS,
        "Requests or frames refused by a limit, by limit (message_size, subscriptions, connections, topic_length)."
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limit, by kind (publish: per connection, or HTTP publishes per client address; subscribe: per connection; connection: connection attempts per client address)."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        "Failed accepts on a listener (e.g. out of file descriptors), retried after a short pause, by listener (public, admin)."
    );
    describe_counter!(
        HANDSHAKE_FAILURES,
        "Connections closed before a complete first request, by listener and reason (timeout: TLS handshake or request head not complete within --handshake-timeout; tls: failed TLS handshake; malformed: not HTTP, answered 400; too_large: request head too large, answered 431)."
    );
    describe_counter!(
        RESUMES,
        "Subscriptions that resumed from a position, by outcome (recovered, not_recovered)."
    );
    describe_counter!(
        STREAM_RESYNCS,
        "Gaps or reorderings in a live stream with history that a subscription filled by reading the history."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Client tokens refused, by reason (malformed, algorithm, no_key, bad_signature, expired, not_yet_valid, missing_claim, bad_claim, not_configured, missing)."
    );
    describe_counter!(
        ACCESS_DENIED,
        "Subscribes and publishes refused by permissions, by reason (unauthorized: a token is needed; forbidden: the token or namespace does not allow it)."
    );
    describe_gauge!(BACKPLANE_UP, "1 when the backplane is reachable, else 0.");
    describe_histogram!(
        BACKPLANE_PUBLISH_DURATION,
        Unit::Seconds,
        "Time from handing a publication to the backplane until it was accepted."
    );
    describe_counter!(
        BACKPLANE_ERRORS,
        "Failed backplane operations, by operation."
    );
    describe_gauge!(
        BACKPLANE_SUBSCRIPTIONS,
        "Topics and patterns this node subscribes to on the backplane."
    );
    describe_counter!(
        BACKPLANE_RECONNECTS,
        "Connections to the backplane re-established after a loss."
    );
    describe_counter!(
        BACKPLANE_RECEIVED,
        "Publications of other nodes received from the backplane (only topics with local interest arrive)."
    );
    describe_gauge!(
        PRESENCE_ENTRIES,
        "Presence entries this node keeps (and refreshes) in the backplane for its connections."
    );
    describe_counter!(
        PRESENCE_READS,
        "Presence lists read from the backplane for clients."
    );
    describe_histogram!(
        DELIVERY_LAG,
        Unit::Seconds,
        "Time from publish on the origin node until written to a local connection (sampled once per write batch)."
    );
    describe_counter!(
        API_REQUESTS,
        "Server API calls (gRPC and HTTP), by method, transport and result code."
    );
    describe_histogram!(
        API_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer a server API call, by method (cluster-wide calls include waiting for the other nodes)."
    );
    describe_counter!(
        WEB_REQUESTS,
        "Answers of the browser SDK's routes (/ferrocast.js, /ferrocast.d.ts, /ferrocast/<version>/…), by status (200, 304, 404)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the running build."
    );
    describe_gauge!(
        DRAINING,
        "1 while the node drains its connections before exiting."
    );
    describe_gauge!(
        RUNTIME_TASKS,
        "Tasks alive in the node's async runtime (one per connection plus a fixed few), read at each scrape: a number that grows with no connection behind it is a leak."
    );
}
