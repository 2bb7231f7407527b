//! An MQTT 3.1.1 client for whole flows (connect, subscribe, publish, be kicked), built on
//! rumqttc, an independent implementation of the protocol. rumqttc only moves while its event
//! loop is polled, so every method here polls it, within a bound, until what it waits for
//! happens; messages that arrive meanwhile are kept for `next_publish`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode,
};
use tokio::time::Instant;

use crate::WAIT;

pub struct MqttClient {
    client: AsyncClient,
    events: EventLoop,
    inbox: VecDeque<Publish>,
    /// Why the connection ended; polling again would make rumqttc reconnect.
    closed: Option<String>,
    session_present: bool,
}

impl MqttClient {
    /// Options for a clean session to `addr`, with `credentials` as user name and password.
    pub fn options(
        addr: SocketAddr,
        client_id: &str,
        credentials: Option<(&str, &str)>,
    ) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some((username, password)) = credentials {
            opts.set_credentials(username, password);
        }
        opts
    }

    /// Connects with a clean session; `Err` carries the broker's refusal (e.g.
    /// `ConnectionRefused(NotAuthorized)`) or the transport error.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<MqttClient, ConnectionError> {
        MqttClient::connect_with(MqttClient::options(addr, client_id, credentials)).await
    }

    pub async fn connect_with(opts: MqttOptions) -> Result<MqttClient, ConnectionError> {
        let (client, mut events) = AsyncClient::new(opts, 16);
        match tokio::time::timeout(WAIT, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => Ok(MqttClient {
                client,
                events,
                inbox: VecDeque::new(),
                closed: None,
                session_present: ack.session_present,
            }),
            Ok(Ok(other)) => panic!("expected CONNACK first, got {other:?}"),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectionError::NetworkTimeout),
        }
    }

    /// The CONNACK's session present flag.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// The rumqttc handle, for requests this wrapper does not cover.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Subscribes and waits for the SUBACK; returns its return codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        let mut sent = false;
        self.poll_until(&format!("SUBACK for {filter}"), WAIT, |ev| match ev {
            Event::Outgoing(Outgoing::Subscribe(_)) => {
                sent = true;
                None
            }
            Event::Incoming(Packet::SubAck(ack)) if sent => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes and waits until the broker acknowledged it (PUBACK, PUBCOMP), or for QoS 0
    /// until it was written.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        if let Err(e) = self.try_publish(topic, qos, retain, payload).await {
            panic!("{e}");
        }
    }

    /// `publish`, with the connection's end or a timeout as an error (a node under test may be
    /// killed meanwhile).
    pub async fn try_publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
    ) -> Result<(), String> {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .map_err(|e| format!("queue PUBLISH: {e}"))?;
        let mut pkid = None;
        self.try_poll_until(
            &format!("acknowledgement of {topic}"),
            WAIT,
            |ev| match ev {
                Event::Outgoing(Outgoing::Publish(id)) if pkid.is_none() => {
                    pkid = Some(*id);
                    (qos == QoS::AtMostOnce).then_some(())
                }
                Event::Incoming(Packet::PubAck(a)) if Some(a.pkid) == pkid => Some(()),
                Event::Incoming(Packet::PubComp(c)) if Some(c.pkid) == pkid => Some(()),
                _ => None,
            },
        )
        .await
    }

    /// `next_publish`, with the connection's end as an error.
    pub async fn try_next_publish(&mut self, within: Duration) -> Result<Option<Publish>, String> {
        if let Some(p) = self.inbox.pop_front() {
            return Ok(Some(p));
        }
        if let Some(why) = &self.closed {
            return Err(format!("the connection is closed ({why})"));
        }
        let deadline = Instant::now() + within;
        while self.inbox.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return Ok(None),
                Ok(Ok(ev)) => self.keep(ev),
                Ok(Err(e)) => {
                    self.ended(&e);
                    // What came in with the connection's end is delivered before the end.
                    if let Some(p) = self.inbox.pop_front() {
                        return Ok(Some(p));
                    }
                    return Err(format!("the connection ended: {e}"));
                }
            }
        }
        Ok(self.inbox.pop_front())
    }

    /// The next message delivered, or `None` if none comes `within`. Panics if the connection
    /// ends meanwhile.
    pub async fn next_publish(&mut self, within: Duration) -> Option<Publish> {
        match self.try_next_publish(within).await {
            Ok(p) => p,
            Err(e) => panic!("waiting for a message: {e}"),
        }
    }

    /// Waits for the broker to end the connection; returns how it ended. Panics if it is still
    /// open after `within`.
    pub async fn expect_closed(&mut self, within: Duration) -> ConnectionError {
        assert!(self.closed.is_none(), "connection already closed");
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => panic!("the connection is still open after {within:?}"),
                Ok(Ok(ev)) => self.keep(ev),
                Ok(Err(e)) => {
                    self.ended(&e);
                    return e;
                }
            }
        }
    }

    /// Sends DISCONNECT (no will message) and waits until it was written.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.poll_until("DISCONNECT to be sent", WAIT, |ev| {
            matches!(ev, Event::Outgoing(Outgoing::Disconnect)).then_some(())
        })
        .await
    }

    /// Polls until `want` picks an event, within `within`; panics on timeout or when the
    /// connection ends.
    async fn poll_until<T>(
        &mut self,
        what: &str,
        within: Duration,
        want: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        match self.try_poll_until(what, within, want).await {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    async fn try_poll_until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut want: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, String> {
        if let Some(why) = &self.closed {
            return Err(format!("waiting for {what} on a closed connection ({why})"));
        }
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return Err(format!("timed out after {within:?} waiting for {what}")),
                Ok(Err(e)) => {
                    self.ended(&e);
                    return Err(format!(
                        "the MQTT connection ended while waiting for {what}: {e}"
                    ));
                }
                Ok(Ok(ev)) => {
                    if let Some(v) = want(&ev) {
                        self.keep(ev);
                        return Ok(v);
                    }
                    self.keep(ev);
                }
            }
        }
    }

    /// The connection ended with `e`. rumqttc reads every packet that arrived before the end
    /// and returns the error before the events it made of them, which a later poll of this
    /// event loop would have returned: they are the client's, so they go to the inbox.
    fn ended(&mut self, e: &ConnectionError) {
        self.closed = Some(e.to_string());
        let parsed: Vec<Event> = self.events.state.events.drain(..).collect();
        for ev in parsed {
            self.keep(ev);
        }
    }

    fn keep(&mut self, ev: Event) {
        if let Event::Incoming(Packet::Publish(p)) = ev {
            self.inbox.push_back(p);
        }
    }
}
