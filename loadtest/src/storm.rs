//! The `reconnect-storm` scenario: subscribers spread over several nodes, a
//! publisher sending numbered messages; one node is sent SIGTERM (drain) or
//! SIGKILL. Every client is the Rust SDK (`ferrocast-client`), as an
//! application runs it: the clients that lose their connection reconnect
//! elsewhere by themselves (jittered backoff, resubscribe from the last
//! position, gaps reported), and the scenario only watches their events and
//! items. Measures how long until every client is back and what each one
//! missed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use clap::{Args, ValueEnum};
use ferrocast_client::{Client, Event, Item};
use futures::FutureExt as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::accounting::{
    publish_topic, publishes_due, subscriber_topic, CountsByTopic, SequenceTracker,
};
use crate::chart::{Chart, Series};
use crate::client::{ConnectArgs, Ending, Protocol, SetupError};
use crate::coord::{join_within, Conductor, Phase, WorkerLink, JOIN_SLACK};
use crate::host::{NodeArgs, NodeWatch, NodesReport};
use crate::latency::{Latencies, LatencySummary};
use crate::progress::{unix_nanos, LiveCounters, Timeline};
use crate::report::{per_second, ConnectionErrors, Oddities, Table, Trouble};
use crate::scenario::{collect, start_phase, Partial, Scenario, ScenarioReport};
use crate::wire::{parse_bench_data, topic_name, write_bench_data};

pub(crate) const ABOUT: &str = "\
Reconnect storm: subscribers spread over several nodes (--url, repeated), one
publisher (on --pub-url) sending numbered messages at --rate, each topic its
own sequence 0, 1, 2, …. --kill-after the start, the tool sends --kill-signal
to --node-pid (only that PID; without --node-pid nothing is signalled and the
tool only watches, e.g. while you drain a node yourself).

Every client (subscribers and the publisher) is the Rust SDK, ferrocast-client,
so the run measures what applications get. A client that loses its connection
reconnects to the next URLs in turn, with exponential backoff and full jitter
(a random wait between 0 and min(--backoff-max, --backoff-initial × 2^attempt);
after a drain, within the SDK's drain spread of 1 s), and restores its
subscription from the last position it received, so that a node keeping
history replays the gap; where it cannot, the SDK reports a gap. Only the JSON
protocol, without --source-addrs.

Reported: clients disconnected, reconnect time per client (from losing the
connection to the subscription restored: p50, p99, max), the time from the
kill until the last client was back, clients not back by the end, messages
missed per client (by sequence number), duplicates, subscriptions restored
with and without everything recovered, and gaps reported.

Example (three nodes on one backplane, drain the first):
  ferrocast-loadtest reconnect-storm --url ws://127.0.0.1:8080/ws \\
      --url ws://127.0.0.1:8090/ws --url ws://127.0.0.1:8100/ws \\
      --pub-url ws://127.0.0.1:8100/ws --subscribers 3000 --rate 200 \\
      --node-pid $NODE1 --kill-signal term --kill-after 5s --duration 30s";

/// Size of the numbered publications' data.
const PAYLOAD_BYTES: usize = 64;
/// The close code of the server API's Disconnect, after which the SDK does
/// not reconnect.
const DISCONNECTED: u16 = 4002;
/// Time a client gets to close at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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
        // The clients are the Rust SDK's.
        ensure!(
            self.connect.protocol == Protocol::Json,
            "reconnect-storm drives the Rust SDK (ferrocast-client), which speaks only ferrocast.v1.json"
        );
        ensure!(
            self.connect.source_addrs.is_none(),
            "reconnect-storm drives the Rust SDK (ferrocast-client), which binds no source address"
        );
        Ok(())
    }

    fn pub_url(&self) -> String {
        self.pub_url
            .clone()
            .or_else(|| self.urls.last().cloned())
            .unwrap_or_default()
    }
}

/// What one worker measured; adds up across workers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StormPartial {
    subscribers_ready: u64,
    /// Numbered publications confirmed per topic (only in the worker that publishes).
    published: Vec<u64>,
    /// Connections the publisher lost.
    publisher_reconnects: u64,
    /// Publishes that failed (and were sent again).
    publish_errors: u64,
    /// Distinct sequence numbers each subscriber received, by topic.
    distinct_by_topic: CountsByTopic,
    duplicates: u64,
    /// Clients that lost their connection at least once.
    clients_disconnected: u64,
    /// Subscriptions the SDK restored after a lost connection.
    reconnects: u64,
    /// Connection attempts that failed.
    failed_attempts: u64,
    /// Clients whose subscription was not restored by the end.
    not_back: u64,
    /// Lost connection → subscription restored, per reconnect.
    reconnect_latency: Latencies,
    first_loss_ns: Option<u64>,
    last_back_ns: Option<u64>,
    /// Restored subscriptions, by whether the node replayed everything missed.
    recovered_true: u64,
    recovered_false: u64,
    /// Gaps the SDK reported to the application ([`Item::Gap`]).
    gaps: u64,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl Partial for StormPartial {
    fn merge(&mut self, o: &Self) {
        self.subscribers_ready += o.subscribers_ready;
        crate::accounting::add_per_topic(&mut self.published, &o.published);
        self.publisher_reconnects += o.publisher_reconnects;
        self.publish_errors += o.publish_errors;
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
        self.gaps += o.gaps;
        self.errors.merge(&o.errors);
        self.oddities.merge(&o.oddities);
    }
}

impl StormPartial {
    /// Adds what one subscriber saw.
    fn add_client(&mut self, topic: usize, stats: ClientStats) {
        if !stats.ready {
            self.errors.merge(&stats.errors);
            return;
        }
        self.subscribers_ready += 1;
        self.distinct_by_topic.note(topic, stats.seen.distinct());
        self.duplicates += stats.seen.duplicates;
        self.clients_disconnected += u64::from(stats.disconnects > 0);
        self.reconnects += stats.reconnects;
        self.failed_attempts += stats.failed_attempts;
        self.not_back += u64::from(stats.lost_at.is_some());
        for micros in &stats.reconnect_micros {
            self.reconnect_latency.record(*micros);
        }
        self.first_loss_ns = self
            .first_loss_ns
            .into_iter()
            .chain(stats.first_loss_ns)
            .min();
        self.last_back_ns = self.last_back_ns.max(stats.last_back_ns);
        self.recovered_true += stats.recovered_true;
        self.recovered_false += stats.recovered_false;
        self.gaps += stats.gaps;
        self.errors.merge(&stats.errors);
        self.oddities.merge(&stats.oddities);
    }
}

/// What every task of a worker shares.
#[derive(Debug)]
struct Shared {
    args: StormArgs,
    topics: Vec<String>,
    setup_deadline: Instant,
    connect_slots: Semaphore,
    stop: CancellationToken,
    live: Arc<LiveCounters>,
}

impl Shared {
    /// An SDK client of every node, trying `first` first and the others in
    /// turn, with the run's backoff.
    fn client(&self, first: &str) -> anyhow::Result<Client> {
        let others = self.args.urls.iter().filter(|url| *url != first).cloned();
        let urls: Vec<String> = std::iter::once(first.to_owned()).chain(others).collect();
        Client::builder(urls)
            .backoff(self.args.backoff_initial, self.args.backoff_max)
            .request_timeout(self.args.connect.setup_timeout)
            .build()
            .context("building a client")
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    ready: bool,
    seen: SequenceTracker,
    disconnects: u64,
    reconnects: u64,
    failed_attempts: u64,
    /// Set while the connection is lost and the subscription not restored.
    lost_at: Option<Instant>,
    reconnect_micros: Vec<u64>,
    first_loss_ns: Option<u64>,
    last_back_ns: Option<u64>,
    recovered_true: u64,
    recovered_false: u64,
    gaps: u64,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl ClientStats {
    fn on_item(&mut self, item: Item, topic: &str, live: &LiveCounters) {
        match item {
            Item::Message(message) => {
                let ours = (message.topic().as_str() == topic)
                    .then(|| parse_bench_data(message.data().get()))
                    .flatten();
                match ours {
                    Some((_, seq)) => {
                        if self.seen.note(seq) {
                            LiveCounters::add(&live.delivered, 1);
                        }
                    }
                    None => self.oddities.unexpected += 1,
                }
            }
            Item::Gap(_) => self.gaps += 1,
        }
    }

    fn on_event(&mut self, event: Event, live: &LiveCounters) {
        match event {
            Event::Disconnected { code, .. } => {
                let lost_ns = unix_nanos();
                self.first_loss_ns.get_or_insert(lost_ns);
                self.lost_at.get_or_insert_with(Instant::now);
                self.disconnects += 1;
                self.errors
                    .count_ending(code.map_or(Ending::Dropped, Ending::ClosedByNode));
                LiveCounters::add(&live.errors, 1);
            }
            Event::ConnectFailed { .. } => self.failed_attempts += 1,
            Event::Resubscribed { recovered, .. } => {
                if recovered {
                    self.recovered_true += 1;
                } else {
                    self.recovered_false += 1;
                }
                if let Some(lost_at) = self.lost_at.take() {
                    self.reconnects += 1;
                    self.reconnect_micros
                        .push(u64::try_from(lost_at.elapsed().as_micros()).unwrap_or(u64::MAX));
                    self.last_back_ns = Some(unix_nanos());
                }
            }
            // The node refused to restore the subscription: it is over.
            Event::SubscriptionEnded { code, .. } => {
                *self.oddities.error_replies.entry(code).or_default() += 1;
            }
            // Closed for good (4002, the server API's Disconnect): the SDK
            // does not come back, and the client counts as not back.
            Event::DisconnectedByServer { .. } => {
                self.lost_at.get_or_insert_with(Instant::now);
                self.disconnects += 1;
                self.errors.count_ending(Ending::ClosedByNode(DISCONNECTED));
                LiveCounters::add(&live.errors, 1);
            }
            Event::Connected { .. } | Event::Lagged { .. } => {}
        }
    }
}

/// Closes an SDK client, briefly: the run is over.
async fn close(client: &Client) {
    let _ = timeout(CLOSE_WAIT, client.close()).await;
}

/// One subscriber for the whole run: an SDK client that reconnects and
/// restores its subscription by itself, watched through its events.
async fn run_client(
    shared: Arc<Shared>,
    index: usize,
    ready: mpsc::Sender<()>,
) -> (usize, ClientStats) {
    let topic_index = subscriber_topic(index, shared.topics.len());
    let topic = shared.topics[topic_index].as_str();
    let mut stats = ClientStats::default();
    let setup = {
        // The client connects as soon as it is built: within the slot.
        let _slot = shared.connect_slots.acquire().await;
        let url = &shared.args.urls[index % shared.args.urls.len()];
        match shared.client(url) {
            Ok(client) => {
                let events = client.events();
                let subscribed = timeout_at(shared.setup_deadline, client.subscribe(topic)).await;
                Ok((client, events, subscribed))
            }
            Err(_) => Err(SetupError::Connect),
        }
    };
    let _ = ready.send(()).await;
    drop(ready);
    let (client, mut events, mut subscription) = match setup {
        Ok((client, events, Ok(Ok(subscription)))) => (client, events, subscription),
        Ok((client, mut events, failed)) => {
            let connect_failed = std::iter::from_fn(|| events.recv().now_or_never().flatten())
                .any(|event| matches!(event, Event::ConnectFailed { .. }));
            stats.errors.count_setup(match failed {
                Ok(Err(ferrocast_client::Error::Refused { .. })) => SetupError::Subscribe,
                _ if connect_failed => SetupError::Connect,
                _ => SetupError::Timeout,
            });
            LiveCounters::add(&shared.live.errors, 1);
            close(&client).await;
            return (topic_index, stats);
        }
        Err(error) => {
            stats.errors.count_setup(error);
            LiveCounters::add(&shared.live.errors, 1);
            return (topic_index, stats);
        }
    };
    stats.ready = true;
    LiveCounters::add(&shared.live.ready, 1);
    loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => stats.on_event(event, &shared.live),
                None => break,
            },
            item = subscription.recv() => match item {
                Some(item) => stats.on_item(item, topic, &shared.live),
                None => break,
            },
        }
    }
    close(&client).await;
    (topic_index, stats)
}

/// What the publisher did.
#[derive(Debug)]
struct PublisherStats {
    /// Confirmed publications per topic.
    published: Vec<u64>,
    reconnects: u64,
    errors: u64,
}

/// The publisher, an SDK client as well: message k goes to topic k % T with
/// that topic's next sequence number. A publish that fails is sent again
/// with the same number at the next tick (it may have been published: then
/// its subscribers count a duplicate, and `publish_errors` says why).
async fn run_publisher(
    shared: &Shared,
    client: Client,
    start: Instant,
    end: Instant,
) -> PublisherStats {
    let topics = shared.topics.len();
    let mut stats = PublisherStats {
        published: vec![0u64; topics],
        reconnects: 0,
        errors: 0,
    };
    // Counts the connections the publisher loses, until its client closes.
    let mut events = client.events();
    let losses = tokio::spawn(async move {
        let mut losses = 0;
        while let Some(event) = events.recv().await {
            losses += u64::from(matches!(event, Event::Disconnected { .. }));
        }
        losses
    });
    let rate = shared.args.rate;
    let period = Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1));
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut data = String::new();
    while Instant::now() < end {
        tokio::select! {
            () = sleep_until(end) => break,
            _ = ticks.tick() => {}
        }
        let due = publishes_due(Instant::now().saturating_duration_since(start), rate);
        while sent < due && Instant::now() < end {
            let topic = publish_topic(0, sent, topics);
            let seq = stats.published[topic];
            data.clear();
            write_bench_data(&mut data, unix_nanos(), seq, PAYLOAD_BYTES);
            let Ok(raw) = RawValue::from_string(data.clone()) else {
                break;
            };
            let publish = client.publish(&shared.topics[topic], &raw);
            match timeout_at(end, publish).await {
                Ok(Ok(_)) => {
                    stats.published[topic] += 1;
                    sent += 1;
                    LiveCounters::add(&shared.live.published, 1);
                }
                Ok(Err(_)) | Err(_) => {
                    stats.errors += 1;
                    break;
                }
            }
        }
    }
    // Stay connected until the run stops: closing right behind the last
    // publish could race it.
    shared.stop.cancelled().await;
    close(&client).await;
    if let Ok(Ok(losses)) = timeout(CLOSE_WAIT, losses).await {
        stats.reconnects = losses;
    }
    stats
}

impl Scenario for StormArgs {
    type Partial = StormPartial;
    type Report = StormReport;

    fn connections(&self) -> u64 {
        u64::from(self.subscribers) + 1
    }

    fn time_limit(&self) -> Duration {
        self.connect.setup_timeout + self.duration + self.grace
    }

    /// The client side, in one worker.
    async fn work(self, mut link: WorkerLink) -> anyhow::Result<StormPartial> {
        let args = self;
        args.validate()?;
        let share = link.share;
        let topics = args.topics as usize;
        let shared = Arc::new(Shared {
            topics: (0..topics).map(topic_name).collect(),
            setup_deadline: Instant::now() + args.connect.setup_timeout,
            connect_slots: Semaphore::new(args.connect.connect_concurrency as usize),
            stop: CancellationToken::new(),
            live: link.live.clone(),
            args,
        });
        // The publisher's client connects while the subscribers do.
        let publisher = match share.is_first() {
            true => Some(shared.client(&shared.args.pub_url())?),
            false => None,
        };
        let (ready_tx, mut ready_rx) = mpsc::channel::<()>(1024);
        let clients: Vec<JoinHandle<(usize, ClientStats)>> = share
            .range(shared.args.subscribers as usize)
            .map(|index| tokio::spawn(run_client(shared.clone(), index, ready_tx.clone())))
            .collect();
        drop(ready_tx);
        while let Ok(Some(())) = timeout_at(shared.setup_deadline, ready_rx.recv()).await {}

        let start = link.reached(Phase::Ready).await?.instant;
        let end = start + shared.args.duration;
        let publisher = publisher.map(|client| {
            let shared = shared.clone();
            tokio::spawn(async move { run_publisher(&shared, client, start, end).await })
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
            let stats = join_within(publisher, join_limit, "publisher").await?;
            partial.published = stats.published;
            partial.publisher_reconnects = stats.reconnects;
            partial.publish_errors = stats.errors;
        }
        for client in clients {
            let (topic, stats) = join_within(client, join_limit, "subscriber").await?;
            partial.add_client(topic, stats);
        }
        Ok(partial)
    }

    /// The parent side: node readings, the kill, then the report.
    async fn conduct(&self, conductor: &mut Conductor) -> anyhow::Result<StormReport> {
        let args = self;
        args.validate()?;
        let mut nodes = NodeWatch::new(&args.nodes);
        let start = start_phase(
            conductor,
            &mut nodes,
            args.connect.setup_timeout,
            "publishing",
        )
        .await?;
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
        let results = collect::<StormPartial>(
            conductor,
            &mut nodes,
            Some(end),
            end + args.grace + JOIN_SLACK * 2,
        );
        let (results, killed) = tokio::join!(results, killing);
        let (total, timeline) = results?;
        let killed_at_ns = killed?;
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
    /// Publishes that failed and were sent again.
    pub(crate) publish_errors: u64,
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
    /// Subscriptions the SDK restored, by whether the node replayed
    /// everything missed (`Event::Resubscribed`'s `recovered`).
    pub(crate) recovered_true: u64,
    pub(crate) recovered_false: u64,
    /// Gaps the SDK reported to the application (`Item::Gap`).
    pub(crate) gaps: u64,
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
            publish_errors: total.publish_errors,
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
            gaps: total.gaps,
            trouble: Trouble::new(total.errors, total.oddities),
            nodes,
            timeline,
            reconnect_histogram: total.reconnect_latency,
        }
    }
}

impl ScenarioReport for StormReport {
    fn table(&self) -> Table {
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
                    "{} ({:.1}/s), publisher reconnects {}, publish errors {}",
                    self.publishes,
                    self.publishes_per_s,
                    self.publisher_reconnects,
                    self.publish_errors
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
                "subscriptions restored",
                format!(
                    "recovered true {}, false {}",
                    self.recovered_true, self.recovered_false
                ),
            )
            .row("gaps reported to the application", self.gaps)
            .rows(self.trouble.rows())
            .rows(self.nodes.rows());
        table
    }

    fn chart(&self) -> Chart<'_> {
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
