//! `make cluster-test`: the Helm chart's StatefulSet, run as containers of the `make image`
//! image on a private Docker network, under the faults a Kubernetes cluster brings: the leader's
//! pod killed, a pod partitioned from its peers, a rolling restart, a scale-out to five pods and
//! back. REST writers and MQTT clients run against every pod throughout; after each phase every
//! acknowledged write must be on every serving pod and every subscriber must have every QoS 1
//! message due to it (see `containers/workload.rs`). Prints a table; exits non-zero on any
//! failure, printing the harness's actions and the pods' last log lines.
//!
//! Usage: container-faults --chart helm/realmq --tools $K8S_TOOLS_DIR [--image realmq:0.1.0]
//! Without a Docker engine it says so and exits 0 (skipped).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use realmq_cluster_tests::containers::plan::PodPlan;
use realmq_cluster_tests::containers::workload::{Workload, Write};
use realmq_cluster_tests::containers::{Pods, docker};
use realmq_cluster_tests::eventually;
use tokio::time::Instant;

/// Writes must flow again on the survivors this soon after the leader's pod is killed.
const REELECTION_BOUND: Duration = Duration::from_secs(5);
/// Bound for acknowledged writes and due messages to show up once a phase settled.
const CONVERGE: Duration = Duration::from_secs(30);
const STEADY: Duration = Duration::from_secs(5);
const PARTITION: Duration = Duration::from_secs(15);

struct Args {
    chart: PathBuf,
    tools: PathBuf,
    image: String,
}

fn args() -> Args {
    let mut a = Args {
        chart: PathBuf::from("helm/realmq"),
        tools: PathBuf::from(std::env::var("K8S_TOOLS_DIR").unwrap_or_default()),
        image: "realmq:0.1.0".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--chart" => a.chart = value.into(),
            "--tools" => a.tools = value.into(),
            "--image" => a.image = value,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// One line of the table.
struct Row {
    phase: &'static str,
    writes_acked: usize,
    writes_refused: usize,
    acked_total: usize,
    found_on: String,
    qos1_acked: usize,
    due: usize,
    received: usize,
    note: String,
}

struct Run {
    pods: Arc<Pods>,
    work: Workload,
    plan_for: Box<dyn Fn(usize) -> PodPlan + Send + Sync>,
    rows: Vec<Row>,
    failures: Vec<String>,
    start: Instant,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if let Err(e) = docker::available().await {
        println!("cluster-test: SKIPPED: no Docker engine answers ({e})");
        return;
    }
    if !docker::has_image(&a.image).await {
        eprintln!(
            "cluster-test: image {} is not in the engine; run `make image` first",
            a.image
        );
        std::process::exit(2);
    }
    let (repository, tag) = a.image.rsplit_once(':').unwrap_or((&a.image, "latest"));
    let password = format!("ct-{:x}", std::process::id() as u64 * 0x9e37_79b9);
    let sets: Vec<String> = vec![
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        format!("rootPassword.value={password}"),
        "allowAnonymous=true".into(),
    ];
    let python = a.tools.join("venv/bin/python");
    let helm = a.tools.join("bin/helm3");
    let chart = a.chart.clone();
    let plan_for = move |replicas: usize| {
        let mut s = sets.clone();
        s.push(format!("replicas={replicas}"));
        PodPlan::render(&python, &helm, &chart, &s).unwrap_or_else(|e| panic!("{e}"))
    };
    let pods = Arc::new(
        Pods::create(plan_for(3))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut run = Run {
        work: Workload::new(pods.clone()),
        pods: pods.clone(),
        plan_for: Box::new(plan_for),
        rows: Vec::new(),
        failures: Vec::new(),
        start: Instant::now(),
    };
    // A failed check panics (as in the other cluster tests); caught here to print the pods' logs.
    let outcome = AssertUnwindSafe(async move {
        scenario(&mut run).await;
        run
    })
    .catch_unwind()
    .await;
    let failed = match outcome {
        Ok(run) => {
            print_table(&run.rows);
            if run.failures.is_empty() {
                println!("cluster-test: PASS");
            } else {
                pods.post_mortem().await;
                for f in &run.failures {
                    eprintln!("FAIL: {f}");
                }
                eprintln!("cluster-test: FAIL ({} problems)", run.failures.len());
            }
            !run.failures.is_empty()
        }
        Err(_) => {
            pods.post_mortem().await;
            eprintln!("cluster-test: FAIL: the scenario stopped (the panic above says why)");
            true
        }
    };
    pods.remove_all();
    if failed {
        std::process::exit(1);
    }
}

async fn scenario(run: &mut Run) {
    let pods = run.pods.clone();
    for o in 0..3 {
        pods.create_pod(o).await.unwrap_or_else(|e| panic!("{e}"));
    }
    for o in 0..3 {
        pods.wait_ready(o).await;
    }
    let members = pods.nodes(0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        members.len(),
        3,
        "the chart's three pods formed {members:?}"
    );
    for o in 0..3 {
        run.work.subscriber(o).await;
        run.work.pin_clients(o);
    }

    let t = Instant::now();
    tokio::time::sleep(STEADY).await;
    run.check("steady", t, String::new()).await;

    kill_the_leader(run).await;
    partition_a_follower(run).await;
    rolling_restart(run).await;
    scale_out_and_in(run).await;

    run.work.stop().await;
    let t = Instant::now();
    run.check(
        "end (all)",
        t,
        "every write and message since the start".into(),
    )
    .await;
}

/// kill -9 of the leader's pod; writes must resume on the survivors within the bound; the
/// pod restarts on its volume, as the StatefulSet controller restarts it.
async fn kill_the_leader(run: &mut Run) {
    let pods = run.pods.clone();
    let since = Instant::now();
    let leader = pods.leader(0).await.unwrap_or_else(|e| panic!("{e}"));
    run.work.pod_down(leader);
    pods.kill9(leader).await.unwrap_or_else(|e| panic!("{e}"));
    // The process is gone once `docker kill` returns; writes sent before may still have
    // reached it.
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let resumed = run
        .writes()
        .iter()
        .filter(|w| w.pod != leader && w.sent >= killed && w.outcome.acked())
        .map(|w| w.done - killed)
        .min();
    let note = match resumed {
        Some(gap) => {
            if gap > REELECTION_BOUND {
                run.failures.push(format!(
                    "writes resumed {gap:.1?} after the leader (pod {leader}) was killed, over {REELECTION_BOUND:?}"
                ));
            }
            format!("pod {leader} (leader) killed; writes resumed after {gap:.2?}")
        }
        None => {
            run.failures.push(format!(
                "no write succeeded in 8 s after pod {leader} was killed"
            ));
            format!("pod {leader} (leader) killed; writes did not resume")
        }
    };
    pods.start(leader).await.unwrap_or_else(|e| panic!("{e}"));
    pods.wait_ready(leader).await;
    run.check("kill -9 leader", since, note).await;
}

/// A follower's pod is cut off from its peers: it must refuse writes with 503 while the two
/// others keep taking them, and converge once the partition heals.
async fn partition_a_follower(run: &mut Run) {
    let pods = run.pods.clone();
    let since = Instant::now();
    let leader = pods.leader(0).await.unwrap_or_else(|e| panic!("{e}"));
    let minority = (0..3).find(|&o| o != leader).unwrap();
    pods.partition(minority)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cut = Instant::now();
    tokio::time::sleep(PARTITION).await;
    let healed = Instant::now();
    pods.heal(minority).await.unwrap_or_else(|e| panic!("{e}"));
    let (acked, refused_503, other, majority_acked) = {
        let writes = run.writes();
        // Answered while the pod was cut off; one sent just before the cut may rightly have
        // been committed, so only those sent after it must not be acknowledged.
        let answered: Vec<&Write> = writes
            .iter()
            .filter(|w| w.done >= cut && w.done < healed)
            .collect();
        let minority_writes: Vec<&Write> = answered
            .iter()
            .copied()
            .filter(|w| w.pod == minority)
            .collect();
        (
            minority_writes
                .iter()
                .filter(|w| w.sent >= cut && w.outcome.acked())
                .count(),
            minority_writes
                .iter()
                .filter(|w| w.outcome.clean_refusal())
                .count(),
            minority_writes
                .iter()
                .filter(|w| w.sent >= cut && !w.outcome.acked() && !w.outcome.clean_refusal())
                .map(|w| w.outcome.to_string())
                .take(3)
                .collect::<Vec<_>>(),
            answered
                .iter()
                .filter(|w| w.pod != minority && w.sent >= cut && w.outcome.acked())
                .count(),
        )
    };
    if acked > 0 {
        run.failures.push(format!(
            "the partitioned pod {minority} acknowledged {acked} writes without a quorum"
        ));
    }
    if refused_503 == 0 {
        let overlapping: Vec<String> = run
            .writes()
            .iter()
            .filter(|w| w.pod == minority && w.sent < healed && w.done >= cut)
            .map(|w| {
                let at = match w.sent.checked_duration_since(cut) {
                    Some(d) => d.as_secs_f64(),
                    None => -(cut - w.sent).as_secs_f64(),
                };
                format!(
                    "sent at cut{at:+.2}s, took {:.2}s: {}",
                    (w.done - w.sent).as_secs_f64(),
                    w.outcome
                )
            })
            .take(6)
            .collect();
        run.failures.push(format!(
            "the partitioned pod {minority} never refused a write with 503; other outcomes: {other:?}; writes overlapping the partition: {overlapping:?}"
        ));
    }
    if !other.is_empty() {
        run.failures.push(format!(
            "the partitioned pod {minority} answered writes otherwise than with 503: {other:?}"
        ));
    }
    if majority_acked == 0 {
        run.failures
            .push("the majority took no write during the partition".into());
    }
    let note = format!(
        "pod {minority} cut off {PARTITION:?}: {refused_503} writes refused with 503, {} otherwise, {majority_acked} taken by the majority",
        other.len()
    );
    run.check("partition + heal", since, note).await;
}

/// `kubectl rollout restart`: highest ordinal first, each pod stopped (SIGTERM, grace), started
/// on its volume and waited for until ready before the next.
async fn rolling_restart(run: &mut Run) {
    let pods = run.pods.clone();
    let since = Instant::now();
    let mut took = Vec::new();
    for o in (0..3).rev() {
        let t = Instant::now();
        run.work.pod_down(o);
        pods.stop(o).await.unwrap_or_else(|e| panic!("{e}"));
        pods.start(o).await.unwrap_or_else(|e| panic!("{e}"));
        pods.wait_ready(o).await;
        took.push(format!("{:.1}s", t.elapsed().as_secs_f64()));
    }
    let note = format!("pods 2, 1, 0 restarted in {}", took.join(", "));
    run.check("rolling restart", since, note).await;
}

/// replicas 3 -> 5: two learners join (and serve clients); 5 -> 3: they stop, leave the
/// membership, and their volumes go.
async fn scale_out_and_in(run: &mut Run) {
    let pods = run.pods.clone();
    let since = Instant::now();
    pods.set_plan((run.plan_for)(5));
    for o in 3..5 {
        pods.create_pod(o).await.unwrap_or_else(|e| panic!("{e}"));
    }
    for o in 3..5 {
        pods.wait_ready(o).await;
        run.work.pin_clients(o);
    }
    let roles = eventually("five members, two of them learners", CONVERGE, async || {
        let nodes = pods.nodes(0).await?;
        let learners = nodes
            .iter()
            .filter(|n| n.role.as_deref() == Some("learner"))
            .count();
        if nodes.len() == 5 && learners == 2 && nodes.iter().all(|n| n.reachable) {
            Ok(nodes
                .iter()
                .map(|n| format!("{}:{}", n.id, n.role.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" "))
        } else {
            Err(format!("{nodes:?}"))
        }
    })
    .await;
    tokio::time::sleep(STEADY).await;
    run.check("scale 3 -> 5", since, format!("members {roles}"))
        .await;

    let since = Instant::now();
    for o in (3..5).rev() {
        run.work.unpin_clients(o).await;
        run.work.pod_down(o);
        pods.stop(o).await.unwrap_or_else(|e| panic!("{e}"));
        pods.delete(o).await.unwrap_or_else(|e| panic!("{e}"));
    }
    pods.set_plan((run.plan_for)(3));
    let left = eventually("the two learners to leave", CONVERGE, async || {
        let nodes = pods.nodes(0).await?;
        let ids: BTreeSet<u64> = nodes.iter().map(|n| n.id).collect();
        if ids == BTreeSet::from([1, 2, 3]) {
            Ok(format!("members {ids:?}"))
        } else {
            Err(format!("{nodes:?}"))
        }
    })
    .await;
    tokio::time::sleep(STEADY).await;
    run.check("scale 5 -> 3", since, left).await;
}

impl Run {
    /// Every REST write attempted so far.
    fn writes(&self) -> std::sync::MutexGuard<'_, Vec<Write>> {
        self.work.ledger.writes.lock().unwrap()
    }

    /// Checks what every phase promises and adds its row.
    async fn check(&mut self, phase: &'static str, since: Instant, note: String) {
        let pods = self.pods.clone();
        let ledger = self.work.ledger.clone();
        // What was acknowledged until now must arrive; messages still in flight (a healed
        // link's resend) get time to.
        let until = Instant::now();
        let deadline = until + CONVERGE;
        let accounts = loop {
            let accounts = ledger.accounts(self.start, until);
            if accounts.iter().all(|a| a.missing.is_empty()) || Instant::now() >= deadline {
                break accounts;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        for a in &accounts {
            if let Some(p) = a.problem() {
                self.failures.push(format!("{phase}: {p}"));
            }
        }
        let phase_accounts = ledger.accounts(since, until);
        let due: usize = phase_accounts.iter().map(|a| a.due).sum();
        let received = due
            - phase_accounts
                .iter()
                .map(|a| a.missing.len())
                .sum::<usize>();
        let qos1_acked = ledger
            .published
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.acked >= since && m.acked < until)
            .count();

        let (acked, writes_acked, writes_refused) = {
            let writes = ledger.writes.lock().unwrap();
            let acked: BTreeSet<String> = writes
                .iter()
                .filter(|w| w.outcome.acked())
                .map(|w| w.name.clone())
                .collect();
            let in_phase = writes.iter().filter(|w| w.sent >= since);
            let (ok, refused): (Vec<_>, Vec<_>) = in_phase.partition(|w| w.outcome.acked());
            (acked, ok.len(), refused.len())
        };
        let serving = pods.serving();
        let mut found_on = 0;
        for &o in &serving {
            let lacking = eventually(&format!("pod {o}'s product list"), CONVERGE, async || {
                pods.product_names(o).await
            })
            .await;
            let missing: Vec<&String> = acked.difference(&lacking).collect();
            if missing.is_empty() {
                found_on += 1;
            } else {
                self.failures.push(format!(
                    "{phase}: pod {o} lacks {} of {} acknowledged writes, e.g. {:?}",
                    missing.len(),
                    acked.len(),
                    &missing[..missing.len().min(5)]
                ));
            }
        }
        pods.note(format!("phase {phase} checked"));
        self.rows.push(Row {
            phase,
            writes_acked,
            writes_refused,
            acked_total: acked.len(),
            found_on: format!("{found_on}/{}", serving.len()),
            qos1_acked,
            due,
            received,
            note,
        });
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<17} {:>7} {:>8} {:>9} {:>8} {:>9} {:>10} {:>9}  notes",
        "phase",
        "writes",
        "refused",
        "all acked",
        "found on",
        "QoS1 sent",
        "deliveries",
        "received"
    );
    for r in rows {
        println!(
            "{:<17} {:>7} {:>8} {:>9} {:>8} {:>9} {:>10} {:>9}  {}",
            r.phase,
            r.writes_acked,
            r.writes_refused,
            r.acked_total,
            r.found_on,
            r.qos1_acked,
            r.due,
            r.received,
            r.note
        );
    }
    println!(
        "(writes/refused: REST writes acknowledged / not in the phase; all acked: every acknowledged write so far, \
         found on: serving pods listing all of them; QoS1 sent: acknowledged publishes in the phase; \
         deliveries: (message, subscriber) pairs due, received: of those, received)"
    );
}
