//! `tilpass data translate` and `tilpass data self-instruct`: flags into
//! [`tilpass::train::runs::TranslateRun`] / [`tilpass::train::runs::SelfInstructRun`], the run
//! (a progress bar on stderr), a JSON summary on stdout.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::json;
use tilpass::Result;
use tilpass::train::count_bar;
use tilpass::train::runs::{SelfInstructRun, TranslateRun, WrittenForm};

use crate::common::{ConfigArgs, print};

/// How `--help` ends for both commands.
const RESUME_HELP: &str = "Every flag is a key of the job's JSON run config (`--batch-size` = \
`batch_size`); --config FILE supplies settings, flags win, --print-config prints the result. \
The output is appended row by row and the settings are recorded in OUT.run.json: rerunning the \
same command after an interruption continues where it stopped (a torn last line is redone); an \
OUT with rows but no OUT.run.json, or a different config, is refused.";

/// The flags of `data translate`.
#[derive(Args, Serialize)]
#[command(after_help = RESUME_HELP)]
pub struct TranslateArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Dataset to translate (JSONL; any TRL format or Alpaca).
    #[serde(rename = "data")]
    file: Option<PathBuf>,
    /// Output JSONL: every input row with its texts translated and a `quality` object.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The model's directory (a causal LM or an encoder-decoder, with its tokenizer).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A LoRA / DoRA adapter for the model (HF PEFT format).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Target written form: nb (Bokmål, default) or nn (Nynorsk).
    #[arg(long)]
    to: Option<WrittenForm>,
    /// Prompt with `{text}` where the text goes (default: a Norwegian instruction for --to).
    #[arg(long)]
    template: Option<String>,
    /// Prompt translating an output back, for --round-trip (default: into English).
    #[arg(long)]
    back_template: Option<String>,
    /// Translate each output back and report its chrF against the source.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    round_trip: bool,
    /// How a decoder gets the prompt: auto (chat template if any), chat, plain.
    #[arg(long)]
    prompt_format: Option<String>,
    /// Rows per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// New tokens at most per text.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Flag rows whose output/source length ratio is below this (default 0.5).
    #[arg(long)]
    min_length_ratio: Option<f64>,
    /// Flag rows whose output/source length ratio is above this (default 2.0).
    #[arg(long)]
    max_length_ratio: Option<f64>,
}

/// The flags of `data self-instruct`.
#[derive(Args, Serialize)]
#[command(after_help = RESUME_HELP)]
pub struct SelfInstructArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Seed tasks (JSONL: Alpaca, conversation, prompt-completion or prompt-only rows).
    #[arg(long)]
    seeds: Option<PathBuf>,
    /// Output JSONL of accepted tasks (rejects with reasons: OUT.rejects.jsonl).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The model's directory (a causal LM or an encoder-decoder, with its tokenizer).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A LoRA / DoRA adapter for the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Accepted tasks wanted (default 100).
    #[arg(long)]
    num: Option<usize>,
    /// Attempts at most (default 20 x --num).
    #[arg(long)]
    max_attempts: Option<usize>,
    /// Seed of the example draws and of sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Seed tasks shown per prompt (default 3).
    #[arg(long)]
    num_examples: Option<usize>,
    /// Written form of the new tasks: nb (default) or nn.
    #[arg(long)]
    lang: Option<WrittenForm>,
    /// Output layout: chat (messages, default) or prompt_completion.
    #[arg(long)]
    format: Option<String>,
    /// Attempts generated together.
    #[arg(long)]
    batch_size: Option<usize>,
    /// New tokens at most per attempt.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Sample (true, default) or decode greedily (false).
    #[arg(long)]
    do_sample: Option<bool>,
    /// Sampling temperature (default 0.7).
    #[arg(long)]
    temperature: Option<f32>,
    /// Reject tasks whose ROUGE-L with an earlier instruction reaches this (default 0.7).
    #[arg(long)]
    rouge_threshold: Option<f64>,
}

/// Runs `tilpass data translate`.
pub fn translate_cmd(a: TranslateArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<TranslateRun>(&a)? else {
        return Ok(());
    };
    let device = tilpass::device(&run.device)?;
    let o = run.run(&device, &mut count_bar("translate"))?;
    print(&json!({
        "rows": o.rows,
        "resumed": o.resumed,
        "written": o.written,
        "flagged": o.flagged,
        "generated": o.generated,
        "seconds": o.seconds,
        "out": run.out,
    }));
    Ok(())
}

/// Runs `tilpass data self-instruct`.
pub fn self_instruct_cmd(a: SelfInstructArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<SelfInstructRun>(&a)? else {
        return Ok(());
    };
    let device = tilpass::device(&run.device)?;
    let o = run.run(&device, &mut count_bar("self-instr"))?;
    print(&json!({
        "accepted": o.accepted,
        "rejected": o.rejected,
        "attempts": o.attempts,
        "reasons": o.reasons,
        "seconds": o.seconds,
        "out": run.out,
        "rejects": o.rejects,
    }));
    Ok(())
}
