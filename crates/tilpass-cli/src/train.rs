//! `tilpass train sft|classify|dpo|reward|orpo|cpo|kto|grpo|rloo`: flags into a run config
//! ([`tilpass::train::SftRun`], [`tilpass::train::ClassifyRun`],
//! [`tilpass::preference::DpoRun`]; reward: [`crate::reward`]; `orpo|cpo|kto` in [`pref`]; `grpo|rloo` in [`grpo`]),
//! the run, and its result
//! printed. Every flag is the
//! kebab-case form of a config key; `--config FILE` supplies the rest, flags win.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tilpass::Result;
use tilpass::preference::DpoRun;
use tilpass::train::{ClassifyRun, Event, Progress, RunConfig, SftRun};

use crate::common::{ConfigArgs, finite_f64, parse_pattern, print, print_json};

mod grpo;
mod pref;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// LoRA supervised fine-tuning of a decoder or an encoder-decoder (T5, mT5, NorT5: the
    /// dialogue to the encoder, each answer a decoder target) on a chat / prompt-completion
    /// dataset (TRL formats); writes the adapter (HF PEFT format), checkpoints, metrics.jsonl and
    /// run_config.json to --out.
    Sft(Box<SftArgs>),
    /// Train a sequence classifier — BERT, NorBERT3, or a Llama / Mistral / GPT-2 decoder
    /// scored at its last non-pad token as transformers' *ForSequenceClassification — (a new
    /// classifier head with --method lora, dora, prefix, p-tuning, prompt or full) on labelled
    /// JSONL (LamBERT step 2); prints accuracy and macro-F1 on a held-out split.
    Classify(Box<ClassifyArgs>),
    /// DPO (TRL's DPOTrainer) of a decoder on preference pairs (TRL formats, or
    /// builtin:norsk-pref) with a LoRA adapter (reference: the model with its adapters
    /// disabled) or --full (reference: a copy of the starting model); writes the adapter,
    /// checkpoints, metrics.jsonl (TRL's rewards/* and logps/* metrics) and run_config.json.
    /// Defaults are TRL's DPOConfig except --lr: 5e-5, as TRL's 1e-6 barely moves a LoRA
    /// adapter (with --full, use ~1e-6).
    Dpo(Box<DpoArgs>),
    /// A reward model (TRL's RewardTrainer): a decoder with a sequence-classification head
    /// (`score`, read at the last non-padding token) trained on preference pairs (TRL formats,
    /// or builtin:norsk-pref) with a LoRA adapter that also trains the head, or --full; writes
    /// the adapter (HF PEFT, with the head) or the model (transformers'
    /// *ForSequenceClassification), checkpoints, metrics.jsonl (TRL's accuracy, margin,
    /// min/mean/max_reward) and run_config.json. Defaults are TRL's RewardConfig (lr 1e-4).
    Reward(Box<crate::reward::RewardTrainArgs>),
    /// ORPO (TRL's experimental ORPOTrainer) of a decoder on preference pairs: no reference
    /// model; the NLL term over the whole chosen sequence, prompt included, as TRL; LoRA or
    /// --full. Writes the adapter, checkpoints, metrics.jsonl (TRL's rewards/*, logps/*,
    /// nll_loss, log_odds_* metrics) and run_config.json. Defaults are TRL's ORPOConfig except
    /// --lr: 5e-5, as TRL's 1e-6 barely moves a LoRA adapter.
    Orpo(Box<pref::OrpoArgs>),
    /// CPO / SimPO / AlphaPO (TRL's experimental CPOTrainer) of a decoder on preference pairs:
    /// no reference model; SimPO is --loss-type simpo --cpo-alpha 0. Defaults are TRL's
    /// CPOConfig except --lr: 5e-5 (TRL: 1e-6).
    Cpo(Box<pref::CpoArgs>),
    /// KTO (TRL's KTOTrainer) on unpaired rows (prompt, completion, label) or pairs unpaired as
    /// TRL does (e.g. builtin:norsk-pref): reference = the model with its adapters disabled
    /// (LoRA) or a copy of the starting model (--full); needs --batch-size >= 2. Defaults are
    /// TRL's KTOConfig except --lr: 5e-5 (TRL: 1e-6).
    Kto(Box<pref::KtoArgs>),
    /// GRPO (TRL's GRPOTrainer): online RL on the model's own completions to prompts (JSONL
    /// rows with `prompt`, text or chat), G sampled per prompt and scored by --reward specs
    /// (rules such as lang=nn or length=20..200, and reward models from `tilpass train
    /// reward`: model=DIR:WEIGHT); group-normalised advantages, clipped objective, optional KL
    /// (--beta) against the model with its adapters disabled. LoRA or --full. Writes the
    /// adapter, checkpoints, metrics.jsonl (reward, reward_std, kl, clip_ratio/*,
    /// completions/*) and run_config.json. Defaults are TRL's GRPOConfig except --lr: 5e-5.
    Grpo(Box<grpo::GrpoArgs>),
    /// RLOO (TRL's RLOOTrainer): as `train grpo`, with leave-one-out baselines and a
    /// KL-penalised reward (--beta, TRL: 0.05). Defaults are TRL's RLOOConfig except --lr.
    Rloo(Box<grpo::GrpoArgs>),
}

/// LoRA flags: the top-level keys of a run config that set its `lora` section.
#[derive(Args, Serialize)]
pub struct LoraFlags {
    /// LoRA rank (`lora.r`).
    #[arg(long)]
    lora_r: Option<usize>,
    /// LoRA alpha.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    lora_alpha: Option<f64>,
    /// Dropout on the adapter's input while training.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    lora_dropout: Option<f64>,
    /// Layers to adapt (comma-separated names, or all-linear; default: the model family's,
    /// as PEFT).
    #[arg(long, value_delimiter = ',')]
    #[serde(serialize_with = "targets")]
    target_modules: Option<Vec<String>>,
    /// Layers never adapted (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    exclude_modules: Option<Vec<String>>,
    /// rsLoRA: scale alpha / √r.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    use_rslora: Option<bool>,
    /// DoRA: a learned magnitude per output feature.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    use_dora: Option<bool>,
    /// Per-layer ranks, e.g. `v_proj=4,layers.0.self_attn.q_proj=8` (keys are regexes
    /// matched against the end of the layer's path).
    #[arg(long, value_parser = parse_pattern)]
    rank_pattern: Option<Map<String, Value>>,
    /// Per-layer alphas, e.g. `v_proj=8`.
    #[arg(long, value_parser = parse_pattern)]
    alpha_pattern: Option<Map<String, Value>>,
    /// Modules trained and saved whole (comma-separated), e.g. a classifier head.
    #[arg(long, value_delimiter = ',')]
    modules_to_save: Option<Vec<String>>,
    /// Initialisation: true (B = 0, PEFT's), gaussian, or false.
    #[arg(long, value_parser = parse_init)]
    init_lora_weights: Option<Value>,
}

/// `all-linear` is PEFT's string form; other values are module names.
fn targets<S: serde::Serializer>(v: &Option<Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
    match v.as_deref() {
        Some([one]) if one == "all-linear" => s.serialize_str(one),
        other => other.serialize(s),
    }
}

fn parse_init(s: &str) -> std::result::Result<Value, String> {
    match s {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "gaussian" => Ok(Value::String(s.into())),
        _ => Err(format!("`{s}`: expected true, false or gaussian")),
    }
}

/// AdamW's β₁, β₂ and ε (PyTorch's names), shared by every training job.
#[derive(Args, Serialize)]
pub struct AdamFlags {
    /// AdamW β₁.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    adam_beta1: Option<f64>,
    /// AdamW β₂.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    adam_beta2: Option<f64>,
    /// AdamW ε.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    adam_epsilon: Option<f64>,
}

/// Checkpoint frequency and retention, shared by the training jobs that take them as flags.
#[derive(Args, Serialize)]
pub struct CheckpointFlags {
    /// Checkpoint every N steps.
    #[arg(long)]
    save_steps: Option<usize>,
    /// Checkpoints kept.
    #[arg(long)]
    save_total_limit: Option<usize>,
}

/// Optimiser flags shared by both jobs.
#[derive(Args, Serialize)]
pub struct OptimFlags {
    /// Rows per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Batches per optimiser step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    lr: Option<f64>,
    /// Schedule after warmup: linear, cosine or constant.
    #[arg(long, value_parser = ["linear", "cosine", "constant"])]
    lr_scheduler_type: Option<String>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Warmup steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Global-norm gradient clipping.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    max_grad_norm: Option<f64>,
    /// AdamW weight decay.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    weight_decay: Option<f64>,
    /// Seed of the adapter's (and a new head's) initialisation and of dropout.
    #[arg(long)]
    seed: Option<u64>,
}

/// The flags of `train sft` (the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct SftArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Base model directory (config.json, safetensors, tokenizer files).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training data (JSONL / JSON, TRL formats), or `builtin:norsk-chat` (the embedded
    /// Norwegian chat set; `builtin:norsk-chat:eval` is its held-out split).
    #[arg(long)]
    data: Option<String>,
    /// Evaluation data (eval loss, perplexity and sample answers every --eval-steps).
    #[arg(long)]
    eval_data: Option<String>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Resume from a checkpoint directory of an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Replace an earlier run in a non-empty --out (its checkpoints, adapter and metrics are
    /// removed first); without it a non-empty --out is refused unless resuming.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    overwrite_output_dir: Option<bool>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Chat template (the model's, or chatml / norsk / a named one).
    #[arg(long)]
    chat_template: Option<String>,
    /// Truncate examples to this many tokens (keeping the start; for an encoder-decoder, the
    /// encoder input loses its oldest turns and the answer its end).
    #[arg(long)]
    max_length: Option<usize>,
    /// Over-long examples: keep_start, keep_end, drop or error.
    #[arg(long, value_parser = ["keep_start", "keep_end", "drop", "error"])]
    truncation: Option<String>,
    /// Loss on assistant turns only (conversations).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    assistant_only_loss: Option<bool>,
    /// Loss on completions only (prompt-completion rows).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    completion_only_loss: Option<bool>,
    /// Full fine-tuning: train every parameter (no adapter); the model is saved in HF layout.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    full: Option<bool>,
    /// Pack several examples into each row (best-fit decreasing, rows of --max-length or the
    /// model's context up to 2048 tokens; attention stays within each example).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    packing: Option<bool>,
    #[command(flatten)]
    #[serde(flatten)]
    lora: LoraFlags,
    /// Train this existing LoRA adapter (HF PEFT layout) instead of a new one.
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Adapter method: lora (default), prompt (prompt tuning), p-tuning (MLP prompt encoder)
    /// or prefix (prefix tuning; on T5, not NorT5). The base model stays frozen; the adapter
    /// is saved in PEFT's format.
    #[arg(long, value_parser = ["lora", "prompt", "p-tuning", "prefix"])]
    peft: Option<String>,
    /// Virtual tokens of a prompt / p-tuning / prefix adapter (required for them).
    #[arg(long)]
    num_virtual_tokens: Option<usize>,
    /// Prefix tuning through PEFT's projection MLP.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    prefix_projection: Option<bool>,
    /// Hidden width of the prompt encoder (p-tuning, or prefix with --prefix-projection;
    /// default: the model's width, as PEFT).
    #[arg(long)]
    encoder_hidden_size: Option<usize>,
    #[command(flatten)]
    #[serde(flatten)]
    optim: OptimFlags,
    #[command(flatten)]
    #[serde(flatten)]
    adam: AdamFlags,
    /// Evaluate every N steps.
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Evaluate before the first step too.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    eval_on_start: Option<bool>,
    /// Held-out prompts answered at each evaluation.
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Tokens per sample answer.
    #[arg(long)]
    sample_max_new_tokens: Option<usize>,
    /// Stop after N evaluations without improvement.
    #[arg(long)]
    early_stopping_patience: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    save_steps: Option<usize>,
    /// Checkpoints kept.
    #[arg(long)]
    save_total_limit: Option<usize>,
}

/// The flags of `train classify` (the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct ClassifyArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Model directory with its tokenizer: BERT, NorBERT3, or a Llama / Mistral / GPT-2
    /// decoder (a causal LM gets a new `score` head; a decoder without a pad_token_id uses the
    /// tokenizer's pad or EOS token, and without any takes only --batch-size 1).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Labelled JSONL (e.g. from `tilpass annotate`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Field holding the text.
    #[arg(long)]
    text_field: Option<String>,
    /// Field holding the label.
    #[arg(long)]
    label_field: Option<String>,
    /// Output directory (adapter/ with labels.json, metrics.jsonl, run_config.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an earlier run in a non-empty --out; without it a non-empty --out is refused.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    overwrite_output_dir: Option<bool>,
    /// Fraction of the rows (the last ones) held out for evaluation.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    eval_split: Option<f64>,
    /// Adaptation method: lora (default), dora, prefix (prefix tuning), p-tuning (MLP prompt
    /// encoder), prompt (prompt tuning) or full (every weight; saved as a transformers model
    /// in out/model). BERT takes all six; NorBERT3 / LTG-BERT lora, dora and full (PEFT
    /// cannot apply prompt learning to its modelling code); decoders lora, dora and full
    /// (LoRA on PEFT's default targets, the `score` head trained). Prompt methods train the
    /// classifier head too; with prompt / p-tuning the pooler reads the first virtual token,
    /// as in PEFT.
    #[arg(long, value_parser = ["lora", "dora", "prefix", "p-tuning", "prompt", "full"])]
    method: Option<String>,
    /// Virtual tokens of a prefix / p-tuning / prompt adapter (required for them).
    #[arg(long)]
    num_virtual_tokens: Option<usize>,
    /// Prefix tuning through PEFT's projection MLP.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    prefix_projection: Option<bool>,
    /// Hidden width of the prompt encoder (p-tuning, or prefix with --prefix-projection;
    /// default: the model's width, as PEFT).
    #[arg(long)]
    encoder_hidden_size: Option<usize>,
    #[command(flatten)]
    #[serde(flatten)]
    lora: LoraFlags,
    #[command(flatten)]
    #[serde(flatten)]
    optim: OptimFlags,
    /// Truncate texts to this many tokens.
    #[arg(long)]
    max_length: Option<usize>,
}

/// The flags of `train dpo` (TRL's DPOConfig names; the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct DpoArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Model directory (config.json, safetensors, tokenizer files), e.g. a chat-tuned model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Preference data (JSONL / JSON rows with prompt, chosen, rejected; TRL formats), or
    /// `builtin:norsk-pref` (the embedded Norwegian set; `builtin:norsk-pref:eval` is its
    /// held-out split).
    #[arg(long)]
    data: Option<String>,
    /// Held-out pairs evaluated before and after training (eval loss, eval_rewards/accuracies,
    /// eval_rewards/margins, ...), e.g. builtin:norsk-pref:eval.
    #[arg(long)]
    eval_data: Option<String>,
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
    /// Tokens of prompt + completion kept per sequence (TRL: 1024).
    #[arg(long)]
    max_length: Option<usize>,
    /// Which end of a longer sequence to keep (TRL's truncation_mode).
    #[arg(long, value_parser = ["keep_start", "keep_end"])]
    truncation: Option<String>,
    /// Pad batches to a multiple of this many columns.
    #[arg(long)]
    pad_to_multiple_of: Option<usize>,
    /// DPO's beta: how far the policy may move from the reference (TRL: 0.1).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    beta: Option<f64>,
    /// Loss type(s), comma-separated: sigmoid (default), hinge, ipo, exo_pair, nca_pair,
    /// robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft,
    /// sigmoid_norm.
    #[arg(long, value_delimiter = ',')]
    loss_type: Option<Vec<String>>,
    /// One weight per loss type, comma-separated (default 1.0 each).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = finite_f64)]
    loss_weights: Option<Vec<f64>>,
    /// Label smoothing of robust / exo_pair / aot, in [0, 0.5).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    label_smoothing: Option<f64>,
    /// f-divergence: reverse_kl (default), forward_kl, js_divergence, alpha_divergence.
    #[arg(long, value_parser = ["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"])]
    f_divergence_type: Option<String>,
    /// Alpha of the alpha-divergence (TRL: 0.5).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    f_alpha_divergence_coef: Option<f64>,
    /// LD-DPO's alpha in [0, 1] for the tokens past the shorter completion.
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    ld_alpha: Option<f64>,
    /// DiscoPOP's tau (TRL: 0.05).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    discopop_tau: Option<f64>,
    /// WPO: weight each pair by the policy's length-normalised probability of its answers.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    use_weighting: Option<bool>,
    /// Compute the reference log-probs of every pair once before training and cache them on
    /// disk (next to a data file; built-in data: ~/.cache/tilpass/ref-logps), reused by later
    /// runs with the same model, data and settings.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    precompute_ref_log_probs: Option<bool>,
    /// Directory for the reference log-prob caches (instead of the default places).
    #[arg(long)]
    ref_cache_dir: Option<PathBuf>,
    /// Evaluate on --eval-data every N steps (besides before and after training).
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Stop after N evaluations without a lower eval loss.
    #[arg(long)]
    early_stopping_patience: Option<usize>,
    /// Full fine-tuning: train every parameter against a second copy of the model as the
    /// reference; the model is saved in HF layout. Use a learning rate near TRL's 1e-6.
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
    adam: AdamFlags,
    #[command(flatten)]
    #[serde(flatten)]
    checkpoints: CheckpointFlags,
}

/// Shows a run's events: the progress bar, messages on stderr, details in the log.
pub(crate) fn show(bar: &mut Progress, e: Event) {
    match e {
        Event::Detail(d) => tracing::info!("{d}"),
        other => bar.on_event(&other),
    }
}

/// Adds the MFU to the progress line of a decoder run when its model FLOPs per token (from
/// the model's `config.json`) and the peak (`TILPASS_PEAK_GFLOPS`, or measured on Flex) are
/// known; otherwise the line shows tokens/s only.
fn show_mfu(
    bar: &mut Progress,
    model: Option<&std::path::Path>,
    full: bool,
    device: &tilpass::burn::tensor::Device,
) {
    let per_token = model
        .and_then(|m| std::fs::read_to_string(m.join("config.json")).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| tilpass::train::train_flops_per_token(&c, full));
    if let Some(f) = per_token
        && let Some(peak) = tilpass::train::peak_gflops(device)
    {
        bar.set_mfu(f, peak);
    }
}

/// Runs `tilpass train ...`.
pub fn train_cmd(c: TrainCommand) -> Result<()> {
    match c {
        TrainCommand::Sft(a) => {
            let Some(run) = a.config.resolve::<SftRun>(&a)? else {
                return Ok(());
            };
            let device = tilpass::device(&run.device)?;
            let mut bar = Progress::new(SftRun::JOB, run.steps);
            // Encoder-decoder directories (T5, mT5, NorT5) take the seq2seq path.
            let seq2seq = run
                .model
                .as_deref()
                .is_some_and(|m| tilpass::models::is_encoder_decoder(m).unwrap_or(false));
            if !seq2seq {
                show_mfu(&mut bar, run.model.as_deref(), run.full, &device);
            }
            let (summary, saved) = if run.peft != tilpass::train::PeftMethod::Lora {
                let o = run
                    .run_prompt(&device, &mut |e| show(&mut bar, e))
                    .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
                (o.summary, o.saved)
            } else if seq2seq {
                let o = run
                    .run_seq2seq(&device, &mut |e| show(&mut bar, e))
                    .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
                (o.summary, o.saved)
            } else {
                let o = run
                    .run(&device, &mut |e| show(&mut bar, e))
                    .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
                (o.summary, o.saved)
            };
            bar.finish(&summary);
            let key = if run.full { "model" } else { "adapter" };
            print(&json!({"summary": summary, key: saved.display().to_string()}));
        }
        TrainCommand::Classify(a) => {
            let Some(run) = a.config.resolve::<ClassifyRun>(&a)? else {
                return Ok(());
            };
            let device = tilpass::device(&run.device)?;
            let mut bar = Progress::new(ClassifyRun::JOB, run.steps);
            let o = run
                .run(&device, &mut |e| show(&mut bar, e))
                .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
            bar.finish(&o.summary);
            print_json(&o)?;
        }
        TrainCommand::Dpo(a) => {
            let Some(run) = a.config.resolve::<DpoRun>(&a)? else {
                return Ok(());
            };
            let device = tilpass::device(&run.device)?;
            let mut bar = Progress::new(DpoRun::JOB, run.steps);
            let o = run
                .run(&device, &mut |e| show(&mut bar, e))
                .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
            bar.finish(&o.summary);
            let key = if run.full { "model" } else { "adapter" };
            print(&json!({
                "summary": o.summary,
                "initial_eval": o.initial_eval,
                "final_eval": o.final_eval,
                key: o.saved.display().to_string(),
            }));
        }
        TrainCommand::Reward(a) => crate::reward::train_reward_cmd(&a)?,
        TrainCommand::Orpo(a) => pref::orpo(&a)?,
        TrainCommand::Cpo(a) => pref::cpo(&a)?,
        TrainCommand::Kto(a) => pref::kto(&a)?,
        TrainCommand::Grpo(a) => grpo::grpo(*a, tilpass::preference::OnlineKind::Grpo)?,
        TrainCommand::Rloo(a) => grpo::grpo(*a, tilpass::preference::OnlineKind::Rloo)?,
    }
    Ok(())
}
