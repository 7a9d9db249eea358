//! `tilpass train grpo|rloo`: the flags of the online trainers into a
//! [`tilpass::preference::GrpoRun`], the run, and its result printed.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::json;
use tilpass::Result;
use tilpass::preference::{GrpoRun, OnlineKind};
use tilpass::train::Progress;

use super::{LoraFlags, OptimFlags, show};
use crate::common::{ConfigArgs, finite_f64, print};

/// The flags of `train grpo` and `train rloo` (TRL's GRPOConfig / RLOOConfig names; the
/// defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct GrpoArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Set by the subcommand.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    algorithm: Option<OnlineKind>,
    /// Policy model directory (config.json, safetensors, tokenizer files), e.g. a chat model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompts: JSONL / JSON rows with `prompt` (text or chat messages) and any other columns
    /// (given to the rewards), or builtin:norsk-chat / builtin:norsk-pref.
    #[arg(long)]
    data: Option<String>,
    /// A reward, repeatable: lang=nb|nn|prompt, length=MIN..MAX, distinct=N, format=REGEX,
    /// exact=COLUMN, model=DIR (a `tilpass train reward` output), each with an optional
    /// :WEIGHT (e.g. model=rm:0.5).
    #[arg(long = "reward")]
    #[serde(rename = "rewards", skip_serializing_if = "Vec::is_empty")]
    rewards: Vec<String>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Resume from a checkpoint directory of an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Replace an earlier run in a non-empty --out; without it a non-empty --out is refused
    /// unless resuming.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    overwrite_output_dir: Option<bool>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Chat template for conversational prompts (the model's, or a named one).
    #[arg(long)]
    chat_template: Option<String>,
    /// Completions per prompt, G (TRL: 8 for GRPO, 2 for RLOO).
    #[arg(long)]
    num_generations: Option<usize>,
    /// Optimisation passes over each generation batch (TRL: 1).
    #[arg(long)]
    num_iterations: Option<usize>,
    /// Micro-batches per generation batch (TRL: --grad-accum).
    #[arg(long)]
    steps_per_generation: Option<usize>,
    /// Keep at most this many prompt tokens (the last ones).
    #[arg(long)]
    max_prompt_length: Option<usize>,
    /// Most new tokens per completion (TRL: 512).
    #[arg(long)]
    max_completion_length: Option<usize>,
    /// Sampling temperature (TRL: 1.0).
    #[arg(long, value_parser = finite_f64)]
    temperature: Option<f64>,
    /// Nucleus sampling mass (TRL: 1.0).
    #[arg(long, value_parser = finite_f64)]
    top_p: Option<f64>,
    /// Sample among the k most likely tokens (TRL: off).
    #[arg(long)]
    top_k: Option<usize>,
    /// KL coefficient against the reference (TRL: 0.0 for GRPO, 0.05 for RLOO).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    beta: Option<f64>,
    /// Clipping range of the ratio (TRL: 0.2).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    epsilon: Option<f64>,
    /// Upper clipping range (TRL: --epsilon; DAPO: 0.28).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    epsilon_high: Option<f64>,
    /// GRPO loss aggregation: dapo (TRL's default), grpo, bnpo, dr_grpo.
    #[arg(long, value_parser = ["dapo", "grpo", "bnpo", "dr_grpo"])]
    loss_type: Option<String>,
    /// GRPO reward scaling: group (default), batch, none.
    #[arg(long, value_parser = ["group", "batch", "none"])]
    scale_rewards: Option<String>,
    /// GRPO: sum_then_normalize (default) or normalize_then_sum.
    #[arg(long, value_parser = ["sum_then_normalize", "normalize_then_sum"])]
    multi_objective_aggregation: Option<String>,
    /// GRPO: multiply the k3 KL term by the importance ratio (TRL 1.16: true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    use_bias_correction_kl: Option<bool>,
    /// RLOO: normalise the advantages (TRL: false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    normalize_advantages: Option<bool>,
    /// Rows per forward pass of a reward model.
    #[arg(long)]
    reward_batch_size: Option<usize>,
    /// Full fine-tuning: train every parameter; the model is saved in HF layout. Use a
    /// learning rate near TRL's 1e-6.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    full: Option<bool>,
    #[command(flatten)]
    #[serde(flatten)]
    lora: LoraFlags,
    #[command(flatten)]
    #[serde(flatten)]
    optim: OptimFlags,
    #[command(flatten)]
    #[serde(flatten)]
    adam: crate::train::AdamFlags,
    #[command(flatten)]
    #[serde(flatten)]
    checkpoints: crate::train::CheckpointFlags,
}

/// Runs `tilpass train grpo` or `tilpass train rloo`.
pub fn grpo(mut a: GrpoArgs, kind: OnlineKind) -> Result<()> {
    a.algorithm = Some(kind);
    let Some(run) = a.config.resolve::<GrpoRun>(&a)? else {
        return Ok(());
    };
    let device = tilpass::device(&run.device)?;
    let mut bar = Progress::new(kind.as_str(), run.steps);
    let o = run
        .run(&device, &mut |e| show(&mut bar, e))
        .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
    bar.finish(&o.summary);
    let key = if run.full { "model" } else { "adapter" };
    print(&json!({
        "algorithm": kind.as_str(),
        "summary": o.summary,
        key: o.saved.display().to_string(),
    }));
    Ok(())
}
