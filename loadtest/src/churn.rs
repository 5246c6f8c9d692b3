//! The `churn` scenario: connections that connect, subscribe, stay a short
//! random time and leave, started at a target rate for a duration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, timeout_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounting::{publishes_due, subscriber_topic};
use crate::chart::{Chart, Series};
use crate::client::{ConnectArgs, Dialer, Ending, Protocol, Target};
use crate::coord::{Conductor, Phase, WorkerLink, JOIN_SLACK};
use crate::host::{NodeArgs, NodeWatch, NodesReport};
use crate::latency::{Latencies, LatencySummary};
use crate::progress::{LiveCounters, Timeline};
use crate::report::{per_second, ConnectionErrors, Oddities, Table, Trouble};
use crate::scenario::{collect, start_phase, Partial, Scenario, ScenarioReport};
use crate::wire::topic_name;

pub(crate) const ABOUT: &str = "\
Churn: connections that connect, subscribe, stay a short random time (between
--hold-min and --hold-max) and close, started at --rate per second for
--duration. Measures the rate achieved, connect and subscribe latency, and
errors. Each cycle's connect + subscribe must finish within --setup-timeout.

At most --max-open cycles are open at once per process (by default what the
open-files limit allows); a cycle due while that many are open is skipped and
counted.

Example:
  ferrocast-loadtest churn --url ws://127.0.0.1:8080/ws --rate 2000 \\
      --duration 10s --hold-min 100ms --hold-max 1s";

/// Options of the `churn` scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChurnArgs {
    /// WebSocket URL of a node's public listener. Repeat to spread the
    /// connections round-robin over several nodes.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub(crate) urls: Vec<String>,

    /// Connections started per second, all processes together.
    #[arg(long, value_name = "R", default_value_t = 100.0)]
    pub(crate) rate: f64,

    /// How long new connections are started.
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Shortest time a connection stays subscribed.
    #[arg(long, value_name = "DURATION", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub(crate) hold_min: Duration,

    /// Longest time a connection stays subscribed.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = humantime::parse_duration)]
    pub(crate) hold_max: Duration,

    /// Topics the connections subscribe to, in turn.
    #[arg(long, value_name = "T", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: u32,

    /// Cycles open at once per process. [default: the open-files limit less a reserve]
    #[arg(long, value_name = "N")]
    pub(crate) max_open: Option<u32>,

    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    #[command(flatten)]
    pub(crate) nodes: NodeArgs,
}

impl ChurnArgs {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be a finite number > 0"
        );
        ensure!(
            self.hold_min <= self.hold_max,
            "--hold-min is above --hold-max"
        );
        Ok(())
    }
}

/// What one worker measured; adds up across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ChurnPartial {
    /// Cycles begun.
    started: u64,
    /// Cycles that connected, subscribed, held and closed without error.
    completed: u64,
    /// Cycles not begun because too many were open.
    skipped: u64,
    /// TCP + WebSocket (+ STOMP CONNECT) time.
    connect_latency: Latencies,
    /// Subscribe request → reply.
    subscribe_latency: Latencies,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl Partial for ChurnPartial {
    fn merge(&mut self, other: &Self) {
        self.started += other.started;
        self.completed += other.completed;
        self.skipped += other.skipped;
        self.connect_latency.merge(&other.connect_latency.0);
        self.subscribe_latency.merge(&other.subscribe_latency.0);
        self.errors.merge(&other.errors);
        self.oddities.merge(&other.oddities);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn lock(partial: &Mutex<ChurnPartial>) -> std::sync::MutexGuard<'_, ChurnPartial> {
    // A cycle never panics while holding the lock; recover the data if one did.
    partial
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A uniformly random duration in `[min, max]`.
fn random_between(min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    let span = micros(max - min);
    min + Duration::from_micros(rand::random_range(0..=span))
}

/// One connect–subscribe–hold–close cycle.
#[derive(Debug)]
struct Cycle {
    dialer: Arc<Dialer>,
    target: Target,
    n: usize,
    topic: String,
    hold: Duration,
    setup_timeout: Duration,
    stop: CancellationToken,
    live: Arc<LiveCounters>,
}

/// What a cycle measured.
#[derive(Debug, Default)]
struct CycleOutcome {
    connect: Option<Duration>,
    subscribe: Option<Duration>,
    completed: bool,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl CycleOutcome {
    fn add_to(self, partial: &mut ChurnPartial) {
        partial.started += 1;
        partial.completed += u64::from(self.completed);
        if let Some(connect) = self.connect {
            partial.connect_latency.record(micros(connect));
        }
        if let Some(subscribe) = self.subscribe {
            partial.subscribe_latency.record(micros(subscribe));
        }
        partial.errors.merge(&self.errors);
        partial.oddities.merge(&self.oddities);
    }
}

impl Cycle {
    async fn run(self) -> CycleOutcome {
        let mut outcome = CycleOutcome::default();
        let deadline = Instant::now() + self.setup_timeout;
        let began = Instant::now();
        let opened = timeout_at(deadline, self.dialer.open(&self.target, self.n))
            .await
            .unwrap_or(Err(crate::client::SetupError::Timeout));
        let mut conn = match opened {
            Ok(conn) => conn,
            Err(error) => return self.failed(outcome, error),
        };
        outcome.connect = Some(began.elapsed());
        let subscribing = Instant::now();
        let subscribed = timeout_at(
            deadline,
            conn.subscribe(&self.topic, None, |event| outcome.oddities.note(event)),
        )
        .await
        .unwrap_or(Err(crate::client::SetupError::Timeout));
        if let Err(error) = subscribed {
            conn.close(Ending::Done).await;
            return self.failed(outcome, error);
        }
        outcome.subscribe = Some(subscribing.elapsed());
        LiveCounters::add(&self.live.ready, 1);
        let leave = sleep_until(Instant::now() + self.hold);
        let stop = self.stop.cancelled();
        let until = async {
            tokio::select! {
                () = stop => {}
                () = leave => {}
            }
        };
        let ending = conn
            .read_until(until, |event| outcome.oddities.note(event))
            .await;
        outcome.completed = ending == Ending::Done;
        conn.finish(ending, &mut outcome.errors, &self.live).await;
        outcome
    }

    fn failed(&self, mut outcome: CycleOutcome, error: crate::client::SetupError) -> CycleOutcome {
        outcome.errors.count_setup(error);
        LiveCounters::add(&self.live.errors, 1);
        outcome
    }
}

impl Scenario for ChurnArgs {
    type Partial = ChurnPartial;
    type Report = ChurnReport;

    fn connections(&self) -> u64 {
        0
    }

    fn time_limit(&self) -> Duration {
        self.duration + self.connect.setup_timeout + self.hold_max + JOIN_SLACK
    }

    /// The client side, in one worker.
    async fn work(self, mut link: WorkerLink) -> anyhow::Result<ChurnPartial> {
        let args = self;
        args.validate()?;
        let targets = Arc::new(Target::resolve_all(&args.urls).await?);
        let share = link.share;
        let dialer = Arc::new(args.connect.dialer(share));
        let max_open = args.max_open.map_or(link.max_connections, u64::from);
        let open_slots = Arc::new(Semaphore::new(
            usize::try_from(max_open).unwrap_or(usize::MAX),
        ));
        let partial = Arc::new(Mutex::new(ChurnPartial::default()));
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();

        let start = link.reached(Phase::Ready).await?.instant;
        let end = start + args.duration;
        let rate = share.part(args.rate);
        let period = Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1));
        let mut ticks = tokio::time::interval_at(start, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut begun = 0u64;
        loop {
            tokio::select! {
                () = sleep_until(end) => break,
                _ = ticks.tick() => {}
            }
            let due = publishes_due(Instant::now().saturating_duration_since(start), rate);
            while begun < due {
                // Numbered across workers so that topics and addresses spread.
                let n = usize::try_from(begun).unwrap_or(0) * share.count + share.index;
                begun += 1;
                let Ok(slot) = open_slots.clone().try_acquire_owned() else {
                    lock(&partial).skipped += 1;
                    continue;
                };
                let hold = random_between(args.hold_min, args.hold_max);
                let cycle = Cycle {
                    dialer: dialer.clone(),
                    target: targets[n % targets.len()].clone(),
                    n,
                    topic: topic_name(subscriber_topic(n, args.topics as usize)),
                    hold,
                    setup_timeout: args.connect.setup_timeout,
                    stop: stop.clone(),
                    live: link.live.clone(),
                };
                let partial = partial.clone();
                tracker.spawn(async move {
                    let outcome = cycle.run().await;
                    outcome.add_to(&mut lock(&partial));
                    drop(slot);
                });
            }
        }
        tracker.close();
        // Cycles under way finish their hold; stragglers are stopped.
        let limit = Instant::now() + args.connect.setup_timeout.min(JOIN_SLACK) + args.hold_max;
        if timeout_at(limit, tracker.wait()).await.is_err() {
            stop.cancel();
            let _ = timeout_at(Instant::now() + JOIN_SLACK, tracker.wait()).await;
        }
        let total = std::mem::take(&mut *lock(&partial));
        Ok(total)
    }

    /// The parent side.
    async fn conduct(&self, conductor: &mut Conductor) -> anyhow::Result<ChurnReport> {
        let args = self;
        args.validate()?;
        let mut nodes = NodeWatch::new(&args.nodes);
        // Nothing to set up before the go: cycles connect as they start.
        let start = start_phase(conductor, &mut nodes, JOIN_SLACK, "churning").await?;
        let (total, timeline) = collect::<ChurnPartial>(
            conductor,
            &mut nodes,
            Some(start + args.duration),
            start + args.time_limit() + JOIN_SLACK,
        )
        .await?;
        Ok(ChurnReport::new(
            args,
            total,
            nodes.report(0),
            timeline,
            conductor.processes(),
        ))
    }
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChurnSettings {
    pub(crate) urls: Vec<String>,
    pub(crate) protocol: Protocol,
    /// Target cycles started per second.
    pub(crate) rate: f64,
    pub(crate) duration_s: f64,
    pub(crate) hold_min_s: f64,
    pub(crate) hold_max_s: f64,
    pub(crate) workers: usize,
}

/// The result of a `churn` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChurnReport {
    pub(crate) scenario: &'static str,
    pub(crate) settings: ChurnSettings,
    pub(crate) started: u64,
    /// started / duration.
    pub(crate) started_per_s: f64,
    /// Cycles that connected, subscribed, held and closed without error.
    pub(crate) completed: u64,
    /// Connects + subscribes that succeeded, per second of the run.
    pub(crate) subscribes_per_s: f64,
    pub(crate) skipped: u64,
    pub(crate) connect_latency: LatencySummary,
    pub(crate) subscribe_latency: LatencySummary,
    #[serde(flatten)]
    pub(crate) trouble: Trouble,
    pub(crate) nodes: NodesReport,
    pub(crate) timeline: Timeline,
    #[serde(skip)]
    connect_histogram: Latencies,
}

impl ChurnReport {
    fn new(
        args: &ChurnArgs,
        total: ChurnPartial,
        nodes: NodesReport,
        timeline: Timeline,
        workers: usize,
    ) -> Self {
        let seconds = args.duration.as_secs_f64();
        Self {
            scenario: "churn",
            settings: ChurnSettings {
                urls: args.urls.clone(),
                protocol: args.connect.protocol,
                rate: args.rate,
                duration_s: seconds,
                hold_min_s: args.hold_min.as_secs_f64(),
                hold_max_s: args.hold_max.as_secs_f64(),
                workers,
            },
            started: total.started,
            started_per_s: per_second(total.started, seconds),
            completed: total.completed,
            subscribes_per_s: per_second(total.subscribe_latency.0.len(), seconds),
            skipped: total.skipped,
            connect_latency: total.connect_latency.summary(),
            subscribe_latency: total.subscribe_latency.summary(),
            trouble: Trouble::new(total.errors, total.oddities),
            nodes,
            timeline,
            connect_histogram: total.connect_latency,
        }
    }
}

impl ScenarioReport for ChurnReport {
    fn table(&self) -> Table {
        let s = &self.settings;
        let mut table = Table::default();
        table.heading(format!(
            "churn: {} connections/s for {:.1} s, held {:.2}–{:.2} s, {}, over {} URL(s), {} worker process(es)",
            s.rate, s.duration_s, s.hold_min_s, s.hold_max_s, s.protocol, s.urls.len(), s.workers
        ));
        table
            .row(
                "cycles started",
                format!("{} ({:.1}/s)", self.started, self.started_per_s),
            )
            .row(
                "connects+subscribes/s",
                format!("{:.1}", self.subscribes_per_s),
            )
            .row("cycles completed", self.completed)
            .row("cycles skipped (too many open)", self.skipped)
            .latency("connect", &self.connect_latency)
            .latency("subscribe", &self.subscribe_latency)
            .rows(self.trouble.rows())
            .rows(self.nodes.rows());
        table
    }

    fn chart(&self) -> Chart<'_> {
        Chart {
            title: format!(
                "ferrocast churn: {:.0} connects+subscribes/s, connect p99 {:.2} ms",
                self.subscribes_per_s, self.connect_latency.p99_ms
            ),
            latency: Some(("connect", &self.connect_histogram.0)),
            timeline: &self.timeline,
            series: vec![
                Series {
                    label: "subscribed/s",
                    value: |c| c.ready,
                },
                Series {
                    label: "errors/s",
                    value: |c| c.errors,
                },
            ],
        }
    }
}
