//! Captured node output. Every line a node writes is kept, across restarts, because a cluster
//! failure is usually explained by what another node logged seconds earlier. When a test fails
//! the tail of each node's log is printed in a compact form instead of raw JSON.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Lines printed per node when a test fails.
pub(crate) const TAIL: usize = 50;

/// One node's output, stdout and stderr interleaved in arrival order, shared with the threads
/// that read the process's pipes.
#[derive(Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub(crate) fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Every panic reported on stderr, with its message: a backtrace pushes them out of the
    /// tail, and they are usually the one line that explains the failure.
    pub(crate) fn panics(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("[stderr]") && l.contains("panicked at"))
            .map(|(i, l)| match lines.get(i + 1) {
                Some(message) => format!("{l} {}", message.trim_start_matches("[stderr] ")),
                None => l.clone(),
            })
            .collect()
    }

    /// The last `n` lines, rendered for a human.
    pub(crate) fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| render(l))
            .collect()
    }
}

/// `time LEVEL target: message key=value...` for a JSON log line; other lines (stderr, panics,
/// harness markers) unchanged.
pub(crate) fn render(line: &str) -> String {
    let Ok(Value::Object(mut v)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let mut take = |k: &str| match v.remove(k) {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let time = take("timestamp");
    // The date is the same on every line; the time of day is what lines are compared by.
    let time = time
        .split_once('T')
        .map_or(time.as_str(), |(_, t)| t)
        .to_string();
    let (level, target, message) = (take("level"), take("target"), take("message"));
    let mut out = format!("{time} {level:>5} {target}: {message}");
    for (k, val) in v {
        match val {
            Value::String(s) => out.push_str(&format!(" {k}={s}")),
            other => out.push_str(&format!(" {k}={other}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_json_lines_compactly_and_leaves_others_alone() {
        let line = r#"{"timestamp":"2026-01-02T03:04:05.678Z","level":"INFO","target":"realmq","message":"realmq node started","api":"127.0.0.1:9","term":3}"#;
        assert_eq!(
            render(line),
            "03:04:05.678Z  INFO realmq: realmq node started api=127.0.0.1:9 term=3"
        );
        assert_eq!(render("thread 'main' panicked"), "thread 'main' panicked");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let log = Log::default();
        for i in 0..5 {
            log.push(format!("line {i}"));
        }
        assert_eq!(log.tail(2), vec!["line 3", "line 4"]);
        assert_eq!(log.tail(10).len(), 5);
        assert!(log.contains("line 0"));
        log.push("[stderr] thread 'w' panicked at src/a.rs:1:2:".into());
        log.push("[stderr] index out of bounds".into());
        assert_eq!(
            log.panics(),
            vec!["[stderr] thread 'w' panicked at src/a.rs:1:2: index out of bounds"]
        );
    }
}
