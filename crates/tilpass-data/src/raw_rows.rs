//! Rows kept as they were written, for commands whose kept rows must pass through unchanged
//! (`tilpass data near-dedup`, `tilpass data pii`): each row's original JSONL line, its JSON
//! value (every field: ids, metadata) and the [`Record`] it parses to.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::error::{DataError, Location, Result};
use crate::reader::{ReadOptions, read_dataset};
use crate::record::{Record, RecordKind};
use crate::spec::{DatasetSpec, load_records};

/// One row of a dataset.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// Where it was: the 1-based line of a JSONL file, the item of a JSON array, or the
    /// 0-based index in a built-in dataset (as an item).
    pub location: Location,
    /// The row as written (a JSONL line without its line break), or re-serialised for JSON
    /// arrays and built-in datasets.
    pub raw: String,
    /// The parsed row.
    pub value: Value,
    /// The record it is.
    pub record: Record,
}

/// Reads every row of a dataset, checking each is a record (of `kind` when given). The first bad row is an error naming file and line
/// ([`DataError::Json`] / [`DataError::Record`]).
pub fn read_raw_rows(spec: &DatasetSpec, kind: Option<RecordKind>) -> Result<Vec<RawRow>> {
    match spec {
        DatasetSpec::Builtin { .. } => Ok(load_records(spec)?
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                let value = record.to_json();
                RawRow {
                    location: Location::Item(i),
                    raw: value.to_string(),
                    value,
                    record,
                }
            })
            .collect()),
        DatasetSpec::File(p) if p.extension().is_some_and(|e| e == "json") => {
            let opts = ReadOptions {
                kind,
                ..Default::default()
            };
            let ds = read_dataset(p, &opts)?;
            Ok(ds
                .records
                .into_iter()
                .zip(ds.locations)
                .map(|(record, location)| {
                    let value = record.to_json();
                    RawRow {
                        location,
                        raw: value.to_string(),
                        value,
                        record,
                    }
                })
                .collect())
        }
        DatasetSpec::File(p) => read_jsonl_rows(p, kind),
    }
}

/// Visits every row of a dataset in order, one at a time, checking each is a record (of `kind`
/// when given), and returns how many there were. A JSONL file is read a line at a time, so the
/// memory does not grow with the file (a JSON array or a built-in dataset is read whole, as
/// [`read_raw_rows`] does). The first bad row stops the visit with an error naming file and line
/// ([`DataError::Json`] / [`DataError::Record`]), after the rows before it were visited; an
/// empty file is [`DataError::Empty`]. `visit`'s own error stops it too.
pub fn for_each_raw_row<E: From<DataError>>(
    spec: &DatasetSpec,
    kind: Option<RecordKind>,
    mut visit: impl FnMut(RawRow) -> std::result::Result<(), E>,
) -> std::result::Result<usize, E> {
    let path = match spec {
        DatasetSpec::File(p) if p.extension().is_none_or(|e| e != "json") => p,
        _ => {
            let rows = read_raw_rows(spec, kind)?;
            let n = rows.len();
            for row in rows {
                visit(row)?;
            }
            return Ok(n);
        }
    };
    let mut n = 0;
    for_each_jsonl_row(path, kind, |row| {
        n += 1;
        visit(row)
    })?;
    if n == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(n)
}

fn for_each_jsonl_row<E: From<DataError>>(
    path: &Path,
    kind: Option<RecordKind>,
    mut visit: impl FnMut(RawRow) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let lines = tilpass_core::TextLines::open(path).map_err(|e| match e {
        tilpass_core::Error::Io { path, source } => DataError::Io { path, source },
        other => DataError::Text(other),
    })?;
    for item in lines {
        let (line, text) = item.map_err(|e| match e {
            tilpass_core::Error::Io { path, source } => DataError::Io { path, source },
            other => DataError::Text(other),
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        let location = Location::Line(line);
        let value: Value = serde_json::from_str(trimmed).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            location,
            message: e.to_string(),
        })?;
        let record = Record::from_json(&value, kind).map_err(|error| DataError::Record {
            path: path.to_path_buf(),
            location,
            error,
        })?;
        visit(RawRow {
            location,
            raw: trimmed.to_string(),
            value,
            record,
        })?;
    }
    Ok(())
}

fn read_jsonl_rows(path: &Path, kind: Option<RecordKind>) -> Result<Vec<RawRow>> {
    let mut rows = Vec::new();
    for_each_jsonl_row(path, kind, |row| -> Result<()> {
        rows.push(row);
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(rows)
}

/// The second pass of a streaming command: reads `spec` again (one row at a time for a JSONL
/// file) and writes the rows for which `keep(i)` is true (`i`: the 0-based row index), as they
/// were written (see [`RawRow::raw`]), into a temporary file beside `out` that replaces `out`
/// only when every row was read — an error, or a panic, leaves `out` as it was. `expected` is
/// the number of rows the first pass saw: a dataset that changed in between is an error
/// ([`DataError::Invalid`]) and writes nothing. Returns the number of rows written.
pub fn write_selected_rows(
    spec: &DatasetSpec,
    kind: Option<RecordKind>,
    expected: usize,
    out: &Path,
    mut keep: impl FnMut(usize) -> bool,
) -> Result<usize> {
    let mut file = tilpass_core::TempFile::create(out)?;
    let io_err = |e: std::io::Error| DataError::Io {
        path: out.to_path_buf(),
        source: e,
    };
    let mut index = 0usize;
    let mut written = 0usize;
    let changed = || {
        DataError::Invalid(format!(
            "{spec}: the dataset changed while it was being processed (the first pass read \
             {expected} rows); nothing was written to {}",
            out.display()
        ))
    };
    for_each_raw_row(spec, kind, |row| -> Result<()> {
        if index >= expected {
            return Err(changed());
        }
        if keep(index) {
            let w = file.writer();
            w.write_all(row.raw.as_bytes()).map_err(io_err)?;
            w.write_all(b"\n").map_err(io_err)?;
            written += 1;
        }
        index += 1;
        Ok(())
    })?;
    if index != expected {
        return Err(changed());
    }
    file.commit()?;
    Ok(written)
}

/// The line number of a location for reports (JSONL line, or item index + 1).
pub fn report_line(location: Location) -> usize {
    match location {
        Location::Line(n) => n,
        Location::Item(i) => i + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> DatasetSpec {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        DatasetSpec::File(p)
    }

    #[test]
    fn streaming_visits_what_reading_returns_and_stops_at_a_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let good = "{\"prompt\": \"a\", \"completion\": \"b\", \"id\": 1}\n\n{\"text\": \"c\"}\n";
        let spec = file(dir.path(), "good.jsonl", good);
        let read = read_raw_rows(&spec, None).unwrap();
        let mut seen = Vec::new();
        let n = for_each_raw_row(&spec, None, |r| -> Result<()> {
            seen.push((r.location, r.raw, r.value));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, read.len());
        let want: Vec<_> = read
            .into_iter()
            .map(|r| (r.location, r.raw, r.value))
            .collect();
        assert_eq!(seen, want);

        let bad = file(
            dir.path(),
            "bad.jsonl",
            "{\"text\": \"c\"}\n{\"messages\": 5}\n",
        );
        let mut visited = 0;
        let err = for_each_raw_row(&bad, None, |_| -> Result<()> {
            visited += 1;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(visited, 1);
        assert!(err.to_string().contains("line 2"), "{err}");

        let empty = file(dir.path(), "empty.jsonl", "\n\n");
        let err = for_each_raw_row(&empty, None, |_| -> Result<()> { Ok(()) }).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
    }

    #[test]
    fn selected_rows_are_written_as_read_and_a_changed_dataset_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"text\": \"a\",  \"id\": 1}\n\n{\"text\": \"b\"}\n{\"text\": \"c\"}\n";
        let spec = file(dir.path(), "in.jsonl", text);
        let out = dir.path().join("out.jsonl");
        let n = write_selected_rows(&spec, None, 3, &out, |i| i != 1).unwrap();
        assert_eq!(n, 2);
        // Kept rows byte for byte (spacing included), the blank line and row 1 gone.
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"text\": \"a\",  \"id\": 1}\n{\"text\": \"c\"}\n"
        );
        // A first pass that saw a different number of rows: an error, `out` untouched, no
        // temporary file left.
        for expected in [2, 4] {
            let err = write_selected_rows(&spec, None, expected, &out, |_| true).unwrap_err();
            assert!(err.to_string().contains("changed"), "{err}");
            assert_eq!(
                std::fs::read_to_string(&out).unwrap(),
                "{\"text\": \"a\",  \"id\": 1}\n{\"text\": \"c\"}\n"
            );
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
