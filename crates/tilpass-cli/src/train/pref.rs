//! `tilpass train orpo|cpo|kto`: the flags of the reference-free paired trainers and of KTO
//! into their run configs ([`tilpass::preference::OrpoRun`], [`tilpass::preference::CpoRun`],
//! [`tilpass::preference::KtoRun`]), the run, and its result printed.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::json;
use tilpass::Result;
use tilpass::preference::{CpoRun, KtoRun, OrpoRun, PreferenceOutcome};
use tilpass::train::{Progress, RunConfig};

use super::{LoraFlags, OptimFlags, show};
use crate::common::{ConfigArgs, finite_f64, print};

/// The flags every preference job shares with `train dpo` (data, model, adapter, optimiser).
#[derive(Args, Serialize)]
pub struct PrefFlags {
    /// Model directory (config.json, safetensors, tokenizer files), e.g. a chat-tuned model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Held-out rows in the same format, evaluated every --eval-steps (eval_loss and TRL's
    /// metrics with the eval_ prefix in metrics.jsonl), e.g. builtin:norsk-pref:eval.
    #[arg(long)]
    eval_data: Option<String>,
    /// Evaluate on --eval-data every N steps.
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Stop after N evaluations without a lower eval loss.
    #[arg(long)]
    early_stopping_patience: Option<usize>,
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
    /// Chat template for conversational rows (the model's, or a named one).
    #[arg(long)]
    chat_template: Option<String>,
    /// Tokens of prompt + completion kept per sequence (TRL: 1024); the start is kept.
    #[arg(long)]
    max_length: Option<usize>,
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

/// The flags of `train orpo` (TRL's ORPOConfig names; the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct OrpoArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Preference data (JSONL / JSON rows with prompt, chosen, rejected; TRL formats), or
    /// `builtin:norsk-pref`.
    #[arg(long)]
    data: Option<String>,
    /// ORPO's beta: the weight of the odds-ratio term, the paper's λ (TRL: 0.1).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    beta: Option<f64>,
    #[command(flatten)]
    #[serde(flatten)]
    common: PrefFlags,
}

/// The flags of `train cpo` (TRL's CPOConfig names; the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct CpoArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Preference data (JSONL / JSON rows with prompt, chosen, rejected; TRL formats), or
    /// `builtin:norsk-pref`.
    #[arg(long)]
    data: Option<String>,
    /// The loss's temperature (TRL: 0.1).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    beta: Option<f64>,
    /// Loss type: sigmoid (default), hinge, ipo, simpo.
    #[arg(long, value_parser = ["sigmoid", "hinge", "ipo", "simpo"])]
    loss_type: Option<String>,
    /// Label smoothing of sigmoid / simpo, in [0, 0.5).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    label_smoothing: Option<f64>,
    /// Weight of the NLL term on the chosen completions (TRL: 1.0; pure SimPO: 0).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    cpo_alpha: Option<f64>,
    /// SimPO's target reward margin gamma (TRL: 0.5).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    simpo_gamma: Option<f64>,
    /// AlphaPO's alpha (0: off).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    alpha: Option<f64>,
    #[command(flatten)]
    #[serde(flatten)]
    common: PrefFlags,
}

/// The flags of `train kto` (TRL's KTOConfig names; the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct KtoArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Unpaired rows (prompt, completion, label) or preference pairs (prompt, chosen,
    /// rejected; unpaired as TRL does), JSONL / JSON, or `builtin:norsk-pref`.
    #[arg(long)]
    data: Option<String>,
    /// KTO's beta (TRL: 0.1).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    beta: Option<f64>,
    /// Loss type: kto (default) or apo_zero_unpaired.
    #[arg(long, value_parser = ["kto", "apo_zero_unpaired"])]
    loss_type: Option<String>,
    /// Weight of the desirable examples' losses (TRL: 1.0).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    desirable_weight: Option<f64>,
    /// Weight of the undesirable examples' losses (TRL: 1.0).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    undesirable_weight: Option<f64>,
    #[command(flatten)]
    #[serde(flatten)]
    common: PrefFlags,
}

fn report(o: &PreferenceOutcome, full: bool, bar: &mut Progress) {
    bar.finish(&o.summary);
    let key = if full { "model" } else { "adapter" };
    print(&json!({"summary": o.summary, key: o.saved.display().to_string()}));
}

fn report_seq2seq(
    o: &tilpass::preference::Seq2SeqPreferenceOutcome,
    full: bool,
    bar: &mut Progress,
) {
    bar.finish(&o.summary);
    let key = if full { "model" } else { "adapter" };
    print(&json!({"summary": o.summary, key: o.saved.display().to_string()}));
}

/// Whether `model` is an encoder-decoder directory.
fn is_seq2seq(model: &Option<std::path::PathBuf>) -> bool {
    model
        .as_deref()
        .is_some_and(|m| tilpass::models::is_encoder_decoder(m).unwrap_or(false))
}

/// Runs `tilpass train orpo`.
pub fn orpo(a: &OrpoArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<OrpoRun>(a)? else {
        return Ok(());
    };
    let device = tilpass::device(&run.device)?;
    let mut bar = Progress::new(OrpoRun::JOB, run.steps);
    // Encoder-decoder directories (T5, mT5, NorT5) take TRL's encoder-decoder path.
    if is_seq2seq(&run.model) {
        let o = run
            .run_seq2seq(&device, &mut |e| show(&mut bar, e))
            .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
        report_seq2seq(&o, run.full, &mut bar);
        return Ok(());
    }
    let o = run
        .run(&device, &mut |e| show(&mut bar, e))
        .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
    report(&o, run.full, &mut bar);
    Ok(())
}

/// Runs `tilpass train cpo`.
pub fn cpo(a: &CpoArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<CpoRun>(a)? else {
        return Ok(());
    };
    let device = tilpass::device(&run.device)?;
    let mut bar = Progress::new(CpoRun::JOB, run.steps);
    // Encoder-decoder directories (T5, mT5, NorT5) take TRL's encoder-decoder path.
    if is_seq2seq(&run.model) {
        let o = run
            .run_seq2seq(&device, &mut |e| show(&mut bar, e))
            .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
        report_seq2seq(&o, run.full, &mut bar);
        return Ok(());
    }
    let o = run
        .run(&device, &mut |e| show(&mut bar, e))
        .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
    report(&o, run.full, &mut bar);
    Ok(())
}

/// Runs `tilpass train kto`.
pub fn kto(a: &KtoArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<KtoRun>(a)? else {
        return Ok(());
    };
    let device = tilpass::device(&run.device)?;
    let mut bar = Progress::new(KtoRun::JOB, run.steps);
    let o = run
        .run(&device, &mut |e| show(&mut bar, e))
        .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
    report(&o, run.full, &mut bar);
    Ok(())
}
