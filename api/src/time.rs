//! The contract's time format, `YYYY-MM-DD HH:MM:SS` in UTC, and the durations shown as
//! `online_at` / `offline_at`.

use chrono::{DateTime, Utc};

pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn format_opt(ms: Option<i64>) -> String {
    ms.map(format_ms).unwrap_or_default()
}

/// A duration as `1d2h3m4s`, leading zero units left out (`0s` for nothing).
pub fn format_duration_ms(ms: i64) -> String {
    let mut s = (ms.max(0) / 1000) as u64;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= size || !out.is_empty() {
            out.push_str(&format!("{}{unit}", s / size));
            s %= size;
        }
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_ms(1_745_333_114_000), "2025-04-22 14:45:14");
        assert_eq!(format_opt(None), "");
        for (ms, want) in [
            (0, "0s"),
            (59_999, "59s"),
            (61_000, "1m1s"),
            (3_600_000, "1h0m0s"),
            (90_061_000, "1d1h1m1s"),
        ] {
            assert_eq!(format_duration_ms(ms), want);
        }
    }
}
