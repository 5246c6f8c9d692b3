//! The `soak` scenario: many short connect–subscribe–publish–disconnect
//! cycles against one node, and whether the node gives back what they took.
//!
//! A leak per connection is too small to see in one short run (a few hundred
//! bytes, one file descriptor, one task) and too costly to find in
//! production. Here each cycle opens a connection, subscribes to a topic,
//! publishes one publication there, waits for its own delivery and closes; a
//! bounded number of cycles run at once. The node is read twice while no
//! client is connected: once after a warm-up (allocator pools, buffers and
//! maps have reached their working size), once after the last cycle. What
//! the run passes on:
//!
//! - resident memory at the end within `--rss-tolerance` (5 %) of the reading
//!   after the warm-up;
//! - no more open file descriptors than after the warm-up;
//! - nothing the node counts per connection left over: its
//!   `ferrocast_connections`, `ferrocast_subscriptions` and `ferrocast_topics`
//!   back at zero, as many connections closed as opened, and no more
//!   `ferrocast_runtime_tasks` than after the warm-up;
//! - every cycle completed, its own publication delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::accounting::subscriber_topic;
use crate::chart::{Chart, Series};
use crate::client::{ConnectArgs, Dialer, Ending, Protocol, SetupError, Target};
use crate::coord::{Conductor, Phase, WorkerLink, JOIN_SLACK};
use crate::host::{http_get, metric_sum, resident_kib};
use crate::latency::{Latencies, LatencySummary};
use crate::progress::{unix_nanos, LiveCounters, Timeline};
use crate::report::{per_second, ConnectionErrors, Oddities, Table, Trouble};
use crate::scenario::{merged, Partial, Scenario, ScenarioReport, START_LEAD};
use crate::wire::{topic_name, ServerEvent};

pub(crate) const ABOUT: &str = "\
Soak: --cycles connect/subscribe/publish/disconnect cycles against one node,
--concurrency of them at once (all processes together), bounded by
--time-limit. Each cycle opens a connection, subscribes to one of --topics
topics, publishes one publication there, waits for its own delivery and
closes.

The node (--node-pid and its --node-metrics URL) is read while no client is
connected: after --warmup-cycles cycles, and after the last cycle. The run
passes when resident memory at the end is within --rss-tolerance percent of
the reading after the warm-up, the node has no more open file descriptors,
its connection, subscription and topic gauges are back at zero, and every
cycle completed.

Example:
  ferrocast-loadtest soak --url ws://127.0.0.1:8080/ws --cycles 1000000 \\
      --node-pid $NODE --node-metrics http://127.0.0.1:8081/metrics";

/// Longest wait for the node to close every connection of the tool before
/// it is read: a closing handshake still in flight is not a leak.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// Quiet time between the node reporting no connection and the reading, for
/// work the node finishes after a close (backplane unsubscribes, timers).
const SETTLE_QUIET: Duration = Duration::from_secs(1);
/// How often the node's resident memory is sampled during the run.
const RSS_EVERY: Duration = Duration::from_secs(10);

/// Options of the `soak` scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct SoakArgs {
    /// WebSocket URL of the node's public listener.
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) url: String,

    /// Cycles measured after the warm-up, all processes together.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) cycles: u64,

    /// Cycles run before the reading the end is compared with: enough for
    /// the node's allocator to settle at the concurrency's working size
    /// (20,000 were too few for a node doing 15,000 cycles/s).
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub(crate) warmup_cycles: u64,

    /// Cycles under way at once, all processes together.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: u32,

    /// Topics the cycles subscribe and publish to, in turn.
    #[arg(long, value_name = "T", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: u32,

    /// Size of each publication's data in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub(crate) payload_bytes: usize,

    /// Longest time the cycles may take, warm-up included; cycles not started
    /// by then are reported as not run.
    #[arg(long, value_name = "DURATION", default_value = "30m",
          value_parser = humantime::parse_duration)]
    pub(crate) time_limit: Duration,

    /// Largest growth of the node's resident memory from after the warm-up to
    /// the end that passes, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    pub(crate) rss_tolerance: f64,

    /// Process id of the node: resident memory, open file descriptors and
    /// threads are read from /proc/<PID>.
    #[arg(long, value_name = "PID")]
    pub(crate) node_pid: u32,

    /// The node's metrics URL (http://127.0.0.1:8081/metrics): its
    /// connection, subscription and topic gauges.
    #[arg(long, value_name = "URL")]
    pub(crate) node_metrics: String,

    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

impl SoakArgs {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.rss_tolerance.is_finite() && self.rss_tolerance >= 0.0,
            "--rss-tolerance must be a finite number ≥ 0"
        );
        ensure!(
            self.cycles > 0 || self.warmup_cycles > 0,
            "nothing to run: --cycles and --warmup-cycles are 0"
        );
        Ok(())
    }

    /// A cycle's connect, subscribe, publish and delivery must finish within
    /// this.
    fn cycle_timeout(&self) -> Duration {
        self.connect.setup_timeout
    }
}

/// The cycles of one phase of one worker; adds up across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Cycles {
    started: u64,
    /// Connected, subscribed, got its own publication and closed normally.
    completed: u64,
    /// Subscribed and published, but its own publication did not arrive
    /// within the cycle timeout.
    undelivered: u64,
    /// Not started because the time limit was reached.
    not_run: u64,
    /// Connect → own delivery, per completed cycle.
    latency: Latencies,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl Cycles {
    fn merge(&mut self, other: &Self) {
        self.started += other.started;
        self.completed += other.completed;
        self.undelivered += other.undelivered;
        self.not_run += other.not_run;
        self.latency.merge(&other.latency.0);
        self.errors.merge(&other.errors);
        self.oddities.merge(&other.oddities);
    }
}

/// What one worker measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SoakPartial {
    warmup: Cycles,
    measured: Cycles,
}

impl Partial for SoakPartial {
    fn merge(&mut self, other: &Self) {
        self.warmup.merge(&other.warmup);
        self.measured.merge(&other.measured);
    }
}

/// What every cycle of a worker shares.
#[derive(Debug)]
struct Bench {
    dialer: Dialer,
    /// Handshakes at once (`--connect-concurrency`).
    connect_slots: Semaphore,
    target: Target,
    topics: usize,
    payload_bytes: usize,
    cycle_timeout: Duration,
    live: Arc<LiveCounters>,
}

impl Bench {
    /// Cycle number `n`: connect, subscribe, publish, await the own delivery,
    /// close. Counted into `cycles`.
    async fn cycle(&self, n: u64, cycles: &mut Cycles) {
        cycles.started += 1;
        let began = Instant::now();
        let deadline = began + self.cycle_timeout;
        let index = usize::try_from(n).unwrap_or(usize::MAX);
        let topic = topic_name(subscriber_topic(index, self.topics));
        let oddities = &mut cycles.oddities;
        let opened = match timeout_at(deadline, self.connect_slots.acquire()).await {
            Ok(Ok(_slot)) => {
                self.dialer
                    .open_and_subscribe(&self.target, index, &topic, None, deadline, |event| {
                        // Other cycles' publications on the topic may come
                        // before the reply.
                        if !matches!(event, ServerEvent::Delivery { .. }) {
                            oddities.note(event);
                        }
                    })
                    .await
            }
            _ => Err(SetupError::Timeout),
        };
        let mut conn = match opened {
            Ok((conn, _)) => conn,
            Err(error) => {
                cycles.errors.count_setup(error);
                LiveCounters::add(&self.live.errors, 1);
                return;
            }
        };
        LiveCounters::add(&self.live.ready, 1);
        let published = async {
            conn.feed_publish(&topic, unix_nanos(), n, self.payload_bytes)
                .await?;
            conn.flush().await
        };
        if timeout_at(deadline, published)
            .await
            .map_or(true, |sent| sent.is_err())
        {
            cycles.errors.count_setup(SetupError::Timeout);
            LiveCounters::add(&self.live.errors, 1);
            conn.close(Ending::Dropped).await;
            return;
        }
        LiveCounters::add(&self.live.published, 1);
        // Others' publications on the same topic arrive too; only this
        // cycle's own one ends the wait.
        let mut own = false;
        let ending = loop {
            if own {
                break Ending::Done;
            }
            let next = timeout_at(
                deadline,
                conn.recv(|event| match event {
                    ServerEvent::Delivery { seq, .. } if seq == n => own = true,
                    ServerEvent::Delivery { .. } => {}
                    other => cycles.oddities.note(other),
                }),
            )
            .await;
            match next {
                Ok(Ok(())) => {}
                Ok(Err(ending)) => break ending,
                // Still connected; the publication never came.
                Err(_) => break Ending::Done,
            }
        };
        if own {
            cycles.completed += 1;
            cycles
                .latency
                .record(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
            LiveCounters::add(&self.live.delivered, 1);
        } else if ending == Ending::Done {
            cycles.undelivered += 1;
            LiveCounters::add(&self.live.errors, 1);
        } else {
            LiveCounters::add(&self.live.errors, 1);
        }
        cycles.errors.count_ending(ending);
        conn.close(ending).await;
    }
}

/// Runs cycles `numbers` with `concurrency` at once; none starts after
/// `deadline`.
async fn run_cycles(
    bench: &Arc<Bench>,
    numbers: std::ops::Range<u64>,
    concurrency: usize,
    deadline: Instant,
) -> Cycles {
    let next = Arc::new(AtomicU64::new(numbers.start));
    let end = numbers.end;
    let runners: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (bench, next) = (bench.clone(), next.clone());
            tokio::spawn(async move {
                let mut cycles = Cycles::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        break;
                    }
                    if Instant::now() >= deadline {
                        // The rest of the range, counted once: later
                        // runners find nothing left.
                        let rest = next.swap(end, Ordering::Relaxed).max(n);
                        cycles.not_run += end.saturating_sub(rest) + 1;
                        break;
                    }
                    bench.cycle(n, &mut cycles).await;
                }
                cycles
            })
        })
        .collect();
    let mut total = Cycles::default();
    for runner in runners {
        // A cycle never panics; a runner that did loses only its counts.
        if let Ok(cycles) = runner.await {
            total.merge(&cycles);
        }
    }
    total
}

/// Cycle numbers `0..total` of this worker's share.
fn share_of(link: &WorkerLink, total: u64) -> std::ops::Range<u64> {
    let range = link
        .share
        .range(usize::try_from(total).unwrap_or(usize::MAX));
    range.start as u64..range.end as u64
}

impl Scenario for SoakArgs {
    type Partial = SoakPartial;
    type Report = SoakReport;

    fn connections(&self) -> u64 {
        u64::from(self.concurrency)
    }

    fn time_limit(&self) -> Duration {
        // Both phases, the cycles under way at the deadline, the readings.
        self.time_limit + self.cycle_timeout() * 2 + (SETTLE_LIMIT + JOIN_SLACK) * 2
    }

    async fn work(self, mut link: WorkerLink) -> anyhow::Result<SoakPartial> {
        let args = self;
        args.validate()?;
        let share = link.share;
        let bench = Arc::new(Bench {
            dialer: args.connect.dialer(share),
            connect_slots: Semaphore::new(args.connect.connect_concurrency as usize),
            target: Target::resolve(&args.url).await?,
            topics: args.topics as usize,
            payload_bytes: args.payload_bytes,
            cycle_timeout: args.cycle_timeout(),
            live: link.live.clone(),
        });
        // This worker's part of the concurrency: the parts add up to it.
        let concurrency = share.range(args.concurrency as usize).len();

        let start = link.reached(Phase::Ready).await?.instant;
        sleep_until(start).await;
        let deadline = start + args.time_limit;
        let warmup = run_cycles(
            &bench,
            share_of(&link, args.warmup_cycles),
            concurrency,
            deadline,
        )
        .await;
        let measured_start = link.reached(Phase::WarmedUp).await?.instant;
        sleep_until(measured_start).await;
        let numbers = share_of(&link, args.cycles);
        // Numbered after the warm-up's, so that no two cycles share a number.
        let numbers = numbers.start + args.warmup_cycles..numbers.end + args.warmup_cycles;
        let measured = run_cycles(&bench, numbers, concurrency, deadline).await;
        Ok(SoakPartial { warmup, measured })
    }

    async fn conduct(&self, conductor: &mut Conductor) -> anyhow::Result<SoakReport> {
        let args = self;
        args.validate()?;
        let node = NodeProbe {
            pid: args.node_pid,
            metrics: args.node_metrics.clone(),
        };
        let before = node.read().await;
        ensure!(
            before.rss_kib.is_some(),
            "cannot read /proc/{}/status: is the node running on this machine?",
            args.node_pid
        );
        ensure!(
            before.connections.is_some(),
            "{} has no ferrocast_build_info: is it the node's metrics URL?",
            args.node_metrics
        );
        let limit = args.time_limit();
        conductor.status.set_phase("connecting");
        conductor
            .barrier(Phase::Ready, Instant::now() + JOIN_SLACK)
            .await?;
        let start = Instant::now() + START_LEAD;
        conductor.go(start).await?;
        conductor.status.set_phase("warming up");
        conductor
            .barrier(
                Phase::WarmedUp,
                start + args.time_limit + args.cycle_timeout() * 2 + JOIN_SLACK,
            )
            .await?;
        let warm = node.settled().await;
        let measured_start = Instant::now() + START_LEAD;
        conductor.go(measured_start).await?;
        conductor.status.set_phase("soaking");

        let mut rss = vec![RssSample {
            after_s: 0.0,
            rss_kib: warm.rss_kib,
        }];
        let (results, ()) = {
            let sampling = async {
                loop {
                    sleep(RSS_EVERY).await;
                    rss.push(RssSample {
                        after_s: measured_start.elapsed().as_secs_f64(),
                        rss_kib: resident_kib(node.pid),
                    });
                }
            };
            tokio::select! {
                results = conductor.results::<SoakPartial>(start + limit) => (results, ()),
                () = sampling => unreachable!("the sampling loop never ends"),
            }
        };
        let measured_s = measured_start.elapsed().as_secs_f64();
        let (partials, timeline) = results?;
        let total = merged(&partials);
        conductor.status.set_phase("reading the node");
        let end = node.settled().await;
        rss.push(RssSample {
            after_s: measured_start.elapsed().as_secs_f64(),
            rss_kib: end.rss_kib,
        });
        Ok(SoakReport::new(
            args,
            total,
            measured_s,
            NodeReadings { before, warm, end },
            rss,
            timeline,
            conductor.processes(),
        ))
    }
}

/// Where the node's figures come from.
#[derive(Debug, Clone)]
struct NodeProbe {
    pid: u32,
    metrics: String,
}

/// One reading of the node; `None` where it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct NodeReading {
    pub(crate) rss_kib: Option<u64>,
    /// Entries of /proc/<pid>/fd.
    pub(crate) open_fds: Option<u64>,
    /// `Threads:` of /proc/<pid>/status.
    pub(crate) threads: Option<u64>,
    /// Σ `ferrocast_connections` over its protocols.
    pub(crate) connections: Option<f64>,
    pub(crate) subscriptions: Option<f64>,
    pub(crate) topics: Option<f64>,
    pub(crate) connections_opened: Option<f64>,
    /// Σ `ferrocast_connections_closed_total` over its reasons.
    pub(crate) connections_closed: Option<f64>,
    /// `ferrocast_runtime_tasks`: tasks alive in the node's runtime (0 on a
    /// node that does not export it).
    pub(crate) runtime_tasks: Option<f64>,
}

impl NodeProbe {
    async fn read(&self) -> NodeReading {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok();
        let open_fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()
            .map(|entries| entries.count() as u64);
        // A node exports a series only once it has been set, so on a node's
        // exposition (it always has `ferrocast_build_info`) a missing one is 0.
        let text = http_get(&self.metrics)
            .await
            .ok()
            .filter(|text| metric_sum(text, "ferrocast_build_info").is_some());
        let gauge = |name: &str| {
            text.as_deref()
                .map(|text| metric_sum(text, name).unwrap_or(0.0))
        };
        NodeReading {
            rss_kib: resident_kib(self.pid),
            open_fds,
            threads: status.as_deref().and_then(parse_threads),
            connections: gauge("ferrocast_connections"),
            subscriptions: gauge("ferrocast_subscriptions"),
            topics: gauge("ferrocast_topics"),
            connections_opened: gauge("ferrocast_connections_opened_total"),
            connections_closed: gauge("ferrocast_connections_closed_total"),
            runtime_tasks: gauge("ferrocast_runtime_tasks"),
        }
    }

    /// A reading once the node reports no open connection (or after
    /// [`SETTLE_LIMIT`]) and a quiet second more.
    async fn settled(&self) -> NodeReading {
        let limit = Instant::now() + SETTLE_LIMIT;
        while Instant::now() < limit {
            let reading = self.read().await;
            if reading.connections == Some(0.0) && reading.subscriptions == Some(0.0) {
                break;
            }
            sleep(Duration::from_millis(200)).await;
        }
        sleep(SETTLE_QUIET).await;
        self.read().await
    }
}

/// The `Threads:` line of a `/proc/<pid>/status` file.
fn parse_threads(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The node before the run, after the warm-up and at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct NodeReadings {
    pub(crate) before: NodeReading,
    pub(crate) warm: NodeReading,
    pub(crate) end: NodeReading,
}

/// The node's resident memory during the measured cycles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RssSample {
    /// Seconds since the measured cycles began.
    pub(crate) after_s: f64,
    pub(crate) rss_kib: Option<u64>,
}

/// Each criterion of the run and whether it held; `None` when the node could
/// not be read for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Verdict {
    /// End RSS − RSS after the warm-up, in % of the latter.
    pub(crate) rss_growth_percent: Option<f64>,
    pub(crate) rss_ok: Option<bool>,
    /// End open file descriptors − those after the warm-up.
    pub(crate) fds_leaked: Option<i64>,
    pub(crate) fds_ok: Option<bool>,
    /// Connections, subscriptions and topics the node still counts at the
    /// end, and connections opened but not closed.
    pub(crate) connections_left: Option<f64>,
    pub(crate) subscriptions_left: Option<f64>,
    pub(crate) topics_left: Option<f64>,
    pub(crate) opened_not_closed: Option<f64>,
    /// End runtime tasks − those after the warm-up.
    pub(crate) tasks_leaked: Option<f64>,
    pub(crate) nothing_left: Option<bool>,
    /// Every cycle (warm-up included) completed.
    pub(crate) cycles_ok: bool,
    pub(crate) passed: bool,
}

impl Verdict {
    fn new(readings: &NodeReadings, tolerance: f64, all_completed: bool) -> Self {
        let (warm, end) = (&readings.warm, &readings.end);
        let rss_growth_percent = warm
            .rss_kib
            .zip(end.rss_kib)
            .filter(|(warm, _)| *warm > 0)
            .map(|(warm, end)| (end as f64 - warm as f64) * 100.0 / warm as f64);
        let fds_leaked = warm
            .open_fds
            .zip(end.open_fds)
            .map(|(warm, end)| end as i64 - warm as i64);
        let opened_not_closed = end
            .connections_opened
            .zip(end.connections_closed)
            .map(|(opened, closed)| opened - closed);
        let tasks_leaked = warm
            .runtime_tasks
            .zip(end.runtime_tasks)
            .map(|(warm, end)| (end - warm).max(0.0));
        let left = [
            end.connections,
            end.subscriptions,
            end.topics,
            opened_not_closed,
            tasks_leaked,
        ];
        let nothing_left = left
            .iter()
            .try_fold(true, |all, n| n.map(|n| all && n == 0.0));
        let rss_ok = rss_growth_percent.map(|growth| growth <= tolerance);
        let fds_ok = fds_leaked.map(|leaked| leaked <= 0);
        Self {
            rss_growth_percent,
            rss_ok,
            fds_leaked,
            fds_ok,
            connections_left: end.connections,
            subscriptions_left: end.subscriptions,
            topics_left: end.topics,
            opened_not_closed,
            tasks_leaked,
            nothing_left,
            cycles_ok: all_completed,
            passed: rss_ok == Some(true)
                && fds_ok == Some(true)
                && nothing_left == Some(true)
                && all_completed,
        }
    }
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakSettings {
    pub(crate) url: String,
    pub(crate) protocol: Protocol,
    pub(crate) cycles: u64,
    pub(crate) warmup_cycles: u64,
    pub(crate) concurrency: u32,
    pub(crate) topics: u32,
    pub(crate) payload_bytes: usize,
    pub(crate) time_limit_s: f64,
    pub(crate) rss_tolerance_percent: f64,
    pub(crate) workers: usize,
}

/// The result of a `soak` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakReport {
    pub(crate) scenario: &'static str,
    pub(crate) settings: SoakSettings,
    pub(crate) warmup_completed: u64,
    /// Measured cycles (after the warm-up).
    pub(crate) started: u64,
    pub(crate) completed: u64,
    pub(crate) undelivered: u64,
    /// Cycles not started because the time limit was reached.
    pub(crate) not_run: u64,
    /// From the go of the measured cycles to the last one's end.
    pub(crate) measured_s: f64,
    pub(crate) cycles_per_s: f64,
    /// Connect → own delivery of the measured cycles.
    pub(crate) cycle_latency: LatencySummary,
    #[serde(flatten)]
    pub(crate) trouble: Trouble,
    pub(crate) node: NodeReadings,
    pub(crate) rss: Vec<RssSample>,
    pub(crate) verdict: Verdict,
    pub(crate) timeline: Timeline,
    #[serde(skip)]
    latency_histogram: Latencies,
}

impl SoakReport {
    fn new(
        args: &SoakArgs,
        total: SoakPartial,
        measured_s: f64,
        node: NodeReadings,
        rss: Vec<RssSample>,
        timeline: Timeline,
        workers: usize,
    ) -> Self {
        let SoakPartial {
            warmup,
            mut measured,
        } = total;
        let all_completed =
            warmup.completed == args.warmup_cycles && measured.completed == args.cycles;
        let verdict = Verdict::new(&node, args.rss_tolerance, all_completed);
        let mut errors = warmup.errors;
        errors.merge(&measured.errors);
        let mut oddities = warmup.oddities;
        oddities.merge(&measured.oddities);
        Self {
            scenario: "soak",
            settings: SoakSettings {
                url: args.url.clone(),
                protocol: args.connect.protocol,
                cycles: args.cycles,
                warmup_cycles: args.warmup_cycles,
                concurrency: args.concurrency,
                topics: args.topics,
                payload_bytes: args.payload_bytes,
                time_limit_s: args.time_limit.as_secs_f64(),
                rss_tolerance_percent: args.rss_tolerance,
                workers,
            },
            warmup_completed: warmup.completed,
            started: measured.started,
            completed: measured.completed,
            undelivered: measured.undelivered + warmup.undelivered,
            not_run: measured.not_run + warmup.not_run,
            measured_s,
            cycles_per_s: per_second(measured.completed, measured_s),
            cycle_latency: measured.latency.summary(),
            trouble: Trouble::new(errors, oddities),
            node,
            rss,
            verdict,
            timeline,
            latency_histogram: std::mem::take(&mut measured.latency),
        }
    }
}

impl ScenarioReport for SoakReport {
    fn table(&self) -> Table {
        let s = &self.settings;
        let v = &self.verdict;
        let (warm, end) = (&self.node.warm, &self.node.end);
        let mib = |kib: Option<u64>| {
            kib.map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        };
        let count = |n: Option<u64>| n.map_or_else(|| "?".into(), |n| n.to_string());
        let gauge = |n: Option<f64>| n.map_or_else(|| "?".into(), |n| format!("{n:.0}"));
        let check = |ok: Option<bool>| match ok {
            Some(true) => "ok",
            Some(false) => "FAIL",
            None => "not read",
        };
        let mut table = Table::default();
        table.heading(format!(
            "soak: {} cycles after {} warm-up cycles, {} at once, {} topics, {}, {} worker process(es)",
            s.cycles, s.warmup_cycles, s.concurrency, s.topics, s.protocol, s.workers
        ));
        table
            .row(
                "cycles completed",
                format!(
                    "{} of {} ({:.0}/s over {:.1} s); warm-up {} of {}",
                    self.completed,
                    s.cycles,
                    self.cycles_per_s,
                    self.measured_s,
                    self.warmup_completed,
                    s.warmup_cycles
                ),
            )
            .row("own publication not delivered", self.undelivered)
            .row("not run (time limit)", self.not_run)
            .latency("cycle (connect → own delivery)", &self.cycle_latency)
            .rows(self.trouble.rows())
            .row(
                "node RSS",
                format!(
                    "before {}, after warm-up {}, end {} ({}): {}",
                    mib(self.node.before.rss_kib),
                    mib(warm.rss_kib),
                    mib(end.rss_kib),
                    v.rss_growth_percent
                        .map_or_else(|| "?".into(), |g| format!("{g:+.2} %")),
                    check(v.rss_ok)
                ),
            )
            .row(
                "node open fds",
                format!(
                    "before {}, after warm-up {}, end {}: {}",
                    count(self.node.before.open_fds),
                    count(warm.open_fds),
                    count(end.open_fds),
                    check(v.fds_ok)
                ),
            )
            .row(
                "node threads",
                format!(
                    "after warm-up {}, end {}",
                    count(warm.threads),
                    count(end.threads)
                ),
            )
            .row(
                "node gauges at the end",
                format!(
                    "connections {}, subscriptions {}, topics {}, opened − closed {}, runtime tasks over the warm-up's {}: {}",
                    gauge(v.connections_left),
                    gauge(v.subscriptions_left),
                    gauge(v.topics_left),
                    gauge(v.opened_not_closed),
                    gauge(v.tasks_leaked),
                    check(v.nothing_left)
                ),
            )
            .row(
                "verdict",
                if v.passed {
                    "PASS"
                } else if v.cycles_ok {
                    "FAIL (the node kept something)"
                } else {
                    "FAIL (not every cycle completed)"
                },
            );
        table
    }

    fn chart(&self) -> Chart<'_> {
        Chart {
            title: format!(
                "ferrocast soak: {} cycles, {:.0}/s, RSS {}",
                self.completed,
                self.cycles_per_s,
                self.verdict
                    .rss_growth_percent
                    .map_or_else(|| "?".into(), |g| format!("{g:+.2} %"))
            ),
            latency: Some(("cycle", &self.latency_histogram.0)),
            timeline: &self.timeline,
            series: vec![
                Series {
                    label: "cycles/s",
                    value: |c| c.delivered,
                },
                Series {
                    label: "errors/s",
                    value: |c| c.errors,
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(rss_kib: u64, open_fds: u64, connections: f64) -> NodeReading {
        NodeReading {
            rss_kib: Some(rss_kib),
            open_fds: Some(open_fds),
            threads: Some(3),
            connections: Some(connections),
            subscriptions: Some(0.0),
            topics: Some(0.0),
            connections_opened: Some(100.0),
            connections_closed: Some(100.0 - connections),
            runtime_tasks: Some(12.0 + connections),
        }
    }

    #[test]
    fn the_verdict_holds_each_criterion() {
        let readings = |end: NodeReading| NodeReadings {
            before: reading(10_000, 20, 0.0),
            warm: reading(40_000, 30, 0.0),
            end,
        };
        let passed = Verdict::new(&readings(reading(41_000, 30, 0.0)), 5.0, true);
        assert!(passed.passed, "{passed:?}");
        assert_eq!(passed.rss_growth_percent, Some(2.5));
        assert_eq!(passed.fds_leaked, Some(0));

        let grown = Verdict::new(&readings(reading(42_400, 28, 0.0)), 5.0, true);
        assert_eq!(grown.rss_ok, Some(false));
        assert_eq!(grown.fds_ok, Some(true));
        assert!(!grown.passed);

        let fd = Verdict::new(&readings(reading(40_000, 31, 0.0)), 5.0, true);
        assert_eq!(fd.fds_leaked, Some(1));
        assert!(!fd.passed);

        let task = Verdict::new(
            &readings(NodeReading {
                runtime_tasks: Some(13.0),
                ..reading(40_000, 30, 0.0)
            }),
            5.0,
            true,
        );
        assert_eq!(task.tasks_leaked, Some(1.0));
        assert!(!task.passed);

        let connection = Verdict::new(&readings(reading(40_000, 30, 1.0)), 5.0, true);
        assert_eq!(connection.nothing_left, Some(false));
        assert_eq!(connection.opened_not_closed, Some(1.0));
        assert!(!connection.passed);

        let unread = Verdict::new(&readings(NodeReading::default()), 5.0, true);
        assert_eq!(unread.rss_ok, None);
        assert_eq!(unread.nothing_left, None);
        assert!(!unread.passed);

        let failed_cycles = Verdict::new(&readings(reading(40_000, 30, 0.0)), 5.0, false);
        assert!(!failed_cycles.passed);
    }

    #[test]
    fn threads_are_read_from_proc_status() {
        assert_eq!(parse_threads("Name:\tx\nThreads:\t17\n"), Some(17));
        assert_eq!(parse_threads("Name:\tx\n"), None);
    }
}
