use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A rule of the rule engine: a SQL statement over messages or events and the actions its
/// output drives. `sql` is kept as the user wrote it; every node compiles it on apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u64,
    pub name: String,
    pub sql: String,
    pub actions: Vec<RuleAction>,
    pub description: Option<String>,
    pub enable: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a rule does with each output row, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleAction {
    /// Publishes a message built from `${field}` templates through normal routing.
    Republish {
        topic: String,
        payload: String,
        qos: u8,
        retain: bool,
    },
    /// POSTs the output as JSON (or `body`, a template) to `url`.
    Webhook {
        url: String,
        headers: BTreeMap<String, String>,
        body: Option<String>,
        timeout_ms: u64,
        retries: u32,
        queue: usize,
    },
    /// Writes the output to the node's log.
    Log,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePatch {
    pub name: Option<String>,
    pub sql: Option<String>,
    pub actions: Option<Vec<RuleAction>>,
    pub description: Option<Option<String>>,
    pub enable: Option<bool>,
    pub updated_at: i64,
}
