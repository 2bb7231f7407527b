//! Request-body parsing with errors that name the offending field, and the contract's lenient
//! numbers (`type`, `dynamic_reg`, `auth_type` are documented as strings; `"1"` and `1` both work).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// Parses a JSON body; the error names the field path and the problem.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body must be a JSON document".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

/// A free-text field: at most `max` bytes (400 naming the field).
pub fn check_text_len(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::BadRequest(format!(
            "{field} must be at most {max} bytes"
        ))),
        _ => Ok(()),
    }
}

/// A name that becomes part of MQTT identities and ACL topics (a device's name, username and
/// client id, an API user name): 1 to `max` bytes, without the MQTT wildcards `+` and `#` or
/// NUL. The error names the field.
pub fn check_identifier(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::BadRequest(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    if value.contains(['+', '#', '\0']) {
        return Err(ApiError::BadRequest(format!(
            "{field} must not contain '+', '#' or NUL"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(i64),
    Text(String),
}

/// An optional small integer given as a number or a numeric string.
pub fn lenient_u8<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    let v = Option::<NumOrText>::deserialize(d)?;
    let n = match v {
        None => return Ok(None),
        Some(NumOrText::Num(n)) => n,
        Some(NumOrText::Text(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}")))?,
    };
    u8::try_from(n)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
}

/// An optional boolean given as `true`/`false` or `1`/`0` (the contract shows both).
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Num(i64),
    }
    Ok(match Option::<B>::deserialize(d)? {
        None => None,
        Some(B::Bool(b)) => Some(b),
        Some(B::Num(0)) => Some(false),
        Some(B::Num(1)) => Some(true),
        Some(B::Num(n)) => {
            return Err(serde::de::Error::custom(format!(
                "expected true/false or 1/0, got {n}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)] // only its presence is tested
        name: String,
        #[serde(default, deserialize_with = "lenient_u8")]
        kind: Option<u8>,
        #[serde(default, deserialize_with = "lenient_bool")]
        on: Option<bool>,
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn errors_name_the_field() {
        let cases: &[(&str, Result<(Option<u8>, Option<bool>), &str>)] = &[
            (r#"{"name":"a"}"#, Ok((None, None))),
            (
                r#"{"name":"a","kind":"2","on":1}"#,
                Ok((Some(2), Some(true))),
            ),
            (
                r#"{"name":"a","kind":2,"on":false}"#,
                Ok((Some(2), Some(false))),
            ),
            (r#"{"name":1}"#, Err("name: invalid type")),
            (r#"{"name":"a","kind":"x"}"#, Err("kind: expected a number")),
            (
                r#"{"name":"a","kind":300}"#,
                Err("kind: 300 is out of range"),
            ),
            (r#"{"name":"a","on":2}"#, Err("on: expected true/false")),
            (r#"{}"#, Err("missing field `name`")),
            (r#"{"name":"a","extra":1}"#, Err("unknown field `extra`")),
            (r#"{"name":"a""#, Err("invalid JSON body")),
            ("", Err("must be a JSON document")),
        ];
        for (body, want) in cases {
            let got = parse::<Body>(body.as_bytes()).map(|b| (b.kind, b.on));
            match (got, want) {
                (Ok(v), Ok(w)) => assert_eq!(v, *w, "{body}"),
                (Err(ApiError::BadRequest(m)), Err(w)) => assert!(m.contains(w), "{body}: {m}"),
                (other, _) => panic!("{body}: {other:?}"),
            }
        }
    }
}
