//! The `reconnect-storm` scenario: subscribers spread over several nodes, a
//! publisher sending numbered messages; one node is sent SIGTERM (drain) or
//! SIGKILL; the clients that lose their connection reconnect elsewhere with
//! exponential backoff and full jitter, resubscribing with `since` when they
//! have seen a position. Measures how long until every client is back and
//! what each one missed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use clap::{Args, ValueEnum};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::accounting::{
    publish_topic, publishes_due, subscriber_topic, CountsByTopic, SequenceTracker,
};
use crate::chart::{Chart, Series};
use crate::client::{Conn, ConnectArgs, Dialer, Ending, Protocol, SetupError, Subscribed, Target};
use crate::coord::{join_within, Conductor, Phase, WorkerLink, JOIN_SLACK};
use crate::host::{NodeArgs, NodeWatch, NodesReport};
use crate::latency::{Latencies, LatencySummary};
use crate::progress::{unix_nanos, LiveCounters, Timeline};
use crate::report::{per_second, ConnectionErrors, Oddities, Table, Trouble};
use crate::wire::{topic_name, ResumePoint, ServerEvent};

pub(crate) const ABOUT: &str = "\
Reconnect storm: subscribers spread over several nodes (--url, repeated), one
publisher (on --pub-url) sending numbered messages at --rate, each topic its
own sequence 0, 1, 2, …. --kill-after the start, the tool sends --kill-signal
to --node-pid (only that PID; without --node-pid nothing is signalled and the
tool only watches, e.g. while you drain a node yourself).

A client that loses its connection reconnects to the next URLs in turn, with
exponential backoff and full jitter (a random wait between 0 and
min(--backoff-max, --backoff-initial × 2^attempt)), and resubscribes; with
`since` when it has seen an epoch and offset on its topic (JSON protocol), so
that a node keeping history can replay the gap (reply recovered:true).

Reported: clients disconnected, reconnect time per client (from losing the
connection to being subscribed again: p50, p99, max), the time from the kill
until the last client was back, clients not back by the end, messages missed
per client (by sequence number), duplicates, and the recovered flags seen.

Example (three nodes on one backplane, drain the first):
  ferrocast-loadtest reconnect-storm --url ws://127.0.0.1:8080/ws \\
      --url ws://127.0.0.1:8090/ws --url ws://127.0.0.1:8100/ws \\
      --pub-url ws://127.0.0.1:8100/ws --subscribers 3000 --rate 200 \\
      --node-pid $NODE1 --kill-signal term --kill-after 5s --duration 30s";

/// Size of the numbered publications' data.
const PAYLOAD_BYTES: usize = 64;

/// Which signal ends the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KillSignal {
    /// SIGTERM: the node drains (closes connections with 1012 in paced batches).
    Term,
    /// SIGKILL: the node vanishes; connections break without a close frame.
    Kill,
}

impl KillSignal {
    fn signal(self) -> Signal {
        match self {
            Self::Term => Signal::SIGTERM,
            Self::Kill => Signal::SIGKILL,
        }
    }
}

/// Options of the `reconnect-storm` scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct StormArgs {
    /// WebSocket URL of a node. Repeat: subscribers are spread round-robin
    /// and reconnect to the next ones.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub(crate) urls: Vec<String>,

    /// URL of the publisher. [default: the last --url]
    #[arg(long, value_name = "URL")]
    pub(crate) pub_url: Option<String>,

    /// Subscriber connections; each subscribes to one topic.
    #[arg(long, value_name = "S", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) subscribers: u32,

    /// Topics (bench.t0 …); each has its own sequence.
    #[arg(long, value_name = "T", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: u32,

    /// Publications per second, over all topics.
    #[arg(long, value_name = "R", default_value_t = 100.0)]
    pub(crate) rate: f64,

    /// How long the publisher publishes (the kill comes within it).
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Time subscribers keep reading after the publisher stops.
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = humantime::parse_duration)]
    pub(crate) grace: Duration,

    /// The node to signal: a PID on this machine. Nothing else is ever signalled.
    #[arg(long = "kill-pid", value_name = "PID")]
    pub(crate) kill_pid: Option<u32>,

    /// SIGTERM (drain) or SIGKILL.
    #[arg(long, value_enum, default_value_t = KillSignal::Term)]
    pub(crate) kill_signal: KillSignal,

    /// When to signal the node, after publishing starts.
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub(crate) kill_after: Duration,

    /// First reconnect backoff ceiling.
    #[arg(long, value_name = "DURATION", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub(crate) backoff_initial: Duration,

    /// Largest reconnect backoff ceiling.
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub(crate) backoff_max: Duration,

    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    #[command(flatten)]
    pub(crate) nodes: NodeArgs,
}

impl StormArgs {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be a finite number > 0"
        );
        ensure!(
            self.kill_pid.is_none() || self.kill_after < self.duration,
            "--kill-after must come before the end of --duration"
        );
        Ok(())
    }

    fn pub_url(&self) -> String {
        self.pub_url
            .clone()
            .or_else(|| self.urls.last().cloned())
            .unwrap_or_default()
    }

    /// Longest a run can take, setup included.
    pub(crate) fn time_limit(&self) -> Duration {
        self.connect.setup_timeout + self.duration + self.grace
    }
}

/// The wait before reconnect attempt `attempt` (0-based): full jitter, a
/// uniformly random time between 0 and min(max, initial × 2^attempt).
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let ceiling = initial
        .checked_mul(1u32 << attempt.min(20))
        .map_or(max, |c| c.min(max));
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// What one worker measured; adds up across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StormPartial {
    subscribers_ready: u64,
    /// Numbered publications sent per topic (only in the worker that publishes).
    published: Vec<u64>,
    publisher_reconnects: u64,
    /// Distinct sequence numbers each subscriber received, by topic.
    distinct_by_topic: CountsByTopic,
    duplicates: u64,
    /// Clients that lost their connection at least once.
    clients_disconnected: u64,
    /// Successful reconnect + resubscribe.
    reconnects: u64,
    /// Reconnect attempts that failed.
    failed_attempts: u64,
    /// Clients without a connection at the end.
    not_back: u64,
    /// Lost connection → subscribed again, per reconnect.
    reconnect_latency: Latencies,
    first_loss_ns: Option<u64>,
    last_back_ns: Option<u64>,
    /// Resubscribes with `since`, by the `recovered` of the reply.
    recovered_true: u64,
    recovered_false: u64,
    recovered_absent: u64,
    /// Resubscribes without `since` (no position seen).
    resubscribed_without_position: u64,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl StormPartial {
    fn merge(&mut self, o: &Self) {
        self.subscribers_ready += o.subscribers_ready;
        crate::accounting::add_per_topic(&mut self.published, &o.published);
        self.publisher_reconnects += o.publisher_reconnects;
        self.distinct_by_topic.merge(&o.distinct_by_topic);
        self.duplicates += o.duplicates;
        self.clients_disconnected += o.clients_disconnected;
        self.reconnects += o.reconnects;
        self.failed_attempts += o.failed_attempts;
        self.not_back += o.not_back;
        self.reconnect_latency.merge(&o.reconnect_latency.0);
        self.first_loss_ns = self.first_loss_ns.into_iter().chain(o.first_loss_ns).min();
        self.last_back_ns = self.last_back_ns.max(o.last_back_ns);
        self.recovered_true += o.recovered_true;
        self.recovered_false += o.recovered_false;
        self.recovered_absent += o.recovered_absent;
        self.resubscribed_without_position += o.resubscribed_without_position;
        self.errors.merge(&o.errors);
        self.oddities.merge(&o.oddities);
    }
}

/// What every task of a worker shares.
#[derive(Debug)]
struct Shared {
    args: StormArgs,
    targets: Vec<Target>,
    topics: Vec<String>,
    dialer: Dialer,
    setup_deadline: Instant,
    connect_slots: Semaphore,
    stop: CancellationToken,
    live: Arc<LiveCounters>,
}

impl Shared {
    /// Reconnects connection `n` (first to the URL after `home`, then on in
    /// turn) and resubscribes, until it works or the run stops. Returns the
    /// connection and the reply, or `None` when the run stopped first.
    async fn reconnect(
        &self,
        n: usize,
        home: usize,
        topic: Option<&str>,
        since: Option<&ResumePoint>,
        stats: &mut ClientStats,
    ) -> Option<(Conn, Subscribed)> {
        for attempt in 0u32.. {
            let wait = backoff(
                self.args.backoff_initial,
                self.args.backoff_max,
                attempt,
                rand::random::<f64>(),
            );
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = sleep(wait) => {}
            }
            let target = &self.targets[(home + 1 + attempt as usize) % self.targets.len()];
            let deadline = Instant::now() + self.args.connect.setup_timeout;
            let result = match topic {
                Some(topic) => {
                    self.dialer
                        .open_and_subscribe(target, n, topic, since, deadline, |event| {
                            stats.on_event(event, topic)
                        })
                        .await
                }
                None => timeout_at(deadline, self.dialer.open(target, n))
                    .await
                    .unwrap_or(Err(SetupError::Timeout))
                    .map(|conn| (conn, Subscribed::default())),
            };
            match result {
                Ok(done) => return Some(done),
                Err(_) => stats.failed_attempts += 1,
            }
        }
        None
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    ready: bool,
    seen: SequenceTracker,
    position: Option<ResumePoint>,
    disconnects: u64,
    reconnects: u64,
    failed_attempts: u64,
    connected_at_end: bool,
    reconnect_micros: Vec<u64>,
    first_loss_ns: Option<u64>,
    last_back_ns: Option<u64>,
    recovered: [u64; 3],
    without_position: u64,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl ClientStats {
    fn on_event(&mut self, event: ServerEvent<'_>, topic: &str) {
        match event {
            ServerEvent::Delivery {
                topic: t,
                seq,
                position,
                ..
            } if t == topic => {
                self.seen.note(seq);
                if let Some(position) = position {
                    self.position = Some(ResumePoint::from_position(position));
                }
            }
            other => self.oddities.note(other),
        }
    }
}

/// The client side, in one worker.
pub(crate) async fn work(args: StormArgs, mut link: WorkerLink) -> anyhow::Result<StormPartial> {
    args.validate()?;
    let targets = Target::resolve_all(&args.urls).await?;
    let pub_target = Target::resolve(&args.pub_url()).await?;
    let share = link.share;
    let topics = args.topics as usize;
    let sources = args
        .connect
        .source_addrs
        .as_ref()
        .map(|s| s.share(share.index, share.count));
    let shared = Arc::new(Shared {
        targets,
        topics: (0..topics).map(topic_name).collect(),
        dialer: Dialer::new(args.connect.protocol, sources),
        setup_deadline: Instant::now() + args.connect.setup_timeout,
        connect_slots: Semaphore::new(args.connect.connect_concurrency as usize),
        stop: CancellationToken::new(),
        live: link.live.clone(),
        args,
    });
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(1024);
    let clients: Vec<JoinHandle<(usize, ClientStats)>> = share
        .range(shared.args.subscribers as usize)
        .map(|i| tokio::spawn(run_client(shared.clone(), i, ready_tx.clone())))
        .collect();
    drop(ready_tx);
    while let Ok(Some(())) = timeout_at(shared.setup_deadline, ready_rx.recv()).await {}

    let start = link.reached(Phase::Ready).await?.instant;
    let end = start + shared.args.duration;
    let publisher = share.is_first().then(|| {
        let shared = shared.clone();
        tokio::spawn(async move { run_publisher(&shared, &pub_target, start, end).await })
    });
    sleep_until(end + shared.args.grace).await;
    shared.stop.cancel();

    let join_limit = Instant::now() + JOIN_SLACK;
    let mut partial = StormPartial {
        published: vec![0; topics],
        distinct_by_topic: CountsByTopic::new(topics),
        ..StormPartial::default()
    };
    if let Some(publisher) = publisher {
        let (published, reconnects) = join_within(publisher, join_limit, "publisher").await?;
        partial.published = published;
        partial.publisher_reconnects = reconnects;
    }
    for client in clients {
        let (topic, stats) = join_within(client, join_limit, "subscriber").await?;
        if !stats.ready {
            partial.errors.merge(&stats.errors);
            continue;
        }
        partial.subscribers_ready += 1;
        partial.distinct_by_topic.note(topic, stats.seen.distinct());
        partial.duplicates += stats.seen.duplicates;
        partial.clients_disconnected += u64::from(stats.disconnects > 0);
        partial.reconnects += stats.reconnects;
        partial.failed_attempts += stats.failed_attempts;
        partial.not_back += u64::from(!stats.connected_at_end);
        for micros in &stats.reconnect_micros {
            partial.reconnect_latency.record(*micros);
        }
        partial.first_loss_ns = partial
            .first_loss_ns
            .into_iter()
            .chain(stats.first_loss_ns)
            .min();
        partial.last_back_ns = partial.last_back_ns.max(stats.last_back_ns);
        partial.recovered_true += stats.recovered[0];
        partial.recovered_false += stats.recovered[1];
        partial.recovered_absent += stats.recovered[2];
        partial.resubscribed_without_position += stats.without_position;
        partial.errors.merge(&stats.errors);
        partial.oddities.merge(&stats.oddities);
    }
    Ok(partial)
}

/// One subscriber for the whole run, across reconnects.
async fn run_client(
    shared: Arc<Shared>,
    index: usize,
    ready: mpsc::Sender<()>,
) -> (usize, ClientStats) {
    let topic_index = subscriber_topic(index, shared.topics.len());
    let topic = shared.topics[topic_index].as_str();
    let home = index % shared.targets.len();
    let mut stats = ClientStats::default();
    let setup = {
        let _slot = shared.connect_slots.acquire().await;
        let mut on_event = |event: ServerEvent<'_>| stats.on_event(event, topic);
        shared
            .dialer
            .open_and_subscribe(
                &shared.targets[home],
                index,
                topic,
                None,
                shared.setup_deadline,
                &mut on_event,
            )
            .await
    };
    let _ = ready.send(()).await;
    drop(ready);
    let (mut conn, reply) = match setup {
        Ok(done) => done,
        Err(error) => {
            stats.errors.count_setup(error);
            LiveCounters::add(&shared.live.errors, 1);
            return (topic_index, stats);
        }
    };
    stats.ready = true;
    if reply.position.is_some() {
        stats.position = reply.position;
    }
    LiveCounters::add(&shared.live.ready, 1);
    loop {
        let ending = loop {
            let before = stats.seen.distinct();
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => break Ending::Done,
                next = conn.recv(|event| stats.on_event(event, topic)) => if let Err(ending) = next {
                    break ending;
                },
            }
            LiveCounters::add(&shared.live.delivered, stats.seen.distinct() - before);
        };
        if ending == Ending::Done {
            stats.connected_at_end = true;
            conn.close(ending).await;
            return (topic_index, stats);
        }
        // Lost: note it, then come back somewhere else.
        let lost_at = Instant::now();
        let lost_ns = unix_nanos();
        stats.first_loss_ns.get_or_insert(lost_ns);
        stats.disconnects += 1;
        stats.errors.count_ending(ending);
        LiveCounters::add(&shared.live.errors, 1);
        drop(conn);
        let since = stats.position.clone();
        let Some((back, reply)) = shared
            .reconnect(index, home, Some(topic), since.as_ref(), &mut stats)
            .await
        else {
            return (topic_index, stats);
        };
        stats.reconnects += 1;
        stats
            .reconnect_micros
            .push(u64::try_from(lost_at.elapsed().as_micros()).unwrap_or(u64::MAX));
        stats.last_back_ns = Some(unix_nanos());
        match (since.is_some(), reply.recovered) {
            (true, Some(true)) => stats.recovered[0] += 1,
            (true, Some(false)) => stats.recovered[1] += 1,
            (true, None) => stats.recovered[2] += 1,
            (false, _) => stats.without_position += 1,
        }
        if reply.position.is_some() {
            stats.position = reply.position;
        }
        conn = back;
    }
}

/// The publisher: message k goes to topic k % T with that topic's next
/// sequence number. Returns the publications sent per topic and how often
/// it had to reconnect.
async fn run_publisher(
    shared: &Shared,
    target: &Target,
    start: Instant,
    end: Instant,
) -> (Vec<u64>, u64) {
    let topics = shared.topics.len();
    let mut published = vec![0u64; topics];
    let mut reconnects = 0;
    let n = shared.args.subscribers as usize;
    let mut conn = timeout_at(
        shared.setup_deadline.max(start) + JOIN_SLACK,
        shared.dialer.open(target, n),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let rate = shared.args.rate;
    let period = Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1));
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while Instant::now() < end {
        tokio::select! {
            () = sleep_until(end) => break,
            _ = ticks.tick() => {}
        }
        let Some(current) = conn.as_mut() else {
            let mut scratch = ClientStats::default();
            let home = shared.targets.len().saturating_sub(1);
            conn = shared
                .reconnect(n, home, None, None, &mut scratch)
                .await
                .map(|(c, _)| c);
            reconnects += 1;
            continue;
        };
        let due = publishes_due(Instant::now().saturating_duration_since(start), rate);
        let written = async {
            while sent < due {
                let topic = publish_topic(0, sent, topics);
                let seq = published[topic];
                current
                    .feed_publish(&shared.topics[topic], unix_nanos(), seq, PAYLOAD_BYTES)
                    .await?;
                published[topic] += 1;
                sent += 1;
                LiveCounters::add(&shared.live.published, 1);
            }
            current.flush().await
        };
        if written.await.is_err() {
            conn = None;
        }
    }
    // Stay connected until the run stops: closing right behind the last
    // publish could race it.
    if let Some(conn) = conn {
        shared.stop.cancelled().await;
        conn.close(Ending::Done).await;
    }
    (published, reconnects)
}

/// The parent side: node readings, the kill, then the report.
pub(crate) async fn conduct(
    args: &StormArgs,
    conductor: &mut Conductor,
) -> anyhow::Result<StormReport> {
    args.validate()?;
    let mut nodes = NodeWatch::new(&args.nodes);
    nodes.before().await;
    conductor.status.set_phase("connecting");
    conductor
        .barrier(
            Phase::Ready,
            Instant::now() + args.connect.setup_timeout + JOIN_SLACK,
        )
        .await?;
    nodes.connected().await;
    let start = Instant::now() + Duration::from_millis(200);
    conductor.go(start).await?;
    conductor.status.set_phase("publishing");
    let end = start + args.duration;
    let killing = async {
        let Some(pid) = args.kill_pid else {
            return Ok(None);
        };
        sleep_until(start + args.kill_after).await;
        let at = unix_nanos();
        kill(
            Pid::from_raw(i32::try_from(pid).context("--kill-pid is out of range")?),
            args.kill_signal.signal(),
        )
        .with_context(|| format!("sending {:?} to {pid}", args.kill_signal))?;
        anyhow::Ok(Some(at))
    };
    let end_readings = async {
        sleep_until(end).await;
        nodes.end().await;
    };
    let (results, killed, ()) = tokio::join!(
        conductor.results::<StormPartial>(end + args.grace + JOIN_SLACK * 2),
        killing,
        end_readings
    );
    let (partials, timeline) = results?;
    let killed_at_ns = killed?;
    let mut total = StormPartial::default();
    for partial in &partials {
        total.merge(partial);
    }
    let nodes = nodes.report(total.subscribers_ready + 1);
    Ok(StormReport::new(
        args,
        total,
        killed_at_ns,
        nodes,
        timeline,
        conductor.processes(),
    ))
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StormSettings {
    pub(crate) urls: Vec<String>,
    pub(crate) pub_url: String,
    pub(crate) protocol: Protocol,
    pub(crate) subscribers: u32,
    pub(crate) topics: u32,
    pub(crate) rate: f64,
    pub(crate) duration_s: f64,
    pub(crate) kill_pid: Option<u32>,
    pub(crate) kill_signal: KillSignal,
    pub(crate) kill_after_s: f64,
    pub(crate) workers: usize,
}

/// The result of a `reconnect-storm` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StormReport {
    pub(crate) scenario: &'static str,
    pub(crate) settings: StormSettings,
    pub(crate) subscribers_ready: u64,
    /// Whether the tool signalled the node.
    pub(crate) signalled: bool,
    pub(crate) publishes: u64,
    pub(crate) publishes_per_s: f64,
    pub(crate) publisher_reconnects: u64,
    pub(crate) clients_disconnected: u64,
    pub(crate) reconnects: u64,
    pub(crate) failed_attempts: u64,
    /// Clients without a connection when the run ended.
    pub(crate) clients_not_back: u64,
    /// Lost connection → subscribed again.
    pub(crate) reconnect_time: LatencySummary,
    /// From the signal (or the first loss, without one) until the last
    /// client was back; only when every client came back.
    pub(crate) all_back_after_s: Option<f64>,
    /// Numbered messages owed to every subscriber of their topic.
    pub(crate) expected: u64,
    /// Owed messages that never arrived.
    pub(crate) missed: u64,
    pub(crate) clients_with_misses: u64,
    pub(crate) duplicates: u64,
    /// Resubscribes with `since`, by the reply's `recovered`.
    pub(crate) recovered_true: u64,
    pub(crate) recovered_false: u64,
    pub(crate) recovered_absent: u64,
    /// Resubscribes without `since`: no position had been seen (no history).
    pub(crate) resubscribed_without_position: u64,
    #[serde(flatten)]
    pub(crate) trouble: Trouble,
    pub(crate) nodes: NodesReport,
    pub(crate) timeline: Timeline,
    #[serde(skip)]
    reconnect_histogram: Latencies,
}

impl StormReport {
    fn new(
        args: &StormArgs,
        total: StormPartial,
        killed_at_ns: Option<u64>,
        nodes: NodesReport,
        timeline: Timeline,
        workers: usize,
    ) -> Self {
        let subscribers = total.distinct_by_topic.subscribers_per_topic();
        let expected = crate::accounting::expected_deliveries(&subscribers, &total.published);
        let (clients_with_misses, missed) = total.distinct_by_topic.shortfall(&total.published);
        let publishes: u64 = total.published.iter().sum();
        let reference = killed_at_ns.or(total.first_loss_ns);
        let all_back_after_s = reference
            .zip(total.last_back_ns)
            .filter(|_| total.not_back == 0 && total.clients_disconnected > 0)
            .map(|(from, back)| back.saturating_sub(from) as f64 / 1e9);
        Self {
            scenario: "reconnect-storm",
            settings: StormSettings {
                urls: args.urls.clone(),
                pub_url: args.pub_url(),
                protocol: args.connect.protocol,
                subscribers: args.subscribers,
                topics: args.topics,
                rate: args.rate,
                duration_s: args.duration.as_secs_f64(),
                kill_pid: args.kill_pid,
                kill_signal: args.kill_signal,
                kill_after_s: args.kill_after.as_secs_f64(),
                workers,
            },
            subscribers_ready: total.subscribers_ready,
            signalled: killed_at_ns.is_some(),
            publishes,
            publishes_per_s: per_second(publishes, args.duration.as_secs_f64()),
            publisher_reconnects: total.publisher_reconnects,
            clients_disconnected: total.clients_disconnected,
            reconnects: total.reconnects,
            failed_attempts: total.failed_attempts,
            clients_not_back: total.not_back,
            reconnect_time: total.reconnect_latency.summary(),
            all_back_after_s,
            expected,
            missed,
            clients_with_misses,
            duplicates: total.duplicates,
            recovered_true: total.recovered_true,
            recovered_false: total.recovered_false,
            recovered_absent: total.recovered_absent,
            resubscribed_without_position: total.resubscribed_without_position,
            trouble: Trouble::new(total.errors, total.oddities),
            nodes,
            timeline,
            reconnect_histogram: total.reconnect_latency,
        }
    }

    pub(crate) fn table(&self) -> Table {
        let s = &self.settings;
        let mut table = Table::default();
        table.heading(format!(
            "reconnect-storm: {} subscribers on {} topic(s) over {} URL(s), {} publishes/s on {}, {}, {} worker process(es)",
            s.subscribers, s.topics, s.urls.len(), s.rate, s.pub_url, s.protocol, s.workers
        ));
        table.heading(match s.kill_pid {
            Some(pid) => format!(
                "{} sent to pid {pid} {:.1} s after publishing began ({})",
                match s.kill_signal {
                    KillSignal::Term => "SIGTERM",
                    KillSignal::Kill => "SIGKILL",
                },
                s.kill_after_s,
                if self.signalled { "sent" } else { "not sent" }
            ),
            None => "no node signalled by the tool".to_owned(),
        });
        table
            .row("subscribers ready", self.subscribers_ready)
            .row(
                "publishes",
                format!(
                    "{} ({:.1}/s), publisher reconnects {}",
                    self.publishes, self.publishes_per_s, self.publisher_reconnects
                ),
            )
            .row(
                "clients disconnected",
                format!(
                    "{} ({} losses in all)",
                    self.clients_disconnected, self.trouble.disconnects
                ),
            )
            .row(
                "reconnects",
                format!(
                    "{} ok, {} failed attempts",
                    self.reconnects, self.failed_attempts
                ),
            )
            .row("clients not back at the end", self.clients_not_back)
            .latency("reconnect time", &self.reconnect_time)
            .row(
                "every client back after",
                self.all_back_after_s
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.3} s")),
            )
            .row(
                "messages missed",
                format!(
                    "{} of {} owed, {} client(s) affected",
                    self.missed, self.expected, self.clients_with_misses
                ),
            )
            .row("duplicates", self.duplicates)
            .row(
                "resubscribes with since",
                format!(
                    "recovered true {}, false {}, absent {}",
                    self.recovered_true, self.recovered_false, self.recovered_absent
                ),
            )
            .row(
                "resubscribes without position",
                self.resubscribed_without_position,
            )
            .rows(self.trouble.rows())
            .rows(self.nodes.rows());
        table
    }

    pub(crate) fn chart(&self) -> Chart<'_> {
        Chart {
            title: format!(
                "ferrocast reconnect-storm: {} clients disconnected, reconnect p99 {:.1} ms",
                self.clients_disconnected, self.reconnect_time.p99_ms
            ),
            latency: Some(("reconnect", &self.reconnect_histogram.0)),
            timeline: &self.timeline,
            series: vec![
                Series {
                    label: "deliveries/s",
                    value: |c| c.delivered,
                },
                Series {
                    label: "losses/s",
                    value: |c| c.errors,
                },
            ],
        }
    }
}
