//! The node's desired interest: which channels and patterns it wants, kept
//! apart from what the current pub/sub connection has subscribed, so that it
//! survives reconnects.
//!
//! `subscribe` and `unsubscribe` change the desired set, mark the changed
//! names dirty and leave a waiter, all under one lock; the pub/sub task takes
//! the dirty names and the waiters together under the same lock, so a waiter
//! is always completed by the batch that carries its change.

use std::collections::{HashMap, HashSet};

use parking_lot::RwLock;
use tokio::sync::{oneshot, Notify};

use ferrocast_core::backplane::BackplaneError;
use ferrocast_protocol::TopicFilter;

use crate::connection::ConnectionError;

/// The Redis channel of the topic (or exact filter) `topic`.
pub(crate) fn channel_name(prefix: &str, topic: &str) -> String {
    let mut channel = String::with_capacity(prefix.len() + topic.len());
    channel.push_str(prefix);
    channel.push_str(topic);
    channel
}

/// The Redis glob of a wildcard filter: each `*` or `>` token becomes `*`.
/// Topic tokens cannot contain glob characters and the prefix is checked for
/// them, so nothing else needs escaping. The glob matches a superset of the
/// filter (a glob `*` also matches dots), so receivers check each message
/// against the filter again.
pub(crate) fn glob_name(prefix: &str, filter: &TopicFilter) -> String {
    let mut glob = String::with_capacity(prefix.len() + filter.as_str().len());
    glob.push_str(prefix);
    for (i, token) in filter.tokens().enumerate() {
        if i > 0 {
            glob.push('.');
        }
        glob.push_str(match token {
            "*" | ">" => "*",
            literal => literal,
        });
    }
    glob
}

/// What the caller of `subscribe` or `unsubscribe` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaiterKind {
    Subscribe,
    Unsubscribe,
}

pub(crate) type Outcome = Result<(), BackplaneError>;

#[derive(Debug)]
pub(crate) struct Waiter {
    kind: WaiterKind,
    done: oneshot::Sender<Outcome>,
}

/// Completes `waiters` with the result of applying their changes.
///
/// An unsubscribe whose connection was lost (or that could not be sent
/// because there is none) succeeded all the same: the next connection starts
/// without that interest. A subscribe in that case fails, but its interest is
/// kept and applied by the next connection.
pub(crate) fn complete(waiters: Vec<Waiter>, result: &Result<(), ConnectionError>) {
    for waiter in waiters {
        let outcome = match (result, waiter.kind) {
            (Ok(()), _) => Ok(()),
            (Err(e), WaiterKind::Unsubscribe) if !e.is_refusal() => Ok(()),
            (Err(e), _) => Err(e.to_backplane_error()),
        };
        let _ = waiter.done.send(outcome);
    }
}

#[derive(Debug, Default)]
struct Desired {
    /// Channel name → the exact filter it carries.
    channels: HashMap<String, TopicFilter>,
    /// Glob → the wildcard filters that map to it (`a.*` and `a.>` share
    /// the glob `a.*`); a pattern message is delivered once per filter.
    patterns: HashMap<String, Vec<TopicFilter>>,
    /// Names changed since the pub/sub task last looked.
    dirty_channels: HashSet<String>,
    dirty_patterns: HashSet<String>,
    /// Callers waiting for the dirty changes to be applied.
    waiters: Vec<Waiter>,
}

/// Changed names with whether each is desired now.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) channels: Vec<(String, bool)>,
    pub(crate) patterns: Vec<(String, bool)>,
    pub(crate) waiters: Vec<Waiter>,
}

/// Everything desired, for a fresh connection.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) channels: Vec<String>,
    pub(crate) patterns: Vec<String>,
    pub(crate) waiters: Vec<Waiter>,
}

/// The desired interest of one backplane, shared by the callers, the pub/sub
/// task and the receive path.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    /// Read on every received message, written on interest changes.
    desired: RwLock<Desired>,
    /// Wakes the pub/sub task when something changed (a stored permit, so no
    /// change is missed while the task is busy).
    wake: Notify,
}

impl Interest {
    /// Adds or removes `filters`; the receiver completes once the pub/sub task
    /// applied the change (see [`complete`]).
    pub(crate) fn change(
        &self,
        prefix: &str,
        filters: Vec<TopicFilter>,
        kind: WaiterKind,
    ) -> oneshot::Receiver<Outcome> {
        let (done, outcome) = oneshot::channel();
        let mut desired = self.desired.write();
        for filter in filters {
            if filter.is_pattern() {
                let glob = glob_name(prefix, &filter);
                match kind {
                    WaiterKind::Subscribe => {
                        let sharing = desired.patterns.entry(glob.clone()).or_default();
                        if !sharing.contains(&filter) {
                            sharing.push(filter);
                        }
                    }
                    WaiterKind::Unsubscribe => {
                        if let Some(sharing) = desired.patterns.get_mut(&glob) {
                            sharing.retain(|f| *f != filter);
                            if sharing.is_empty() {
                                desired.patterns.remove(&glob);
                            }
                        }
                    }
                }
                desired.dirty_patterns.insert(glob);
            } else {
                let channel = channel_name(prefix, filter.as_str());
                match kind {
                    WaiterKind::Subscribe => {
                        desired.channels.insert(channel.clone(), filter);
                    }
                    WaiterKind::Unsubscribe => {
                        desired.channels.remove(&channel);
                    }
                }
                desired.dirty_channels.insert(channel);
            }
        }
        desired.waiters.push(Waiter { kind, done });
        outcome
    }

    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The exact filter carried by `channel`, if the node wants it.
    pub(crate) fn exact(&self, channel: &str) -> Option<TopicFilter> {
        self.desired.read().channels.get(channel).cloned()
    }

    /// The wildcard filters that map to `glob`, if the node wants any.
    pub(crate) fn patterns(&self, glob: &str) -> Option<Vec<TopicFilter>> {
        self.desired.read().patterns.get(glob).cloned()
    }

    /// Takes the names changed since the last call and their waiters.
    pub(crate) fn take_changes(&self) -> Changes {
        let mut desired = self.desired.write();
        let desired = &mut *desired;
        let channels = desired
            .dirty_channels
            .drain()
            .map(|name| {
                let wanted = desired.channels.contains_key(&name);
                (name, wanted)
            })
            .collect();
        let patterns = desired
            .dirty_patterns
            .drain()
            .map(|name| {
                let wanted = desired.patterns.contains_key(&name);
                (name, wanted)
            })
            .collect();
        Changes {
            channels,
            patterns,
            waiters: std::mem::take(&mut desired.waiters),
        }
    }

    /// Takes everything desired (for a new connection), clearing the dirty
    /// names: the snapshot covers them.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut desired = self.desired.write();
        desired.dirty_channels.clear();
        desired.dirty_patterns.clear();
        Snapshot {
            channels: desired.channels.keys().cloned().collect(),
            patterns: desired.patterns.keys().cloned().collect(),
            waiters: std::mem::take(&mut desired.waiters),
        }
    }

    /// Takes the waiters alone, to fail them while there is no connection.
    pub(crate) fn take_waiters(&self) -> Vec<Waiter> {
        std::mem::take(&mut self.desired.write().waiters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_protocol::MAX_TOPIC_LEN;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(channel_name("p:", "chat.a"), "p:chat.a");
        assert_eq!(glob_name("p:", &filter("chat.*")), "p:chat.*");
        assert_eq!(glob_name("p:", &filter("chat.>")), "p:chat.*");
        assert_eq!(glob_name("", &filter("*.a.>")), "*.a.*");
        assert_eq!(glob_name("x", &filter(">")), "x*");
    }

    #[test]
    fn filters_sharing_a_glob_are_kept_until_the_last_goes() {
        let interest = Interest::default();
        let star = filter("a.*");
        let tail = filter("a.>");
        drop(interest.change("", vec![star.clone(), tail.clone()], WaiterKind::Subscribe));
        assert_eq!(
            interest.patterns("a.*"),
            Some(vec![star.clone(), tail.clone()])
        );
        let changes = interest.take_changes();
        assert_eq!(changes.patterns, vec![("a.*".to_string(), true)]);
        assert_eq!(changes.waiters.len(), 1);

        drop(interest.change("", vec![star], WaiterKind::Unsubscribe));
        assert_eq!(interest.patterns("a.*"), Some(vec![tail.clone()]));
        assert_eq!(
            interest.take_changes().patterns,
            vec![("a.*".to_string(), true)]
        );
        drop(interest.change("", vec![tail], WaiterKind::Unsubscribe));
        assert_eq!(interest.patterns("a.*"), None);
        assert_eq!(
            interest.take_changes().patterns,
            vec![("a.*".to_string(), false)]
        );
    }

    #[test]
    fn exact_filters_and_snapshot() {
        let interest = Interest::default();
        let f = filter("chat.room1");
        drop(interest.change("p:", vec![f.clone()], WaiterKind::Subscribe));
        assert_eq!(interest.exact("p:chat.room1"), Some(f));
        let snapshot = interest.snapshot();
        assert_eq!(snapshot.channels, vec!["p:chat.room1".to_string()]);
        assert!(
            interest.take_changes().channels.is_empty(),
            "snapshot covers the dirty names"
        );
    }
}
