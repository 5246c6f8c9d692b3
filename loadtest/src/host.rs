//! What the tool needs from the machine it runs on: file descriptors for its
//! connections, and the resident memory and CPU time of the nodes under test,
//! read from `/proc/<pid>` or from a node's `/metrics` (`process_*` series).

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// `/proc/<pid>/stat` counts CPU time in these ticks (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// Longest wait for a node's `/metrics`.
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/metrics` response read.
const METRICS_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Raises the soft limit on open files to the hard limit and returns it.
pub(crate) fn raise_open_files_limit() -> anyhow::Result<u64> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("reading the open-files limit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("raising the open-files limit from {soft} to {hard}"))?;
    }
    Ok(hard)
}

/// `VmRSS` of process `pid` in KiB, if the process exists and is readable.
pub(crate) fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&status)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` file, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
}

/// User + system CPU time of process `pid` in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_seconds(&stat)
}

/// `utime` + `stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The sum of every series of metric `name` (any labels) in a Prometheus
/// text exposition; `None` when it has no such series.
pub(crate) fn metric_sum(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labels) => labels.split_once('}')?.1,
                // Another metric whose name starts with `name`.
                None if !rest.starts_with(' ') => return None,
                None => rest,
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .reduce(|a, b| a + b)
}

/// `process_resident_memory_bytes` (as KiB) and `process_cpu_seconds_total`
/// of a Prometheus text exposition.
fn parse_process_metrics(text: &str) -> Sample {
    Sample {
        rss_kib: metric_sum(text, "process_resident_memory_bytes")
            .map(|bytes| (bytes / 1024.0) as u64),
        cpu_s: metric_sum(text, "process_cpu_seconds_total"),
    }
}

/// Fetches `url` (plain `http://host:port/path`) with HTTP/1.0 and returns the body.
pub(crate) async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let fetch = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream
            .take(METRICS_MAX_BYTES)
            .read_to_end(&mut response)
            .await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = timeout(METRICS_TIMEOUT, fetch)
        .await
        .with_context(|| format!("{url} did not answer in time"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url}: malformed HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200"),
        "{url}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_owned())
}

/// Which nodes to watch; shared by every scenario.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct NodeArgs {
    /// Process id of a node under test on this machine: its resident memory
    /// and CPU time are read from /proc/<PID>. Repeat for several nodes.
    #[arg(long = "node-pid", value_name = "PID")]
    pub(crate) pids: Vec<u32>,

    /// A node's metrics URL (http://127.0.0.1:8081/metrics): its
    /// process_resident_memory_bytes and process_cpu_seconds_total are read,
    /// for nodes that export them. Repeat for several nodes.
    #[arg(long = "node-metrics", value_name = "URL")]
    pub(crate) metrics: Vec<String>,
}

/// One reading of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    rss_kib: Option<u64>,
    cpu_s: Option<f64>,
}

#[derive(Debug, Clone)]
enum Probe {
    Pid(u32),
    Metrics(String),
}

impl Probe {
    fn name(&self) -> String {
        match self {
            Self::Pid(pid) => format!("pid {pid}"),
            Self::Metrics(url) => url.clone(),
        }
    }

    async fn sample(&self) -> Sample {
        match self {
            Self::Pid(pid) => Sample {
                rss_kib: resident_kib(*pid),
                cpu_s: cpu_seconds(*pid),
            },
            Self::Metrics(url) => http_get(url)
                .await
                .map(|body| parse_process_metrics(&body))
                .unwrap_or_default(),
        }
    }
}

/// Readings of every watched node at the points of a run that matter.
#[derive(Debug)]
pub(crate) struct NodeWatch {
    probes: Vec<Probe>,
    before: Vec<Sample>,
    connected: Vec<Sample>,
    end: Vec<Sample>,
    measured_from: Option<Instant>,
    measured_s: f64,
}

impl NodeWatch {
    pub(crate) fn new(args: &NodeArgs) -> Self {
        let probes: Vec<Probe> = args
            .pids
            .iter()
            .map(|pid| Probe::Pid(*pid))
            .chain(args.metrics.iter().cloned().map(Probe::Metrics))
            .collect();
        Self {
            before: Vec::new(),
            connected: Vec::new(),
            end: Vec::new(),
            probes,
            measured_from: None,
            measured_s: 0.0,
        }
    }

    async fn sample_all(&self) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(self.probes.len());
        for probe in &self.probes {
            samples.push(probe.sample().await);
        }
        samples
    }

    /// Before the first connection.
    pub(crate) async fn before(&mut self) {
        self.before = self.sample_all().await;
    }

    /// Every connection is ready; CPU is measured from here to [`Self::end`].
    pub(crate) async fn connected(&mut self) {
        self.connected = self.sample_all().await;
        self.measured_from = Some(Instant::now());
    }

    pub(crate) async fn end(&mut self) {
        self.end = self.sample_all().await;
        self.measured_s = self
            .measured_from
            .map_or(0.0, |from| from.elapsed().as_secs_f64());
    }

    /// One line per node, and the memory per connection over all of them.
    pub(crate) fn report(&self, connections: u64) -> NodesReport {
        let get = |samples: &[Sample], i: usize| samples.get(i).copied().unwrap_or_default();
        let nodes: Vec<NodeUsage> = self
            .probes
            .iter()
            .enumerate()
            .map(|(i, probe)| {
                let (before, connected, end) = (
                    get(&self.before, i),
                    get(&self.connected, i),
                    get(&self.end, i),
                );
                NodeUsage {
                    node: probe.name(),
                    rss_before_kib: before.rss_kib,
                    rss_connected_kib: connected.rss_kib,
                    rss_end_kib: end.rss_kib,
                    cpu_percent: connected
                        .cpu_s
                        .zip(end.cpu_s)
                        .filter(|_| self.measured_s > 0.0)
                        .map(|(from, to)| (to - from).max(0.0) * 100.0 / self.measured_s),
                }
            })
            .collect();
        // Over the nodes that could be read (a node given both by PID and by
        // metrics URL would count twice).
        let growth: Vec<u64> = nodes
            .iter()
            .filter_map(|n| {
                n.rss_connected_kib
                    .zip(n.rss_before_kib)
                    .map(|(c, b)| c.saturating_sub(b))
            })
            .collect();
        NodesReport {
            kib_per_connection: (!growth.is_empty() && connections > 0)
                .then(|| growth.iter().sum::<u64>() as f64 / connections as f64),
            cpu_percent: nodes
                .iter()
                .filter_map(|n| n.cpu_percent)
                .reduce(|a, b| a + b),
            measured_s: self.measured_s,
            nodes,
        }
    }
}

/// Memory and CPU of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NodeUsage {
    /// `pid N` or the metrics URL.
    pub(crate) node: String,
    /// Before the tool connected.
    pub(crate) rss_before_kib: Option<u64>,
    /// With every connection open and subscribed.
    pub(crate) rss_connected_kib: Option<u64>,
    /// At the end of the measured part, before the connections closed.
    pub(crate) rss_end_kib: Option<u64>,
    /// CPU time over the measured part, in % of one core.
    pub(crate) cpu_percent: Option<f64>,
}

/// Every watched node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct NodesReport {
    pub(crate) nodes: Vec<NodeUsage>,
    /// Σ (connected − before) over the nodes that could be read / connections ready.
    pub(crate) kib_per_connection: Option<f64>,
    /// Σ CPU % of one core over the nodes that could be read.
    pub(crate) cpu_percent: Option<f64>,
    /// Length of the part CPU was measured over, in seconds.
    pub(crate) measured_s: f64,
}

impl NodesReport {
    /// Table rows: one per node, then the totals.
    pub(crate) fn rows(&self) -> Vec<(String, String)> {
        let mib = |kib: Option<u64>| {
            kib.map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        };
        let mut rows: Vec<(String, String)> = self
            .nodes
            .iter()
            .map(|n| {
                (
                    format!("node {}", n.node),
                    format!(
                        "RSS before {}, connected {}, end {}; CPU {}",
                        mib(n.rss_before_kib),
                        mib(n.rss_connected_kib),
                        mib(n.rss_end_kib),
                        n.cpu_percent
                            .map_or_else(|| "?".into(), |p| format!("{p:.2} % of one core")),
                    ),
                )
            })
            .collect();
        if let Some(per) = self.kib_per_connection {
            rows.push(("node RSS per connection".into(), format!("{per:.2} KiB")));
        }
        if let Some(cpu) = self.cpu_percent {
            rows.push((
                "node CPU".into(),
                format!("{cpu:.2} % of one core over {:.1} s", self.measured_s),
            ));
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tferrocast\nVmPeak:\t  900 kB\nVmRSS:\t   41236 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(41_236));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert!(resident_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat() {
        let stat = "4242 (ferro (cast) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 125 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat_cpu_seconds(stat), Some(3.75));
        assert_eq!(parse_stat_cpu_seconds("1 (x) S 1"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn process_metrics_are_read_from_the_exposition() {
        let text = "# HELP process_cpu_seconds_total CPU\n# TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.5\nprocess_resident_memory_bytes{node=\"a\"} 2097152\n\
                    ferrocast_connections 3\n";
        assert_eq!(
            parse_process_metrics(text),
            Sample {
                rss_kib: Some(2048),
                cpu_s: Some(12.5)
            }
        );
        assert_eq!(
            parse_process_metrics("ferrocast_connections 3\n"),
            Sample::default()
        );
    }

    #[test]
    fn a_metric_is_summed_over_its_series() {
        let text = "# TYPE ferrocast_connections gauge\n\
                    ferrocast_connections{protocol=\"json\"} 3\n\
                    ferrocast_connections{protocol=\"stomp\"} 2\n\
                    ferrocast_connections_opened_total{protocol=\"json\"} 40\n\
                    ferrocast_topics 7\n";
        assert_eq!(metric_sum(text, "ferrocast_connections"), Some(5.0));
        assert_eq!(metric_sum(text, "ferrocast_topics"), Some(7.0));
        assert_eq!(metric_sum(text, "ferrocast_subscriptions"), None);
    }

    #[test]
    fn memory_per_connection_sums_the_growth_of_every_node() {
        let mut watch = NodeWatch::new(&NodeArgs {
            pids: vec![1, 2],
            metrics: vec![],
        });
        watch.before = vec![
            Sample {
                rss_kib: Some(1000),
                cpu_s: Some(1.0),
            },
            Sample {
                rss_kib: Some(2000),
                cpu_s: Some(2.0),
            },
        ];
        watch.connected = vec![
            Sample {
                rss_kib: Some(5000),
                cpu_s: Some(1.0),
            },
            Sample {
                rss_kib: Some(8000),
                cpu_s: Some(2.5),
            },
        ];
        watch.end = vec![
            Sample {
                rss_kib: Some(5000),
                cpu_s: Some(1.1),
            },
            Sample {
                rss_kib: Some(8000),
                cpu_s: Some(2.7),
            },
        ];
        watch.measured_s = 10.0;
        let report = watch.report(1000);
        assert_eq!(report.kib_per_connection, Some(10.0));
        assert_eq!(report.nodes[0].node, "pid 1");
        let cpu = report.cpu_percent.unwrap();
        assert!((cpu - 3.0).abs() < 1e-9, "{cpu}");
    }
}
