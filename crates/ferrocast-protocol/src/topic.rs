//! Topic names and subscription filters.
//!
//! A topic is a dot-separated list of tokens, 1 to 255 bytes long in all. A token is
//! non-empty and made of `A–Z a–z 0–9 _ - : @ =`. The first token is the
//! *namespace*, which carries settings such as history and permissions.
//!
//! A subscription filter is a topic that may also use NATS-style wildcards: `*`
//! stands for exactly one token, and `>` (only as the last token) for one or more
//! tokens. `chat.*` matches `chat.room1` but not `chat.room1.typing`; `chat.>`
//! matches both, and neither matches `chat`.

use std::fmt;
use std::sync::Arc;

/// The longest topic or filter the grammar allows, in bytes. A node may be
/// configured with a lower limit.
pub const MAX_TOPIC_LEN: usize = 255;

/// Why a string is not a valid topic or filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is {len} bytes long, the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("topic has an empty token (leading, trailing or double '.')")]
    EmptyToken,
    #[error(
        "topic has the character {ch:?} at byte {at}; tokens are made of A-Z a-z 0-9 _ - : @ ="
    )]
    InvalidChar { ch: char, at: usize },
    #[error(
        "wildcards ('*', '>') are allowed in subscriptions only, not in a topic to publish to"
    )]
    WildcardNotAllowed,
    #[error("'>' is allowed only as the last token")]
    TailNotLast,
    #[error("a wildcard must be a whole token ('chat.*', not 'chat.ro*')")]
    PartialWildcard,
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@' | b'=')
}

/// Checks `s` against the grammar. With `wildcards`, `*` and `>` tokens are allowed.
fn validate(s: &str, max_len: usize, wildcards: bool) -> Result<bool, TopicError> {
    let max = max_len.min(MAX_TOPIC_LEN);
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > max {
        return Err(TopicError::TooLong { len: s.len(), max });
    }
    let mut has_wildcard = false;
    let mut offset = 0;
    let mut tokens = s.split('.').peekable();
    while let Some(token) = tokens.next() {
        let is_last = tokens.peek().is_none();
        match token {
            "" => return Err(TopicError::EmptyToken),
            "*" | ">" if !wildcards => return Err(TopicError::WildcardNotAllowed),
            "*" => has_wildcard = true,
            ">" if !is_last => return Err(TopicError::TailNotLast),
            ">" => has_wildcard = true,
            _ => {
                if let Some((i, ch)) = token
                    .char_indices()
                    .find(|&(_, ch)| !ch.is_ascii() || !is_token_byte(ch as u8))
                {
                    return Err(match ch {
                        '*' | '>' if wildcards => TopicError::PartialWildcard,
                        '*' | '>' => TopicError::WildcardNotAllowed,
                        _ => TopicError::InvalidChar { ch, at: offset + i },
                    });
                }
            }
        }
        offset += token.len() + 1;
    }
    Ok(has_wildcard)
}

/// A valid topic name: what is published to and what a message is delivered on.
///
/// Cheap to clone (a shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Parses a topic name, allowing at most `max_len` bytes (never more than
    /// [`MAX_TOPIC_LEN`]).
    pub fn parse(s: &str, max_len: usize) -> Result<Self, TopicError> {
        validate(s, max_len, false)?;
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first token, which names the namespace.
    pub fn namespace(&self) -> &str {
        namespace_of(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn namespace_of(s: &str) -> &str {
    s.split('.').next().unwrap_or(s)
}

/// What a subscription asks for: one topic, or a pattern with wildcards.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter {
    text: Arc<str>,
    wildcard: bool,
}

impl TopicFilter {
    /// Parses a filter, allowing at most `max_len` bytes (never more than
    /// [`MAX_TOPIC_LEN`]).
    pub fn parse(s: &str, max_len: usize) -> Result<Self, TopicError> {
        let wildcard = validate(s, max_len, true)?;
        Ok(Self {
            text: Arc::from(s),
            wildcard,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the filter uses `*` or `>`.
    pub fn is_pattern(&self) -> bool {
        self.wildcard
    }

    /// The single topic this filter names, when it has no wildcard.
    pub fn as_topic(&self) -> Option<Topic> {
        (!self.wildcard).then(|| Topic(self.text.clone()))
    }

    /// The first token. For a pattern it may be `*`.
    pub fn namespace(&self) -> &str {
        namespace_of(&self.text)
    }

    /// The tokens, wildcards included.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.text.split('.')
    }

    /// Whether a message published on `topic` is delivered to this subscription.
    pub fn matches(&self, topic: &Topic) -> bool {
        if !self.wildcard {
            return *self.text == *topic.0;
        }
        let mut topic_tokens = topic.as_str().split('.');
        for pattern_token in self.text.split('.') {
            match pattern_token {
                // `>` is always last and needs at least one more token.
                ">" => return topic_tokens.next().is_some(),
                "*" => {
                    if topic_tokens.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if topic_tokens.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic_tokens.next().is_none()
    }

    /// Whether every topic `other` matches is also matched by this filter:
    /// what permission checks ask ("may a client allowed `chat.*` subscribe
    /// to `chat.>`?" no: `chat.a.b` would reach it).
    pub fn covers(&self, other: &TopicFilter) -> bool {
        let mut theirs = other.tokens();
        for mine in self.tokens() {
            let Some(their) = theirs.next() else {
                // They stop where this filter still needs a token.
                return false;
            };
            match (mine, their) {
                // `>` takes one or more tokens, as whatever they have left does.
                (">", _) => return true,
                // Their `>` reaches topics this filter's tokens do not.
                (_, ">") => return false,
                ("*", _) => {}
                (literal, token) => {
                    if literal != token {
                        return false;
                    }
                }
            }
        }
        theirs.next().is_none()
    }
}

impl From<Topic> for TopicFilter {
    fn from(topic: Topic) -> Self {
        Self {
            text: topic.0,
            wildcard: false,
        }
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(s: &str) -> Topic {
        Topic::parse(s, MAX_TOPIC_LEN).unwrap()
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s, MAX_TOPIC_LEN).unwrap()
    }

    #[test]
    fn accepts_the_documented_alphabet() {
        let t = topic("chat.room-1_a:b@c=d.X9");
        assert_eq!(t.namespace(), "chat");
        assert_eq!(t.as_str(), "chat.room-1_a:b@c=d.X9");
    }

    #[test]
    fn rejects_bad_topics_with_the_reason() {
        let max = MAX_TOPIC_LEN;
        assert_eq!(Topic::parse("", max), Err(TopicError::Empty));
        assert_eq!(Topic::parse("a..b", max), Err(TopicError::EmptyToken));
        assert_eq!(Topic::parse(".a", max), Err(TopicError::EmptyToken));
        assert_eq!(Topic::parse("a.", max), Err(TopicError::EmptyToken));
        assert_eq!(
            Topic::parse("a.b c", max),
            Err(TopicError::InvalidChar { ch: ' ', at: 3 })
        );
        assert_eq!(
            Topic::parse("a.é", max),
            Err(TopicError::InvalidChar { ch: 'é', at: 2 })
        );
        assert_eq!(
            Topic::parse("a.*", max),
            Err(TopicError::WildcardNotAllowed)
        );
        assert_eq!(
            Topic::parse("a.>", max),
            Err(TopicError::WildcardNotAllowed)
        );
        assert_eq!(
            Topic::parse("a.b*", max),
            Err(TopicError::WildcardNotAllowed)
        );
        let long = "a".repeat(256);
        assert_eq!(
            Topic::parse(&long, max),
            Err(TopicError::TooLong { len: 256, max: 255 })
        );
        assert!(Topic::parse(&long[..255], max).is_ok());
        assert_eq!(
            Topic::parse("abcdef", 5),
            Err(TopicError::TooLong { len: 6, max: 5 })
        );
    }

    #[test]
    fn rejects_bad_filters_with_the_reason() {
        let max = MAX_TOPIC_LEN;
        assert_eq!(
            TopicFilter::parse("a.>.b", max),
            Err(TopicError::TailNotLast)
        );
        assert_eq!(
            TopicFilter::parse("a.b*", max),
            Err(TopicError::PartialWildcard)
        );
        assert_eq!(
            TopicFilter::parse("a.>b", max),
            Err(TopicError::PartialWildcard)
        );
        assert_eq!(TopicFilter::parse("a..*", max), Err(TopicError::EmptyToken));
        assert!(filter("*").is_pattern());
        assert!(filter(">").is_pattern());
        assert!(!filter("a.b").is_pattern());
    }

    #[test]
    fn wildcard_semantics() {
        let star = filter("chat.*");
        assert!(star.matches(&topic("chat.room1")));
        assert!(!star.matches(&topic("chat")));
        assert!(!star.matches(&topic("chat.room1.typing")));
        assert!(!star.matches(&topic("news.room1")));

        let tail = filter("chat.>");
        assert!(tail.matches(&topic("chat.room1")));
        assert!(tail.matches(&topic("chat.room1.typing")));
        assert!(!tail.matches(&topic("chat")));

        let mid = filter("*.room1.*");
        assert!(mid.matches(&topic("chat.room1.typing")));
        assert!(!mid.matches(&topic("chat.room2.typing")));

        assert!(filter(">").matches(&topic("a")));
        assert!(filter(">").matches(&topic("a.b.c")));
        assert!(filter("*").matches(&topic("a")));
        assert!(!filter("*").matches(&topic("a.b")));

        let exact = filter("chat.room1");
        assert!(exact.matches(&topic("chat.room1")));
        assert!(!exact.matches(&topic("chat.room10")));
        assert_eq!(exact.as_topic(), Some(topic("chat.room1")));
        assert_eq!(star.as_topic(), None);
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_:@=-]{1,6}"
    }

    fn topic_string() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..6).prop_map(|t| t.join("."))
    }

    /// A filter derived from a topic by replacing some tokens with `*` and maybe
    /// the tail with `>`: it must match that topic.
    fn matching_filter(topic: &str, stars: &[bool], tail_at: Option<usize>) -> String {
        let tokens: Vec<&str> = topic.split('.').collect();
        let mut out: Vec<&str> = Vec::new();
        for (i, tok) in tokens.iter().enumerate() {
            if tail_at == Some(i) {
                out.push(">");
                break;
            }
            out.push(if stars.get(i).copied().unwrap_or(false) {
                "*"
            } else {
                tok
            });
        }
        out.join(".")
    }

    /// Reference matcher over token vectors, written independently of `matches`.
    fn reference_match(pattern: &[&str], topic: &[&str]) -> bool {
        match (pattern.split_first(), topic.split_first()) {
            (None, None) => true,
            (Some((&">", _)), Some(_)) => true,
            (Some((&"*", p)), Some((_, t))) => reference_match(p, t),
            (Some((lit, p)), Some((tok, t))) => lit == tok && reference_match(p, t),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn generated_topics_parse_and_round_trip(s in topic_string()) {
            let t = Topic::parse(&s, MAX_TOPIC_LEN).unwrap();
            prop_assert_eq!(t.as_str(), s.as_str());
            prop_assert!(TopicFilter::from(t.clone()).matches(&t));
        }

        #[test]
        fn derived_filters_match_their_topic(
            s in topic_string(),
            stars in prop::collection::vec(any::<bool>(), 6),
            tail in prop::option::of(0usize..6),
        ) {
            let token_count = s.split('.').count();
            let tail_at = tail.filter(|&t| t < token_count);
            let f = matching_filter(&s, &stars, tail_at);
            let filter = TopicFilter::parse(&f, MAX_TOPIC_LEN).unwrap();
            prop_assert!(filter.matches(&Topic::parse(&s, MAX_TOPIC_LEN).unwrap()));
        }

        #[test]
        fn matches_agrees_with_reference(
            pattern in prop::collection::vec(prop_oneof![Just("*".to_string()), Just("a".to_string()), Just("b".to_string())], 1..5),
            tail in any::<bool>(),
            topic in prop::collection::vec(prop_oneof![Just("a".to_string()), Just("b".to_string())], 1..6),
        ) {
            let mut p: Vec<&str> = pattern.iter().map(String::as_str).collect();
            if tail { p.push(">"); }
            let t: Vec<&str> = topic.iter().map(String::as_str).collect();
            let filter = TopicFilter::parse(&p.join("."), MAX_TOPIC_LEN).unwrap();
            let tp = Topic::parse(&t.join("."), MAX_TOPIC_LEN).unwrap();
            prop_assert_eq!(filter.matches(&tp), reference_match(&p, &t));
        }

        #[test]
        fn covers_agrees_with_every_topic(
            mine in prop::collection::vec(prop_oneof![Just("*"), Just("a"), Just("b")], 1..4),
            my_tail in any::<bool>(),
            theirs in prop::collection::vec(prop_oneof![Just("*"), Just("a"), Just("b")], 1..4),
            their_tail in any::<bool>(),
        ) {
            let build = |tokens: &[&str], tail: bool| {
                let mut t = tokens.to_vec();
                if tail { t.push(">"); }
                TopicFilter::parse(&t.join("."), MAX_TOPIC_LEN).unwrap()
            };
            let (mine, theirs) = (build(&mine, my_tail), build(&theirs, their_tail));
            // Every topic of up to 6 tokens over {a, b, c}: `c` stands for any
            // token neither filter names.
            let mut topics = vec![String::new()];
            let mut all = Vec::new();
            for _ in 0..6 {
                topics = topics
                    .iter()
                    .flat_map(|t| ["a", "b", "c"].map(|x| if t.is_empty() { x.to_string() } else { format!("{t}.{x}") }))
                    .collect();
                all.extend(topics.iter().cloned());
            }
            let expected = all.iter().all(|t| {
                let topic = Topic::parse(t, MAX_TOPIC_LEN).unwrap();
                !theirs.matches(&topic) || mine.matches(&topic)
            });
            prop_assert_eq!(mine.covers(&theirs), expected, "{} covers {}", mine.as_str(), theirs.as_str());
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,300}") {
            let topic = Topic::parse(&s, MAX_TOPIC_LEN);
            let filter = TopicFilter::parse(&s, MAX_TOPIC_LEN);
            // Every valid topic is also a valid filter.
            if topic.is_ok() { prop_assert!(filter.is_ok()); }
        }
    }
}
