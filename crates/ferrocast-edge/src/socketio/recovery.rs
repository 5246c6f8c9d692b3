//! Connection-state recovery on any node: what the `offset` of Socket.IO's
//! recovery carries (docs/socketio.md, "Recovery").
//!
//! socket.io-client 4.6+ keeps the last argument of the last event it
//! handled when it is a string (the `offset`) and sends it back, with the
//! `pid` the node gave at CONNECT, in its next CONNECT. Socket.IO's own
//! server looks both up in memory (or its adapter's store), so recovery
//! fails when the client lands on another server. Here the offset itself
//! carries everything a node needs: every filter the connection held, and
//! for each topic of a namespace with history the position of the last
//! publication written to it. Any node restores it by subscribing again
//! with `since`, which replays what was missed from the backplane's
//! history.
//!
//! Nothing is signed: restoring is subscribing, with the same permission
//! checks, limits and rates as a fresh `subscribe`, so a forged offset
//! obtains nothing a client could not ask for anyway.
//!
//! Format: entries separated by a space, each `<filter>` or
//! `<topic>~<offset>~<epoch>`. Filters and epochs never hold a space or
//! `~` (topic tokens are `A–Z a–z 0–9 _ - : @ =`), so no escaping is needed.

use std::fmt::Write as _;

use ferrocast_protocol::{StreamPosition, TopicFilter};

/// The connection's filters and, for topics with history, the position of
/// the last publication written to the client. A vector: a connection holds
/// a few rooms, and each offset names them all anyway; it allocates nothing
/// until the first.
#[derive(Debug, Default)]
pub(super) struct Rooms(Vec<(TopicFilter, Option<StreamPosition>)>);

/// Why an offset could not be read: the client starts afresh
/// (`recovered` false).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum OffsetError {
    #[error("a recovery offset names a filter that is not valid")]
    Filter,
    #[error("a recovery offset's position is broken")]
    Position,
    #[error("a recovery offset names more filters than a connection may hold")]
    TooMany,
}

impl Rooms {
    /// The connection holds `filter`, from `position` on when it is a topic
    /// with history.
    pub(super) fn join(&mut self, filter: TopicFilter, position: Option<StreamPosition>) {
        match self.0.iter_mut().find(|(held, _)| *held == filter) {
            Some((_, at)) => *at = position,
            None => self.0.push((filter, position)),
        }
    }

    pub(super) fn leave(&mut self, filter: &TopicFilter) {
        self.0.retain(|(held, _)| held != filter);
    }

    /// A publication at `position` of `filter`'s topic went to the client.
    pub(super) fn delivered(&mut self, filter: &TopicFilter, position: &StreamPosition) {
        let found = self.0.iter_mut().find(|(held, _)| held == filter);
        if let Some((_, Some(at))) = found {
            if at.epoch != position.epoch || at.offset < position.offset {
                at.clone_from(position);
            }
        }
    }

    /// The offset string of the current state.
    pub(super) fn offset(&self) -> String {
        let mut offset = String::new();
        self.write_offset(&mut offset);
        offset
    }

    /// Appends the offset to `out` (a delivery's packet text: no string of
    /// its own per delivery).
    pub(super) fn write_offset(&self, out: &mut String) {
        for (i, (filter, position)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(filter.as_str());
            if let Some(position) = position {
                let _ = write!(out, "~{}~{}", position.offset, position.epoch);
            }
        }
    }
}

/// The filters of an offset, with the position to resume each from.
pub(super) fn parse(
    offset: &str,
    max_topic_length: usize,
    max_filters: usize,
) -> Result<Vec<(TopicFilter, Option<StreamPosition>)>, OffsetError> {
    let mut rooms = Vec::new();
    for entry in offset.split(' ').filter(|entry| !entry.is_empty()) {
        if rooms.len() == max_filters {
            return Err(OffsetError::TooMany);
        }
        let mut parts = entry.splitn(3, '~');
        let filter = parts.next().unwrap_or_default();
        let filter =
            TopicFilter::parse(filter, max_topic_length).map_err(|_| OffsetError::Filter)?;
        let position = match (parts.next(), parts.next()) {
            (None, _) => None,
            (Some(number), Some(epoch)) => Some(StreamPosition {
                epoch: epoch.to_owned(),
                offset: number.parse().map_err(|_| OffsetError::Position)?,
            }),
            (Some(_), None) => return Err(OffsetError::Position),
        };
        if position.is_some() && filter.is_pattern() {
            return Err(OffsetError::Position);
        }
        rooms.push((filter, position));
    }
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::parse(text, 255).unwrap()
    }

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn an_offset_carries_every_filter_and_position() {
        let mut rooms = Rooms::default();
        rooms.join(filter("news.a"), Some(at(3, "e1")));
        rooms.join(filter("chat.*"), None);
        rooms.join(filter("news.empty"), Some(at(0, "")));
        rooms.delivered(&filter("news.a"), &at(4, "e1"));
        rooms.delivered(&filter("news.a"), &at(2, "e1"));
        let offset = rooms.offset();
        assert_eq!(offset, "news.a~4~e1 chat.* news.empty~0~");
        assert_eq!(
            parse(&offset, 255, 10).unwrap(),
            vec![
                (filter("news.a"), Some(at(4, "e1"))),
                (filter("chat.*"), None),
                (filter("news.empty"), Some(at(0, ""))),
            ]
        );
        rooms.leave(&filter("news.a"));
        assert_eq!(rooms.offset(), "chat.* news.empty~0~");
        assert_eq!(parse("", 255, 10).unwrap(), vec![]);
    }

    #[test]
    fn broken_offsets_are_refused() {
        assert_eq!(parse("a..b", 255, 10), Err(OffsetError::Filter));
        assert_eq!(parse("a.b~x~e", 255, 10), Err(OffsetError::Position));
        assert_eq!(parse("a.b~1", 255, 10), Err(OffsetError::Position));
        assert_eq!(parse("a.*~1~e", 255, 10), Err(OffsetError::Position));
        assert_eq!(parse("a.b a.c", 255, 1), Err(OffsetError::TooMany));
    }
}
