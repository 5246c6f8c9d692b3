//! An index of wildcard filters by token, to find every pattern that matches a
//! topic without testing each one.

use std::collections::HashMap;

use ferrocast_protocol::{Topic, TopicFilter};

/// A trie over filter tokens: literal tokens by name, `*` as its own branch,
/// and `>` recorded on the node where it stands.
#[derive(Debug, Default)]
pub(crate) struct PatternIndex {
    root: TrieNode,
    len: usize,
}

#[derive(Debug, Default)]
struct TrieNode {
    literal: HashMap<Box<str>, TrieNode>,
    star: Option<Box<TrieNode>>,
    /// The filter whose last token ends at this node.
    ends_here: Option<TopicFilter>,
    /// The filter whose `>` follows this node.
    tail: Option<TopicFilter>,
}

impl TrieNode {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.ends_here.is_none()
            && self.tail.is_none()
    }
}

impl PatternIndex {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `filter`; adding it twice is harmless.
    pub(crate) fn insert(&mut self, filter: &TopicFilter) {
        let mut node = &mut self.root;
        for token in filter.tokens() {
            node = match token {
                ">" => {
                    if node.tail.replace(filter.clone()).is_none() {
                        self.len += 1;
                    }
                    return;
                }
                "*" => node.star.get_or_insert_with(Default::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        if node.ends_here.replace(filter.clone()).is_none() {
            self.len += 1;
        }
    }

    /// Removes `filter` and prunes branches left empty.
    pub(crate) fn remove(&mut self, filter: &TopicFilter) {
        let tokens: Vec<&str> = filter.tokens().collect();
        if remove_at(&mut self.root, &tokens) {
            self.len -= 1;
        }
    }

    /// Appends every indexed filter that matches `topic` to `out`.
    pub(crate) fn matches(&self, topic: &Topic, out: &mut Vec<TopicFilter>) {
        let tokens: Vec<&str> = topic.as_str().split('.').collect();
        collect(&self.root, &tokens, out);
    }
}

/// Removes the filter spelled by `tokens` below `node`; true if it was there.
fn remove_at(node: &mut TrieNode, tokens: &[&str]) -> bool {
    match tokens.split_first() {
        None => node.ends_here.take().is_some(),
        Some((&">", _)) => node.tail.take().is_some(),
        Some((&"*", rest)) => {
            let Some(child) = node.star.as_deref_mut() else {
                return false;
            };
            let removed = remove_at(child, rest);
            if child.is_empty() {
                node.star = None;
            }
            removed
        }
        Some((literal, rest)) => {
            let Some(child) = node.literal.get_mut(*literal) else {
                return false;
            };
            let removed = remove_at(child, rest);
            if child.is_empty() {
                node.literal.remove(*literal);
            }
            removed
        }
    }
}

fn collect(node: &TrieNode, tokens: &[&str], out: &mut Vec<TopicFilter>) {
    let Some((token, rest)) = tokens.split_first() else {
        out.extend(node.ends_here.iter().cloned());
        return;
    };
    // `>` needs at least one more token, which there is.
    out.extend(node.tail.iter().cloned());
    if let Some(child) = node.literal.get(*token) {
        collect(child, rest, out);
    }
    if let Some(child) = node.star.as_deref() {
        collect(child, rest, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_protocol::MAX_TOPIC_LEN;
    use proptest::prelude::*;

    fn sorted(mut v: Vec<TopicFilter>) -> Vec<String> {
        v.sort();
        v.into_iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn finds_every_matching_pattern() {
        let mut index = PatternIndex::default();
        for f in [
            "chat.*",
            "chat.>",
            "*.room1",
            ">",
            "*",
            "chat.*.typing",
            "news.>",
        ] {
            index.insert(&TopicFilter::parse(f, MAX_TOPIC_LEN).unwrap());
        }
        let mut out = Vec::new();
        index.matches(
            &Topic::parse("chat.room1", MAX_TOPIC_LEN).unwrap(),
            &mut out,
        );
        assert_eq!(sorted(out), ["*.room1", ">", "chat.*", "chat.>"]);
        let mut out = Vec::new();
        index.matches(&Topic::parse("chat", MAX_TOPIC_LEN).unwrap(), &mut out);
        assert_eq!(sorted(out), ["*", ">"]);
        assert_eq!(index.len(), 7);
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("*")], 1..4),
            any::<bool>(),
        )
            .prop_map(|(tokens, tail)| {
                let mut t: Vec<&str> = tokens;
                if tail {
                    t.push(">");
                }
                t.join(".")
            })
    }

    proptest! {
        /// The index agrees with testing each filter, through inserts and removes.
        #[test]
        fn agrees_with_brute_force(
            filters in prop::collection::vec(filter_strategy(), 0..12),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            topics in prop::collection::vec(prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..5), 1..8),
        ) {
            let mut index = PatternIndex::default();
            let mut live: std::collections::BTreeSet<TopicFilter> = Default::default();
            for f in &filters {
                let f = TopicFilter::parse(f, MAX_TOPIC_LEN).unwrap();
                index.insert(&f);
                live.insert(f);
            }
            for r in removed {
                if filters.is_empty() { break; }
                let f = TopicFilter::parse(&filters[r.index(filters.len())], MAX_TOPIC_LEN).unwrap();
                index.remove(&f);
                live.remove(&f);
            }
            prop_assert_eq!(index.len(), live.len());
            for t in topics {
                let topic = Topic::parse(&t.join("."), MAX_TOPIC_LEN).unwrap();
                let mut got = Vec::new();
                index.matches(&topic, &mut got);
                let expected: Vec<TopicFilter> = live.iter().filter(|f| f.matches(&topic)).cloned().collect();
                prop_assert_eq!(sorted(got), sorted(expected));
            }
            for f in live.clone() { index.remove(&f); }
            prop_assert!(index.root.is_empty());
            prop_assert_eq!(index.len(), 0);
        }
    }
}
