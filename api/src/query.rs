//! Query strings: pagination (`_page`, `_limit`) and filters, with errors that say which
//! parameter is wrong.

use std::collections::HashMap;

use crate::error::ApiError;

pub type Query = HashMap<String, String>;

/// Largest `_limit` accepted.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: usize,
    pub limit: usize,
}

impl Paging {
    pub fn offset(&self) -> usize {
        (self.page - 1).saturating_mul(self.limit)
    }
}

fn positive(q: &Query, name: &str, default: usize) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be a positive integer, got {v:?}"))
            }),
    }
}

pub fn paging(q: &Query) -> Result<Paging, ApiError> {
    let page = positive(q, "_page", 1)?;
    let limit = positive(q, "_limit", 10)?;
    if limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "_limit must be at most {MAX_LIMIT}, got {limit}"
        )));
    }
    Ok(Paging { page, limit })
}

/// A non-empty string filter, if given.
pub fn text<'a>(q: &'a Query, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Parses a path id.
pub fn id(raw: &str, what: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::BadRequest(format!("{what} id must be a positive integer, got {raw:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn paging_table() {
        let cases: &[(&[(&str, &str)], Result<(usize, usize), &str>)] = &[
            (&[], Ok((1, 10))),
            (&[("_page", "3"), ("_limit", "20")], Ok((3, 20))),
            (
                &[("_limit", "abc")],
                Err("_limit must be a positive integer"),
            ),
            (&[("_page", "0")], Err("_page must be a positive integer")),
            (
                &[("_limit", "-1")],
                Err("_limit must be a positive integer"),
            ),
            (&[("_limit", "5000")], Err("_limit must be at most 1000")),
        ];
        for (pairs, want) in cases {
            match (paging(&q(pairs)), want) {
                (Ok(p), Ok((page, limit))) => assert_eq!((p.page, p.limit), (*page, *limit)),
                (Err(ApiError::BadRequest(m)), Err(w)) => assert!(m.contains(w), "{m}"),
                (other, _) => panic!("{pairs:?}: {other:?}"),
            }
        }
        assert_eq!(
            paging(&q(&[("_page", "2"), ("_limit", "5")]))
                .unwrap()
                .offset(),
            5
        );
        let huge = paging(&q(&[
            ("_page", &usize::MAX.to_string()),
            ("_limit", "1000"),
        ]))
        .unwrap();
        assert_eq!(huge.offset(), usize::MAX, "no overflow");
    }
}
