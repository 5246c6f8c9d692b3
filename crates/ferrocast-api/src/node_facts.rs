//! What the server API reports about its own node beyond the edge's state:
//! the figures of the node's metrics (Info) and its effective configuration
//! (the Config call of the HTTP mirror).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ferrocast_core::metrics as names;
use ferrocast_edge::MetricsRender;

/// What the binary tells the API about the node it runs in.
#[derive(Clone)]
pub struct NodeFacts {
    /// The node's Prometheus exposition: Info reads its connections by
    /// protocol and message counters from it, so that the admin UI shows
    /// the very figures `/metrics` shows, without a second set of counters.
    pub metrics: MetricsRender,
    /// The effective configuration with secrets redacted, for the admin UI.
    pub config: Arc<NodeConfig>,
}

impl fmt::Debug for NodeFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeFacts")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The node's effective configuration, secrets redacted by the binary.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// As `--print-config` prints it (a valid configuration file).
    pub toml: String,
    /// The configured namespaces, by name; others get the defaults.
    pub namespaces: Vec<NamespaceView>,
}

/// One configured namespace as the Config call shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceView {
    pub name: String,
    /// Publications kept per topic; 0 keeps no history.
    pub history_size: usize,
    /// How long a kept publication lives, in seconds.
    pub history_ttl_seconds: u64,
    pub presence: bool,
    /// Whether connections without a token may use it.
    pub anonymous: bool,
    /// Whether clients may publish (else only backends).
    pub client_publish: bool,
}

/// The figures of one node's metrics that Info carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) connections_by_protocol: HashMap<String, u64>,
    pub(crate) messages_delivered: u64,
    pub(crate) messages_published: u64,
}

impl Figures {
    /// Reads the figures from a Prometheus text exposition; a series it
    /// cannot read counts as absent (0).
    pub(crate) fn read(exposition: &str) -> Self {
        let mut figures = Self::default();
        for line in exposition.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            // Gauges and counters are rendered as floats; these are whole.
            let value = value.parse::<f64>().map_or(0, |v| v.max(0.0) as u64);
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                names::CONNECTIONS => {
                    let protocol = label(labels, "protocol").unwrap_or("unknown");
                    *figures
                        .connections_by_protocol
                        .entry(protocol.to_string())
                        .or_default() += value;
                }
                names::MESSAGES_DELIVERED => figures.messages_delivered += value,
                names::MESSAGES_PUBLISHED => figures.messages_published += value,
                _ => {}
            }
        }
        figures
            .connections_by_protocol
            .retain(|_, count| *count > 0);
        figures
    }
}

/// The value of `name` in a series' label text (`a="x",b="y"}`).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_connections_by_protocol_and_the_message_counters() {
        let exposition = "\
# HELP ferrocast_connections Open client connections, by protocol.
# TYPE ferrocast_connections gauge
ferrocast_connections{protocol=\"json\"} 3
ferrocast_connections{protocol=\"sse\"} 1
ferrocast_connections{protocol=\"stomp\"} 0
ferrocast_connections_opened_total{protocol=\"json\"} 9
ferrocast_messages_delivered_total 1200
ferrocast_messages_published_total{via=\"api\"} 5
ferrocast_messages_published_total{via=\"client\"} 7
";
        let figures = Figures::read(exposition);
        assert_eq!(
            figures.connections_by_protocol,
            HashMap::from([("json".to_string(), 3), ("sse".to_string(), 1)])
        );
        assert_eq!(figures.messages_delivered, 1200);
        assert_eq!(figures.messages_published, 12);
    }

    #[test]
    fn an_unreadable_exposition_gives_zeros() {
        assert_eq!(
            Figures::read("garbage\nferrocast_connections{protocol=\"json\"} x\n"),
            Figures::default()
        );
    }
}
