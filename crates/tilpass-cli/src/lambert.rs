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
    /// In-context examples: JSONL rows with the text field and a `label` (one of --labels).
    #[arg(long)]
    shots: Option<PathBuf>,
    /// Shots per prompt (default: all of --shots; more than the file holds is an error).
    #[arg(long)]
    k: Option<usize>,
    /// fixed: the same k shots for every row, balanced per label (label by label in --labels
    /// order, each label's next shot in file order, round after round); similar: per row the k
    /// shots nearest by cosine of --embedder's sentence embeddings (most similar last).
    #[arg(long, value_parser = ["fixed", "similar"])]
    shot_selection: Option<String>,
    /// Sentence embedder for --shot-selection similar (an encoder directory: MiniLM, BERT,
    /// NorBERT3; sentence-transformers pooling files when present, else mean pooling).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// How a shot is rendered, with {text} and {label} (the label's first verbalisation);
    /// the shots are joined before the --template prompt
    /// (default "Tekst: {text}\nKategori: {label}\n\n").
    #[arg(long)]
    shot_template: Option<String>,
    /// Longest prompt in tokens: shots are dropped (least similar / last chosen first) until
    /// it fits; the summary counts them.
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Label verbalisations: JSON {"label": {"nb": ["ord", ...], "nn": ["ord", ...]}}; a
    /// label's synonyms are scored as full continuations and combined by logsumexp.
    #[arg(long)]
    verbalizer: Option<PathBuf>,
    /// Written form of the verbalisations: auto (per row, by the built-in language
    /// identifier), nb or nn.
    #[arg(long, value_parser = ["auto", "nb", "nn"])]
    form: Option<String>,
    /// Calibration: none; contextual (divide by the probabilities of the content-free inputs
    /// `"N/A"`, `""`, `"[MASK]"` with the same shots, Zhao et al. 2021); prior (divide by the mean
    /// predicted distribution of the window). See docs/lambert.md.
    #[arg(long, value_parser = ["none", "contextual", "prior"])]
    calibrate: Option<String>,
    /// Input field with gold labels: the summary gains accuracy, macro-F1, Cohen's kappa and
    /// the confusion matrix.
    #[arg(long)]
    gold_field: Option<String>,
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
/// "out", "resumed_from", "complete"}`, with shots the shots dropped for the token budget, and
/// with --gold-field the `agreement`.
pub fn annotate_cmd(a: AnnotateArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<AnnotateRun>(&a)? else {
        return Ok(());
    };
    let r = run.run_report(&tilpass::device(&run.device)?, &mut log_rows)?;
    let o = r.outcome;
    let out = run.out.as_deref().map(|p| p.display().to_string());
    let mut summary = json!({"rows": o.rows, "seconds": o.seconds, "out": out,
        "resumed_from": o.resumed_from, "complete": o.complete});
    if run.shots.is_some() {
        summary["shots_dropped"] = json!(r.shots_dropped);
        summary["rows_with_dropped_shots"] = json!(r.rows_with_dropped_shots);
        summary["rows_over_budget"] = json!(r.rows_over_budget);
    }
    if let Some(a) = &r.agreement {
        summary["agreement"] = json!(a);
    }
    print(&summary);
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
