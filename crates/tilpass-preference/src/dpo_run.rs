//! `tilpass train dpo`: DPO of a decoder on preference data (TRL formats or
//! `builtin:norsk-pref`) with a LoRA adapter (reference: the same model with its adapters
//! disabled) or every weight ([`DpoRun::full`]; reference: a second copy of the starting model).
//!
//! The settings carry TRL's `DPOConfig` names and defaults (`beta` 0.1, `loss_type` sigmoid,
//! `label_smoothing` 0, `max_length` 1024, `truncation` keep_start, ...) and transformers'
//! `TrainingArguments` ones for the optimiser (linear decay without warm-up, no weight decay,
//! clipping at 1.0, AdamW β 0.9 / 0.999, ε 1e-8), with the flag names of `tilpass train sft`
//! (`lr`, `steps`, `batch_size`, ...). One deviation: the learning rate defaults to 5e-5, not
//! TRL's 1e-6, which barely moves a LoRA adapter (TRL's value suits full fine-tuning).
//!
//! With `precompute_ref_log_probs` (TRL's name, default off) the reference's log-probs of
//! every train and eval pair are computed once before the first step and cached on disk
//! ([`crate::ref_cache`]: next to a data file, in the user's cache directory for built-in
//! data, or in `ref_cache_dir`), keyed by the model's weights, the tokenised data and the
//! settings that change them; a later run (or a resumed one) with the same key reuses them,
//! one with another key says what changed and rebuilds them. As in TRL, full fine-tuning then
//! keeps no reference copy in memory, and the values, hence the losses, are the ones computed
//! without the cache.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tilpass_data::{Content, DatasetSpec, Record, load_records};
use tilpass_models::{DecoderLm, HasLinears};
use tilpass_peft::{LoraConfig, PeftModel};
use tilpass_tokenize::{
    PreferenceConfig, Tokenizer, Truncation, collate_preference, encode_preferences,
};
use tilpass_train::runs::{
    FreshStart, LORA_SHORTHANDS, RunConfig, check_resume_settings, prepare_output_dir,
    write_run_config,
};
use tilpass_train::trainer::{METRICS_FILE, append_json_line};
use tilpass_train::{AdamWConfig, Event, ScheduleKind, Summary, Target, TrainConfig, TrainError};

use crate::divergence::FDivergence;
use crate::dpo::{DpoConfig, DpoLossType};
use crate::dpo_trainer::{
    DpoBatch, DpoEval, DpoReference, RefLogps, evaluate_dpo, precompute_reference, train_dpo,
};
use crate::error::Result;
use crate::ref_cache::{self, CacheLookup, RefCacheKey, cache_path, hash_batches, hash_model_dir};

/// Settings of a DPO run. Field names are the `tilpass train dpo` flags (`--loss-type` =
/// `loss_type`) and TRL's `DPOConfig` names for the DPO settings; the LoRA settings are
/// PEFT's `LoraConfig` under `lora` (also taken at the top level: `lora_r`, `lora_alpha`,
/// `target_modules`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoRun {
    /// Base model directory (config.json, safetensors, tokenizer files); e.g. the model a
    /// `tilpass train sft --full` run saved, or a base merged with its SFT adapter.
    pub model: Option<PathBuf>,
    /// Training data: JSONL / JSON preference rows in a TRL format (explicit or implicit
    /// prompt, text or conversations), or `builtin:norsk-pref[:split]`.
    pub data: Option<DatasetSpec>,
    /// Held-out pairs (e.g. `builtin:norsk-pref:eval`), evaluated before the first step, every
    /// `eval_steps` and after the last: eval loss and TRL's `eval_rewards/*`, `eval_logps/*`
    /// metrics, logged to `metrics.jsonl` and returned in [`DpoOutcome`].
    pub eval_data: Option<DatasetSpec>,
    /// Evaluate on `eval_data` every this many steps (besides before and after training).
    pub eval_steps: Option<usize>,
    /// Stop after this many evaluations without a lower `eval_loss` (needs `eval_steps`).
    pub early_stopping_patience: Option<usize>,
    /// Output directory: `adapter/` (or `model/` with `full`), `checkpoint-N/`,
    /// `metrics.jsonl`, `run_config.json`.
    pub out: Option<PathBuf>,
    /// Continue from a checkpoint directory (`out/checkpoint-N`) of an earlier run.
    pub resume: Option<PathBuf>,
    /// Replace an earlier run in a non-empty `out`.
    pub overwrite_output_dir: bool,
    /// Device the CLI runs on (`flex`, `wgpu`, `cuda:0`, ...).
    pub device: String,
    /// Chat template for conversational rows: the tokenizer's (default) or a named one.
    pub chat_template: Option<String>,
    /// Tokens of prompt + completion kept per sequence (TRL: 1024; `None`: no limit).
    pub max_length: Option<usize>,
    /// Which end of a longer sequence to keep: keep_start (TRL's default) or keep_end.
    pub truncation: Truncation,
    /// Pad batches to a multiple of this many columns.
    pub pad_to_multiple_of: Option<usize>,
    /// DPO's beta (TRL: 0.1).
    pub beta: f64,
    /// The loss, or a list of losses summed with `loss_weights` (TRL: sigmoid).
    #[serde(deserialize_with = "crate::dpo::one_or_many")]
    pub loss_type: Vec<DpoLossType>,
    /// One weight per loss type (default 1.0 each).
    pub loss_weights: Option<Vec<f64>>,
    /// Label smoothing of robust / EXO / AOT, in [0, 0.5) (TRL: 0).
    pub label_smoothing: f64,
    /// f-divergence of the scores (TRL: reverse_kl).
    pub f_divergence_type: FDivergence,
    /// Alpha of the alpha-divergence (TRL: 0.5).
    pub f_alpha_divergence_coef: f64,
    /// LD-DPO's alpha (TRL: none).
    pub ld_alpha: Option<f64>,
    /// DiscoPOP's tau (TRL: 0.05).
    pub discopop_tau: f64,
    /// WPO: weight each pair's loss by the policy's length-normalised probability of both
    /// answers (TRL: false).
    pub use_weighting: bool,
    /// Compute the reference's log-probs of every pair once before training and cache them on
    /// disk (TRL: false).
    pub precompute_ref_log_probs: bool,
    /// Directory of the reference log-prob caches (default: next to a data file; for built-in
    /// data `$XDG_CACHE_HOME/tilpass/ref-logps` or `~/.cache/tilpass/ref-logps`).
    pub ref_cache_dir: Option<PathBuf>,
    /// Train every weight against a second copy of the starting model as the reference; the
    /// model is saved in HF layout under `out/model`.
    pub full: bool,
    /// The LoRA adapter (PEFT's `LoraConfig`). Ignored with `full` and `resume`.
    pub lora: LoraConfig,
    /// Preference pairs per batch (TRL's `per_device_train_batch_size`: 8).
    pub batch_size: usize,
    /// Batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate. Default 5e-5 (TRL: 1e-6, too small for LoRA; use ~5e-7 to 1e-6
    /// with `full`).
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
    /// Seed of the adapter's initialisation and of dropout.
    pub seed: u64,
}

impl Default for DpoRun {
    fn default() -> Self {
        let t = TrainConfig::default();
        let a = AdamWConfig::default();
        let d = DpoConfig::default();
        let p = PreferenceConfig::default();
        Self {
            model: None,
            data: None,
            eval_data: None,
            eval_steps: t.eval_steps,
            early_stopping_patience: t.early_stopping_patience,
            out: None,
            resume: None,
            overwrite_output_dir: false,
            device: "flex".into(),
            chat_template: p.chat_template,
            max_length: p.max_length,
            truncation: p.truncation,
            pad_to_multiple_of: p.pad_to_multiple_of,
            beta: d.beta,
            loss_type: d.loss_type,
            loss_weights: d.loss_weights,
            label_smoothing: d.label_smoothing,
            f_divergence_type: d.f_divergence_type,
            f_alpha_divergence_coef: d.f_alpha_divergence_coef,
            ld_alpha: d.ld_alpha,
            discopop_tau: d.discopop_tau,
            use_weighting: d.use_weighting,
            precompute_ref_log_probs: false,
            ref_cache_dir: None,
            full: false,
            lora: LoraConfig {
                r: 16,
                lora_alpha: 32.0,
                task_type: Some("CAUSAL_LM".into()),
                ..Default::default()
            },
            batch_size: 8,
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

/// The settings a resumed run must share with the run it continues.
pub const RESUME_SETTINGS: &[&str] = &[
    "full",
    "batch_size",
    "grad_accum",
    "lr",
    "lr_scheduler_type",
    "warmup",
    "max_grad_norm",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_length",
    "truncation",
    "pad_to_multiple_of",
    "chat_template",
    "beta",
    "loss_type",
    "loss_weights",
    "label_smoothing",
    "f_divergence_type",
    "f_alpha_divergence_coef",
    "ld_alpha",
    "discopop_tau",
    "use_weighting",
    "seed",
];

fn missing(setting: &str) -> TrainError {
    TrainError::MissingSetting {
        setting: setting.into(),
        flag: setting.replace('_', "-"),
    }
}

impl RunConfig for DpoRun {
    const JOB: &'static str = "dpo";

    fn shorthands() -> Vec<(&'static str, &'static str, &'static str)> {
        LORA_SHORTHANDS
            .iter()
            .map(|(k, f)| (*k, "lora", *f))
            .collect()
    }

    fn validate(&self) -> tilpass_train::Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(TrainError::setting(name, v, "a finite number > 0"))
            }
        };
        let at_least_one = |name: &str, v: usize| {
            if v >= 1 {
                Ok(())
            } else {
                Err(TrainError::setting(name, v, "an integer >= 1"))
            }
        };
        for (name, v) in [("model", &self.model), ("out", &self.out)] {
            if v.is_none() {
                return Err(missing(name));
            }
        }
        if self.data.is_none() {
            return Err(missing("data"));
        }
        if let Some(n) = self.max_length {
            at_least_one("max_length", n)?;
        }
        if let Some(n) = self.pad_to_multiple_of {
            at_least_one("pad_to_multiple_of", n)?;
        }
        if let Some(n) = self.eval_steps {
            at_least_one("eval_steps", n)?;
            if self.eval_data.is_none() {
                return Err(TrainError::setting(
                    "eval_steps",
                    n,
                    "no value without `eval_data` (there is nothing to evaluate)",
                ));
            }
        }
        if let Some(n) = self.early_stopping_patience {
            at_least_one("early_stopping_patience", n)?;
            if self.eval_steps.is_none() {
                return Err(TrainError::setting(
                    "early_stopping_patience",
                    n,
                    "no value without `eval_steps` (it counts evaluations)",
                ));
            }
        }
        if !matches!(self.truncation, Truncation::KeepStart | Truncation::KeepEnd) {
            return Err(TrainError::setting(
                "truncation",
                format!("{:?}", self.truncation),
                "keep_start or keep_end (TRL's truncation_mode)",
            ));
        }
        self.dpo_config()
            .validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        at_least_one("batch_size", self.batch_size)?;
        at_least_one("steps", self.steps)?;
        if self.warmup > self.steps {
            return Err(TrainError::setting(
                "warmup",
                self.warmup,
                format!("at most `steps` ({})", self.steps),
            ));
        }
        positive("lr", self.lr)?;
        // The loop's own checks (accumulation, clipping, AdamW, checkpoints).
        self.train_config().validate()?;
        if !self.full && self.resume.is_none() && self.lora.r == 0 {
            return Err(TrainError::setting("lora_r", 0, "an integer >= 1"));
        }
        Ok(())
    }
}

impl DpoRun {
    /// The loss settings (TRL's `DPOConfig` loss fields).
    pub fn dpo_config(&self) -> DpoConfig {
        DpoConfig {
            beta: self.beta,
            loss_type: self.loss_type.clone(),
            loss_weights: self.loss_weights.clone(),
            label_smoothing: self.label_smoothing,
            f_divergence_type: self.f_divergence_type,
            f_alpha_divergence_coef: self.f_alpha_divergence_coef,
            ld_alpha: self.ld_alpha,
            use_weighting: self.use_weighting,
            discopop_tau: self.discopop_tau,
        }
    }

    /// The encoding settings (TRL's `DPOConfig` data fields).
    pub fn preference_config(&self) -> PreferenceConfig {
        PreferenceConfig {
            max_length: self.max_length,
            truncation: self.truncation,
            pad_to_multiple_of: self.pad_to_multiple_of,
            chat_template: self.chat_template.clone(),
        }
    }

    /// The training loop's settings.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            learning_rate: self.lr,
            lr_scheduler_type: self.lr_scheduler_type,
            warmup_steps: self.warmup,
            max_steps: self.steps,
            gradient_accumulation_steps: self.grad_accum,
            max_grad_norm: self.max_grad_norm,
            adamw: AdamWConfig {
                beta1: self.adam_beta1,
                beta2: self.adam_beta2,
                eps: self.adam_epsilon,
                weight_decay: self.weight_decay,
            },
            eval_steps: self.eval_steps,
            early_stopping_patience: self.early_stopping_patience,
            save_steps: self.save_steps,
            save_total_limit: self.save_total_limit,
            output_dir: self.out.clone(),
        }
    }

    /// Runs DPO on `device` (made an autodiff device here), reporting progress to
    /// `progress`: checks the settings, writes `out/run_config.json`, encodes and batches the
    /// data in order (TRL shuffles with its seed; tilpass keeps the file's order), trains, and
    /// saves the adapter (or the model).
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<DpoOutcome> {
        self.validate()?;
        let model_dir = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let out = self.out.as_ref().ok_or_else(|| missing("out"))?;
        let data = self.data.as_ref().ok_or_else(|| missing("data"))?;
        if let Some(ckpt) = &self.resume {
            check_resume_settings(self, ckpt, RESUME_SETTINGS)?;
        }
        let mut inputs: Vec<&Path> = vec![model_dir.as_path()];
        inputs.extend(self.resume.as_deref());
        for spec in [Some(data), self.eval_data.as_ref()].into_iter().flatten() {
            if let DatasetSpec::File(p) = spec {
                inputs.push(p.as_path());
            }
        }
        prepare_output_dir(
            out,
            self.overwrite_output_dir,
            self.resume.is_some(),
            &inputs,
        )?;
        // A fresh run that fails before training takes its config (and new `out`) back.
        let _fresh = self.resume.is_none().then(|| FreshStart::new(out));
        write_run_config(self, out)?;
        let device = device.clone().autodiff();
        device.seed(self.seed);
        let tok = Tokenizer::from_dir(model_dir).map_err(TrainError::from)?;
        let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
        let cfg = self.preference_config();
        let mut encode = |spec: &DatasetSpec| -> Result<Vec<DpoBatch>> {
            let records = load_records(spec).map_err(TrainError::from)?;
            let identical = check_pairs(&records, spec)?;
            if identical > 0 {
                progress(Event::Message(&format!(
                    "warning: {spec}: {identical} pair(s) have the same chosen and rejected \
                     answer; they add nothing to the DPO loss"
                )));
            }
            let (examples, report) =
                encode_preferences(&tok, &records, &cfg).map_err(TrainError::from)?;
            progress(Event::Detail(&format!(
                "{spec}: {} pairs ({report:?})",
                examples.len()
            )));
            if examples.is_empty() {
                return Err(TrainError::setting(
                    "data",
                    spec,
                    "at least one preference pair that fits max_length",
                )
                .into());
            }
            examples
                .chunks(self.batch_size)
                .map(|c| {
                    let b = collate_preference(c, pad, &cfg).map_err(TrainError::from)?;
                    DpoBatch::from_collated(&b)
                })
                .collect()
        };
        let mut batches = encode(data)?;
        let mut eval_batches = match &self.eval_data {
            Some(spec) => encode(spec)?,
            None => Vec::new(),
        };
        let base = DecoderLm::load(model_dir, &device)?;
        let mut peft = PeftModel::new(base);
        // With precomputed reference log-probs, full fine-tuning keeps no reference copy (as
        // TRL): the policy before the first step is the reference they are computed with.
        let reference = if self.full && !self.precompute_ref_log_probs {
            Some(DecoderLm::load(model_dir, &device)?)
        } else {
            None
        };
        if let (false, Some(dir)) = (self.full, &self.resume) {
            peft.load_adapter(dir, "default")?;
        } else if !self.full {
            let mut cfg = self.lora.clone();
            cfg.task_type.get_or_insert_with(|| "CAUSAL_LM".into());
            cfg.base_model_name_or_path
                .get_or_insert_with(|| model_dir.display().to_string());
            peft.add_adapter("default", &cfg, self.seed)?;
        }
        let (target, dpo_ref) = match (&reference, self.full) {
            (Some(r), _) => (Target::Full, DpoReference::Model(r)),
            (None, true) => (Target::Full, DpoReference::Precomputed),
            (None, false) => {
                peft.freeze_base();
                (Target::Adapter("default"), DpoReference::DisabledAdapters)
            }
        };
        if self.full {
            let note = format!("full fine-tuning: {} parameters", peft.parameter_count());
            progress(Event::Message(&note));
        } else {
            progress(Event::Message(&peft.trainable_parameters().to_string()));
        }
        let dpo = self.dpo_config();
        if self.precompute_ref_log_probs {
            let key = |set: &[DpoBatch], model: &str| RefCacheKey {
                model: model.to_string(),
                adapter: None,
                data: hash_batches(set),
                settings: [
                    ("ld_alpha".to_string(), serde_json::json!(self.ld_alpha)),
                    ("device".to_string(), serde_json::json!(self.device)),
                ]
                .into(),
            };
            let model_hash = hash_model_dir(model_dir)?;
            let sets = [
                (Some(data), &mut batches),
                (self.eval_data.as_ref(), &mut eval_batches),
            ];
            for (spec, set) in sets {
                let Some(spec) = spec else { continue };
                // Computed with the adapters disabled: the base model (a fresh LoRA run, a
                // resumed one, and full fine-tuning before its first step alike).
                let values = cached_reference(
                    &mut peft,
                    &dpo,
                    set,
                    &cache_path(spec, self.ref_cache_dir.as_deref(), out),
                    &key(set, &model_hash),
                    &spec.to_string(),
                    progress,
                )?;
                let taken = std::mem::take(set);
                *set = taken
                    .into_iter()
                    .zip(values)
                    .map(|(b, r)| b.with_reference(r))
                    .collect::<Result<_>>()?;
            }
        }
        let evaluate = |peft: &mut PeftModel<DecoderLm>, step: usize| -> Result<Option<DpoEval>> {
            if eval_batches.is_empty() {
                return Ok(None);
            }
            let e = peft.with_eval_mode(|p| evaluate_dpo(p, dpo_ref, &dpo, &eval_batches, step))?;
            let line = serde_json::to_value(&e).map_err(|e| TrainError::Config(e.to_string()))?;
            append_json_line(&out.join(METRICS_FILE), &line)?;
            Ok(Some(e))
        };
        let initial_eval = if self.resume.is_none() {
            evaluate(&mut peft, 0)?
        } else {
            None
        };
        let summary = train_dpo(
            &mut peft,
            target,
            dpo_ref,
            &dpo,
            &batches,
            &eval_batches,
            &self.train_config(),
            self.resume.as_deref(),
            progress,
        )?;
        // The loop's own evaluation at the last step (already in metrics.jsonl) is the final
        // one; otherwise evaluate now.
        let final_eval = match &summary.last_eval {
            Some(e) if e.step == summary.steps => Some(DpoEval::from_eval_log(e)),
            _ => evaluate(&mut peft, summary.steps)?,
        };
        let saved = if self.full {
            let dir = out.join("model");
            peft.save(&dir, tilpass_core::SaveDtype::F32)?;
            for f in [
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ] {
                let src = model_dir.join(f);
                if src.is_file() {
                    std::fs::copy(&src, dir.join(f))
                        .map_err(|e| TrainError::from(tilpass_core::Error::io(&src, e)))?;
                }
            }
            dir
        } else {
            let dir = out.join("adapter");
            peft.save_adapter("default", &dir)?;
            dir
        };
        Ok(DpoOutcome {
            summary,
            initial_eval,
            final_eval,
            saved,
            model: peft,
        })
    }
}

/// The reference log-probs of `set` from the cache at `path` when it was made for `key`;
/// otherwise computed now (with the adapters of `model` disabled; progress as
/// [`Event::Rows`], pairs done) and stored there. A stale or unusable cache is reported and
/// rebuilt; a cache that cannot be written is reported and the run goes on.
fn cached_reference(
    model: &mut PeftModel<DecoderLm>,
    dpo: &crate::dpo::DpoConfig,
    set: &[DpoBatch],
    path: &Path,
    key: &RefCacheKey,
    name: &str,
    progress: &mut dyn FnMut(Event),
) -> Result<Vec<RefLogps>> {
    let why = match ref_cache::load(path, key, set) {
        CacheLookup::Hit(v) => {
            let note = format!(
                "{name}: reference log-probs from {} (made for this model, data and settings)",
                path.display()
            );
            progress(Event::Message(&note));
            return Ok(v);
        }
        CacheLookup::Missing => "no cache yet".to_string(),
        CacheLookup::Stale(d) => format!(
            "ignoring the cache {}: it was made for another {}",
            path.display(),
            d.join(", ")
        ),
        CacheLookup::Corrupt(m) => format!("ignoring the unusable cache {}: {m}", path.display()),
    };
    let pairs: usize = set.iter().map(|b| b.pairs).sum();
    progress(Event::Message(&format!(
        "{name}: computing reference log-probs of {pairs} pairs ({why})"
    )));
    let started = std::time::Instant::now();
    let mut done = 0;
    let values = precompute_reference(model, DpoReference::DisabledAdapters, dpo, set, &mut |i| {
        done += set[i - 1].pairs;
        progress(Event::Rows {
            done,
            seconds: started.elapsed().as_secs_f64(),
        });
    })?;
    match ref_cache::store(path, key, &values) {
        Ok(()) => progress(Event::Message(&format!(
            "{name}: reference log-probs cached in {}",
            path.display()
        ))),
        Err(e) => progress(Event::Message(&format!(
            "warning: {name}: the reference log-probs could not be cached ({e}); the run \
             goes on with the values in memory"
        ))),
    }
    Ok(values)
}

/// What a DPO run did.
#[derive(Debug)]
pub struct DpoOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// The evaluation on `eval_data` before the first step (not when resuming).
    pub initial_eval: Option<DpoEval>,
    /// The evaluation on `eval_data` after the last step.
    pub final_eval: Option<DpoEval>,
    /// Where the result went: `out/adapter` (HF PEFT layout) or, with `full`, `out/model`.
    pub saved: PathBuf,
    /// The trained model (with its adapter).
    pub model: PeftModel<DecoderLm>,
}

/// Checks the preference pairs of `spec`: an empty `chosen` or `rejected` answer is an error
/// naming the pair; returns how many pairs have the same answer on both sides (a warning:
/// TRL trains on them, but they contribute nothing).
pub(crate) fn check_pairs(records: &[Record], spec: &DatasetSpec) -> Result<usize> {
    let empty = |c: &Content| match c {
        Content::Text(t) => t.trim().is_empty(),
        Content::Messages(m) => m.iter().all(|m| m.content.trim().is_empty()),
    };
    let mut identical = 0;
    for (i, r) in records.iter().enumerate() {
        if let Record::Preference {
            chosen, rejected, ..
        } = r
        {
            for (side, c) in [("chosen", chosen), ("rejected", rejected)] {
                if empty(c) {
                    return Err(TrainError::setting(
                        "data",
                        spec,
                        format!(
                            "pairs with two non-empty answers: pair {} (row {} of the \
                             dataset) has an empty `{side}`",
                            i + 1,
                            i + 1
                        ),
                    )
                    .into());
                }
            }
            identical += usize::from(chosen == rejected);
        }
    }
    Ok(identical)
}

#[cfg(test)]
mod pair_tests {
    use super::check_pairs;
    use tilpass_data::{Content, DatasetSpec, Record};

    fn pair(c: &str, r: &str) -> Record {
        Record::Preference {
            prompt: Some(Content::Text("p".into())),
            chosen: Content::Text(c.into()),
            rejected: Content::Text(r.into()),
        }
    }

    #[test]
    fn empty_answers_are_errors_and_identical_pairs_are_counted() {
        let spec = DatasetSpec::File("pairs.jsonl".into());
        let ok = [pair(" a", " b"), pair(" c", " c")];
        assert_eq!(check_pairs(&ok, &spec).unwrap(), 1);
        let bad = [pair(" a", " b"), pair(" a", "  ")];
        let err = check_pairs(&bad, &spec).unwrap_err().to_string();
        assert!(
            err.contains("pairs.jsonl") && err.contains("pair 2") && err.contains("rejected"),
            "{err}"
        );
    }
}
