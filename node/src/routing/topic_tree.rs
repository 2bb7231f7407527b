//! The subscription trie: topic filters split on `/`, one node per level.
//!
//! Matching a topic walks at most three children per level (the literal level, `+` and `#`), each a
//! hash lookup, so its cost depends on the topic's depth and the number of matches, never on the
//! number of unrelated subscriptions. The walk allocates nothing: it splits the topic lazily and
//! hands hits to a visitor while the caller holds the tree's read lock.
//!
//! The tree is generic over the subscriber key `K` and value `V` so it can be table-tested without
//! sessions. Shared-subscription groups hang off the node of their filter; picking one member per
//! message is the caller's job (see `routing::Router`), the group only carries its round-robin cursor.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

/// One `$share/{name}/{filter}` group: every member subscribed to the same filter under `name`.
#[derive(Debug)]
pub struct SharedGroup<K, V> {
    pub name: Box<str>,
    /// The filter the group subscribed with (a node of the trie does not know its path).
    pub filter: Box<str>,
    pub members: Vec<(K, V)>,
    /// Next member for round-robin; atomic so it advances under the tree's read lock.
    pub cursor: AtomicUsize,
}

/// What a topic match yields: a plain subscription, or a shared group to pick one member from.
#[derive(Debug)]
pub enum Hit<'a, K, V> {
    Subscriber(&'a K, &'a V),
    Group(&'a SharedGroup<K, V>),
}

#[derive(Debug)]
struct Node<K, V> {
    children: HashMap<Box<str>, Node<K, V>>,
    subscribers: Vec<(K, V)>,
    groups: Vec<SharedGroup<K, V>>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            subscribers: Vec::new(),
            groups: Vec::new(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }

    fn emit<'a>(&'a self, visit: &mut impl FnMut(Hit<'a, K, V>)) {
        for (k, v) in &self.subscribers {
            visit(Hit::Subscriber(k, v));
        }
        for g in &self.groups {
            visit(Hit::Group(g));
        }
    }
}

/// Splits the first level off a topic or filter; `None` as the rest means it was the last level.
fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (s, None),
    }
}

#[derive(Debug)]
pub struct TopicTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> Default for TopicTree<K, V> {
    fn default() -> Self {
        TopicTree {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Eq, V> TopicTree<K, V> {
    /// Number of (filter, group, key) subscriptions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces `key`'s subscription to `filter` (in `group` if shared); returns the
    /// value it replaced. `filter` must already be validated.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        let mut rest = Some(filter);
        while let Some(s) = rest {
            let (level, next) = split_level(s);
            node = node.children.entry(level.into()).or_default();
            rest = next;
        }
        let list = match group {
            None => &mut node.subscribers,
            Some(name) => {
                let idx = match node.groups.iter().position(|g| &*g.name == name) {
                    Some(i) => i,
                    None => {
                        node.groups.push(SharedGroup {
                            name: name.into(),
                            filter: filter.into(),
                            members: Vec::new(),
                            cursor: AtomicUsize::new(0),
                        });
                        node.groups.len() - 1
                    }
                };
                &mut node.groups[idx].members
            }
        };
        if let Some(slot) = list.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(&mut slot.1, value));
        }
        list.push((key, value));
        self.len += 1;
        None
    }

    /// Removes `key`'s subscription to `filter` (in `group`), pruning emptied nodes.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, key: &K) -> Option<V> {
        let removed = Self::remove_in(&mut self.root, Some(filter), group, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    fn remove_in(
        node: &mut Node<K, V>,
        rest: Option<&str>,
        group: Option<&str>,
        key: &K,
    ) -> Option<V> {
        let Some(s) = rest else {
            let list = match group {
                None => &mut node.subscribers,
                Some(name) => {
                    let gi = node.groups.iter().position(|g| &*g.name == name)?;
                    let removed = Self::take(&mut node.groups[gi].members, key);
                    if node.groups[gi].members.is_empty() {
                        node.groups.swap_remove(gi);
                    }
                    return removed;
                }
            };
            return Self::take(list, key);
        };
        let (level, next) = split_level(s);
        let child = node.children.get_mut(level)?;
        let removed = Self::remove_in(child, next, group, key);
        if child.is_empty() {
            node.children.remove(level);
        }
        removed
    }

    fn take(list: &mut Vec<(K, V)>, key: &K) -> Option<V> {
        let i = list.iter().position(|(k, _)| k == key)?;
        Some(list.swap_remove(i).1)
    }

    /// Calls `visit` for every subscription and shared group whose filter matches `topic`.
    pub fn matches<'a>(&'a self, topic: &str, mut visit: impl FnMut(Hit<'a, K, V>)) {
        // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a `$` topic.
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, Some(topic), dollar, &mut visit);
    }

    fn walk<'a>(
        node: &'a Node<K, V>,
        rest: Option<&str>,
        no_wildcards: bool,
        visit: &mut impl FnMut(Hit<'a, K, V>),
    ) {
        let Some(s) = rest else {
            node.emit(visit);
            // "a/#" also matches "a" itself [MQTT-4.7.1-2].
            if let Some(hash) = node.children.get("#") {
                hash.emit(visit);
            }
            return;
        };
        let (level, next) = split_level(s);
        if let Some(child) = node.children.get(level) {
            Self::walk(child, next, false, visit);
        }
        if !no_wildcards {
            if let Some(plus) = node.children.get("+") {
                Self::walk(plus, next, false, visit);
            }
            if let Some(hash) = node.children.get("#") {
                hash.emit(visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::topic::{filter_matches, parse_filter};

    fn hits(tree: &TopicTree<u32, &'static str>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.matches(topic, |h| match h {
            Hit::Subscriber(k, v) => out.push(format!("{k}:{v}")),
            Hit::Group(g) => {
                let mut ms: Vec<_> = g.members.iter().map(|(k, _)| k.to_string()).collect();
                ms.sort();
                out.push(format!("{}[{}]", g.name, ms.join(",")));
            }
        });
        out.sort();
        out
    }

    const FILTERS: &[&str] = &[
        "a/b", "a/+", "a/#", "#", "+/b", "+/+", "a/b/c", "/", "+", "$SYS/#", "$SYS/+/x", "a/+/c",
        "a//c", "+/#",
    ];
    const TOPICS: &[&str] = &[
        "a/b", "a/c", "a", "a/b/c", "/", "b", "$SYS/a/x", "$SYS", "a//c", "x/b", "a/", "",
    ];

    /// Every (filter, topic) pair agrees with the reference matcher in `topic.rs`.
    #[test]
    fn trie_agrees_with_reference_matcher() {
        let mut tree = TopicTree::default();
        for (i, f) in FILTERS.iter().enumerate() {
            tree.insert(f, None, i as u32, "x");
        }
        for t in TOPICS.iter().filter(|t| !t.is_empty()) {
            let mut got: Vec<u32> = Vec::new();
            tree.matches(t, |h| {
                if let Hit::Subscriber(k, _) = h {
                    got.push(*k)
                }
            });
            got.sort();
            let want: Vec<u32> = FILTERS
                .iter()
                .enumerate()
                .filter(|(_, f)| filter_matches(f, t))
                .map(|(i, _)| i as u32)
                .collect();
            assert_eq!(got, want, "topic {t:?}");
        }
    }

    #[test]
    fn dollar_topics_not_matched_by_root_wildcards() {
        let mut tree = TopicTree::default();
        tree.insert("#", None, 1, "hash");
        tree.insert("+/x", None, 2, "plus");
        tree.insert("$SYS/#", None, 3, "sys");
        assert_eq!(hits(&tree, "$SYS/x"), vec!["3:sys"]);
        assert_eq!(hits(&tree, "a/x"), vec!["1:hash", "2:plus"]);
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut tree = TopicTree::default();
        assert_eq!(tree.insert("a/b", None, 1, "q0"), None);
        assert_eq!(tree.insert("a/b", None, 1, "q1"), Some("q0"));
        assert_eq!(tree.len(), 1);
        assert_eq!(hits(&tree, "a/b"), vec!["1:q1"]);
        assert_eq!(tree.remove("a/b", None, &2), None);
        assert_eq!(tree.remove("a/b", None, &1), Some("q1"));
        assert!(tree.is_empty());
        assert!(tree.root.is_empty(), "emptied nodes are pruned");
        assert_eq!(tree.remove("x/y", None, &1), None);
    }

    #[test]
    fn shared_groups_are_separate_from_plain_subscribers() {
        let mut tree = TopicTree::default();
        for (raw, key) in [
            ("$share/g1/a/+", 1),
            ("$share/g1/a/+", 2),
            ("$share/g2/a/+", 3),
            ("a/+", 1),
        ] {
            let spec = parse_filter(raw).unwrap();
            tree.insert(spec.filter, spec.group, key, "v");
        }
        assert_eq!(hits(&tree, "a/b"), vec!["1:v", "g1[1,2]", "g2[3]"]);
        tree.remove("a/+", Some("g1"), &1);
        tree.remove("a/+", Some("g2"), &3);
        assert_eq!(hits(&tree, "a/b"), vec!["1:v", "g1[2]"]);
        tree.remove("a/+", Some("g1"), &2);
        tree.remove("a/+", None, &1);
        assert!(tree.root.is_empty());
    }

    #[test]
    fn unrelated_subscriptions_are_not_visited() {
        let mut tree = TopicTree::default();
        for i in 0..10_000u32 {
            tree.insert(&format!("dev/{i}/state"), None, i, "v");
        }
        let mut n = 0;
        tree.matches("dev/42/state", |_| n += 1);
        assert_eq!(n, 1);
    }
}
