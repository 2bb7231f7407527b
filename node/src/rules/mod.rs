//! The rule engine: SQL rules over messages and client / device events, and the actions their
//! output drives (republish, webhook, log).
//!
//! - `sql.rs`, `eval.rs`, `funcs.rs`: the rule language, compiled once per rule
//! - `context.rs`: the fields a message or an event offers a rule
//! - `actions.rs`: what a rule does with its output, and the `${field}` templates
//! - this file: the compiled rules of this node, the hooks the broker calls, the worker
//!
//! Rules are raft metadata: created on any node, each change is applied on every node as
//! `Applied::Rule`, upon which this node recompiles that rule (`reload`). The node whose REST
//! API took the change also reloads it before it answers, so a rule acts on (or, disabled or
//! deleted, no longer acts on) the very next message there; the later `Applied::Rule` finds it
//! current and leaves it, with its webhook queues, as it is. A message or event enters the
//! engine on the node where it enters the cluster.
//!
//! The hot path: `on_message` costs one atomic load when no rule reads messages, and one
//! topic-trie walk otherwise; a match hands a job to a bounded queue and returns. The worker
//! task (on the node's multi-threaded runtime) builds the context, evaluates the SQL and runs
//! the actions; a full queue drops the job and counts it as failed. Nothing here awaits on an
//! MQTT worker.

mod actions;
pub(crate) mod context;
mod eval;
mod funcs;
mod sql;
#[cfg(test)]
mod sql_tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use realmq_api::RuleTest;
use realmq_raft_store::Registry;
use realmq_raft_store::model::{Rule, RuleAction};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::routing::topic_tree::{Hit, TopicTree};

pub use context::{EventData, MessageInput};
pub use sql::{Event, SqlError, compile};

/// Jobs waiting for the worker, at most; beyond it new ones are dropped and counted.
const QUEUE: usize = 10_000;

/// Counters of one rule on this node (`GET /api/v1/rules/{id}` sums them over the nodes).
#[derive(Debug, Default)]
pub struct RuleMetrics {
    /// A message or event its FROM names reached the rule.
    pub matched: AtomicU64,
    /// Its WHERE held and it produced output.
    pub passed: AtomicU64,
    /// Evaluation failed, or the job was dropped because the engine fell behind.
    pub failed: AtomicU64,
    pub actions_success: AtomicU64,
    pub actions_failed: AtomicU64,
}

impl RuleMetrics {
    fn row(&self, node: u64, id: u64, running: bool) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "node": node,
            "id": id,
            "running": running,
            "matched": get(&self.matched),
            "passed": get(&self.passed),
            "failed": get(&self.failed),
            "actions_success": get(&self.actions_success),
            "actions_failed": get(&self.actions_failed),
        })
    }
}

/// One enabled rule, compiled.
pub struct Compiled {
    pub id: u64,
    /// The stored rule it was compiled from (a reload that finds it unchanged keeps it).
    source: Rule,
    /// Whether it runs here (the rule is enabled and this node has applied that).
    enable: bool,
    query: sql::Query,
    actions: Vec<actions::Action>,
    metrics: Arc<RuleMetrics>,
}

/// The enabled rules, indexed by what they read.
#[derive(Default)]
struct Index {
    messages: TopicTree<u64, Arc<Compiled>>,
    events: HashMap<Event, Vec<Arc<Compiled>>>,
}

/// What a job carries to the worker.
enum Job {
    Message {
        rules: Vec<Arc<Compiled>>,
        input: context::MessageInput,
    },
    Event {
        rules: Vec<Arc<Compiled>>,
        event: Event,
        data: EventData,
    },
}

/// This node's rule engine.
pub struct Rules {
    node: u64,
    index: RwLock<Arc<Index>>,
    /// Whether any rule reads messages (the publish path's only cost otherwise).
    messages: AtomicBool,
    /// Which events some rule reads, one bit per `Event`.
    events: AtomicU64,
    /// Every rule's counters on this node, kept across updates of the rule.
    metrics: Mutex<HashMap<u64, Arc<RuleMetrics>>>,
    /// The compiled rules by id (with their action runners), enabled or not.
    compiled: Mutex<HashMap<u64, Arc<Compiled>>>,
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    /// Jobs dropped because the queue was full (the log says so every thousandth).
    dropped: AtomicU64,
}

fn bit(e: Event) -> u64 {
    1 << (e as u64)
}

impl Rules {
    pub fn new(node: u64) -> Rules {
        let (tx, rx) = mpsc::channel(QUEUE);
        Rules {
            node,
            index: RwLock::new(Arc::default()),
            messages: AtomicBool::new(false),
            events: AtomicU64::new(0),
            metrics: Mutex::default(),
            compiled: Mutex::default(),
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Compiles every stored rule and starts the worker on `runtime`.
    pub fn start(broker: &Arc<Broker>, registry: &Registry, runtime: &tokio::runtime::Handle) {
        let rules = &broker.rules;
        rules.reload_all(registry, runtime);
        if let Some(rx) = rules.rx.lock().take() {
            runtime.spawn(work(Arc::downgrade(broker), registry.clone(), rx));
        }
    }

    /// Recompiles every rule (at start, after a snapshot install).
    pub fn reload_all(&self, registry: &Registry, runtime: &tokio::runtime::Handle) {
        let stored = match registry.rules() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "failed to read the rules");
                return;
            }
        };
        let mut compiled = self.compiled.lock();
        compiled.clear();
        for rule in &stored {
            if let Some(c) = self.compile_stored(rule, runtime) {
                compiled.insert(rule.id, c);
            }
        }
        let ids: std::collections::HashSet<u64> = stored.iter().map(|r| r.id).collect();
        self.metrics.lock().retain(|id, _| ids.contains(id));
        self.rebuild(&compiled);
    }

    /// Brings rule `id` up to its stored state after it was created, changed or deleted
    /// anywhere in the cluster. The store is read under the lock, so of two reloads racing
    /// (the REST handler's and the applied event's) the later one sees the later state.
    pub fn reload(&self, id: u64, registry: &Registry, runtime: &tokio::runtime::Handle) {
        let mut compiled = self.compiled.lock();
        let rule = match registry.rule(id) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(rule = id, error = %e, "failed to read a rule");
                return;
            }
        };
        let current = compiled.get(&id).map(|c| &c.source);
        let deleted_already = rule.is_none() && !self.metrics.lock().contains_key(&id);
        if (current.is_some() && current == rule.as_ref()) || deleted_already {
            return;
        }
        compiled.remove(&id);
        match &rule {
            Some(r) => {
                if let Some(c) = self.compile_stored(r, runtime) {
                    compiled.insert(id, c);
                }
                tracing::info!(rule = id, name = %r.name, enable = r.enable, "rule loaded");
            }
            None => {
                self.metrics.lock().remove(&id);
                tracing::info!(rule = id, "rule deleted");
            }
        }
        self.rebuild(&compiled);
    }

    /// The rule compiled with its action runners; `None` (logged) if stored SQL no longer
    /// compiles, which only a newer node's SQL could cause.
    fn compile_stored(
        &self,
        rule: &Rule,
        runtime: &tokio::runtime::Handle,
    ) -> Option<Arc<Compiled>> {
        let query = match compile(&rule.sql) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(rule = rule.id, error = %e, "a stored rule does not compile; it is skipped");
                return None;
            }
        };
        let metrics = self.metrics.lock().entry(rule.id).or_default().clone();
        // A disabled rule runs no webhook task.
        let actions = rule
            .actions
            .iter()
            .filter(|_| rule.enable)
            .map(|a| actions::Action::start(rule.id, a, &metrics, runtime))
            .collect();
        Some(Arc::new(Compiled {
            id: rule.id,
            source: rule.clone(),
            enable: rule.enable,
            query,
            actions,
            metrics,
        }))
    }

    /// Indexes the enabled rules by their FROM.
    fn rebuild(&self, compiled: &HashMap<u64, Arc<Compiled>>) {
        let mut index = Index::default();
        for c in compiled.values().filter(|c| c.enable) {
            for source in &c.query.from {
                match source {
                    sql::Source::Messages(filter) => {
                        index.messages.insert(filter, None, c.id, c.clone());
                    }
                    sql::Source::Event(e) => index.events.entry(*e).or_default().push(c.clone()),
                }
            }
        }
        let events = index.events.keys().fold(0, |bits, e| bits | bit(*e));
        self.messages
            .store(!index.messages.is_empty(), Ordering::Relaxed);
        self.events.store(events, Ordering::Relaxed);
        *self.index.write() = Arc::new(index);
    }

    /// Whether some enabled rule reads `event` (callers skip building its data otherwise).
    pub fn wants(&self, event: Event) -> bool {
        self.events.load(Ordering::Relaxed) & bit(event) != 0
    }

    /// A message that entered the cluster on this node (not one a rule republished: those
    /// trigger no rule, so a loop is cut at a depth of one).
    pub fn on_message(&self, input: impl FnOnce() -> context::MessageInput, topic: &str) {
        if !self.messages.load(Ordering::Relaxed) {
            return;
        }
        let mut rules = Vec::new();
        {
            let index = self.index.read();
            index.messages.matches(topic, |hit| {
                if let Hit::Subscriber(_, c) = hit
                    && !rules.iter().any(|r: &Arc<Compiled>| r.id == c.id)
                {
                    rules.push(c.clone());
                }
            });
        }
        if !rules.is_empty() {
            self.submit(Job::Message {
                rules,
                input: input(),
            });
        }
    }

    /// A client or device event on this node.
    pub fn on_event(&self, event: Event, data: impl FnOnce() -> EventData) {
        if !self.wants(event) {
            return;
        }
        let rules = self
            .index
            .read()
            .events
            .get(&event)
            .cloned()
            .unwrap_or_default();
        if !rules.is_empty() {
            self.submit(Job::Event {
                rules,
                event,
                data: data(),
            });
        }
    }

    fn submit(&self, job: Job) {
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            self.tx.try_send(job)
        {
            let rules = match &job {
                Job::Message { rules, .. } | Job::Event { rules, .. } => rules,
            };
            for r in rules {
                r.metrics.matched.fetch_add(1, Ordering::Relaxed);
                r.metrics.failed.fetch_add(1, Ordering::Relaxed);
            }
            // Logged on the first drop and every thousandth after it, not per message.
            if self
                .dropped
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1000)
            {
                tracing::warn!("the rule engine fell behind; messages and events are dropped");
            }
        }
    }

    /// This node's counters of rule `id` (every rule's with `None`), and whether it runs here,
    /// as `Inspect::Rules` rows.
    pub fn metric_rows(&self, id: Option<u64>) -> Vec<Value> {
        let compiled = self.compiled.lock();
        let running = |id: u64| compiled.get(&id).is_some_and(|c| c.enable);
        let metrics = self.metrics.lock();
        let mut rows: Vec<(u64, Value)> = metrics
            .iter()
            .filter(|(rid, _)| id.is_none_or(|id| id == **rid))
            .map(|(rid, m)| (*rid, m.row(self.node, *rid, running(*rid))))
            .collect();
        rows.sort_by_key(|(rid, _)| *rid);
        rows.into_iter().map(|(_, v)| v).collect()
    }

    /// Runs `sql` once against `context` (`POST /api/v1/rules/test`): the output, or why none;
    /// `Err` if it does not compile.
    pub fn test(&self, sql: &str, context: Map<String, Value>) -> Result<RuleTest, String> {
        // Named as in `check`, so a client can show it next to the SQL.
        let query = compile(sql).map_err(|e| format!("sql: {e}"))?;
        let ctx = context::for_test(&query, self.node, context);
        Ok(match query.select(&ctx) {
            Ok(Some(out)) => RuleTest::Output(Value::Object(out)),
            Ok(None) => RuleTest::NoOutput("the WHERE clause is not true for this context".into()),
            Err(e) => RuleTest::NoOutput(format!("evaluation failed: {e}")),
        })
    }
}

/// Whether `rule` would run: its SQL compiles and its templates parse. The message says where
/// it fails.
pub fn check(rule: &Rule) -> Result<(), String> {
    compile(&rule.sql).map_err(|e| format!("sql: {e}"))?;
    for (i, a) in rule.actions.iter().enumerate() {
        let templates: Vec<(&str, &str)> = match a {
            RuleAction::Republish { topic, payload, .. } => {
                vec![("topic", topic.as_str()), ("payload", payload.as_str())]
            }
            RuleAction::Webhook { body, .. } => body.iter().map(|b| ("body", b.as_str())).collect(),
            RuleAction::Log => Vec::new(),
        };
        for (field, text) in templates {
            actions::Template::parse(text).map_err(|e| format!("actions[{i}].{field}: {e}"))?;
        }
        if let RuleAction::Republish { topic, .. } = a
            && !topic.contains("${")
            && !crate::routing::topic::valid_topic_name(topic)
        {
            return Err(format!("actions[{i}].topic is not a valid topic name"));
        }
    }
    Ok(())
}

/// The worker: evaluates each job's rules and runs their actions, in arrival order.
async fn work(broker: std::sync::Weak<Broker>, registry: Registry, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let (rules, built) = match job {
            Job::Message { rules, input } => {
                let built = context::for_message(&broker, &registry, input, &rules);
                (rules, built)
            }
            Job::Event { rules, event, data } => {
                // `None`: a device status event for a client that is no registered device.
                let Some(built) = context::for_event(&broker, &registry, event, data, &rules)
                else {
                    continue;
                };
                (rules, built)
            }
        };
        for rule in rules {
            rule.metrics.matched.fetch_add(1, Ordering::Relaxed);
            match rule.query.select(&built.ctx) {
                Ok(Some(out)) => {
                    rule.metrics.passed.fetch_add(1, Ordering::Relaxed);
                    for action in &rule.actions {
                        action.run(&broker, &rule.metrics, &out, built.client.as_ref());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    rule.metrics.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(rule = rule.id, error = %e, "rule evaluation failed");
                }
            }
        }
    }
}
