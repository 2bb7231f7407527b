//! Rule SQL front end: sources, parsing and checking.
//!
//! Owns everything that touches sqlparser: the token pass that turns `=~`
//! into one operator, the dialect, the restriction to a plain
//! `SELECT ... FROM ... [WHERE ...]`, and the translation of sqlparser's AST
//! into `super::eval`'s expression tree (in the private `convert` child).
//! Every check that can be made before a message arrives is made here, with
//! the line and column of the culprit: unknown fields and functions,
//! arities, topic filters, literal patterns, and constant sub-expressions
//! that could only fail.

use std::any::TypeId;
use std::fmt;

use serde_json::{Map, Value};
use sqlparser::ast::{
    self as ast, BinaryOperator as B, GroupByExpr, ObjectNamePart, SelectFlavor, SetExpr,
    Statement, TableFactor,
};
use sqlparser::dialect::{Dialect, GenericDialect, Precedence};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use super::eval::{self, Context, EvalError, Expr, Projection};
use crate::routing::topic::{filter_matches, validate_filter};
use convert::Converter;

mod convert;

/// Where a rule takes its input from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Published messages whose topic matches this MQTT filter.
    Messages(String),
    Event(Event),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    ClientConnected,
    ClientDisconnected,
    SessionSubscribed,
    MessageDelivered,
    MessageDropped,
    DeviceStatus,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::ClientConnected,
        Event::ClientDisconnected,
        Event::SessionSubscribed,
        Event::MessageDelivered,
        Event::MessageDropped,
        Event::DeviceStatus,
    ];

    pub fn topic(self) -> &'static str {
        match self {
            Event::ClientConnected => "$events/client_connected",
            Event::ClientDisconnected => "$events/client_disconnected",
            Event::SessionSubscribed => "$events/session_subscribed",
            Event::MessageDelivered => "$events/message_delivered",
            Event::MessageDropped => "$events/message_dropped",
            Event::DeviceStatus => "$events/device_status",
        }
    }

    pub fn from_topic(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.topic() == s)
    }

    #[rustfmt::skip]
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Event::ClientConnected => &["clientid", "username", "peerhost", "proto_ver", "keepalive",
                "clean_start", "connected_at", "timestamp", "node", "product_key", "device_name"],
            Event::ClientDisconnected => &["clientid", "username", "peerhost", "reason",
                "disconnected_at", "timestamp", "node", "product_key", "device_name"],
            Event::SessionSubscribed => &["clientid", "username", "peerhost", "topic", "qos",
                "timestamp", "node"],
            Event::MessageDelivered => &["id", "from_clientid", "from_username", "clientid",
                "username", "topic", "qos", "retain", "payload", "peerhost", "timestamp", "node",
                "pub_props"],
            Event::MessageDropped => &["id", "reason", "clientid", "username", "topic", "qos",
                "retain", "payload", "peerhost", "timestamp", "node", "pub_props"],
            Event::DeviceStatus => &["clientid", "username", "product_key", "device_name", "status",
                "peerhost", "timestamp", "node"],
        }
    }
}

/// Fields of a published message (a topic-filter source).
#[rustfmt::skip]
pub const MESSAGE_FIELDS: &[&str] = &["id", "clientid", "username", "topic", "qos", "retain",
    "payload", "peerhost", "timestamp", "node", "product_key", "device_name", "pub_props"];

/// A compile error. `line`/`column` are 1-based; 0/0 means unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
}

impl SqlError {
    fn at(message: impl Into<String>, loc: Location) -> SqlError {
        let (line, column) = (loc.line, loc.column);
        SqlError {
            message: message.into(),
            line,
            column,
        }
    }
}

fn fail<T>(message: impl Into<String>, loc: Location) -> Result<T, SqlError> {
    Err(SqlError::at(message, loc))
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if self.line != 0 {
            write!(f, " at line {}, column {}", self.line, self.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

/// A compiled rule. Immutable and `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Query {
    pub from: Vec<Source>,
    projection: Vec<Projection>,
    selection: Option<Expr>,
    where_reads_aliases: bool,
    /// The context fields the rule reads (all of them with `*`): fields that cost a lookup
    /// are only filled in for rules that read them.
    read: Vec<&'static str>,
    reads_all: bool,
}

impl Query {
    /// Ok(None): the WHERE clause was not true. Ok(Some(map)): the selected output.
    pub fn select(&self, ctx: &Context) -> Result<Option<Map<String, Value>>, EvalError> {
        let cond = self.selection.as_ref();
        eval::run(&self.projection, cond, self.where_reads_aliases, ctx)
    }

    /// Whether the rule reads context field `field`.
    pub fn uses(&self, field: &str) -> bool {
        self.reads_all || self.read.contains(&field)
    }

    pub fn wants_event(&self, e: Event) -> bool {
        self.from.contains(&Source::Event(e))
    }

    pub fn wants_topic(&self, topic: &str) -> bool {
        self.from
            .iter()
            .any(|s| matches!(s, Source::Messages(f) if filter_matches(f, topic)))
    }
}

/// Spelling of the topic-match operator; also how sqlparser hands it back.
const TOPIC_MATCH: &str = "=~";
/// Bounds the size of sqlparser's tree: operator chains like `1+1+...` are
/// built without a recursion limit but printed and dropped recursively, which
/// stays well within a 2 MiB stack at this size even in debug builds.
const MAX_TOKENS: usize = 2048;
/// Bounds recursion in conversion and evaluation.
const MAX_DEPTH: usize = 200;

/// Generic SQL plus MySQL-style `div`/`mod` and the `=~` operator.
#[derive(Debug)]
struct RuleDialect;

impl Dialect for RuleDialect {
    // sqlparser gates some syntax (array literals, subscripts) on the dialect
    // type; answering as GenericDialect keeps exactly its expression grammar.
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_'
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        let prec = match &parser.peek_token_ref().token {
            Token::Word(w) if w.keyword == Keyword::MOD => Precedence::MulDivModOp,
            Token::CustomBinaryOperator(op) if op == TOPIC_MATCH => Precedence::Eq,
            _ => return None,
        };
        Some(Ok(self.prec_value(prec)))
    }

    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &ast::Expr,
        precedence: u8,
    ) -> Option<Result<ast::Expr, ParserError>> {
        let op = if parser.parse_keyword(Keyword::DIV) {
            B::MyIntegerDivide
        } else if parser.parse_keyword(Keyword::MOD) {
            B::Modulo
        } else {
            return None;
        };
        let left = Box::new(expr.clone());
        let right = parser.parse_subexpr(precedence).map(Box::new);
        Some(right.map(|right| ast::Expr::BinaryOp { left, op, right }))
    }
}

/// Tokenizes, merging `=` directly followed by `~` into the `=~` operator and
/// refusing every other `~` operator so `=~` has a single meaning.
fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, SqlError> {
    let raw = Tokenizer::new(&RuleDialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::at(e.message, e.location))?;
    let mut out = Vec::with_capacity(raw.len() + 1);
    let mut it = raw.into_iter().peekable();
    while let Some(tok) = it.next() {
        let end = tok.span.end;
        let adjacent_tilde = |n: &TokenWithSpan| n.token == Token::Tilde && n.span.start == end;
        if tok.token == Token::Eq
            && let Some(tilde) = it.next_if(adjacent_tilde)
        {
            let op = Token::CustomBinaryOperator(TOPIC_MATCH.into());
            out.push(TokenWithSpan::new(op, tok.span.union(&tilde.span)));
            continue;
        }
        if matches!(
            tok.token,
            Token::Tilde
                | Token::TildeAsterisk
                | Token::ExclamationMarkTilde
                | Token::ExclamationMarkTildeAsterisk
                | Token::DoubleTilde
                | Token::DoubleTildeAsterisk
                | Token::ExclamationMarkDoubleTilde
                | Token::ExclamationMarkDoubleTildeAsterisk
        ) {
            let why = "use =~ for topic matching, regex_match() for regular expressions";
            return fail(
                format!("operator '{}' is not supported ({why})", tok.token),
                tok.span.start,
            );
        }
        out.push(tok);
    }
    if significant(&out).count() > MAX_TOKENS {
        return fail(
            format!("rule SQL is too long (over {MAX_TOKENS} tokens)"),
            Location::new(1, 1),
        );
    }
    // An explicit EOF with a real location lets "unexpected end" errors point
    // at the end of the text instead of nowhere.
    let end = out.last().map_or(Location::new(1, 1), |t| t.span.end);
    out.push(TokenWithSpan::new(Token::EOF, Span::new(end, end)));
    Ok(out)
}

fn significant(tokens: &[TokenWithSpan]) -> impl Iterator<Item = &TokenWithSpan> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
}

fn is_keyword(t: &TokenWithSpan, keywords: &[Keyword]) -> bool {
    matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && keywords.contains(&w.keyword))
}

/// The token after the first `keyword`: a location for errors about parts of
/// that clause that carry none of their own.
fn after_keyword(tokens: &[TokenWithSpan], keyword: Keyword) -> Location {
    let mut after = significant(tokens).skip_while(|t| !is_keyword(t, &[keyword]));
    after.nth(1).map_or(Location::empty(), |t| t.span.start)
}

fn keyword_location(tokens: &[TokenWithSpan], keywords: &[Keyword]) -> Option<Location> {
    tokens
        .iter()
        .find(|t| is_keyword(t, keywords))
        .map(|t| t.span.start)
}

/// sqlparser's `ParserError` carries its location only inside its text, as
/// the `Display` of a token `Location`. Match that against the tokens'
/// locations (no number parsing), falling back to where the parser stopped.
fn parse_error(err: ParserError, tokens: &[TokenWithSpan], parser: &Parser) -> SqlError {
    let stopped = parser.peek_token_ref().span.start;
    let msg = match err {
        ParserError::RecursionLimitExceeded => {
            return SqlError::at("expression nested too deeply", stopped);
        }
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
    };
    for t in tokens {
        let suffix = t.span.start.to_string();
        if let Some(head) = msg.strip_suffix(&suffix).filter(|_| !suffix.is_empty()) {
            return SqlError::at(head, t.span.start);
        }
    }
    SqlError::at(msg, stopped)
}

/// Compiles rule SQL into a [`Query`].
pub fn compile(sql: &str) -> Result<Query, SqlError> {
    let tokens = tokenize(sql)?;
    let mut parser = Parser::new(&RuleDialect).with_tokens_with_locations(tokens.clone());
    let statements = parser
        .parse_statements()
        .map_err(|e| parse_error(e, &tokens, &parser))?;
    let end = tokens.last().map_or(Location::new(1, 1), |t| t.span.start);
    let first = significant(&tokens).next().map_or(end, |t| t.span.start);
    let query = match statements.as_slice() {
        [] => return fail("expected a SELECT statement", end),
        [Statement::Query(q)] => q,
        [_] => return fail("only SELECT statements are supported", first),
        [..] => {
            let second = significant(&tokens)
                .skip_while(|t| t.token != Token::SemiColon)
                .find(|t| !matches!(t.token, Token::SemiColon | Token::EOF));
            return fail(
                "only one statement is supported",
                second.map_or(end, |t| t.span.start),
            );
        }
    };
    let select = plain_select(query, &tokens, first)?;
    let from = select
        .from
        .iter()
        .map(|twj| source(twj, &tokens))
        .collect::<Result<Vec<_>, _>>()?;
    if from.is_empty() {
        return fail("FROM is required", end);
    }
    let mut fields: Vec<&'static str> = Vec::new();
    for source in &from {
        let more = match source {
            Source::Messages(_) => MESSAGE_FIELDS,
            Source::Event(e) => e.fields(),
        };
        fields.extend(
            more.iter()
                .filter(|f| !fields.contains(f))
                .collect::<Vec<_>>(),
        );
    }
    let mut conv = Converter {
        fields,
        aliases: Vec::new(),
        in_where: false,
        reads_alias: false,
        depth: 0,
        hint: first,
        read: Vec::new(),
    };
    let projection = select
        .projection
        .iter()
        .map(|item| conv.projection(item))
        .collect::<Result<Vec<_>, _>>()?;
    conv.in_where = true;
    conv.hint = after_keyword(&tokens, Keyword::WHERE);
    let selection = select
        .selection
        .as_ref()
        .map(|w| conv.expr(w))
        .transpose()?;
    let where_reads_aliases = conv.reads_alias;
    let reads_all = projection.iter().any(|p| matches!(p, Projection::All));
    Ok(Query {
        from,
        projection,
        selection,
        where_reads_aliases,
        read: conv.read,
        reads_all,
    })
}

/// Accepts only `SELECT ... FROM ... [WHERE ...]`; anything else is refused
/// at the keyword that introduced it.
fn plain_select<'q>(
    q: &'q ast::Query,
    tokens: &[TokenWithSpan],
    start: Location,
) -> Result<&'q ast::Select, SqlError> {
    use Keyword as K;
    let refuse = |what: &str, keywords: &[Keyword]| {
        let loc = keyword_location(tokens, keywords).unwrap_or(start);
        fail(format!("{what} is not supported in rule SQL"), loc)
    };
    #[rustfmt::skip]
    let query_clauses: [(bool, &str, &[Keyword]); 8] = [
        (q.with.is_some(), "WITH", &[K::WITH]),
        (q.order_by.is_some(), "ORDER BY", &[K::ORDER]),
        (q.limit_clause.is_some(), "LIMIT/OFFSET", &[K::LIMIT, K::OFFSET]),
        (q.fetch.is_some(), "FETCH", &[K::FETCH]),
        (!q.locks.is_empty() || q.for_clause.is_some(), "FOR", &[K::FOR]),
        (q.settings.is_some(), "SETTINGS", &[K::SETTINGS]),
        (q.format_clause.is_some(), "FORMAT", &[K::FORMAT]),
        (!q.pipe_operators.is_empty(), "a pipe operator", &[]),
    ];
    if let Some((_, what, keywords)) = query_clauses.iter().find(|c| c.0) {
        return refuse(what, keywords);
    }
    let sel = match &*q.body {
        SetExpr::Select(sel) => sel,
        SetExpr::Query(_) => return refuse("a parenthesized query", &[]),
        _ => {
            return refuse(
                "UNION/INTERSECT/EXCEPT/VALUES",
                &[K::UNION, K::INTERSECT, K::EXCEPT],
            );
        }
    };
    let grouped =
        !matches!(&sel.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    #[rustfmt::skip]
    let select_clauses: [(bool, &str, &[Keyword]); 17] = [
        (sel.distinct.is_some(), "DISTINCT", &[K::DISTINCT, K::ALL]),
        (sel.top.is_some(), "TOP", &[K::TOP]),
        (sel.into.is_some(), "INTO", &[K::INTO]),
        (grouped, "GROUP BY", &[K::GROUP]),
        (sel.having.is_some(), "HAVING", &[K::HAVING]),
        (sel.qualify.is_some(), "QUALIFY", &[K::QUALIFY]),
        (!sel.named_window.is_empty(), "WINDOW", &[K::WINDOW]),
        (!sel.lateral_views.is_empty(), "LATERAL VIEW", &[K::LATERAL]),
        (sel.prewhere.is_some(), "PREWHERE", &[K::PREWHERE]),
        (!sel.connect_by.is_empty(), "CONNECT BY", &[K::CONNECT, K::START]),
        (!sel.cluster_by.is_empty(), "CLUSTER BY", &[K::CLUSTER]),
        (!sel.distribute_by.is_empty(), "DISTRIBUTE BY", &[K::DISTRIBUTE]),
        (!sel.sort_by.is_empty(), "SORT BY", &[K::SORT]),
        (sel.exclude.is_some(), "EXCLUDE", &[K::EXCLUDE]),
        (sel.select_modifiers.is_some() || !sel.optimizer_hints.is_empty(), "a SELECT modifier", &[]),
        (sel.value_table_mode.is_some(), "SELECT AS", &[]),
        (!matches!(sel.flavor, SelectFlavor::Standard), "FROM-first SELECT", &[]),
    ];
    match select_clauses.iter().find(|c| c.0) {
        Some((_, what, keywords)) => refuse(what, keywords),
        None => Ok(sel),
    }
}

/// One FROM entry: a quoted event topic or MQTT topic filter.
fn source(twj: &ast::TableWithJoins, tokens: &[TokenWithSpan]) -> Result<Source, SqlError> {
    let at = after_keyword(tokens, Keyword::FROM);
    if !twj.joins.is_empty() {
        let loc = keyword_location(tokens, &[Keyword::JOIN]).unwrap_or(at);
        return fail("JOIN is not supported in rule SQL", loc);
    }
    let id = match &twj.relation {
        TableFactor::Table { name, .. } => match name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => id,
            _ => return fail("FROM takes quoted topic filters, e.g. \"t/#\"", at),
        },
        TableFactor::Derived { .. } => return fail("subqueries are not supported in rule SQL", at),
        _ => return fail("FROM takes quoted topic filters, e.g. \"t/#\"", at),
    };
    // Anything printed beyond the bare name (alias, hints, sampling, ...) is extra syntax.
    if twj.relation.to_string() != id.to_string() {
        return fail("FROM takes only quoted topic filters", id.span.end);
    }
    let (text, at) = (id.value.as_str(), id.span.start);
    if id.quote_style.is_none() {
        return fail(
            format!("FROM needs a quoted topic filter, e.g. \"{text}\""),
            at,
        );
    }
    if let Some(event) = Event::from_topic(text) {
        return Ok(Source::Event(event));
    }
    if text.starts_with("$events/") {
        return fail(format!("unknown event '{text}'"), at);
    }
    validate_filter(text)
        .map_err(|e| SqlError::at(format!("invalid topic filter '{text}': {e}"), at))?;
    Ok(Source::Messages(text.to_owned()))
}
