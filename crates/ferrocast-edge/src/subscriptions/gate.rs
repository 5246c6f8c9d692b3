//! The gates of [`Subscriptions`](super::Subscriptions): gap-free,
//! duplicate-free delivery for subscriptions in namespaces that keep history
//! (docs/architecture.md, "Recovery").
//!
//! Every publication of such a namespace carries its position: an epoch and
//! an offset, contiguous per topic. The writer passes each delivery of a gated
//! subscription through [`Gates::admit`], which knows, per topic, the last
//! position the client got:
//! - the next offset is written and becomes the last;
//! - an offset already passed is a duplicate and is dropped;
//! - an offset further on means something was missed (live delivery is at
//!   most once, and publications of different nodes may arrive out of order):
//!   the delivery is held, and the history after the last position is read
//!   ([`Gates::take_resyncs`]); its result ([`Gates::resynced`]) is put at
//!   the front of the queue together with what was held, in offset order.
//!
//! A subscription to one topic opens the same way: while its history is read
//! (from the client's `since`, or just the top when it gave none), every
//! delivery is held; [`Gates::opened`] then replays what the client missed
//! and what was held, and the gate goes live. Because the subscription is in
//! place before the history is read, anything published after the read
//! arrives live, and anything before is in the history: the two overlap,
//! never leave a hole, and the overlap is dropped by offset.

use std::collections::HashMap;
use std::sync::Arc;

use metrics::counter;

use ferrocast_core::backplane::HistoryPage;
use ferrocast_core::metrics as names;
use ferrocast_core::{Delivery, Outbound, Publication};
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicFilter};

/// Where a subscription to a topic with history starts, once its history
/// was read.
#[derive(Debug)]
pub(crate) struct Start {
    /// The newest position in the history, for the reply.
    pub(crate) top: StreamPosition,
    /// For a resume: whether nothing was missed.
    pub(crate) recovered: Option<bool>,
    /// The position the client is at.
    pub(crate) from: StreamPosition,
    /// What it missed, oldest first.
    pub(crate) replay: Vec<Publication>,
}

impl Start {
    /// Decides it from the client's `since` (if it resumes) and the `page`
    /// read after it, and counts the resume in `ferrocast_resumes_total`.
    pub(crate) fn of(since: Option<StreamPosition>, page: HistoryPage) -> Self {
        let top = page.top_position();
        let Some(since) = since else {
            return Self {
                from: top.clone(),
                top,
                recovered: None,
                replay: Vec::new(),
            };
        };
        let (recovered, replay) = ferrocast_core::history::resume(&since, page);
        let outcome = if recovered {
            "recovered"
        } else {
            "not_recovered"
        };
        counter!(names::RESUMES, "outcome" => outcome).increment(1);
        // Nothing after the client's position is kept: it goes on from the top.
        let from = if recovered || !replay.is_empty() {
            since
        } else {
            top.clone()
        };
        Self {
            top,
            recovered: Some(recovered),
            from,
            replay,
        }
    }
}

/// A history read that a gap calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resync {
    pub(crate) filter: TopicFilter,
    pub(crate) topic: Topic,
    /// The last position the client got.
    pub(crate) since: StreamPosition,
    /// The offset to read the history after: the client's, or 0 when the
    /// delivery that revealed the gap is of a newer epoch.
    pub(crate) after: u64,
}

/// The gated subscriptions of one connection.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    filters: HashMap<TopicFilter, Gate>,
    resyncs: Vec<Resync>,
}

#[derive(Debug, Default)]
struct Gate {
    /// Deliveries held while the subscription's first history read runs.
    opening: Option<Vec<Arc<Delivery>>>,
    /// Per topic the subscription has seen.
    topics: HashMap<Topic, Stream>,
}

#[derive(Debug)]
enum Stream {
    /// The last position the client got.
    Live(StreamPosition),
    /// The history after the last position is being read; deliveries wait.
    Resyncing(Vec<Arc<Delivery>>),
}

/// What [`Gate::admit`] decided for one delivery.
enum Verdict {
    Write,
    Drop,
    Hold,
    /// Held: something between the client's last position and the delivery
    /// is missing; read the history after `after`.
    Gap {
        since: StreamPosition,
        after: u64,
    },
}

impl Gates {
    pub(crate) fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Gates a new subscription to `filter`. With `hold`, every delivery
    /// waits for [`Gates::opened`]; without, the first delivery of each topic
    /// sets where that topic starts.
    pub(crate) fn open(&mut self, filter: &TopicFilter, hold: bool) {
        self.filters.insert(
            filter.clone(),
            Gate {
                opening: hold.then(Vec::new),
                topics: HashMap::new(),
            },
        );
    }

    /// Forgets the subscription to `filter`.
    pub(crate) fn close(&mut self, filter: &TopicFilter) {
        self.filters.remove(filter);
        self.resyncs.retain(|r| &r.filter != filter);
    }

    /// Filters a batch taken from the queue in place: drops duplicates, holds
    /// back what waits for history, and notes the gaps to fill.
    pub(crate) fn admit(&mut self, batch: &mut Vec<Outbound>) {
        batch.retain(|item| {
            let Outbound::Delivery(delivery, filter) = item else {
                return true;
            };
            let Some(gate) = self.filters.get_mut(filter) else {
                return true;
            };
            match gate.admit(delivery) {
                Verdict::Write => true,
                Verdict::Drop | Verdict::Hold => false,
                Verdict::Gap { since, after } => {
                    self.resyncs.push(Resync {
                        filter: filter.clone(),
                        topic: delivery.publication.topic.clone(),
                        since,
                        after,
                    });
                    false
                }
            }
        });
    }

    /// The history reads that gaps call for, each asked for once.
    pub(crate) fn take_resyncs(&mut self) -> Vec<Resync> {
        std::mem::take(&mut self.resyncs)
    }

    /// The first history read of `filter` (one topic) finished: the client is
    /// at `start` and missed `replay`. Returns what to put at the front of the
    /// queue, in order; the gate is live from then on.
    pub(crate) fn opened(
        &mut self,
        filter: &TopicFilter,
        topic: &Topic,
        start: StreamPosition,
        replay: Vec<Publication>,
    ) -> Vec<Outbound> {
        let Some(gate) = self.filters.get_mut(filter) else {
            return Vec::new();
        };
        let held = gate.opening.take().unwrap_or_default();
        gate.settle(filter, topic, start, replay, held)
    }

    /// The history read for a gap in `resync.topic` finished: `epoch` is the
    /// history's, `replay` what it keeps after the client's position (all it
    /// keeps when the epoch changed).
    pub(crate) fn resynced(
        &mut self,
        resync: &Resync,
        epoch: String,
        replay: Vec<Publication>,
    ) -> Vec<Outbound> {
        counter!(names::STREAM_RESYNCS).increment(1);
        let Some(gate) = self.filters.get_mut(&resync.filter) else {
            return Vec::new();
        };
        let held = match gate.topics.remove(&resync.topic) {
            Some(Stream::Resyncing(held)) => held,
            Some(live) => {
                gate.topics.insert(resync.topic.clone(), live);
                return Vec::new();
            }
            None => Vec::new(),
        };
        let start = if epoch == resync.since.epoch {
            resync.since.clone()
        } else {
            StreamPosition { epoch, offset: 0 }
        };
        gate.settle(&resync.filter, &resync.topic, start, replay, held)
    }
}

impl Gate {
    fn admit(&mut self, delivery: &Arc<Delivery>) -> Verdict {
        let Some(position) = delivery.publication.position.as_ref() else {
            return Verdict::Write;
        };
        if let Some(held) = &mut self.opening {
            held.push(delivery.clone());
            return Verdict::Hold;
        }
        let topic = &delivery.publication.topic;
        let Some(stream) = self.topics.get_mut(topic) else {
            self.topics
                .insert(topic.clone(), Stream::Live(position.clone()));
            return Verdict::Write;
        };
        match stream {
            Stream::Resyncing(held) => {
                held.push(delivery.clone());
                Verdict::Hold
            }
            Stream::Live(last) => {
                let same_epoch = position.epoch == last.epoch;
                if same_epoch && position.offset <= last.offset {
                    return Verdict::Drop;
                }
                let next = if same_epoch {
                    position.offset == last.offset + 1
                } else {
                    // A new history begins at offset 1.
                    position.offset == 1
                };
                if next {
                    *last = position.clone();
                    Verdict::Write
                } else {
                    let since = last.clone();
                    let after = if same_epoch { since.offset } else { 0 };
                    *stream = Stream::Resyncing(vec![delivery.clone()]);
                    Verdict::Gap { since, after }
                }
            }
        }
    }

    /// Merges `replay` and `held` after `start`, in offset order without
    /// duplicates; the topic goes live just before the first of them (so a
    /// hole the history could not fill is accepted, not asked for again).
    fn settle(
        &mut self,
        filter: &TopicFilter,
        topic: &Topic,
        start: StreamPosition,
        replay: Vec<Publication>,
        held: Vec<Arc<Delivery>>,
    ) -> Vec<Outbound> {
        let mut merged: Vec<Arc<Delivery>> = replay.into_iter().map(Delivery::new).collect();
        merged.extend(held.into_iter().filter(|d| &d.publication.topic == topic));
        let offset_in = |d: &Arc<Delivery>, epoch: &str| {
            d.publication
                .position
                .as_ref()
                .filter(|p| p.epoch == epoch)
                .map(|p| p.offset)
        };
        let epoch = start.epoch.clone();
        // Deliveries of the epoch the client is in, after its position, by
        // offset; those of a newer epoch after them, as they came.
        let (mut current, newer): (Vec<_>, Vec<_>) = merged
            .into_iter()
            .partition(|d| offset_in(d, &epoch).is_some());
        current.retain(|d| offset_in(d, &epoch).is_some_and(|o| o > start.offset));
        current.sort_by_key(|d| offset_in(d, &epoch));
        current.dedup_by_key(|d| offset_in(d, &epoch));
        let live_from = match current.first().and_then(|d| offset_in(d, &epoch)) {
            Some(first) => StreamPosition {
                epoch,
                offset: first - 1,
            },
            None => start,
        };
        self.topics.insert(topic.clone(), Stream::Live(live_from));
        current
            .into_iter()
            .chain(newer)
            .map(|d| Outbound::Delivery(d, filter.clone()))
            .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use bytes::Bytes;

    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s, 255).unwrap()
    }

    fn publication(topic: &str, epoch: &str, offset: u64) -> Publication {
        let mut p = Publication::new(
            Topic::parse(topic, 255).unwrap(),
            Bytes::from(offset.to_string()),
            Arc::from("n"),
        );
        p.position = Some(StreamPosition {
            epoch: epoch.into(),
            offset,
        });
        p
    }

    fn live(f: &TopicFilter, topic: &str, epoch: &str, offsets: &[u64]) -> Vec<Outbound> {
        offsets
            .iter()
            .map(|&o| Outbound::Delivery(Delivery::new(publication(topic, epoch, o)), f.clone()))
            .collect()
    }

    /// The offsets of the deliveries among `items`, in order.
    pub(in crate::subscriptions) fn offsets(items: &[Outbound]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|item| match item {
                Outbound::Delivery(d, _) => d.publication.position.as_ref().map(|p| p.offset),
                _ => None,
            })
            .collect()
    }

    fn admit(gates: &mut Gates, mut batch: Vec<Outbound>) -> Vec<u64> {
        gates.admit(&mut batch);
        offsets(&batch)
    }

    fn at(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn opening_replays_the_missed_then_the_held_without_duplicates() {
        let f = filter("chat.a");
        let topic = f.as_topic().unwrap();
        let mut gates = Gates::default();
        gates.open(&f, true);
        // Live deliveries that arrive while the history is read are held.
        assert!(admit(&mut gates, live(&f, "chat.a", "e", &[5, 6])).is_empty());
        // The client saw 2; history keeps 1..=5.
        let replay = (3..=5).map(|o| publication("chat.a", "e", o)).collect();
        let front = gates.opened(&f, &topic, at("e", 2), replay);
        assert_eq!(offsets(&front), [3, 4, 5, 6]);
        // The replay passes the gate when the writer takes it, and the live
        // stream continues; what was already written is dropped.
        assert_eq!(admit(&mut gates, front), [3, 4, 5, 6]);
        assert_eq!(
            admit(&mut gates, live(&f, "chat.a", "e", &[6, 7, 8])),
            [7, 8]
        );
        assert!(gates.take_resyncs().is_empty());
    }

    #[test]
    fn a_gap_holds_the_topic_and_asks_for_history_once() {
        let f = filter("chat.a");
        let mut gates = Gates::default();
        gates.open(&f, false);
        assert_eq!(admit(&mut gates, live(&f, "chat.a", "e", &[1, 2])), [1, 2]);
        assert!(admit(&mut gates, live(&f, "chat.a", "e", &[5, 6])).is_empty());
        let resyncs = gates.take_resyncs();
        assert_eq!(resyncs.len(), 1);
        assert_eq!(
            (resyncs[0].since.clone(), resyncs[0].after),
            (at("e", 2), 2)
        );
        assert!(admit(&mut gates, live(&f, "chat.a", "e", &[7])).is_empty());
        assert!(gates.take_resyncs().is_empty(), "asked twice for one gap");
        let replay = (3..=6).map(|o| publication("chat.a", "e", o)).collect();
        let front = gates.resynced(&resyncs[0], "e".into(), replay);
        assert_eq!(admit(&mut gates, front), [3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_hole_history_no_longer_fills_is_crossed_not_asked_for_again() {
        let f = filter("chat.a");
        let mut gates = Gates::default();
        gates.open(&f, false);
        admit(&mut gates, live(&f, "chat.a", "e", &[1]));
        admit(&mut gates, live(&f, "chat.a", "e", &[9]));
        let resync = gates.take_resyncs().remove(0);
        // History was trimmed: it keeps 8 and 9 only.
        let replay = (8..=9).map(|o| publication("chat.a", "e", o)).collect();
        let front = gates.resynced(&resync, "e".into(), replay);
        assert_eq!(admit(&mut gates, front), [8, 9]);
        assert!(gates.take_resyncs().is_empty());
        assert_eq!(admit(&mut gates, live(&f, "chat.a", "e", &[10])), [10]);
    }

    #[test]
    fn a_new_epoch_starts_at_one_and_topics_of_a_pattern_are_gated_apart() {
        let f = filter("chat.*");
        let mut gates = Gates::default();
        gates.open(&f, false);
        assert_eq!(admit(&mut gates, live(&f, "chat.a", "e", &[4, 5])), [4, 5]);
        assert_eq!(admit(&mut gates, live(&f, "chat.b", "x", &[40])), [40]);
        assert_eq!(admit(&mut gates, live(&f, "chat.a", "e2", &[1, 2])), [1, 2]);
        assert_eq!(admit(&mut gates, live(&f, "chat.b", "x", &[41, 41])), [41]);
        // A new epoch that does not start at 1 is read from its start.
        assert!(admit(&mut gates, live(&f, "chat.b", "y", &[3])).is_empty());
        let resync = gates.take_resyncs().remove(0);
        assert_eq!(resync.after, 0);
        let replay = (1..=3).map(|o| publication("chat.b", "y", o)).collect();
        let front = gates.resynced(&resync, "y".into(), replay);
        assert_eq!(admit(&mut gates, front), [1, 2, 3]);
    }

    #[test]
    fn deliveries_without_position_and_of_other_filters_pass() {
        let f = filter("chat.a");
        let mut gates = Gates::default();
        gates.open(&f, true);
        let other = filter("news.a");
        let plain = Outbound::Delivery(
            Delivery::new(Publication::new(
                Topic::parse("chat.a", 255).unwrap(),
                Bytes::from_static(b"1"),
                Arc::from("n"),
            )),
            f.clone(),
        );
        let mut batch = vec![plain, Outbound::Ping];
        batch.extend(live(&other, "news.a", "e", &[9]));
        gates.admit(&mut batch);
        assert_eq!(batch.len(), 3);
        gates.close(&f);
        assert!(gates.is_empty());
    }
}
