//! Topic history: the in-memory ring the memory backplane keeps, and the rule
//! that decides what a resuming subscriber gets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferrocast_protocol::StreamPosition;

use crate::backplane::{HistoryPage, HistoryPolicy};
use crate::publication::Publication;

/// A new random epoch name (16 hex digits).
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One topic's history: contiguous offsets from 1 within `epoch`, the newest
/// `policy.size` publications kept, none older than `policy.ttl`.
#[derive(Debug)]
pub(crate) struct TopicHistory {
    epoch: String,
    top: u64,
    /// Kept publications with the instant they were appended, oldest first.
    entries: VecDeque<(Instant, Publication)>,
    /// When the newest publication was appended.
    last_append: Instant,
}

impl TopicHistory {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            last_append: now,
        }
    }

    /// Whether the whole history expired: nothing was appended for `ttl`.
    pub(crate) fn expired(&self, ttl: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.last_append) >= ttl
    }

    /// Gives `publication` the next position, keeps it and trims; returns the
    /// positioned publication and its position.
    pub(crate) fn append(
        &mut self,
        mut publication: Publication,
        policy: HistoryPolicy,
        now: Instant,
    ) -> (Publication, StreamPosition) {
        self.top += 1;
        let position = StreamPosition {
            epoch: self.epoch.clone(),
            offset: self.top,
        };
        publication.position = Some(position.clone());
        self.entries.push_back((now, publication.clone()));
        self.last_append = now;
        self.trim(policy, now);
        (publication, position)
    }

    fn trim(&mut self, policy: HistoryPolicy, now: Instant) {
        while self.entries.len() > policy.size.max(1) {
            self.entries.pop_front();
        }
        while let Some((at, _)) = self.entries.front() {
            if now.saturating_duration_since(*at) < policy.ttl {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// The page after `after`, trimmed as of `now`.
    pub(crate) fn page(&mut self, policy: HistoryPolicy, after: u64, now: Instant) -> HistoryPage {
        self.trim(policy, now);
        let oldest = self.top + 1 - self.entries.len() as u64;
        HistoryPage {
            epoch: self.epoch.clone(),
            top: self.top,
            oldest,
            publications: self
                .entries
                .iter()
                .filter(|(_, p)| p.position.as_ref().is_some_and(|pos| pos.offset > after))
                .map(|(_, p)| p.clone())
                .collect(),
        }
    }
}

/// What a subscriber that resumes from `since` gets out of `page`: whether
/// the history reaches back to `since` (nothing missed), and the publications
/// to replay, oldest first. The subscriber continues from the page's top.
///
/// - Same epoch: recovered when every offset after `since` is still kept;
///   what is kept after `since` is replayed either way.
/// - `since` in the empty epoch (the subscriber saw the topic before it had
///   any history): recovered when the current epoch is kept from offset 1.
/// - Another epoch: the history the subscriber knew is gone; nothing to
///   replay, not recovered.
pub fn resume(since: &StreamPosition, page: HistoryPage) -> (bool, Vec<Publication>) {
    if since.epoch == page.epoch {
        if since.offset > page.top {
            // A position this history never gave: not ours to continue from.
            return (false, Vec::new());
        }
        let recovered = since.offset + 1 >= page.oldest;
        let replay = page
            .publications
            .into_iter()
            .filter(|p| {
                p.position
                    .as_ref()
                    .is_some_and(|pos| pos.offset > since.offset)
            })
            .collect();
        (recovered, replay)
    } else if since.epoch.is_empty() {
        (page.oldest <= 1, page.publications)
    } else {
        (false, Vec::new())
    }
}

/// What a history request (a client's `history`, the server API's
/// `History`) gets: the topic's top and a run of its publications.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRead {
    /// The topic's current position (the newest publication; `""`/0 when
    /// none is kept): where a subscriber that read this continues from.
    pub top: StreamPosition,
    /// Whether the history still reaches back to the request's `since`
    /// (always true without one).
    pub recovered: bool,
    /// Oldest first, each with its position.
    pub publications: Vec<Publication>,
}

impl HistoryRead {
    /// What a reader asking for at most `limit` publications after `since`
    /// gets out of `page`, read after `since`'s offset (after 0 without
    /// `since`, or when `since` is of another epoch):
    ///
    /// - without `since`: the newest `limit` ("the last N messages", what a
    ///   page shows first);
    /// - with `since` (the [`resume`] rule): the oldest `limit` after it, so
    ///   that a reader pages forward with the last position it got; a
    ///   `since` of another epoch is not recovered and gets the oldest
    ///   `limit` kept, as a subscriber would have to start from there.
    pub fn from_page(since: Option<&StreamPosition>, page: HistoryPage, limit: usize) -> Self {
        let top = page.top_position();
        match since {
            None => {
                let mut publications = page.publications;
                let older = publications.len().saturating_sub(limit);
                publications.drain(..older);
                Self {
                    top,
                    recovered: true,
                    publications,
                }
            }
            Some(since) if Self::resumes(since, &page) => {
                let (recovered, mut publications) = resume(since, page);
                publications.truncate(limit);
                Self {
                    top,
                    recovered,
                    publications,
                }
            }
            Some(_) => {
                let mut publications = page.publications;
                publications.truncate(limit);
                Self {
                    top,
                    recovered: false,
                    publications,
                }
            }
        }
    }

    /// Whether `since` is a position in `page`'s epoch (or in the empty
    /// one, before the topic had any history), so that the page read after
    /// its offset is what follows it; another epoch's offsets mean nothing
    /// here, and the page is read from the start instead.
    pub fn resumes(since: &StreamPosition, page: &HistoryPage) -> bool {
        since.epoch == page.epoch || since.epoch.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use ferrocast_protocol::Topic;

    use super::*;

    const POLICY: HistoryPolicy = HistoryPolicy {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    fn publication(n: u32) -> Publication {
        Publication::new(
            Topic::parse("a.b", 255).unwrap(),
            Bytes::from(n.to_string()),
            Arc::from("n"),
        )
    }

    fn offsets(publications: &[Publication]) -> Vec<u64> {
        publications
            .iter()
            .map(|p| p.position.as_ref().unwrap().offset)
            .collect()
    }

    fn at(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn offsets_are_contiguous_and_history_keeps_the_newest() {
        let now = Instant::now();
        let mut history = TopicHistory::new(now);
        for n in 1..=5 {
            let (p, position) = history.append(publication(n), POLICY, now);
            assert_eq!(position.offset, u64::from(n));
            assert_eq!(p.position, Some(position));
        }
        let page = history.page(POLICY, 0, now);
        assert_eq!((page.top, page.oldest), (5, 3));
        assert_eq!(offsets(&page.publications), [3, 4, 5]);
        assert_eq!(offsets(&history.page(POLICY, 4, now).publications), [5]);
    }

    #[test]
    fn entries_older_than_the_ttl_are_not_returned() {
        let start = Instant::now();
        let mut history = TopicHistory::new(start);
        history.append(publication(1), POLICY, start);
        history.append(publication(2), POLICY, start + Duration::from_secs(30));
        let page = history.page(POLICY, 0, start + Duration::from_secs(61));
        assert_eq!(offsets(&page.publications), [2]);
        assert_eq!(page.oldest, 2);
        assert!(!history.expired(POLICY.ttl, start + Duration::from_secs(61)));
        assert!(history.expired(POLICY.ttl, start + Duration::from_secs(91)));
    }

    #[test]
    fn resume_replays_only_what_was_missed() {
        let now = Instant::now();
        let mut history = TopicHistory::new(now);
        for n in 1..=5 {
            history.append(publication(n), POLICY, now);
        }
        let epoch = history.page(POLICY, 0, now).epoch;
        let (recovered, replay) = resume(&at(&epoch, 3), history.page(POLICY, 3, now));
        assert!(recovered);
        assert_eq!(offsets(&replay), [4, 5]);
        // Offset 1 and 2 were trimmed: 2 is missed, so not recovered, but
        // what is kept is still replayed.
        let (recovered, replay) = resume(&at(&epoch, 1), history.page(POLICY, 1, now));
        assert!(!recovered);
        assert_eq!(offsets(&replay), [3, 4, 5]);
        // Nothing missed at the top.
        let (recovered, replay) = resume(&at(&epoch, 5), history.page(POLICY, 5, now));
        assert!(recovered && replay.is_empty());
        // A position beyond the top, or of another epoch.
        assert!(!resume(&at(&epoch, 9), history.page(POLICY, 9, now)).0);
        let (recovered, replay) = resume(&at("old", 2), history.page(POLICY, 2, now));
        assert!(!recovered && replay.is_empty());
    }

    #[test]
    fn resume_from_before_the_first_publication() {
        let now = Instant::now();
        let mut history = TopicHistory::new(now);
        history.append(publication(1), POLICY, now);
        history.append(publication(2), POLICY, now);
        let (recovered, replay) = resume(&at("", 0), history.page(POLICY, 0, now));
        assert!(recovered);
        assert_eq!(offsets(&replay), [1, 2]);
        for n in 3..=4 {
            history.append(publication(n), POLICY, now);
        }
        assert!(!resume(&at("", 0), history.page(POLICY, 0, now)).0);
        assert!(resume(&at("", 0), HistoryPage::empty()).0);
    }

    #[test]
    fn a_history_read_takes_the_newest_without_since_and_pages_forward_with_it() {
        let now = Instant::now();
        let mut history = TopicHistory::new(now);
        for n in 1..=5 {
            history.append(publication(n), POLICY, now);
        }
        let epoch = history.page(POLICY, 0, now).epoch;
        let read = |since: Option<StreamPosition>, after, limit, history: &mut TopicHistory| {
            HistoryRead::from_page(since.as_ref(), history.page(POLICY, after, now), limit)
        };
        // Kept: 3, 4, 5. The newest two, at the top.
        let newest = read(None, 0, 2, &mut history);
        assert_eq!(newest.top, at(&epoch, 5));
        assert!(newest.recovered);
        assert_eq!(offsets(&newest.publications), [4, 5]);
        // From a position: the oldest after it.
        let after_three = read(Some(at(&epoch, 3)), 3, 1, &mut history);
        assert!(after_three.recovered);
        assert_eq!(offsets(&after_three.publications), [4]);
        // 2 is gone: not recovered, what is kept follows.
        let after_one = read(Some(at(&epoch, 1)), 1, 10, &mut history);
        assert!(!after_one.recovered);
        assert_eq!(offsets(&after_one.publications), [3, 4, 5]);
        // Another epoch (read from the start): the oldest kept, not recovered.
        let foreign = read(Some(at("old", 4)), 0, 2, &mut history);
        assert!(!foreign.recovered);
        assert_eq!(offsets(&foreign.publications), [3, 4]);
        assert_eq!(foreign.top, at(&epoch, 5));
        // A limit of 0: only where the topic is.
        let top_only = read(None, 0, 0, &mut history);
        assert!(top_only.publications.is_empty());
        assert_eq!(top_only.top, at(&epoch, 5));
    }
}
