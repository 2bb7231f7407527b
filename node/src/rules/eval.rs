//! Evaluation of compiled rule SQL.
//!
//! Owns the rule engine's own expression tree (built by `super::sql` from
//! sqlparser's AST), the per-message [`Context`] it is evaluated against, and
//! the value semantics shared by operators and built-in functions: number
//! handling, comparison, equality, truthiness and LIKE matching.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

use super::funcs::{self, Func};
use crate::routing::topic::{filter_matches, validate_filter};

/// A runtime failure: a type error, division by zero, a bad function argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl EvalError {
    pub fn new(msg: impl Into<String>) -> Self {
        EvalError(msg.into())
    }
}

/// The fields of one message or event, plus a cache of the decoded payload.
#[derive(Debug)]
pub struct Context {
    fields: Map<String, Value>,
    // Several paths (and several rules) usually read the same payload; decode
    // it at most once. `None` inside means "not JSON".
    payload: OnceCell<Option<Value>>,
}

impl Context {
    pub fn new(fields: Map<String, Value>) -> Context {
        Context {
            fields,
            payload: OnceCell::new(),
        }
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    fn payload_json(&self) -> Option<&Value> {
        self.payload
            .get_or_init(|| match self.fields.get("payload") {
                Some(Value::String(text)) => serde_json::from_str(text).ok(),
                _ => None,
            })
            .as_ref()
    }
}

#[derive(Debug)]
pub enum Expr {
    Lit(Value),
    Path(Path),
    Array(Vec<Expr>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `x IS [NOT] NULL`; the flag is NOT.
    IsNull(Box<Expr>, bool),
    /// `x [NOT] IN (list)`; the flag is NOT.
    In(Box<Expr>, Vec<Expr>, bool),
    /// `x [NOT] LIKE pattern`; the flag is NOT.
    Like(Box<Expr>, LikeSource, bool),
    /// `topic =~ filter`.
    TopicMatch(Box<Expr>, Box<Expr>),
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`.
    Case(Option<Box<Expr>>, Vec<(Expr, Expr)>, Option<Box<Expr>>),
    Call(&'static Func, Vec<Expr>),
    /// `regex_match(x, 'literal')`, with the regex compiled once.
    RegexMatch(Box<Expr>, Box<Regex>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    IntDiv,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BinOp::*;
        let s = match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            IntDiv => "div",
            Mod => "mod",
            Eq => "=",
            NotEq => "!=",
            Lt => "<",
            LtEq => "<=",
            Gt => ">",
            GtEq => ">=",
        };
        f.write_str(s)
    }
}

/// Where a path starts: a context field, or (in WHERE only) a SELECT alias.
#[derive(Debug)]
pub enum Root {
    Field(String),
    Alias(String),
}

#[derive(Debug)]
pub struct Path {
    pub root: Root,
    pub steps: Vec<Step>,
}

#[derive(Debug)]
pub enum Step {
    Key(String),
    /// `[i]`: 1-based array index (negative counts from the end), or an
    /// object key when the index is a string.
    Index(Expr),
}

#[derive(Debug)]
pub enum LikeSource {
    Fixed(LikePattern),
    Dynamic(Box<Expr>, Option<char>),
}

/// Where a SELECT item lands in the output.
#[derive(Debug)]
pub enum Target {
    Key(String),
    /// A bare `a.b.c` path is written as nested objects, as EMQX does.
    Nested(Vec<String>),
}

#[derive(Debug)]
pub enum Projection {
    All,
    Item(Expr, Target),
}

impl Expr {
    /// Whether this node can be evaluated once at compile time: its children
    /// are already folded literals and it reads neither fields nor the clock.
    pub fn is_constant(&self) -> bool {
        let lit = |e: &Expr| matches!(e, Expr::Lit(_));
        match self {
            Expr::Lit(_) | Expr::Path(_) => false,
            Expr::Array(items) => items.iter().all(lit),
            Expr::Neg(x) | Expr::Not(x) | Expr::IsNull(x, _) | Expr::RegexMatch(x, _) => lit(x),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Bin(_, a, b) | Expr::TopicMatch(a, b) => {
                lit(a) && lit(b)
            }
            Expr::In(x, list, _) => lit(x) && list.iter().all(lit),
            Expr::Like(x, pattern, _) => lit(x) && matches!(pattern, LikeSource::Fixed(_)),
            Expr::Case(operand, whens, otherwise) => {
                operand.as_deref().is_none_or(lit)
                    && whens.iter().all(|(c, r)| lit(c) && lit(r))
                    && otherwise.as_deref().is_none_or(lit)
            }
            Expr::Call(func, args) => func.pure && args.iter().all(lit),
        }
    }
}

/// What names resolve to during one evaluation.
struct Scope<'a> {
    ctx: &'a Context,
    /// The output built so far; WHERE reads SELECT aliases from it.
    out: Option<&'a Map<String, Value>>,
}

/// Evaluates an expression that [`Expr::is_constant`] accepted.
pub fn eval_constant(e: &Expr) -> Result<Value, EvalError> {
    let ctx = Context::new(Map::new());
    eval(
        e,
        &Scope {
            ctx: &ctx,
            out: None,
        },
    )
}

/// Runs a compiled query. When WHERE does not use aliases it runs first, so
/// messages that are filtered out never pay for the SELECT list.
pub fn run(
    projection: &[Projection],
    condition: Option<&Expr>,
    where_reads_aliases: bool,
    ctx: &Context,
) -> Result<Option<Map<String, Value>>, EvalError> {
    let holds = |scope: &Scope| condition.map_or(Ok(true), |c| Ok(truthy(&eval(c, scope)?)));
    let scope = Scope { ctx, out: None };
    if !where_reads_aliases && !holds(&scope)? {
        return Ok(None);
    }
    let mut out = Map::new();
    for item in projection {
        match item {
            Projection::All => out.extend(ctx.fields.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Projection::Item(expr, target) => {
                let v = eval(expr, &scope)?;
                put(&mut out, target, v);
            }
        }
    }
    if where_reads_aliases
        && !holds(&Scope {
            ctx,
            out: Some(&out),
        })?
    {
        return Ok(None);
    }
    Ok(Some(out))
}

fn put(out: &mut Map<String, Value>, target: &Target, v: Value) {
    let keys = match target {
        Target::Key(k) => {
            out.insert(k.clone(), v);
            return;
        }
        Target::Nested(keys) => keys,
    };
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut map = out;
    for key in parents {
        let slot = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        // A scalar already there (e.g. the raw payload from `*`) gives way to
        // the nested object, the same as a later column overwriting an earlier.
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        map = match slot {
            Value::Object(m) => m,
            _ => return,
        };
    }
    map.insert(last.clone(), v);
}

fn eval(e: &Expr, s: &Scope) -> Result<Value, EvalError> {
    let all = |items: &[Expr]| {
        items
            .iter()
            .map(|i| eval(i, s))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Path(p) => eval_path(p, s)?,
        Expr::Array(items) => Value::Array(all(items)?),
        Expr::Neg(x) => match &eval(x, s)? {
            v @ Value::Number(_) => arith(BinOp::Sub, &Value::from(0), v)?,
            other => return Err(type_error("unary -", other, None)),
        },
        Expr::Not(x) => Value::Bool(!truthy(&eval(x, s)?)),
        Expr::And(a, b) => Value::Bool(truthy(&eval(a, s)?) && truthy(&eval(b, s)?)),
        Expr::Or(a, b) => Value::Bool(truthy(&eval(a, s)?) || truthy(&eval(b, s)?)),
        Expr::Bin(op, a, b) => binary(*op, &eval(a, s)?, &eval(b, s)?)?,
        Expr::IsNull(x, negated) => Value::Bool(eval(x, s)?.is_null() != *negated),
        Expr::In(x, list, negated) => {
            let v = eval(x, s)?;
            let mut found = false;
            for item in list {
                found = values_equal(&v, &eval(item, s)?);
                if found {
                    break;
                }
            }
            Value::Bool(found != *negated)
        }
        Expr::Like(x, pattern, negated) => {
            // Non-strings neither match nor fail to match: LIKE and NOT LIKE
            // are both false, like comparisons between mismatched types.
            let Value::String(subject) = eval(x, s)? else {
                return Ok(Value::Bool(false));
            };
            let matched = match pattern {
                LikeSource::Fixed(p) => p.matches(&subject),
                LikeSource::Dynamic(p, escape) => match eval(p, s)? {
                    Value::String(p) => LikePattern::compile(&p, *escape)
                        .map_err(EvalError)?
                        .matches(&subject),
                    _ => return Ok(Value::Bool(false)),
                },
            };
            Value::Bool(matched != *negated)
        }
        Expr::TopicMatch(topic, filter) => Value::Bool(match (eval(topic, s)?, eval(filter, s)?) {
            (Value::String(t), Value::String(f)) => {
                validate_filter(&f).is_ok() && filter_matches(&f, &t)
            }
            _ => false,
        }),
        Expr::Case(operand, whens, otherwise) => {
            let subject = operand.as_deref().map(|o| eval(o, s)).transpose()?;
            for (cond, result) in whens {
                let c = eval(cond, s)?;
                let hit = subject
                    .as_ref()
                    .map_or_else(|| truthy(&c), |v| values_equal(v, &c));
                if hit {
                    return eval(result, s);
                }
            }
            otherwise
                .as_deref()
                .map_or(Ok(Value::Null), |x| eval(x, s))?
        }
        Expr::Call(func, args) => {
            (func.call)(&all(args)?).map_err(|e| EvalError(format!("{}: {}", func.name, e.0)))?
        }
        Expr::RegexMatch(x, re) => {
            let v = eval(x, s)?;
            let text = funcs::text(&v).map_err(|e| EvalError(format!("regex_match: {}", e.0)))?;
            Value::Bool(re.is_match(text))
        }
    })
}

fn eval_path(p: &Path, s: &Scope) -> Result<Value, EvalError> {
    let base = match &p.root {
        Root::Field(name) => s.ctx.fields.get(name),
        Root::Alias(name) => s.out.and_then(|o| o.get(name)),
    };
    let Some(base) = base else {
        return Ok(Value::Null);
    };
    if p.steps.is_empty() {
        return Ok(base.clone());
    }
    // Reading into a string means reading into the JSON it holds.
    let decoded: Option<Value>;
    let mut cur = match base {
        Value::String(_) if matches!(&p.root, Root::Field(n) if n == "payload") => {
            match s.ctx.payload_json() {
                Some(v) => v,
                None => return Ok(Value::Null),
            }
        }
        Value::String(text) => {
            decoded = serde_json::from_str(text).ok();
            match &decoded {
                Some(v) => v,
                None => return Ok(Value::Null),
            }
        }
        other => other,
    };
    for step in &p.steps {
        let next = match step {
            Step::Key(k) => cur.as_object().and_then(|m| m.get(k)),
            Step::Index(ix) => index(cur, &eval(ix, s)?),
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(Value::Null),
        }
    }
    Ok(cur.clone())
}

fn index<'v>(container: &'v Value, ix: &Value) -> Option<&'v Value> {
    match (container, ix) {
        (Value::Object(m), Value::String(k)) => m.get(k),
        (Value::Array(items), Value::Number(n)) => {
            let i = n.as_i64()?;
            let pos = if i > 0 {
                usize::try_from(i - 1).ok()?
            } else {
                items
                    .len()
                    .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
            };
            // `i == 0` lands on len(): out of range, as in EMQX.
            if i == 0 { None } else { items.get(pos) }
        }
        _ => None,
    }
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    use BinOp::*;
    Ok(match op {
        Eq => Value::Bool(values_equal(l, r)),
        NotEq => Value::Bool(!values_equal(l, r)),
        Lt | LtEq | Gt | GtEq => Value::Bool(compare(l, r).is_some_and(|o| match op {
            Lt => o.is_lt(),
            LtEq => o.is_le(),
            Gt => o.is_gt(),
            _ => o.is_ge(),
        })),
        Add if l.is_string() || r.is_string() => {
            Value::String(funcs::to_text(l) + &funcs::to_text(r))
        }
        _ => arith(op, l, r)?,
    })
}

/// A JSON number split into the two kinds arithmetic treats differently.
#[derive(Debug, Clone, Copy)]
pub enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

pub fn num(v: &Value) -> Option<Num> {
    let Value::Number(n) = v else { return None };
    n.as_i64().map(Num::I).or_else(|| n.as_f64().map(Num::F))
}

/// A string that reads as a number, for EMQX-style `'10' > 9` comparisons.
pub fn num_text(s: &str) -> Option<Num> {
    s.parse::<i64>()
        .ok()
        .map(Num::I)
        .or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(Num::F))
}

/// JSON cannot hold NaN or infinities, so such results are errors.
pub fn float(x: f64) -> Result<Value, EvalError> {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| EvalError::new("result is not a finite number"))
}

fn arith(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    use BinOp::*;
    let (Some(a), Some(b)) = (num(l), num(r)) else {
        return Err(type_error(&op.to_string(), l, Some(r)));
    };
    match (op, a, b) {
        (Div | IntDiv | Mod, _, _) if b.f() == 0.0 => Err(EvalError::new("division by zero")),
        (Div, _, _) => float(a.f() / b.f()),
        (IntDiv, Num::I(x), Num::I(y)) => x.checked_div(y).map(Value::from).ok_or_else(overflow),
        (Mod, Num::I(x), Num::I(y)) => x.checked_rem(y).map(Value::from).ok_or_else(overflow),
        (IntDiv | Mod, _, _) => Err(EvalError(format!("'{op}' needs integer operands"))),
        // Integer overflow degrades to float rather than failing the rule.
        (Add, Num::I(x), Num::I(y)) => x
            .checked_add(y)
            .map_or_else(|| float(a.f() + b.f()), |v| Ok(v.into())),
        (Sub, Num::I(x), Num::I(y)) => x
            .checked_sub(y)
            .map_or_else(|| float(a.f() - b.f()), |v| Ok(v.into())),
        (Mul, Num::I(x), Num::I(y)) => x
            .checked_mul(y)
            .map_or_else(|| float(a.f() * b.f()), |v| Ok(v.into())),
        (Add, _, _) => float(a.f() + b.f()),
        (Sub, _, _) => float(a.f() - b.f()),
        (Mul, _, _) => float(a.f() * b.f()),
        _ => Err(EvalError(format!("'{op}' is not arithmetic"))),
    }
}

fn overflow() -> EvalError {
    EvalError::new("integer overflow")
}

fn type_error(op: &str, l: &Value, r: Option<&Value>) -> EvalError {
    match r {
        Some(r) => EvalError(format!(
            "cannot apply '{op}' to {} and {}",
            funcs::type_name(l),
            funcs::type_name(r)
        )),
        None => EvalError(format!("cannot apply '{op}' to {}", funcs::type_name(l))),
    }
}

/// Ordering for `<`-style operators. `None` (mismatched types) makes every
/// ordering comparison false instead of failing the rule.
pub fn compare(l: &Value, r: &Value) -> Option<Ordering> {
    let nums = match (l, r) {
        (Value::String(a), Value::String(b)) => return Some(a.cmp(b)),
        (Value::Number(_), Value::Number(_)) => (num(l)?, num(r)?),
        (Value::Number(_), Value::String(b)) => (num(l)?, num_text(b)?),
        (Value::String(a), Value::Number(_)) => (num_text(a)?, num(r)?),
        _ => return None,
    };
    match nums {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (x, y) => x.f().partial_cmp(&y.f()),
    }
}

/// `=`: numeric across int/float and numeric strings, structural otherwise.
pub fn values_equal(l: &Value, r: &Value) -> bool {
    match compare(l, r) {
        Some(o) => o.is_eq(),
        None => l == r,
    }
}

/// Only `true` is true; null and every other value count as false.
pub fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// A compiled LIKE pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct LikePattern(Vec<LikeTok>);

#[derive(Debug, Clone, PartialEq)]
enum LikeTok {
    Any,
    One,
    Char(char),
}

impl LikePattern {
    pub fn compile(pattern: &str, escape: Option<char>) -> Result<LikePattern, String> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let tok = if Some(c) == escape {
                match chars.next() {
                    Some(next) => LikeTok::Char(next),
                    None => return Err("LIKE pattern ends with its escape character".into()),
                }
            } else if c == '%' {
                // Runs of % match the same as one and would only add backtracking.
                if toks.last() == Some(&LikeTok::Any) {
                    continue;
                }
                LikeTok::Any
            } else if c == '_' {
                LikeTok::One
            } else {
                LikeTok::Char(c)
            };
            toks.push(tok);
        }
        Ok(LikePattern(toks))
    }

    /// Iterative wildcard match that backtracks only to the last `%`, so a
    /// hostile pattern costs O(pattern × text) at worst, never exponential.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let pat = &self.0;
        let (mut t, mut p) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while let Some(&c) = text.get(t) {
            match pat.get(p) {
                Some(LikeTok::Any) => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                Some(LikeTok::One) => {
                    t += 1;
                    p += 1;
                    continue;
                }
                Some(LikeTok::Char(pc)) if *pc == c => {
                    t += 1;
                    p += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            }
        }
        pat.get(p..)
            .unwrap_or(&[])
            .iter()
            .all(|tok| *tok == LikeTok::Any)
    }
}
