//! `[[webhook]]`: events POSTed as JSON to a local HTTP server run by the test (warp), with the
//! configured headers and topic filter; a failing receiver gets retries; a stuck one never holds
//! up message delivery (its events are dropped and counted instead).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warp::Filter;

use crate::common::{Node, WAIT};

/// What the receiver got: the path, the Authorization header and the body.
type Got = (String, Option<String>, Value);

/// Starts the receiver: `/hook` answers 200, `/flaky` 500 to its first request, `/slow` after
/// 5 s. Returns its port, what arrives, and how many requests `/flaky` saw.
async fn receiver() -> (u16, mpsc::UnboundedReceiver<Got>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let calls = flaky_calls.clone();
    let route = warp::post()
        .and(warp::path::param::<String>())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::json())
        .then(move |path: String, auth: Option<String>, body: Value| {
            let tx = tx.clone();
            let calls = calls.clone();
            async move {
                let status = match path.as_str() {
                    "flaky" if calls.fetch_add(1, Ordering::SeqCst) == 0 => 500,
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        200
                    }
                    _ => 200,
                };
                if status == 200 {
                    let _ = tx.send((path, auth, body));
                }
                warp::reply::with_status("", warp::http::StatusCode::from_u16(status).unwrap())
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (port, rx, flaky_calls)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Got>, path: &str) -> (Option<String>, Value) {
    tokio::time::timeout(WAIT, async {
        loop {
            let (p, auth, body) = rx.recv().await.expect("receiver running");
            if p == path {
                return (auth, body);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing posted to /{path}"))
}

#[tokio::test]
async fn events_reach_the_receiver_with_retries_and_filters() {
    let (port, mut rx, flaky_calls) = receiver().await;
    let node = Node::start(&format!(
        "[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         events = [\"client.connected\", \"client.disconnected\", \"message.publish\", \"device.status\"]\n\
         topic = \"sensors/#\"\nheaders = {{ authorization = \"Bearer s3cret\" }}\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{port}/flaky\"\nevents = [\"message.publish\"]\n"
    ));
    let (s, b) = node
        .api("POST", "/api/v1/products", Some(json!({"name": "hooked"})))
        .await;
    assert_eq!(s, 200, "{b}");
    let key = b["data"]["product_key"].as_str().unwrap().to_string();
    let device = json!({"name": "thermo-1", "product_key": key, "username": "thermo-1",
        "password": "pw", "mqtt_client_id": "thermo-1"});
    let (s, b) = node.api("POST", "/api/v1/devices", Some(device)).await;
    assert_eq!(s, 200, "{b}");

    let mut opts = MqttOptions::new("thermo-1", "127.0.0.1", node.port());
    opts.set_credentials("thermo-1", "pw");
    let (client, mut events) = AsyncClient::new(opts, 8);
    client
        .publish("sensors/1/temp", QoS::AtLeastOnce, false, "21.5")
        .await
        .unwrap();
    client
        .publish("other/x", QoS::AtLeastOnce, false, "not for the hook")
        .await
        .unwrap();
    let mut acked = 0;
    tokio::time::timeout(WAIT, async {
        while acked < 2 {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("PUBACKs");
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}

    let (auth, connected) = next(&mut rx, "hook").await;
    assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
    assert_eq!(connected["event"], "client.connected", "{connected}");
    assert_eq!(connected["clientid"], "thermo-1");
    assert_eq!(connected["username"], "thermo-1");
    assert_eq!(connected["ipaddress"], "127.0.0.1");
    assert_eq!(connected["proto_ver"], 4);
    assert_eq!(connected["node"], 1);
    let (_, online) = next(&mut rx, "hook").await;
    assert_eq!(online["event"], "device.status", "{online}");
    assert_eq!(online["status"], "online");
    assert_eq!(online["device"]["name"], "thermo-1");
    let (_, published) = next(&mut rx, "hook").await;
    assert_eq!(published["event"], "message.publish", "{published}");
    assert_eq!(published["topic"], "sensors/1/temp");
    assert_eq!(published["payload"], "21.5");
    assert_eq!(published["qos"], 1);
    // other/x is outside the hook's filter: the next event is the disconnect.
    let (_, gone) = next(&mut rx, "hook").await;
    assert_eq!(gone["event"], "client.disconnected", "{gone}");
    let (_, offline) = next(&mut rx, "hook").await;
    assert_eq!(offline["status"], "offline", "{offline}");

    // The flaky receiver failed the first POST and got it again.
    let (_, first) = next(&mut rx, "flaky").await;
    assert_eq!(first["topic"], "sensors/1/temp");
    let (_, second) = next(&mut rx, "flaky").await;
    assert_eq!(second["topic"], "other/x");
    assert_eq!(
        flaky_calls.load(Ordering::SeqCst),
        3,
        "one retry, then one each"
    );
}

#[tokio::test]
async fn a_stuck_receiver_never_holds_up_delivery() {
    let (port, _rx, _) = receiver().await;
    let node = Node::start(&format!(
        "[[webhook]]\nurl = \"http://127.0.0.1:{port}/slow\"\nevents = [\"message.publish\"]\n\
         queue = 10\n"
    ));
    let (sub, mut sub_events) =
        AsyncClient::new(MqttOptions::new("sub", "127.0.0.1", node.port()), 16);
    sub.subscribe("load/#", QoS::AtMostOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("SUBACK");
    let (publisher, mut pub_events) =
        AsyncClient::new(MqttOptions::new("pub", "127.0.0.1", node.port()), 300);
    tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    for i in 0..200 {
        publisher
            .publish(format!("load/{i}"), QoS::AtMostOnce, false, "x")
            .await
            .unwrap();
    }
    // Every message arrives while the receiver sits on its first request for 5 s.
    let mut got = 0;
    tokio::time::timeout(Duration::from_secs(4), async {
        while got < 200 {
            if let Event::Incoming(Packet::Publish(_)) = sub_events.poll().await.unwrap() {
                got += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {got} of 200 delivered while the webhook was stuck"));
    let scrape = reqwest::get(format!("http://{}/metrics", node.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("realmq_webhook_dropped_total "))
        .expect("the drop counter is exported")
        .parse()
        .unwrap();
    assert!(dropped >= 180.0, "dropped {dropped}: the queue holds 10");
}
