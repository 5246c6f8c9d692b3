//! The end-of-run report: a table for people, a JSON object for scripts.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs up to this (60 s); larger
/// values are recorded as this.
pub(crate) const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// A latency histogram of one task: microseconds with two significant digits
/// (values within 1 %). Every subscriber has one; with three digits each would
/// take about 140 KiB, too much for tens of thousands of subscribers.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 2)
        .expect("constant histogram bounds are valid")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LatencySummary {
    /// Deliveries the figures are computed from.
    pub(crate) samples: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl LatencySummary {
    pub(crate) fn from_micros(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            samples: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// What the run was asked to do.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutSettings {
    pub(crate) urls: Vec<String>,
    pub(crate) subscribers: usize,
    pub(crate) topics: usize,
    pub(crate) publishers: usize,
    /// Target publishes per second, all publishers together.
    pub(crate) rate: f64,
    pub(crate) payload_bytes: usize,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) grace_s: f64,
}

/// Connection trouble, by kind. Everything here is also an error of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct ConnectionErrors {
    /// TCP connect or WebSocket upgrade failed.
    pub(crate) connect_failed: u64,
    /// The node answered a subscribe with an error, or closed before the reply.
    pub(crate) subscribe_failed: u64,
    /// Connect and subscribe did not finish within the setup timeout.
    pub(crate) setup_timeouts: u64,
    /// Close frames received from the node during the run, by close code.
    pub(crate) closed_by_node: BTreeMap<u16, u64>,
    /// Connections that ended without a close frame (reset, EOF, protocol error).
    pub(crate) dropped: u64,
}

impl ConnectionErrors {
    pub(crate) fn total(&self) -> u64 {
        self.connect_failed
            + self.subscribe_failed
            + self.setup_timeouts
            + self.closed_by_node.values().sum::<u64>()
            + self.dropped
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        self.connect_failed += other.connect_failed;
        self.subscribe_failed += other.subscribe_failed;
        self.setup_timeouts += other.setup_timeouts;
        for (code, n) in &other.closed_by_node {
            *self.closed_by_node.entry(*code).or_default() += n;
        }
        self.dropped += other.dropped;
    }
}

/// Resident memory of the node under test, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct NodeMemory {
    pub(crate) pid: u32,
    /// Before the tool connected.
    pub(crate) rss_before_kib: Option<u64>,
    /// With every connection open and subscribed, before any publish.
    pub(crate) rss_connected_kib: Option<u64>,
    /// After the measured window, before the connections closed.
    pub(crate) rss_end_kib: Option<u64>,
    /// (connected − before) / connections.
    pub(crate) kib_per_connection: Option<f64>,
}

/// The result of a `fanout` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutReport {
    pub(crate) scenario: &'static str,
    pub(crate) settings: FanoutSettings,
    pub(crate) subscribers_ready: u64,
    pub(crate) publishers_ready: u64,
    /// Time to connect and subscribe everybody.
    pub(crate) setup_s: f64,
    /// Publications stamped inside the measured window.
    pub(crate) publishes: u64,
    pub(crate) publishes_per_s: f64,
    /// Deliveries of those publications that arrived before the grace ended.
    pub(crate) received: u64,
    pub(crate) deliveries_per_s: f64,
    /// Deliveries owed: each publication times the subscribers of its topic.
    pub(crate) expected: u64,
    /// expected − received, when positive.
    pub(crate) lost: u64,
    /// received − expected, when positive (duplicates).
    pub(crate) extra: u64,
    /// Subscribers that received fewer deliveries than they were owed.
    pub(crate) subscribers_with_losses: u64,
    /// Publish → delivery latency of the received deliveries.
    pub(crate) latency: LatencySummary,
    pub(crate) connection_errors: ConnectionErrors,
    pub(crate) connection_errors_total: u64,
    /// `error` objects the node sent (e.g. `rate_limited` on a publish).
    pub(crate) error_replies: BTreeMap<String, u64>,
    /// Objects that were not valid JSON, or deliveries of foreign data or topics.
    pub(crate) unexpected_objects: u64,
    /// Deliveries of warmup publications (not measured).
    pub(crate) warmup_deliveries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<NodeMemory>,
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "fanout: {} subscribers on {} topic(s), {} publisher(s) at {} publishes/s, \
             {}-byte payload, over {} URL(s)",
            s.subscribers,
            s.topics,
            s.publishers,
            s.rate,
            s.payload_bytes,
            s.urls.len()
        )?;
        writeln!(
            f,
            "measured {:.1} s after {:.1} s of warmup, then {:.1} s of grace; setup took {:.1} s",
            s.duration_s, s.warmup_s, s.grace_s, self.setup_s
        )?;
        writeln!(f)?;
        let mut rows: Vec<(&str, String)> = vec![
            (
                "connections ready",
                format!(
                    "{} subscribers, {} publishers",
                    self.subscribers_ready, self.publishers_ready
                ),
            ),
            ("publishes/s", format!("{:.1}", self.publishes_per_s)),
            ("deliveries/s", format!("{:.1}", self.deliveries_per_s)),
            ("latency p50", ms(self.latency.p50_ms)),
            ("latency p90", ms(self.latency.p90_ms)),
            ("latency p99", ms(self.latency.p99_ms)),
            ("latency p99.9", ms(self.latency.p999_ms)),
            ("latency max", ms(self.latency.max_ms)),
            ("latency mean", ms(self.latency.mean_ms)),
            ("publishes (window)", self.publishes.to_string()),
            ("deliveries expected", self.expected.to_string()),
            ("deliveries received", self.received.to_string()),
            (
                "deliveries lost",
                format!(
                    "{} ({:.4} %), {} subscriber(s) affected",
                    self.lost,
                    percent(self.lost, self.expected),
                    self.subscribers_with_losses
                ),
            ),
            ("deliveries extra", self.extra.to_string()),
            ("connection errors", self.connection_errors_line()),
            ("error replies", counts(&self.error_replies)),
            ("unexpected objects", self.unexpected_objects.to_string()),
        ];
        if let Some(node) = &self.node {
            rows.push(("node RSS", node_memory_line(node)));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in rows {
            writeln!(f, "  {key:<width$}  {value}")?;
        }
        Ok(())
    }
}

impl FanoutReport {
    fn connection_errors_line(&self) -> String {
        let e = &self.connection_errors;
        let mut line = self.connection_errors_total.to_string();
        if self.connection_errors_total > 0 {
            let closes = e
                .closed_by_node
                .iter()
                .map(|(code, n)| format!("{n}×{code}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = write!(
                line,
                " (connect {}, subscribe {}, setup timeout {}, closed by node [{}], dropped {})",
                e.connect_failed, e.subscribe_failed, e.setup_timeouts, closes, e.dropped
            );
        }
        line
    }
}

fn ms(value: f64) -> String {
    format!("{value:.3} ms")
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "0".into();
    }
    map.iter()
        .map(|(k, n)| format!("{n}×{k}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn node_memory_line(node: &NodeMemory) -> String {
    let mib = |kib: Option<u64>| {
        kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "?".into())
    };
    let mut line = format!(
        "pid {}: before {}, connected {}, end {}",
        node.pid,
        mib(node.rss_before_kib),
        mib(node.rss_connected_kib),
        mib(node.rss_end_kib)
    );
    if let Some(per) = node.kib_per_connection {
        let _ = write!(line, "; {per:.1} KiB per idle connection");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let mut histogram = latency_histogram();
        for micros in 1..=1000 {
            histogram.record(micros).unwrap();
        }
        histogram.saturating_record(LATENCY_MAX_MICROS * 10);
        let summary = LatencySummary::from_micros(&histogram);
        assert_eq!(summary.samples, 1001);
        assert!((summary.p50_ms - 0.5).abs() <= 0.005, "{summary:?}");
        assert!((summary.p99_ms - 0.99).abs() <= 0.01, "{summary:?}");
        assert!((summary.max_ms - 60_000.0).abs() <= 600.0, "{summary:?}");
        assert_eq!(
            LatencySummary::from_micros(&latency_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn connection_errors_merge_and_total() {
        let mut a = ConnectionErrors {
            connect_failed: 1,
            ..ConnectionErrors::default()
        };
        let mut b = ConnectionErrors {
            dropped: 2,
            ..ConnectionErrors::default()
        };
        b.closed_by_node.insert(4000, 3);
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.closed_by_node[&4000], 6);
        assert_eq!(a.total(), 1 + 4 + 6);
    }
}
