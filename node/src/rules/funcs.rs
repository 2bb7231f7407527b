//! Built-in functions of rule SQL.
//!
//! Owns the function table (name → arity range → implementation) that the
//! compiler uses to refuse unknown functions and wrong arities, and that the
//! evaluator calls through; plus the value conversions (`str`, `int`, ...)
//! the operators share. Names are matched case-insensitively.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::format::StrftimeItems;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use regex::Regex;
use serde_json::{Map, Value};

use super::eval::{EvalError, Num, compare, float, num, num_text, values_equal};

pub type Call = fn(&[Value]) -> Result<Value, EvalError>;

#[derive(Debug)]
pub struct Func {
    pub name: &'static str,
    pub min: usize,
    pub max: usize,
    /// Same arguments, same result: calls on literals are folded at compile time.
    pub pure: bool,
    pub call: Call,
}

/// `max` of a variadic function.
pub const MANY: usize = usize::MAX;

const fn pure(name: &'static str, min: usize, max: usize, call: Call) -> Func {
    Func {
        name,
        min,
        max,
        pure: true,
        call,
    }
}

const fn clock(name: &'static str, min: usize, max: usize, call: Call) -> Func {
    Func {
        name,
        min,
        max,
        pure: false,
        call,
    }
}

static FUNCS: &[Func] = &[
    // strings
    pure("lower", 1, 1, |a| map_text(a, str::to_lowercase)),
    pure("upper", 1, 1, |a| map_text(a, str::to_uppercase)),
    pure("trim", 1, 1, |a| map_text(a, |s| s.trim().to_owned())),
    pure("ltrim", 1, 1, |a| {
        map_text(a, |s| s.trim_start().to_owned())
    }),
    pure("rtrim", 1, 1, |a| map_text(a, |s| s.trim_end().to_owned())),
    pure("reverse", 1, 1, |a| {
        map_text(a, |s| s.chars().rev().collect())
    }),
    pure("strlen", 1, 1, |a| {
        Ok(text(arg(a, 0))?.chars().count().into())
    }),
    pure("substr", 2, 3, substr),
    pure("concat", 2, MANY, |a| {
        Ok(a.iter().map(to_text).collect::<String>().into())
    }),
    pure("replace", 3, 3, replace),
    pure("split", 2, 2, split),
    pure("tokens", 2, 2, tokens),
    pure("find", 2, 2, find),
    pure("regex_match", 2, 2, regex_match),
    // conversion and type tests
    pure("str", 1, 1, |a| Ok(to_text(arg(a, 0)).into())),
    pure("int", 1, 1, to_int),
    pure("float", 1, 1, to_float),
    pure("bool", 1, 1, to_bool),
    pure("is_null", 1, 1, |a| Ok(arg(a, 0).is_null().into())),
    pure("is_not_null", 1, 1, |a| Ok((!arg(a, 0).is_null()).into())),
    pure("is_str", 1, 1, |a| Ok(arg(a, 0).is_string().into())),
    pure("is_num", 1, 1, |a| Ok(arg(a, 0).is_number().into())),
    pure("is_int", 1, 1, |a| {
        Ok((arg(a, 0).is_i64() || arg(a, 0).is_u64()).into())
    }),
    pure("is_float", 1, 1, |a| Ok(arg(a, 0).is_f64().into())),
    pure("is_bool", 1, 1, |a| Ok(arg(a, 0).is_boolean().into())),
    pure("is_map", 1, 1, |a| Ok(arg(a, 0).is_object().into())),
    pure("is_array", 1, 1, |a| Ok(arg(a, 0).is_array().into())),
    // math
    pure("abs", 1, 1, abs),
    pure("ceil", 1, 1, |a| round_with(a, f64::ceil)),
    pure("floor", 1, 1, |a| round_with(a, f64::floor)),
    pure("round", 1, 1, |a| round_with(a, f64::round)),
    pure("sqrt", 1, 1, |a| math(a, f64::sqrt)),
    pure("power", 2, 2, |a| {
        float(real(arg(a, 0))?.powf(real(arg(a, 1))?))
    }),
    pure("exp", 1, 1, |a| math(a, f64::exp)),
    pure("log", 1, 1, |a| math(a, f64::ln)),
    pure("log10", 1, 1, |a| math(a, f64::log10)),
    pure("log2", 1, 1, |a| math(a, f64::log2)),
    pure("sin", 1, 1, |a| math(a, f64::sin)),
    pure("cos", 1, 1, |a| math(a, f64::cos)),
    pure("tan", 1, 1, |a| math(a, f64::tan)),
    pure("pi", 0, 0, |_| float(std::f64::consts::PI)),
    // arrays
    pure("nth", 2, 2, nth),
    pure("length", 1, 1, length),
    pure("first", 1, 1, |a| {
        Ok(array(arg(a, 0))?.first().cloned().unwrap_or(Value::Null))
    }),
    pure("last", 1, 1, |a| {
        Ok(array(arg(a, 0))?.last().cloned().unwrap_or(Value::Null))
    }),
    pure("contains", 2, 2, |a| {
        let x = arg(a, 0);
        Ok(array(arg(a, 1))?.iter().any(|e| values_equal(x, e)).into())
    }),
    // JSON and maps
    pure("json_decode", 1, 1, |a| {
        serde_json::from_str(text(arg(a, 0))?).map_err(|e| EvalError(format!("invalid JSON: {e}")))
    }),
    pure("json_encode", 1, 1, |a| {
        Ok(Value::String(arg(a, 0).to_string()))
    }),
    pure("map_get", 2, 3, map_get),
    pure("map_put", 3, 3, map_put),
    // encoding
    pure("base64_encode", 1, 1, |a| {
        let raw = to_text(arg(a, 0));
        Ok(STANDARD.encode(raw.as_bytes()).into())
    }),
    pure("base64_decode", 1, 1, |a| {
        let bytes = STANDARD
            .decode(text(arg(a, 0))?)
            .map_err(|e| EvalError(format!("invalid base64: {e}")))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned().into())
    }),
    // time
    clock("now_timestamp", 0, 1, now_timestamp),
    clock("now_rfc3339", 0, 1, |a| {
        let unit = unit(a.first(), Unit::Second)?;
        Ok(Utc::now()
            .to_rfc3339_opts(unit.seconds_format(), false)
            .into())
    }),
    pure("unix_ts_to_rfc3339", 1, 2, |a| {
        let unit = unit(a.get(1), Unit::Second)?;
        let dt = timestamp(int(arg(a, 0))?, unit)?;
        Ok(dt.to_rfc3339_opts(unit.seconds_format(), false).into())
    }),
    pure("format_date", 4, 4, format_date),
];

/// Case-insensitive lookup in the function table.
pub fn lookup(name: &str) -> Option<&'static Func> {
    FUNCS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// All function names (the tests check each has a case).
#[cfg(test)]
pub fn names() -> impl Iterator<Item = &'static str> {
    FUNCS.iter().map(|f| f.name)
}

static NULL: Value = Value::Null;

// Arity is checked at compile time; a missing argument reads as null rather
// than indexing out of bounds, so a table mistake cannot panic.
fn arg(args: &[Value], i: usize) -> &Value {
    args.get(i).unwrap_or(&NULL)
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn want(what: &str, got: &Value) -> EvalError {
    EvalError(format!("expected {what}, got {}", type_name(got)))
}

pub fn text(v: &Value) -> Result<&str, EvalError> {
    v.as_str().ok_or_else(|| want("a string", v))
}

fn array(v: &Value) -> Result<&Vec<Value>, EvalError> {
    v.as_array().ok_or_else(|| want("an array", v))
}

fn real(v: &Value) -> Result<f64, EvalError> {
    num(v).map(Num::f).ok_or_else(|| want("a number", v))
}

/// Integers, and floats with an integral value (JSON encoders disagree on `2` vs `2.0`).
fn int(v: &Value) -> Result<i64, EvalError> {
    match num(v) {
        Some(Num::I(i)) => Ok(i),
        Some(Num::F(f)) if f.fract() == 0.0 => f_to_i(f).ok_or_else(|| want("an integer", v)),
        _ => Err(want("an integer", v)),
    }
}

fn f_to_i(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; anything in [-2^63, 2^63) fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// The `str()` conversion, also used by `+` on strings and by `concat`.
/// Null becomes the empty string so concatenating a missing field is harmless.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn map_text(a: &[Value], f: fn(&str) -> String) -> Result<Value, EvalError> {
    Ok(f(text(arg(a, 0))?).into())
}

fn math(a: &[Value], f: fn(f64) -> f64) -> Result<Value, EvalError> {
    float(f(real(arg(a, 0))?))
}

fn round_with(a: &[Value], f: fn(f64) -> f64) -> Result<Value, EvalError> {
    match num(arg(a, 0)) {
        Some(Num::I(i)) => Ok(i.into()),
        Some(Num::F(x)) => {
            let r = f(x);
            f_to_i(r).map_or_else(|| float(r), |i| Ok(i.into()))
        }
        None => Err(want("a number", arg(a, 0))),
    }
}

fn abs(a: &[Value]) -> Result<Value, EvalError> {
    match num(arg(a, 0)) {
        Some(Num::I(i)) => i
            .checked_abs()
            .map_or_else(|| float((i as f64).abs()), |v| Ok(v.into())),
        Some(Num::F(f)) => float(f.abs()),
        None => Err(want("a number", arg(a, 0))),
    }
}

fn non_negative(v: &Value, what: &str) -> Result<usize, EvalError> {
    usize::try_from(int(v)?).map_err(|_| EvalError(format!("{what} must not be negative")))
}

/// `substr(s, start[, len])`, 0-based and counted in characters as in EMQX.
fn substr(a: &[Value]) -> Result<Value, EvalError> {
    let s = text(arg(a, 0))?;
    let start = non_negative(arg(a, 1), "start")?;
    let len = match a.get(2) {
        Some(v) => non_negative(v, "length")?,
        None => usize::MAX,
    };
    Ok(s.chars().skip(start).take(len).collect::<String>().into())
}

fn replace(a: &[Value]) -> Result<Value, EvalError> {
    let (s, from, to) = (text(arg(a, 0))?, text(arg(a, 1))?, text(arg(a, 2))?);
    // str::replace with an empty needle inserts between every char; nothing
    // to replace is the useful reading.
    Ok(if from.is_empty() {
        s.to_owned()
    } else {
        s.replace(from, to)
    }
    .into())
}

fn parts<'s>(it: impl Iterator<Item = &'s str>) -> Value {
    it.filter(|p| !p.is_empty())
        .map(|p| Value::from(p.to_owned()))
        .collect()
}

/// `split(s, sep)` drops empty parts: `split('/a//b/', '/')` is `["a","b"]`.
fn split(a: &[Value]) -> Result<Value, EvalError> {
    let (s, sep) = (text(arg(a, 0))?, text(arg(a, 1))?);
    if sep.is_empty() {
        return Err(EvalError::new("separator must not be empty"));
    }
    Ok(parts(s.split(sep)))
}

/// `tokens(s, seps)`: split at any of the characters in `seps`.
fn tokens(a: &[Value]) -> Result<Value, EvalError> {
    let (s, seps) = (text(arg(a, 0))?, text(arg(a, 1))?);
    Ok(parts(s.split(|c| seps.contains(c))))
}

/// `find(s, sub)`: the rest of `s` from the first match, or "".
fn find(a: &[Value]) -> Result<Value, EvalError> {
    let (s, sub) = (text(arg(a, 0))?, text(arg(a, 1))?);
    Ok(s.find(sub)
        .and_then(|i| s.get(i..))
        .unwrap_or("")
        .to_owned()
        .into())
}

fn regex_match(a: &[Value]) -> Result<Value, EvalError> {
    let s = text(arg(a, 0))?;
    let re = Regex::new(text(arg(a, 1))?).map_err(|e| EvalError(format!("invalid regex: {e}")))?;
    Ok(re.is_match(s).into())
}

fn to_int(a: &[Value]) -> Result<Value, EvalError> {
    let v = arg(a, 0);
    let n = match v {
        Value::Bool(b) => Some(Num::I(i64::from(*b))),
        Value::String(s) => num_text(s.trim()),
        other => num(other),
    };
    // Floats truncate toward zero.
    match n {
        Some(Num::I(i)) => Ok(i.into()),
        Some(Num::F(f)) => f_to_i(f.trunc())
            .map(Value::from)
            .ok_or_else(|| EvalError::new("out of integer range")),
        None => Err(EvalError(format!("cannot convert {} to int", type_name(v)))),
    }
}

fn to_float(a: &[Value]) -> Result<Value, EvalError> {
    let v = arg(a, 0);
    let n = match v {
        Value::String(s) => num_text(s.trim()),
        other => num(other),
    };
    match n {
        Some(n) => float(n.f()),
        None => Err(EvalError(format!(
            "cannot convert {} to float",
            type_name(v)
        ))),
    }
}

fn to_bool(a: &[Value]) -> Result<Value, EvalError> {
    let v = arg(a, 0);
    match v {
        Value::Bool(b) => Ok((*b).into()),
        Value::String(s) if s == "true" => Ok(true.into()),
        Value::String(s) if s == "false" => Ok(false.into()),
        Value::Number(_) if compare(v, &0.into()).is_some_and(|o| o.is_eq()) => Ok(false.into()),
        Value::Number(_) if compare(v, &1.into()).is_some_and(|o| o.is_eq()) => Ok(true.into()),
        other => Err(EvalError(format!("cannot convert {other} to bool"))),
    }
}

/// `nth(n, array)`, 1-based; out of range is null.
fn nth(a: &[Value]) -> Result<Value, EvalError> {
    let n = int(arg(a, 0))?;
    let items = array(arg(a, 1))?;
    let pos = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
    Ok(pos
        .and_then(|p| items.get(p))
        .cloned()
        .unwrap_or(Value::Null))
}

fn length(a: &[Value]) -> Result<Value, EvalError> {
    match arg(a, 0) {
        Value::Array(items) => Ok(items.len().into()),
        Value::Object(m) => Ok(m.len().into()),
        other => Err(want("an array or object", other)),
    }
}

fn map_get(a: &[Value]) -> Result<Value, EvalError> {
    let key = text(arg(a, 0))?;
    let default = a.get(2).cloned().unwrap_or(Value::Null);
    match arg(a, 1) {
        Value::Object(m) => Ok(m.get(key).cloned().unwrap_or(default)),
        Value::Null => Ok(default),
        other => Err(want("an object", other)),
    }
}

fn map_put(a: &[Value]) -> Result<Value, EvalError> {
    let key = text(arg(a, 0))?;
    let mut map = match arg(a, 2) {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => return Err(want("an object", other)),
    };
    map.insert(key.to_owned(), arg(a, 1).clone());
    Ok(Value::Object(map))
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Second,
    Milli,
    Micro,
    Nano,
}

impl Unit {
    fn seconds_format(self) -> SecondsFormat {
        match self {
            Unit::Second => SecondsFormat::Secs,
            Unit::Milli => SecondsFormat::Millis,
            Unit::Micro => SecondsFormat::Micros,
            Unit::Nano => SecondsFormat::Nanos,
        }
    }
}

fn unit(v: Option<&Value>, default: Unit) -> Result<Unit, EvalError> {
    let Some(v) = v else { return Ok(default) };
    match text(v)? {
        "second" => Ok(Unit::Second),
        "millisecond" => Ok(Unit::Milli),
        "microsecond" => Ok(Unit::Micro),
        "nanosecond" => Ok(Unit::Nano),
        other => Err(EvalError(format!(
            "unknown time unit '{other}' (expected second, millisecond, microsecond or nanosecond)"
        ))),
    }
}

fn now_timestamp(a: &[Value]) -> Result<Value, EvalError> {
    let now = Utc::now();
    Ok(match unit(a.first(), Unit::Milli)? {
        Unit::Second => now.timestamp(),
        Unit::Milli => now.timestamp_millis(),
        Unit::Micro => now.timestamp_micros(),
        Unit::Nano => now
            .timestamp_nanos_opt()
            .ok_or_else(|| EvalError::new("time out of range"))?,
    }
    .into())
}

fn timestamp(ts: i64, unit: Unit) -> Result<DateTime<Utc>, EvalError> {
    let per_sec: i64 = match unit {
        Unit::Second => 1,
        Unit::Milli => 1_000,
        Unit::Micro => 1_000_000,
        Unit::Nano => 1_000_000_000,
    };
    let nanos = ts.rem_euclid(per_sec) * (1_000_000_000 / per_sec);
    u32::try_from(nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(ts.div_euclid(per_sec), n))
        .ok_or_else(|| EvalError(format!("timestamp {ts} out of range")))
}

/// `'Z'`, `'+08:00'`, `'-0530'`, `'+08'`, or a number of seconds east of UTC.
fn offset(v: &Value) -> Result<FixedOffset, EvalError> {
    let bad = || EvalError(format!("invalid UTC offset {v}"));
    let secs = match v {
        Value::Number(_) => int(v)?,
        Value::String(s) if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") => 0,
        Value::String(s) => {
            let (sign, rest) = match (s.strip_prefix('+'), s.strip_prefix('-')) {
                (Some(r), _) => (1, r),
                (_, Some(r)) => (-1, r),
                _ => return Err(bad()),
            };
            let digits: String = rest.chars().filter(|c| *c != ':').collect();
            if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
                return Err(bad());
            }
            let hours: i64 = digits
                .get(..2)
                .and_then(|h| h.parse().ok())
                .ok_or_else(bad)?;
            let mins: i64 = digits
                .get(2..)
                .filter(|m| !m.is_empty())
                .map_or(Ok(0), |m| m.parse().map_err(|_| bad()))?;
            sign * (hours * 3600 + mins * 60)
        }
        _ => return Err(bad()),
    };
    i32::try_from(secs)
        .ok()
        .and_then(FixedOffset::east_opt)
        .ok_or_else(bad)
}

/// `format_date(unit, offset, format, ts)` with a strftime format.
fn format_date(a: &[Value]) -> Result<Value, EvalError> {
    let unit = unit(Some(arg(a, 0)), Unit::Second)?;
    let offset = offset(arg(a, 1))?;
    let fmt = text(arg(a, 2))?;
    let dt = timestamp(int(arg(a, 3))?, unit)?.with_timezone(&offset);
    // chrono's Display panics via to_string() on a bad specifier; parse the
    // format first and write into a String so every failure is an error.
    let items = StrftimeItems::new(fmt)
        .parse()
        .map_err(|_| EvalError(format!("invalid date format '{fmt}'")))?;
    let mut out = String::new();
    write!(out, "{}", dt.format_with_items(items.iter()))
        .map_err(|_| EvalError(format!("cannot format date with '{fmt}'")))?;
    Ok(out.into())
}
