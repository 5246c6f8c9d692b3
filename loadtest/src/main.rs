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
mod scenario;
mod soak;
mod stomp;
mod storm;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use clap::{Parser, Subcommand};

use crate::coord::{serve, serve_as_child, Conductor, Share, WorkerLink};
use crate::scenario::{Scenario, ScenarioReport as _};

const ABOUT: &str = "Load generator for ferrocast: many WebSocket clients; rates, latency, losses.";
const LONG_ABOUT: &str = "\
Load generator for ferrocast.

Opens real WebSocket connections to one or more ferrocast nodes, speaking the
native JSON protocol (ferrocast.v1.json) or STOMP 1.2 (--protocol stomp), and
reports what the scenario measures: connection rates, publish to delivery
latency (from a timestamp carried in each publication; generator and node must
share a clock, i.e. run on the same machine), throughput, losses, disconnects
(by close code), and the nodes' memory and CPU (--node-pid, --node-metrics).

Scenarios: idle, fanout, cross-node, churn, reconnect-storm, soak (see
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
    scenario: Command,
}

/// The scenarios, by name.
#[derive(Debug, Clone, Subcommand)]
enum Command {
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

    /// Connect, subscribe, publish, disconnect, many times over: whether the
    /// node gives back its memory, file descriptors and connections.
    #[command(long_about = soak::ABOUT)]
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        json: cli.json,
        quiet: cli.quiet,
        chart: cli.chart,
        workers: cli.workers,
        threads: cli.threads,
        worker_share: cli.worker_share,
    };
    let ran = match cli.scenario {
        Command::Idle(args) => run(args, &options),
        Command::Fanout(args) => run(fanout::Plan::from(args), &options),
        Command::CrossNode(args) => run(fanout::Plan::from(args), &options),
        Command::Churn(args) => run(args, &options),
        Command::ReconnectStorm(args) => run(args, &options),
        Command::Soak(args) => run(args, &options),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferrocast-loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The options every scenario takes.
#[derive(Debug)]
struct Options {
    json: bool,
    quiet: bool,
    chart: Option<PathBuf>,
    workers: Option<u16>,
    threads: Option<u16>,
    worker_share: Option<Share>,
}

/// The client side of `scenario` in one worker, its result as JSON for the
/// parent.
async fn work<S: Scenario>(scenario: S, link: WorkerLink) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(scenario.work(link).await?)?)
}

/// Runs `scenario`: as a worker process when this is one, else as the parent
/// of as many workers as it needs, printing its report.
fn run<S: Scenario>(scenario: S, cli: &Options) -> anyhow::Result<()> {
    let open_files = host::raise_open_files_limit()?;
    let per_process = open_files.saturating_sub(SPARE_FDS).max(1);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = builder.build().context("starting the async runtime")?;

    if let Some(share) = cli.worker_share {
        coord::exit_after(scenario.time_limit() + WORKER_EXIT_SLACK);
        runtime.block_on(serve_as_child(share, per_process, move |link| {
            work(scenario, link)
        }));
        runtime.shutdown_timeout(Duration::from_secs(1));
        return Ok(());
    }

    let connections = scenario.connections();
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
        let worker = scenario.clone();
        let mut conductor = Conductor::start(workers, connections, cli.quiet, move |up, down| {
            serve(Share::WHOLE, per_process, up, down, move |link| {
                work(worker, link)
            })
        })?;
        let report = scenario.conduct(&mut conductor).await;
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
