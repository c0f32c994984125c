//! Evaluation of parsed queries against twin documents.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use super::{CmpOp, Cond, Func, ItemKind, Operand, Path, SelectItem};

/// The value at `path`, or `None` when it is undefined (a key is missing or a step is not
/// an object).
pub(super) fn resolve<'a>(doc: &'a Value, path: &Path) -> Option<&'a Value> {
    path.segments
        .iter()
        .try_fold(doc, |value, key| value.as_object()?.get(key))
}

/// The value of an operand in `doc`.
fn value_of<'a>(operand: &'a Operand, doc: &'a Value) -> Option<&'a Value> {
    match operand {
        Operand::Path(path) => resolve(doc, path),
        Operand::Literal(value) => Some(value),
    }
}

/// Does `cond` hold for `doc`? Two-valued: undefined makes a predicate false.
pub(super) fn holds(cond: &Cond, doc: &Value) -> bool {
    match cond {
        Cond::And(all) => all.iter().all(|c| holds(c, doc)),
        Cond::Or(any) => any.iter().any(|c| holds(c, doc)),
        Cond::Not(inner) => !holds(inner, doc),
        Cond::Compare(left, op, right) => match (value_of(left, doc), value_of(right, doc)) {
            (Some(a), Some(b)) => compare(a, *op, b),
            _ => false,
        },
        Cond::In {
            operand,
            list,
            negated,
        } => value_of(operand, doc)
            .is_some_and(|v| list.iter().any(|item| values_equal(v, item)) != *negated),
        Cond::Call(func, args) => call(*func, args, doc),
    }
}

/// A function's result; arity was checked by the parser, a missing argument reads as
/// undefined.
fn call(func: Func, args: &[Operand], doc: &Value) -> bool {
    let arg = |n: usize| args.get(n).and_then(|a| value_of(a, doc));
    let first = arg(0);
    match func {
        Func::IsDefined => first.is_some(),
        Func::IsNull => first.is_some_and(Value::is_null),
        Func::IsBool => first.is_some_and(Value::is_boolean),
        Func::IsNumber => first.is_some_and(Value::is_number),
        Func::IsString => first.is_some_and(Value::is_string),
        Func::IsObject => first.is_some_and(Value::is_object),
        Func::IsArray => first.is_some_and(Value::is_array),
        Func::IsPrimitive => first.is_some_and(|v| !v.is_object() && !v.is_array()),
        Func::StartsWith | Func::EndsWith => {
            match (
                first.and_then(Value::as_str),
                arg(1).and_then(Value::as_str),
            ) {
                (Some(s), Some(affix)) if func == Func::StartsWith => s.starts_with(affix),
                (Some(s), Some(affix)) => s.ends_with(affix),
                _ => false,
            }
        }
    }
}

/// `a <op> b` for two defined values.
fn compare(a: &Value, op: CmpOp, b: &Value) -> bool {
    match op {
        CmpOp::Eq => values_equal(a, b),
        CmpOp::Ne => !values_equal(a, b),
        CmpOp::Lt => order(a, b) == Some(Ordering::Less),
        CmpOp::Le => matches!(order(a, b), Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => order(a, b) == Some(Ordering::Greater),
        CmpOp::Ge => matches!(order(a, b), Some(Ordering::Greater | Ordering::Equal)),
    }
}

/// Ordering for `<`, `<=`, `>`, `>=`: only number/number and string/string are ordered.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_order(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Numeric ordering; integers exactly (as i128), anything else as f64.
fn number_order(x: &Number, y: &Number) -> Option<Ordering> {
    match (integer(x), integer(y)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
    }
}

/// The number as an integer, when it is stored as one.
fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Equality for `=`, `IN` and grouping: numbers numerically, arrays and objects deeply,
/// values of different types never.
pub(super) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_order(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The aggregate rows of `items` over matching `docs`, grouped by `group_by` (one row when
/// it is empty). Groups come out in first-seen order.
pub(super) fn aggregate<'a>(
    items: &[SelectItem],
    group_by: &[Path],
    docs: impl Iterator<Item = &'a Value>,
) -> Vec<Value> {
    // Each group: its key values (None = undefined) and its document count.
    let mut groups: Vec<(Vec<Option<&'a Value>>, u64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    if group_by.is_empty() {
        // Without GROUP BY there is exactly one row, even over no documents.
        groups.push((Vec::new(), 0));
        index.insert(String::new(), 0);
    }
    for doc in docs {
        let key: Vec<Option<&'a Value>> = group_by.iter().map(|p| resolve(doc, p)).collect();
        let slot = *index.entry(group_key(&key)).or_insert_with(|| {
            groups.push((key, 0));
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(slot) {
            group.1 += 1;
        }
    }
    // Where each selected path sits in the group key (None for COUNT()); the parser made
    // sure every selected path is a GROUP BY path.
    let position: HashMap<&Path, usize> =
        group_by.iter().enumerate().map(|(n, p)| (p, n)).collect();
    let slots: Vec<Option<usize>> = items
        .iter()
        .map(|item| match &item.kind {
            ItemKind::Path(path) => position.get(path).copied(),
            ItemKind::Count => None,
        })
        .collect();
    groups
        .into_iter()
        .map(|(key, count)| {
            let mut row = Map::new();
            for (item, slot) in items.iter().zip(&slots) {
                let value = match (&item.kind, slot) {
                    (ItemKind::Count, _) => Some(Value::from(count)),
                    (ItemKind::Path(_), Some(n)) => key.get(*n).copied().flatten().cloned(),
                    (ItemKind::Path(_), None) => None,
                };
                if let Some(value) = value {
                    row.insert(item.key.clone(), value);
                }
            }
            Value::Object(row)
        })
        .collect()
}

/// A canonical text for a group key, so that values equal under [`values_equal`] (e.g. `1`
/// and `1.0`, objects in any key order) land in the same group and undefined differs from
/// null.
fn group_key(values: &[Option<&Value>]) -> String {
    let mut out = String::new();
    for value in values {
        match value {
            None => out.push('u'),
            Some(value) => {
                out.push('d');
                canonical(value, &mut out);
            }
        }
        out.push(';');
    }
    out
}

/// Writes `value` canonically: integral numbers without a fraction, object keys sorted.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => match (integer(n), n.as_f64()) {
            (Some(i), _) => {
                let _ = write!(out, "{i}");
            }
            // Integral floats print like the integers they equal; others in full.
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e36 => {
                let _ = write!(out, "{}", f as i128);
            }
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (k, v) in entries {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
                out.push(',');
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}
