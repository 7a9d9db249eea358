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
    print(&json!({"rows": o.rows, "seconds": o.seconds, "out": out}));
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
