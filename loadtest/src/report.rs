//! What every report shares: connection errors, odd replies, latency rows and
//! the table layout. Each scenario's report is built in its own module.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::client::{Ending, SetupError};
use crate::latency::LatencySummary;
use crate::wire::ServerEvent;

/// Connection trouble, by kind. Everything here is also an error of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConnectionErrors {
    /// TCP connect, WebSocket upgrade or STOMP CONNECT failed.
    pub(crate) connect_failed: u64,
    /// The node answered a subscribe with an error, or closed before the reply.
    pub(crate) subscribe_failed: u64,
    /// Connect and subscribe did not finish within the setup timeout.
    pub(crate) setup_timeouts: u64,
    /// Close frames received from the node during the run, by close code
    /// (4000 slow consumer, 1012 drain, 1013 overloaded, …).
    pub(crate) closed_by_node: BTreeMap<u16, u64>,
    /// Connections that ended without a close frame (reset, EOF, protocol error).
    pub(crate) dropped: u64,
}

impl ConnectionErrors {
    pub(crate) fn total(&self) -> u64 {
        self.setup_failures() + self.disconnects()
    }

    pub(crate) fn setup_failures(&self) -> u64 {
        self.connect_failed + self.subscribe_failed + self.setup_timeouts
    }

    /// Connections the node closed or that broke after setup.
    pub(crate) fn disconnects(&self) -> u64 {
        self.closed_by_node.values().sum::<u64>() + self.dropped
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

    pub(crate) fn count_setup(&mut self, error: SetupError) {
        match error {
            SetupError::Connect => self.connect_failed += 1,
            SetupError::Subscribe => self.subscribe_failed += 1,
            SetupError::Timeout => self.setup_timeouts += 1,
        }
    }

    pub(crate) fn count_ending(&mut self, ending: Ending) {
        match ending {
            Ending::Done => {}
            Ending::ClosedByNode(code) => *self.closed_by_node.entry(code).or_default() += 1,
            Ending::Dropped => self.dropped += 1,
        }
    }

    /// `0`, or the total and its parts.
    pub(crate) fn line(&self) -> String {
        let total = self.total();
        if total == 0 {
            return "0".into();
        }
        let closes = self
            .closed_by_node
            .iter()
            .map(|(code, n)| format!("{n}×{code}"))
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{total} (connect {}, subscribe {}, setup timeout {}, closed by node [{closes}], dropped {})",
            self.connect_failed, self.subscribe_failed, self.setup_timeouts, self.dropped
        )
    }
}

/// Objects that were neither deliveries of ours nor expected replies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Oddities {
    /// `error` objects (STOMP `ERROR` frames) by code.
    pub(crate) error_replies: BTreeMap<String, u64>,
    /// Invalid objects, deliveries of foreign data or of other topics.
    pub(crate) unexpected: u64,
}

impl Oddities {
    pub(crate) fn note(&mut self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::Error { code, .. } => {
                *self.error_replies.entry(code).or_default() += 1;
            }
            ServerEvent::Ok { .. } | ServerEvent::Other => {}
            ServerEvent::Delivery { .. } | ServerEvent::ForeignDelivery => self.unexpected += 1,
        }
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (code, n) in &other.error_replies {
            *self.error_replies.entry(code.clone()).or_default() += n;
        }
        self.unexpected += other.unexpected;
    }
}

/// What went wrong with connections and replies, as every report shows it
/// (flattened into the report's JSON object).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Trouble {
    /// Connections the node closed (any close code) or that broke after setup.
    pub(crate) disconnects: u64,
    pub(crate) connection_errors: ConnectionErrors,
    pub(crate) connection_errors_total: u64,
    /// `error` objects (STOMP `ERROR` frames) the node sent, by code.
    pub(crate) error_replies: BTreeMap<String, u64>,
    /// Objects that were not valid, or deliveries of foreign data or topics.
    pub(crate) unexpected_objects: u64,
}

impl Trouble {
    pub(crate) fn new(errors: ConnectionErrors, oddities: Oddities) -> Self {
        Self {
            disconnects: errors.disconnects(),
            connection_errors_total: errors.total(),
            connection_errors: errors,
            error_replies: oddities.error_replies,
            unexpected_objects: oddities.unexpected,
        }
    }

    pub(crate) fn rows(&self) -> Vec<(String, String)> {
        let errors = if self.error_replies.is_empty() {
            "0".into()
        } else {
            self.error_replies
                .iter()
                .map(|(k, n)| format!("{n}×{k}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        vec![
            ("disconnects".into(), self.disconnects.to_string()),
            ("connection errors".into(), self.connection_errors.line()),
            ("error replies".into(), errors),
            (
                "unexpected objects".into(),
                self.unexpected_objects.to_string(),
            ),
        ]
    }
}

/// A two-column table: a heading, then `key  value` rows.
#[derive(Debug, Default)]
pub(crate) struct Table {
    heading: Vec<String>,
    rows: Vec<(String, String)>,
}

impl Table {
    pub(crate) fn heading(&mut self, line: impl Into<String>) -> &mut Self {
        self.heading.push(line.into());
        self
    }

    pub(crate) fn row(&mut self, key: impl Into<String>, value: impl fmt::Display) -> &mut Self {
        self.rows.push((key.into(), value.to_string()));
        self
    }

    pub(crate) fn rows(&mut self, rows: impl IntoIterator<Item = (String, String)>) -> &mut Self {
        self.rows.extend(rows);
        self
    }

    /// p50 … max rows of `summary`, each key prefixed with `what`.
    pub(crate) fn latency(&mut self, what: &str, summary: &LatencySummary) -> &mut Self {
        for (name, value) in [
            ("p50", summary.p50_ms),
            ("p90", summary.p90_ms),
            ("p99", summary.p99_ms),
            ("p99.9", summary.p999_ms),
            ("max", summary.max_ms),
            ("mean", summary.mean_ms),
        ] {
            self.row(format!("{what} {name}"), format!("{value:.3} ms"));
        }
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.heading {
            writeln!(f, "{line}")?;
        }
        if !self.heading.is_empty() {
            writeln!(f)?;
        }
        let width = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (key, value) in &self.rows {
            writeln!(f, "  {key:<width$}  {value}")?;
        }
        Ok(())
    }
}

pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `count / seconds`, 0 for an empty span.
pub(crate) fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_merge_and_total() {
        let mut a = ConnectionErrors::default();
        a.count_setup(SetupError::Connect);
        let mut b = ConnectionErrors::default();
        b.count_ending(Ending::Dropped);
        b.count_ending(Ending::Dropped);
        b.count_ending(Ending::Done);
        for _ in 0..3 {
            b.count_ending(Ending::ClosedByNode(4000));
        }
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.closed_by_node[&4000], 6);
        assert_eq!(a.disconnects(), 4 + 6);
        assert_eq!(a.total(), 1 + 4 + 6);
        assert_eq!(
            a.line(),
            "11 (connect 1, subscribe 0, setup timeout 0, closed by node [6×4000], dropped 4)"
        );
        assert_eq!(ConnectionErrors::default().line(), "0");
    }

    #[test]
    fn the_table_aligns_its_values() {
        let mut table = Table::default();
        table.heading("run").row("a", 1).row("longer key", "x");
        assert_eq!(
            table.to_string(),
            "run\n\n  a           1\n  longer key  x\n"
        );
    }
}
