//! Who should receive what: the measurement window, the topic plan, the
//! publish schedule, the expected-delivery count, and what each subscriber
//! saw of a numbered sequence. Pure code only.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// How many of `burst` publications publisher `publisher` of `publishers`
/// sends: an even split, the first ones taking the remainder.
pub(crate) fn burst_share(burst: u64, publishers: usize, publisher: usize) -> u64 {
    let publishers = publishers.max(1) as u64;
    let publisher = publisher as u64;
    burst / publishers + u64::from(publisher < burst % publishers)
}

/// Publications per topic of a burst: every publisher sends its
/// [`burst_share`] walking the topics with [`publish_topic`].
pub(crate) fn burst_per_topic(burst: u64, publishers: usize, topics: usize) -> Vec<u64> {
    let topics = topics.max(1);
    let mut per_topic = vec![0u64; topics];
    for publisher in 0..publishers.max(1) {
        let sent = burst_share(burst, publishers, publisher);
        // Whole rounds over every topic, then the first `rest` from its start.
        let (rounds, rest) = (sent / topics as u64, sent % topics as u64);
        for count in &mut per_topic {
            *count += rounds;
        }
        for nth in 0..rest {
            per_topic[publish_topic(publisher, nth, topics)] += 1;
        }
    }
    per_topic
}

/// For each topic, how many subscribers ended with each count (of deliveries,
/// or of distinct sequence numbers). Small whatever the number of subscribers
/// (one entry when all agree), and adds up across workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CountsByTopic(pub(crate) Vec<BTreeMap<u64, u64>>);

impl CountsByTopic {
    pub(crate) fn new(topics: usize) -> Self {
        Self(vec![BTreeMap::new(); topics])
    }

    /// One subscriber of `topic` ended with `count`.
    pub(crate) fn note(&mut self, topic: usize, count: u64) {
        self.add(topic, count, 1);
    }

    fn add(&mut self, topic: usize, count: u64, subscribers: u64) {
        if self.0.len() <= topic {
            self.0.resize(topic + 1, BTreeMap::new());
        }
        *self.0[topic].entry(count).or_default() += subscribers;
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (topic, counts) in other.0.iter().enumerate() {
            for (count, subscribers) in counts {
                self.add(topic, *count, *subscribers);
            }
        }
    }

    /// Subscribers of each topic, counted from their entries.
    pub(crate) fn subscribers_per_topic(&self) -> Vec<u64> {
        self.0.iter().map(|counts| counts.values().sum()).collect()
    }

    /// Subscribers whose count is below `owed[topic]`, and by how much in total.
    pub(crate) fn shortfall(&self, owed: &[u64]) -> (u64, u64) {
        let mut subscribers = 0;
        let mut missing = 0;
        for (topic, counts) in self.0.iter().enumerate() {
            let owed = owed.get(topic).copied().unwrap_or(0);
            for (count, n) in counts {
                if *count < owed {
                    subscribers += n;
                    missing += (owed - count) * n;
                }
            }
        }
        (subscribers, missing)
    }
}

/// What one subscriber saw of a topic's numbered sequence `0, 1, 2, …`:
/// which numbers arrived, and how many arrived more than once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SequenceTracker {
    /// Bit `n` is set once number `n` arrived.
    seen: Vec<u64>,
    distinct: u64,
    pub(crate) duplicates: u64,
}

/// Sequence numbers beyond this are not tracked (a run publishes far fewer
/// per topic); they count as neither received nor duplicate.
pub(crate) const MAX_TRACKED_SEQUENCE: u64 = 1 << 26;

impl SequenceTracker {
    /// Notes number `seq`; returns `false` for a duplicate.
    pub(crate) fn note(&mut self, seq: u64) -> bool {
        if seq >= MAX_TRACKED_SEQUENCE {
            return true;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return false;
        }
        self.seen[word] |= 1 << bit;
        self.distinct += 1;
        true
    }

    /// Distinct numbers received.
    pub(crate) fn distinct(&self) -> u64 {
        self.distinct
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

    #[test]
    fn a_burst_is_split_evenly_over_publishers_and_topics() {
        assert_eq!(
            (0..3).map(|p| burst_share(2000, 3, p)).collect::<Vec<_>>(),
            [667, 667, 666]
        );
        assert_eq!(burst_share(5, 0, 0), 5);
        let per_topic = burst_per_topic(2000, 3, 10);
        assert_eq!(per_topic.iter().sum::<u64>(), 2000);
        // Counted the way publishers walk the topics.
        let mut walked = vec![0u64; 10];
        for p in 0..3 {
            for nth in 0..burst_share(2000, 3, p) {
                walked[publish_topic(p, nth, 10)] += 1;
            }
        }
        assert_eq!(per_topic, walked);
        assert_eq!(burst_per_topic(2000, 1, 1), [2000]);
    }

    #[test]
    fn shortfalls_are_found_per_topic_across_workers() {
        let mut a = CountsByTopic::new(2);
        for _ in 0..3 {
            a.note(0, 100);
        }
        a.note(1, 48);
        let mut b = CountsByTopic::new(1);
        b.note(0, 97);
        b.note(1, 50);
        a.merge(&b);
        assert_eq!(a.subscribers_per_topic(), [4, 2]);
        // Topic 0 owes 100, topic 1 owes 50.
        assert_eq!(a.shortfall(&[100, 50]), (2, 3 + 2));
        assert_eq!(a.shortfall(&[0, 0]), (0, 0));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<CountsByTopic>(&json).unwrap(), a);
    }

    #[test]
    fn sequences_count_distinct_numbers_and_duplicates() {
        let mut seen = SequenceTracker::default();
        for seq in [0, 1, 2, 2, 5, 64, 1, 200] {
            seen.note(seq);
        }
        assert_eq!(seen.distinct(), 6);
        assert_eq!(seen.duplicates, 2);
        assert!(!seen.note(64));
        assert!(seen.note(MAX_TRACKED_SEQUENCE));
        assert_eq!(seen.distinct(), 6);
    }
}
