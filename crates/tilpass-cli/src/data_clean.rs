//! `tilpass data near-dedup` and `tilpass data pii`: JSONL in, JSONL out; kept rows pass
//! through unchanged (every field, input order), the output and report are written atomically,
//! a summary JSON goes to stdout and progress to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};
use tilpass::Result;
use tilpass::data::minhash::{MinHashScheme, Shingles};
use tilpass::data::near_dedup::{NearDedupConfig, NearDedupStream, record_text};
use tilpass::data::pii::{PiiCounts, redact_row};
use tilpass::data::raw_rows::{for_each_raw_row, report_line, write_selected_rows};
use tilpass::data::{DatasetSpec, Location, RecordKind};
use tilpass::train::count_spinner;

use crate::common::{finite_f64, print};

/// Input and output of a cleaning command.
#[derive(Args)]
pub struct CleanIo {
    /// Dataset: a JSONL (or JSON array) file in a TRL format, or `builtin:norsk-chat[:eval]`,
    /// `builtin:norsk-pref[:eval]`.
    file: String,
    /// Output JSONL file (written whole or not at all).
    #[arg(long)]
    out: PathBuf,
    /// JSONL report of what was changed or removed, one line per row.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Force the record kind (language_modeling, prompt_only, prompt_completion, preference,
    /// unpaired_preference, alpaca).
    #[arg(long)]
    format: Option<RecordKind>,
    /// Replace existing `--out` / `--report` files (without it such a file is an error).
    #[arg(long)]
    overwrite: bool,
}

/// `tilpass data near-dedup` settings.
#[derive(Args)]
pub struct NearDedupArgs {
    #[command(flatten)]
    io: CleanIo,
    /// Estimated Jaccard similarity at or above which rows are near-duplicates.
    #[arg(long, default_value = "0.8", value_parser = finite_f64)]
    threshold: f64,
    /// MinHash permutations.
    #[arg(long, default_value_t = 128)]
    num_perm: usize,
    /// Shingles: words:N or chars:N (text lower-cased, white space collapsed).
    #[arg(long, default_value = "words:5", value_parser = parse_shingles)]
    shingle: Shingles,
    /// Seed of the MinHash permutations (numpy RandomState, as datasketch).
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Permutation scheme: affine32 (datasketch >= 2.0 default) or legacy.
    #[arg(long, default_value = "affine32", value_parser = parse_scheme)]
    scheme: MinHashScheme,
}

fn parse_shingles(s: &str) -> std::result::Result<Shingles, String> {
    s.parse()
        .map_err(|e: tilpass::data::DataError| e.to_string())
}

fn parse_scheme(s: &str) -> std::result::Result<MinHashScheme, String> {
    serde_json::from_value(json!(s))
        .map_err(|_| format!("unknown scheme `{s}`; expected affine32 or legacy"))
}

impl CleanIo {
    fn spec(&self) -> Result<DatasetSpec> {
        let spec: DatasetSpec = self.file.parse()?;
        let mut inputs: Vec<&Path> = Vec::new();
        if let DatasetSpec::File(p) = &spec {
            inputs.push(p);
        }
        tilpass::core::check_output_is_not_input("out", &self.out, &inputs)?;
        crate::common::check_new_file("out", &self.out, self.overwrite)?;
        if let Some(r) = &self.report {
            inputs.push(&self.out);
            tilpass::core::check_output_is_not_input("report", r, &inputs)?;
            crate::common::check_new_file("report", r, self.overwrite)?;
        }
        Ok(spec)
    }
}

fn write_lines<'a>(path: &Path, lines: impl IntoIterator<Item = &'a str>) -> Result<()> {
    tilpass::core::write_atomic_with(path, |w| {
        for l in lines {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Runs `tilpass data near-dedup`.
pub fn near_dedup_cmd(a: NearDedupArgs) -> Result<()> {
    let spec = a.io.spec()?;
    let cfg = NearDedupConfig {
        threshold: a.threshold,
        num_perm: a.num_perm,
        shingles: a.shingle,
        seed: a.seed,
        scheme: a.scheme,
        ..Default::default()
    };
    // Settings are checked before reading.
    let mut stream = NearDedupStream::new(&cfg)?;
    // Pass 1: every row checked, its text hashed; only the signatures and locations are kept.
    let t0 = Instant::now();
    let mut locations: Vec<Location> = Vec::new();
    let mut progress = count_spinner("near-dedup");
    let rows = for_each_raw_row(&spec, a.io.format, |row| -> Result<()> {
        stream.push(record_text(&row.record));
        locations.push(row.location);
        progress(Some(locations.len()));
        Ok(())
    })?;
    progress(None);
    let read_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let found = stream.finish()?;
    let dedup_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "near-dedup: {rows} rows from {spec} read and hashed in {read_s:.2}s; {} near-duplicate(s) \
         in {} cluster(s) ({} bands x {} rows) in {dedup_s:.2}s",
        found.report.removed, found.report.clusters, found.report.bands, found.report.rows
    );
    // Pass 2: the kept rows, as they were written, into `--out` (whole or not at all).
    let mut removed = vec![false; rows];
    for d in &found.removed {
        removed[d.index] = true;
    }
    let written = write_selected_rows(&spec, a.io.format, rows, &a.io.out, |i| !removed[i])?;
    if let Some(r) = &a.io.report {
        let lines: Vec<String> = found
            .removed
            .iter()
            .map(|d| {
                json!({
                    "line": report_line(locations[d.index]),
                    "kept_line": report_line(locations[d.kept]),
                    "jaccard": d.jaccard,
                    "reason": "near-duplicate",
                })
                .to_string()
            })
            .collect();
        write_lines(r, lines.iter().map(String::as_str))?;
    }
    print(&json!({
        "input": spec.to_string(),
        "near_dedup": found.report,
        "config": cfg,
        "written": written,
        "out": a.io.out,
        "report": a.io.report,
        "seconds": t0.elapsed().as_secs_f64(),
        "dedup_seconds": dedup_s,
    }));
    Ok(())
}

/// Runs `tilpass data pii`: streams the rows (a JSONL file a line at a time, so memory holds
/// only the report), writing the output into a temporary file that replaces `--out` only when
/// every row was read and redacted; a bad row leaves no output.
pub fn pii_cmd(io: CleanIo) -> Result<()> {
    let spec = io.spec()?;
    let t0 = Instant::now();
    let mut total = PiiCounts::default();
    let mut changed_rows = 0;
    let mut report: Vec<String> = Vec::new();
    let mut out = tilpass::core::TempFile::create(&io.out)?;
    let out_path = io.out.clone();
    let io_err = |e: std::io::Error| tilpass::core::Error::io(&out_path, e);
    let rows = for_each_raw_row(&spec, io.format, |row| -> Result<()> {
        let mut value: Value = row.value;
        let counts = redact_row(&mut value);
        let w = out.writer();
        if counts.total() == 0 {
            w.write_all(row.raw.as_bytes()).map_err(io_err)?;
        } else {
            changed_rows += 1;
            w.write_all(value.to_string().as_bytes()).map_err(io_err)?;
            // The report names kinds and counts, never the personal data itself.
            report.push(
                json!({"line": report_line(row.location), "found": counts, "reason": "personal-data"})
                    .to_string(),
            );
            total.merge(&counts);
        }
        w.write_all(b"\n").map_err(io_err)?;
        Ok(())
    })?;
    out.commit()?;
    if let Some(r) = &io.report {
        write_lines(r, report.iter().map(String::as_str))?;
    }
    eprintln!(
        "pii: {rows} rows from {spec}, {} finding(s) in {changed_rows} row(s) in {:.2}s",
        total.total(),
        t0.elapsed().as_secs_f64()
    );
    print(&json!({
        "input": spec.to_string(),
        "rows": rows,
        "rows_changed": changed_rows,
        "found": total,
        "out": io.out,
        "report": io.report,
        "seconds": t0.elapsed().as_secs_f64(),
    }));
    Ok(())
}
