//! Table-driven tests of rule SQL: every operator and built-in function,
//! JSON paths, SELECT shapes, FROM forms, WHERE truthiness and nulls,
//! compile errors with their positions, and a deterministic no-panic run
//! over mutated SQL and random payloads.

use serde_json::{Map, Value, json};

use super::eval::Context;
use super::funcs;
use super::sql::{Event, MESSAGE_FIELDS, Query, Source, compile};

const PAYLOAD: &str =
    r#"{"a":{"b":2},"t":21.5,"n":"42","s":"Hello","list":[10,20,30],"flag":true,"nul":null}"#;

fn message(payload: Value) -> Value {
    json!({
        "id": "m1", "clientid": "c1", "username": "u1", "topic": "sensor/1/temp", "qos": 1,
        "retain": false, "payload": payload, "peerhost": "10.0.0.1",
        "timestamp": 1_700_000_000_000_i64, "node": "n1",
        "pub_props": {"User-Property": {"k": "v"}}
    })
}

fn ctx(v: &Value) -> Context {
    Context::new(v.as_object().cloned().unwrap_or_default())
}

/// Compiles and runs `sql` against `context`, expecting `expected`.
#[track_caller]
fn case(sql: &str, context: Value, expected: Option<Value>) {
    let q = compile(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let got = q
        .select(&ctx(&context))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(got.map(Value::Object), expected, "{sql}");
}

/// Value of `expr` selected against a message carrying [`PAYLOAD`]; compile
/// and evaluation errors both come back as their message.
fn value(expr: &str) -> Result<Value, String> {
    let sql = format!("SELECT {expr} AS r FROM \"sensor/#\"");
    let q = compile(&sql).map_err(|e| e.to_string())?;
    let ctx = ctx(&message(Value::String(PAYLOAD.into())));
    let out = q.select(&ctx).map_err(|e| e.0)?;
    Ok(out.and_then(|m| m.get("r").cloned()).unwrap_or(Value::Null))
}

#[track_caller]
fn check_values(cases: &[(&str, Value)]) {
    for (expr, want) in cases {
        assert_eq!(value(expr).as_ref(), Ok(want), "{expr}");
    }
}

#[rustfmt::skip]
fn operator_cases() -> Vec<(&'static str, Value)> {
    vec![
        ("1 + 2", json!(3)), ("1.5 + 1", json!(2.5)), ("'a' + 1", json!("a1")),
        ("payload.s + '!'", json!("Hello!")), ("null + 'x'", json!("x")),
        ("7 - 10", json!(-3)), ("3 * 4", json!(12)), ("7 / 2", json!(3.5)), ("6 / 3", json!(2.0)),
        ("7 div 2", json!(3)), ("-7 div 2", json!(-3)), ("7 mod 3", json!(1)), ("7 % 3", json!(1)),
        ("-7 % 3", json!(-1)), ("-payload.t", json!(-21.5)), ("- (1 + 1)", json!(-2)), ("+qos", json!(1)),
        ("9223372036854775807 + 1", json!(9.223372036854776e18)),
        ("-9223372036854775808", json!(i64::MIN)), ("1e3", json!(1000.0)),
        ("2 + 3 * 4", json!(14)), ("(2 + 3) * 4", json!(20)), ("10 - 2 - 3", json!(5)),
        ("2 * 7 mod 4", json!(2)), ("1 + 7 div 2", json!(4)),
        // comparisons: numeric across int/float and numeric strings, else lexicographic
        ("1 = 1.0", json!(true)), ("1 != 2", json!(true)), ("1 <> 1", json!(false)),
        ("2 < 3", json!(true)), ("3 <= 3", json!(true)), ("4 > 3.5", json!(true)), ("3 >= 4", json!(false)),
        ("'b' > 'a'", json!(true)), ("'abc' >= 'abd'", json!(false)),
        ("payload.n = 42", json!(true)), ("payload.n > 41.5", json!(true)), ("41 < payload.n", json!(true)),
        ("'10' > '9'", json!(false)), ("'abc' > 1", json!(false)), ("'abc' < 1", json!(false)),
        ("'abc' = 1", json!(false)), ("'abc' != 1", json!(true)), ("true = true", json!(true)),
        ("true < false", json!(false)), ("[1, 2] = [1, 2]", json!(true)), ("payload.flag = true", json!(true)),
        // logic: only true is true
        ("true AND false", json!(false)), ("true OR false", json!(true)), ("NOT false", json!(true)),
        ("NOT null", json!(true)), ("null AND true", json!(false)), ("null OR true", json!(true)),
        ("1 AND true", json!(false)), ("NOT (1 = 2)", json!(true)), ("1 = 1 AND 2 = 2 OR false", json!(true)),
        // IN
        ("2 IN (1, 2, 3)", json!(true)), ("'x' IN ('a', 'b')", json!(false)), ("2 NOT IN (1, 3)", json!(true)),
        ("payload.n IN (42)", json!(true)), ("qos IN (0, payload.list[1])", json!(false)),
        ("qos NOT IN (0, 1)", json!(false)),
        // LIKE
        ("'hello' LIKE 'he%'", json!(true)), ("'hello' LIKE 'h_llo'", json!(true)),
        ("'hello' LIKE 'h_lo'", json!(false)), ("'hello' NOT LIKE '%z%'", json!(true)),
        ("'50%' LIKE '50!%' ESCAPE '!'", json!(true)), ("'500' LIKE '50!%' ESCAPE '!'", json!(false)),
        ("'' LIKE '%'", json!(true)), ("'abc' LIKE ''", json!(false)), ("'ab' LIKE '%%b'", json!(true)),
        ("'aXbXc' LIKE '%b%c'", json!(true)), ("'héllo' LIKE 'h_llo'", json!(true)),
        ("1 LIKE '1'", json!(false)), ("null NOT LIKE 'x'", json!(false)), ("clientid LIKE 'c%'", json!(true)),
        ("'Hello' LIKE payload.s", json!(true)), ("'xyz' LIKE payload.s", json!(false)),
        // IS NULL
        ("payload.missing IS NULL", json!(true)), ("payload.nul IS NULL", json!(true)),
        ("payload.t IS NOT NULL", json!(true)), ("null IS NOT NULL", json!(false)),
        // CASE
        ("CASE WHEN payload.t > 20 THEN 'hot' ELSE 'cold' END", json!("hot")),
        ("CASE WHEN payload.t > 30 THEN 'hot' END", json!(null)),
        ("CASE qos WHEN 0 THEN 'zero' WHEN 1 THEN 'one' END", json!("one")),
        ("CASE WHEN payload.nul THEN 1 WHEN payload.flag THEN 2 END", json!(2)),
        // =~ topic matching
        ("topic =~ 'sensor/+/temp'", json!(true)), ("topic =~ 'sensor/#'", json!(true)),
        ("topic =~ '#'", json!(true)), ("topic =~ 'sensor/+'", json!(false)), ("topic =~ '+/+/+'", json!(true)),
        ("'$SYS/x' =~ '#'", json!(false)), ("topic =~ payload.s", json!(false)), ("qos =~ 'a'", json!(false)),
        ("topic =~ 'sensor/#' AND qos = 1", json!(true)), ("NOT topic =~ 'x/#'", json!(true)),
        // literals
        ("[1, 'a', null, true]", json!([1, "a", null, true])), ("'it''s'", json!("it's")),
    ]
}

#[test]
fn operators() {
    check_values(&operator_cases());
}

#[rustfmt::skip]
fn path_cases() -> Vec<(&'static str, Value)> {
    vec![
        ("payload.a.b", json!(2)), ("payload.a", json!({"b": 2})), ("payload.list[1]", json!(10)),
        ("payload.list[-1]", json!(30)), ("payload.list[0]", json!(null)), ("payload.list[9]", json!(null)),
        ("payload.list[1 + 1]", json!(20)), ("payload.a['b']", json!(2)), ("payload.x.y.z", json!(null)),
        ("payload.s.x", json!(null)), ("pub_props['User-Property'].k", json!("v")), ("pub_props.x", json!(null)),
        ("payload['a'].b", json!(2)), ("qos.x", json!(null)), ("payload.list[-9]", json!(null)),
    ]
}

#[test]
fn paths() {
    check_values(&path_cases());
    let q = "SELECT payload.a AS a, payload AS p FROM \"t\"";
    case(
        q,
        message("not json".into()),
        Some(json!({"a": null, "p": "not json"})),
    );
    case(
        q,
        message(json!({"a": 1})),
        Some(json!({"a": 1, "p": {"a": 1}})),
    );
    case(q, json!({"qos": 1}), Some(json!({"a": null, "p": null})));
    // Strings held by other fields are read as JSON too.
    let username = json!({"username": "{\"k\": 3}"});
    case(
        "SELECT username.k AS k FROM \"t\"",
        username,
        Some(json!({"k": 3})),
    );
}

#[rustfmt::skip]
fn function_cases() -> Vec<(&'static str, Value)> {
    vec![
        ("lower('AbC')", json!("abc")), ("upper('AbC')", json!("ABC")), ("trim('  x ')", json!("x")),
        ("ltrim('  x ')", json!("x ")), ("rtrim('  x ')", json!("  x")), ("reverse('abc')", json!("cba")),
        ("strlen('héllo')", json!(5)), ("substr('hello', 1)", json!("ello")), ("substr('hello', 1, 3)", json!("ell")),
        ("substr('hi', 5)", json!("")), ("SUBSTRING('hello', 0, 2)", json!("he")),
        ("concat('a', 1, null, true)", json!("a1true")), ("concat(clientid, '/', qos)", json!("c1/1")),
        ("replace('a-b-c', '-', '+')", json!("a+b+c")), ("replace('ab', '', 'x')", json!("ab")),
        ("split('/a//b/', '/')", json!(["a", "b"])), ("nth(2, split(topic, '/'))", json!("1")),
        ("tokens('a,b;;c', ',;')", json!(["a", "b", "c"])), ("find('hello world', 'o')", json!("o world")),
        ("find('abc', 'z')", json!("")), ("regex_match('abc123', '[0-9]+')", json!(true)),
        ("regex_match(payload.s, '^H')", json!(true)), ("regex_match('x', payload.s)", json!(false)),
        ("str(1.5)", json!("1.5")), ("str(null)", json!("")), ("str(payload.list)", json!("[10,20,30]")),
        ("int('42')", json!(42)), ("int(3.9)", json!(3)), ("int(-3.9)", json!(-3)), ("int(true)", json!(1)),
        ("int(payload.n)", json!(42)), ("int('2.5')", json!(2)), ("float('2.5')", json!(2.5)), ("float(2)", json!(2.0)),
        ("bool('true')", json!(true)), ("bool(0)", json!(false)), ("bool(1.0)", json!(true)),
        ("is_null(payload.nul)", json!(true)), ("is_not_null(1)", json!(true)), ("is_str('a')", json!(true)),
        ("is_num(1.5)", json!(true)), ("is_int(1)", json!(true)), ("is_int(1.0)", json!(false)),
        ("is_float(1.0)", json!(true)), ("is_bool(false)", json!(true)), ("is_map(payload.a)", json!(true)),
        ("is_array(payload.list)", json!(true)), ("is_map(payload.list)", json!(false)),
        ("abs(-3)", json!(3)), ("abs(-2.5)", json!(2.5)), ("ceil(1.2)", json!(2)), ("floor(-1.2)", json!(-2)),
        ("round(2.5)", json!(3)), ("round(7)", json!(7)), ("sqrt(16)", json!(4.0)), ("power(2, 10)", json!(1024.0)),
        ("exp(0)", json!(1.0)), ("log(1)", json!(0.0)), ("log10(1000)", json!(3.0)), ("log2(8)", json!(3.0)),
        ("sin(0)", json!(0.0)), ("cos(0)", json!(1.0)), ("tan(0)", json!(0.0)), ("pi()", json!(std::f64::consts::PI)),
        ("nth(2, [1, 2, 3])", json!(2)), ("nth(5, [1])", json!(null)), ("nth(0, [1])", json!(null)),
        ("length([1, 2])", json!(2)), ("length(payload.a)", json!(1)), ("first([1, 2])", json!(1)),
        ("last([1, 2])", json!(2)), ("first([])", json!(null)), ("contains(2, [1, 2])", json!(true)),
        ("contains('2', [1, 2])", json!(true)), ("contains(3, payload.list)", json!(false)),
        (r#"json_decode('{"x":1}')"#, json!({"x": 1})), ("json_encode(payload.a)", json!(r#"{"b":2}"#)),
        ("map_get('b', payload.a)", json!(2)), ("map_get('z', payload.a, 'd')", json!("d")),
        ("map_get('z', payload.nul)", json!(null)), ("map_put('c', 3, payload.a)", json!({"b": 2, "c": 3})),
        ("base64_encode('hello')", json!("aGVsbG8=")), ("base64_decode('aGVsbG8=')", json!("hello")),
        ("base64_decode('/w==')", json!("\u{fffd}")),
        ("unix_ts_to_rfc3339(0)", json!("1970-01-01T00:00:00+00:00")),
        ("unix_ts_to_rfc3339(-1500, 'millisecond')", json!("1969-12-31T23:59:58.500+00:00")),
        ("format_date('second', '+08:00', '%Y-%m-%d %H:%M:%S', 0)", json!("1970-01-01 08:00:00")),
        ("format_date('millisecond', 'Z', '%Y %z', timestamp)", json!("2023 +0000")),
        ("format_date('second', '-0530', '%H:%M', 0)", json!("18:30")),
        ("format_date('second', 3600, '%H', 0)", json!("01")),
        ("now_timestamp() > 1600000000000", json!(true)), ("now_timestamp('second') < 100000000000", json!(true)),
        ("now_timestamp('nanosecond') > now_timestamp('microsecond')", json!(true)),
        ("strlen(now_rfc3339())", json!(25)), ("strlen(now_rfc3339('millisecond'))", json!(29)),
        ("LOWER('X')", json!("x")), ("Trim(' x ')", json!("x")), ("CEIL(1.5)", json!(2)),
    ]
}

#[test]
fn functions() {
    let cases = function_cases();
    check_values(&cases);
    for name in funcs::names() {
        let call = format!("{name}(");
        let covered = cases.iter().any(|(e, _)| e.to_lowercase().contains(&call));
        assert!(covered, "no case for {name}");
    }
}

#[rustfmt::skip]
const ERRORS: &[(&str, &str)] = &[
    ("payload.s - 1", "cannot apply '-' to string and number"), ("payload.a * 2", "cannot apply '*' to object"),
    ("payload.t / 0", "division by zero"), ("qos mod 0", "division by zero"), ("qos div 0", "division by zero"),
    ("payload.t div 2", "'div' needs integer operands"), ("payload.t % 2", "'mod' needs integer operands"),
    ("-payload.s", "cannot apply 'unary -' to string"), ("payload.missing + 1", "cannot apply '+' to null and number"),
    ("lower(payload.t)", "lower: expected a string, got number"), ("substr(payload.s, -1)", "start must not be negative"),
    ("substr(payload.s, 0, -1)", "length must not be negative"), ("split(payload.s, '')", "separator must not be empty"),
    ("regex_match(payload.s, payload.s + '(')", "invalid regex"), ("regex_match(qos, 'x')", "regex_match: expected a string"),
    ("int(payload.s)", "cannot convert string to int"), ("float(payload.a)", "cannot convert object to float"),
    ("bool(payload.t)", "cannot convert 21.5 to bool"), ("sqrt(payload.t - 100)", "not a finite number"),
    ("nth('x', payload.list)", "expected an integer"), ("nth(1, payload.s)", "expected an array"),
    ("length(payload.s)", "expected an array or object"), ("json_decode(payload.s)", "invalid JSON"),
    ("map_get('a', payload.list)", "expected an object"), ("map_put('a', 1, qos)", "expected an object"),
    ("base64_decode(payload.s + '*')", "invalid base64"), ("now_timestamp('minute')", "unknown time unit 'minute'"),
    ("format_date('second', '+8', '%Y', qos)", "invalid UTC offset"),
    ("format_date('second', 'Z', '%Q', qos)", "invalid date format"),
    ("format_date('hour', 'Z', '%Y', qos)", "unknown time unit"),
    ("unix_ts_to_rfc3339(payload.t)", "expected an integer"),
    ("unix_ts_to_rfc3339(qos * 9223372036854775807)", "out of range"),
    ("abs(payload.s)", "abs: expected a number"), ("power(payload.s, 2)", "expected a number"),
    ("first(payload.a)", "expected an array"), ("contains(1, payload.s)", "expected an array"),
    // constant sub-expressions are evaluated, so their errors surface at compile time
    ("1 / 0", "division by zero at line 1, column 8"), ("log(0)", "not a finite number at line 1, column 8"),
    ("'a' - 1", "cannot apply '-' to string and number at line 1, column 8"),
    ("upper(1)", "upper: expected a string, got number at line 1, column 8"),
    ("qos + (2 * 'x')", "cannot apply '*' to number and string at line 1, column 15"),
    ("regex_match(payload.s, '(')", "invalid regex"),
];

#[test]
fn runtime_and_type_errors() {
    for (expr, want) in ERRORS {
        let got = value(expr);
        assert!(
            got.as_ref().is_err_and(|e| e.contains(want)),
            "{expr}: {got:?}"
        );
    }
}

#[rustfmt::skip]
const COMPILE_ERRORS: &[(&str, &str, u64, u64)] = &[
    ("SELECT reasn FROM \"t/#\"", "unknown field 'reasn'", 1, 8),
    ("SELECT clientid FROM \"t/#\"\nWHERE foo(1) = 2", "unknown function 'foo'", 2, 7),
    ("SELECT lower(clientid, 1) FROM \"t\"", "function 'lower' takes 1 argument(s), got 2", 1, 8),
    ("SELECT concat('a') FROM \"t\"", "function 'concat' takes at least 2 argument(s), got 1", 1, 8),
    ("SELECT qos, map_get('a') FROM \"t\"", "function 'map_get' takes 2 to 3 argument(s), got 1", 1, 13),
    ("SELECT pi(1) FROM \"t\"", "function 'pi' takes 0 argument(s), got 1", 1, 8),
    ("SELECT\n  clientid,\n  bogus\nFROM \"t\"", "unknown field 'bogus'", 3, 3),
    ("SELECT * FROM \"a/#/b\"", "invalid topic filter 'a/#/b'", 1, 15),
    ("SELECT * FROM \"a/b+\"", "invalid topic filter", 1, 15),
    ("SELECT * FROM \"t\", \"$events/nope\"", "unknown event '$events/nope'", 1, 20),
    ("SELECT * FROM t", "FROM needs a quoted topic filter", 1, 15),
    ("SELECT * FROM \"a\" AS x", "FROM takes only quoted topic filters", 1, 18),
    ("SELECT * FROM \"a\" JOIN \"b\" ON 1 = 1", "JOIN is not supported", 1, 19),
    ("SELECT * FROM \"a\" GROUP BY clientid", "GROUP BY is not supported", 1, 19),
    ("SELECT * FROM \"a\" WHERE qos = 1 ORDER BY qos", "ORDER BY is not supported", 1, 33),
    ("SELECT * FROM \"a\" LIMIT 1", "LIMIT/OFFSET is not supported", 1, 19),
    ("SELECT * FROM \"a\" WHERE qos = 1 HAVING qos = 1", "HAVING is not supported", 1, 33),
    ("SELECT DISTINCT qos FROM \"a\"", "DISTINCT is not supported", 1, 8),
    ("SELECT qos FROM \"a\" UNION SELECT qos FROM \"b\"", "UNION/INTERSECT/EXCEPT/VALUES is not supported", 1, 21),
    ("WITH x AS (SELECT 1) SELECT * FROM \"a\"", "WITH is not supported", 1, 1),
    ("SELECT * FROM (SELECT 1)", "subqueries are not supported", 1, 15),
    ("SELECT * FROM \"a\" WHERE qos IN (SELECT 1)", "subqueries are not supported", 1, 25),
    ("SELECT * FROM \"a\" WHERE EXISTS (SELECT 1)", "subqueries are not supported", 1, 25),
    ("SELECT * FROM \"a\"; SELECT * FROM \"b\"", "only one statement is supported", 1, 20),
    ("DELETE FROM \"a\"", "only SELECT statements are supported", 1, 1),
    ("SELECT * FROM \"a\" WHERE topic ~ 'x'", "operator '~' is not supported", 1, 31),
    ("SELECT * FROM \"a\" WHERE topic = ~'x'", "operator '~' is not supported", 1, 33),
    ("SELECT * FROM \"a\" WHERE topic !~ 'x'", "operator '!~' is not supported", 1, 31),
    ("SELECT * FROM \"a\" WHERE topic =~ 'a/#/b'", "invalid topic filter 'a/#/b'", 1, 34),
    ("SELECT * FROM \"a\" WHERE topic =~ 1", "=~ needs a topic filter string", 1, 34),
    ("SELECT * FROM \"a\" WHERE clientid LIKE 5", "LIKE needs a string pattern", 1, 39),
    ("SELECT * FROM \"a\" WHERE clientid LIKE 'a!' ESCAPE '!'", "ends with its escape character", 1, 39),
    ("SELECT * FROM \"a\" WHERE clientid LIKE 'a' ESCAPE 'xy'", "ESCAPE needs a one-character string", 1, 50),
    ("SELECT * FROM \"a\" WHERE clientid ILIKE 'a'", "unsupported expression", 1, 25),
    ("SELECT * FROM \"a\" WHERE qos & 1", "operator '&' is not supported", 1, 25),
    // sqlparser places this one at the token after FROM.
    ("SELECT FROM \"a\"", "Expected an expression, found: FROM", 1, 13),
    ("SELECT 1 + * FROM \"a\"", "Expected: an expression, found: *", 1, 12),
    // sqlparser reads a misplaced FROM as a column name, leaving no FROM clause.
    ("SELECT 1 + FROM \"a\"", "FROM is required", 1, 20),
    ("SELECT * FROM \"a\" WHERE", "Expected: an expression, found: EOF", 1, 24),
    ("SELECT 'abc FROM \"a\"", "Unterminated string literal", 1, 8),
    ("SELECT qos\nFROM \"a\"\nWHERE (qos = 1", "Expected: ), found: EOF", 3, 15),
    ("", "expected a SELECT statement", 1, 1),
    ("SELECT payload.x FROM \"a\" WHERE x > 1", "unknown field 'x'", 1, 33),
    ("SELECT clientid FROM \"$events/client_connected\" WHERE payload.x = 1", "unknown field 'payload'", 1, 55),
    ("SELECT qos AS q, q + 1 FROM \"a\"", "unknown field 'q'", 1, 18),
    ("SELECT 'a' * 2 AS x FROM \"a\"", "cannot apply '*' to string and number", 1, 8),
    ("SELECT CURRENT_TIMESTAMP FROM \"a\"", "unknown function 'CURRENT_TIMESTAMP'", 1, 8),
    ("SELECT count(*) FROM \"a\"", "unknown function 'count'", 1, 8),
    ("SELECT lower(DISTINCT clientid) FROM \"a\"", "unsupported syntax in call to 'lower'", 1, 8),
    ("SELECT qos::int FROM \"a\"", "unsupported expression", 1, 8),
    ("SELECT qos, $1 FROM \"a\"", "unsupported literal $1", 1, 13),
    ("SELECT payload.list[1:2] FROM \"a\"", "unsupported field access", 1, 8),
    ("SELECT * FROM \"a\" WHERE regex_match(clientid, '(')", "invalid regex", 1, 25),
];

#[test]
fn compile_errors_with_positions() {
    for (sql, msg, line, column) in COMPILE_ERRORS {
        let err = compile(sql).map(|_| ()).expect_err(sql);
        assert!(err.message.contains(msg), "{sql}: {err}");
        assert_eq!((err.line, err.column), (*line, *column), "{sql}: {err}");
        let suffix = format!(" at line {line}, column {column}");
        assert_eq!(err.to_string(), format!("{}{suffix}", err.message));
    }
    let err = compile("SELECT reasn FROM \"t/#\"")
        .map(|_| ())
        .expect_err("unknown field");
    assert_eq!(err.to_string(), "unknown field 'reasn' at line 1, column 8");
}

#[test]
fn nesting_and_size_limits() {
    let too_deep = |sql: &str| compile(sql).is_err_and(|e| e.message.contains("nested too deeply"));
    assert!(too_deep(&format!(
        "SELECT {}1{} FROM \"t\"",
        "(".repeat(100),
        ")".repeat(100)
    )));
    assert!(too_deep(&format!(
        "SELECT qos{} FROM \"t\"",
        " + qos".repeat(500)
    )));
    assert!(too_deep(&format!(
        "SELECT lower({}) FROM \"t\"",
        "clientid + ".repeat(400) + "''"
    )));
    let long = format!("SELECT qos{} FROM \"t\"", " + qos".repeat(3000));
    assert!(compile(&long).is_err_and(|e| e.message.contains("too long")));
    // The deepest accepted expression also evaluates within a test thread's stack.
    let deepest = format!("SELECT qos{} AS s FROM \"t\"", " + qos".repeat(198));
    case(&deepest, json!({"qos": 1}), Some(json!({"s": 199})));
}

#[test]
fn from_forms() {
    let q = compile("SELECT * FROM 't/#'").expect("single quotes");
    assert_eq!(q.from, vec![Source::Messages("t/#".into())]);
    let q = compile("SELECT * FROM \"t/+/x\", \"$events/client_connected\"").expect("two sources");
    let both = vec![
        Source::Messages("t/+/x".into()),
        Source::Event(Event::ClientConnected),
    ];
    assert_eq!(q.from, both);
    assert!(q.wants_topic("t/1/x") && !q.wants_topic("t/1/y") && !q.wants_topic("$SYS/t/1/x"));
    assert!(q.wants_event(Event::ClientConnected) && !q.wants_event(Event::ClientDisconnected));
    let all = compile("SELECT * FROM \"#\"").expect("all");
    assert!(all.wants_topic("a/b") && !all.wants_topic("$SYS/x"));
    assert!(!all.wants_event(Event::MessageDropped));
    for e in Event::ALL {
        assert_eq!(Event::from_topic(e.topic()), Some(e));
        let sql = format!("SELECT {} FROM \"{}\"", e.fields().join(", "), e.topic());
        let q = compile(&sql).expect("event fields");
        assert!(q.wants_event(e) && !q.wants_topic(e.topic()));
    }
    assert_eq!(Event::from_topic("$events/other"), None);
    compile(&format!("SELECT {} FROM \"t\"", MESSAGE_FIELDS.join(", "))).expect("message fields");
    // With several sources, any of their fields may be used; missing ones read as null.
    case(
        "SELECT reason, payload FROM \"$events/client_disconnected\", \"t/#\"",
        json!({"reason": "normal"}),
        Some(json!({"reason": "normal", "payload": null})),
    );
}

#[test]
fn select_shapes() {
    let msg = message(PAYLOAD.into());
    case("SELECT * FROM \"t/#\"", msg.clone(), Some(msg.clone()));
    let mut with_b = msg.as_object().cloned().unwrap_or_default();
    with_b.insert("b".into(), json!(2));
    case(
        "SELECT *, payload.a.b AS b FROM \"t/#\"",
        msg.clone(),
        Some(Value::Object(with_b)),
    );
    case(
        "SELECT payload.a.b, payload.a.c, payload.t, clientid FROM \"t/#\"",
        msg.clone(),
        Some(json!({"payload": {"a": {"b": 2, "c": null}, "t": 21.5}, "clientid": "c1"})),
    );
    let keys = "SELECT payload.a.b AS x, upper(clientid), qos + 1, payload.list[2], topic =~ 't/#'";
    case(
        &format!("{keys} FROM \"t/#\""),
        msg.clone(),
        Some(
            json!({"x": 2, "upper(clientid)": "C1", "qos + 1": 2, "payload.list[2]": 20,
            "topic =~ 't/#'": false}),
        ),
    );
    // A bare path after `*` replaces the raw payload string with the nested object.
    let q = compile("SELECT *, payload.a.b FROM \"t\"").expect("sql");
    let out = q.select(&ctx(&msg)).expect("eval");
    assert_eq!(
        out.and_then(|m| m.get("payload").cloned()),
        Some(json!({"a": {"b": 2}}))
    );
    case(
        "SELECT 1 AS x, 2 AS x FROM \"t\"",
        json!({}),
        Some(json!({"x": 2})),
    );
}

#[rustfmt::skip]
const CONDITIONS: &[(&str, bool)] = &[
    ("payload.flag", true), ("payload.t", false), ("payload.missing", false), ("'true'", false),
    ("null", false), ("qos = 1", true), ("qos = 2", false), ("NOT payload.missing", true),
    ("payload.missing = null", true), ("payload.missing != 1", true), ("payload.missing > 1", false),
    ("payload.missing < 1", false), ("payload.missing = 0", false), ("is_null(payload.missing)", true),
    ("payload.nul IS NULL AND payload.a.b = 2", true), ("payload.t > 20 OR payload.missing", true),
];

#[test]
fn where_clause() {
    let msg = message(PAYLOAD.into());
    for (cond, hit) in CONDITIONS {
        let sql = format!("SELECT clientid FROM \"t\" WHERE {cond}");
        let out = compile(&sql).expect(cond).select(&ctx(&msg)).expect(cond);
        assert_eq!(out.is_some(), *hit, "{sql}");
    }
    // SELECT aliases are visible in WHERE, ahead of fields of the same name.
    let m = || msg.clone();
    case(
        "SELECT clientid AS c FROM \"t\" WHERE c = 'c1'",
        m(),
        Some(json!({"c": "c1"})),
    );
    case("SELECT clientid AS c FROM \"t\" WHERE c = 'x'", m(), None);
    let shadow = "SELECT 'x' AS clientid FROM \"t\" WHERE clientid = 'x'";
    case(shadow, m(), Some(json!({"clientid": "x"})));
    let decoded: Value = serde_json::from_str(PAYLOAD).unwrap_or_default();
    let nested = "SELECT json_decode(payload) AS p FROM \"t\" WHERE p.a.b = 2 AND p.list[3] = 30";
    case(nested, m(), Some(json!({ "p": decoded })));
    // A WHERE that does not read aliases runs first: failing SELECT items are skipped.
    case(
        "SELECT payload.s - 1 AS x FROM \"t\" WHERE qos = 2",
        m(),
        None,
    );
    let q = compile("SELECT payload.s - 1 AS x FROM \"t\" WHERE qos = 1").expect("sql");
    assert!(q.select(&ctx(&msg)).is_err());
}

#[test]
fn query_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Query>();
}

/// Deterministic xorshift generator: no external property-testing crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or("")
    }
}

#[rustfmt::skip]
const SEEDS: &[&str] = &[
    "SELECT * FROM \"t/#\" WHERE payload.a.b > 1 AND topic =~ 't/+'",
    "SELECT payload.list[1] AS x, lower(clientid), CASE WHEN qos = 1 THEN 'a' ELSE 'b' END FROM 't' WHERE x IN (1, 2)",
    "SELECT format_date('second', '+08:00', '%Y', timestamp) AS d, substr(payload.s, 1, 2) FROM \"a\", \"$events/message_dropped\"",
    "SELECT json_decode(payload) AS p FROM \"t\" WHERE p.x LIKE '%a_' OR NOT is_null(p.y) AND qos div 2 = 0",
];

#[rustfmt::skip]
const FRAGMENTS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "(", ")", ",", "'", "\"", "=~", "~", "+", "-", "*", "/", "div", "mod", "%", "[", "]",
    ".", "payload", "payload.a", "qos", "1", "-1", "0", "9223372036854775807", "1e308", "null", "true", "CASE",
    "WHEN", "THEN", "END", "LIKE", "'%_'", "IN", "NOT", "AND", "OR", "IS", "NULL", "lower(", "substr(", "nth(",
    "format_date(", "json_decode(", "regex_match(", "\n", " ", "é", "\u{0}", "#", "$events/", "/*", "--", ";",
    "JOIN", "GROUP BY", "LIMIT", "ESCAPE", "'\\'", "::", "@", "?", "$1", "`", "E'", "[1,", "'+/#'",
];

#[rustfmt::skip]
const VALUES: &[&str] = &[
    "0", "-1", "1", "9223372036854775807", "-9223372036854775808", "1e308", "-0.5", "2.5", "'x'", "''", "'%'",
    "'+/#'", "'['", "null", "true", "false", "[]", "[1, 'a']", "payload", "payload.a", "payload.list[2]", "qos",
    "topic", "'second'", "'nanosecond'", "'Z'", "'%Y%Q'", "'+99:99'", "'aGk='", "'{\"a\":[1]}'",
];

fn random_expr(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 || rng.below(3) == 0 {
        return rng.pick(VALUES).to_owned();
    }
    let a = random_expr(rng, depth - 1);
    let b = random_expr(rng, depth - 1);
    match rng.below(6) {
        0 => {
            let names: Vec<&str> = funcs::names().collect();
            let n = rng.below(5);
            let args: Vec<String> = (0..n).map(|_| random_expr(rng, depth - 1)).collect();
            format!("{}({})", rng.pick(&names), args.join(", "))
        }
        1 => format!("CASE WHEN {a} THEN {b} ELSE {a} END"),
        2 => format!("{a} IN ({b}, {a})"),
        3 => format!("{a} LIKE {b}"),
        _ => {
            let ops = [
                "+", "-", "*", "/", "div", "mod", "%", "=", "!=", "<", ">=", "AND", "OR", "=~",
            ];
            format!("({a} {} {b})", rng.pick(&ops))
        }
    }
}

fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!((rng.next() as f64) / 7.0 - 1e18),
        4 => json!(rng.pick(&["", "a", "{", "[1,", "é", "%", "a/b"])),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for key in ["a", "b", "list", "s"] {
                if rng.below(2) == 0 {
                    m.insert(key.into(), random_json(rng, depth - 1));
                }
            }
            Value::Object(m)
        }
    }
}

fn random_context(rng: &mut Rng) -> Context {
    let payload = match rng.below(4) {
        0 => Value::String(random_json(rng, 3).to_string()),
        1 => random_json(rng, 3),
        2 => Value::String(
            rng.pick(&["not json", "", "{\"a\":", "[[[[", PAYLOAD])
                .into(),
        ),
        _ => Value::String(PAYLOAD.into()),
    };
    ctx(&message(payload))
}

fn mutate(rng: &mut Rng, sql: &str) -> String {
    let mut s = sql.to_owned();
    for _ in 0..=rng.below(4) {
        let mut at = rng.below(s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match rng.below(3) {
            0 => s.insert_str(at, rng.pick(FRAGMENTS)),
            1 => {
                let mut end = (at + rng.below(8)).min(s.len());
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.replace_range(at..end, "");
            }
            _ => s.truncate(at),
        }
    }
    s
}

#[test]
fn never_panics_on_random_input() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut compiled = 0;
    for i in 0..600 {
        let sql = if i % 2 == 0 {
            let seed = rng.pick(SEEDS);
            mutate(&mut rng, seed)
        } else {
            let (a, b) = (random_expr(&mut rng, 3), random_expr(&mut rng, 3));
            format!("SELECT {a} AS r, {b} FROM \"t/#\" WHERE r = r OR {b}")
        };
        match compile(&sql) {
            Ok(q) => {
                compiled += 1;
                for _ in 0..4 {
                    let _ = q
                        .select(&random_context(&mut rng))
                        .map_err(|e| e.to_string());
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // The generator must reach evaluation, not only the parser's error paths.
    assert!(compiled > 50, "only {compiled} random queries compiled");
}
