//! What runs against the pods while faults are injected, and the ledger of what happened:
//!
//! - REST writers, two per pod, each creating products through that pod one after another;
//!   every attempt is kept with its outcome (acknowledged, refused, no answer).
//! - One MQTT publisher per pod, on that pod, publishing QoS 1 `ct/{pod}` with a sequence
//!   number; every acknowledged message is kept with when it was sent and acknowledged.
//! - One MQTT subscriber per starting pod, a persistent session (clean session off) on `ct/#`
//!   subscribed once; when its node goes away it reconnects to another serving pod without
//!   subscribing again, so what it keeps receiving proves the session kept its subscription.
//!   Every connected stretch (a window) and every message received is kept.
//!
//! A message is due to a subscriber when one of its windows covers it: the window opened before
//! the message was sent and was still open when it was acknowledged. For a window its node's
//! death ended, a message acknowledged within `IN_FLIGHT` of the end is not due: it may have been
//! in flight to the subscriber on the node that died, with the session state that held it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::QoS;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Pods;
use crate::{MqttClient, WriteOutcome};

/// Where the MQTT clients connect: the chart's pods here, the processes of a `Cluster` in the
/// multi-node tests. Places are numbered (pod ordinals, node ids).
pub trait Places: Send + Sync + 'static {
    fn mqtt_addr(&self, place: usize) -> std::net::SocketAddr;
    /// The places serving now: where a client that lost its place goes.
    fn serving(&self) -> Vec<usize>;
    /// Records what a client did, for a failure's report.
    fn note(&self, what: String);
}

impl Places for Pods {
    fn mqtt_addr(&self, place: usize) -> std::net::SocketAddr {
        Pods::mqtt_addr(self, place)
    }

    fn serving(&self) -> Vec<usize> {
        Pods::serving(self)
    }

    fn note(&self, what: String) {
        Pods::note(self, what);
    }
}

/// Grace for messages in flight to a subscriber whose node died (see the module doc).
const IN_FLIGHT: Duration = Duration::from_secs(2);
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
const WRITE_EVERY: Duration = Duration::from_millis(100);
const WRITERS_PER_POD: usize = 2;
/// Keepalive of the test's MQTT clients: a node that vanished is noticed within 1.5 of these.
const KEEPALIVE: Duration = Duration::from_secs(5);

pub struct Write {
    pub name: String,
    pub pod: usize,
    pub sent: Instant,
    pub done: Instant,
    pub outcome: WriteOutcome,
}

#[derive(Clone, Copy)]
pub struct Published {
    pub publisher: usize,
    pub seq: u64,
    pub sent: Instant,
    pub acked: Instant,
}

#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub pod: usize,
    pub from: Instant,
    pub to: Option<Instant>,
}

#[derive(Default)]
pub struct SubLog {
    pub windows: Vec<Window>,
    pub received: HashSet<(usize, u64)>,
    /// Reconnections whose CONNACK said the session was not there.
    pub lost_sessions: Vec<String>,
}

pub struct Ledger {
    /// The zero of the times a failure report gives (the harness notes' zero).
    pub t0: Instant,
    pub writes: Mutex<Vec<Write>>,
    pub published: Mutex<Vec<Published>>,
    pub subscribers: Mutex<BTreeMap<String, SubLog>>,
    /// When each pod last went away (killed or stopped), for the windows it ended.
    pub downs: Mutex<Vec<(usize, Instant)>>,
}

impl Ledger {
    pub fn new(t0: Instant) -> Ledger {
        Ledger {
            t0,
            writes: Mutex::default(),
            published: Mutex::default(),
            subscribers: Mutex::default(),
            downs: Mutex::default(),
        }
    }

    /// `t` as seconds since the run began, as the harness notes print it.
    fn at(&self, t: Instant) -> String {
        format!("{:.2}s", (t - self.t0).as_secs_f64())
    }

    /// Where the first missing message of `log` stood against the subscriber's windows: what a
    /// failure report needs to tell a lost route from a lost session.
    fn timeline(&self, log: &SubLog, first: &Published) -> String {
        let windows: Vec<String> = log
            .windows
            .iter()
            .map(|w| {
                let to = w.to.map_or("open".to_string(), |t| self.at(t));
                format!("pod {} {}..{}", w.pod, self.at(w.from), to)
            })
            .collect();
        let downs: Vec<String> = self
            .downs
            .lock()
            .unwrap()
            .iter()
            .map(|(p, t)| format!("pod {p} {}", self.at(*t)))
            .collect();
        format!(
            "({}, {}) sent {} acked {}; windows: {}; pods down: {}",
            first.publisher,
            first.seq,
            self.at(first.sent),
            self.at(first.acked),
            windows.join(", "),
            downs.join(", ")
        )
    }

    /// When pod `pod` went away after `from`, if it did.
    fn down_after(&self, pod: usize, from: Instant) -> Option<Instant> {
        let downs = self.downs.lock().unwrap();
        downs
            .iter()
            .filter(|(p, t)| *p == pod && *t >= from)
            .map(|(_, t)| *t)
            .min()
    }

    /// Per subscriber: how many messages acknowledged from `since` to `until` were due to it,
    /// and which of those it has not received.
    pub fn accounts(&self, since: Instant, until: Instant) -> Vec<Account> {
        let published = self.published.lock().unwrap().clone();
        let subs = self.subscribers.lock().unwrap();
        let mut out = Vec::new();
        for (id, log) in subs.iter() {
            let windows: Vec<(Instant, Option<Instant>, bool)> = log
                .windows
                .iter()
                .map(|w| match (w.to, self.down_after(w.pod, w.from)) {
                    (Some(to), Some(died)) => (w.from, Some(to.min(died)), true),
                    (to, _) => (w.from, to, false),
                })
                .collect();
            let is_due = |m: &Published| {
                windows.iter().any(|&(from, to, died)| {
                    from <= m.sent
                        && match to {
                            None => true,
                            Some(to) if died => m.acked + IN_FLIGHT <= to,
                            Some(to) => m.acked <= to,
                        }
                })
            };
            let due: Vec<&Published> = published
                .iter()
                .filter(|m| m.acked >= since && m.acked < until && is_due(m))
                .collect();
            let missing: Vec<&&Published> = due
                .iter()
                .filter(|m| !log.received.contains(&(m.publisher, m.seq)))
                .collect();
            out.push(Account {
                subscriber: id.clone(),
                due: due.len(),
                timeline: missing.first().map(|m| self.timeline(log, m)),
                missing: missing.iter().map(|m| (m.publisher, m.seq)).collect(),
                lost_sessions: log.lost_sessions.clone(),
            });
        }
        out
    }
}

/// What one subscriber was owed and got.
pub struct Account {
    pub subscriber: String,
    pub due: usize,
    /// (publisher, sequence number) of each due message not received.
    pub missing: Vec<(usize, u64)>,
    /// The first missing message against the subscriber's windows (see `Ledger::timeline`).
    pub timeline: Option<String>,
    pub lost_sessions: Vec<String>,
}

impl Account {
    pub fn problem(&self) -> Option<String> {
        let mut p = self.lost_sessions.clone();
        if !self.missing.is_empty() {
            p.push(format!(
                "lacks {} of {} messages due, e.g. {:?}; the first {}",
                self.missing.len(),
                self.due,
                &self.missing[..self.missing.len().min(8)],
                self.timeline.as_deref().unwrap_or_default()
            ));
        }
        (!p.is_empty()).then(|| format!("{}: {}", self.subscriber, p.join("; ")))
    }
}

/// The clients pinned to one pod: their stop flag and tasks.
struct Pinned {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The clients running against the pods.
pub struct Workload {
    pods: Arc<Pods>,
    pub ledger: Arc<Ledger>,
    /// Per pod: the clients pinned to it (writers, publisher).
    pinned: Mutex<BTreeMap<usize, Pinned>>,
    stop_subscribers: Arc<AtomicBool>,
    subscribers: Mutex<Vec<JoinHandle<()>>>,
}

impl Workload {
    pub fn new(pods: Arc<Pods>) -> Workload {
        Workload {
            ledger: Arc::new(Ledger::new(pods.started())),
            pods,
            pinned: Mutex::new(BTreeMap::new()),
            stop_subscribers: Arc::new(AtomicBool::new(false)),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Starts the writers and the publisher of pod `pod`.
    pub fn pin_clients(&self, pod: usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS_PER_POD {
            tasks.push(tokio::spawn(write(
                self.pods.clone(),
                self.ledger.clone(),
                pod,
                w,
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(publish(
            self.pods.clone(),
            self.ledger.clone(),
            pod,
            stop.clone(),
        )));
        self.pinned
            .lock()
            .unwrap()
            .insert(pod, Pinned { stop, tasks });
    }

    /// Stops pod `pod`'s writers and publisher (before the pod is scaled away).
    pub async fn unpin_clients(&self, pod: usize) {
        let Some(pinned) = self.pinned.lock().unwrap().remove(&pod) else {
            return;
        };
        pinned.stop.store(true, Ordering::Relaxed);
        for t in pinned.tasks {
            let _ = t.await;
        }
    }

    /// Starts a subscriber whose session begins on pod `pod`; returns once it is subscribed.
    pub async fn subscriber(&self, pod: usize) {
        let id = format!("ct-sub-{pod}");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(subscribe(
            self.pods.clone(),
            self.ledger.clone(),
            id.clone(),
            pod,
            self.stop_subscribers.clone(),
            ready_tx,
        ));
        self.subscribers.lock().unwrap().push(task);
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .unwrap_or_else(|_| panic!("{id} did not subscribe within 30 s"))
            .unwrap_or_else(|_| panic!("{id} ended before it subscribed"));
    }

    /// Records that `pod` is going away now (call before killing or stopping it).
    pub fn pod_down(&self, pod: usize) {
        self.ledger
            .downs
            .lock()
            .unwrap()
            .push((pod, Instant::now()));
    }

    pub async fn stop(&self) {
        let pods: Vec<usize> = self.pinned.lock().unwrap().keys().copied().collect();
        for p in pods {
            self.unpin_clients(p).await;
        }
        self.stop_subscribers.store(true, Ordering::Relaxed);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.subscribers.lock().unwrap());
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Creates products `ct-p{pod}-w{writer}-{seq}` through `pod` until `stop`.
async fn write(
    pods: Arc<Pods>,
    ledger: Arc<Ledger>,
    pod: usize,
    writer: usize,
    stop: Arc<AtomicBool>,
) {
    for seq in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let name = format!("ct-p{pod}-w{writer}-{seq}");
        let sent = Instant::now();
        let outcome = WriteOutcome::of(
            pods.api(
                pod,
                "POST",
                "/api/v1/products",
                Some(json!({ "name": name })),
            )
            .await,
        );
        let pause = if outcome.acked() {
            WRITE_EVERY
        } else {
            // Do not spin on a node that refuses at once.
            Duration::from_millis(200)
        };
        ledger.writes.lock().unwrap().push(Write {
            name,
            pod,
            sent,
            done: Instant::now(),
            outcome,
        });
        tokio::time::sleep(pause).await;
    }
}

fn options(pods: &impl Places, pod: usize, id: &str, clean: bool) -> rumqttc::MqttOptions {
    let mut opts = MqttClient::options(pods.mqtt_addr(pod), id, None);
    opts.set_keep_alive(KEEPALIVE);
    opts.set_clean_session(clean);
    opts
}

/// Publishes QoS 1 `ct/{pod}` through `pod`, reconnecting to it whenever it can, until `stop`.
pub async fn publish<P: Places>(
    pods: Arc<P>,
    ledger: Arc<Ledger>,
    pod: usize,
    stop: Arc<AtomicBool>,
) {
    let id = format!("ct-pub-{pod}");
    let topic = format!("ct/{pod}");
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut client) = MqttClient::connect_with(options(&*pods, pod, &id, true)).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        pods.note(format!(
            "{id} connected to pod {pod} at sequence {}",
            seq + 1
        ));
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            let sent = Instant::now();
            let payload = format!("{pod}:{seq}");
            if client
                .try_publish(&topic, QoS::AtLeastOnce, false, payload.as_bytes())
                .await
                .is_err()
            {
                break;
            }
            ledger.published.lock().unwrap().push(Published {
                publisher: pod,
                seq,
                sent,
                acked: Instant::now(),
            });
            tokio::time::sleep(PUBLISH_EVERY).await;
        }
    }
}

/// A persistent session subscribed once to `ct/#`, following the serving pods (see the module
/// doc); `ready` fires once the first SUBACK came.
pub async fn subscribe<P: Places>(
    pods: Arc<P>,
    ledger: Arc<Ledger>,
    id: String,
    first: usize,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    ledger
        .subscribers
        .lock()
        .unwrap()
        .insert(id.clone(), SubLog::default());
    let mut ready = Some(ready);
    let mut pod = first;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut client) = MqttClient::connect_with(options(&*pods, pod, &id, false)).await
        else {
            pod = next_pod(&*pods, pod);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if ready.is_some() {
            let codes = client.subscribe("ct/#", QoS::AtLeastOnce).await;
            assert!(
                matches!(codes[..], [rumqttc::SubscribeReasonCode::Success(_)]),
                "{id}: SUBACK {codes:?}"
            );
        } else if !client.session_present() {
            ledger
                .subscribers
                .lock()
                .unwrap()
                .get_mut(&id)
                .unwrap()
                .lost_sessions
                .push(format!("resumed on pod {pod} without its session"));
        }
        let window = {
            let mut subs = ledger.subscribers.lock().unwrap();
            let log = subs.get_mut(&id).unwrap();
            log.windows.push(Window {
                pod,
                from: Instant::now(),
                to: None,
            });
            log.windows.len() - 1
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        pods.note(format!("{id} connected to pod {pod}"));
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match client.try_next_publish(Duration::from_millis(200)).await {
                Ok(None) => {}
                Ok(Some(p)) => {
                    let text = String::from_utf8_lossy(&p.payload);
                    if let Some((from, seq)) = text.split_once(':')
                        && let (Ok(from), Ok(seq)) = (from.parse(), seq.parse())
                    {
                        let mut subs = ledger.subscribers.lock().unwrap();
                        subs.get_mut(&id).unwrap().received.insert((from, seq));
                    }
                }
                Err(e) => {
                    let mut subs = ledger.subscribers.lock().unwrap();
                    subs.get_mut(&id).unwrap().windows[window].to = Some(Instant::now());
                    drop(subs);
                    pods.note(format!("{id} lost pod {pod}: {e}"));
                    break;
                }
            }
        }
        pod = next_pod(&*pods, pod);
    }
}

/// The serving pod after `pod` in ordinal order (wrapping), else `pod` itself.
fn next_pod(pods: &impl Places, pod: usize) -> usize {
    let serving: BTreeSet<usize> = pods.serving().into_iter().collect();
    serving
        .range(pod + 1..)
        .next()
        .or_else(|| serving.iter().next())
        .copied()
        .unwrap_or(pod)
}
