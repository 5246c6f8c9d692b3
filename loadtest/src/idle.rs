//! The `idle` scenario: N subscribed connections held open for a while; what
//! they cost the node in memory and CPU, how fast they were set up, and
//! whether every one of them still receives a publication at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::accounting::subscriber_topic;
use crate::chart::{Chart, Series};
use crate::client::{ConnectArgs, Dialer, Ending, Protocol, Target};
use crate::coord::{join_within, Conductor, Phase, WorkerLink, JOIN_SLACK};
use crate::host::{NodeArgs, NodeWatch, NodesReport};
use crate::latency::{Latencies, LatencySummary};
use crate::progress::{unix_nanos, LiveCounters, Timeline};
use crate::report::{per_second, ConnectionErrors, Oddities, Table, Trouble};
use crate::scenario::{merged, start_phase, Partial, Scenario, ScenarioReport};
use crate::wire::{topic_name, ServerEvent};

pub(crate) const ABOUT: &str = "\
Idle: N subscribed connections held open for --duration. Measures how fast
they were opened (connections/s, connect + subscribe latency), what they cost
the node (RSS per connection, CPU % of one core while idle, from --node-pid or
--node-metrics), and, at the end, whether each of them still receives a
publication on its topic (one publish per topic; --no-verify skips it).

Connection i subscribes to topic bench.t{i % topics} on --url number
i % (number of URLs).

Examples:
  ferrocast-loadtest idle --url ws://127.0.0.1:8080/ws --connections 15000 \\
      --duration 60s --node-pid $NODE --workers 2
  ferrocast-loadtest idle --connections 45000 --workers 3 \\
      --url ws://127.0.0.1:8080/ws --url ws://127.0.0.1:8090/ws \\
      --url ws://127.0.0.1:8100/ws --source-addrs 127.0.0.1-127.0.0.6";

/// Options of the `idle` scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdleArgs {
    /// WebSocket URL of a node's public listener. Repeat to spread the
    /// connections round-robin over several nodes.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub(crate) urls: Vec<String>,

    /// Connections to open; each subscribes to one topic.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connections: u32,

    /// Topics the connections are spread over (bench.t0 … bench.t{T-1}).
    #[arg(long, value_name = "T", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: u32,

    /// How long every connection is held once all are open.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,

    /// Skip the check at the end (one publish per topic, every connection
    /// must receive it).
    #[arg(long = "no-verify", action = clap::ArgAction::SetFalse)]
    pub(crate) verify: bool,

    /// Longest wait for the check's publications to reach everybody.
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub(crate) verify_timeout: Duration,

    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    #[command(flatten)]
    pub(crate) nodes: NodeArgs,
}

/// What one worker measured; adds up across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IdlePartial {
    ready: u64,
    /// Time this worker took to open and subscribe its connections.
    setup_s: f64,
    /// Connect + subscribe time of each ready connection.
    setup_latency: Latencies,
    /// Connections that received the check's publication.
    verified: u64,
    /// Publish → delivery latency of the check's publications.
    verify_latency: Latencies,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl Partial for IdlePartial {
    fn merge(&mut self, other: &Self) {
        self.ready += other.ready;
        self.setup_s = self.setup_s.max(other.setup_s);
        self.setup_latency.merge(&other.setup_latency.0);
        self.verified += other.verified;
        self.verify_latency.merge(&other.verify_latency.0);
        self.errors.merge(&other.errors);
        self.oddities.merge(&other.oddities);
    }
}

/// What every connection task of a worker shares.
#[derive(Debug)]
struct Shared {
    topics: Vec<String>,
    dialer: Dialer,
    setup_deadline: Instant,
    connect_slots: Semaphore,
    stop: CancellationToken,
    /// Connections of this worker that have not yet received the check.
    unverified: AtomicU64,
    verified: Notify,
    live: Arc<LiveCounters>,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct ConnectionStats {
    ready: bool,
    setup_micros: u64,
    /// Publish → delivery of the check, in µs, once received.
    verify_micros: Option<u64>,
    errors: ConnectionErrors,
    oddities: Oddities,
}

/// Publishes one message per topic from a connection of its own.
async fn publish_check(
    shared: &Shared,
    target: &Target,
    n: usize,
    at: Instant,
) -> anyhow::Result<()> {
    sleep_until(at).await;
    let mut conn = timeout_at(at + JOIN_SLACK, shared.dialer.open(target, n))
        .await
        .map_err(|_| anyhow::anyhow!("the check's publisher could not connect in time"))?
        .map_err(|e| anyhow::anyhow!("the check's publisher could not connect: {e}"))?;
    for (seq, topic) in shared.topics.iter().enumerate() {
        conn.feed_publish(topic, unix_nanos(), seq as u64, 0)
            .await?;
    }
    conn.flush().await?;
    // The publisher stays until the subscribers have had their chance.
    tokio::spawn({
        let stop = shared.stop.clone();
        async move {
            stop.cancelled().await;
            conn.close(Ending::Done).await;
        }
    });
    Ok(())
}

/// One connection: connect, subscribe, report, then wait (answering pings)
/// until the run stops, noting the check's publication.
async fn hold_connection(
    shared: Arc<Shared>,
    index: usize,
    target: Target,
    ready: mpsc::Sender<()>,
) -> ConnectionStats {
    let topic = shared.topics[subscriber_topic(index, shared.topics.len())].as_str();
    let mut stats = ConnectionStats::default();
    let setup = {
        let _slot = shared.connect_slots.acquire().await;
        let began = Instant::now();
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
            .map(|(conn, _)| (conn, began.elapsed()))
    };
    let _ = ready.send(()).await;
    drop(ready);
    let mut conn = match setup {
        Ok((conn, took)) => {
            stats.ready = true;
            stats.setup_micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            LiveCounters::add(&shared.live.ready, 1);
            shared.unverified.fetch_add(1, Ordering::AcqRel);
            conn
        }
        Err(error) => {
            stats.errors.count_setup(error);
            LiveCounters::add(&shared.live.errors, 1);
            return stats;
        }
    };
    let on_event = |event: ServerEvent<'_>, stats: &mut ConnectionStats| match event {
        ServerEvent::Delivery { topic: t, ts, .. } if t == topic => {
            if stats.verify_micros.is_none() {
                stats.verify_micros = Some(unix_nanos().saturating_sub(ts) / 1_000);
                LiveCounters::add(&shared.live.delivered, 1);
                if shared.unverified.fetch_sub(1, Ordering::AcqRel) == 1 {
                    shared.verified.notify_one();
                }
            }
        }
        other => stats.oddities.note(other),
    };
    let ending = conn
        .read_until(shared.stop.cancelled(), |event| on_event(event, &mut stats))
        .await;
    let broke_off = ending != Ending::Done && stats.verify_micros.is_none();
    if broke_off && shared.unverified.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.verified.notify_one();
    }
    conn.finish(ending, &mut stats.errors, &shared.live).await;
    stats
}

impl Scenario for IdleArgs {
    type Partial = IdlePartial;
    type Report = IdleReport;

    fn connections(&self) -> u64 {
        u64::from(self.connections)
    }

    fn time_limit(&self) -> Duration {
        self.connect.setup_timeout + self.duration + self.verify_timeout
    }

    /// The client side, in one worker.
    async fn work(self, mut link: WorkerLink) -> anyhow::Result<IdlePartial> {
        let args = self;
        let targets = Target::resolve_all(&args.urls).await?;
        let share = link.share;
        let topics = args.topics as usize;
        let started = Instant::now();
        let shared = Arc::new(Shared {
            topics: (0..topics).map(topic_name).collect(),
            dialer: args.connect.dialer(share),
            setup_deadline: started + args.connect.setup_timeout,
            connect_slots: Semaphore::new(args.connect.connect_concurrency as usize),
            stop: CancellationToken::new(),
            unverified: AtomicU64::new(0),
            verified: Notify::new(),
            live: link.live.clone(),
        });
        let (ready_tx, mut ready_rx) = mpsc::channel::<()>(1024);
        let tasks: Vec<JoinHandle<ConnectionStats>> = share
            .range(args.connections as usize)
            .map(|i| {
                let target = targets[i % targets.len()].clone();
                tokio::spawn(hold_connection(shared.clone(), i, target, ready_tx.clone()))
            })
            .collect();
        drop(ready_tx);
        while let Ok(Some(())) = timeout_at(shared.setup_deadline, ready_rx.recv()).await {}
        let setup_s = started.elapsed().as_secs_f64();

        // The hold: the conductor measures the nodes meanwhile.
        link.reached(Phase::Ready).await?;
        let check = link.reached(Phase::Held).await?;
        if args.verify {
            if share.is_first() {
                publish_check(
                    &shared,
                    &targets[0],
                    args.connections as usize,
                    check.instant,
                )
                .await?;
            }
            let deadline = check.instant + args.verify_timeout;
            loop {
                let notified = shared.verified.notified();
                if shared.unverified.load(Ordering::Acquire) == 0 || Instant::now() >= deadline {
                    break;
                }
                let _ = timeout_at(deadline, notified).await;
            }
        }
        shared.stop.cancel();

        let join_limit = Instant::now() + JOIN_SLACK;
        let mut partial = IdlePartial {
            setup_s,
            ..IdlePartial::default()
        };
        for task in tasks {
            let stats = join_within(task, join_limit, "connection").await?;
            if stats.ready {
                partial.ready += 1;
                partial.setup_latency.record(stats.setup_micros);
            }
            if let Some(micros) = stats.verify_micros {
                partial.verified += 1;
                partial.verify_latency.record(micros);
            }
            partial.errors.merge(&stats.errors);
            partial.oddities.merge(&stats.oddities);
        }
        Ok(partial)
    }

    /// The parent side: node readings around the hold, then the report.
    async fn conduct(&self, conductor: &mut Conductor) -> anyhow::Result<IdleReport> {
        let args = self;
        let mut nodes = NodeWatch::new(&args.nodes);
        let hold_start =
            start_phase(conductor, &mut nodes, args.connect.setup_timeout, "holding").await?;
        conductor
            .barrier(Phase::Held, hold_start + JOIN_SLACK)
            .await?;
        sleep_until(hold_start + args.duration).await;
        nodes.end().await;
        conductor.status.set_phase("checking");
        let check = Instant::now() + Duration::from_millis(100);
        conductor.go(check).await?;
        let (partials, timeline) = conductor
            .results::<IdlePartial>(check + args.verify_timeout + JOIN_SLACK * 2)
            .await?;
        let total: IdlePartial = merged(&partials);
        let nodes = nodes.report(total.ready);
        Ok(IdleReport::new(
            args,
            total,
            nodes,
            timeline,
            conductor.processes(),
        ))
    }
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleSettings {
    pub(crate) urls: Vec<String>,
    pub(crate) protocol: Protocol,
    pub(crate) connections: u32,
    pub(crate) topics: u32,
    pub(crate) hold_s: f64,
    pub(crate) verify: bool,
    pub(crate) workers: usize,
    pub(crate) source_addrs: usize,
}

/// The end-of-run check.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VerifyReport {
    /// Publications sent, one per topic.
    pub(crate) publications: u32,
    /// Connections that received their topic's publication.
    pub(crate) received: u64,
    /// Ready connections that did not.
    pub(crate) missed: u64,
    /// Publish → delivery latency of the check.
    pub(crate) latency: LatencySummary,
}

/// The result of an `idle` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleReport {
    pub(crate) scenario: &'static str,
    pub(crate) settings: IdleSettings,
    /// Connections opened and subscribed.
    pub(crate) connections_ready: u64,
    /// Time to open and subscribe them (slowest worker).
    pub(crate) setup_s: f64,
    /// connections_ready / setup_s.
    pub(crate) connects_per_s: f64,
    /// Connect + subscribe time of each connection.
    pub(crate) setup_latency: LatencySummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) verify: Option<VerifyReport>,
    #[serde(flatten)]
    pub(crate) trouble: Trouble,
    pub(crate) nodes: NodesReport,
    pub(crate) timeline: Timeline,
    #[serde(skip)]
    setup_histogram: Latencies,
}

impl IdleReport {
    fn new(
        args: &IdleArgs,
        total: IdlePartial,
        nodes: NodesReport,
        timeline: Timeline,
        workers: usize,
    ) -> Self {
        Self {
            scenario: "idle",
            settings: IdleSettings {
                urls: args.urls.clone(),
                protocol: args.connect.protocol,
                connections: args.connections,
                topics: args.topics,
                hold_s: args.duration.as_secs_f64(),
                verify: args.verify,
                workers,
                source_addrs: args.connect.source_addrs.as_ref().map_or(0, |s| s.0.len()),
            },
            connections_ready: total.ready,
            setup_s: total.setup_s,
            connects_per_s: per_second(total.ready, total.setup_s),
            setup_latency: total.setup_latency.summary(),
            trouble: Trouble::new(total.errors, total.oddities),
            verify: args.verify.then(|| VerifyReport {
                publications: args.topics,
                received: total.verified,
                missed: total.ready.saturating_sub(total.verified),
                latency: total.verify_latency.summary(),
            }),
            nodes,
            timeline,
            setup_histogram: total.setup_latency,
        }
    }
}

impl ScenarioReport for IdleReport {
    fn table(&self) -> Table {
        let s = &self.settings;
        let mut table = Table::default();
        table.heading(format!(
            "idle: {} connections on {} topic(s) over {} URL(s), {}, held {:.1} s, {} worker process(es)",
            s.connections,
            s.topics,
            s.urls.len(),
            s.protocol,
            s.hold_s,
            s.workers
        ));
        table
            .row(
                "connections ready",
                format!("{} of {}", self.connections_ready, s.connections),
            )
            .row(
                "setup",
                format!(
                    "{:.2} s, {:.0} connects+subscribes/s",
                    self.setup_s, self.connects_per_s
                ),
            )
            .latency("connect+subscribe", &self.setup_latency);
        if let Some(verify) = &self.verify {
            table
                .row(
                    "check",
                    format!(
                        "{} publication(s): {} connection(s) received, {} missed",
                        verify.publications, verify.received, verify.missed
                    ),
                )
                .row(
                    "check latency",
                    format!(
                        "p50 {:.3} ms, max {:.3} ms",
                        verify.latency.p50_ms, verify.latency.max_ms
                    ),
                );
        }
        table.rows(self.trouble.rows()).rows(self.nodes.rows());
        table
    }

    fn chart(&self) -> Chart<'_> {
        Chart {
            title: format!(
                "ferrocast idle: {} connections, {:.0} connects/s",
                self.connections_ready, self.connects_per_s
            ),
            latency: Some(("connect + subscribe", &self.setup_histogram.0)),
            timeline: &self.timeline,
            series: vec![Series {
                label: "connections ready/s",
                value: |c| c.ready,
            }],
        }
    }
}
