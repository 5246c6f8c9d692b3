//! The NATS connection: its options, its health, and the server round trip
//! that subscribe, unsubscribe and (re)connect use to know that the server has
//! processed what was sent before.
//!
//! # Health
//! async-nats reports connection changes twice: as [`Event`]s through the
//! event callback (asynchronously, through a bounded channel that drops events
//! when full) and as its connection state (synchronously, but without a way to
//! wait for changes). The event callback logs, counts reconnects and wakes the
//! monitor task; the monitor task is the only writer of the health watch and
//! reads the connection state on every wake-up and at least every
//! [`STATE_POLL`], so a dropped event delays health by at most that much.
//!
//! Health turns true only after a server round trip on the new connection:
//! async-nats re-sends every SUB right after it reconnects, and the round trip
//! proves the server has processed them, so "healthy" means "interest is in
//! place", not just "TCP is up".
//!
//! # Stall detection
//! async-nats sends a PING every `ping_interval` without traffic from the
//! server and drops the connection when more than two are unanswered, i.e. at
//! the third tick after the last byte from the server. With a ping interval of
//! `timeout / 3`, a path that silently stops forwarding is detected within
//! `timeout` of the last byte received, then reconnected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::{Client, ClientError, Event, ServerError, Subject};
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{watch, Notify};

use ferrocast_core::backplane::BackplaneError;
use ferrocast_core::metrics as names;
use ferrocast_core::NodeId;

/// Longest time the monitor goes without reading the connection state.
const STATE_POLL: Duration = Duration::from_millis(100);
/// Longest pause between two reconnect attempts. Short, because a node whose
/// backplane is down cannot deliver between nodes; jittered so that a fleet
/// does not reconnect in lockstep.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// After the backplane was dropped, async-nats may still be inside its
/// reconnect loop, which it cannot be told to leave; this delay parks it
/// instead of letting it dial the server forever.
const PARKED: Duration = Duration::from_secs(365 * 24 * 3600);

/// State shared by the backplane, the event callback and the monitor task.
/// Holds no [`Client`], so that dropping the backplane drops the last client
/// handle and async-nats closes the connection.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    pub(crate) node_id: NodeId,
    /// Server URLs without credentials, for logs.
    pub(crate) url: String,
    pub(crate) health: watch::Sender<bool>,
    /// Wakes the monitor when async-nats reports a connection change.
    wake: Notify,
    /// Set when the backplane is dropped; parks any reconnect in progress.
    pub(crate) closed: AtomicBool,
    ever_connected: AtomicBool,
    /// The last connect error logged, so that a server that stays unreachable
    /// (or keeps refusing the credentials) is reported once, not every
    /// attempt.
    last_connect_error: Mutex<Option<String>>,
}

impl ConnectionState {
    pub(crate) fn new(node_id: NodeId, url: String) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            url,
            health: watch::channel(false).0,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            last_connect_error: Mutex::new(None),
        })
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.health.borrow()
    }

    /// Handles an async-nats event (runs on async-nats's event task).
    pub(crate) fn on_event(&self, event: Event) {
        let url = self.url.as_str();
        let node = &*self.node_id;
        if self.closed.load(Ordering::Relaxed) {
            // The backplane was dropped; its connection going away is expected.
            tracing::debug!(node, %url, %event, "NATS event after the backplane was dropped");
            return;
        }
        match event {
            Event::Connected => {
                *self.last_connect_error.lock() = None;
                if self.ever_connected.swap(true, Ordering::Relaxed) {
                    metrics::counter!(names::BACKPLANE_RECONNECTS).increment(1);
                    tracing::info!(node, %url, "NATS backplane reconnected");
                } else {
                    tracing::info!(node, %url, "NATS backplane connected");
                }
                self.wake.notify_one();
            }
            Event::Disconnected => {
                tracing::warn!(node, %url, "NATS backplane disconnected; reconnecting");
                self.wake.notify_one();
            }
            Event::ClientError(ClientError::Other(reason)) => {
                // async-nats reports each failed connect attempt this way.
                let mut last = self.last_connect_error.lock();
                if last.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(node, %url, %reason, "NATS connect attempt failed again");
                    return;
                }
                if reason.contains("authorization") || reason.contains("signing") {
                    tracing::error!(
                        node,
                        %url,
                        %reason,
                        "NATS refused the credentials; check the user and password or token in the \
                         URL, or the credentials file. Retrying."
                    );
                } else {
                    tracing::warn!(node, %url, %reason, "cannot connect to NATS; retrying");
                }
                *last = Some(reason);
            }
            Event::ClientError(ClientError::MaxReconnects) => {
                tracing::error!(node, %url, "NATS client gave up reconnecting");
            }
            Event::ClientError(other) => {
                tracing::warn!(node, %url, error = %other, "NATS client error");
            }
            Event::ServerError(ServerError::AuthorizationViolation) => {
                tracing::error!(
                    node,
                    %url,
                    "NATS authorization violation; check the credentials and the permissions of \
                     the account on the backplane subjects"
                );
            }
            Event::ServerError(error) => {
                tracing::warn!(node, %url, %error, "NATS server reported an error");
            }
            Event::SlowConsumer(sid) => {
                metrics::counter!(names::BACKPLANE_ERRORS, "op" => "slow_consumer").increment(1);
                tracing::warn!(
                    node,
                    %url,
                    sid,
                    "NATS subscription buffer full: publications from other nodes were dropped"
                );
            }
            Event::LameDuckMode => {
                tracing::info!(node, %url, "NATS server entering lame duck mode; will move to another server");
            }
            Event::Draining | Event::Closed => {
                tracing::debug!(node, %url, ?event, "NATS connection closing");
            }
        }
    }

    /// The reconnect back-off: immediate first retry, then exponential from
    /// 50 ms up to [`MAX_RECONNECT_DELAY`] with jitter.
    pub(crate) fn reconnect_delay(&self, attempts: usize) -> Duration {
        if self.closed.load(Ordering::Relaxed) {
            return PARKED;
        }
        if attempts <= 1 {
            return Duration::ZERO;
        }
        let exponent = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
        let base = Duration::from_millis(50)
            .saturating_mul(1 << exponent)
            .min(MAX_RECONNECT_DELAY);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// Keeps the health watch in step with the connection (see the module docs).
pub(crate) async fn monitor(
    client: Client,
    state: Arc<ConnectionState>,
    sync_subject: Subject,
    timeout: Duration,
) {
    let mut poll = tokio::time::interval(STATE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = poll.tick() => {}
        }
        let connected = client.connection_state() == State::Connected;
        match (connected, state.is_up()) {
            (false, true) => {
                state.health.send_replace(false);
            }
            (true, false) => {
                if let Err(error) = round_trip(&client, &sync_subject, timeout).await {
                    // The server is reachable but the round trip could not be
                    // confirmed (see `round_trip`). Interest was re-sent
                    // anyway; report up rather than stay down forever.
                    tracing::warn!(
                        node = &*state.node_id,
                        url = %state.url,
                        %error,
                        "NATS round trip after connecting failed; marking the backplane up anyway"
                    );
                }
                if client.connection_state() == State::Connected {
                    state.health.send_replace(true);
                }
            }
            _ => {}
        }
    }
}

/// A server round trip: completes once the server has processed everything
/// this connection sent before it.
///
/// async-nats has no PING that can be awaited (`Client::flush` only flushes
/// the socket), so this sends a request with no payload to `subject`, which
/// nobody subscribes to: the server answers it with a "no responders" status
/// as soon as it processes the PUB, and the server processes one connection's
/// operations in order. An actual reply proves the same. `subject` is the bare
/// prefix: every ferrocast subject has at least one token after it, so no
/// ferrocast filter (not even `>`) matches it.
///
/// In a NATS cluster this confirms the server this node is connected to;
/// interest reaches the other servers of the cluster shortly after.
///
/// Limitation: another client of the account whose subscription covers
/// `subject` (`nats sub '>'` while debugging) receives the request, so the
/// server sends no "no responders" and the round trip times out: subscribe
/// and unsubscribe then fail with `Timeout` after `timeout` although the
/// interest is applied. This is logged with its likely cause.
pub(crate) async fn round_trip(
    client: &Client,
    subject: &Subject,
    timeout: Duration,
) -> Result<(), BackplaneError> {
    let request = async_nats::Request::new().timeout(Some(timeout));
    let reply = tokio::time::timeout(timeout, client.send_request(subject.clone(), request)).await;
    let timed_out = match reply {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(error)) => match error.kind() {
            RequestErrorKind::NoResponders => return Ok(()),
            RequestErrorKind::TimedOut => true,
            _ => {
                return Err(BackplaneError::Unavailable(format!(
                    "NATS round trip failed: {error}"
                )))
            }
        },
        Err(_) => true,
    };
    if timed_out && client.connection_state() == State::Connected {
        // Connected, yet neither a reply nor "no responders" came back.
        tracing::warn!(
            %subject,
            ?timeout,
            "no answer from NATS to the round trip on the sync subject: another client probably \
             subscribes to it (e.g. `nats sub '>'` on this account), or the account may not \
             publish to it; subscriptions are applied but cannot be confirmed"
        );
    }
    Err(BackplaneError::Timeout(timeout))
}
