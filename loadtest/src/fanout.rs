//! The `fanout` and `cross-node` scenarios: S subscribers spread over T
//! topics, P publishers sharing a total rate R (or sending a burst of N as
//! fast as they can). `cross-node` puts publishers and subscribers on
//! different nodes.
//!
//! Timeline: every connection is opened and every subscription confirmed
//! (bounded by `--setup-timeout`), in every worker; then publishers publish
//! for `--warmup` + `--duration`, and only publications stamped inside the
//! last `--duration` are measured. Subscribers keep reading for `--grace`
//! after the publishers stop, then everything closes and the report is built
//! from the merged counters and latency histograms.
//!
//! In burst mode the whole burst is measured (no warmup) and the run ends as
//! soon as every subscriber has received everything it was owed, or
//! `--duration` + `--grace` after the start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::ensure;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::accounting::{
    burst_per_topic, burst_share, expected_deliveries, publish_topic, publisher_rate,
    publishes_due, subscriber_topic, CountsByTopic, Window,
};
use crate::chart::{Chart, Series};
use crate::client::{Conn, ConnectArgs, Dialer, Ending, Protocol, Target};
use crate::coord::{join_within, Conductor, Phase, WorkerLink, JOIN_SLACK};
use crate::host::{NodeArgs, NodeWatch, NodesReport};
use crate::latency::{Latencies, LatencySummary};
use crate::progress::{unix_nanos, LiveCounters, Timeline};
use crate::report::{per_second, percent, ConnectionErrors, Oddities, Table, Trouble};
use crate::scenario::{collect, start_phase, Partial, Scenario, ScenarioReport};
use crate::wire::{topic_name, ServerEvent};

pub(crate) const FANOUT_ABOUT: &str = "\
Fan-out: many subscribers spread over a few topics, a few publishers at a fixed
total rate (or a burst as fast as they can). Measures deliveries per second,
publish to delivery latency, losses and disconnects.

Subscriber i subscribes to topic bench.t{i % topics}. Publishers publish in turn
to every topic; each publication carries its send time (Unix ns) and a
sequence number in its data, {\"ts\":…,\"seq\":…,\"pad\":\"xx…\"}, padded to
--payload-bytes. Publishers start only once every subscription (in every
worker process) is confirmed.

With --rate, only publications stamped inside the measured window (after
--warmup, for --duration) count. With --burst N, the publishers send N
publications together as fast as they can, all of them count, and
deliveries/s is every delivery divided by the time from the first send to the
last delivery. Either way each publication is owed to every subscriber of its
topic; what has not arrived --grace after the publishers stop is lost.

Connections are spread round-robin over the --url values.

Examples:
  ferrocast-loadtest fanout --url ws://127.0.0.1:8080/ws \\
      --subscribers 1000 --topics 10 --publishers 10 --rate 2000 --duration 20s
  ferrocast-loadtest fanout --subscribers 1000 --topics 1 --publishers 1 --burst 2000";

pub(crate) const CROSS_NODE_ABOUT: &str = "\
Cross-node fan-out: publishers on some nodes, subscribers on others, so that
every delivery crosses the backplane (Redis or NATS). Same options and figures
as fanout, with --pub-url and --sub-url instead of --url.

Example (two nodes on one backplane):
  ferrocast-loadtest cross-node --pub-url ws://127.0.0.1:8080/ws \\
      --sub-url ws://127.0.0.1:8090/ws --subscribers 1000 --topics 10 \\
      --publishers 10 --rate 2000 --duration 20s";

/// Slack given to a publisher past its stop time to finish a send.
const SEND_GRACE: Duration = Duration::from_secs(1);
/// Publications of a burst written before each flush.
const BURST_FLUSH_EVERY: u64 = 64;

/// Options of the `fanout` scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// WebSocket URL of a node's public listener. Repeat to spread the
    /// connections round-robin over several nodes.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub(crate) urls: Vec<String>,

    #[command(flatten)]
    pub(crate) traffic: TrafficArgs,
}

/// Options of the `cross-node` scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct CrossNodeArgs {
    /// URL the publishers connect to. Repeat for several (round-robin).
    #[arg(long = "pub-url", value_name = "URL", required = true)]
    pub(crate) pub_urls: Vec<String>,

    /// URL the subscribers connect to. Repeat for several (round-robin).
    #[arg(long = "sub-url", value_name = "URL", required = true)]
    pub(crate) sub_urls: Vec<String>,

    #[command(flatten)]
    pub(crate) traffic: TrafficArgs,
}

/// What `fanout` and `cross-node` share.
#[derive(Debug, Clone, Args)]
pub(crate) struct TrafficArgs {
    /// Subscriber connections; each subscribes to one topic.
    #[arg(long, value_name = "S", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) subscribers: u32,

    /// Topics the subscribers are spread over (bench.t0 … bench.t{T-1}).
    #[arg(long, value_name = "T", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: u32,

    /// Publisher connections sharing the rate (or the burst).
    #[arg(long, value_name = "P", default_value_t = 1)]
    pub(crate) publishers: u32,

    /// Publishes per second, all publishers together (0: connect and idle).
    #[arg(long, value_name = "R", default_value_t = 100.0)]
    pub(crate) rate: f64,

    /// Instead of a rate: N publications in total, sent as fast as possible.
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    pub(crate) burst: Option<u64>,

    /// Size of the `data` object of each publication, in bytes (padded with
    /// `x`; at least the size of the timestamp and sequence fields).
    #[arg(long, value_name = "B", default_value_t = 128)]
    pub(crate) payload_bytes: usize,

    /// Length of the measured window (with --burst: the longest the burst
    /// may take).
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Publishing before the measured window, not counted (not with --burst).
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,

    /// Time subscribers keep reading after the publishers stop.
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = humantime::parse_duration)]
    pub(crate) grace: Duration,

    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    #[command(flatten)]
    pub(crate) nodes: NodeArgs,
}

impl TrafficArgs {
    pub(crate) fn connections(&self) -> u64 {
        u64::from(self.subscribers) + u64::from(self.publishers)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.rate.is_finite() && self.rate >= 0.0,
            "--rate must be a finite number ≥ 0"
        );
        ensure!(
            self.publishers > 0 || (self.burst.is_none() && self.rate == 0.0),
            "publishing needs at least one publisher"
        );
        Ok(())
    }

    fn warmup(&self) -> Duration {
        if self.burst.is_some() {
            Duration::ZERO
        } else {
            self.warmup
        }
    }

    /// Longest a run can take, setup included.
    pub(crate) fn time_limit(&self) -> Duration {
        self.connect.setup_timeout + self.warmup() + self.duration + self.grace
    }

    /// The measured window of a run whose publishing starts at `start_unix_ns`.
    fn window(&self, start_unix_ns: u64) -> Window {
        match self.burst {
            Some(_) => Window {
                start: start_unix_ns,
                end: u64::MAX,
            },
            None => Window::after_warmup(start_unix_ns, self.warmup, self.duration),
        }
    }
}

/// Where publishers and subscribers connect.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) scenario: &'static str,
    pub(crate) pub_urls: Vec<String>,
    pub(crate) sub_urls: Vec<String>,
    pub(crate) traffic: TrafficArgs,
}

impl From<FanoutArgs> for Plan {
    fn from(args: FanoutArgs) -> Self {
        Self {
            scenario: "fanout",
            pub_urls: args.urls.clone(),
            sub_urls: args.urls,
            traffic: args.traffic,
        }
    }
}

impl From<CrossNodeArgs> for Plan {
    fn from(args: CrossNodeArgs) -> Self {
        Self {
            scenario: "cross-node",
            pub_urls: args.pub_urls,
            sub_urls: args.sub_urls,
            traffic: args.traffic,
        }
    }
}

/// What one worker measured; adds up across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct FanoutPartial {
    subscribers_ready: u64,
    publishers_ready: u64,
    /// Time this worker took to set up.
    setup_s: f64,
    /// Window publications per topic.
    published: Vec<u64>,
    /// Window deliveries each subscriber received, by topic.
    received_by_topic: CountsByTopic,
    received: u64,
    warmup_deliveries: u64,
    latency: Latencies,
    errors: ConnectionErrors,
    oddities: Oddities,
    /// Unix ns of the first publication sent.
    first_send_ns: Option<u64>,
    /// Unix ns of the last window delivery received.
    last_delivery_ns: Option<u64>,
}

impl Partial for FanoutPartial {
    fn merge(&mut self, other: &Self) {
        self.subscribers_ready += other.subscribers_ready;
        self.publishers_ready += other.publishers_ready;
        self.setup_s = self.setup_s.max(other.setup_s);
        crate::accounting::add_per_topic(&mut self.published, &other.published);
        self.received_by_topic.merge(&other.received_by_topic);
        self.received += other.received;
        self.warmup_deliveries += other.warmup_deliveries;
        self.latency.merge(&other.latency.0);
        self.errors.merge(&other.errors);
        self.oddities.merge(&other.oddities);
        self.first_send_ns = self
            .first_send_ns
            .into_iter()
            .chain(other.first_send_ns)
            .min();
        self.last_delivery_ns = self.last_delivery_ns.max(other.last_delivery_ns);
    }
}

/// What every task of a worker shares.
#[derive(Debug)]
struct Shared {
    traffic: TrafficArgs,
    /// `bench.t0` …, built once.
    topics: Vec<String>,
    /// Publications each subscriber of a topic is owed in burst mode.
    burst_owed: Option<Vec<u64>>,
    dialer: Dialer,
    /// Connect and subscribe must be done by then.
    setup_deadline: Instant,
    /// Limits handshakes in progress (`--connect-concurrency`).
    connect_slots: Semaphore,
    /// Set once, before the first publish.
    window: OnceLock<Window>,
    /// Cancelled at the end: every connection closes.
    stop: CancellationToken,
    /// Burst mode: subscribers of this worker still owed something.
    incomplete: AtomicU64,
    completed: Notify,
    live: Arc<LiveCounters>,
}

/// When publishers start and stop.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    end: Instant,
}

/// What one subscriber saw.
#[derive(Debug)]
struct SubscriberStats {
    topic: usize,
    subscribed: bool,
    received: u64,
    warmup: u64,
    latency: Option<Latencies>,
    last_delivery_ns: Option<u64>,
    errors: ConnectionErrors,
    oddities: Oddities,
}

/// What one publisher did.
#[derive(Debug)]
struct PublisherStats {
    connected: bool,
    /// Window publications per topic.
    published: Vec<u64>,
    first_send_ns: Option<u64>,
    errors: ConnectionErrors,
    oddities: Oddities,
}

/// One subscriber connection: subscribe, report readiness, then count
/// deliveries until stopped.
async fn run_subscriber(
    shared: Arc<Shared>,
    index: usize,
    target: Target,
    ready: mpsc::Sender<bool>,
) -> SubscriberStats {
    let topic_index = subscriber_topic(index, shared.topics.len());
    let topic = shared.topics[topic_index].as_str();
    let mut stats = SubscriberStats {
        topic: topic_index,
        subscribed: false,
        received: 0,
        warmup: 0,
        latency: None,
        last_delivery_ns: None,
        errors: ConnectionErrors::default(),
        oddities: Oddities::default(),
    };
    let setup = {
        let _slot = shared.connect_slots.acquire().await;
        shared
            .dialer
            .open_and_subscribe(
                &target,
                index,
                topic,
                None,
                shared.setup_deadline,
                |event| stats.oddities.note(event),
            )
            .await
    };
    let mut conn = match setup {
        Ok((conn, _)) => conn,
        Err(error) => {
            stats.errors.count_setup(error);
            LiveCounters::add(&shared.live.errors, 1);
            let _ = ready.send(false).await;
            return stats;
        }
    };
    stats.subscribed = true;
    stats.latency = Some(Latencies::default());
    LiveCounters::add(&shared.live.ready, 1);
    let owed = shared.burst_owed.as_ref().map(|owed| owed[topic_index]);
    let mut complete = owed == Some(0);
    if owed.is_some() && !complete {
        shared.incomplete.fetch_add(1, Ordering::AcqRel);
    }
    let _ = ready.send(true).await;
    drop(ready);

    let ending = loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break Ending::Done,
            next = conn.recv(|event| on_delivery(&mut stats, event, topic, shared.window.get())) => {
                if let Err(ending) = next {
                    break ending;
                }
            }
        }
        if !complete && owed.is_some_and(|owed| stats.received >= owed) {
            complete = true;
            if shared.incomplete.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.completed.notify_one();
            }
        }
    };
    if !complete && owed.is_some() && shared.incomplete.fetch_sub(1, Ordering::AcqRel) == 1 {
        // A subscriber that broke off will get nothing more.
        shared.completed.notify_one();
    }
    conn.finish(ending, &mut stats.errors, &shared.live).await;
    stats
}

/// Accounts for one object a subscriber received.
fn on_delivery(
    stats: &mut SubscriberStats,
    event: ServerEvent<'_>,
    topic: &str,
    window: Option<&Window>,
) {
    match event {
        ServerEvent::Delivery { topic: t, ts, .. } if t == topic => {
            match (window, &mut stats.latency) {
                (Some(window), Some(latency)) if window.contains(ts) => {
                    let now = unix_nanos();
                    stats.received += 1;
                    stats.last_delivery_ns = Some(now);
                    latency.record(now.saturating_sub(ts) / 1_000);
                }
                _ => stats.warmup += 1,
            }
        }
        other => stats.oddities.note(other),
    }
}

/// One publisher connection: connect, report, wait for the schedule, publish,
/// then keep the connection (and read error replies) until the run stops.
async fn run_publisher(
    shared: Arc<Shared>,
    index: usize,
    n: usize,
    target: Target,
    ready: mpsc::Sender<bool>,
    mut start: watch::Receiver<Option<Schedule>>,
) -> PublisherStats {
    let mut stats = PublisherStats {
        connected: false,
        published: vec![0; shared.topics.len()],
        first_send_ns: None,
        errors: ConnectionErrors::default(),
        oddities: Oddities::default(),
    };
    let setup = {
        let _slot = shared.connect_slots.acquire().await;
        timeout_at(shared.setup_deadline, shared.dialer.open(&target, n)).await
    };
    let mut conn = match setup {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            stats.errors.count_setup(error);
            let _ = ready.send(false).await;
            return stats;
        }
        Err(_) => {
            stats.errors.count_setup(crate::client::SetupError::Timeout);
            let _ = ready.send(false).await;
            return stats;
        }
    };
    stats.connected = true;
    let _ = ready.send(true).await;
    drop(ready);

    let ending = match publish(&shared, index, &mut conn, &mut start, &mut stats).await {
        // Stay connected until the run stops; the node may still answer.
        Ending::Done => {
            conn.read_until(shared.stop.cancelled(), |event| stats.oddities.note(event))
                .await
        }
        ending => ending,
    };
    conn.finish(ending, &mut stats.errors, &shared.live).await;
    stats
}

/// The publishing of publisher `index`. Returns [`Ending::Done`] when it is
/// over (or the run stopped before it began).
async fn publish(
    shared: &Shared,
    index: usize,
    conn: &mut Conn,
    start: &mut watch::Receiver<Option<Schedule>>,
    stats: &mut PublisherStats,
) -> Ending {
    // Wait for the start, answering the node meanwhile.
    let schedule = loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Ending::Done,
            started = start.wait_for(Option::is_some) => match started.as_deref() {
                Ok(Some(schedule)) => break *schedule,
                _ => return Ending::Done,
            },
            next = conn.recv(|event| stats.oddities.note(event)) => if let Err(ending) = next {
                return ending;
            },
        }
    };
    let Some(window) = shared.window.get().copied() else {
        return Ending::Done;
    };
    sleep_until(schedule.start).await;
    let traffic = &shared.traffic;
    let topics = shared.topics.len();
    let mut sent = 0u64;
    let mut stamp = |sent: u64| {
        let ts = unix_nanos();
        let topic = publish_topic(index, sent, topics);
        if window.contains(ts) {
            stats.published[topic] += 1;
        }
        stats.first_send_ns.get_or_insert(ts);
        LiveCounters::add(&shared.live.published, 1);
        (topic, ts)
    };
    if let Some(burst) = traffic.burst {
        let count = burst_share(burst, traffic.publishers as usize, index);
        let written = async {
            while sent < count {
                let (topic, ts) = stamp(sent);
                conn.feed_publish(&shared.topics[topic], ts, sent, traffic.payload_bytes)
                    .await?;
                sent += 1;
                if sent.is_multiple_of(BURST_FLUSH_EVERY) {
                    conn.flush().await?;
                }
            }
            conn.flush().await
        };
        return match timeout_at(schedule.end + SEND_GRACE, written).await {
            Ok(Ok(())) => Ending::Done,
            Ok(Err(_)) | Err(_) => Ending::Dropped,
        };
    }
    let rate = publisher_rate(traffic.rate, traffic.publishers as usize);
    if rate <= 0.0 {
        return Ending::Done;
    }
    let period = tick_period(rate);
    // Publishers tick in turn, not all at once.
    let first_tick =
        schedule.start + period.mul_f64(index as f64 / f64::from(traffic.publishers.max(1)));
    let mut ticks = tokio::time::interval_at(first_tick, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = sleep_until(schedule.end) => return Ending::Done,
            next = conn.recv(|event| stats.oddities.note(event)) => if let Err(ending) = next {
                return ending;
            },
            _ = ticks.tick() => {
                let now = Instant::now();
                if now >= schedule.end {
                    return Ending::Done;
                }
                let due = publishes_due(now.saturating_duration_since(first_tick), rate);
                let written = async {
                    while sent < due {
                        let (topic, ts) = stamp(sent);
                        conn.feed_publish(&shared.topics[topic], ts, sent, traffic.payload_bytes).await?;
                        sent += 1;
                    }
                    conn.flush().await
                };
                match timeout_at(schedule.end + SEND_GRACE, written).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return Ending::Dropped,
                }
            }
        }
    }
}

/// Timer period of a publisher at `rate` per second: one publish per tick,
/// but no faster than 1 ms (the timer's resolution; several publishes then go
/// per tick) and no slower than 100 ms.
fn tick_period(rate: f64) -> Duration {
    Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1))
}

impl Scenario for Plan {
    type Partial = FanoutPartial;
    type Report = FanoutReport;

    fn connections(&self) -> u64 {
        self.traffic.connections()
    }

    fn time_limit(&self) -> Duration {
        self.traffic.time_limit()
    }

    /// The client side of the scenario, in one worker.
    async fn work(self, mut link: WorkerLink) -> anyhow::Result<FanoutPartial> {
        let plan = self;
        let traffic = &plan.traffic;
        traffic.validate()?;
        let sub_targets = Target::resolve_all(&plan.sub_urls).await?;
        let pub_targets = Target::resolve_all(&plan.pub_urls).await?;
        let share = link.share;
        let topics = traffic.topics as usize;
        let started = Instant::now();
        let shared = Arc::new(Shared {
            topics: (0..topics).map(topic_name).collect(),
            burst_owed: traffic
                .burst
                .map(|n| burst_per_topic(n, traffic.publishers as usize, topics)),
            dialer: traffic.connect.dialer(share),
            setup_deadline: started + traffic.connect.setup_timeout,
            connect_slots: Semaphore::new(traffic.connect.connect_concurrency as usize),
            window: OnceLock::new(),
            stop: CancellationToken::new(),
            incomplete: AtomicU64::new(0),
            completed: Notify::new(),
            live: link.live.clone(),
            traffic: traffic.clone(),
        });

        let subscribers = share.range(traffic.subscribers as usize);
        let publishers = share.range(traffic.publishers as usize);
        let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(1024);
        let (start_tx, start_rx) = watch::channel::<Option<Schedule>>(None);
        let subscriber_tasks: Vec<JoinHandle<SubscriberStats>> = subscribers
            .clone()
            .map(|i| {
                let target = sub_targets[i % sub_targets.len()].clone();
                tokio::spawn(run_subscriber(shared.clone(), i, target, ready_tx.clone()))
            })
            .collect();
        let publisher_tasks: Vec<JoinHandle<PublisherStats>> = publishers
            .clone()
            .map(|p| {
                // Publishers use source addresses after the subscribers.
                let n = traffic.subscribers as usize + p;
                let target = pub_targets[p % pub_targets.len()].clone();
                tokio::spawn(run_publisher(
                    shared.clone(),
                    p,
                    n,
                    target,
                    ready_tx.clone(),
                    start_rx.clone(),
                ))
            })
            .collect();
        drop(ready_tx);
        // Every connection reports once, ready or failed.
        while let Ok(Some(_)) = timeout_at(shared.setup_deadline, ready_rx.recv()).await {}
        let setup_s = started.elapsed().as_secs_f64();

        let go = link.reached(Phase::Ready).await?;
        let _ = shared.window.set(traffic.window(go.unix_ns));
        let start = go.instant;
        let end = start + traffic.warmup() + traffic.duration;
        start_tx.send_replace(Some(Schedule { start, end }));

        let stop_at = end + traffic.grace;
        if shared.burst_owed.is_some() {
            // Until every subscriber of this worker has everything, or time is up.
            loop {
                let notified = shared.completed.notified();
                if shared.incomplete.load(Ordering::Acquire) == 0 || Instant::now() >= stop_at {
                    break;
                }
                let _ = timeout_at(stop_at, notified).await;
            }
        } else {
            sleep_until(stop_at).await;
        }
        shared.stop.cancel();

        let join_limit = Instant::now() + JOIN_SLACK;
        let mut partial = FanoutPartial {
            setup_s,
            published: vec![0; topics],
            received_by_topic: CountsByTopic::new(topics),
            ..FanoutPartial::default()
        };
        for task in publisher_tasks {
            let stats = join_within(task, join_limit, "publisher").await?;
            partial.publishers_ready += u64::from(stats.connected);
            crate::accounting::add_per_topic(&mut partial.published, &stats.published);
            partial.first_send_ns = partial
                .first_send_ns
                .into_iter()
                .chain(stats.first_send_ns)
                .min();
            partial.errors.merge(&stats.errors);
            partial.oddities.merge(&stats.oddities);
        }
        for task in subscriber_tasks {
            let stats = join_within(task, join_limit, "subscriber").await?;
            if stats.subscribed {
                partial.subscribers_ready += 1;
                partial.received_by_topic.note(stats.topic, stats.received);
            }
            partial.received += stats.received;
            partial.warmup_deliveries += stats.warmup;
            if let Some(latency) = &stats.latency {
                partial.latency.merge(&latency.0);
            }
            partial.last_delivery_ns = partial.last_delivery_ns.max(stats.last_delivery_ns);
            partial.errors.merge(&stats.errors);
            partial.oddities.merge(&stats.oddities);
        }
        Ok(partial)
    }

    /// The parent side: node readings around the run, then the report.
    async fn conduct(&self, conductor: &mut Conductor) -> anyhow::Result<FanoutReport> {
        let plan = self;
        let traffic = &plan.traffic;
        traffic.validate()?;
        let mut nodes = NodeWatch::new(&traffic.nodes);
        let start = start_phase(
            conductor,
            &mut nodes,
            traffic.connect.setup_timeout,
            "publishing",
        )
        .await?;
        let end = start + traffic.warmup() + traffic.duration;
        let deadline = end + traffic.grace + JOIN_SLACK * 2;
        // The end readings come when publishing ends, before connections close;
        // after a burst, once it is all delivered.
        let readings_at = traffic.burst.is_none().then_some(end);
        let (total, timeline) =
            collect::<FanoutPartial>(conductor, &mut nodes, readings_at, deadline).await?;
        let nodes = nodes.report(total.subscribers_ready + total.publishers_ready);
        Ok(FanoutReport::new(
            plan,
            total,
            nodes,
            timeline,
            conductor.processes(),
        ))
    }
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutSettings {
    pub(crate) pub_urls: Vec<String>,
    pub(crate) sub_urls: Vec<String>,
    pub(crate) protocol: Protocol,
    pub(crate) subscribers: u32,
    pub(crate) topics: u32,
    pub(crate) publishers: u32,
    /// Target publishes per second, all publishers together (rate mode).
    pub(crate) rate: Option<f64>,
    /// Publications of the burst (burst mode).
    pub(crate) burst: Option<u64>,
    pub(crate) payload_bytes: usize,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) grace_s: f64,
    pub(crate) workers: usize,
}

/// The result of a `fanout` or `cross-node` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutReport {
    pub(crate) scenario: &'static str,
    pub(crate) settings: FanoutSettings,
    pub(crate) subscribers_ready: u64,
    pub(crate) publishers_ready: u64,
    /// Time to connect and subscribe everybody (slowest worker).
    pub(crate) setup_s: f64,
    /// Publications measured (stamped inside the window; every one of a burst).
    pub(crate) publishes: u64,
    pub(crate) publishes_per_s: f64,
    /// Deliveries of those publications that arrived before the end.
    pub(crate) received: u64,
    /// Rate mode: received / window length. Burst mode: received / time from
    /// the first send to the last delivery.
    pub(crate) deliveries_per_s: f64,
    /// Burst mode: time from the first send to the last delivery.
    pub(crate) burst_s: Option<f64>,
    /// Deliveries owed: each publication times the subscribers of its topic.
    pub(crate) expected: u64,
    /// Owed deliveries that did not arrive.
    pub(crate) lost: u64,
    /// received − expected, when positive (duplicates).
    pub(crate) extra: u64,
    /// Subscribers that received fewer deliveries than they were owed.
    pub(crate) subscribers_with_losses: u64,
    /// Publish → delivery latency of the received deliveries.
    pub(crate) latency: LatencySummary,
    /// Deliveries of warmup publications (not measured).
    pub(crate) warmup_deliveries: u64,
    #[serde(flatten)]
    pub(crate) trouble: Trouble,
    pub(crate) nodes: NodesReport,
    /// Per-second counts over the run.
    pub(crate) timeline: Timeline,
    #[serde(skip)]
    latency_histogram: Latencies,
}

impl FanoutReport {
    fn new(
        plan: &Plan,
        total: FanoutPartial,
        nodes: NodesReport,
        timeline: Timeline,
        workers: usize,
    ) -> Self {
        let traffic = &plan.traffic;
        let subscribers_per_topic = total.received_by_topic.subscribers_per_topic();
        let expected = expected_deliveries(&subscribers_per_topic, &total.published);
        let (subscribers_with_losses, lost) = total.received_by_topic.shortfall(&total.published);
        let publishes: u64 = total.published.iter().sum();
        let window_s = traffic.duration.as_secs_f64();
        let burst_s = traffic.burst.map(|_| {
            total
                .first_send_ns
                .zip(total.last_delivery_ns)
                .map_or(0.0, |(first, last)| last.saturating_sub(first) as f64 / 1e9)
        });
        let seconds = burst_s.unwrap_or(window_s);
        Self {
            scenario: plan.scenario,
            settings: FanoutSettings {
                pub_urls: plan.pub_urls.clone(),
                sub_urls: plan.sub_urls.clone(),
                protocol: traffic.connect.protocol,
                subscribers: traffic.subscribers,
                topics: traffic.topics,
                publishers: traffic.publishers,
                rate: traffic.burst.is_none().then_some(traffic.rate),
                burst: traffic.burst,
                payload_bytes: traffic.payload_bytes,
                duration_s: window_s,
                warmup_s: traffic.warmup().as_secs_f64(),
                grace_s: traffic.grace.as_secs_f64(),
                workers,
            },
            subscribers_ready: total.subscribers_ready,
            publishers_ready: total.publishers_ready,
            setup_s: total.setup_s,
            publishes,
            publishes_per_s: per_second(publishes, seconds),
            received: total.received,
            deliveries_per_s: per_second(total.received, seconds),
            burst_s,
            expected,
            lost,
            extra: total.received.saturating_sub(expected),
            subscribers_with_losses,
            latency: total.latency.summary(),
            trouble: Trouble::new(total.errors, total.oddities),
            warmup_deliveries: total.warmup_deliveries,
            nodes,
            timeline,
            latency_histogram: total.latency,
        }
    }

    fn headline(&self) -> String {
        format!(
            "{} subscribers, {} topics, {:.0} deliveries/s, p99 {:.2} ms",
            self.settings.subscribers,
            self.settings.topics,
            self.deliveries_per_s,
            self.latency.p99_ms
        )
    }
}

impl ScenarioReport for FanoutReport {
    fn table(&self) -> Table {
        let s = &self.settings;
        let mut table = Table::default();
        let load = match (s.burst, s.rate) {
            (Some(burst), _) => format!("a burst of {burst}"),
            (None, rate) => format!("{} publishes/s", rate.unwrap_or(0.0)),
        };
        table.heading(format!(
            "{}: {} subscribers on {} topic(s), {} publisher(s) sending {load}, {}-byte payload, {}, {} worker process(es)",
            self.scenario, s.subscribers, s.topics, s.publishers, s.payload_bytes, s.protocol, s.workers
        ));
        table.heading(match self.burst_s {
            Some(burst_s) => format!(
                "burst took {burst_s:.3} s from first send to last delivery; setup took {:.1} s",
                self.setup_s
            ),
            None => format!(
                "measured {:.1} s after {:.1} s of warmup, then {:.1} s of grace; setup took {:.1} s",
                s.duration_s, s.warmup_s, s.grace_s, self.setup_s
            ),
        });
        table
            .row(
                "connections ready",
                format!(
                    "{} subscribers, {} publishers",
                    self.subscribers_ready, self.publishers_ready
                ),
            )
            .row("publishes/s", format!("{:.1}", self.publishes_per_s))
            .row("deliveries/s", format!("{:.1}", self.deliveries_per_s))
            .latency("latency", &self.latency)
            .row("publishes (measured)", self.publishes)
            .row("deliveries expected", self.expected)
            .row("deliveries received", self.received)
            .row(
                "deliveries lost",
                format!(
                    "{} ({:.4} %), {} subscriber(s) affected",
                    self.lost,
                    percent(self.lost, self.expected),
                    self.subscribers_with_losses
                ),
            )
            .row("deliveries extra", self.extra)
            .rows(self.trouble.rows())
            .rows(self.nodes.rows());
        table
    }

    fn chart(&self) -> Chart<'_> {
        Chart {
            title: format!("ferrocast {}: {}", self.scenario, self.headline()),
            latency: Some(("publish → delivery", &self.latency_histogram.0)),
            timeline: &self.timeline,
            series: vec![
                Series {
                    label: "deliveries/s",
                    value: |c| c.delivered,
                },
                Series {
                    label: "publishes/s",
                    value: |c| c.published,
                },
            ],
        }
    }
}
