//! The throughput and latency scenarios `bench-suite` runs, what each compares against which
//! target, and the rules RealMQ runs in the rule-engine ones.

use serde_json::{Value, json};

use crate::Args;

pub struct Scenario {
    pub name: &'static str,
    /// Over TLS (both brokers' TLS listener, the same certificate).
    pub tls: bool,
    /// What is compared, each with its target: fields of the generator's summary.
    pub metrics: &'static [(&'static str, &'static str)],
    /// A throughput scenario (the null broker runs it too, for the generator's ceiling); else
    /// a latency one.
    pub throughput: bool,
    pub args: Vec<String>,
    /// Rules RealMQ runs during the scenario (created over REST after it starts).
    pub rules: Vec<Value>,
}

/// The rule-engine scenarios' rules; the fan-in publishes to `bench/t`. Ten that read other
/// topics (the cost of rules that match nothing: one trie walk per message), or one that
/// republishes every message (to a topic nobody subscribes to).
fn rules(matching: bool) -> Vec<Value> {
    if matching {
        return vec![
            json!({"name": "republish-all", "sql": "SELECT payload FROM \"bench/#\"",
            "actions": [{"type": "republish", "topic": "rules/out", "payload": "${payload}"}]}),
        ];
    }
    (0..10)
        .map(|i| json!({"name": format!("site-{i}"),
            "sql": format!("SELECT payload.v AS v FROM \"site/{i}/+/telemetry\" WHERE payload.v > 10"),
            "actions": [{"type": "log"}]}))
        .collect()
}

/// What the throughput scenarios compare (`delivered` is the target for `delivered_share`).
const fn throughput(
    received: &'static str,
    delivered: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("received_per_s", received),
        ("ingested_per_s", "reported"),
        ("delivered_share", delivered),
    ]
}

const QOS0_FANIN: [(&str, &str); 3] = throughput(">= 2.0x", ">= 0.90");
const FANIN: [(&str, &str); 3] = throughput(">= 2.0x", "reported");
const OTHER: [(&str, &str); 3] = throughput(">= 1.5x", "reported");
const LATENCY: [(&str, &str); 3] = [
    ("latency_ms.p50", "<= mosquitto"),
    ("latency_ms.p99", "<= mosquitto and <= 1 ms"),
    ("delivered_share", "reported"),
];

pub fn scenarios(a: &Args) -> Vec<Scenario> {
    let d = a.duration.to_string();
    // `pubsub` with 64-byte payloads: publishers, subscribers, QoS, then extra arguments.
    let pubsub = |publishers: &str, subscribers: &str, qos: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["pubsub", "--size", "64", "--duration", &d]
            .iter()
            .chain(&["--publishers", publishers, "--subscribers", subscribers])
            .chain(&["--qos", qos])
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let fanin = |qos: &str, extra: &[&str]| pubsub("100", "1", qos, extra);
    let latency = |extra: &[&str]| pubsub("1", "1", "0", &[&["--rate", "10000"], extra].concat());
    let scenario = |name, tls, metrics: &'static [(&'static str, &'static str)], args| Scenario {
        name,
        tls,
        metrics,
        throughput: metrics.iter().any(|(m, _)| *m == "received_per_s"),
        args,
        rules: Vec::new(),
    };
    vec![
        scenario("qos0_fanin_100_to_1", false, &QOS0_FANIN, fanin("0", &[])),
        scenario("tls_qos0_fanin_100_to_1", true, &FANIN, fanin("0", &[])),
        scenario("qos1_fanin_100_to_1", false, &OTHER, fanin("1", &[])),
        scenario(
            "fanout_1_to_100",
            false,
            &OTHER,
            pubsub("1", "100", "0", &[]),
        ),
        scenario(
            "v5_qos0_fanin_100_to_1",
            false,
            &FANIN,
            fanin("0", &["--version", "5"]),
        ),
        Scenario {
            rules: rules(false),
            ..scenario(
                "qos0_fanin_10_rules_no_match",
                false,
                &FANIN,
                fanin("0", &[]),
            )
        },
        Scenario {
            rules: rules(true),
            ..scenario(
                "qos0_fanin_1_republish_rule",
                false,
                &FANIN,
                fanin("0", &[]),
            )
        },
        scenario("latency_at_10k", false, &LATENCY, latency(&[])),
        scenario(
            "v5_latency_at_10k",
            false,
            &LATENCY,
            latency(&["--version", "5"]),
        ),
    ]
}
