//! Namespaces: the first token of a topic, carrying settings for every topic
//! in it (history, presence).

use std::collections::HashMap;

use crate::backplane::HistoryPolicy;

/// The settings of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceSettings {
    /// History kept per topic; `None` keeps none (live delivery only, no
    /// offsets, no recovery).
    pub history: Option<HistoryPolicy>,
    /// Whether the node tracks who is subscribed to each topic.
    pub presence: bool,
    /// Whether connections without a token may use the namespace.
    pub anonymous: bool,
    /// Whether clients may publish (else only backends, through the server API).
    pub client_publish: bool,
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        Self {
            history: None,
            presence: false,
            anonymous: true,
            client_publish: true,
        }
    }
}

/// The configured namespaces; a namespace not configured gets the defaults
/// (no history, no presence).
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    by_name: HashMap<String, NamespaceSettings>,
    default: NamespaceSettings,
}

impl Namespaces {
    pub fn new(by_name: HashMap<String, NamespaceSettings>) -> Self {
        Self {
            by_name,
            default: NamespaceSettings::default(),
        }
    }

    /// The settings of `namespace`.
    pub fn get(&self, namespace: &str) -> &NamespaceSettings {
        self.by_name.get(namespace).unwrap_or(&self.default)
    }
}
