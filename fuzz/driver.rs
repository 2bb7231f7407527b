//! A small deterministic fuzzer for what faces the network (the connection preface, the MQTT
//! 3.1.1 and 5.0 decoders as the node configures them, topic and filter validation, the ACL
//! matcher in `realmq-node`; the REST API's request bodies in `realmq-api`'s tests, which
//! include this file as a module, as the node's unit tests do). Each target replays every input of `fuzz/corpus/{target}/` (the seeds, and every
//! input that once failed), then runs `REALMQ_FUZZ_CASES` mutations of them (default 2000;
//! `make fuzz` runs far more) drawn from a fixed seed (`REALMQ_FUZZ_SEED`), so a failure is
//! reproducible. An input that panics, or takes longer than `SLOW`, is written to the corpus
//! as `regress-{hash}` and fails the test: committed, it is replayed by every later run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One input taking this long counts as a hang.
const SLOW: Duration = Duration::from_secs(2);

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `check` on the corpus of `target` and on mutations of it.
pub fn run(target: &str, check: impl Fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    assert!(!corpus.is_empty(), "no seeds in {}", dir.display());
    corpus.sort();
    for input in &corpus {
        try_one(target, &dir, input, &check);
    }
    let cases = env_u64("REALMQ_FUZZ_CASES", 2000);
    let mut rng = StdRng::seed_from_u64(env_u64("REALMQ_FUZZ_SEED", 0x5eed));
    for _ in 0..cases {
        let input = mutate(&mut rng, &corpus);
        try_one(target, &dir, &input, &check);
    }
}

fn try_one(target: &str, dir: &std::path::Path, input: &[u8], check: &impl Fn(&[u8])) {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
    let took = started.elapsed();
    if outcome.is_ok() && took < SLOW {
        return;
    }
    let name = format!("regress-{:016x}", fxhash(input));
    let _ = std::fs::write(dir.join(&name), input);
    panic!(
        "fuzz target {target}: input {name} ({} bytes) {}; saved under {}",
        input.len(),
        if outcome.is_err() {
            "panicked".to_string()
        } else {
            format!("took {took:?}")
        },
        dir.display()
    );
}

fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A corpus entry with one to four random edits: bit flips, boundary bytes (the variable
/// length integer's 0x7F/0x80/0xFF), insertions, deletions, truncation, duplication, and
/// splicing with another entry.
fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = corpus[rng.random_range(0..corpus.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = [0x00, 0x7F, 0x80, 0xFF][rng.random_range(0..4)];
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(i..i, bytes);
            }
            3 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..len);
                data.drain(i..=j);
            }
            4 if len > 0 => data.truncate(rng.random_range(0..len)),
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..len);
                let copy = data[i..=j].to_vec();
                data.splice(j..j, copy);
            }
            6 => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let cut = rng.random_range(0..=other.len());
                let at = rng.random_range(0..=len);
                data.truncate(at);
                data.extend_from_slice(&other[cut..]);
            }
            _ => {}
        }
    }
    data
}

/// The lines of a text input (lossy UTF-8), padded to `n` with empty strings.
pub fn lines(input: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(input);
    let mut parts: Vec<String> = text.splitn(n, '\n').map(str::to_string).collect();
    parts.resize(n, String::new());
    parts
}
