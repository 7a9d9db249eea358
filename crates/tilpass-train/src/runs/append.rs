//! Resumable JSONL outputs for the data-generation jobs (`data translate`, `data
//! self-instruct`): rows are appended one complete line at a time and flushed, and the job's
//! config is recorded beside the output in `OUT.run.json` ([`sidecar_path`]).
//!
//! Starting a job on an output that already holds rows resumes it: the sidecar must hold the
//! same config (else [`TrainError::Resume`] naming the first setting that differs, with both
//! values), every complete line must be a JSON object, and a torn last line (one without its
//! newline, left by a kill) is cut off so that its row is produced again. An output with rows
//! but no sidecar is someone else's file and is refused.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Result, TrainError};

/// The version of the sidecar's layout.
const SIDECAR_VERSION: u64 = 1;

/// `OUT.run.json`: where a job records its config beside its output `out`.
pub fn sidecar_path(out: &Path) -> PathBuf {
    with_suffix(out, ".run.json")
}

/// `out` with `suffix` appended to its file name (`data.jsonl` → `data.jsonl.run.json`).
pub fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    out.with_file_name(name)
}

/// An append-only JSONL file: each [`AppendJsonl::push`] writes one whole line and flushes it.
pub struct AppendJsonl {
    path: PathBuf,
    file: BufWriter<File>,
}

impl AppendJsonl {
    /// Appends `row` as one line and flushes it to the file.
    pub fn push(&mut self, row: &Value) -> Result<()> {
        let line = format!("{row}\n");
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| tilpass_core::Error::io(&self.path, e).into())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Calls `each` on the complete rows of an existing output, one line at a time, and cuts the
/// file back to them (a torn last line is dropped); a missing file has none.
fn scan_complete_rows(path: &Path, each: &mut dyn FnMut(Value)) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(tilpass_core::Error::io(path, e).into()),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let (mut complete, mut total) = (0u64, 0u64);
    for i in 1.. {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| tilpass_core::Error::io(path, e))?;
        total += n as u64;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match serde_json::from_slice::<Value>(&line[..line.len() - 1]) {
            Ok(v @ Value::Object(_)) => each(v),
            _ => {
                return Err(TrainError::Row {
                    path: path.display().to_string(),
                    line: i,
                    message: "not a JSON object: this output holds foreign content (give \
                              another --out)"
                        .into(),
                });
            }
        }
        complete = total;
    }
    if complete < total {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| tilpass_core::Error::io(path, e))?;
        f.set_len(complete)
            .map_err(|e| tilpass_core::Error::io(path, e))?;
    }
    Ok(())
}

/// The complete rows of an existing output ([`scan_complete_rows`]).
fn complete_rows(path: &Path) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    scan_complete_rows(path, &mut |v| rows.push(v))?;
    Ok(rows)
}

fn open_append(path: &Path) -> Result<AppendJsonl> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| tilpass_core::Error::io(path, e))?;
    Ok(AppendJsonl {
        path: path.to_path_buf(),
        file: BufWriter::new(file),
    })
}

/// The first key whose value differs between two config objects, with both values.
fn first_difference(was: &Value, is: &Value) -> Option<(String, Value, Value)> {
    let (Some(a), Some(b)) = (was.as_object(), is.as_object()) else {
        return (was != is).then(|| ("config".to_string(), was.clone(), is.clone()));
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.dedup();
    keys.into_iter().find_map(|k| {
        let (x, y) = (
            a.get(k).cloned().unwrap_or(Value::Null),
            b.get(k).cloned().unwrap_or(Value::Null),
        );
        (x != y).then(|| (k.clone(), x, y))
    })
}

/// Opens the outputs of a job for appending, resuming an earlier run of the same config.
///
/// `files[0]` is the job's output `out`; the others (a rejects report) belong to it and resume
/// with it. `config` (a JSON object) is what the sidecar `OUT.run.json` records for `job`.
/// Returns the complete rows already in each file, and the files opened for appending.
///
/// Errors, before anything is written: an output equal to one of `inputs`; rows in the
/// outputs but no sidecar (foreign content); a sidecar of another job or config.
pub fn open_resumable(
    job: &str,
    files: &[&Path],
    config: &Value,
    inputs: &[&Path],
) -> Result<(Vec<Vec<Value>>, Vec<AppendJsonl>)> {
    check_resumable(job, files, config, inputs)?;
    let mut rows = Vec::with_capacity(files.len());
    let mut writers = Vec::with_capacity(files.len());
    for f in files {
        rows.push(complete_rows(f)?);
        writers.push(open_append(f)?);
    }
    Ok((rows, writers))
}

/// [`open_resumable`] for a job that only needs to know how many rows each output holds (a
/// translation of a large file): the outputs are read a line at a time and not kept, so
/// resuming takes memory independent of their size.
pub fn open_resumable_counted(
    job: &str,
    files: &[&Path],
    config: &Value,
    inputs: &[&Path],
) -> Result<(Vec<usize>, Vec<AppendJsonl>)> {
    check_resumable(job, files, config, inputs)?;
    let mut counts = Vec::with_capacity(files.len());
    let mut writers = Vec::with_capacity(files.len());
    for f in files {
        let mut n = 0usize;
        scan_complete_rows(f, &mut |_| n += 1)?;
        counts.push(n);
        writers.push(open_append(f)?);
    }
    Ok((counts, writers))
}

/// The checks of [`open_resumable`], and the sidecar of a new run.
fn check_resumable(job: &str, files: &[&Path], config: &Value, inputs: &[&Path]) -> Result<()> {
    let out = files[0];
    for f in files {
        tilpass_core::check_output_is_not_input("out", f, inputs)?;
    }
    let sidecar = sidecar_path(out);
    let has_content = files
        .iter()
        .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0));
    if has_content {
        if !sidecar.is_file() {
            return Err(TrainError::setting(
                "out",
                out.display(),
                format!(
                    "a new file or the output of an earlier `{job}` run: it holds rows but \
                     there is no {} beside it (foreign content; give another --out)",
                    sidecar.display()
                ),
            ));
        }
        let saved: Value = tilpass_core::read_json(&sidecar)?;
        if saved["job"] != json!(job) {
            return Err(TrainError::Resume {
                path: sidecar.display().to_string(),
                message: format!(
                    "records a `{}` run, not `{job}`: give another --out",
                    saved["job"]
                ),
            });
        }
        if let Some((key, was, is)) = first_difference(&saved["config"], config) {
            return Err(TrainError::Resume {
                path: sidecar.display().to_string(),
                message: format!(
                    "the output holds a run with `{key}` = {was}; this run has {is}: \
                     resume with the same settings, or give another --out"
                ),
            });
        }
    } else {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
        }
        let record = json!({"job": job, "version": SIDECAR_VERSION, "config": config});
        let text =
            serde_json::to_string_pretty(&record).map_err(|e| TrainError::Config(e.to_string()))?;
        tilpass_core::write_atomic(&sidecar, text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_line_is_cut_and_a_foreign_file_or_other_config_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.jsonl");
        let cfg = json!({"to": "nb"});
        let (rows, mut w) = open_resumable("translate", &[&out], &cfg, &[]).unwrap();
        assert!(rows[0].is_empty());
        w[0].push(&json!({"a": 1})).unwrap();
        w[0].push(&json!({"a": 2})).unwrap();
        drop(w);
        let mut text = std::fs::read_to_string(&out).unwrap();
        text.push_str("{\"a\": 3");
        std::fs::write(&out, &text).unwrap();
        let (rows, _) = open_resumable("translate", &[&out], &cfg, &[]).unwrap();
        assert_eq!(rows[0], vec![json!({"a": 1}), json!({"a": 2})]);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        // Counting: the same rows, a torn line cut the same way.
        std::fs::write(&out, format!("{text}}}\n{{\"a\": 4")).unwrap();
        let (counts, _) = open_resumable_counted("translate", &[&out], &cfg, &[]).unwrap();
        assert_eq!(counts, vec![3]);
        assert!(
            std::fs::read_to_string(&out)
                .unwrap()
                .ends_with("{\"a\": 3}\n")
        );
        let Err(e) = open_resumable("translate", &[&out], &json!({"to": "nn"}), &[]) else {
            panic!("config mismatch accepted")
        };
        assert!(e.to_string().contains("`to` = \"nb\""), "{e}");
        std::fs::remove_file(sidecar_path(&out)).unwrap();
        let Err(e) = open_resumable("translate", &[&out], &cfg, &[]) else {
            panic!("foreign content accepted")
        };
        assert!(e.to_string().contains("foreign content"), "{e}");
    }
}
