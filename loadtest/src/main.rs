//! `ferrocast-loadtest`: drives ferrocast nodes with many real WebSocket
//! clients and reports throughput, publish→delivery latency and losses.
//! See `ferrocast-loadtest --help`.

mod accounting;
mod fanout;
mod host;
mod report;
mod wire;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

const ABOUT: &str =
    "Load generator for ferrocast: many WebSocket clients, latency and loss report.";
const LONG_ABOUT: &str = "\
Load generator for ferrocast.

Opens real WebSocket connections to one or more ferrocast nodes, speaks the
native JSON protocol (ferrocast.v1.json), and reports throughput, publish to
delivery latency (from a timestamp carried in each publication; generator and
node must share a clock, i.e. run on the same machine) and lost deliveries.

Every run is bounded in time and stops by itself: setup is limited by
--setup-timeout, then warmup, the measured duration and a grace period for the
last deliveries. Traffic goes only to the URLs given with --url.

At start the soft limit on open files is raised to the hard limit; each
connection takes one file descriptor.

The exit status is 0 when the run completed (whatever it measured), 1 when it
could not run (bad arguments, nobody could connect).";

/// Command line of `ferrocast-loadtest`.
#[derive(Debug, Parser)]
#[command(name = "ferrocast-loadtest", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// Print the report as one JSON object on stdout instead of a table.
    #[arg(long, global = true, display_order = 100)]
    json: bool,

    /// Print no progress lines on stderr.
    #[arg(long, global = true, display_order = 100)]
    quiet: bool,

    /// Worker threads of the async runtime. [default: one per CPU core]
    #[arg(long, global = true, display_order = 100, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Many subscribers spread over a few topics, a few publishers at a fixed
    /// total rate: measures fan-out throughput, latency and losses.
    #[command(long_about = fanout::LONG_ABOUT)]
    Fanout(fanout::FanoutArgs),
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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = builder.build().context("starting the async runtime")?;
    let result = match cli.scenario {
        Scenario::Fanout(args) => runtime
            .block_on(fanout::run(args, open_files, !cli.quiet))
            .and_then(|report| {
                if cli.json {
                    let json = serde_json::to_string_pretty(&report)?;
                    println!("{json}");
                } else {
                    print!("{report}");
                }
                Ok(())
            }),
    };
    // Every task ends by itself; do not wait on a straggler.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
