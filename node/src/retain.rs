//! Retained messages: one per topic, looked up by subscription filter.
//!
//! The mirror image of the subscription trie: here the trie holds concrete topics and the lookup
//! walks it with a filter, so a SUBSCRIBE visits only the branches its filter can match.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::message::Message;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    msg: Option<Arc<Message>>,
}

impl Node {
    fn collect(&self, out: &mut Vec<Arc<Message>>, now: Instant, skip_dollar: bool) {
        if let Some(m) = &self.msg
            && !m.is_expired(now)
        {
            out.push(m.clone());
        }
        for (level, child) in &self.children {
            if !(skip_dollar && level.starts_with('$')) {
                child.collect(out, now, false);
            }
        }
    }
}

#[derive(Default)]
pub struct RetainStore {
    root: RwLock<Node>,
    count: std::sync::atomic::AtomicUsize,
    /// Clients' retained messages (not the broker's own `$SYS` topics), and the bytes of their
    /// topics and payloads: what `[mqtt] max_retained` / `max_retained_bytes` bound.
    clients: std::sync::atomic::AtomicUsize,
    bytes: std::sync::atomic::AtomicUsize,
}

/// What a message counts against the limits: nothing for `$SYS` topics.
fn size(m: &Message) -> (usize, usize) {
    if m.topic.starts_with("$SYS/") {
        (0, 0)
    } else {
        (1, m.topic.len() + m.payload.len())
    }
}

impl RetainStore {
    pub fn len(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of topics and payloads of the clients' retained messages.
    pub fn bytes(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores `msg` as the retained message of its topic, or clears the topic when the payload is
    /// empty [MQTT-3.3.1-10, MQTT-3.3.1-11]. Unbounded: for what the cluster already accepted.
    pub fn set(&self, msg: Arc<Message>) {
        self.set_within(msg, usize::MAX, usize::MAX);
    }

    /// `set`, unless it would take the clients' retained messages past `max_count` or
    /// `max_bytes`: then nothing changes and it returns false. Clearing and replacing with
    /// no more bytes always fit; `$SYS` topics count against neither.
    pub fn set_within(&self, msg: Arc<Message>, max_count: usize, max_bytes: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut root = self.root.write();
        if msg.payload.is_empty() {
            if let Some((n, b)) = Self::clear(&mut root, &msg.topic) {
                self.count.fetch_sub(1, Relaxed);
                self.clients.fetch_sub(n, Relaxed);
                self.bytes.fetch_sub(b, Relaxed);
            }
            return true;
        }
        let old = Self::get(&root, &msg.topic).map(|m| size(m));
        let ((old_n, old_b), (n, b)) = (old.unwrap_or((0, 0)), size(&msg));
        let clients = self.clients.load(Relaxed) - old_n + n;
        let bytes = self.bytes() - old_b + b;
        if (n > old_n && clients > max_count) || (b > old_b && bytes > max_bytes) {
            return false;
        }
        let mut node = &mut *root;
        for level in msg.topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if node.msg.replace(msg).is_none() {
            self.count.fetch_add(1, Relaxed);
        }
        self.clients.store(clients, Relaxed);
        self.bytes.store(bytes, Relaxed);
        true
    }

    fn get<'a>(node: &'a Node, topic: &str) -> Option<&'a Arc<Message>> {
        let mut node = node;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.msg.as_ref()
    }

    /// Removes `topic`'s message; its `size` if there was one.
    fn clear(node: &mut Node, topic: &str) -> Option<(usize, usize)> {
        let (level, rest) = match topic.split_once('/') {
            Some((l, r)) => (l, Some(r)),
            None => (topic, None),
        };
        let child = node.children.get_mut(level)?;
        let removed = match rest {
            Some(r) => Self::clear(child, r),
            None => child.msg.take().map(|m| size(&m)),
        };
        if child.msg.is_none() && child.children.is_empty() {
            node.children.remove(level);
        }
        removed
    }

    /// Replaces every retained message with `msgs` (the replicated state was replaced).
    pub fn replace_all(&self, msgs: impl IntoIterator<Item = Arc<Message>>) {
        *self.root.write() = Node::default();
        self.count.store(0, std::sync::atomic::Ordering::Relaxed);
        self.clients.store(0, std::sync::atomic::Ordering::Relaxed);
        self.bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        for m in msgs {
            self.set(m);
        }
    }

    /// Every unexpired retained message whose topic matches `filter` (already validated).
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let root = self.root.read();
        let mut out = Vec::new();
        Self::walk(&root, Some(filter), true, now, &mut out);
        out
    }

    fn walk(
        node: &Node,
        rest: Option<&str>,
        at_root: bool,
        now: Instant,
        out: &mut Vec<Arc<Message>>,
    ) {
        let Some(f) = rest else {
            if let Some(m) = &node.msg
                && !m.is_expired(now)
            {
                out.push(m.clone());
            }
            return;
        };
        let (level, next) = match f.split_once('/') {
            Some((l, r)) => (l, Some(r)),
            None => (f, None),
        };
        match level {
            // "a/#" matches "a" and everything below; a root wildcard skips `$` topics.
            "#" => node.collect(out, now, at_root),
            "+" => {
                for (name, child) in &node.children {
                    if !(at_root && name.starts_with('$')) {
                        Self::walk(child, next, false, now, out);
                    }
                }
            }
            literal => {
                if let Some(child) = node.children.get(literal) {
                    Self::walk(child, next, false, now, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ByteString, Bytes, MessageProperties, QoS};
    use crate::routing::topic::filter_matches;

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: ByteString::from(topic.to_string()),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: MessageProperties::default(),
            expires_at: None,
            publisher: None,
        })
    }

    fn topics(store: &RetainStore, filter: &str) -> Vec<String> {
        let mut v: Vec<String> = store
            .matching(filter, Instant::now())
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        v.sort();
        v
    }

    const TOPICS: &[&str] = &["a", "a/b", "a/b/c", "a/c", "/", "/x", "$SYS/up", "b/b"];

    #[test]
    fn lookup_agrees_with_reference_matcher() {
        let store = RetainStore::default();
        for t in TOPICS {
            store.set(msg(t, b"x"));
        }
        for f in [
            "#", "+", "a/#", "a/+", "+/b", "+/+", "/+", "$SYS/#", "+/up", "a/b/c", "a/+/c", "x",
        ] {
            let mut want: Vec<String> = TOPICS
                .iter()
                .filter(|t| filter_matches(f, t))
                .map(|t| t.to_string())
                .collect();
            want.sort();
            assert_eq!(topics(&store, f), want, "filter {f:?}");
        }
    }

    #[test]
    fn set_replace_and_clear() {
        let store = RetainStore::default();
        store.set(msg("a/b", b"1"));
        store.set(msg("a/b", b"2"));
        assert_eq!(store.len(), 1);
        assert_eq!(&store.matching("a/b", Instant::now())[0].payload[..], b"2");
        store.set(msg("a/b", b""));
        assert_eq!(store.len(), 0);
        assert!(
            store.root.read().children.is_empty(),
            "cleared branches are pruned"
        );
        store.set(msg("nothing/here", b""));
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn expired_retained_messages_are_not_returned() {
        let store = RetainStore::default();
        let mut m = (*msg("t", b"x")).clone();
        m.expires_at = Some(Instant::now());
        store.set(Arc::new(m));
        assert!(store.matching("t", Instant::now()).is_empty());
    }
}
