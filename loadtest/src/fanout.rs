//! The `fanout` scenario: S subscribers spread over T topics, P publishers
//! sharing a total rate R.
//!
//! Timeline: every connection is opened and every subscription confirmed
//! (bounded by `--setup-timeout`); then publishers publish for `--warmup` +
//! `--duration`; only publications stamped inside the last `--duration` are
//! measured. Subscribers keep reading for `--grace` after the publishers stop,
//! then everything closes and the report is built from the per-task counters
//! and latency histograms.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _};
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::accounting::{
    add_per_topic, expected_deliveries, publish_topic, publisher_rate, publishes_due,
    subscriber_topic, Window,
};
use crate::host::resident_kib;
use crate::report::{
    latency_histogram, ConnectionErrors, FanoutReport, FanoutSettings, LatencySummary, NodeMemory,
};
use crate::wire::{
    parse_object, publish_request, split_frame, subscribe_request, topic_name, ServerEvent,
    SUBPROTOCOL,
};

pub(crate) const LONG_ABOUT: &str = "\
Fan-out: many subscribers spread over a few topics, a few publishers at a fixed
total rate. Measures deliveries per second, publish to delivery latency and
losses.

Subscriber i subscribes to topic bench.t{i % topics}. Publishers publish in turn
to every topic, {\"op\":\"publish\",\"topic\":…,\"data\":{\"ts\":<unix ns>,\"seq\":N,
\"pad\":\"xx…\"}} without id, paced with timers so that together they send --rate
publishes per second. They start only once every subscription is confirmed.

Only publications stamped inside the measured window (after --warmup, for
--duration) count. Each is expected by every subscriber of its topic; what has
not arrived --grace after the publishers stop is reported as lost.

Connections are spread round-robin over the --url values (subscribers first,
then publishers).

Example:
  ferrocast-loadtest fanout --url ws://127.0.0.1:8080/ws \\
      --subscribers 1000 --topics 10 --publishers 10 --rate 2000 --duration 20s";

/// Time a connection gets for its closing handshake at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long after its stop time a publisher may still be stuck in a send.
const SEND_GRACE: Duration = Duration::from_secs(1);
/// Slack given to tasks past the point where they must have finished.
const JOIN_SLACK: Duration = Duration::from_secs(3);
/// Read buffer of each connection. tungstenite zero-fills the free part of
/// its buffer before every read, so its 128 KiB default costs more CPU than the
/// parsing; a batched frame of the node is at most a few KiB.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// File descriptors kept free for everything but connections.
const SPARE_FDS: u64 = 64;

/// Options of the `fanout` scenario.
#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    /// WebSocket URL of a node's public listener. Repeat to spread the
    /// connections round-robin over several nodes.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    urls: Vec<String>,

    /// Subscriber connections; each subscribes to one topic.
    #[arg(long, value_name = "S", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    subscribers: u32,

    /// Topics the subscribers are spread over (bench.t0 … bench.t{T-1}).
    #[arg(long, value_name = "T", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    topics: u32,

    /// Publisher connections sharing the rate.
    #[arg(long, value_name = "P", default_value_t = 1)]
    publishers: u32,

    /// Publishes per second, all publishers together (0: connect and idle).
    #[arg(long, value_name = "R", default_value_t = 100.0)]
    rate: f64,

    /// Size of the `data` object of each publication, in bytes (padded with
    /// `x`; at least the size of the timestamp and sequence fields).
    #[arg(long, value_name = "B", default_value_t = 128)]
    payload_bytes: usize,

    /// Length of the measured window.
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Publishing before the measured window, not counted.
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Time subscribers keep reading after the publishers stop.
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = humantime::parse_duration)]
    grace: Duration,

    /// Longest time to open every connection and confirm every subscription;
    /// connections not ready by then count as errors and the run goes on
    /// without them.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = humantime::parse_duration)]
    setup_timeout: Duration,

    /// Connections being opened (and subscribing) at once.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    connect_concurrency: u32,

    /// Process id of the node under test (same machine): its resident memory
    /// is read from /proc before connecting, once connected and at the end.
    #[arg(long, value_name = "PID")]
    node_pid: Option<u32>,
}

impl FanoutArgs {
    fn validate(&self, open_files: u64) -> anyhow::Result<()> {
        for url in &self.urls {
            ensure!(
                url.starts_with("ws://"),
                "--url {url}: only ws:// URLs are supported"
            );
        }
        ensure!(
            self.rate.is_finite() && self.rate >= 0.0,
            "--rate must be a finite number ≥ 0"
        );
        ensure!(
            self.rate == 0.0 || self.publishers > 0,
            "--rate {} needs at least one publisher",
            self.rate
        );
        let connections = u64::from(self.subscribers) + u64::from(self.publishers);
        ensure!(
            connections + SPARE_FDS <= open_files,
            "{connections} connections need about {} file descriptors; the limit is {open_files}",
            connections + SPARE_FDS
        );
        Ok(())
    }

    fn settings(&self) -> FanoutSettings {
        FanoutSettings {
            urls: self.urls.clone(),
            subscribers: self.subscribers as usize,
            topics: self.topics as usize,
            publishers: self.publishers as usize,
            rate: self.rate,
            payload_bytes: self.payload_bytes,
            duration_s: self.duration.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            grace_s: self.grace.as_secs_f64(),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What every task of the run shares.
#[derive(Debug)]
struct Shared {
    payload_bytes: usize,
    /// `bench.t0` …, built once.
    topics: Vec<String>,
    /// Total target rate and publisher count, for each publisher's share.
    rate: f64,
    publishers: usize,
    /// Connect and subscribe must be done by then.
    setup_deadline: Instant,
    /// Limits handshakes in progress (`--connect-concurrency`).
    connect_slots: Semaphore,
    /// Set once, before the first publish.
    window: OnceLock<Window>,
    /// Cancelled when the grace is over: every connection closes.
    stop: CancellationToken,
    progress: Progress,
}

/// Running totals for the progress lines (not for the report).
#[derive(Debug, Default)]
struct Progress {
    published: AtomicU64,
    delivered: AtomicU64,
}

/// When publishers start and stop.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    end: Instant,
}

/// Why connect-and-subscribe failed.
#[derive(Debug, Clone, Copy)]
enum SetupError {
    Connect,
    Subscribe,
}

/// How a connection's main loop ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The run is over (or this task's part of it).
    Done,
    /// The node sent a close frame with this code (1005: without a code).
    ClosedByNode(u16),
    /// The connection broke without a close frame.
    Dropped,
}

/// Objects that were neither deliveries of ours nor expected replies.
#[derive(Debug, Default)]
struct Oddities {
    error_replies: BTreeMap<String, u64>,
    unexpected: u64,
}

impl Oddities {
    fn note(&mut self, event: Result<ServerEvent<'_>, serde_json::Error>) {
        match event {
            Ok(ServerEvent::Error { code, .. }) => {
                *self.error_replies.entry(code).or_default() += 1;
            }
            Ok(ServerEvent::Ok { .. } | ServerEvent::Other) => {}
            Ok(ServerEvent::Delivery { .. } | ServerEvent::ForeignDelivery) | Err(_) => {
                self.unexpected += 1;
            }
        }
    }

    fn merge_into(self, errors: &mut BTreeMap<String, u64>, unexpected: &mut u64) {
        for (code, n) in self.error_replies {
            *errors.entry(code).or_default() += n;
        }
        *unexpected += self.unexpected;
    }
}

/// What one subscriber saw.
#[derive(Debug)]
struct SubscriberStats {
    topic: usize,
    subscribed: bool,
    /// Deliveries of window publications.
    received: u64,
    /// Deliveries of warmup publications.
    warmup: u64,
    /// Publish → delivery latency of `received`, in microseconds.
    latency: Option<Histogram<u64>>,
    errors: ConnectionErrors,
    oddities: Oddities,
}

impl SubscriberStats {
    /// Accounts for one text frame (one or more objects).
    fn on_frame(&mut self, text: &str, topic: &str, window: Option<&Window>) -> u64 {
        let now = unix_nanos();
        let mut deliveries = 0;
        for line in split_frame(text) {
            match parse_object(line) {
                Ok(ServerEvent::Delivery { topic: t, ts, .. }) if t == topic => {
                    deliveries += 1;
                    match (window, &mut self.latency) {
                        (Some(window), Some(latency)) if window.contains(ts) => {
                            self.received += 1;
                            latency.saturating_record(now.saturating_sub(ts) / 1_000);
                        }
                        _ => self.warmup += 1,
                    }
                }
                other => self.oddities.note(other),
            }
        }
        deliveries
    }
}

/// What one publisher did.
#[derive(Debug)]
struct PublisherStats {
    /// Window publications per topic.
    published: Vec<u64>,
    errors: ConnectionErrors,
    oddities: Oddities,
}

/// Runs the scenario and builds its report.
pub(crate) async fn run(
    args: FanoutArgs,
    open_files: u64,
    show_progress: bool,
) -> anyhow::Result<FanoutReport> {
    args.validate(open_files)?;
    let say = |line: String| {
        if show_progress {
            eprintln!("{line}");
        }
    };
    let subscribers = args.subscribers as usize;
    let publishers = args.publishers as usize;
    let topics = args.topics as usize;
    let rss_before = args.node_pid.and_then(resident_kib);

    let setup_started = Instant::now();
    let shared = Arc::new(Shared {
        payload_bytes: args.payload_bytes,
        topics: (0..topics).map(topic_name).collect(),
        rate: args.rate,
        publishers,
        setup_deadline: setup_started + args.setup_timeout,
        connect_slots: Semaphore::new(args.connect_concurrency as usize),
        window: OnceLock::new(),
        stop: CancellationToken::new(),
        progress: Progress::default(),
    });
    let url_of = |connection: usize| args.urls[connection % args.urls.len()].clone();

    say(format!(
        "connecting {subscribers} subscribers and {publishers} publishers to {} URL(s)",
        args.urls.len()
    ));
    let (subscribed_tx, mut subscribed_rx) = mpsc::channel(subscribers);
    let subscriber_tasks: Vec<JoinHandle<SubscriberStats>> = (0..subscribers)
        .map(|i| {
            tokio::spawn(run_subscriber(
                shared.clone(),
                i,
                url_of(i),
                subscribed_tx.clone(),
            ))
        })
        .collect();
    drop(subscribed_tx);
    let (connected_tx, mut connected_rx) = mpsc::channel(publishers.max(1));
    let (start_tx, start_rx) = watch::channel(None);
    let publisher_tasks: Vec<JoinHandle<PublisherStats>> = (0..publishers)
        .map(|i| {
            tokio::spawn(run_publisher(
                shared.clone(),
                i,
                url_of(subscribers + i),
                connected_tx.clone(),
                start_rx.clone(),
            ))
        })
        .collect();
    drop(connected_tx);

    // Every task reports by the setup deadline, ready or not.
    let setup_limit = shared.setup_deadline + JOIN_SLACK;
    let mut subscribers_per_topic = vec![0u64; topics];
    while let Ok(Some(outcome)) = timeout_at(setup_limit, subscribed_rx.recv()).await {
        if let Some(topic) = outcome {
            subscribers_per_topic[topic] += 1;
        }
    }
    let mut publishers_ready = 0u64;
    while let Ok(Some(ready)) = timeout_at(setup_limit, connected_rx.recv()).await {
        publishers_ready += u64::from(ready);
    }
    let subscribers_ready: u64 = subscribers_per_topic.iter().sum();
    let setup_s = setup_started.elapsed().as_secs_f64();
    say(format!(
        "ready: {subscribers_ready}/{subscribers} subscribers, \
         {publishers_ready}/{publishers} publishers in {setup_s:.1} s"
    ));
    if subscribers_ready == 0 || (args.rate > 0.0 && publishers_ready == 0) {
        shared.stop.cancel();
        subscriber_tasks.iter().for_each(JoinHandle::abort);
        publisher_tasks.iter().for_each(JoinHandle::abort);
        bail!(
            "setup failed: {subscribers_ready} subscribers and {publishers_ready} publishers \
             ready; is a node listening at {}?",
            args.urls.join(", ")
        );
    }
    // Give the node a moment to settle before sampling its memory.
    let rss_connected = match args.node_pid {
        Some(pid) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            resident_kib(pid)
        }
        None => None,
    };

    let start = Instant::now();
    let window = Window::after_warmup(unix_nanos(), args.warmup, args.duration);
    shared
        .window
        .set(window)
        .map_err(|_| anyhow::anyhow!("the window was set twice"))?;
    let end = start + args.warmup + args.duration;
    start_tx.send_replace(Some(Schedule { start, end }));
    say(format!(
        "publishing: {:.1} s warmup, {:.1} s measured",
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    ));
    if show_progress {
        report_progress(&shared.progress, start, end + args.grace).await;
    }

    sleep_until(end + args.grace).await;
    let rss_end = args.node_pid.and_then(resident_kib);
    shared.stop.cancel();

    let join_limit = Instant::now() + CLOSE_WAIT + JOIN_SLACK;
    let mut published = vec![0u64; topics];
    let mut connection_errors = ConnectionErrors::default();
    let mut error_replies = BTreeMap::new();
    let mut unexpected_objects = 0;
    for task in publisher_tasks {
        let stats = join_within(task, join_limit, "publisher").await?;
        add_per_topic(&mut published, &stats.published);
        connection_errors.merge(&stats.errors);
        stats
            .oddities
            .merge_into(&mut error_replies, &mut unexpected_objects);
    }

    let mut latency = latency_histogram();
    let mut received = 0;
    let mut warmup_deliveries = 0;
    let mut subscribers_with_losses = 0;
    for task in subscriber_tasks {
        let stats = join_within(task, join_limit, "subscriber").await?;
        if stats.subscribed && stats.received < published[stats.topic] {
            subscribers_with_losses += 1;
        }
        received += stats.received;
        warmup_deliveries += stats.warmup;
        if let Some(histogram) = &stats.latency {
            latency
                .add(histogram)
                .context("merging latency histograms")?;
        }
        connection_errors.merge(&stats.errors);
        stats
            .oddities
            .merge_into(&mut error_replies, &mut unexpected_objects);
    }

    let expected = expected_deliveries(&subscribers_per_topic, &published);
    let publishes: u64 = published.iter().sum();
    let seconds = args.duration.as_secs_f64().max(f64::EPSILON);
    let node = args.node_pid.map(|pid| NodeMemory {
        pid,
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        rss_end_kib: rss_end,
        kib_per_connection: rss_before.zip(rss_connected).map(|(before, connected)| {
            connected.saturating_sub(before) as f64
                / (subscribers_ready + publishers_ready).max(1) as f64
        }),
    });
    Ok(FanoutReport {
        scenario: "fanout",
        settings: args.settings(),
        subscribers_ready,
        publishers_ready,
        setup_s,
        publishes,
        publishes_per_s: publishes as f64 / seconds,
        received,
        deliveries_per_s: received as f64 / seconds,
        expected,
        lost: expected.saturating_sub(received),
        extra: received.saturating_sub(expected),
        subscribers_with_losses,
        latency: LatencySummary::from_micros(&latency),
        connection_errors_total: connection_errors.total(),
        connection_errors,
        error_replies,
        unexpected_objects,
        warmup_deliveries,
        node,
    })
}

/// Prints, once a second until `until`, what was published and delivered.
async fn report_progress(progress: &Progress, start: Instant, until: Instant) {
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let (mut published, mut delivered) = (0, 0);
    while timeout_at(until, ticks.tick()).await.is_ok() {
        let now_published = progress.published.load(Ordering::Relaxed);
        let now_delivered = progress.delivered.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0} s] published {:>8}/s  delivered {:>9}/s",
            start.elapsed().as_secs_f64(),
            now_published - published,
            now_delivered - delivered
        );
        (published, delivered) = (now_published, now_delivered);
    }
}

/// Waits for `task` until `deadline`; a task still running then is aborted.
async fn join_within<T>(
    mut task: JoinHandle<T>,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<T> {
    match timeout_at(deadline, &mut task).await {
        Ok(result) => result.with_context(|| format!("a {what} task failed")),
        Err(_) => {
            task.abort();
            bail!("a {what} task did not finish in time")
        }
    }
}

/// Now, in Unix nanoseconds.
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Opens a WebSocket connection offering `ferrocast.v1.json`, with Nagle off.
async fn connect(url: &str) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (ws, _response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(ws)
}

/// Connects and subscribes to `topic`, waiting for the `ok` reply.
async fn connect_and_subscribe(shared: &Shared, url: &str, topic: &str) -> Result<Ws, SetupError> {
    // The semaphore is never closed.
    let _slot = shared.connect_slots.acquire().await;
    let mut ws = connect(url).await.map_err(|_| SetupError::Connect)?;
    let id = 1;
    ws.send(Message::text(subscribe_request(id, topic)))
        .await
        .map_err(|_| SetupError::Subscribe)?;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        for line in split_frame(text.as_str()) {
            match parse_object(line) {
                Ok(ServerEvent::Ok { id: Some(n) }) if n == id => return Ok(ws),
                Ok(ServerEvent::Error { id: Some(n), .. }) if n == id => {
                    return Err(SetupError::Subscribe)
                }
                _ => {}
            }
        }
    }
    Err(SetupError::Subscribe)
}

fn count_setup_failure(errors: &mut ConnectionErrors, failure: Option<SetupError>) {
    match failure {
        Some(SetupError::Connect) => errors.connect_failed += 1,
        Some(SetupError::Subscribe) => errors.subscribe_failed += 1,
        None => errors.setup_timeouts += 1,
    }
}

fn count_ending(errors: &mut ConnectionErrors, ending: Ending) {
    match ending {
        Ending::Done => {}
        Ending::ClosedByNode(code) => *errors.closed_by_node.entry(code).or_default() += 1,
        Ending::Dropped => errors.dropped += 1,
    }
}

fn close_code(frame: Option<&CloseFrame>) -> u16 {
    frame.map_or(1005, |f| u16::from(f.code))
}

/// One subscriber connection: subscribe, report readiness on `subscribed`
/// (its topic, or `None` on failure), then count deliveries until stopped.
async fn run_subscriber(
    shared: Arc<Shared>,
    index: usize,
    url: String,
    subscribed: mpsc::Sender<Option<usize>>,
) -> SubscriberStats {
    let topic_index = subscriber_topic(index, shared.topics.len());
    let topic = shared.topics[topic_index].as_str();
    let mut stats = SubscriberStats {
        topic: topic_index,
        subscribed: false,
        received: 0,
        warmup: 0,
        latency: None,
        errors: ConnectionErrors::default(),
        oddities: Oddities::default(),
    };
    let setup = timeout_at(
        shared.setup_deadline,
        connect_and_subscribe(&shared, &url, topic),
    )
    .await;
    let mut ws = match setup {
        Ok(Ok(ws)) => ws,
        Ok(Err(failure)) => {
            count_setup_failure(&mut stats.errors, Some(failure));
            let _ = subscribed.send(None).await;
            return stats;
        }
        Err(_) => {
            count_setup_failure(&mut stats.errors, None);
            let _ = subscribed.send(None).await;
            return stats;
        }
    };
    stats.subscribed = true;
    stats.latency = Some(latency_histogram());
    let _ = subscribed.send(Some(topic_index)).await;
    drop(subscribed);

    let ending = loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break Ending::Done,
            next = ws.next() => match next {
                Some(Ok(Message::Text(text))) => {
                    let n = stats.on_frame(text.as_str(), topic, shared.window.get());
                    shared.progress.delivered.fetch_add(n, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(frame))) => break Ending::ClosedByNode(close_code(frame.as_ref())),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Ending::Dropped,
            },
        }
    };
    count_ending(&mut stats.errors, ending);
    close(&mut ws, ending).await;
    stats
}

/// Ends the connection: a close handshake if it still stands, bounded in time.
async fn close(ws: &mut Ws, ending: Ending) {
    let handshake = async {
        if matches!(ending, Ending::Done) {
            ws.close(None).await?;
        }
        // Reading on completes the handshake (and answers a node's close).
        while ws.next().await.transpose()?.is_some() {}
        Ok::<_, tungstenite::Error>(())
    };
    let _ = timeout(CLOSE_WAIT, handshake).await;
}

/// One publisher connection: connect, report on `connected`, wait for the
/// schedule, publish at its share of the rate until the schedule ends, then
/// keep the connection (and read error replies) until the run stops.
async fn run_publisher(
    shared: Arc<Shared>,
    index: usize,
    url: String,
    connected: mpsc::Sender<bool>,
    mut start: watch::Receiver<Option<Schedule>>,
) -> PublisherStats {
    let mut stats = PublisherStats {
        published: vec![0; shared.topics.len()],
        errors: ConnectionErrors::default(),
        oddities: Oddities::default(),
    };
    let setup = timeout_at(shared.setup_deadline, async {
        let _slot = shared.connect_slots.acquire().await;
        connect(&url).await.map_err(|_| SetupError::Connect)
    })
    .await;
    let mut ws = match setup {
        Ok(Ok(ws)) => ws,
        Ok(Err(failure)) => {
            count_setup_failure(&mut stats.errors, Some(failure));
            let _ = connected.send(false).await;
            return stats;
        }
        Err(_) => {
            count_setup_failure(&mut stats.errors, None);
            let _ = connected.send(false).await;
            return stats;
        }
    };
    let _ = connected.send(true).await;
    drop(connected);

    let ending = match publish(&shared, index, &mut ws, &mut start, &mut stats).await {
        // Stay connected until the run stops; the node may still answer.
        Ending::Done => loop {
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => break Ending::Done,
                next = ws.next() => if let Some(ending) = on_publisher_message(next, &mut stats.oddities) {
                    break ending;
                },
            }
        },
        ending => ending,
    };
    count_ending(&mut stats.errors, ending);
    close(&mut ws, ending).await;
    stats
}

/// What a publisher does with one message from the node; `Some` ends the connection.
fn on_publisher_message(
    next: Option<Result<Message, tungstenite::Error>>,
    oddities: &mut Oddities,
) -> Option<Ending> {
    match next {
        Some(Ok(Message::Text(text))) => {
            for line in split_frame(text.as_str()) {
                oddities.note(parse_object(line));
            }
            None
        }
        Some(Ok(Message::Close(frame))) => Some(Ending::ClosedByNode(close_code(frame.as_ref()))),
        Some(Ok(_)) => None,
        Some(Err(_)) | None => Some(Ending::Dropped),
    }
}

/// The publishing loop of publisher `index`. Returns [`Ending::Done`] when the
/// schedule is over (or the run stopped before it began).
async fn publish(
    shared: &Shared,
    index: usize,
    ws: &mut Ws,
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
            next = ws.next() => if let Some(ending) = on_publisher_message(next, &mut stats.oddities) {
                return ending;
            },
        }
    };
    let Some(window) = shared.window.get().copied() else {
        return Ending::Done;
    };
    let rate = publisher_rate(shared.rate, shared.publishers);
    let period = tick_period(rate);
    // Publishers tick in turn, not all at once.
    let first_tick =
        schedule.start + period.mul_f64(index as f64 / shared.publishers.max(1) as f64);
    let mut ticks = tokio::time::interval_at(first_tick, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let topics = shared.topics.len();
    let mut sent = 0u64;
    loop {
        tokio::select! {
            biased;
            () = sleep_until(schedule.end) => return Ending::Done,
            next = ws.next() => if let Some(ending) = on_publisher_message(next, &mut stats.oddities) {
                return ending;
            },
            _ = ticks.tick() => {
                let now = Instant::now();
                if now >= schedule.end {
                    return Ending::Done;
                }
                let due = publishes_due(now.saturating_duration_since(first_tick), rate);
                let burst = async {
                    while sent < due {
                        let ts = unix_nanos();
                        let topic = publish_topic(index, sent, topics);
                        let request =
                            publish_request(&shared.topics[topic], ts, sent, shared.payload_bytes);
                        ws.feed(Message::text(request)).await?;
                        sent += 1;
                        shared.progress.published.fetch_add(1, Ordering::Relaxed);
                        if window.contains(ts) {
                            stats.published[topic] += 1;
                        }
                    }
                    ws.flush().await
                };
                match timeout_at(schedule.end + SEND_GRACE, burst).await {
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
    if rate <= 0.0 {
        return Duration::from_millis(100);
    }
    Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1))
}
