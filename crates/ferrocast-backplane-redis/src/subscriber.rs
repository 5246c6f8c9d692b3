//! The pub/sub task: owns the pub/sub connection and keeps its subscriptions
//! in step with the desired interest.
//!
//! Each connection starts by subscribing the whole desired set (in batches),
//! and only then reports itself up; afterwards each wake-up sends the changes
//! made since the last one. What this connection has subscribed is tracked
//! here (`applied`), apart from the desired set, so that a change is sent only
//! when it changes something and a new connection starts from nothing.

use std::collections::HashSet;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::Value;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::connection::{ConnectionError, Link};
use crate::health::Part;
use crate::interest::{self, Changes};
use crate::publisher::{check_timing, ping};
use crate::receive::{LostSignal, SubscriberPushes};
use crate::Shared;

/// Most channels or patterns in one (un)subscribe command.
const CHUNK: usize = 1024;

/// The pub/sub connection mostly reads; its writes are small commands.
const WRITE_BUFFER: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
enum Command {
    Subscribe,
    Unsubscribe,
    PSubscribe,
    PUnsubscribe,
}

enum Ended {
    Stopped,
    Lost(ConnectionError),
}

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let url = shared.connector.redacted_url().to_string();
    let mut attempt: u32 = 0;
    loop {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = Session::open(&shared) => opened,
        };
        match opened {
            Ok(mut session) => {
                attempt = 0;
                if shared.health.set(Part::Subscriber, true) {
                    tracing::info!(%url, "redis backplane reconnected");
                } else {
                    tracing::debug!(%url, "redis pub/sub connection up");
                }
                let ended = session.run(&stop).await;
                shared.health.set(Part::Subscriber, false);
                match ended {
                    Ended::Stopped => return,
                    Ended::Lost(error) => {
                        tracing::warn!(%url, %error, "redis backplane connection lost (pub/sub)");
                    }
                }
            }
            Err(error) if attempt == 0 => {
                tracing::warn!(%url, %error, "cannot connect to redis (pub/sub); retrying");
            }
            Err(error) => {
                tracing::debug!(%url, %error, attempt, "cannot connect to redis (pub/sub)");
            }
        }
        let delay = backoff::delay(attempt);
        attempt = attempt.saturating_add(1);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        // Without a connection, interest changes fail (subscribe) or succeed
        // (unsubscribe) at once; the desired set keeps them for the next one.
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = &mut sleep => break,
                () = shared.interest.woken() => {
                    interest::complete(
                        shared.interest.take_waiters(),
                        &Err(ConnectionError::NotConnected),
                    );
                }
            }
        }
    }
}

/// One pub/sub connection and what it has subscribed.
struct Session<'a> {
    shared: &'a Shared,
    link: Link,
    lost: Arc<LostSignal>,
    /// On a cluster, which master served which slots when this connection
    /// subscribed; see [`Session::run`].
    slots: Option<u64>,
    channels: HashSet<String>,
    patterns: HashSet<String>,
}

impl<'a> Session<'a> {
    /// Connects and subscribes everything desired.
    async fn open(shared: &'a Arc<Shared>) -> Result<Session<'a>, ConnectionError> {
        let lost = Arc::new(LostSignal::default());
        let pushes = SubscriberPushes::new(shared.clone(), lost.clone());
        let mut link = shared.connector.connect(pushes, WRITE_BUFFER).await?;
        // Taken before subscribing: a change while subscribing is noticed.
        let slots = link.slots(shared.timeout).await?;
        let mut session = Session {
            shared,
            link,
            lost,
            slots,
            channels: HashSet::new(),
            patterns: HashSet::new(),
        };
        let snapshot = shared.interest.snapshot();
        let result = session
            .apply(Changes {
                channels: snapshot.channels.into_iter().map(|c| (c, true)).collect(),
                patterns: snapshot.patterns.into_iter().map(|p| (p, true)).collect(),
                waiters: Vec::new(),
            })
            .await;
        interest::complete(snapshot.waiters, &result);
        match result {
            Ok(()) => Ok(session),
            Err(error) if error.is_refusal() => {
                tracing::warn!(
                    url = %shared.connector.redacted_url(),
                    %error,
                    "redis refused to subscribe part of the interest; it is retried on the next reconnect"
                );
                Ok(session)
            }
            Err(error) => Err(error),
        }
    }

    async fn run(&mut self, stop: &CancellationToken) -> Ended {
        let (period, deadline) = check_timing(self.shared.timeout);
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ended::Stopped,
                () = self.lost.lost() => return Ended::Lost(ConnectionError::Closed),
                () = self.shared.interest.woken() => {
                    let mut changes = self.shared.interest.take_changes();
                    let waiters = std::mem::take(&mut changes.waiters);
                    let result = self.apply(changes).await;
                    interest::complete(waiters, &result);
                    match result {
                        Ok(()) => {}
                        Err(error) if error.is_refusal() => tracing::warn!(
                            url = %self.shared.connector.redacted_url(),
                            %error,
                            "redis refused a subscription change"
                        ),
                        Err(error) => return Ended::Lost(error),
                    }
                }
                _ = check.tick() => {
                    if let Err(error) = ping(&mut self.link, deadline).await {
                        return Ended::Lost(error);
                    }
                    // On a cluster, a channel subscribed while a failover was
                    // under way may not be served by the master that ends
                    // up with its slot: when the masters changed, subscribe
                    // everything again where it is now.
                    if self.slots.is_some() {
                        match self.link.slots(deadline).await {
                            Ok(now) if now == self.slots => {}
                            Ok(_) => return Ended::Lost(ConnectionError::SlotsMoved),
                            Err(error) => return Ended::Lost(error),
                        }
                    }
                }
            }
        }
    }

    /// Sends what differs between `changes` and what this connection has
    /// subscribed: removals first, then additions. Returns the first error;
    /// a refusal does not stop the other batches, a connection error does.
    async fn apply(&mut self, changes: Changes) -> Result<(), ConnectionError> {
        let split = |names: Vec<(String, bool)>, applied: &HashSet<String>| {
            let mut add = Vec::new();
            let mut remove = Vec::new();
            for (name, wanted) in names {
                match (wanted, applied.contains(&name)) {
                    (true, false) => add.push(name),
                    (false, true) => remove.push(name),
                    _ => {}
                }
            }
            (add, remove)
        };
        let (add_channels, remove_channels) = split(changes.channels, &self.channels);
        let (add_patterns, remove_patterns) = split(changes.patterns, &self.patterns);
        let mut refusal = None;
        let steps = [
            (Command::Unsubscribe, remove_channels),
            (Command::PUnsubscribe, remove_patterns),
            (Command::Subscribe, add_channels),
            (Command::PSubscribe, add_patterns),
        ];
        for (command, names) in steps {
            for chunk in names.chunks(CHUNK) {
                match self.send(command, chunk).await {
                    Ok(()) => {
                        let applied = match command {
                            Command::Subscribe | Command::Unsubscribe => &mut self.channels,
                            Command::PSubscribe | Command::PUnsubscribe => &mut self.patterns,
                        };
                        for name in chunk {
                            match command {
                                Command::Subscribe | Command::PSubscribe => {
                                    applied.insert(name.clone());
                                }
                                Command::Unsubscribe | Command::PUnsubscribe => {
                                    applied.remove(name);
                                }
                            }
                        }
                    }
                    Err(error) if error.is_refusal() => {
                        refusal.get_or_insert(error);
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        refusal.map_or(Ok(()), Err)
    }

    /// Sends one command for `names` and waits, within the timeout, until
    /// Redis confirmed every name.
    async fn send(&mut self, command: Command, names: &[String]) -> Result<(), ConnectionError> {
        let timeout = self.shared.timeout;
        let sent = match &mut self.link {
            Link::Cluster(connection) => {
                tokio::time::timeout(timeout, send_to_cluster(connection, command, names)).await
            }
            Link::Server(connection) if self.shared.sharded => {
                tokio::time::timeout(timeout, send_sharded(connection, command, names)).await
            }
            Link::Server(connection) => {
                let names = names.iter().map(String::as_str).collect::<Vec<_>>();
                tokio::time::timeout(timeout, async {
                    let result = match command {
                        Command::Subscribe => connection.subscribe(&names).await,
                        Command::Unsubscribe => connection.unsubscribe(&names).await,
                        Command::PSubscribe => connection.psubscribe(&names).await,
                        Command::PUnsubscribe => connection.punsubscribe(&names).await,
                    };
                    result.map_err(ConnectionError::from_command)
                })
                .await
            }
        };
        sent.unwrap_or(Err(ConnectionError::Timeout(timeout)))
    }
}

/// `SSUBSCRIBE` or `SUNSUBSCRIBE` of `names` on one server. No helper
/// exists for a plain connection, and in a cluster every channel of one
/// command must hash to the same slot anyway: one single-channel command per
/// name, in one pipeline (one round trip).
async fn send_sharded(
    connection: &mut MultiplexedConnection,
    command: Command,
    names: &[String],
) -> Result<(), ConnectionError> {
    let name = match command {
        Command::Subscribe => "SSUBSCRIBE",
        Command::Unsubscribe => "SUNSUBSCRIBE",
        // Refused by `subscribe` before they reach the desired set.
        Command::PSubscribe | Command::PUnsubscribe => return Ok(()),
    };
    let mut pipeline = redis::Pipeline::with_capacity(names.len());
    for channel in names {
        pipeline.cmd(name).arg(channel.as_str());
    }
    let replies = connection
        .send_packed_commands(&pipeline, 0, names.len())
        .await
        .map_err(ConnectionError::from_command)?;
    replies
        .into_iter()
        .find_map(|reply| match reply {
            Value::ServerError(error) => Some(error.to_string()),
            _ => None,
        })
        .map_or(Ok(()), |error| Err(ConnectionError::Refused(error)))
}

/// `SSUBSCRIBE` or `SUNSUBSCRIBE` of `names` on a cluster: one command per
/// channel, all at once, each routed to the master of the channel's slot
/// (following `MOVED` and `ASK`). Returns the first error that broke a
/// connection, else the first refusal.
async fn send_to_cluster(
    connection: &ClusterConnection,
    command: Command,
    names: &[String],
) -> Result<(), ConnectionError> {
    let each = names.iter().map(|channel| {
        let mut connection = connection.clone();
        async move {
            match command {
                Command::Subscribe => connection.ssubscribe(channel.as_str()).await,
                Command::Unsubscribe => connection.sunsubscribe(channel.as_str()).await,
                // Refused by `subscribe` before they reach the desired set.
                Command::PSubscribe | Command::PUnsubscribe => Ok(()),
            }
        }
    });
    let mut refusal = None;
    for result in futures::future::join_all(each).await {
        if let Err(error) = result {
            let error = ConnectionError::from_command(error);
            if !error.is_refusal() {
                return Err(error);
            }
            refusal.get_or_insert(error);
        }
    }
    refusal.map_or(Ok(()), Err)
}
