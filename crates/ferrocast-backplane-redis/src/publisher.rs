//! The publisher task: owns the publish queue and the publisher connection.
//!
//! `publish` and `history` push requests into the queue in call order and
//! return; this task takes everything queued (up to [`MAX_BATCH`]) and sends
//! it as one pipeline, so the number of round trips follows the load: one per
//! request when the node is quiet, one per thousands when it is busy. Only one
//! pipeline is in flight at a time, which keeps the order of the queue on the
//! wire even across a lost connection (a failed pipeline's requests fail;
//! none is retried, so none is applied twice).
//!
//! On a Redis Cluster a batch goes as one pipeline per hash slot, all at once
//! (a pipeline may not cross slots; a topic's requests share its slot, so
//! they keep their order), and the next batch waits for all of them.
//!
//! A request is a plain publication (`PUBLISH` or `SPUBLISH`) or a history
//! script (`EVALSHA`, module `history`): publications with and without
//! history share the queue and keep their call order. The scripts are loaded
//! on the connection when a batch first needs them, and loaded again when
//! Redis answers `NOSCRIPT` (it lost its script cache); the requests answered
//! so did not run and are sent once more, after the rest of their batch
//! (they keep their order among themselves, and the next batch waits).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::{Cmd, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use ferrocast_core::backplane::BackplaneError;

use crate::backoff;
use crate::connection::{ConnectionError, Link, Replies};
use crate::health::Part;
use crate::history::{self, Scripts};
use crate::receive::{LostSignal, PublisherPushes};
use crate::Shared;

/// Most requests in one pipeline: enough to amortise a round trip over many
/// publications, small enough that one pipeline (about 1.5 MB of 128-byte
/// payloads) is written and answered well within the timeout.
const MAX_BATCH: usize = 8 * 1024;

/// Bytes the connection buffers before it writes to the socket; a pipeline is
/// written in chunks of this size.
const WRITE_BUFFER: usize = 256 * 1024;

/// What a request waiting in the queue asks of Redis.
#[derive(Debug)]
pub(crate) enum Request {
    /// `PUBLISH` (`SPUBLISH` when sharded) of an encoded envelope on
    /// `{prefix}{topic}`. The envelope is made by the caller of `publish`, so
    /// encoding spreads over the callers' tasks.
    Publish { channel: String, envelope: Bytes },
    /// A history or presence script.
    Script(history::Call),
}

impl Request {
    /// The key that places the request in a cluster: its channel, or its
    /// script's first key (whose hash tag is the channel).
    fn slot_key(&self) -> &[u8] {
        match self {
            Self::Publish { channel, .. } => channel.as_bytes(),
            Self::Script(call) => call.key().as_bytes(),
        }
    }
}

/// Redis's reply to a request; a server error is `Rejected`.
pub(crate) type Reply = Result<Value, BackplaneError>;

/// A request waiting in the queue.
pub(crate) struct Outgoing {
    pub(crate) request: Request,
    /// Completes the caller's future.
    pub(crate) done: oneshot::Sender<Reply>,
}

impl Outgoing {
    fn complete(self, reply: Value) {
        let reply = match reply {
            Value::ServerError(error) => Err(BackplaneError::Rejected(error.to_string())),
            value => Ok(value),
        };
        let _ = self.done.send(reply);
    }

    fn fail(self, error: BackplaneError) {
        let _ = self.done.send(Err(error));
    }

    fn is_script(&self) -> bool {
        matches!(self.request, Request::Script(_))
    }
}

/// Why a connected period ended.
enum Ended {
    Stopped,
    Lost(ConnectionError),
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
) {
    let url = shared.connector.redacted_url().to_string();
    let mut attempt: u32 = 0;
    loop {
        let lost = Arc::new(LostSignal::default());
        let connect = shared
            .connector
            .connect(PublisherPushes { lost: lost.clone() }, WRITE_BUFFER);
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            result = fail_queued_while(&mut queue, connect) => result,
        };
        match connected {
            Ok(connection) => {
                attempt = 0;
                if shared.health.set(Part::Publisher, true) {
                    tracing::info!(%url, "redis backplane reconnected");
                } else {
                    tracing::debug!(%url, "redis publisher connection up");
                }
                let ended = pump(&shared, connection, &mut queue, &lost, &stop).await;
                shared.health.set(Part::Publisher, false);
                match ended {
                    Ended::Stopped => return,
                    Ended::Lost(error) => {
                        tracing::warn!(%url, %error, "redis backplane connection lost (publisher)");
                    }
                }
            }
            Err(error) if attempt == 0 => {
                tracing::warn!(%url, %error, "cannot connect to redis (publisher); retrying");
            }
            Err(error) => {
                tracing::debug!(%url, %error, attempt, "cannot connect to redis (publisher)");
            }
        }
        let delay = backoff::delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = fail_queued_while(&mut queue, tokio::time::sleep(delay)) => {}
        }
    }
}

/// Awaits `until` while failing, at once, whatever gets queued meanwhile:
/// without a connection, callers learn it now rather than after a reconnect.
async fn fail_queued_while<F: std::future::Future>(
    queue: &mut mpsc::Receiver<Outgoing>,
    until: F,
) -> F::Output {
    tokio::pin!(until);
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            output = &mut until => return output,
            item = queue.recv(), if open => match item {
                Some(outgoing) => outgoing.fail(BackplaneError::Unavailable(
                    "not connected to redis".to_string(),
                )),
                None => open = false,
            },
        }
    }
}

/// Sends queued publications until the connection fails or the backplane
/// stops. While idle, a `PING` checks the connection every third of the
/// timeout, so a dead connection is noticed (and health reported) even when
/// nothing is published.
async fn pump(
    shared: &Shared,
    mut link: Link,
    queue: &mut mpsc::Receiver<Outgoing>,
    lost: &LostSignal,
    stop: &CancellationToken,
) -> Ended {
    let command = shared.publish_command();
    let (period, deadline) = check_timing(shared.timeout);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Loaded on this connection when a batch first needs them.
    let mut scripts = None;
    let mut busy = false;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ended::Stopped,
            () = lost.lost() => return Ended::Lost(ConnectionError::Closed),
            n = queue.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return Ended::Stopped;
                }
                if let Err(error) = send_batch(
                    &mut link,
                    command,
                    &mut scripts,
                    &mut batch,
                    shared.timeout,
                )
                .await
                {
                    return Ended::Lost(error);
                }
                busy = true;
            }
            _ = check.tick() => {
                // A pipeline answered since the last tick proves the
                // connection alive; otherwise ask.
                if !busy {
                    if let Err(error) = ping(&mut link, deadline).await {
                        return Ended::Lost(error);
                    }
                }
                busy = false;
            }
        }
    }
}

/// The health check's period and the deadline of each `PING`: a check starts
/// at most `period` after the path stalled and fails `deadline` later, so a
/// stall is detected within `period + deadline = timeout`.
pub(crate) fn check_timing(timeout: Duration) -> (Duration, Duration) {
    let period = (timeout / 3).max(Duration::from_millis(1));
    (
        period,
        timeout.saturating_sub(period).max(Duration::from_millis(1)),
    )
}

/// Sends `PING` (on a cluster, to every master) and waits for the answer
/// within `deadline`.
///
/// Even an error reply proves the connection alive, but a server that
/// refuses PING is in no state to carry publications either: every error
/// ends the connection.
pub(crate) async fn ping(link: &mut Link, deadline: Duration) -> Result<(), ConnectionError> {
    link.command(&redis::cmd("PING"), deadline).await.map(drop)
}

/// Sends `batch` as one pipeline (one per hash slot on a cluster) and
/// completes each request with its reply (requests answered `NOSCRIPT` after
/// loading the scripts again, in a second round). Drains `batch`. An error
/// means the connection is no longer usable.
async fn send_batch(
    link: &mut Link,
    command: &str,
    scripts: &mut Option<Scripts>,
    batch: &mut Vec<Outgoing>,
    timeout: Duration,
) -> Result<(), ConnectionError> {
    for first in [true, false] {
        if scripts.is_none() && batch.iter().any(Outgoing::is_script) {
            match Scripts::load(link, timeout).await {
                Ok(loaded) => *scripts = Some(loaded),
                Err(error) if error.is_refusal() => {
                    // History fails, publications without it still go out.
                    let (mut refused, rest): (Vec<_>, Vec<_>) =
                        batch.drain(..).partition(Outgoing::is_script);
                    fail(&mut refused, &error);
                    *batch = rest;
                }
                Err(error) => {
                    fail(batch, &error);
                    return Err(error);
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let Some(commands) = commands(command, scripts.as_ref(), batch) else {
            fail(
                batch,
                &ConnectionError::Refused("the history scripts are not loaded".to_string()),
            );
            return Ok(());
        };
        let Replies { replies, broken } = link
            .pipeline(commands, |i| batch[i].request.slot_key(), timeout)
            .await;
        let mut again = Vec::new();
        for (outgoing, reply) in batch.drain(..).zip(replies) {
            match reply {
                Ok(Value::ServerError(error))
                    if first && error.kind() == Some(ServerErrorKind::NoScript) =>
                {
                    again.push(outgoing);
                }
                Ok(reply) => outgoing.complete(reply),
                Err(error) => outgoing.fail(error),
            }
        }
        if let Some(error) = broken {
            fail(&mut again, &error);
            return Err(error);
        }
        if again.is_empty() {
            return Ok(());
        }
        tracing::warn!("redis lost the history scripts (NOSCRIPT); loading them again");
        *scripts = None;
        *batch = again;
    }
    // Not reached: the second round completes every request it sends.
    Ok(())
}

/// The command of each request in `batch`; `None` if a history request
/// needs the scripts and they are not loaded.
fn commands(command: &str, scripts: Option<&Scripts>, batch: &[Outgoing]) -> Option<Vec<Cmd>> {
    batch
        .iter()
        .map(|outgoing| match (&outgoing.request, scripts) {
            (Request::Publish { channel, envelope }, _) => {
                let mut publish = redis::cmd(command);
                publish.arg(channel.as_bytes()).arg(&envelope[..]);
                Some(publish)
            }
            (Request::Script(call), Some(scripts)) => Some(call.command(scripts)),
            (Request::Script(_), None) => None,
        })
        .collect()
}

fn fail(batch: &mut Vec<Outgoing>, error: &ConnectionError) {
    for outgoing in batch.drain(..) {
        outgoing.fail(error.to_backplane_error());
    }
}
