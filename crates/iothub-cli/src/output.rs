//! Printing results: JSON as the service returns it (the default), JSON lines, a table or
//! TSV, after an optional JMESPath expression, as `az --output/--query` do.

use std::io::Write as _;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Map, Value};

use crate::cli::OutputFormat;
use crate::error::{CliError, Result};
use crate::values::JmesPath;

/// Where results go, and how.
#[derive(Debug, Clone)]
pub(crate) struct Printer {
    format: OutputFormat,
    query: Option<JmesPath>,
}

impl Printer {
    /// A printer for `--output` and `--query`.
    pub(crate) fn new(format: OutputFormat, query: Option<JmesPath>) -> Self {
        Self { format, query }
    }

    /// Whether items of a list are printed as they come (JSON lines), rather than collected.
    pub(crate) fn streams(&self) -> bool {
        self.format == OutputFormat::Jsonl
    }

    /// Prints one result (an object, or a list as one array).
    pub(crate) fn print(&self, value: impl serde::Serialize) -> Result<()> {
        let value = serde_json::to_value(value)
            .map_err(|e| CliError::Other(format!("cannot print the result: {e}")))?;
        let value = self.apply(value)?;
        write_out(&self.render(&value))
    }

    /// Prints one item of a streamed list, on its own line, the query applied to the item.
    pub(crate) fn print_item(&self, value: Value) -> Result<()> {
        let value = self.apply(value)?;
        let mut line = serde_json::to_string(&value).unwrap_or_default();
        line.push('\n');
        write_out(&line)
    }

    fn apply(&self, value: Value) -> Result<Value> {
        let Some(query) = &self.query else {
            return Ok(value);
        };
        let found = query
            .0
            .search(value)
            .map_err(|e| CliError::usage(format!("--query: {e}")))?;
        serde_json::to_value(&*found).map_err(|e| CliError::Other(format!("--query: {e}")))
    }

    fn render(&self, value: &Value) -> String {
        match self.format {
            OutputFormat::Json => {
                let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
                text.push('\n');
                text
            }
            OutputFormat::Jsonl => match value {
                Value::Array(items) => items.iter().map(compact_line).collect(),
                other => compact_line(other),
            },
            OutputFormat::Table => table(value),
            OutputFormat::Tsv => tsv(value),
        }
    }
}

fn compact_line(value: &Value) -> String {
    let mut line = serde_json::to_string(value).unwrap_or_default();
    line.push('\n');
    line
}

/// Writes to standard output; a reader that went away (`| head`) ends the output quietly.
fn write_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::File {
            path: "standard output".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The rows of a result: a list's items, or the one value.
fn rows(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// The columns of a table: the top-level fields holding a scalar, in order of first
/// appearance (nested objects do not fit a cell; `--query` picks them out, as with `az`).
fn columns(rows: &[&Value]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        if let Value::Object(map) = row {
            for (k, v) in map {
                if !v.is_object() && !v.is_array() && !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    columns
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn cells(row: &Value, columns: &[String]) -> Vec<String> {
    match row {
        Value::Object(map) => columns.iter().map(|c| cell(map.get(c))).collect(),
        scalar => vec![cell(Some(scalar))],
    }
}

fn table(value: &Value) -> String {
    let rows = rows(value);
    let mut columns = columns(&rows);
    if columns.is_empty() {
        columns.push("Result".into());
    }
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| header(c)));
    for row in &rows {
        table.add_row(cells(row, &columns));
    }
    format!("{table}\n")
}

/// `deviceId` → `DeviceId`, as `az` titles its columns.
fn header(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn tsv(value: &Value) -> String {
    let rows = rows(value);
    let columns = columns(&rows);
    rows.iter()
        .map(|row| {
            let mut line = cells(row, &columns)
                .into_iter()
                .map(|c| c.replace(['\t', '\n'], " "))
                .collect::<Vec<_>>()
                .join("\t");
            line.push('\n');
            line
        })
        .collect()
}

/// A JSON object from pairs, for results the CLI composes (`{"connectionString": …}`).
pub(crate) fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_and_tsv_show_top_level_scalars() {
        let rows = json!([{"deviceId": "a", "status": "enabled", "tags": {"x": 1}},
                          {"deviceId": "b", "version": 2}]);
        let tsv = tsv(&rows);
        assert_eq!(tsv, "a\tenabled\t\nb\t\t2\n");
        let table = table(&rows);
        assert!(table.contains("DeviceId"), "{table}");
        assert!(!table.contains("Tags"), "{table}");
    }

    #[test]
    fn jsonl_prints_a_list_one_item_per_line() {
        let p = Printer::new(OutputFormat::Jsonl, None);
        assert_eq!(p.render(&json!([1, {"a": 2}])), "1\n{\"a\":2}\n");
    }
}
