//! SUBSCRIBE and UNSUBSCRIBE against a session, and retained messages on subscribe.

use std::sync::Arc;
use std::time::Instant;

use realmq_raft_store::Command;

use super::Broker;
use super::persist::subscription_record;
use crate::auth::ClientInfo;
use crate::message::{ByteString, Delivery, QoS, RetainHandling, SubOptions};
use crate::routing::topic::parse_filter;
use crate::rules::{Event, EventData};
use crate::session::SessionCell;
use serde_json::json;

/// One filter of a SUBSCRIBE with the options the client asked for.
#[derive(Debug, Clone)]
pub struct SubRequest {
    pub filter: ByteString,
    pub opts: SubOptions,
}

/// Per-filter outcome, mapped to SUBACK return / reason codes at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubResult {
    Granted(QoS),
    /// Malformed filter or `$share` syntax (v5 0x8F, v3 0x80).
    BadFilter,
    /// Refused by the authorization seam (v5 0x87, v3 0x80).
    NotAuthorized,
    /// The session ended while subscribing (a clean-start takeover won the race).
    SessionGone,
    /// The session holds `max_subscriptions` already (v5 0x97, v3 0x80).
    QuotaExceeded,
}

impl Broker {
    /// Applies each filter in order: validate, authorize, store in the session and the trie, then
    /// queue matching retained messages as Retain Handling asks. Shared subscriptions get no
    /// retained messages [MQTT-4.8.2-6 (v5 §4.8.2)].
    pub fn subscribe(
        &self,
        session: &Arc<SessionCell>,
        client: &ClientInfo,
        requests: Vec<SubRequest>,
    ) -> Vec<SubResult> {
        let mut results = Vec::with_capacity(requests.len());
        for req in requests {
            let Ok(spec) = parse_filter(&req.filter) else {
                results.push(SubResult::BadFilter);
                continue;
            };
            let access = self.auth.subscribe_access(client, spec.filter);
            if !access.granted {
                crate::metrics::inc(&self.metrics.denied, 1);
                results.push(SubResult::NotAuthorized);
                continue;
            }
            let guard = access.guard;
            let existed = {
                // Session lock before the trie lock: a concurrent clean-start discard marks the
                // session ended under this lock, so nothing is added to the trie after its cleanup.
                let mut inner = session.lock();
                if inner.ended {
                    results.push(SubResult::SessionGone);
                    continue;
                }
                let subs = &inner.state.subscriptions;
                if subs.len() >= self.limits.max_subscriptions && !subs.contains_key(&req.filter) {
                    crate::metrics::inc(&self.metrics.subscriptions_refused, 1);
                    results.push(SubResult::QuotaExceeded);
                    continue;
                }
                let existed = self.add_subscription(session, spec, req.opts, guard.clone());
                inner
                    .state
                    .subscriptions
                    .insert(req.filter.clone(), req.opts);
                existed
            };
            self.meta.record(Command::Subscribe {
                client_id: session.client_id.to_string(),
                subscription: subscription_record(&req.filter, &req.opts),
            });
            results.push(SubResult::Granted(req.opts.qos));
            self.rules.on_event(Event::SessionSubscribed, || {
                EventData::new(
                    Some(client),
                    json!({"topic": &*req.filter, "qos": req.opts.qos as u8}),
                )
            });

            let send_retained = spec.group.is_none()
                && match req.opts.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained && self.limits.retain_available {
                let retained = self.retained.matching(spec.filter, Instant::now());
                for msg in retained
                    .into_iter()
                    .filter(|m| guard.as_ref().is_none_or(|g| g.allows(&m.topic)))
                {
                    let delivery = Delivery {
                        qos: msg.qos.min(req.opts.qos),
                        retain: true,
                        subscription_ids: req.opts.subscription_id.into_iter().collect(),
                        msg,
                    };
                    let _ = session.deliver(delivery);
                }
            }
        }
        results
    }

    /// Removes each filter; true per filter that existed.
    pub fn unsubscribe(&self, session: &Arc<SessionCell>, filters: &[ByteString]) -> Vec<bool> {
        filters
            .iter()
            .map(|f| {
                let Ok(spec) = parse_filter(f) else {
                    return false;
                };
                let mut inner = session.lock();
                let existed = inner.state.subscriptions.remove(f).is_some();
                self.remove_subscription(session.id, spec);
                if existed {
                    self.meta.record(Command::Unsubscribe {
                        client_id: session.client_id.to_string(),
                        filter: f.to_string(),
                    });
                }
                existed
            })
            .collect()
    }

    /// Decides every subscription of a resumed session again for the connection that resumed
    /// it: its user name may differ from the one the subscriptions were granted to, and the
    /// ACL's `%u` and `username` rules follow the connection. A filter the new identity could not
    /// subscribe to stays in the session but delivers nothing.
    pub(super) fn reauthorize(&self, session: &Arc<SessionCell>, client: &ClientInfo) {
        let inner = session.lock();
        for (filter, opts) in &inner.state.subscriptions {
            if let Ok(spec) = parse_filter(filter) {
                let guard = self.auth.subscribe_access(client, spec.filter).guard;
                self.add_subscription(session, spec, *opts, guard);
            }
        }
    }

    /// Removes every subscription of a session that ended from the trie.
    pub(super) fn drop_subscriptions(&self, session: &SessionCell) {
        let subs = std::mem::take(&mut session.lock().state.subscriptions);
        for filter in subs.keys() {
            if let Ok(spec) = parse_filter(filter) {
                self.remove_subscription(session.id, spec);
            }
        }
    }
}
