//! The backplane's health: up when both connections are.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use ferrocast_core::metrics::BACKPLANE_RECONNECTS;

/// Which of the two connections reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Publisher,
    Subscriber,
}

#[derive(Debug, Default)]
struct State {
    publisher: bool,
    subscriber: bool,
    /// Whether the backplane was ever up, so that coming back up counts as a
    /// reconnect and the first connection does not.
    was_up: bool,
}

/// Combines the state of both connections into one `watch` value.
#[derive(Debug)]
pub(crate) struct Health {
    state: Mutex<State>,
    tx: watch::Sender<bool>,
    /// The publisher's own state, read by every `publish` call without a lock,
    /// so that publications fail fast exactly while they cannot be sent
    /// (even when only the pub/sub connection is down, they still go out).
    pub(crate) publisher_up: AtomicBool,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            tx: watch::channel(false).0,
            publisher_up: AtomicBool::new(false),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.tx.borrow()
    }

    /// Records that `part` went up or down; returns true when this made the
    /// whole backplane come back up after having been up before (a reconnect).
    pub(crate) fn set(&self, part: Part, up: bool) -> bool {
        let mut state = self.state.lock();
        match part {
            Part::Publisher => {
                state.publisher = up;
                self.publisher_up.store(up, Ordering::Release);
            }
            Part::Subscriber => state.subscriber = up,
        }
        let all_up = state.publisher && state.subscriber;
        let changed = self.tx.send_if_modified(|current| {
            let changed = *current != all_up;
            *current = all_up;
            changed
        });
        let reconnected = changed && all_up && state.was_up;
        if all_up {
            state.was_up = true;
        }
        if reconnected {
            metrics::counter!(BACKPLANE_RECONNECTS).increment(1);
        }
        reconnected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_only_when_both_parts_are() {
        let health = Health::new();
        let rx = health.subscribe();
        assert!(!*rx.borrow());
        assert!(!health.set(Part::Publisher, true));
        assert!(!*rx.borrow());
        assert!(health.publisher_up.load(Ordering::Acquire));
        assert!(
            !health.set(Part::Subscriber, true),
            "first connect is no reconnect"
        );
        assert!(*rx.borrow());
        health.set(Part::Subscriber, false);
        assert!(!*rx.borrow());
        assert!(
            health.set(Part::Subscriber, true),
            "back up counts as reconnect"
        );
        assert!(*rx.borrow());
    }
}
