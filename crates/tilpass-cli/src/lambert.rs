//! `tilpass annotate` and `tilpass predict` (LamBERT steps 1 and 3): flags into
//! [`tilpass::train::AnnotateRun`] / [`tilpass::train::PredictRun`], the run, its result.
//! (Step 2, `tilpass train classify`, is in `train.rs`.)

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::json;
use tilpass::Result;
use tilpass::train::{AnnotateRun, Event, PredictRun};

use crate::common::{ConfigArgs, print, print_json};

/// The flags of `annotate` (the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::RUN_CONFIG_HELP)]
pub struct AnnotateArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// The LLM's directory (a causal LM with its tokenizer).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A LoRA / DoRA adapter for the LLM (HF PEFT format).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Input JSONL (one object per line).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Field holding the text.
    #[arg(long)]
    text_field: Option<String>,
    /// The labels, comma-separated (their words are scored as continuations).
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// Prompt with `{text}` where the text goes (default "Tekst: {text}\nKategori:").
    #[arg(long)]
    template: Option<String>,
    /// Output JSONL.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sequences per forward pass.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Rows read at a time and sorted by token length for batching (default 4096).
    #[arg(long)]
    window: Option<usize>,
    /// `i/n`: label only windows w with w % n == i (Slurm: `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`);
    /// merge the parts with `tilpass merge-shards`.
    #[arg(long)]
    shard: Option<String>,
    /// Stop after writing this many rows (the output stays partial; the same command continues it).
    #[arg(long)]
    max_rows: Option<usize>,
    /// Keep the partial output on an error or Ctrl-C, so that the same command continues it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    keep_partial: Option<bool>,
}

/// The flags of `predict` (the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::RUN_CONFIG_HELP)]
pub struct PredictArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// The encoder the classifier was trained on.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The classifier's adapter (from `tilpass train classify`: its out/adapter).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// JSONL with a text field.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Field holding the text.
    #[arg(long)]
    text_field: Option<String>,
    /// Output JSONL (rows with "label" and "probabilities" added).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Truncate texts to this many tokens.
    #[arg(long)]
    max_length: Option<usize>,
    /// Rows read at a time and sorted by token length for batching (default 4096).
    #[arg(long)]
    window: Option<usize>,
    /// `i/n`: label only windows w with w % n == i (Slurm: `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`);
    /// merge the parts with `tilpass merge-shards`.
    #[arg(long)]
    shard: Option<String>,
    /// Stop after writing this many rows (the output stays partial; the same command continues it).
    #[arg(long)]
    max_rows: Option<usize>,
    /// Keep the partial output on an error or Ctrl-C, so that the same command continues it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    keep_partial: Option<bool>,
}

/// Logs row counts of a job (`TILPASS_LOG=info`).
fn log_rows(e: Event) {
    match e {
        Event::Rows { done, seconds } => {
            tracing::info!("{done} texts, {:.1}/s", done as f64 / seconds.max(1e-9));
        }
        Event::Message(m) | Event::Detail(m) => tracing::info!("{m}"),
        _ => {}
    }
}

/// Runs `tilpass annotate`: writes the labelled rows to --out, prints `{"rows", "seconds",
/// "out"}`.
pub fn annotate_cmd(a: AnnotateArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<AnnotateRun>(&a)? else {
        return Ok(());
    };
    let o = run.run(&tilpass::device(&run.device)?, &mut log_rows)?;
    let out = run.out.as_deref().map(|p| p.display().to_string());
    print(&json!({"rows": o.rows, "seconds": o.seconds, "out": out,
        "resumed_from": o.resumed_from, "complete": o.complete}));
    Ok(())
}

/// Runs `tilpass predict`: writes the labelled rows to --out, prints the throughput.
pub fn predict_cmd(a: PredictArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<PredictRun>(&a)? else {
        return Ok(());
    };
    let o = run.run(&tilpass::device(&run.device)?, &mut log_rows)?;
    print_json(&o)
}

/// The flags of `merge-shards`.
#[derive(Args)]
pub struct MergeArgs {
    /// The outputs of the `--shard i/n` runs (each with its `<part>.run.json`), in any order.
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// The merged output (written whole or not at all, with its own sidecar).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `tilpass merge-shards`: checks that the parts are complete and of one job and input,
/// writes them in input order; prints `{"rows", "shards", "out"}`.
pub fn merge_cmd(a: MergeArgs) -> Result<()> {
    let o = tilpass::train::merge_shards(&a.parts, &a.out)?;
    print_json(&o)
}
