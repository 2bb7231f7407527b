//! The one polling loop: every "until" in the harness and the tests is `eventually`, so every
//! wait has a bound and a failure says what was last seen.

use std::time::Duration;

use tokio::time::Instant;

/// How long to wait between probes: short enough not to slow tests down, long enough not to
/// load the nodes under test on a 2-core machine.
const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Ok`, and returns that value. Panics after `within`, with
/// `what` and the last `Err` the probe gave, which should describe what it saw. A probe that
/// hangs is cut off at the deadline too.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let deadline = start + within;
    let mut last = String::from("the probe never completed");
    loop {
        match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => last = seen,
            Err(_) => {}
        }
        if Instant::now() + POLL >= deadline {
            panic!(
                "timed out after {:.1?} waiting for {what}; last seen: {last}",
                start.elapsed()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
