//! Parses arbitrary text as topics and filters and matches them, against a
//! simple reference of the grammar and of wildcard matching.
//!
//! The input is up to three lines: filter `a`, filter `b`, topic `t` (bytes
//! that are not UTF-8 are replaced, so non-ASCII characters still arrive).
//! It checks that:
//! - `Topic::parse` and `TopicFilter::parse` accept exactly what the grammar
//!   allows, under the grammar's length limit and a tight one;
//! - a valid topic is a filter without wildcard that matches itself only;
//! - `matches` agrees with a token-by-token reference;
//! - `covers` is exact against a plain topic, and sound: when `a` covers `b`,
//!   every topic `b` matches, `a` matches.
#![no_main]

use ferrocast_protocol::{Topic, TopicError, TopicFilter, MAX_TOPIC_LEN};
use libfuzzer_sys::fuzz_target;

const TIGHT: usize = 8;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let (a, b, t) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    for s in [a, b, t] {
        check_parse(s, MAX_TOPIC_LEN);
        check_parse(s, TIGHT);
    }
    let (Ok(a), Ok(b)) = (
        TopicFilter::parse(a, MAX_TOPIC_LEN),
        TopicFilter::parse(b, MAX_TOPIC_LEN),
    ) else {
        return;
    };
    assert!(a.covers(&a), "{a:?} does not cover itself");
    if let Some(topic) = b.as_topic() {
        assert_eq!(a.covers(&b), a.matches(&topic), "{a:?} covers {b:?}");
    }
    if let Ok(topic) = Topic::parse(t, MAX_TOPIC_LEN) {
        for filter in [&a, &b] {
            let expected = reference_match(
                &filter.tokens().collect::<Vec<_>>(),
                &tokens(topic.as_str()),
            );
            assert_eq!(filter.matches(&topic), expected, "{filter:?} ~ {topic:?}");
        }
        if a.covers(&b) && b.matches(&topic) {
            assert!(a.matches(&topic), "{a:?} covers {b:?} but misses {topic:?}");
        }
    }
});

fn check_parse(s: &str, max_len: usize) {
    let topic = Topic::parse(s, max_len);
    let filter = TopicFilter::parse(s, max_len);
    assert_eq!(
        topic.is_ok(),
        reference_valid(s, max_len, false),
        "topic {s:?}"
    );
    assert_eq!(
        filter.is_ok(),
        reference_valid(s, max_len, true),
        "filter {s:?}"
    );
    for err in [topic.as_ref().err(), filter.as_ref().err()]
        .into_iter()
        .flatten()
    {
        let too_long = !s.is_empty() && s.len() > max_len.min(MAX_TOPIC_LEN);
        assert_eq!(
            matches!(err, TopicError::TooLong { .. }),
            too_long,
            "{s:?}: {err}"
        );
    }
    if let Ok(filter) = &filter {
        assert_eq!(filter.as_str(), s);
        let wildcard = tokens(s).iter().any(|t| *t == "*" || *t == ">");
        assert_eq!(filter.is_pattern(), wildcard, "{s:?}");
        assert_eq!(filter.namespace(), tokens(s)[0]);
    }
    if let Ok(topic) = topic {
        assert_eq!(topic.as_str(), s);
        let filter = TopicFilter::from(topic.clone());
        assert_eq!(Ok(&filter), TopicFilter::parse(s, max_len).as_ref());
        assert_eq!(filter.as_topic().as_ref(), Some(&topic));
        assert!(filter.matches(&topic));
        assert_eq!(topic.namespace(), filter.namespace());
    }
}

fn tokens(s: &str) -> Vec<&str> {
    s.split('.').collect()
}

/// The grammar of docs/protocol.md, written plainly.
fn reference_valid(s: &str, max_len: usize, wildcards: bool) -> bool {
    let tokens = tokens(s);
    let last = tokens.len() - 1;
    !s.is_empty()
        && s.len() <= max_len.min(MAX_TOPIC_LEN)
        && tokens.iter().enumerate().all(|(i, token)| {
            let plain = !token.is_empty()
                && token.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@' | b'=')
                });
            plain || wildcards && (*token == "*" || *token == ">" && i == last)
        })
}

/// `*` takes exactly one token, `>` one or more, anything else itself.
fn reference_match(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (None, None) => true,
        (Some((&">", _)), Some(_)) => true,
        (Some((&"*", p)), Some((_, t))) => reference_match(p, t),
        (Some((literal, p)), Some((token, t))) => literal == token && reference_match(p, t),
        _ => false,
    }
}
