//! `BrokerOps`: the node's implementation of the REST API's `NodeOps`, so HTTP publishes and
//! proxy subscriptions take the same path through the broker (and to the other nodes) as MQTT
//! packets do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use realmq_api::{
    BoxFuture, ClientView, Inspect, NodeInfo, NodeOps, NodeStats, OpError, Publish, RouteView,
    SubscriptionView,
};

use crate::broker::{Broker, ProxyError, ProxyOp, PublishError, Published};
use crate::message::{ByteString, Bytes, Message, MessageProperties, QoS};
use crate::metrics::inc;
use crate::routing::topic::valid_topic_name;

pub struct BrokerOps {
    pub broker: Arc<Broker>,
    /// Set once the MQTT listener accepts connections (readiness).
    pub listening: Arc<AtomicBool>,
    pub cluster: crate::cluster::Cluster,
    /// What `GET /metrics` renders.
    pub prometheus: prometheus_client::registry::Registry,
}

fn message(p: Publish) -> Result<Message, OpError> {
    if !valid_topic_name(&p.topic) {
        return Err(OpError::Invalid(format!(
            "topic {:?} is not a valid topic name (empty, or has wildcards)",
            p.topic
        )));
    }
    let props = p.properties;
    Ok(Message {
        topic: ByteString::from(p.topic),
        payload: Bytes::from(p.payload),
        qos: QoS::from_u8(p.qos).ok_or_else(|| OpError::Invalid("qos must be 0, 1 or 2".into()))?,
        retain: p.retain,
        properties: MessageProperties {
            payload_is_utf8: props.payload_format_indicator == Some(1),
            content_type: props.content_type.map(ByteString::from),
            response_topic: props.response_topic.map(ByteString::from),
            correlation_data: props.correlation_data.map(|c| Bytes::from(c.into_bytes())),
            user_properties: props
                .user_properties
                .into_iter()
                .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
                .collect(),
        },
        expires_at: props
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
        publisher: p.client_id.map(|c| Arc::from(c.as_str())),
    })
}

/// The members' rows, typed; a row a member encoded differently (a mixed-version cluster) is
/// left out rather than failing the lookup.
fn rows<T: serde::de::DeserializeOwned + Send + 'static>(
    answer: BoxFuture<'static, Result<Vec<serde_json::Value>, OpError>>,
) -> BoxFuture<'static, Result<Vec<T>, OpError>> {
    Box::pin(async move {
        Ok(answer
            .await?
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect())
    })
}

fn op_error(e: ProxyError) -> OpError {
    match e {
        ProxyError::Invalid(m) => OpError::Invalid(m),
        ProxyError::NotFound(m) => OpError::NotFound(m),
        ProxyError::Denied(m) => OpError::Denied(m),
        ProxyError::Unavailable(m) => OpError::Unavailable(m),
    }
}

impl NodeOps for BrokerOps {
    fn publish(&self, msg: Publish) -> BoxFuture<'static, Result<usize, OpError>> {
        // An administrator publishes on the API: the ACL for MQTT clients does not apply.
        let published = message(msg).and_then(|m| {
            self.broker.publish_counted(m).map_err(|e| match e {
                PublishError::NotAuthorized => OpError::Denied(e.to_string()),
                PublishError::QuotaExceeded => OpError::Invalid(e.to_string()),
            })
        });
        Box::pin(async move {
            let Published { local, confirm, .. } = published?;
            Ok(match confirm {
                Some(c) => local + c.await,
                None => local,
            })
        })
    }

    fn subscribe(
        &self,
        client_id: &str,
        filter: &str,
        qos: u8,
    ) -> BoxFuture<'static, Result<(), OpError>> {
        let op = ProxyOp::Subscribe {
            filter: filter.to_string(),
            qos,
        };
        let done = self.cluster.proxy(client_id, op);
        Box::pin(async move { done.await.map_err(op_error) })
    }

    fn unsubscribe(
        &self,
        client_id: &str,
        filter: &str,
    ) -> BoxFuture<'static, Result<(), OpError>> {
        let op = ProxyOp::Unsubscribe {
            filter: filter.to_string(),
        };
        let done = self.cluster.proxy(client_id, op);
        Box::pin(async move { done.await.map_err(op_error) })
    }

    fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    fn nodes(&self, digest: bool) -> BoxFuture<'static, Vec<NodeInfo>> {
        self.cluster.nodes(digest)
    }

    fn remove_node(&self, id: u64) -> BoxFuture<'static, Result<(), OpError>> {
        self.cluster.remove_node(id)
    }

    fn limit_refused(&self) {
        inc(&self.broker.metrics.api_refused, 1);
    }

    fn prometheus(&self) -> String {
        crate::prometheus::render(&self.prometheus)
    }

    fn clients(&self, query: Inspect) -> BoxFuture<'static, Result<Vec<ClientView>, OpError>> {
        rows(self.cluster.inspect(query))
    }

    fn subscriptions(
        &self,
        query: Inspect,
    ) -> BoxFuture<'static, Result<Vec<SubscriptionView>, OpError>> {
        rows(self.cluster.inspect(query))
    }

    fn routes(&self, query: Inspect) -> BoxFuture<'static, Result<Vec<RouteView>, OpError>> {
        rows(self.cluster.inspect(query))
    }

    fn stats(&self) -> BoxFuture<'static, Result<Vec<NodeStats>, OpError>> {
        rows(self.cluster.inspect(Inspect::Stats))
    }

    fn inspect(
        &self,
        query: Inspect,
    ) -> BoxFuture<'static, Result<Vec<serde_json::Value>, OpError>> {
        self.cluster.inspect(query)
    }

    fn kick(&self, client_id: &str) -> BoxFuture<'static, Result<(), OpError>> {
        let done = self.cluster.proxy(client_id, ProxyOp::Kick);
        Box::pin(async move { done.await.map_err(op_error) })
    }

    fn check_rule(&self, rule: &realmq_raft_store::model::Rule) -> Result<(), String> {
        crate::rules::check(rule)
    }

    fn rule_written(&self, id: u64) {
        self.broker.rule_written(id);
    }

    fn test_rule(
        &self,
        sql: &str,
        context: serde_json::Map<String, serde_json::Value>,
    ) -> Result<realmq_api::RuleTest, String> {
        self.broker.rules.test(sql, context)
    }
}
