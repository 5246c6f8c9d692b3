//! Where a subscription to one topic stands in the topic's history.
//!
//! In a namespace that keeps history every message carries its position: an
//! epoch (one incarnation of the history) and an offset, contiguous within
//! the epoch. A [`Tracker`] remembers the last position handed to the
//! application, so that a resubscription can ask to resume right after it,
//! and judges each incoming position: the next one is delivered, one already
//! passed is a duplicate (a replay overlapping what arrived live), and one
//! further on is a jump that the application must hear about.

use ferrocast_protocol::StreamPosition;

/// The position of one subscription to one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tracker {
    /// The last message handed to the application, or where the subscription
    /// started (the top of the history when it was made, or the position it
    /// resumed from). `None` until the topic showed a position.
    last: Option<StreamPosition>,
    /// The application was told of a gap here, so the next position may jump.
    gap_announced: bool,
}

/// What to do with a message at some position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Deliver it.
    Next,
    /// Already delivered: drop it.
    Duplicate,
    /// Positions between the last one and this one are missing and nobody
    /// said so: announce a gap from `last`, then deliver it.
    Jump { last: StreamPosition },
}

impl Tracker {
    /// A tracker that resumes after `since`.
    pub(crate) fn after(since: StreamPosition) -> Self {
        Self {
            last: Some(since),
            gap_announced: false,
        }
    }

    /// The last position handed to the application (or where it started).
    pub(crate) fn position(&self) -> Option<&StreamPosition> {
        self.last.as_ref()
    }

    /// Sets where a new subscription starts (the top of the history in the
    /// subscribe reply), unless the tracker already has a position.
    pub(crate) fn start_at(&mut self, top: StreamPosition) {
        self.last.get_or_insert(top);
    }

    /// A gap was announced to the application: the next position is
    /// delivered wherever it is.
    pub(crate) fn announce_gap(&mut self) {
        self.gap_announced = true;
    }

    pub(crate) fn check(&self, position: &StreamPosition) -> Verdict {
        let Some(last) = &self.last else {
            return Verdict::Next;
        };
        let same_epoch = position.epoch == last.epoch;
        if same_epoch && position.offset <= last.offset {
            return Verdict::Duplicate;
        }
        // A new epoch starts over at offset 1.
        let next = if same_epoch {
            position.offset == last.offset + 1
        } else {
            position.offset == 1
        };
        if next || self.gap_announced {
            Verdict::Next
        } else {
            Verdict::Jump { last: last.clone() }
        }
    }

    /// The message at `position` reached the application.
    pub(crate) fn advance(&mut self, position: StreamPosition) {
        self.last = Some(position);
        self.gap_announced = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: epoch.into(),
            offset,
        }
    }

    /// Feeds `offsets` of `epoch` through the tracker; returns what reached
    /// the application, with `Jump`s marked as `0`.
    fn feed(tracker: &mut Tracker, epoch: &str, offsets: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        for &offset in offsets {
            let position = at(epoch, offset);
            match tracker.check(&position) {
                Verdict::Duplicate => continue,
                Verdict::Jump { .. } => out.push(0),
                Verdict::Next => {}
            }
            out.push(offset);
            tracker.advance(position);
        }
        out
    }

    #[test]
    fn a_replay_overlapping_the_live_stream_is_delivered_once_in_order() {
        let mut tracker = Tracker::default();
        tracker.start_at(at("e", 40));
        assert_eq!(feed(&mut tracker, "e", &[41, 42, 43]), [41, 42, 43]);
        // Reconnected: resumes after 43; the replay starts at 44 but a few
        // live copies of 42..=44 are still in flight.
        assert_eq!(tracker.position(), Some(&at("e", 43)));
        assert_eq!(
            feed(&mut tracker, "e", &[42, 43, 44, 44, 45, 46]),
            [44, 45, 46]
        );
    }

    #[test]
    fn the_reply_top_is_where_a_subscription_starts_unless_it_resumes() {
        let mut fresh = Tracker::default();
        assert_eq!(fresh.position(), None);
        fresh.start_at(at("e", 7));
        fresh.start_at(at("e", 9));
        assert_eq!(fresh.position(), Some(&at("e", 7)));

        let mut resumed = Tracker::after(at("e", 3));
        resumed.start_at(at("e", 9));
        assert_eq!(resumed.position(), Some(&at("e", 3)));
        assert_eq!(feed(&mut resumed, "e", &[4]), [4]);
    }

    #[test]
    fn an_unannounced_jump_is_reported_once() {
        let mut tracker = Tracker::after(at("e", 5));
        assert_eq!(
            tracker.check(&at("e", 8)),
            Verdict::Jump { last: at("e", 5) }
        );
        assert_eq!(feed(&mut tracker, "e", &[8, 9, 12]), [0, 8, 9, 0, 12]);
    }

    #[test]
    fn an_announced_gap_lets_the_next_position_jump() {
        // recovered:false: history was trimmed, the node replays what it
        // still keeps after the client's position.
        let mut tracker = Tracker::after(at("e", 1));
        tracker.announce_gap();
        assert_eq!(feed(&mut tracker, "e", &[3, 4, 6]), [3, 4, 0, 6]);
        // ... or the history is of another epoch and continues from its top.
        let mut tracker = Tracker::after(at("old", 9));
        tracker.announce_gap();
        assert_eq!(feed(&mut tracker, "new", &[17, 18]), [17, 18]);
    }

    #[test]
    fn a_new_epoch_starts_at_one() {
        let mut tracker = Tracker::after(at("e1", 12));
        assert_eq!(feed(&mut tracker, "e2", &[1, 2]), [1, 2]);
        // A topic never published to has the empty epoch at offset 0.
        let mut tracker = Tracker::default();
        tracker.start_at(at("", 0));
        assert_eq!(feed(&mut tracker, "e", &[1, 2]), [1, 2]);
        let mut tracker = Tracker::after(at("e1", 12));
        assert_eq!(feed(&mut tracker, "e2", &[5]), [0, 5]);
    }

    #[test]
    fn without_a_position_anything_goes() {
        let mut tracker = Tracker::default();
        assert_eq!(feed(&mut tracker, "e", &[30, 31]), [30, 31]);
    }
}
