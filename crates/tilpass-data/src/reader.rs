//! Reading datasets from JSONL (one object per line) and JSON (an array of objects) files.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DataError, Location, RecordError, Result};
use crate::record::{Record, RecordKind};

/// How to read a dataset file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadOptions {
    /// Force a record kind; by default the kind of the first valid row is used and every later
    /// row must be of the same kind.
    pub kind: Option<RecordKind>,
    /// Drop invalid rows (counted in [`ReadReport::skipped`]) instead of failing on the first.
    pub skip_invalid: bool,
    /// At most this many skipped rows are described individually in the report.
    pub max_reported: Option<usize>,
    /// The longest JSONL line accepted, in bytes (default
    /// [`tilpass_core::limits::DEFAULT_MAX_LINE_BYTES`], 64 MiB); a longer line is an error
    /// naming its line (skipped with `skip_invalid`), and never held in memory whole.
    pub max_line_bytes: Option<usize>,
}

/// A row that was dropped by `skip_invalid`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedRow {
    /// Where it was.
    pub location: Location,
    /// Why it was dropped.
    pub reason: String,
}

/// What reading a file did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReadReport {
    /// The file.
    pub path: PathBuf,
    /// Rows seen (blank lines excluded).
    pub rows: usize,
    /// Rows kept.
    pub kept: usize,
    /// Number of rows dropped as invalid.
    pub skipped_count: usize,
    /// The first dropped rows and why (see [`ReadOptions::max_reported`]).
    pub skipped: Vec<SkippedRow>,
    /// The kind of the rows kept.
    pub kind: Option<RecordKind>,
}

/// A dataset held in memory, with where each record came from.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// The records.
    pub records: Vec<Record>,
    /// The location of each record in its file (same length as `records`).
    pub locations: Vec<Location>,
    /// How the file was read.
    pub report: ReadReport,
}

impl Dataset {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there is no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// File format, from the extension: `.json` is a JSON array, anything else JSONL.
fn is_json_array(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

struct Collector<'a> {
    path: &'a Path,
    opts: &'a ReadOptions,
    kind: Option<RecordKind>,
    ds: Dataset,
}

impl<'a> Collector<'a> {
    fn new(path: &'a Path, opts: &'a ReadOptions) -> Self {
        Self {
            path,
            opts,
            kind: opts.kind,
            ds: Dataset {
                report: ReadReport {
                    path: path.to_path_buf(),
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    }

    fn fail(&mut self, location: Location, err: DataError) -> Result<()> {
        if !self.opts.skip_invalid {
            return Err(err);
        }
        let r = &mut self.ds.report;
        r.skipped_count += 1;
        if r.skipped.len() < self.opts.max_reported.unwrap_or(20) {
            let reason = match &err {
                DataError::Json { message, .. } => format!("invalid JSON: {message}"),
                DataError::Record { error, .. } => error.to_string(),
                other => other.to_string(),
            };
            r.skipped.push(SkippedRow { location, reason });
        }
        Ok(())
    }

    fn push_value(&mut self, location: Location, value: &Value) -> Result<()> {
        self.ds.report.rows += 1;
        // A row whose keys clearly say another kind than earlier rows is reported as such.
        if let (None, Some(k), Some(d)) = (
            self.opts.kind,
            self.kind,
            value.as_object().and_then(RecordKind::detect),
        ) && d != k
        {
            let err = RecordError::record(format!(
                "row is {} but earlier rows are {}; a file must hold one kind",
                d.as_str(),
                k.as_str()
            ));
            return self.fail(location, self.record_err(location, err));
        }
        match Record::from_json(value, self.kind) {
            Ok(record) => {
                let kind = record_kind_for_consistency(value, &record);
                match self.kind {
                    None => self.kind = Some(kind),
                    Some(k) if self.opts.kind.is_none() && k != kind => {
                        let err = RecordError::record(format!(
                            "row is {} but earlier rows are {}; a file must hold one kind",
                            kind.as_str(),
                            k.as_str()
                        ));
                        return self.fail(location, self.record_err(location, err));
                    }
                    _ => {}
                }
                self.ds.records.push(record);
                self.ds.locations.push(location);
                Ok(())
            }
            Err(e) => {
                let err = self.record_err(location, e);
                self.fail(location, err)
            }
        }
    }

    fn record_err(&self, location: Location, error: RecordError) -> DataError {
        DataError::Record {
            path: self.path.to_path_buf(),
            location,
            error,
        }
    }

    fn finish(mut self) -> Result<Dataset> {
        self.ds.report.kept = self.ds.records.len();
        self.ds.report.kind = self.kind;
        if self.ds.records.is_empty() && self.ds.report.skipped_count == 0 {
            return Err(DataError::Empty {
                path: self.path.to_path_buf(),
            });
        }
        Ok(self.ds)
    }
}

fn record_kind_for_consistency(value: &Value, record: &Record) -> RecordKind {
    // Alpaca rows become conversations; keep reporting them as Alpaca.
    match value.as_object().and_then(RecordKind::detect) {
        Some(RecordKind::Alpaca) => RecordKind::Alpaca,
        _ => record.kind(),
    }
}

/// Reads a whole JSONL or JSON-array file.
///
/// Errors name the file, the line (JSONL) or item (JSON array), and the field.
pub fn read_dataset(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Dataset> {
    let path = path.as_ref();
    let io = |e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut c = Collector::new(path, opts);
    if is_json_array(path) {
        let bytes = std::fs::read(path).map_err(io)?;
        let text = tilpass_core::decode_utf8(path, bytes)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            location: Location::Line(e.line()),
            message: e.to_string(),
        })?;
        let items = match value {
            Value::Array(items) => items,
            // Also accept {"data": [...]}, a common export shape.
            Value::Object(mut o) if o.get("data").is_some_and(Value::is_array) => {
                match o.remove("data") {
                    Some(Value::Array(items)) => items,
                    _ => unreachable!("checked above"),
                }
            }
            _ => {
                return Err(DataError::Json {
                    path: path.to_path_buf(),
                    location: Location::Line(1),
                    message: "expected a JSON array of records (or JSONL with a .jsonl extension)"
                        .into(),
                });
            }
        };
        for (i, v) in items.iter().enumerate() {
            c.push_value(Location::Item(i), v)?;
        }
    } else {
        let max = opts
            .max_line_bytes
            .unwrap_or(tilpass_core::limits::DEFAULT_MAX_LINE_BYTES);
        for row in JsonlRows::open_with_limit(path, max)? {
            let (location, parsed) = match row {
                Ok(r) => r,
                // A line that is not UTF-8 or too long is one bad row, not a broken file.
                Err(DataError::Text(
                    e @ (tilpass_core::Error::InvalidUtf8 { line, .. }
                    | tilpass_core::Error::LineTooLong { line, .. }),
                )) => {
                    c.ds.report.rows += 1;
                    c.fail(Location::Line(line), DataError::Text(e))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match parsed {
                Ok(v) => c.push_value(location, &v)?,
                Err(message) => {
                    c.ds.report.rows += 1;
                    let err = DataError::Json {
                        path: path.to_path_buf(),
                        location,
                        message,
                    };
                    c.fail(location, err)?;
                }
            }
        }
    }
    c.finish()
}

/// An iterator over the JSON values of a JSONL file, for streaming through files too large to
/// hold in memory. Blank lines are skipped and a UTF-8 byte-order mark at the start is dropped.
/// Each item is `(line, Ok(value) | Err(json error))`; the outer `Result` is an I/O error, or
/// [`DataError::Text`] for a line that is not UTF-8 or longer than the limit (iteration may
/// go on past those).
pub struct JsonlRows {
    lines: tilpass_core::TextLines,
}

impl JsonlRows {
    /// Opens a JSONL file with lines of at most
    /// [`tilpass_core::limits::DEFAULT_MAX_LINE_BYTES`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_limit(path, tilpass_core::limits::DEFAULT_MAX_LINE_BYTES)
    }

    /// Opens a JSONL file with lines of at most `max_line_bytes` bytes.
    pub fn open_with_limit(path: impl AsRef<Path>, max_line_bytes: usize) -> Result<Self> {
        let path = path.as_ref();
        let lines = tilpass_core::TextLines::open_with_limit(path, max_line_bytes).map_err(
            |e| match e {
                tilpass_core::Error::Io { path, source } => DataError::Io { path, source },
                other => DataError::Text(other),
            },
        )?;
        Ok(Self { lines })
    }
}

impl Iterator for JsonlRows {
    type Item = Result<(Location, std::result::Result<Value, String>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (line, text) = match self.lines.next()? {
                Ok(l) => l,
                Err(tilpass_core::Error::Io { path, source }) => {
                    return Some(Err(DataError::Io { path, source }));
                }
                Err(e) => return Some(Err(DataError::Text(e))),
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
            return Some(Ok((Location::Line(line), parsed)));
        }
    }
}

/// Streams records from a JSONL file, one at a time; invalid rows are errors naming their line.
pub fn stream_records(
    path: impl AsRef<Path>,
    kind: Option<RecordKind>,
) -> Result<impl Iterator<Item = Result<(Location, Record)>>> {
    let path = path.as_ref().to_path_buf();
    let rows = JsonlRows::open(&path)?;
    Ok(rows.map(move |row| {
        let (location, parsed) = row?;
        let value = parsed.map_err(|message| DataError::Json {
            path: path.clone(),
            location,
            message,
        })?;
        Record::from_json(&value, kind)
            .map(|r| (location, r))
            .map_err(|error| DataError::Record {
                path: path.clone(),
                location,
                error,
            })
    }))
}

/// Writes records as JSONL in TRL's format, atomically.
pub fn write_jsonl<'a>(
    path: impl AsRef<Path>,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<()> {
    let path = path.as_ref();
    tilpass_core::write_atomic_with(path, |w| {
        for r in records {
            serde_json::to_writer(&mut *w, &r.to_json())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        tilpass_core::Error::Io { path, source } => DataError::Io { path, source },
        other => DataError::Invalid(other.to_string()),
    })
}
