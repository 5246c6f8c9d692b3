//! `ferrocast-loadtest`: drives ferrocast nodes with many real WebSocket
//! clients and reports connection rates, throughput, publish→delivery
//! latency, losses, disconnects and what the nodes spent.
//! See `ferrocast-loadtest --help`.

mod accounting;
mod chart;
mod churn;
mod client;
mod coord;
mod fanout;
mod host;
mod idle;
mod latency;
mod progress;
mod report;
mod stomp;
mod storm;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::coord::{serve, serve_as_child, Conductor, Share, WorkerLink};

const ABOUT: &str = "Load generator for ferrocast: many WebSocket clients; rates, latency, losses.";
const LONG_ABOUT: &str = "\
Load generator for ferrocast.

Opens real WebSocket connections to one or more ferrocast nodes, speaking the
native JSON protocol (ferrocast.v1.json) or STOMP 1.2 (--protocol stomp), and
reports what the scenario measures: connection rates, publish to delivery
latency (from a timestamp carried in each publication; generator and node must
share a clock, i.e. run on the same machine), throughput, losses, disconnects
(by close code), and the nodes' memory and CPU (--node-pid, --node-metrics).

Scenarios: idle, fanout, cross-node, churn, reconnect-storm (see
`ferrocast-loadtest <scenario> --help`).

Every run is bounded in time and stops by itself. Traffic goes only to the URLs
given; the only process ever signalled is the --kill-pid of reconnect-storm.

File descriptors: at start the soft limit on open files is raised to the hard
limit (`ulimit -Hn`); each connection takes one. A run that needs more
connections than one process may open (the limit less a reserve of 64, e.g.
19,936 under a hard limit of 20,000) is spread over worker processes
automatically; --workers asks for more. Workers are the tool's own binary,
re-executed; the parent merges their counts and histograms into one report.

Ephemeral ports: Linux gives each local address about 28,000 ports towards one
node address. Beyond that, bind the clients to several loopback addresses with
--source-addrs 127.0.0.1-127.0.0.8.

Output: a status line on stderr while running (a plain line every 5 s when
stderr is not a terminal; none with --quiet), a summary table on stdout at the
end, or one JSON object with --json; --chart FILE.svg|FILE.html writes the
latency distribution and per-second counts as a self-contained chart.

The exit status is 0 when the run completed (whatever it measured), 1 when it
could not run (bad arguments, nobody could connect, a worker failed).";

/// File descriptors kept free for everything but connections.
const SPARE_FDS: u64 = 64;
/// Time a worker process gets past its scenario's own time limit.
const WORKER_EXIT_SLACK: Duration = Duration::from_secs(30);

/// Command line of `ferrocast-loadtest`.
#[derive(Debug, Parser)]
#[command(name = "ferrocast-loadtest", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// Print the report as one JSON object on stdout instead of a table.
    #[arg(long, global = true, display_order = 100)]
    json: bool,

    /// Print no status line on stderr.
    #[arg(long, global = true, display_order = 100)]
    quiet: bool,

    /// Write a chart of the latency distribution and of the per-second counts
    /// to FILE: SVG (FILE.svg) or an HTML page with the summary (FILE.html).
    #[arg(long, global = true, display_order = 100, value_name = "FILE")]
    chart: Option<PathBuf>,

    /// Worker processes sharing the connections. [default: as many as the
    /// open-files limit requires, at least 1]
    #[arg(long, global = true, display_order = 100, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// Worker threads of the async runtime, per process. [default: one per CPU core]
    #[arg(long, global = true, display_order = 100, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// Set by the tool itself on its worker processes: this process takes
    /// share I of N and talks to its parent over stdin/stdout.
    #[arg(long = "worker-share", global = true, hide = true, value_name = "I/N",
          value_parser = Share::parse)]
    worker_share: Option<Share>,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// N subscribed connections held open: setup rate, node memory per
    /// connection and idle CPU, and a delivery check at the end.
    #[command(long_about = idle::ABOUT)]
    Idle(idle::IdleArgs),

    /// Subscribers spread over topics, publishers at a rate or in a burst:
    /// deliveries/s, latency, losses, disconnects.
    #[command(long_about = fanout::FANOUT_ABOUT)]
    Fanout(fanout::FanoutArgs),

    /// Like fanout, with publishers and subscribers on different nodes.
    #[command(long_about = fanout::CROSS_NODE_ABOUT)]
    CrossNode(fanout::CrossNodeArgs),

    /// Connect, subscribe, hold briefly, disconnect, at a rate: achieved
    /// rate, connect and subscribe latency, errors.
    #[command(long_about = churn::ABOUT)]
    Churn(churn::ChurnArgs),

    /// Signal a node while clients listen: time until all are back,
    /// messages missed, duplicates, recovery.
    #[command(long_about = storm::ABOUT)]
    ReconnectStorm(storm::StormArgs),
}

impl Scenario {
    /// Connections open at once at most, all processes together (0: unknown
    /// in advance).
    fn connections(&self) -> u64 {
        match self {
            Self::Idle(a) => u64::from(a.connections),
            Self::Fanout(a) => a.traffic.connections(),
            Self::CrossNode(a) => a.traffic.connections(),
            Self::Churn(_) => 0,
            Self::ReconnectStorm(a) => u64::from(a.subscribers) + 1,
        }
    }

    /// Longest the client side can take.
    fn time_limit(&self) -> Duration {
        match self {
            Self::Idle(a) => a.time_limit(),
            Self::Fanout(a) => a.traffic.time_limit(),
            Self::CrossNode(a) => a.traffic.time_limit(),
            Self::Churn(a) => a.time_limit(),
            Self::ReconnectStorm(a) => a.time_limit(),
        }
    }
}

/// The client side of any scenario, in one worker.
async fn work(scenario: Scenario, link: WorkerLink) -> anyhow::Result<serde_json::Value> {
    Ok(match scenario {
        Scenario::Idle(args) => serde_json::to_value(idle::work(args, link).await?)?,
        Scenario::Fanout(args) => serde_json::to_value(fanout::work(args.into(), link).await?)?,
        Scenario::CrossNode(args) => serde_json::to_value(fanout::work(args.into(), link).await?)?,
        Scenario::Churn(args) => serde_json::to_value(churn::work(args, link).await?)?,
        Scenario::ReconnectStorm(args) => serde_json::to_value(storm::work(args, link).await?)?,
    })
}

/// The report of any scenario.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Report {
    Idle(idle::IdleReport),
    Fanout(fanout::FanoutReport),
    Churn(churn::ChurnReport),
    Storm(storm::StormReport),
}

impl Report {
    fn table(&self) -> report::Table {
        match self {
            Self::Idle(r) => r.table(),
            Self::Fanout(r) => r.table(),
            Self::Churn(r) => r.table(),
            Self::Storm(r) => r.table(),
        }
    }

    fn chart(&self) -> chart::Chart<'_> {
        match self {
            Self::Idle(r) => r.chart(),
            Self::Fanout(r) => r.chart(),
            Self::Churn(r) => r.chart(),
            Self::Storm(r) => r.chart(),
        }
    }
}

/// The parent side of any scenario.
async fn conduct(scenario: &Scenario, conductor: &mut Conductor) -> anyhow::Result<Report> {
    Ok(match scenario {
        Scenario::Idle(args) => Report::Idle(idle::conduct(args, conductor).await?),
        Scenario::Fanout(args) => {
            Report::Fanout(fanout::conduct(&args.clone().into(), conductor).await?)
        }
        Scenario::CrossNode(args) => {
            Report::Fanout(fanout::conduct(&args.clone().into(), conductor).await?)
        }
        Scenario::Churn(args) => Report::Churn(churn::conduct(args, conductor).await?),
        Scenario::ReconnectStorm(args) => Report::Storm(storm::conduct(args, conductor).await?),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferrocast-loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let open_files = host::raise_open_files_limit()?;
    let per_process = open_files.saturating_sub(SPARE_FDS).max(1);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = builder.build().context("starting the async runtime")?;

    if let Some(share) = cli.worker_share {
        coord::exit_after(cli.scenario.time_limit() + WORKER_EXIT_SLACK);
        let scenario = cli.scenario;
        runtime.block_on(serve_as_child(share, per_process, move |link| {
            work(scenario, link)
        }));
        runtime.shutdown_timeout(Duration::from_secs(1));
        return Ok(());
    }

    let connections = cli.scenario.connections();
    let needed = usize::try_from(connections.div_ceil(per_process))
        .unwrap_or(usize::MAX)
        .max(1);
    let asked = cli.workers.map_or(1, usize::from);
    let workers = asked.max(needed);
    ensure!(
        workers <= usize::from(u16::MAX),
        "{connections} connections would need {workers} worker processes"
    );
    if workers > asked && !cli.quiet {
        eprintln!(
            "ferrocast-loadtest: {connections} connections exceed what one process may open \
             ({per_process}); using {workers} worker processes"
        );
    }
    let result = runtime.block_on(async {
        let scenario = cli.scenario.clone();
        let mut conductor = Conductor::start(workers, connections, cli.quiet, move |up, down| {
            serve(Share::WHOLE, per_process, up, down, move |link| {
                work(scenario, link)
            })
        })?;
        let report = conduct(&cli.scenario, &mut conductor).await;
        conductor.finish().await;
        report
    });
    let output = result.and_then(|report| {
        let table = report.table().to_string();
        if let Some(path) = &cli.chart {
            report.chart().write(path, &table)?;
        }
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{table}");
        }
        Ok(())
    });
    // Every task ends by itself; do not wait on a straggler.
    runtime.shutdown_timeout(Duration::from_secs(1));
    output
}
