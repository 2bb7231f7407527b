//! What a rule does with its output: republish a message, POST to a webhook, or log it.
//! Topics, payloads and webhook bodies are `${field}` templates over the output, parsed once
//! when the rule is compiled.
//!
//! A republished message goes through the broker's routing and ACL as the client whose message
//! or event produced it, and triggers no rule itself: loops are cut at a depth of one. A
//! webhook action has its own bounded queue and posting task, so a slow endpoint holds up
//! neither the worker nor other rules; what it could not deliver is counted as failed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use realmq_raft_store::model::RuleAction;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::RuleMetrics;
use crate::auth::ClientInfo;
use crate::broker::Broker;
use crate::message::{Message, MessageProperties, QoS};

/// A `${path}` template: literal text and output paths (`${payload.t}` reads into objects).
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(Vec<String>),
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unclosed ${{ in template at byte {0}")]
pub struct TemplateError(usize);

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(TemplateError(offset + start))?;
            let path = after[..end].trim();
            parts.push(Part::Field(path.split('.').map(str::to_string).collect()));
            offset += start + 2 + end + 1;
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    /// The text with each placeholder replaced: strings as they are, other values as JSON,
    /// missing ones as nothing.
    pub fn render(&self, out: &Map<String, Value>) -> String {
        let mut s = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => s.push_str(t),
                Part::Field(path) => match lookup(out, path) {
                    Some(Value::String(v)) => s.push_str(&v),
                    Some(Value::Null) | None => {}
                    Some(v) => s.push_str(&v.to_string()),
                },
            }
        }
        s
    }
}

/// `path` in the output; a string holding JSON is read into, as a payload is.
fn lookup(out: &Map<String, Value>, path: &[String]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    let mut v = out.get(first)?.clone();
    for key in rest {
        if let Value::String(s) = &v {
            v = serde_json::from_str(s).ok()?;
        }
        v = v.get(key)?.clone();
    }
    Some(v)
}

/// A rule action, ready to run.
pub enum Action {
    Republish {
        topic: Template,
        payload: Template,
        qos: QoS,
        retain: bool,
    },
    Webhook {
        body: Option<Template>,
        tx: mpsc::Sender<Bytes>,
        url: String,
    },
    Log,
}

impl Action {
    /// Builds the action of rule `rule`; a webhook's posting task starts on `runtime`.
    pub fn start(
        rule: u64,
        action: &RuleAction,
        metrics: &Arc<RuleMetrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Action {
        match action {
            RuleAction::Republish {
                topic,
                payload,
                qos,
                retain,
            } => Action::Republish {
                // Templates were checked when the rule was written; one that no longer parses
                // renders as its literal text.
                topic: Template::parse(topic).unwrap_or(Template(vec![Part::Text(topic.clone())])),
                payload: Template::parse(payload)
                    .unwrap_or(Template(vec![Part::Text(payload.clone())])),
                qos: match qos {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                },
                retain: *retain,
            },
            RuleAction::Webhook {
                url,
                headers,
                body,
                timeout_ms,
                retries,
                queue,
            } => {
                let (tx, rx) = mpsc::channel((*queue).max(1));
                match crate::webhook::http_client(headers, *timeout_ms) {
                    Ok(client) => {
                        runtime.spawn(post_all(
                            rule,
                            client,
                            url.clone(),
                            *retries,
                            rx,
                            metrics.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(rule, %url, error = %e, "a rule's webhook cannot be set up; its posts fail");
                    }
                }
                Action::Webhook {
                    body: body.as_deref().and_then(|b| Template::parse(b).ok()),
                    tx,
                    url: url.clone(),
                }
            }
            RuleAction::Log => Action::Log,
        }
    }

    /// Runs the action on one output row. Never waits: a republish is routed before this
    /// returns, a webhook post is queued.
    pub fn run(
        &self,
        broker: &Broker,
        metrics: &RuleMetrics,
        out: &Map<String, Value>,
        from: Option<&ClientInfo>,
    ) {
        let ok = match self {
            Action::Republish {
                topic,
                payload,
                qos,
                retain,
            } => {
                let topic = topic.render(out);
                if crate::routing::topic::valid_topic_name(&topic) {
                    let msg = Message {
                        topic: topic.as_str().into(),
                        payload: crate::message::Bytes::from(payload.render(out)),
                        qos: *qos,
                        retain: *retain,
                        properties: MessageProperties::default(),
                        expires_at: None,
                        publisher: from.map(|c| c.client_id.clone()),
                    };
                    match broker.publish_from_rule(from, msg) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::debug!(%topic, error = %e, "a rule's republish was refused");
                            false
                        }
                    }
                } else {
                    tracing::debug!(%topic, "a rule's republish topic is not a valid topic name");
                    false
                }
            }
            Action::Webhook { body, tx, url } => {
                let body = match body {
                    Some(t) => t.render(out),
                    None => Value::Object(out.clone()).to_string(),
                };
                // Counted when the post succeeds or finally fails; a full queue fails now.
                if tx.try_send(Bytes::from(body)).is_ok() {
                    return;
                }
                tracing::debug!(%url, "a rule's webhook queue is full; the output is dropped");
                false
            }
            Action::Log => {
                let output = Value::Object(out.clone());
                tracing::info!(target: "realmq::rules", %output, "rule output");
                true
            }
        };
        let counter = if ok {
            &metrics.actions_success
        } else {
            &metrics.actions_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One webhook action's task: posts in order until the rule is changed or deleted.
async fn post_all(
    rule: u64,
    client: reqwest::Client,
    url: String,
    retries: u32,
    mut rx: mpsc::Receiver<Bytes>,
    metrics: Arc<RuleMetrics>,
) {
    while let Some(body) = rx.recv().await {
        match crate::webhook::post(&client, &url, body, retries).await {
            Ok(()) => metrics.actions_success.fetch_add(1, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(rule, %url, %error, "a rule's webhook post failed after its retries");
                metrics.actions_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_render_fields_paths_and_json() {
        let out = json!({"clientid": "c1", "t": 31.5, "payload": "{\"a\":{\"b\":7}}", "n": null})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let cases = [
            ("alarm/${clientid}", "alarm/c1"),
            ("${t}", "31.5"),
            ("${ t }!", "31.5!"),
            ("${payload.a.b}", "7"),
            ("${payload.a}", "{\"b\":7}"),
            ("x${missing}y${n}z", "xyz"),
            ("plain", "plain"),
            ("", ""),
        ];
        for (t, want) in cases {
            assert_eq!(
                Template::parse(t).map(|t| t.render(&out)),
                Ok(want.into()),
                "{t}"
            );
        }
        assert_eq!(Template::parse("a/${b"), Err(TemplateError(2)));
    }
}
