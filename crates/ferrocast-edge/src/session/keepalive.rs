//! Every keep-alive deadline of a connection on one timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::Heartbeat;

/// What the keep-alive timer asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Due {
    pub(super) ping: bool,
    pub(super) heartbeat: bool,
    pub(super) timed_out: bool,
    /// The token deadline passed.
    pub(super) deadline: bool,
}

/// Every keep-alive deadline of a connection on one timer: transport pings
/// (WebSocket pings, SockJS heartbeats) with their pong timeout, and the
/// protocol heart-beats agreed (STOMP).
pub(super) struct Keepalive {
    timer: Pin<Box<Sleep>>,
    ping_interval: Duration,
    /// `None`: the transport's client does not answer pings (SockJS), so
    /// silence after one does not close the connection.
    pong_timeout: Option<Duration>,
    next_ping: Instant,
    /// Set when a ping went out and nothing arrived since.
    pong_due: Option<Instant>,
    heartbeat: Heartbeat,
    next_heartbeat: Option<Instant>,
    next_check: Option<Instant>,
    /// When protocol data last arrived: heart-beats count data only, not
    /// WebSocket pongs.
    last_data: Instant,
    /// When the connection must close (a token deadline or expiry).
    close_at: Option<Instant>,
}

impl Keepalive {
    pub(super) fn new(ping_interval: Duration, pong_timeout: Option<Duration>) -> Self {
        let now = Instant::now();
        let next_ping = now + ping_interval;
        Self {
            timer: Box::pin(tokio::time::sleep_until(next_ping)),
            ping_interval,
            pong_timeout,
            next_ping,
            pong_due: None,
            heartbeat: Heartbeat::default(),
            next_heartbeat: None,
            next_check: None,
            last_data: now,
            close_at: None,
        }
    }

    /// Closes the connection at `at` (`None`: no such deadline).
    pub(super) fn close_at(&mut self, at: Option<Instant>) {
        if at != self.close_at {
            self.close_at = at;
            self.rearm();
        }
    }

    /// Something arrived from the client; `data` when it was protocol data.
    pub(super) fn heard(&mut self, data: bool) {
        self.pong_due = None;
        if data {
            self.last_data = Instant::now();
        }
    }

    /// Follows the protocol heart-beats currently agreed.
    pub(super) fn agree(&mut self, heartbeat: Heartbeat) {
        if heartbeat == self.heartbeat {
            return;
        }
        let now = Instant::now();
        self.heartbeat = heartbeat;
        self.next_heartbeat = heartbeat.send_every.map(|every| now + every);
        self.next_check = heartbeat.expect_within.map(|window| now + window);
        self.rearm();
    }

    pub(super) fn rearm(&mut self) {
        let next = [
            Some(self.next_ping),
            self.pong_due,
            self.next_heartbeat,
            self.next_check,
            self.close_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_ping);
        self.timer.as_mut().reset(next);
    }

    pub(super) fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        ready!(self.timer.as_mut().poll(cx));
        let now = Instant::now();
        let mut due = Due::default();
        if self.close_at.is_some_and(|at| at <= now) {
            due.deadline = true;
            return Poll::Ready(due);
        }
        if self.pong_due.is_some_and(|at| at <= now) {
            due.timed_out = true;
            return Poll::Ready(due);
        }
        if self.next_ping <= now {
            due.ping = true;
            if let Some(timeout) = self.pong_timeout {
                self.pong_due.get_or_insert(now + timeout);
            }
            self.next_ping = now + self.ping_interval;
        }
        if let (Some(at), Some(every)) = (self.next_heartbeat, self.heartbeat.send_every) {
            if at <= now {
                due.heartbeat = true;
                self.next_heartbeat = Some(now + every);
            }
        }
        if let (Some(at), Some(window)) = (self.next_check, self.heartbeat.expect_within) {
            if at <= now {
                // The spec asks for tolerance: allow twice the agreed window.
                if now.saturating_duration_since(self.last_data) > window.saturating_mul(2) {
                    due.timed_out = true;
                }
                self.next_check = Some(now + window);
            }
        }
        self.rearm();
        Poll::Ready(due)
    }
}
