//! Namespaces (the first token of a topic) and presence: file only, one
//! `[namespaces.<name>]` table each.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use ferrocast_core::backplane::HistoryPolicy;
use ferrocast_core::{NamespaceSettings, Namespaces};
use ferrocast_protocol::{Topic, MAX_TOPIC_LEN};

use super::Config;

/// Most publications a namespace may keep per topic.
const MAX_HISTORY_SIZE: usize = 100_000;

/// The settings of one namespace in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NamespaceConfig {
    /// Publications kept per topic for recovery; 0 keeps no history.
    pub(crate) history_size: usize,
    /// How long a publication is kept.
    #[serde(with = "humantime_serde")]
    pub(crate) history_ttl: Duration,
    /// Whether connections without a token may subscribe and publish here.
    pub(crate) anonymous: bool,
    /// Whether clients may publish here (else only backends).
    pub(crate) client_publish: bool,
    /// Whether the cluster keeps who is subscribed to each topic here.
    pub(crate) presence: bool,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            anonymous: true,
            client_publish: true,
            presence: false,
        }
    }
}

impl Config {
    /// The namespaces as the hub uses them.
    pub(crate) fn namespaces(&self) -> Namespaces {
        let by_name: HashMap<String, NamespaceSettings> = self
            .namespaces
            .iter()
            .map(|(name, ns)| {
                let history = (ns.history_size > 0).then_some(HistoryPolicy {
                    size: ns.history_size,
                    ttl: ns.history_ttl,
                });
                (
                    name.clone(),
                    NamespaceSettings {
                        history,
                        presence: ns.presence,
                        anonymous: ns.anonymous,
                        client_publish: ns.client_publish,
                    },
                )
            })
            .collect();
        Namespaces::new(by_name).with_presence_ttl(self.presence_ttl)
    }

    pub(super) fn validate_namespaces(&self) -> anyhow::Result<()> {
        if self.presence_ttl < Duration::from_secs(1) {
            bail!("presence_ttl must be at least 1s");
        }
        for (name, namespace) in &self.namespaces {
            let valid = Topic::parse(name, MAX_TOPIC_LEN).is_ok_and(|t| t.namespace() == name);
            if !valid {
                bail!(
                    "namespaces.{name:?}: a namespace is one topic token (A-Z a-z 0-9 _ - : @ =)"
                );
            }
            if namespace.history_size > MAX_HISTORY_SIZE {
                bail!("namespaces.{name}.history_size must be at most {MAX_HISTORY_SIZE}");
            }
            if namespace.history_size > 0 && namespace.history_ttl < Duration::from_secs(1) {
                bail!("namespaces.{name}.history_ttl must be at least 1s");
            }
        }
        Ok(())
    }
}
