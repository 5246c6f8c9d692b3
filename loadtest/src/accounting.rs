//! Who should receive what: the measurement window, the topic plan, the
//! publish schedule and the expected-delivery count. Pure functions only.

use std::time::Duration;

/// The measured part of a run, in Unix nanoseconds of the publish timestamp
/// (`ts`). A publication belongs to the window when the publisher stamped it
/// inside `[start, end)`: publishers and subscribers classify with the same
/// number, so both sides agree on what was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl Window {
    /// The window that opens `warmup` after `now` and lasts `duration`.
    pub(crate) fn after_warmup(now: u64, warmup: Duration, duration: Duration) -> Self {
        let start = now.saturating_add(nanos(warmup));
        Self {
            start,
            end: start.saturating_add(nanos(duration)),
        }
    }

    pub(crate) fn contains(&self, ts: u64) -> bool {
        (self.start..self.end).contains(&ts)
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The topic (index) subscriber `subscriber` subscribes to.
pub(crate) fn subscriber_topic(subscriber: usize, topics: usize) -> usize {
    subscriber % topics.max(1)
}

/// The topic (index) of the `nth` publish of publisher `publisher`: each
/// publisher walks the topics in turn from its own starting point, so that
/// every topic gets an even share.
pub(crate) fn publish_topic(publisher: usize, nth: u64, topics: usize) -> usize {
    let topics = topics.max(1);
    let step = usize::try_from(nth % topics as u64).unwrap_or(0);
    (publisher % topics + step) % topics
}

/// The publish rate of publisher `publisher` out of `publishers` sharing `total`
/// publishes per second.
pub(crate) fn publisher_rate(total: f64, publishers: usize) -> f64 {
    if publishers == 0 {
        0.0
    } else {
        total / publishers as f64
    }
}

/// How many publishes a publisher at `rate` per second owes `elapsed` after it
/// started (the first is due at once).
pub(crate) fn publishes_due(elapsed: Duration, rate: f64) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    // Saturating float-to-int conversion; the rate and time are finite.
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// Deliveries the subscribers should have received in the window: every
/// publication on topic `t` is owed to every subscriber of `t`.
/// `subscribers[t]` counts the subscribers of topic `t` whose subscription was
/// confirmed; `published[t]` the publications of the window on topic `t`.
pub(crate) fn expected_deliveries(subscribers: &[u64], published: &[u64]) -> u64 {
    subscribers
        .iter()
        .zip(published)
        .map(|(s, p)| s.saturating_mul(*p))
        .fold(0, u64::saturating_add)
}

/// Adds `from` into `into` element by element, growing `into` as needed.
pub(crate) fn add_per_topic(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (total, n) in into.iter_mut().zip(from) {
        *total += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_deliveries_multiply_publications_by_subscribers_per_topic() {
        // 1,000 subscribers on 10 topics, 3 topics received publications.
        let subscribers: Vec<u64> =
            (0..1000)
                .map(|i| subscriber_topic(i, 10))
                .fold(vec![0; 10], |mut per_topic, t| {
                    per_topic[t] += 1;
                    per_topic
                });
        assert_eq!(subscribers, vec![100; 10]);
        let published = [5, 0, 2, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(expected_deliveries(&subscribers, &published), 800);
        // A topic nobody subscribes to expects nothing.
        assert_eq!(expected_deliveries(&[0, 3], &[7, 2]), 6);
    }

    #[test]
    fn per_topic_counts_add_up_across_publishers() {
        let mut total = vec![1, 2];
        add_per_topic(&mut total, &[1, 1, 1]);
        add_per_topic(&mut total, &[]);
        assert_eq!(total, [2, 3, 1]);
    }

    #[test]
    fn publishers_spread_evenly_over_topics() {
        let mut per_topic = [0u64; 10];
        for publisher in 0..4 {
            for nth in 0..100 {
                per_topic[publish_topic(publisher, nth, 10)] += 1;
            }
        }
        assert_eq!(per_topic, [40; 10]);
        assert_eq!(publish_topic(3, 5, 1), 0);
    }

    #[test]
    fn the_window_follows_the_warmup_and_excludes_its_end() {
        let window =
            Window::after_warmup(1_000, Duration::from_nanos(500), Duration::from_nanos(100));
        assert_eq!(
            window,
            Window {
                start: 1_500,
                end: 1_600
            }
        );
        assert!(!window.contains(1_499));
        assert!(window.contains(1_500));
        assert!(window.contains(1_599));
        assert!(!window.contains(1_600));
    }

    #[test]
    fn the_schedule_keeps_the_rate() {
        assert_eq!(publishes_due(Duration::ZERO, 200.0), 1);
        assert_eq!(publishes_due(Duration::from_millis(4), 200.0), 1);
        assert_eq!(publishes_due(Duration::from_millis(5), 200.0), 2);
        assert_eq!(publishes_due(Duration::from_secs(10), 200.0), 2001);
        assert_eq!(publishes_due(Duration::from_secs(10), 0.0), 0);
        assert_eq!(publisher_rate(2000.0, 8), 250.0);
        assert_eq!(publisher_rate(2000.0, 0), 0.0);
    }
}
