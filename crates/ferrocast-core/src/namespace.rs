//! Namespaces: the first token of a topic, carrying settings for every topic
//! in it (history, presence).

use std::collections::HashMap;
use std::time::Duration;

use crate::backplane::HistoryPolicy;

/// The namespace of the node's control channel (the server API's
/// cluster-wide operations and node status), on the backplane like any topic.
pub const CONTROL_NAMESPACE: &str = "_ctl";

/// The namespace of the session owner registry: one topic per session that
/// lives across HTTP requests (SockJS, Engine.IO long-polling), whose one
/// kept publication names the node that holds the session, so that any node
/// finds the owner with one history read (see ferrocast-edge's `owner`).
pub const OWNER_NAMESPACE: &str = "_owner";

/// How long an owner record is kept: owners claim again before it lapses.
pub const OWNER_RECORD_TTL: Duration = Duration::from_secs(3600);

/// Whether clients are kept out of `namespace`: names starting with `_` are
/// the node's, except `_user` (private user topics, with rules of their own).
pub fn is_reserved(namespace: &str) -> bool {
    namespace.starts_with('_') && namespace != "_user"
}

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

/// How long a presence entry lives in the backplane without a refresh, unless
/// configured otherwise.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);

/// The configured namespaces; a namespace not configured gets the defaults
/// (no history, no presence).
#[derive(Debug, Clone)]
pub struct Namespaces {
    by_name: HashMap<String, NamespaceSettings>,
    default: NamespaceSettings,
    /// How long the presence entries of every namespace with presence live
    /// in the backplane without a refresh (the node refreshes them every
    /// third of it).
    presence_ttl: Duration,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::new(HashMap::new())
    }
}

impl Namespaces {
    pub fn new(mut by_name: HashMap<String, NamespaceSettings>) -> Self {
        // The node's own: clients cannot name reserved namespaces.
        by_name.insert(
            OWNER_NAMESPACE.to_string(),
            NamespaceSettings {
                history: Some(HistoryPolicy {
                    size: 1,
                    ttl: OWNER_RECORD_TTL,
                }),
                presence: false,
                anonymous: false,
                client_publish: false,
            },
        );
        Self {
            by_name,
            default: NamespaceSettings::default(),
            presence_ttl: DEFAULT_PRESENCE_TTL,
        }
    }

    /// Sets the time-to-live of presence entries.
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// The time-to-live of presence entries.
    pub fn presence_ttl(&self) -> Duration {
        self.presence_ttl
    }

    /// The settings of `namespace`.
    pub fn get(&self, namespace: &str) -> &NamespaceSettings {
        self.by_name.get(namespace).unwrap_or(&self.default)
    }
}
