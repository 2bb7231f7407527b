//! `BrokerOps`: the node's implementation of the REST API's `NodeOps`, so HTTP publishes and
//! proxy subscriptions take the same path through the broker as MQTT packets do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use realmq_api::{BoxFuture, NodeInfo, NodeOps, OpError, Publish};

use crate::auth::ClientInfo;
use crate::broker::{Broker, PublishError, SubRequest, SubResult};
use crate::message::{ByteString, Bytes, Message, MessageProperties, QoS, SubOptions};
use crate::routing::topic::{parse_filter, valid_topic_name};

pub struct BrokerOps {
    pub broker: Arc<Broker>,
    /// Set once the MQTT listener accepts connections (readiness).
    pub listening: Arc<AtomicBool>,
    pub cluster: crate::cluster::Cluster,
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

impl BrokerOps {
    fn session(&self, client_id: &str) -> Result<Arc<crate::session::SessionCell>, OpError> {
        self.broker
            .sessions
            .get(client_id)
            .ok_or_else(|| OpError::NotFound(format!("client {client_id:?} has no session")))
    }
}

impl NodeOps for BrokerOps {
    fn publish(&self, msg: Publish) -> Result<usize, OpError> {
        // An administrator publishes on the API: the ACL for MQTT clients does not apply.
        self.broker
            .publish(None, message(msg)?)
            .map_err(|e| match e {
                PublishError::NotAuthorized => OpError::Denied(e.to_string()),
            })
    }

    fn subscribe(&self, client_id: &str, filter: &str, qos: u8) -> Result<(), OpError> {
        parse_filter(filter)
            .map_err(|e| OpError::Invalid(format!("topic filter {filter:?}: {e}")))?;
        let qos =
            QoS::from_u8(qos).ok_or_else(|| OpError::Invalid("qos must be 0, 1 or 2".into()))?;
        let session = self.session(client_id)?;
        // Decided by the ACL as the session's own user's subscription would be.
        let client = ClientInfo {
            client_id: session.client_id.clone(),
            username: session.lock().username.clone(),
        };
        let request = SubRequest {
            filter: ByteString::from(filter.to_string()),
            opts: SubOptions {
                qos,
                ..SubOptions::default()
            },
        };
        match self
            .broker
            .subscribe(&session, &client, vec![request])
            .as_slice()
        {
            [SubResult::Granted(_)] => Ok(()),
            [SubResult::NotAuthorized] => Err(OpError::Denied(format!(
                "the ACL denies {client_id:?} subscribing to {filter:?}"
            ))),
            [SubResult::SessionGone] => Err(OpError::NotFound(format!(
                "client {client_id:?} has no session"
            ))),
            _ => Err(OpError::Invalid(format!(
                "topic filter {filter:?} is invalid"
            ))),
        }
    }

    fn unsubscribe(&self, client_id: &str, filter: &str) -> Result<(), OpError> {
        parse_filter(filter)
            .map_err(|e| OpError::Invalid(format!("topic filter {filter:?}: {e}")))?;
        let session = self.session(client_id)?;
        if self
            .broker
            .unsubscribe(&session, &[ByteString::from(filter.to_string())])
            == [true]
        {
            Ok(())
        } else {
            Err(OpError::NotFound(format!(
                "client {client_id:?} has no subscription to {filter:?}"
            )))
        }
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
}
