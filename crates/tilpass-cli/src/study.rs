//! `tilpass study lambert --config study.json [--out DIR] [--overwrite]`: the flags into
//! [`tilpass::train::StudyRun`], the run with a line per stage on stderr, its summary as JSON
//! on stdout.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use tilpass::Result;
use tilpass::train::StudyRun;

use crate::common::{ConfigArgs, print};

/// The studies.
#[derive(Subcommand)]
pub enum StudyCommand {
    /// Which adaptation method makes the best classifier from LLM labels: annotate N items
    /// with the LLM, train every method x seed on those labels, evaluate on gold; writes
    /// results.jsonl, results.md and plots (SVG, PNG) to --out. A rerun continues a study.
    Lambert(LambertArgs),
}

/// The flags of `study lambert` (the rest of the settings: --config; defaults:
/// --print-config).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::RUN_CONFIG_HELP)]
pub struct LambertArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Output directory (results, table, plots, the runs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an earlier study (or anything else) in --out.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    overwrite: Option<bool>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Stop after this many new result lines (the same command continues the study).
    #[arg(long)]
    stop_after: Option<usize>,
}

/// Runs `tilpass study ...`.
pub fn study_cmd(c: StudyCommand) -> Result<()> {
    match c {
        StudyCommand::Lambert(a) => {
            let Some(run) = a.config.resolve::<StudyRun>(&a)? else {
                return Ok(());
            };
            let device = tilpass::device(&run.device)?;
            let o = run.run(&device, &mut |line| eprintln!("{line}"))?;
            let files: Vec<String> = o.files.iter().map(|f| f.display().to_string()).collect();
            print(&json!({
                "complete": o.complete,
                "results": o.results.len(),
                "resumed_from": o.resumed_from,
                "agreement": o.agreement,
                "summary": o.summary,
                "files": files,
                "fingerprint": o.fingerprint,
            }));
            Ok(())
        }
    }
}
