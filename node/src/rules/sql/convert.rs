//! Translation of sqlparser expressions into `eval::Expr`.
//!
//! Owns the name checks (fields, SELECT aliases, functions and their
//! arities), compile-time handling of literal patterns (LIKE, regex, topic
//! filters) and constant folding, each error carrying the position of the
//! offending expression. Private to `sql` so sqlparser stays inside it.

use serde_json::Value;
use sqlparser::ast::{
    self as ast, BinaryOperator as B, CeilFloorKind, DateTimeField, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectNamePart, SelectItem, UnaryOperator,
};
use sqlparser::tokenizer::Location;

use super::super::eval::{self, BinOp, Expr, LikePattern, LikeSource, Path, Projection};
use super::super::eval::{Root, Step, Target};
use super::super::funcs::{self, MANY};
use super::{MAX_DEPTH, SqlError, TOPIC_MATCH, fail};
use crate::routing::topic::validate_filter;

/// Where an expression starts. sqlparser's `Spanned` recurses through the
/// whole subtree, and a long operator chain (`1+1+...`, built iteratively by
/// the parser) overflows the stack; walking the leftmost operand in a loop
/// finds the same start without recursion.
fn start(mut e: &ast::Expr) -> Option<Location> {
    use ast::Expr as A;
    let loc = loop {
        e = match e {
            A::Identifier(id) => break id.span.start,
            A::CompoundIdentifier(ids) => break ids.first()?.span.start,
            A::Value(v) => break v.span.start,
            A::Case { case_token, .. } => break case_token.0.span.start,
            A::Function(f) => match f.name.0.first()? {
                ObjectNamePart::Identifier(id) => break id.span.start,
                ObjectNamePart::Function(_) => return None,
            },
            A::Array(arr) => arr.elem.first()?,
            A::BinaryOp { left: x, .. }
            | A::IsNull(x)
            | A::IsNotNull(x)
            | A::Like { expr: x, .. }
            | A::ILike { expr: x, .. }
            | A::In { expr: x, .. }
            | A::Between { expr: x, .. }
            | A::Nested(x)
            | A::UnaryOp { expr: x, .. }
            | A::CompoundFieldAccess { root: x, .. }
            | A::Cast { expr: x, .. }
            | A::Trim { expr: x, .. }
            | A::Substring { expr: x, .. }
            | A::Ceil { expr: x, .. }
            | A::Floor { expr: x, .. } => x,
            _ => return None,
        };
    };
    (loc.line != 0).then_some(loc)
}

/// Output key of an unaliased SELECT item.
fn target(e: &ast::Expr) -> Target {
    match e {
        ast::Expr::Identifier(id) => Target::Key(id.value.clone()),
        ast::Expr::CompoundIdentifier(ids) => {
            Target::Nested(ids.iter().map(|i| i.value.clone()).collect())
        }
        other => Target::Key(other.to_string()),
    }
}

fn number(text: &str, at: Location) -> Result<Value, SqlError> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i.into());
    }
    let float = text
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64);
    float
        .map(Value::Number)
        .ok_or_else(|| SqlError::at(format!("invalid number {text}"), at))
}

/// Replaces a constant node by its value; a constant that fails to evaluate
/// would fail for every message, so it is a compile error.
fn fold(node: Expr, at: Location) -> Result<Expr, SqlError> {
    if !node.is_constant() {
        return Ok(node);
    }
    eval::eval_constant(&node)
        .map(Expr::Lit)
        .map_err(|err| SqlError::at(err.0, at))
}

/// Translates sqlparser expressions into `eval::Expr`, checking names.
pub(super) struct Converter {
    pub(super) fields: Vec<&'static str>,
    /// SELECT aliases, visible in WHERE ahead of context fields (as in EMQX).
    pub(super) aliases: Vec<String>,
    pub(super) in_where: bool,
    pub(super) reads_alias: bool,
    pub(super) depth: usize,
    /// Start of the innermost enclosing expression with a known location;
    /// stands in for nodes that `start` cannot place.
    pub(super) hint: Location,
    /// Context fields read so far.
    pub(super) read: Vec<&'static str>,
}

impl Converter {
    pub(super) fn projection(&mut self, item: &SelectItem) -> Result<Projection, SqlError> {
        Ok(match item {
            SelectItem::Wildcard(opts) if opts.to_string().is_empty() => Projection::All,
            SelectItem::UnnamedExpr(e) => Projection::Item(self.expr(e)?, target(e)),
            SelectItem::ExprWithAlias { expr, alias } => {
                let value = self.expr(expr)?;
                self.aliases.push(alias.value.clone());
                Projection::Item(value, Target::Key(alias.value.clone()))
            }
            other => return fail(format!("unsupported SELECT item '{other}'"), self.hint),
        })
    }

    fn boxed(&mut self, e: &ast::Expr) -> Result<Box<Expr>, SqlError> {
        self.expr(e).map(Box::new)
    }

    fn exprs(&mut self, es: &[ast::Expr]) -> Result<Vec<Expr>, SqlError> {
        es.iter().map(|e| self.expr(e)).collect()
    }

    fn loc(&self, e: &ast::Expr) -> Location {
        start(e).unwrap_or(self.hint)
    }

    pub(super) fn expr(&mut self, e: &ast::Expr) -> Result<Expr, SqlError> {
        let outer = self.hint;
        self.hint = self.loc(e);
        if self.depth >= MAX_DEPTH {
            return fail("expression nested too deeply", self.hint);
        }
        self.depth += 1;
        let result = self.convert(e, self.hint);
        self.depth -= 1;
        self.hint = outer;
        result
    }

    fn convert(&mut self, e: &ast::Expr, at: Location) -> Result<Expr, SqlError> {
        use ast::Expr as A;
        let node = match e {
            A::Identifier(id) => return self.path(id, Vec::new()),
            A::CompoundIdentifier(ids) => match ids.split_first() {
                Some((root, rest)) => {
                    return self.path(
                        root,
                        rest.iter().map(|i| Step::Key(i.value.clone())).collect(),
                    );
                }
                None => return fail("empty identifier", at),
            },
            A::CompoundFieldAccess { root, access_chain } => {
                return self.access(root, access_chain);
            }
            A::Nested(inner) => return self.expr(inner),
            A::Value(v) => Expr::Lit(literal(&v.value, at)?),
            A::Array(arr) => Expr::Array(self.exprs(&arr.elem)?),
            A::UnaryOp { op, expr } => match (op, &**expr) {
                // `-9223372036854775808` must stay an integer, so negate the text.
                (UnaryOperator::Minus, A::Value(v))
                    if matches!(v.value, ast::Value::Number(..)) =>
                {
                    Expr::Lit(number(&format!("-{}", v.value), at)?)
                }
                (UnaryOperator::Minus, x) => Expr::Neg(self.boxed(x)?),
                (UnaryOperator::Plus, x) => return self.expr(x),
                (UnaryOperator::Not, x) => Expr::Not(self.boxed(x)?),
                (other, _) => return fail(format!("operator '{other}' is not supported"), at),
            },
            A::BinaryOp { left, op, right } => self.binary(left, op, right, at)?,
            A::IsNull(x) => Expr::IsNull(self.boxed(x)?, false),
            A::IsNotNull(x) => Expr::IsNull(self.boxed(x)?, true),
            A::In {
                expr,
                target: ast::InTarget::List(list),
                negated,
                global: false,
            } => Expr::In(self.boxed(expr)?, self.exprs(list)?, *negated),
            A::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            } => self.like(expr, pattern, escape_char.as_deref(), *negated)?,
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let operand = operand.as_deref().map(|o| self.boxed(o)).transpose()?;
                let mut whens = Vec::new();
                for w in conditions {
                    whens.push((self.expr(&w.condition)?, self.expr(&w.result)?));
                }
                let otherwise = else_result.as_deref().map(|x| self.boxed(x)).transpose()?;
                Expr::Case(operand, whens, otherwise)
            }
            A::Function(f) => return self.function(f, at),
            // sqlparser gives these SQL-standard spellings their own nodes.
            A::Trim {
                expr,
                trim_where: None,
                trim_what: None,
                trim_characters: None,
            } => {
                let args = vec![self.expr(expr)?];
                return self.call("trim", at, args);
            }
            A::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.expr(expr)?];
                for x in [substring_from, substring_for].into_iter().flatten() {
                    args.push(self.expr(x)?);
                }
                return self.call("substr", at, args);
            }
            A::Ceil { expr, field } | A::Floor { expr, field }
                if matches!(
                    field,
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)
                ) =>
            {
                let name = if matches!(e, A::Ceil { .. }) {
                    "ceil"
                } else {
                    "floor"
                };
                let args = vec![self.expr(expr)?];
                return self.call(name, at, args);
            }
            A::In { .. } | A::Subquery(_) | A::Exists { .. } => {
                return fail("subqueries are not supported in rule SQL", at);
            }
            other => return fail(format!("unsupported expression '{other}'"), at),
        };
        fold(node, at)
    }

    fn path(&mut self, root: &Ident, steps: Vec<Step>) -> Result<Expr, SqlError> {
        let name = root.value.as_str();
        let root = if self.in_where && self.aliases.iter().any(|a| a == name) {
            self.reads_alias = true;
            Root::Alias(name.to_owned())
        } else if let Some(known) = self.fields.iter().find(|f| **f == name) {
            if !self.read.contains(known) {
                self.read.push(known);
            }
            Root::Field(name.to_owned())
        } else {
            return fail(format!("unknown field '{name}'"), root.span.start);
        };
        Ok(Expr::Path(Path { root, steps }))
    }

    fn access(&mut self, root: &ast::Expr, chain: &[ast::AccessExpr]) -> Result<Expr, SqlError> {
        let at = self.loc(root);
        let Expr::Path(mut path) = self.expr(root)? else {
            return fail("only fields can be indexed", at);
        };
        for access in chain {
            path.steps.push(match access {
                ast::AccessExpr::Dot(ast::Expr::Identifier(id)) => Step::Key(id.value.clone()),
                ast::AccessExpr::Subscript(ast::Subscript::Index { index }) => {
                    Step::Index(self.expr(index)?)
                }
                other => return fail(format!("unsupported field access '{other}'"), at),
            });
        }
        Ok(Expr::Path(path))
    }

    fn binary(
        &mut self,
        left: &ast::Expr,
        op: &B,
        right: &ast::Expr,
        at: Location,
    ) -> Result<Expr, SqlError> {
        let bin = match op {
            B::Plus => BinOp::Add,
            B::Minus => BinOp::Sub,
            B::Multiply => BinOp::Mul,
            B::Divide => BinOp::Div,
            B::MyIntegerDivide => BinOp::IntDiv,
            B::Modulo => BinOp::Mod,
            B::Eq => BinOp::Eq,
            B::NotEq => BinOp::NotEq,
            B::Lt => BinOp::Lt,
            B::LtEq => BinOp::LtEq,
            B::Gt => BinOp::Gt,
            B::GtEq => BinOp::GtEq,
            B::And => return Ok(Expr::And(self.boxed(left)?, self.boxed(right)?)),
            B::Or => return Ok(Expr::Or(self.boxed(left)?, self.boxed(right)?)),
            B::Custom(s) if s == TOPIC_MATCH => {
                let (topic, filter, at) = (self.boxed(left)?, self.boxed(right)?, self.loc(right));
                match &*filter {
                    Expr::Lit(Value::String(f)) => validate_filter(f).map_err(|e| {
                        SqlError::at(format!("invalid topic filter '{f}': {e}"), at)
                    })?,
                    Expr::Lit(_) => return fail("=~ needs a topic filter string", at),
                    _ => {}
                }
                return Ok(Expr::TopicMatch(topic, filter));
            }
            other => return fail(format!("operator '{other}' is not supported"), at),
        };
        Ok(Expr::Bin(bin, self.boxed(left)?, self.boxed(right)?))
    }

    fn like(
        &mut self,
        expr: &ast::Expr,
        pattern: &ast::Expr,
        escape: Option<&ast::Expr>,
        negated: bool,
    ) -> Result<Expr, SqlError> {
        let subject = self.boxed(expr)?;
        let escape = match escape.map(|x| (self.loc(x), self.expr(x))) {
            None => None,
            Some((_, Ok(Expr::Lit(Value::String(s))))) if s.chars().count() == 1 => {
                s.chars().next()
            }
            Some((at, _)) => return fail("ESCAPE needs a one-character string", at),
        };
        let at = self.loc(pattern);
        let pattern = match self.expr(pattern)? {
            Expr::Lit(Value::String(p)) => LikeSource::Fixed(
                LikePattern::compile(&p, escape).map_err(|m| SqlError::at(m, at))?,
            ),
            Expr::Lit(_) => return fail("LIKE needs a string pattern", at),
            dynamic => LikeSource::Dynamic(Box::new(dynamic), escape),
        };
        Ok(Expr::Like(subject, pattern, negated))
    }

    fn function(&mut self, f: &ast::Function, at: Location) -> Result<Expr, SqlError> {
        let (name, at) = match f.name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => (id.value.as_str(), id.span.start),
            _ => return fail(format!("unknown function '{}'", f.name), at),
        };
        if funcs::lookup(name).is_none() {
            return fail(format!("unknown function '{name}'"), at);
        }
        let plain = f.filter.is_none()
            && f.over.is_none()
            && f.within_group.is_empty()
            && f.null_treatment.is_none()
            && matches!(f.parameters, FunctionArguments::None);
        let list = match &f.args {
            FunctionArguments::List(l)
                if plain && l.duplicate_treatment.is_none() && l.clauses.is_empty() =>
            {
                &l.args
            }
            FunctionArguments::None => {
                return fail(format!("function '{name}' needs parentheses"), at);
            }
            _ => return fail(format!("unsupported syntax in call to '{name}'"), at),
        };
        let mut args = Vec::with_capacity(list.len());
        for a in list {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => args.push(self.expr(x)?),
                other => return fail(format!("unsupported argument '{other}' to '{name}'"), at),
            }
        }
        self.call(name, at, args)
    }

    fn call(&mut self, name: &str, at: Location, mut args: Vec<Expr>) -> Result<Expr, SqlError> {
        let Some(func) = funcs::lookup(name) else {
            return fail(format!("unknown function '{name}'"), at);
        };
        let n = args.len();
        if n < func.min || n > func.max {
            let want = match (func.min, func.max) {
                (min, MANY) => format!("at least {min}"),
                (min, max) if min == max => min.to_string(),
                (min, max) => format!("{min} to {max}"),
            };
            return fail(
                format!("function '{}' takes {want} argument(s), got {n}", func.name),
                at,
            );
        }
        // A literal pattern is compiled once here instead of on every message.
        if func.name == "regex_match"
            && !matches!(args.first(), Some(Expr::Lit(_)))
            && let Some(Expr::Lit(Value::String(p))) = args.get(1)
        {
            let re = regex::Regex::new(p)
                .map_err(|e| SqlError::at(format!("invalid regex: {e}"), at))?;
            let subject = args.swap_remove(0);
            return Ok(Expr::RegexMatch(Box::new(subject), Box::new(re)));
        }
        fold(Expr::Call(func, args), at)
    }
}

fn literal(v: &ast::Value, at: Location) -> Result<Value, SqlError> {
    match v {
        ast::Value::Number(text, _) => number(text, at),
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            Ok(s.clone().into())
        }
        ast::Value::Boolean(b) => Ok((*b).into()),
        ast::Value::Null => Ok(Value::Null),
        other => fail(format!("unsupported literal {other}"), at),
    }
}
