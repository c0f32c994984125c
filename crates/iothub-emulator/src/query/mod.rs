//! The IoT Hub query language behind `POST /devices/query`:
//! `SELECT [TOP n] <projection> FROM devices|devices.modules|devices.jobs [WHERE <cond>] [GROUP BY <paths>]`.
//!
//! [`Query::parse`] turns the text into a small syntax tree (see `parse.rs`), and the
//! methods of [`Query`] evaluate it against twin documents (see `eval.rs`).
//!
//! Semantics worth knowing:
//! - A path that is missing from a document is *undefined*. Every comparison, `IN`, `NIN`
//!   and every function except `IS_DEFINED` is false on undefined, and `NOT` simply negates
//!   that: the logic stays two-valued, so `NOT (tags.x = 1)` is true where `tags.x` is
//!   missing.
//! - Values of different JSON types are never equal or ordered: `=`, `<`, … are false and
//!   `!=`/`<>` is true (both sides being defined). Numbers compare numerically (`1 = 1.0`),
//!   strings by code point, booleans, null, arrays and objects only with `=`/`!=`.

mod eval;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{Map, Value};

/// Which collection the query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `FROM devices`: device twins.
    Devices,
    /// `FROM devices.modules`: module twins.
    Modules,
    /// `FROM devices.jobs`: the devices' parts in scheduled jobs.
    DeviceJobs,
}

/// Why a query was rejected; `Display` gives the message the service would return,
/// e.g. "Syntax error at position 17: expected FROM, found 'devices'".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError {
    /// The full, human-readable message (positions are 1-based characters).
    message: String,
}

impl QueryError {
    /// The message, as written by `Display`.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for QueryError {}

/// A parsed query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// The collection after `FROM`.
    source: Source,
    /// `SELECT TOP n`.
    top: Option<usize>,
    /// What each result row holds.
    projection: Projection,
    /// The `WHERE` clause, if any.
    condition: Option<Cond>,
    /// The `GROUP BY` paths; empty when there is no `GROUP BY`.
    group_by: Vec<Path>,
}

/// The `SELECT` list.
#[derive(Debug, Clone)]
enum Projection {
    /// `SELECT *`: the whole document.
    Star,
    /// `SELECT a, b AS c, COUNT()`.
    Items(Vec<SelectItem>),
}

/// One entry of the `SELECT` list.
#[derive(Debug, Clone)]
struct SelectItem {
    /// The key of this value in a result row (alias, last path segment, or `$n`).
    key: String,
    /// What the value is.
    kind: ItemKind,
    /// Bytes from the item's start to the end of the query text, to place later errors.
    tail_len: usize,
}

/// What a `SELECT` entry computes.
#[derive(Debug, Clone)]
enum ItemKind {
    /// The value at a path.
    Path(Path),
    /// `COUNT()`: the number of matching documents (in the group).
    Count,
}

/// A property path such as `properties.reported.temp` or `tags['my key']`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Path {
    /// Object keys from the document root, prefix `devices.` already removed.
    segments: Vec<String>,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.segments.iter().enumerate() {
            if parse::is_identifier(segment) {
                if n > 0 {
                    f.write_str(".")?;
                }
                f.write_str(segment)?;
            } else {
                write!(f, "['{}']", segment.replace('\'', "''"))?;
            }
        }
        Ok(())
    }
}

/// A value in a condition: read from the document, or written in the query.
#[derive(Debug, Clone)]
enum Operand {
    /// A property path, possibly undefined in a document.
    Path(Path),
    /// A literal: string, number, boolean, null or array.
    Literal(Value),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A built-in function usable as a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    /// `IS_DEFINED(x)`
    IsDefined,
    /// `IS_NULL(x)`
    IsNull,
    /// `IS_BOOL(x)`
    IsBool,
    /// `IS_NUMBER(x)`
    IsNumber,
    /// `IS_STRING(x)`
    IsString,
    /// `IS_OBJECT(x)`
    IsObject,
    /// `IS_ARRAY(x)`
    IsArray,
    /// `IS_PRIMITIVE(x)`: null, boolean, number or string.
    IsPrimitive,
    /// `STARTSWITH(s, prefix)`
    StartsWith,
    /// `ENDSWITH(s, suffix)`
    EndsWith,
}

/// A boolean condition (the `WHERE` clause).
///
/// `AND`/`OR` chains are flat vectors so a long chain does not make a deep tree; only
/// parentheses and `NOT` nest, and the parser caps that depth.
#[derive(Debug, Clone)]
enum Cond {
    /// All must hold.
    And(Vec<Cond>),
    /// Any must hold.
    Or(Vec<Cond>),
    /// Negation (two-valued, see the module docs).
    Not(Box<Cond>),
    /// `a <op> b`.
    Compare(Operand, CmpOp, Operand),
    /// `a IN [..]` (or `a NIN [..]` when `negated`).
    In {
        /// The tested value.
        operand: Operand,
        /// The literal list.
        list: Vec<Value>,
        /// True for `NIN`.
        negated: bool,
    },
    /// A function call.
    Call(Func, Vec<Operand>),
}

impl Query {
    /// Parses query text; every malformed query yields an error, never a panic.
    pub(crate) fn parse(text: &str) -> Result<Query, QueryError> {
        parse::parse_query(text)
    }

    /// Which collection the query reads.
    pub(crate) fn source(&self) -> Source {
        self.source
    }

    /// True when the SELECT has COUNT() or the query has GROUP BY: results come from
    /// `aggregate`, not row by row.
    pub(crate) fn is_aggregate(&self) -> bool {
        !self.group_by.is_empty()
            || matches!(&self.projection, Projection::Items(items)
                if items.iter().any(|item| matches!(item.kind, ItemKind::Count)))
    }

    /// True for `SELECT *`: rows are whole twins (the service's `x-ms-item-type: twin`)
    /// rather than projections (`raw`).
    pub(crate) fn is_star(&self) -> bool {
        matches!(self.projection, Projection::Star)
    }

    /// SELECT TOP n, if given.
    pub(crate) fn top(&self) -> Option<usize> {
        self.top
    }

    /// Does this document pass the WHERE clause (true when there is none)?
    pub(crate) fn matches(&self, doc: &Value) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|cond| eval::holds(cond, doc))
    }

    /// The result row for a matching document (non-aggregate queries): the doc itself
    /// (cloned) for SELECT *, else an object of the projected values. Undefined paths are
    /// left out of the row; `COUNT()` items have no per-row value and are left out too.
    pub(crate) fn project(&self, doc: &Value) -> Value {
        match &self.projection {
            Projection::Star => doc.clone(),
            Projection::Items(items) => {
                let mut row = Map::new();
                for item in items {
                    if let ItemKind::Path(path) = &item.kind
                        && let Some(value) = eval::resolve(doc, path)
                    {
                        row.insert(item.key.clone(), value.clone());
                    }
                }
                Value::Object(row)
            }
        }
    }

    /// Aggregate rows over all documents (applies WHERE itself). Without GROUP BY exactly
    /// one row. For a query that is not an aggregate, the projected rows of all matching
    /// documents (TOP not applied), so the result is never silently empty.
    pub(crate) fn aggregate<'a>(&self, docs: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
        let matching = docs.into_iter().filter(|doc| self.matches(doc));
        if !self.is_aggregate() {
            return matching.map(|doc| self.project(doc)).collect();
        }
        let items: &[SelectItem] = match &self.projection {
            Projection::Items(items) => items,
            // Rejected by the parser together with GROUP BY, and not an aggregate alone.
            Projection::Star => &[],
        };
        eval::aggregate(items, &self.group_by, matching)
    }
}
