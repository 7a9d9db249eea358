//! Reading and writing the JSONL rows of the jobs: rows with their line numbers (a malformed
//! line is an error naming file and line), string fields, outputs that are not the input.

use std::path::Path;

use serde_json::Value;
use tilpass_data::JsonlRows;

use crate::error::{Result, TrainError};

/// The `(line, row)` pairs of a JSONL file; a malformed line is an error naming file and line.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<(usize, Value)>> {
    JsonlRows::open(path)?.map(|r| row(path, r?)).collect()
}

/// One row of [`JsonlRows`] as `(line, value)`, or an error naming the file and line.
pub(crate) fn row(
    path: &Path,
    (location, parsed): (tilpass_data::Location, std::result::Result<Value, String>),
) -> Result<(usize, Value)> {
    let line = match location {
        tilpass_data::Location::Line(n) | tilpass_data::Location::Item(n) => n,
    };
    parsed
        .map(|v| (line, v))
        .map_err(|message| TrainError::Row {
            path: path.display().to_string(),
            line,
            message,
        })
}

/// The string field `name` of a row, or an error naming file, line and field.
pub(crate) fn text_field<'a>(
    row: &'a Value,
    name: &str,
    path: &Path,
    line: usize,
) -> Result<&'a str> {
    row[name].as_str().ok_or_else(|| TrainError::Row {
        path: path.display().to_string(),
        line,
        message: format!("no string field `{name}`"),
    })
}

/// An error unless the output `out` is another file than the input `data`.
pub(crate) fn distinct_output(out: &Path, data: &Path) -> Result<()> {
    if same_file(out, data) {
        return Err(TrainError::setting(
            "out",
            out.display(),
            format!(
                "another file than the input `data` ({}): the output would replace it",
                data.display()
            ),
        ));
    }
    Ok(())
}

/// Whether two paths name the same existing file (or the same path).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// `{label: probability}` in label order.
pub(crate) fn by_label<P: Into<Value> + Copy>(names: &[String], probs: &[P]) -> Value {
    Value::Object(
        names
            .iter()
            .zip(probs)
            .map(|(n, p)| (n.clone(), (*p).into()))
            .collect(),
    )
}
