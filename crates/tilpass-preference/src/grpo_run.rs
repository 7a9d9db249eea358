//! `tilpass train grpo|rloo`: online RL of a decoder ([`crate::grpo_trainer::train_online`]) on
//! prompts (a JSONL / JSON file of rows with a `prompt` — text or chat messages — and any
//! other columns, or a built-in dataset), scored by reward specs ([`RewardSpec`]: `lang=nn`,
//! `length=20..200`, `model=DIR:0.5`, ...), with a LoRA adapter (reference: the same model
//! with its adapters disabled) or every weight.
//!
//! The settings carry TRL's `GRPOConfig` / `RLOOConfig` names and defaults for the online
//! loop (`num_generations`, `num_iterations`, `steps_per_generation`, `max_completion_length`
//! 512, `temperature` 1, `top_p` 1, `top_k` off, `beta`, `epsilon`, `loss_type`,
//! `scale_rewards`, ...) and the flag names of `tilpass train dpo` for the optimiser (`lr`,
//! `steps`, `batch_size` = `per_device_train_batch_size`, `grad_accum`, ...). One deviation,
//! as the other preference runs: the learning rate defaults to 5e-5, not TRL's 1e-6, which
//! barely moves a LoRA adapter.
//!
//! Prompts are rendered as TRL's `GRPOTrainer` does: plain text tokenised with the
//! tokenizer's special tokens (`processing_class(text=prompts)`), conversations through the
//! chat template with the generation prompt and tokenised without special tokens.
//!
//! A reward model (`model=DIR`) is the output of `tilpass train reward` (its `out` directory,
//! or the `adapter/` / `model/` in it), a LoRA adapter carrying the score head, or a
//! `*ForSequenceClassification` decoder directory; it scores `prompt + completion`
//! ([`crate::model_reward::ModelReward`]).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tilpass_data::{Content, DatasetSpec, Message, Record, Role};
use tilpass_models::{DecoderClassifier, DecoderLm, ModelError, ScoreInit};
use tilpass_peft::{LoraConfig, PeftModel};
use tilpass_tokenize::{RenderOptions, Tokenizer};
use tilpass_train::runs::{LORA_SHORTHANDS, RunConfig};
use tilpass_train::{Event, ScheduleKind, Summary, Target, TrainConfig, TrainError};

use crate::error::{PreferenceError, Result};
use crate::grpo::{GrpoConfig, GrpoLossType, MultiObjectiveAggregation, ScaleRewards};
use crate::grpo_trainer::{
    OnlineAlgorithm, OnlineConfig, OnlineExtras, PromptRow, WeightedReward, train_online_with,
};
use crate::model_reward::ModelReward;
use crate::pref_run::{self, COMMON_RESUME_SETTINGS, Common};
use crate::rewards::{RewardFunction, RewardKind, RewardSpec};
use crate::rloo::RlooConfig;

/// GRPO or RLOO (the `tilpass train` subcommand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnlineKind {
    /// TRL's `GRPOTrainer`.
    #[default]
    Grpo,
    /// TRL's `RLOOTrainer`.
    Rloo,
}

impl OnlineKind {
    /// `grpo` or `rloo`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Grpo => "grpo",
            Self::Rloo => "rloo",
        }
    }
}

/// Settings of a GRPO / RLOO run. Field names are the `tilpass train grpo|rloo` flags
/// (`--num-generations` = `num_generations`) and TRL's config names; settings left `None`
/// take the algorithm's TRL default (e.g. `beta` 0.0 for GRPO, 0.05 for RLOO).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpoRun {
    /// `grpo` (default) or `rloo`.
    pub algorithm: OnlineKind,
    /// Policy model directory (config.json, safetensors, tokenizer files), e.g. a chat model.
    pub model: Option<PathBuf>,
    /// Prompts: a JSONL / JSON file of rows with `prompt` (text, or chat messages ending with
    /// a user turn) and any other columns (given to the reward functions, e.g. a gold answer
    /// for `exact=COLUMN`); or a built-in dataset (`builtin:norsk-chat`: the conversations
    /// up to their last user turn; `builtin:norsk-pref`: the preference prompts).
    pub data: Option<DatasetSpec>,
    /// Reward specs, summed with their weights ([`RewardSpec`]: `lang=nn`, `lang=prompt`,
    /// `length=MIN..MAX`, `distinct=N`, `format=REGEX`, `exact=COLUMN`, `model=DIR`, each
    /// with an optional `:WEIGHT`).
    pub rewards: Vec<String>,
    /// Output directory: `adapter/` (or `model/` with `full`), `checkpoint-N/`,
    /// `metrics.jsonl`, `run_config.json`.
    pub out: Option<PathBuf>,
    /// Continue from a checkpoint directory (`out/checkpoint-N`) of an earlier run.
    pub resume: Option<PathBuf>,
    /// Replace an earlier run in a non-empty `out`.
    pub overwrite_output_dir: bool,
    /// Device the CLI runs on (`flex`, `wgpu`, `cuda:0`, ...).
    pub device: String,
    /// Chat template for conversational prompts: the tokenizer's (default) or a named one.
    pub chat_template: Option<String>,
    /// Completions per prompt, G (TRL: 8 for GRPO, 2 for RLOO).
    pub num_generations: Option<usize>,
    /// Optimisation passes over each generation batch (TRL: 1).
    pub num_iterations: usize,
    /// Micro-batches per generation batch (TRL: `grad_accum`).
    pub steps_per_generation: Option<usize>,
    /// Keep at most this many prompt tokens, the last ones (`None`: whole prompts).
    pub max_prompt_length: Option<usize>,
    /// Most new tokens per completion (TRL: 512).
    pub max_completion_length: usize,
    /// Sampling temperature (TRL: 1.0).
    pub temperature: f64,
    /// Nucleus sampling mass (TRL: 1.0, off).
    pub top_p: f64,
    /// Sample among the `k` most likely tokens (TRL: off).
    pub top_k: Option<usize>,
    /// KL coefficient against the reference (TRL: 0.0 for GRPO, 0.05 for RLOO).
    pub beta: Option<f64>,
    /// Clipping range of the ratio (TRL: 0.2).
    pub epsilon: f64,
    /// Upper clipping range (TRL: `epsilon`; DAPO: 0.28).
    pub epsilon_high: Option<f64>,
    /// GRPO's loss aggregation: grpo, bnpo, dr_grpo or dapo (TRL's default).
    pub loss_type: Option<GrpoLossType>,
    /// GRPO's reward scaling: group (default), batch or none.
    pub scale_rewards: Option<ScaleRewards>,
    /// GRPO: sum_then_normalize (default) or normalize_then_sum.
    pub multi_objective_aggregation: Option<MultiObjectiveAggregation>,
    /// GRPO: multiply the k3 KL by the importance ratio (TRL 1.16: true).
    pub use_bias_correction_kl: Option<bool>,
    /// RLOO: normalise the advantages over the batch (TRL: false).
    pub normalize_advantages: Option<bool>,
    /// RLOO: clip the rewards to `[low, high]` (TRL: off).
    pub reward_clip_range: Option<(f64, f64)>,
    /// Rows per forward pass of a reward model.
    pub reward_batch_size: usize,
    /// Train every weight; the model is saved in HF layout under `out/model`.
    pub full: bool,
    /// The LoRA adapter (PEFT's `LoraConfig`). Ignored with `full` and `resume`.
    pub lora: LoraConfig,
    /// Completions per micro-batch (TRL's `per_device_train_batch_size`: 8).
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate. Default 5e-5 (TRL: 1e-6, too small for LoRA; use ~1e-6 with
    /// `full`).
    pub lr: f64,
    /// Schedule after warmup: linear (default), cosine or constant.
    pub lr_scheduler_type: ScheduleKind,
    /// Optimiser steps.
    pub steps: usize,
    /// Linear warmup steps (at most `steps`).
    pub warmup: usize,
    /// Global-norm gradient clipping (default 1.0; `None`: off).
    pub max_grad_norm: Option<f64>,
    /// AdamW's decoupled weight decay (default 0).
    pub weight_decay: f64,
    /// AdamW's β₁.
    pub adam_beta1: f64,
    /// AdamW's β₂.
    pub adam_beta2: f64,
    /// AdamW's ε.
    pub adam_epsilon: f64,
    /// Checkpoint every this many steps.
    pub save_steps: Option<usize>,
    /// Checkpoints kept.
    pub save_total_limit: usize,
    /// Seed of the adapter's initialisation, dropout, the prompt order and the sampler.
    pub seed: u64,
}

impl Default for GrpoRun {
    fn default() -> Self {
        let t = TrainConfig::default();
        let a = tilpass_train::AdamWConfig::default();
        let o = OnlineConfig::default();
        let g = GrpoConfig::default();
        Self {
            algorithm: OnlineKind::Grpo,
            model: None,
            data: None,
            rewards: Vec::new(),
            out: None,
            resume: None,
            overwrite_output_dir: false,
            device: "flex".into(),
            chat_template: None,
            num_generations: None,
            num_iterations: o.num_iterations,
            steps_per_generation: o.steps_per_generation,
            max_prompt_length: o.max_prompt_length,
            max_completion_length: o.max_completion_length,
            temperature: o.temperature,
            top_p: o.top_p,
            top_k: o.top_k,
            beta: None,
            epsilon: g.epsilon,
            epsilon_high: g.epsilon_high,
            loss_type: None,
            scale_rewards: None,
            multi_objective_aggregation: None,
            use_bias_correction_kl: None,
            normalize_advantages: None,
            reward_clip_range: None,
            reward_batch_size: 32,
            full: false,
            lora: LoraConfig {
                r: 16,
                lora_alpha: 32.0,
                task_type: Some("CAUSAL_LM".into()),
                ..Default::default()
            },
            batch_size: o.per_device_train_batch_size,
            grad_accum: 1,
            lr: 5e-5,
            lr_scheduler_type: ScheduleKind::Linear,
            steps: t.max_steps,
            warmup: 0,
            max_grad_norm: Some(1.0),
            weight_decay: a.weight_decay,
            adam_beta1: a.beta1,
            adam_beta2: a.beta2,
            adam_epsilon: a.eps,
            save_steps: None,
            save_total_limit: t.save_total_limit,
            seed: 0,
        }
    }
}

/// The settings a resumed run must share with the run it continues (besides
/// the common ones of the preference runs: `full`, `batch_size`, `lr`, ..., `seed`).
pub const ONLINE_RESUME_SETTINGS: &[&str] = &[
    "algorithm",
    "rewards",
    "num_generations",
    "num_iterations",
    "steps_per_generation",
    "max_prompt_length",
    "max_completion_length",
    "temperature",
    "top_p",
    "top_k",
    "beta",
    "epsilon",
    "epsilon_high",
    "loss_type",
    "scale_rewards",
    "multi_objective_aggregation",
    "use_bias_correction_kl",
    "normalize_advantages",
    "reward_clip_range",
];

impl RunConfig for GrpoRun {
    const JOB: &'static str = "grpo";

    fn shorthands() -> Vec<(&'static str, &'static str, &'static str)> {
        LORA_SHORTHANDS
            .iter()
            .map(|(k, f)| (*k, "lora", *f))
            .collect()
    }

    fn validate(&self) -> tilpass_train::Result<()> {
        self.common().validate()?;
        self.validate_own()
            .map_err(|e| TrainError::Config(e.to_string()))
    }
}

impl GrpoRun {
    pub(crate) fn common(&self) -> Common<'_> {
        const NO_DATA: &Option<DatasetSpec> = &None;
        Common {
            model: &self.model,
            data: &self.data,
            eval_data: NO_DATA,
            eval_steps: None,
            early_stopping_patience: None,
            out: &self.out,
            resume: &self.resume,
            overwrite_output_dir: self.overwrite_output_dir,
            max_length: None,
            full: self.full,
            lora: &self.lora,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            lr_scheduler_type: self.lr_scheduler_type,
            steps: self.steps,
            warmup: self.warmup,
            max_grad_norm: self.max_grad_norm,
            weight_decay: self.weight_decay,
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_epsilon: self.adam_epsilon,
            save_steps: self.save_steps,
            save_total_limit: self.save_total_limit,
            seed: self.seed,
        }
    }

    /// The training loop's settings.
    pub fn train_config(&self) -> TrainConfig {
        self.common().train_config()
    }

    /// The reward specs, parsed.
    pub fn reward_specs(&self) -> Result<Vec<RewardSpec>> {
        self.rewards.iter().map(|s| RewardSpec::parse(s)).collect()
    }

    /// The online loop's settings (TRL's defaults for what is left `None`).
    pub fn online_config(&self) -> OnlineConfig {
        let algorithm = match self.algorithm {
            OnlineKind::Grpo => {
                let d = GrpoConfig::default();
                OnlineAlgorithm::Grpo(GrpoConfig {
                    beta: self.beta.unwrap_or(d.beta),
                    epsilon: self.epsilon,
                    epsilon_high: self.epsilon_high,
                    loss_type: self.loss_type.unwrap_or(d.loss_type),
                    scale_rewards: self.scale_rewards.unwrap_or(d.scale_rewards),
                    multi_objective_aggregation: self
                        .multi_objective_aggregation
                        .unwrap_or(d.multi_objective_aggregation),
                    use_bias_correction_kl: self
                        .use_bias_correction_kl
                        .unwrap_or(d.use_bias_correction_kl),
                    num_generations: self.num_generations(),
                    max_completion_length: self.max_completion_length,
                })
            }
            OnlineKind::Rloo => {
                let d = RlooConfig::default();
                OnlineAlgorithm::Rloo(RlooConfig {
                    beta: self.beta.unwrap_or(d.beta),
                    epsilon: self.epsilon,
                    epsilon_high: self.epsilon_high,
                    normalize_advantages: self
                        .normalize_advantages
                        .unwrap_or(d.normalize_advantages),
                    reward_clip_range: self.reward_clip_range.or(d.reward_clip_range),
                    num_generations: self.num_generations(),
                })
            }
        };
        OnlineConfig {
            algorithm,
            num_generations: self.num_generations(),
            num_iterations: self.num_iterations,
            steps_per_generation: self.steps_per_generation,
            per_device_train_batch_size: self.batch_size,
            max_prompt_length: self.max_prompt_length,
            max_completion_length: self.max_completion_length,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
        }
    }

    /// G: `num_generations`, else TRL's default of the algorithm.
    pub fn num_generations(&self) -> usize {
        self.num_generations.unwrap_or(match self.algorithm {
            OnlineKind::Grpo => GrpoConfig::default().num_generations,
            OnlineKind::Rloo => RlooConfig::default().num_generations,
        })
    }

    /// The checks of the online settings and reward specs (after [`Common::validate`]).
    fn validate_own(&self) -> Result<()> {
        let only = |set: bool, setting: &'static str, algo: OnlineKind| {
            if set && self.algorithm != algo {
                Err(PreferenceError::Incompatible {
                    setting,
                    other: "algorithm",
                    reason: format!(
                        "`{setting}` is a {} setting; this run is {}",
                        algo.as_str(),
                        self.algorithm.as_str()
                    ),
                })
            } else {
                Ok(())
            }
        };
        only(self.loss_type.is_some(), "loss_type", OnlineKind::Grpo)?;
        only(
            self.scale_rewards.is_some(),
            "scale_rewards",
            OnlineKind::Grpo,
        )?;
        only(
            self.multi_objective_aggregation.is_some(),
            "multi_objective_aggregation",
            OnlineKind::Grpo,
        )?;
        only(
            self.use_bias_correction_kl.is_some(),
            "use_bias_correction_kl",
            OnlineKind::Grpo,
        )?;
        only(
            self.normalize_advantages.is_some(),
            "normalize_advantages",
            OnlineKind::Rloo,
        )?;
        only(
            self.reward_clip_range.is_some(),
            "reward_clip_range",
            OnlineKind::Rloo,
        )?;
        if self.rewards.is_empty() {
            return Err(PreferenceError::InvalidSetting {
                setting: "rewards",
                value: "none".into(),
                expected: "at least one reward spec (e.g. `--reward lang=nn`, \
                           `--reward model=DIR:0.5`)"
                    .into(),
            });
        }
        for spec in self.reward_specs()? {
            if let RewardKind::Model(dir) = &spec.kind
                && !dir.is_dir()
            {
                return Err(PreferenceError::InvalidSetting {
                    setting: "rewards",
                    value: format!("model={}", dir.display()),
                    expected: "an existing reward model directory (the output of `tilpass \
                               train reward`, its adapter, or a *ForSequenceClassification \
                               model)"
                        .into(),
                });
            }
        }
        if self.reward_batch_size == 0 {
            return Err(PreferenceError::InvalidSetting {
                setting: "reward_batch_size",
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        let online = self.online_config();
        online.validate()?;
        // TRL: the generation batch (per-device batch x steps per generation) must hold
        // whole groups of G completions.
        let g = online.num_generations;
        let spg = self.steps_per_generation.unwrap_or(self.grad_accum);
        let generation_batch = self.batch_size * spg;
        if !generation_batch.is_multiple_of(g) {
            return Err(PreferenceError::Incompatible {
                setting: "num_generations",
                other: "batch_size",
                reason: format!(
                    "the generation batch (batch_size {} x steps_per_generation {spg} = \
                     {generation_batch} completions) must be a multiple of num_generations \
                     ({g}), as in TRL",
                    self.batch_size
                ),
            });
        }
        Ok(())
    }

    /// Runs GRPO / RLOO on `device` (made an autodiff device for the policy; reward models
    /// stay on `device` without autodiff), reporting progress to `progress`: checks the
    /// settings, reads and renders the prompts and loads the reward models (errors name the
    /// row or directory) before the policy, writes `out/run_config.json`, trains with
    /// [`crate::grpo_trainer::train_online`] (with a frozen reference copy for full
    /// fine-tuning with `beta` > 0), and saves the adapter (HF PEFT layout, `out/adapter`) or the model
    /// (`out/model`).
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<GrpoOutcome> {
        let common = self.common();
        let resume_settings: Vec<&str> = COMMON_RESUME_SETTINGS
            .iter()
            .chain(ONLINE_RESUME_SETTINGS)
            .copied()
            .collect();
        let started = pref_run::start(self, &common, &resume_settings, device)?;
        let prompts = read_prompts(
            &started.tokenizer,
            &started.data,
            self.chat_template.as_deref(),
        )?;
        progress(Event::Detail(&format!(
            "{}: {} prompts",
            started.data,
            prompts.len()
        )));
        // Rule rewards, then reward models (loaded before the policy: a bad directory fails
        // before any training work).
        let specs = self.reward_specs()?;
        let mut rules: Vec<(usize, Box<dyn RewardFunction>)> = Vec::new();
        let mut models: Vec<(usize, LoadedRewardModel)> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            match &spec.kind {
                RewardKind::Model(dir) => {
                    let m = load_reward_model(dir, device)?;
                    progress(Event::Message(&format!(
                        "reward model {}: {}",
                        i + 1,
                        m.source.display()
                    )));
                    models.push((i, m));
                }
                _ => {
                    if let Some(f) = spec.build()? {
                        rules.push((i, f));
                    }
                }
            }
        }
        let scorers: Vec<(usize, ModelReward<'_, DecoderClassifier>)> = models
            .iter()
            .map(|(i, m)| {
                (
                    *i,
                    ModelReward {
                        name: m.name.clone(),
                        model: &m.model,
                        tokenizer: &m.tokenizer,
                        pad_token_id: m.pad_token_id,
                        batch_size: self.reward_batch_size,
                    },
                )
            })
            .collect();
        // In the order of the specs (the reward table's columns).
        let mut weighted: Vec<(usize, WeightedReward<'_>)> = rules
            .iter()
            .map(|(i, f)| {
                (
                    *i,
                    WeightedReward {
                        reward: f.as_ref(),
                        weight: specs[*i].weight,
                    },
                )
            })
            .chain(scorers.iter().map(|(i, s)| {
                (
                    *i,
                    WeightedReward {
                        reward: s as &dyn RewardFunction,
                        weight: specs[*i].weight,
                    },
                )
            }))
            .collect();
        weighted.sort_by_key(|(i, _)| *i);
        let weighted: Vec<WeightedReward<'_>> = weighted.into_iter().map(|(_, w)| w).collect();
        let mut peft = pref_run::load_model(&common, &started, progress)?;
        let target = if self.full {
            Target::Full
        } else {
            Target::Adapter("default")
        };
        let online = self.online_config();
        let beta = match &online.algorithm {
            OnlineAlgorithm::Grpo(c) => c.beta,
            OnlineAlgorithm::Rloo(c) => c.beta,
        };
        // Full fine-tuning with a KL term needs a frozen copy of the starting weights (LoRA
        // uses the model with its adapters disabled).
        let reference = if self.full && beta > 0.0 {
            Some(DecoderLm::load(&started.model_dir, &started.device)?)
        } else {
            None
        };
        let summary = train_online_with(
            &mut peft,
            target,
            &started.tokenizer,
            &prompts,
            &weighted,
            &online,
            &self.train_config(),
            self.resume.as_deref(),
            OnlineExtras {
                reference: reference.as_ref(),
                fixed: None,
            },
            progress,
        )?;
        let saved = pref_run::save(&common, &started, &peft)?;
        Ok(GrpoOutcome {
            summary,
            saved,
            model: peft,
        })
    }
}

/// What a GRPO / RLOO run did.
#[derive(Debug)]
pub struct GrpoOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// Where the result went: `out/adapter` (HF PEFT layout) or, with `full`, `out/model`.
    pub saved: PathBuf,
    /// The trained model (with its adapter).
    pub model: PeftModel<DecoderLm>,
}

/// Reads the prompt rows of `spec` and renders them as TRL's `GRPOTrainer` does (see the
/// module docs). Errors name the file and line (or item) of a row without a usable prompt.
pub fn read_prompts(
    tokenizer: &Tokenizer,
    spec: &DatasetSpec,
    chat_template: Option<&str>,
) -> Result<Vec<PromptRow>> {
    let rows: Vec<(String, Value)> = match spec {
        DatasetSpec::File(p) => read_json_rows(p)?,
        other => {
            let records = tilpass_data::load_records(other).map_err(TrainError::from)?;
            records
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("{other} row {}", i + 1), builtin_row(r)))
                .collect()
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for (at, row) in rows {
        let bad =
            |expected: String| -> PreferenceError { pref_run::row_error(&at, expected).into() };
        let prompt = row.get("prompt").cloned().unwrap_or(Value::Null);
        let (text, ids) = match &prompt {
            Value::String(t) => {
                if t.trim().is_empty() {
                    return Err(bad("a non-empty `prompt`".into()));
                }
                let ids = tokenizer.encode(t, true).map_err(TrainError::from)?;
                (t.clone(), ids)
            }
            Value::Array(_) => {
                let messages: Vec<Message> = serde_json::from_value(prompt.clone())
                    .map_err(|e| bad(format!("`prompt` as chat messages ({e})")))?;
                match messages.last().map(|m| m.role) {
                    Some(Role::User | Role::Tool | Role::System) => {}
                    other => {
                        return Err(bad(format!(
                            "a conversational `prompt` ending with a user turn, not {other:?}"
                        )));
                    }
                }
                let template = tokenizer
                    .chat_template(chat_template)
                    .map_err(TrainError::from)?;
                let text = template
                    .render(
                        &messages,
                        &RenderOptions {
                            add_generation_prompt: true,
                            ..Default::default()
                        },
                    )
                    .map_err(TrainError::from)?
                    .text;
                let ids = tokenizer.encode(&text, false).map_err(TrainError::from)?;
                (text, ids)
            }
            Value::Null => {
                return Err(bad(
                    "a `prompt` column (text or chat messages) in every row".into(),
                ));
            }
            other => {
                return Err(bad(format!(
                    "`prompt` as text or chat messages, found {other}"
                )));
            }
        };
        if ids.is_empty() {
            return Err(bad("a prompt of at least one token".into()));
        }
        out.push(PromptRow {
            prompt: text,
            prompt_ids: ids,
            row,
        });
    }
    if out.is_empty() {
        return Err(TrainError::setting("data", spec, "at least one prompt row").into());
    }
    Ok(out)
}

/// The rows of a JSONL file (one object a line) or a JSON array, with their locations.
fn read_json_rows(path: &Path) -> Result<Vec<(String, Value)>> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut rows = Vec::new();
    if is_json {
        let v: Value = tilpass_core::read_json(path).map_err(TrainError::from)?;
        let Value::Array(items) = v else {
            return Err(TrainError::setting(
                "data",
                path.display(),
                "a JSON array of rows (or a JSONL file)",
            )
            .into());
        };
        for (i, item) in items.into_iter().enumerate() {
            rows.push((
                format!("{} {}", path.display(), tilpass_data::Location::Item(i)),
                item,
            ));
        }
    } else {
        for row in tilpass_data::JsonlRows::open(path).map_err(TrainError::from)? {
            let (loc, v) = row.map_err(TrainError::from)?;
            let at = format!("{}:{}", path.display(), loc_line(&loc));
            match v {
                Ok(v) => rows.push((at, v)),
                Err(e) => {
                    return Err(
                        TrainError::setting("data", at, format!("a JSON object ({e})")).into(),
                    );
                }
            }
        }
    }
    for (at, v) in &rows {
        if !v.is_object() {
            return Err(
                TrainError::setting("data", at, format!("a JSON object, found {v}")).into(),
            );
        }
    }
    Ok(rows)
}

fn loc_line(loc: &tilpass_data::Location) -> String {
    match loc {
        tilpass_data::Location::Line(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A built-in record as a prompt row: conversations up to their last user turn (the last
/// assistant answer as `answer`), preference and prompt rows by their prompt.
fn builtin_row(r: &Record) -> Value {
    let content = |c: &Content| serde_json::to_value(c).unwrap_or(Value::Null);
    match r {
        Record::Conversation { messages } => {
            let cut = messages
                .iter()
                .rposition(|m| m.role == Role::User)
                .map_or(messages.len(), |i| i + 1);
            let answer = messages[cut..]
                .iter()
                .find(|m| m.role == Role::Assistant)
                .map(|m| Value::String(m.content.clone()))
                .unwrap_or(Value::Null);
            serde_json::json!({
                "prompt": serde_json::to_value(&messages[..cut]).unwrap_or(Value::Null),
                "answer": answer,
            })
        }
        Record::PromptOnly { prompt } => serde_json::json!({ "prompt": content(prompt) }),
        Record::PromptCompletion { prompt, completion } => {
            serde_json::json!({ "prompt": content(prompt), "answer": content(completion) })
        }
        Record::Preference {
            prompt: Some(p),
            chosen,
            ..
        } => serde_json::json!({ "prompt": content(p), "answer": content(chosen) }),
        _ => Value::Null,
    }
}

/// The metric name of the reward model in `dir`: `reward_model_` + the directory's name.
fn reward_name(dir: &Path) -> String {
    let base = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    format!("reward_model_{base}")
}

/// A reward model loaded for scoring.
pub struct LoadedRewardModel {
    /// The name in the logged metrics (`reward_model` + the directory's name).
    pub name: String,
    /// The directory the weights came from.
    pub source: PathBuf,
    /// The sequence classifier (adapter folded in).
    pub model: DecoderClassifier,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The id right-padding uses.
    pub pad_token_id: u32,
}

/// Loads a decoder reward model from `dir`: a `tilpass train reward` output directory (its
/// `model/` or `adapter/`), a LoRA adapter directory carrying the score head
/// (`modules_to_save = ["score"]`; the base from `base_model_name_or_path`), or a
/// `*ForSequenceClassification` model directory. Errors say which and why.
pub fn load_reward_model(dir: &Path, device: &Device) -> Result<LoadedRewardModel> {
    let invalid = |what: String| -> PreferenceError {
        PreferenceError::InvalidSetting {
            setting: "rewards",
            value: format!("model={}", dir.display()),
            expected: what,
        }
    };
    // A `tilpass train reward` output directory.
    if !dir.join("config.json").is_file() && !dir.join("adapter_config.json").is_file() {
        for sub in ["model", "adapter"] {
            let d = dir.join(sub);
            if d.join("config.json").is_file() || d.join("adapter_config.json").is_file() {
                // Named after the run directory the user gave, not its `adapter/`.
                let mut m = load_reward_model(&d, device)?;
                m.name = reward_name(dir);
                return Ok(m);
            }
        }
        return Err(invalid(
            "a reward model directory: config.json (a *ForSequenceClassification model), \
             adapter_config.json (a reward adapter), or `tilpass train reward` output with \
             model/ or adapter/"
                .into(),
        ));
    }
    if crate::reward_run::is_encoder_reward_model(dir) {
        return Err(invalid(
            "a decoder reward model (BERT / NorBERT3 reward models are not supported by \
             GRPO / RLOO yet)"
                .into(),
        ));
    }
    let (model, tok_dir) = if dir.join("adapter_config.json").is_file() {
        let cfg: Value =
            tilpass_core::read_json(dir.join("adapter_config.json")).map_err(TrainError::from)?;
        let base = cfg["base_model_name_or_path"]
            .as_str()
            .map(PathBuf::from)
            .filter(|b| b.join("config.json").is_file())
            .ok_or_else(|| {
                invalid(format!(
                    "an adapter whose base_model_name_or_path ({}) is a model directory",
                    cfg["base_model_name_or_path"]
                ))
            })?;
        let ck = tilpass_core::Checkpoint::open(dir.join("adapter_model.safetensors"))
            .map_err(TrainError::from)?;
        if !ck.contains("base_model.model.score.weight") {
            return Err(invalid(
                "an adapter carrying the score head (`modules_to_save` with `score`, as \
                 `tilpass train reward` saves it)"
                    .into(),
            ));
        }
        let init = ScoreInit::NewIfMissing {
            num_labels: 1,
            seed: 0,
        };
        let m = DecoderClassifier::load_with(&base, init, device)?;
        let mut peft = PeftModel::new(m);
        peft.load_adapter(dir, "default")?;
        (peft.into_model(), base)
    } else {
        let m = DecoderClassifier::load(dir, device).map_err(|e| match e {
            ModelError::MissingHead { .. } => invalid(
                "a *ForSequenceClassification model with a score head (this one has none: \
                 it is not a reward model)"
                    .into(),
            ),
            other => other.into(),
        })?;
        (m, dir.to_path_buf())
    };
    if model.num_labels() != 1 {
        return Err(invalid(format!(
            "a reward model with one output (this one has {})",
            model.num_labels()
        )));
    }
    let tokenizer = Tokenizer::from_dir(&tok_dir).map_err(TrainError::from)?;
    let pad_token_id = model
        .pad_token_id()
        .or(tokenizer.pad_id())
        .or(tokenizer.eos_id())
        .ok_or_else(|| {
            invalid("a pad token (the model's pad_token_id, or the tokenizer's pad / EOS)".into())
        })?;
    let mut model = model;
    model.set_pad_token_id(Some(pad_token_id));
    Ok(LoadedRewardModel {
        name: reward_name(dir),
        source: dir.to_path_buf(),
        model,
        tokenizer,
        pad_token_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(json: &str) -> GrpoRun {
        let base = serde_json::json!({
            "model": "m", "data": "p.jsonl", "out": "o", "rewards": ["lang=nn"]
        });
        let mut v = base;
        let extra: Value = serde_json::from_str(json).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn err(r: &GrpoRun) -> String {
        r.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_trls() {
        let r = run("{}");
        r.validate().unwrap();
        let o = r.online_config();
        assert_eq!(o.num_generations, 8);
        assert_eq!(o.max_completion_length, 512);
        assert_eq!((o.temperature, o.top_p, o.top_k), (1.0, 1.0, None));
        match o.algorithm {
            OnlineAlgorithm::Grpo(g) => {
                assert_eq!(g.beta, 0.0);
                assert_eq!(g.loss_type, GrpoLossType::Dapo);
                assert_eq!(g.num_generations, 8);
            }
            other => panic!("{other:?}"),
        }
        let r = run(r#"{"algorithm": "rloo", "batch_size": 2}"#);
        r.validate().unwrap();
        match r.online_config().algorithm {
            OnlineAlgorithm::Rloo(c) => {
                assert_eq!(c.beta, 0.05);
                assert_eq!(c.num_generations, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(serde_json::from_str::<GrpoRun>(r#"{"eval_data": "x"}"#).is_err());
    }

    #[test]
    fn bad_settings_are_named_before_any_work() {
        let no_rewards = run(r#"{"rewards": []}"#);
        assert!(err(&no_rewards).contains("rewards"), "{}", err(&no_rewards));
        let bad_spec = run(r#"{"rewards": ["lang=nn", "length=9..3"]}"#);
        assert!(err(&bad_spec).contains("length=9..3"), "{}", err(&bad_spec));
        let no_dir = run(r#"{"rewards": ["model=/nonexistent/reward:0.5"]}"#);
        let e = err(&no_dir);
        assert!(
            e.contains("model=/nonexistent/reward") && e.contains("directory"),
            "{e}"
        );
        let g1 = run(r#"{"num_generations": 1}"#);
        assert!(err(&g1).contains("num_generations"), "{}", err(&g1));
        // 8 x 1 completions hold no whole groups of 3.
        let groups = run(r#"{"num_generations": 3}"#);
        let e = err(&groups);
        assert!(e.contains("multiple of num_generations"), "{e}");
        // ... but 6 x 2 do.
        run(r#"{"num_generations": 3, "batch_size": 6, "grad_accum": 2}"#)
            .validate()
            .unwrap();
        let t = run(r#"{"temperature": 0.0}"#);
        assert!(err(&t).contains("temperature"), "{}", err(&t));
        let p = run(r#"{"top_p": 1.5}"#);
        assert!(err(&p).contains("top_p"), "{}", err(&p));
        let rloo_loss = run(r#"{"algorithm": "rloo", "loss_type": "grpo", "batch_size": 2}"#);
        let e = err(&rloo_loss);
        assert!(e.contains("loss_type") && e.contains("rloo"), "{e}");
        let grpo_norm = run(r#"{"normalize_advantages": true}"#);
        assert!(err(&grpo_norm).contains("normalize_advantages"));
        let eps = run(r#"{"epsilon": 1.5}"#);
        assert!(err(&eps).contains("epsilon"), "{}", err(&eps));
        let missing_model: GrpoRun =
            serde_json::from_str(r#"{"data": "p.jsonl", "out": "o", "rewards": ["lang=nn"]}"#)
                .unwrap();
        assert!(err(&missing_model).contains("model"));
        let lr = run(r#"{"lr": -1.0}"#);
        assert!(err(&lr).contains("lr"));
    }

    #[test]
    fn prompt_rows_name_the_line_of_a_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        std::fs::write(&p, "{\"prompt\": \"a\"}\n{\"question\": \"b\"}\n").unwrap();
        let rows = read_json_rows(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[1].0.ends_with("p.jsonl:2"), "{}", rows[1].0);
        std::fs::write(&p, "{\"prompt\": \"a\"}\n[1]\n").unwrap();
        let e = read_json_rows(&p).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:2") && e.contains("JSON object"), "{e}");
    }

    #[test]
    fn builtin_conversations_become_prompts_up_to_the_last_user_turn() {
        let r = Record::Conversation {
            messages: vec![
                Message::new(Role::User, "Kva heiter du?"),
                Message::new(Role::Assistant, "Eg heiter Tilpass."),
            ],
        };
        let v = builtin_row(&r);
        assert_eq!(v["prompt"].as_array().unwrap().len(), 1);
        assert_eq!(v["answer"], "Eg heiter Tilpass.");
    }
}
