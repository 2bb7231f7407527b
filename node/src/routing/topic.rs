//! Topic name and topic filter rules (MQTT 3.1.1 §4.7, MQTT 5 §4.7-4.8), pure functions.

/// A parsed subscription filter: plain, or a member of a shared-subscription group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterSpec<'a> {
    /// The filter that is matched against topics (without the `$share/{group}/` prefix).
    pub filter: &'a str,
    /// The share group for `$share/{group}/{filter}`.
    pub group: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("topic filter is empty")]
    Empty,
    #[error("'#' must be the last level on its own and '+' must fill a whole level")]
    BadWildcard,
    #[error("topic filter contains U+0000")]
    NulChar,
    #[error(
        "shared subscription needs $share/{{group}}/{{filter}} with a non-empty group free of wildcards"
    )]
    BadShare,
}

/// Validates a topic name used in PUBLISH (no wildcards, non-empty, no NUL).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Validates a topic filter (no `$share/` handling).
pub fn validate_filter(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.contains('\0') {
        return Err(FilterError::NulChar);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            l if l.contains(['+', '#']) => return Err(FilterError::BadWildcard),
            "#" => return Err(FilterError::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Parses and validates a SUBSCRIBE/UNSUBSCRIBE filter, splitting off a shared-subscription group.
pub fn parse_filter(raw: &str) -> Result<FilterSpec<'_>, FilterError> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest.split_once('/').ok_or(FilterError::BadShare)?;
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(FilterError::BadShare);
        }
        validate_filter(filter).map_err(|_| FilterError::BadShare)?;
        Ok(FilterSpec {
            filter,
            group: Some(group),
        })
    } else {
        validate_filter(raw)?;
        Ok(FilterSpec {
            filter: raw,
            group: None,
        })
    }
}

/// Whether `filter` matches `topic`; the reference semantics the trie must agree with.
/// Wildcards at the first level do not match topics starting with `$` [MQTT-4.7.2-1].
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs are a filter and a topic, one per line. Whatever they are, validation never
    /// panics; a valid filter matches the topics it covers and covers itself.
    #[test]
    fn fuzz_topics_and_filters() {
        crate::fuzzing::run("topic", |input| {
            let parts = crate::fuzzing::lines(input, 2);
            let (filter, topic) = (&parts[0], &parts[1]);
            let topic_ok = valid_topic_name(topic);
            if let Ok(spec) = parse_filter(filter) {
                let matched = topic_ok && filter_matches(spec.filter, topic);
                assert!(
                    crate::auth::filter_covers(spec.filter, spec.filter),
                    "{filter:?}"
                );
                if topic_ok && crate::auth::filter_covers(spec.filter, topic) {
                    assert!(matched, "{filter:?} covers {topic:?} but does not match it");
                }
            }
        });
    }

    type Parsed<'a> = Result<(Option<&'a str>, &'a str), FilterError>;

    #[test]
    fn filters_table() {
        let cases: &[(&str, Parsed<'_>)] = &[
            ("a/b", Ok((None, "a/b"))),
            ("#", Ok((None, "#"))),
            ("+", Ok((None, "+"))),
            ("a/+/c", Ok((None, "a/+/c"))),
            ("a/#", Ok((None, "a/#"))),
            ("/", Ok((None, "/"))),
            ("+/+/#", Ok((None, "+/+/#"))),
            ("", Err(FilterError::Empty)),
            ("a/#/c", Err(FilterError::BadWildcard)),
            ("a#", Err(FilterError::BadWildcard)),
            ("a/b+", Err(FilterError::BadWildcard)),
            ("+a", Err(FilterError::BadWildcard)),
            ("a\0b", Err(FilterError::NulChar)),
            ("$share/g/a/+", Ok((Some("g"), "a/+"))),
            ("$share/g/#", Ok((Some("g"), "#"))),
            ("$share/g", Err(FilterError::BadShare)),
            ("$share//a", Err(FilterError::BadShare)),
            ("$share/g+/a", Err(FilterError::BadShare)),
            ("$share/g/a/#/b", Err(FilterError::BadShare)),
            ("$share/g/", Err(FilterError::BadShare)),
            ("$SYS/#", Ok((None, "$SYS/#"))),
        ];
        for (raw, want) in cases {
            let got = parse_filter(raw).map(|s| (s.group, s.filter));
            assert_eq!(&got, want, "filter {raw:?}");
        }
    }

    #[test]
    fn topic_names_table() {
        for (t, ok) in [
            ("a/b", true),
            ("/", true),
            ("$SYS/x", true),
            ("", false),
            ("a/+", false),
            ("a/#", false),
            ("a\0", false),
        ] {
            assert_eq!(valid_topic_name(t), ok, "topic {t:?}");
        }
    }

    #[test]
    fn matching_table() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("#", "/", true),
            ("+/+", "/", true),
            ("+", "/", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/b/d", false),
            ("a/b/#", "a/b", true),
            ("a/b", "a/b/", false),
        ];
        for (f, t, m) in cases {
            assert_eq!(filter_matches(f, t), m, "filter {f:?} topic {t:?}");
        }
    }
}
