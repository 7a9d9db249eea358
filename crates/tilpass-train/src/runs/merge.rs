//! `tilpass merge-shards`: the outputs of the `--shard i/n` parts of a `predict` or `annotate`
//! job, checked for completeness and put back in input order (one window from each shard in
//! turn, see [`super::stream`]), written atomically — the bytes a single process writes.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::stream::{Sidecar, sidecar_path};
use crate::error::{Result, TrainError};

/// What [`merge_shards`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeOutcome {
    /// Rows in the merged output.
    pub rows: usize,
    /// Shards merged.
    pub shards: usize,
    /// The merged output.
    pub out: PathBuf,
}

fn bad(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Resume {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Merges the shard outputs `parts` (any order) into `out`. Every part must be complete (its
/// sidecar `<part>.run.json` says so), of the same job, settings (but `shard`), window and
/// input (size, first MiB and whole-file SHA-256); the shards `0..n` must each be there exactly
/// once, and each part must hold exactly the rows of its windows. `out` appears whole or not
/// at all, with a sidecar of the unsharded job.
pub fn merge_shards(parts: &[PathBuf], out: &Path) -> Result<MergeOutcome> {
    let Some(first) = parts.first() else {
        return Err(TrainError::MissingSetting {
            setting: "parts".into(),
            flag: "parts (the shard outputs)".into(),
        });
    };
    let mut sides: Vec<(PathBuf, Sidecar, super::Shard)> = Vec::with_capacity(parts.len());
    for p in parts {
        super::jsonl::distinct_output(out, p)?;
        let sp = sidecar_path(p);
        if !sp.is_file() {
            return Err(bad(
                p,
                format!(
                    "no sidecar {}: not a finished `--shard` output (a partial one is {}.partial)",
                    sp.display(),
                    p.display()
                ),
            ));
        }
        let s: Sidecar = tilpass_core::read_json(&sp)?;
        if !s.complete || !p.is_file() {
            return Err(bad(
                p,
                "incomplete: its shard has not finished (run the same command again to continue it)",
            ));
        }
        let Some(shard) = s.shard()? else {
            return Err(bad(p, "not a shard output (its run had no `shard`)"));
        };
        sides.push((p.clone(), s, shard));
    }
    let strip = |s: &Sidecar| {
        let mut c = s.config.clone();
        if let Value::Object(m) = &mut c {
            m.shift_remove("shard");
        }
        c
    };
    let (_, s0, sh0) = &sides[0];
    let n = sh0.count;
    let config = strip(s0);
    let window = s0.window()?;
    for (p, s, sh) in &sides[1..] {
        let differs = if s.job != s0.job {
            Some(format!("job `{}` (not `{}`)", s.job, s0.job))
        } else if strip(s) != config {
            Some("other settings".to_string())
        } else if sh.count != n {
            Some(format!("shard {sh} (not of {n})"))
        } else if s.input != s0.input
            || s.input_sha256 != s0.input_sha256
            || s.input_rows != s0.input_rows
        {
            Some("another input file (fingerprint or row count differ)".to_string())
        } else {
            None
        };
        if let Some(d) = differs {
            return Err(bad(p, format!("{d} than {}", first.display())));
        }
    }
    let mut by_index: Vec<Option<&(PathBuf, Sidecar, super::Shard)>> = vec![None; n];
    for e in &sides {
        if let Some(prev) = by_index[e.2.index] {
            return Err(bad(
                &e.0,
                format!("shard {} is given twice (also {})", e.2, prev.0.display()),
            ));
        }
        by_index[e.2.index] = Some(e);
    }
    if let Some(i) = by_index.iter().position(Option::is_none) {
        return Err(TrainError::setting(
            "parts",
            format!("{} files", parts.len()),
            format!("the outputs of all {n} shards: shard {i}/{n} is missing"),
        ));
    }
    let total = s0
        .input_rows
        .ok_or_else(|| bad(first, "its sidecar has no `input_rows`"))?;
    let windows = total.div_ceil(window);
    let mut readers = Vec::with_capacity(n);
    for e in by_index.iter().flatten() {
        let want = (0..windows)
            .filter(|w| e.2.owns(*w))
            .map(|w| window.min(total - w * window))
            .sum::<usize>();
        if e.1.rows != Some(want) {
            return Err(bad(
                &e.0,
                format!(
                    "holds {:?} rows; shard {} of {total} rows in windows of {window} has {want}",
                    e.1.rows, e.2
                ),
            ));
        }
        let f = File::open(&e.0).map_err(|x| tilpass_core::Error::io(&e.0, x))?;
        readers.push((e.0.clone(), BufReader::new(f)));
    }
    let mut tmp = tilpass_core::TempFile::create(out)?;
    let mut line = Vec::new();
    for w in 0..windows {
        let (path, r) = &mut readers[w % n];
        for _ in 0..window.min(total - w * window) {
            line.clear();
            let got = r
                .read_until(b'\n', &mut line)
                .map_err(|x| tilpass_core::Error::io(&*path, x))?;
            if got == 0 || line.last() != Some(&b'\n') {
                return Err(bad(path, "ends before the rows its sidecar counts"));
            }
            tmp.writer()
                .write_all(&line)
                .map_err(|x| tilpass_core::Error::io(out, x))?;
        }
    }
    for (path, r) in &mut readers {
        line.clear();
        let extra = r
            .read_until(b'\n', &mut line)
            .map_err(|x| tilpass_core::Error::io(&*path, x))?;
        if extra != 0 {
            return Err(bad(path, "holds more rows than its sidecar counts"));
        }
    }
    let mut side = s0.clone();
    side.config = config;
    if let Value::Object(m) = &mut side.config {
        m.insert("shard".into(), Value::Null);
    }
    side.rows = Some(total);
    tmp.commit()?;
    let text =
        serde_json::to_string_pretty(&side).map_err(|e| TrainError::Config(e.to_string()))?;
    tilpass_core::write_atomic(sidecar_path(out), text.as_bytes())?;
    Ok(MergeOutcome {
        rows: total,
        shards: n,
        out: out.to_path_buf(),
    })
}
