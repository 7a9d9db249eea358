//! Reading and writing the JSONL rows of the jobs: rows with their line numbers (a malformed
//! line is an error naming file and line), string fields, and an output file that appears
//! whole or not at all.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// A JSONL output written to a temporary file and moved into place when complete.
pub(crate) struct JsonlOut {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<std::io::BufWriter<std::fs::File>>,
}

impl Drop for JsonlOut {
    /// An unfinished output (the job failed) leaves nothing behind.
    fn drop(&mut self) {
        if self.w.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl JsonlOut {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        let f = std::fs::File::create(&tmp).map_err(|e| tilpass_core::Error::io(&tmp, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            w: Some(std::io::BufWriter::new(f)),
        })
    }

    pub(crate) fn write(&mut self, row: &Value) -> Result<()> {
        let w = self.w.as_mut().expect("open until finish");
        writeln!(w, "{row}").map_err(|e| tilpass_core::Error::io(&self.tmp, e).into())
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        let mut w = self.w.take().expect("open until finish");
        let written = w.flush().and_then(|()| {
            drop(w);
            std::fs::rename(&self.tmp, &self.path)
        });
        written.map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            tilpass_core::Error::io(&self.path, e).into()
        })
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
