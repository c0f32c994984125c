//! Parser for the query language: recursive descent on winnow token parsers.
//!
//! Once a construct has started (a keyword, an operator, an opening quote) every failure is
//! a cut error carrying its position and a message, so the reported error points at the
//! offending token instead of wherever backtracking happened to stop. Nesting of
//! parentheses, `NOT` and arrays is capped at [`MAX_DEPTH`] so hostile input cannot
//! overflow the stack.

use std::collections::HashSet;

use serde_json::{Number, Value};
use winnow::ascii::{digit1, multispace0};
use winnow::combinator::{alt, opt};
use winnow::error::{ErrMode, ModalResult, ParserError};
use winnow::prelude::*;
use winnow::token::{any, one_of, take_while};

use super::{
    CmpOp, Cond, Func, ItemKind, Operand, Path, Projection, Query, QueryError, SelectItem, Source,
};

/// Deepest nesting of parentheses, `NOT` and arrays accepted.
const MAX_DEPTH: usize = 64;

/// Words that cannot start a path or be an alias, so `SELECT FROM devices` is an error at
/// `FROM` rather than a path called `FROM`.
const RESERVED: &[&str] = &[
    "SELECT", "TOP", "FROM", "WHERE", "GROUP", "BY", "AS", "AND", "OR", "NOT", "IN", "NIN", "TRUE",
    "FALSE", "NULL",
];

/// The parser input: the rest of the query text.
type Input<'a> = &'a str;

/// A parse result with our error type.
type PResult<T> = ModalResult<T, PErr>;

/// Whether an error is about the syntax or about a well-formed but unacceptable query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrKind {
    /// Malformed text.
    Syntax,
    /// Parses, but cannot be run (unsupported collection, unknown function, …).
    Invalid,
}

/// A parse error: where (as the length of the rest of the text) and what.
#[derive(Debug)]
struct PErr {
    /// Bytes from the error position to the end of the query text.
    tail_len: usize,
    /// Syntax or semantic error.
    kind: ErrKind,
    /// What went wrong; empty for errors of winnow's own token parsers.
    detail: String,
}

impl<'a> ParserError<Input<'a>> for PErr {
    type Inner = Self;

    fn from_input(input: &Input<'a>) -> Self {
        PErr {
            tail_len: input.len(),
            kind: ErrKind::Syntax,
            detail: String::new(),
        }
    }

    // Winnow's default panics in debug builds on a misbehaving combinator; never panic.
    fn assert(input: &Input<'a>, _message: &'static str) -> Self {
        Self::from_input(input)
    }

    fn into_inner(self) -> Result<Self, Self> {
        Ok(self)
    }
}

/// A cut error at the start of `at`.
fn error(at: &str, kind: ErrKind, detail: impl Into<String>) -> ErrMode<PErr> {
    ErrMode::Cut(PErr {
        tail_len: at.len(),
        kind,
        detail: detail.into(),
    })
}

/// "expected X, found Y" at the current position.
fn expected(input: &Input<'_>, what: &str) -> ErrMode<PErr> {
    error(
        input,
        ErrKind::Syntax,
        format!("expected {what}, found {}", describe_next(input)),
    )
}

/// A short description of the next token, for error messages.
fn describe_next(input: &str) -> String {
    if let Some(word) = peek_word(input) {
        let shown: String = word.chars().take(32).collect();
        format!("'{shown}'")
    } else if let Some(c) = input.chars().next() {
        format!("'{}'", c.escape_debug())
    } else {
        "end of query".to_owned()
    }
}

/// Characters of identifiers and keywords.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// True for a valid unquoted property name: `[A-Za-z_$][A-Za-z0-9_$]*`.
pub(super) fn is_identifier(text: &str) -> bool {
    text.chars().next().is_some_and(|c| !c.is_ascii_digit()) && text.chars().all(is_word_char)
}

/// The word (identifier or keyword) at the start of `input`, without consuming it.
fn peek_word(input: &str) -> Option<&str> {
    take_while::<_, _, ErrMode<PErr>>(1.., is_word_char)
        .parse_peek(input)
        .ok()
        .map(|(_, word)| word)
}

/// Is `word` reserved (case-insensitively)?
fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|kw| kw.eq_ignore_ascii_case(word))
}

/// Skips whitespace.
fn ws(input: &mut Input<'_>) {
    let _: PResult<&str> = multispace0.parse_next(input);
}

/// Consumes keyword `kw` (case-insensitive, whole word) after whitespace, if it is next.
fn eat_keyword(input: &mut Input<'_>, kw: &str) -> bool {
    ws(input);
    match peek_word(input) {
        Some(word) if word.eq_ignore_ascii_case(kw) => {
            let _: PResult<&str> = take_while(1.., is_word_char).parse_next(input);
            true
        }
        _ => false,
    }
}

/// Requires keyword `kw` next.
fn expect_keyword(input: &mut Input<'_>, kw: &str) -> PResult<()> {
    if eat_keyword(input, kw) {
        Ok(())
    } else {
        Err(expected(input, kw))
    }
}

/// Consumes `c` after whitespace, if it is next.
fn eat_char(input: &mut Input<'_>, c: char) -> bool {
    ws(input);
    let eaten: PResult<Option<char>> = opt(c).parse_next(input);
    matches!(eaten, Ok(Some(_)))
}

/// Requires `c` next.
fn expect_char(input: &mut Input<'_>, c: char, what: &str) -> PResult<()> {
    if eat_char(input, c) {
        Ok(())
    } else {
        Err(expected(input, what))
    }
}

/// Fails when `depth` exceeds the nesting limit.
fn check_depth(input: &Input<'_>, depth: usize) -> PResult<()> {
    if depth > MAX_DEPTH {
        Err(error(
            input,
            ErrKind::Invalid,
            format!("nesting is deeper than {MAX_DEPTH} levels"),
        ))
    } else {
        Ok(())
    }
}

/// Parses and validates a whole query.
pub(super) fn parse_query(text: &str) -> Result<Query, QueryError> {
    let mut input = text;
    query(&mut input).map_err(|err| {
        let err = match err {
            ErrMode::Backtrack(e) | ErrMode::Cut(e) => e,
            // Only partial streams are incomplete; keep a sane answer anyway.
            ErrMode::Incomplete(_) => PErr::from_input(&""),
        };
        to_query_error(text, err)
    })
}

/// Turns a parse error into the user-facing message with a 1-based character position.
fn to_query_error(text: &str, err: PErr) -> QueryError {
    let byte = text.len().saturating_sub(err.tail_len);
    let position = text.get(..byte).map_or(byte, |s| s.chars().count()) + 1;
    let kind = match err.kind {
        ErrKind::Syntax => "Syntax error",
        ErrKind::Invalid => "Invalid query",
    };
    let detail = if err.detail.is_empty() {
        "unexpected input"
    } else {
        &err.detail
    };
    QueryError {
        message: format!("{kind} at position {position}: {detail}"),
    }
}

/// `SELECT [TOP n] <projection> FROM <source> [WHERE <cond>] [GROUP BY <paths>]`.
fn query(input: &mut Input<'_>) -> PResult<Query> {
    expect_keyword(input, "SELECT")?;
    let top = if eat_keyword(input, "TOP") {
        Some(top_count(input)?)
    } else {
        None
    };
    ws(input);
    let projection_tail = input.len();
    let mut projection = projection(input)?;
    expect_keyword(input, "FROM")?;
    let source = source(input)?;
    let mut condition = if eat_keyword(input, "WHERE") {
        Some(or_cond(input, 0)?)
    } else {
        None
    };
    let mut group_by = Vec::new();
    if eat_keyword(input, "GROUP") {
        expect_keyword(input, "BY")?;
        loop {
            ws(input);
            match path(input)? {
                Some(p) => group_by.push(p),
                None => return Err(expected(input, "a property path")),
            }
            if !eat_char(input, ',') {
                break;
            }
        }
    }
    ws(input);
    if !input.is_empty() {
        let what = if !group_by.is_empty() {
            "',' or end of query"
        } else if condition.is_some() {
            "AND, OR, GROUP BY or end of query"
        } else {
            "WHERE, GROUP BY or end of query"
        };
        return Err(expected(input, what));
    }

    // Paths may be written with the collection prefix; store them relative to the twin.
    if let Projection::Items(items) = &mut projection {
        for item in items {
            if let ItemKind::Path(p) = &mut item.kind {
                strip_prefix(p, source);
            }
        }
    }
    if let Some(cond) = &mut condition {
        strip_cond(cond, source);
    }
    for p in &mut group_by {
        strip_prefix(p, source);
    }
    let query = Query {
        source,
        top,
        projection,
        condition,
        group_by,
    };
    validate(&query, projection_tail)?;
    Ok(query)
}

/// The `n` of `TOP n`.
fn top_count(input: &mut Input<'_>) -> PResult<usize> {
    ws(input);
    let start = *input;
    let digits: PResult<&str> = digit1.parse_next(input);
    match digits {
        Ok(digits) if !input.starts_with(|c: char| is_word_char(c) || c == '.') => {
            digits.parse().map_err(|_| {
                error(
                    start,
                    ErrKind::Invalid,
                    format!("TOP {digits} is too large"),
                )
            })
        }
        _ => Err(expected(&start, "a non-negative integer after TOP")),
    }
}

/// `*` or a comma list of select items.
fn projection(input: &mut Input<'_>) -> PResult<Projection> {
    if eat_char(input, '*') {
        return Ok(Projection::Star);
    }
    let mut items = Vec::new();
    let mut unnamed_counts = 0;
    loop {
        items.push(select_item(input, &mut unnamed_counts)?);
        if !eat_char(input, ',') {
            return Ok(Projection::Items(items));
        }
    }
}

/// `path [AS alias]` or `COUNT() [AS alias]`.
fn select_item(input: &mut Input<'_>, unnamed_counts: &mut usize) -> PResult<SelectItem> {
    ws(input);
    let tail_len = input.len();
    let kind = if is_call(input, "COUNT") {
        let _: PResult<&str> = take_while(1.., is_word_char).parse_next(input);
        expect_char(input, '(', "'('")?;
        expect_char(input, ')', "')' (COUNT takes no arguments)")?;
        ItemKind::Count
    } else if let Some(p) = path(input)? {
        ItemKind::Path(p)
    } else {
        return Err(expected(input, "'*', a property path or COUNT()"));
    };
    let key = if eat_keyword(input, "AS") {
        ws(input);
        match peek_word(input) {
            Some(alias) if is_identifier(alias) && !is_reserved(alias) => {
                let alias = alias.to_owned();
                let _: PResult<&str> = take_while(1.., is_word_char).parse_next(input);
                alias
            }
            _ => return Err(expected(input, "an alias name")),
        }
    } else {
        match &kind {
            ItemKind::Path(p) => p.segments.last().cloned().unwrap_or_default(),
            ItemKind::Count => {
                *unnamed_counts += 1;
                format!("${unnamed_counts}")
            }
        }
    };
    Ok(SelectItem {
        key,
        kind,
        tail_len,
    })
}

/// Is the next thing `name(` (case-insensitive), i.e. a call of `name`?
fn is_call(input: &str, name: &str) -> bool {
    match peek_word(input) {
        Some(word) if word.eq_ignore_ascii_case(name) => input
            .get(word.len()..)
            .is_some_and(|rest| rest.trim_start().starts_with('(')),
        _ => false,
    }
}

/// `devices` or `devices.modules`; any other collection is rejected.
fn source(input: &mut Input<'_>) -> PResult<Source> {
    ws(input);
    let start = *input;
    let Some(p) = path(input)? else {
        return Err(expected(
            input,
            "a collection name (devices, devices.modules or devices.jobs)",
        ));
    };
    let is = |segment: Option<&String>, name: &str| {
        segment.is_some_and(|s| s.eq_ignore_ascii_case(name))
    };
    match p.segments.len() {
        1 if is(p.segments.first(), "devices") => Ok(Source::Devices),
        2 if is(p.segments.first(), "devices") && is(p.segments.get(1), "modules") => {
            Ok(Source::Modules)
        }
        2 if is(p.segments.first(), "devices") && is(p.segments.get(1), "jobs") => {
            Ok(Source::DeviceJobs)
        }
        _ => Err(error(
            start,
            ErrKind::Invalid,
            format!(
                "querying '{p}' is not supported; only devices, devices.modules and devices.jobs can be queried"
            ),
        )),
    }
}

/// Removes a leading `devices.` (or `devices.modules.` for modules) from a path.
fn strip_prefix(path: &mut Path, source: Source) {
    let prefix: &[&str] = match source {
        Source::Devices => &["devices"],
        Source::Modules => &["devices", "modules"],
        Source::DeviceJobs => &["devices", "jobs"],
    };
    let has_prefix = path.segments.len() > prefix.len()
        && path
            .segments
            .iter()
            .zip(prefix)
            .all(|(s, p)| s.eq_ignore_ascii_case(p));
    if has_prefix {
        path.segments.drain(..prefix.len());
    }
}

/// Strips the collection prefix from every path in a condition.
fn strip_cond(cond: &mut Cond, source: Source) {
    let strip_operand = |operand: &mut Operand| {
        if let Operand::Path(p) = operand {
            strip_prefix(p, source);
        }
    };
    match cond {
        Cond::And(all) | Cond::Or(all) => all.iter_mut().for_each(|c| strip_cond(c, source)),
        Cond::Not(inner) => strip_cond(inner, source),
        Cond::Compare(a, _, b) => {
            strip_operand(a);
            strip_operand(b);
        }
        Cond::In { operand, .. } => strip_operand(operand),
        Cond::Call(_, args) => args.iter_mut().for_each(strip_operand),
    }
}

/// Rules between SELECT and GROUP BY, and unique result keys; `projection_tail` places
/// errors about `SELECT *`.
fn validate(query: &Query, projection_tail: usize) -> PResult<()> {
    let Projection::Items(items) = &query.projection else {
        if query.group_by.is_empty() {
            return Ok(());
        }
        return Err(semantic_error(
            projection_tail,
            "SELECT * cannot be used with GROUP BY",
        ));
    };
    // Sets keep validation linear: the query text, not the service, bounds the list sizes.
    let mut keys = HashSet::new();
    for item in items {
        if !keys.insert(item.key.as_str()) {
            return Err(semantic_error(
                item.tail_len,
                format!("duplicate result name '{}'; use AS to rename", item.key),
            ));
        }
    }
    let has_count = items
        .iter()
        .any(|item| matches!(item.kind, ItemKind::Count));
    let grouped: HashSet<&Path> = query.group_by.iter().collect();
    for item in items {
        let ItemKind::Path(p) = &item.kind else {
            continue;
        };
        if !query.group_by.is_empty() && !grouped.contains(p) {
            return Err(semantic_error(
                item.tail_len,
                format!("'{p}' must appear in GROUP BY"),
            ));
        }
        if query.group_by.is_empty() && has_count {
            return Err(semantic_error(
                item.tail_len,
                format!("'{p}' cannot be selected together with COUNT() without GROUP BY"),
            ));
        }
    }
    Ok(())
}

/// A semantic error at a position given as the length of the rest of the text.
fn semantic_error(tail_len: usize, detail: impl Into<String>) -> ErrMode<PErr> {
    ErrMode::Cut(PErr {
        tail_len,
        kind: ErrKind::Invalid,
        detail: detail.into(),
    })
}

/// `and_cond (OR and_cond)*`.
fn or_cond(input: &mut Input<'_>, depth: usize) -> PResult<Cond> {
    let mut any = vec![and_cond(input, depth)?];
    while eat_keyword(input, "OR") {
        any.push(and_cond(input, depth)?);
    }
    Ok(if any.len() == 1 {
        any.swap_remove(0)
    } else {
        Cond::Or(any)
    })
}

/// `unary (AND unary)*`.
fn and_cond(input: &mut Input<'_>, depth: usize) -> PResult<Cond> {
    let mut all = vec![unary(input, depth)?];
    while eat_keyword(input, "AND") {
        all.push(unary(input, depth)?);
    }
    Ok(if all.len() == 1 {
        all.swap_remove(0)
    } else {
        Cond::And(all)
    })
}

/// `NOT unary`, `( cond )`, a function call, or a predicate.
fn unary(input: &mut Input<'_>, depth: usize) -> PResult<Cond> {
    ws(input);
    check_depth(input, depth)?;
    if eat_keyword(input, "NOT") {
        return Ok(Cond::Not(Box::new(unary(input, depth + 1)?)));
    }
    if eat_char(input, '(') {
        let inner = or_cond(input, depth + 1)?;
        expect_char(input, ')', "AND, OR or ')'")?;
        return Ok(inner);
    }
    if let Some(word) = peek_word(input)
        && is_call(input, word)
    {
        return call(input);
    }
    predicate(input, depth)
}

/// `name(args)` for a built-in function.
fn call(input: &mut Input<'_>) -> PResult<Cond> {
    let start = *input;
    let name: &str = take_while(1.., is_word_char).parse_next(input)?;
    let func = function(name).ok_or_else(|| {
        error(
            start,
            ErrKind::Invalid,
            format!("unknown function '{name}'"),
        )
    })?;
    expect_char(input, '(', "'('")?;
    let mut args = Vec::new();
    if !eat_char(input, ')') {
        loop {
            ws(input);
            match operand(input, 0)? {
                Some(arg) => args.push(arg),
                None => return Err(expected(input, "a function argument")),
            }
            if eat_char(input, ')') {
                break;
            }
            expect_char(input, ',', "',' or ')'")?;
        }
    }
    let arity = match func {
        Func::StartsWith | Func::EndsWith => 2,
        _ => 1,
    };
    if args.len() != arity {
        let plural = if arity == 1 { "" } else { "s" };
        return Err(error(
            start,
            ErrKind::Invalid,
            format!(
                "function {} takes {arity} argument{plural}, found {}",
                name.to_ascii_uppercase(),
                args.len()
            ),
        ));
    }
    Ok(Cond::Call(func, args))
}

/// The built-in function called `name` (case-insensitive).
fn function(name: &str) -> Option<Func> {
    const FUNCTIONS: &[(&str, Func)] = &[
        ("IS_DEFINED", Func::IsDefined),
        ("IS_NULL", Func::IsNull),
        ("IS_BOOL", Func::IsBool),
        ("IS_NUMBER", Func::IsNumber),
        ("IS_STRING", Func::IsString),
        ("IS_OBJECT", Func::IsObject),
        ("IS_ARRAY", Func::IsArray),
        ("IS_PRIMITIVE", Func::IsPrimitive),
        ("STARTSWITH", Func::StartsWith),
        ("ENDSWITH", Func::EndsWith),
    ];
    FUNCTIONS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, f)| f)
}

/// `operand <op> operand`, `operand IN [..]` or `operand NIN [..]`.
fn predicate(input: &mut Input<'_>, depth: usize) -> PResult<Cond> {
    let Some(left) = operand(input, depth)? else {
        return Err(expected(input, "a condition"));
    };
    for (kw, negated) in [("IN", false), ("NIN", true)] {
        if eat_keyword(input, kw) {
            ws(input);
            if !input.starts_with('[') {
                return Err(expected(input, &format!("'[' after {kw}")));
            }
            let Value::Array(list) = literal(input, depth)? else {
                return Err(expected(input, "an array"));
            };
            return Ok(Cond::In {
                operand: left,
                list,
                negated,
            });
        }
    }
    ws(input);
    let op: PResult<&str> = alt(("<=", "<>", ">=", "!=", "=", "<", ">")).parse_next(input);
    let op = match op {
        Ok("=") => CmpOp::Eq,
        Ok("!=" | "<>") => CmpOp::Ne,
        Ok("<") => CmpOp::Lt,
        Ok("<=") => CmpOp::Le,
        Ok(">") => CmpOp::Gt,
        Ok(">=") => CmpOp::Ge,
        _ => {
            return Err(expected(
                input,
                "a comparison operator (=, !=, <>, <, <=, >, >=), IN or NIN",
            ));
        }
    };
    ws(input);
    match operand(input, depth)? {
        Some(right) => Ok(Cond::Compare(left, op, right)),
        None => Err(expected(input, "a value or property path")),
    }
}

/// A literal or a path; `None` (nothing consumed) when neither starts here.
fn operand(input: &mut Input<'_>, depth: usize) -> PResult<Option<Operand>> {
    if starts_literal(input) {
        return Ok(Some(Operand::Literal(literal(input, depth)?)));
    }
    Ok(path(input)?.map(Operand::Path))
}

/// Does a literal start here?
fn starts_literal(input: &str) -> bool {
    match input.chars().next() {
        Some('\'' | '"' | '[' | '-') => true,
        Some(c) if c.is_ascii_digit() => true,
        _ => peek_word(input).is_some_and(|w| {
            ["true", "false", "null"]
                .iter()
                .any(|kw| kw.eq_ignore_ascii_case(w))
        }),
    }
}

/// A string, number, boolean, null or array literal (the caller checked one starts here).
fn literal(input: &mut Input<'_>, depth: usize) -> PResult<Value> {
    match input.chars().next() {
        Some('\'' | '"') => string(input).map(Value::String),
        Some('[') => array(input, depth),
        Some(c) if c == '-' || c.is_ascii_digit() => number(input).map(Value::Number),
        _ => match peek_word(input).map(str::to_ascii_lowercase).as_deref() {
            Some(word @ ("true" | "false" | "null")) => {
                let _: PResult<&str> = take_while(1.., is_word_char).parse_next(input);
                Ok(match word {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::Null,
                })
            }
            _ => Err(expected(input, "a literal")),
        },
    }
}

/// `[lit, lit, ...]`, possibly empty.
fn array(input: &mut Input<'_>, depth: usize) -> PResult<Value> {
    check_depth(input, depth + 1)?;
    let _: PResult<char> = '['.parse_next(input);
    let mut items = Vec::new();
    if eat_char(input, ']') {
        return Ok(Value::Array(items));
    }
    loop {
        ws(input);
        if !starts_literal(input) {
            return Err(expected(input, "a literal (array items must be literals)"));
        }
        items.push(literal(input, depth + 1)?);
        if eat_char(input, ']') {
            return Ok(Value::Array(items));
        }
        expect_char(input, ',', "',' or ']'")?;
    }
}

/// `-?digits(.digits)?([eE][+-]?digits)?`, not followed by a word character or `.`.
fn number(input: &mut Input<'_>) -> PResult<Number> {
    let start = *input;
    let text: PResult<&str> = (
        opt('-'),
        digit1,
        opt(('.', digit1)),
        opt((one_of(['e', 'E']), opt(one_of(['+', '-'])), digit1)),
    )
        .take()
        .parse_next(input);
    let invalid = || error(start, ErrKind::Syntax, "invalid number literal");
    let text = text.map_err(|_| invalid())?;
    if input.starts_with(|c: char| is_word_char(c) || c == '.') {
        return Err(invalid());
    }
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Ok(u.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| error(start, ErrKind::Invalid, "number literal out of range"))
}

/// A single- or double-quoted string: the quote doubled or backslash escapes inside.
fn string(input: &mut Input<'_>) -> PResult<String> {
    let start = *input;
    let quote: char = any.parse_next(input)?;
    let mut out = String::new();
    loop {
        let escape_at = *input;
        let next: PResult<Option<char>> = opt(any).parse_next(input);
        match next? {
            None => {
                return Err(error(start, ErrKind::Syntax, "unterminated string literal"));
            }
            Some(c) if c == quote => {
                let doubled: PResult<Option<char>> = opt(quote).parse_next(input);
                if doubled?.is_some() {
                    out.push(quote);
                } else {
                    return Ok(out);
                }
            }
            Some('\\') => out.push(escape(input, &escape_at)?),
            Some(c) => out.push(c),
        }
    }
}

/// The character of a backslash escape (after the backslash).
fn escape(input: &mut Input<'_>, at: &Input<'_>) -> PResult<char> {
    let invalid = || error(at, ErrKind::Syntax, "invalid escape sequence");
    let next: PResult<char> = any.parse_next(input);
    Ok(match next.map_err(|_| invalid())? {
        c @ ('\'' | '"' | '\\' | '/') => c,
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'u' => {
            let high = hex4(input).ok_or_else(invalid)?;
            let code = if (0xD800..0xDC00).contains(&high) {
                // A UTF-16 surrogate pair: `\uD83D\uDE00`.
                let low: PResult<&str> = "\\u".parse_next(input);
                low.map_err(|_| invalid())?;
                let low = hex4(input).ok_or_else(invalid)?;
                if !(0xDC00..0xE000).contains(&low) {
                    return Err(invalid());
                }
                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            } else {
                high
            };
            char::from_u32(code).ok_or_else(invalid)?
        }
        _ => return Err(invalid()),
    })
}

/// Four hex digits as a number.
fn hex4(input: &mut Input<'_>) -> Option<u32> {
    let digits: PResult<&str> = take_while(4, |c: char| c.is_ascii_hexdigit()).parse_next(input);
    u32::from_str_radix(digits.ok()?, 16).ok()
}

/// A property path; `None` (nothing consumed) when no identifier starts here.
fn path(input: &mut Input<'_>) -> PResult<Option<Path>> {
    match peek_word(input) {
        Some(word) if is_identifier(word) && !is_reserved(word) => {}
        _ => return Ok(None),
    }
    let mut segments = vec![identifier(input)?];
    loop {
        if input.starts_with('.') {
            let _: PResult<char> = '.'.parse_next(input);
            match peek_word(input) {
                Some(word) if is_identifier(word) => segments.push(identifier(input)?),
                _ => return Err(expected(input, "a property name after '.'")),
            }
        } else if input.starts_with('[') {
            let _: PResult<char> = '['.parse_next(input);
            ws(input);
            if !input.starts_with(['\'', '"']) {
                return Err(expected(input, "a quoted property name"));
            }
            segments.push(string(input)?);
            expect_char(input, ']', "']'")?;
        } else {
            return Ok(Some(Path { segments }));
        }
    }
}

/// An identifier (the caller checked one is next).
fn identifier(input: &mut Input<'_>) -> PResult<String> {
    let word: &str = take_while(1.., is_word_char).parse_next(input)?;
    Ok(word.to_owned())
}
