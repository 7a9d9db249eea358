//! `tilpass train reward`: a reward model (a decoder with transformers' sequence-classification
//! head, [`DecoderClassifier`]) trained on preference pairs (TRL formats or
//! `builtin:norsk-pref`) with a LoRA adapter that also trains the score head whole (PEFT's
//! `modules_to_save = ["score"]`, task type `SEQ_CLS`), or every weight ([`RewardRun::full`]).
//!
//! The settings carry TRL's `RewardConfig` names and defaults (`learning_rate` 1e-4 — here
//! `lr` —, `max_length` 1024, `center_rewards_coefficient` none, `pad_to_multiple_of` none)
//! and transformers' `TrainingArguments` ones for the optimiser (linear decay without warm-up,
//! no weight decay, clipping at 1.0, AdamW β 0.9 / 0.999, ε 1e-8), with the flag names of
//! `tilpass train dpo`.
//!
//! The data is encoded as TRL's `RewardTrainer._prepare_dataset`: plain text gets EOS appended
//! to `chosen` and `rejected` unless present, and the prompt + chosen and prompt + rejected
//! sequences are tokenized each as a whole (plain text with the tokenizer's special tokens,
//! conversations through the chat template); pairs with a sequence longer than `max_length` are
//! dropped (TRL filters them; nothing is truncated). A `margin` column of a JSONL / JSON file is
//! used as TRL uses it. The model starts from the model directory's score head when it has one
//! (a `*ForSequenceClassification` checkpoint), else from a new one (a causal LM, as TRL's
//! `AutoModelForSequenceClassification` load with `num_labels=1`); its `pad_token_id` is the
//! tokenizer's pad token, else its EOS (TRL's rule).
//!
//! A BERT or LTG-BERT (NorBERT3) directory ([`is_encoder_reward_model`]) is trained as TRL
//! trains `AutoModelForSequenceClassification(num_labels=1)` on it: its one-label head, or a
//! new one, with a LoRA adapter on the family's attention projections that saves the head whole
//! (`modules_to_save` `classifier` / `head`). Full fine-tuning of an encoder is refused (a whole
//! encoder cannot be saved in transformers' layout yet). Plain-text rows need an EOS token in
//! the tokenizer, as in TRL (its `eos_token` setting).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tilpass_data::{DatasetSpec, Record, load_records};
use tilpass_models::{
    DecoderClassifier, EncoderModel, SUPPORTED_ENCODERS, ScoreInit, SequenceClassifier,
};
use tilpass_peft::{LoraConfig, PeftModel};
use tilpass_tokenize::{PreferenceConfig, Tokenizer, encode_preference};
use tilpass_train::runs::{
    FreshStart, LORA_SHORTHANDS, RunConfig, check_resume_settings, prepare_output_dir,
    write_run_config,
};
use tilpass_train::trainer::{METRICS_FILE, append_json_line};
use tilpass_train::{AdamWConfig, Event, ScheduleKind, Summary, Target, TrainConfig, TrainError};

use crate::dpo_run::check_pairs;
use crate::error::Result;
use crate::reward::RewardConfig;
use crate::reward_trainer::{RewardBatch, RewardEval, RewardModel, evaluate_reward, train_reward};

/// Settings of a reward-model run. Field names are the `tilpass train reward` flags and TRL's
/// `RewardConfig` names for the reward settings; the LoRA settings are PEFT's `LoraConfig`
/// under `lora` (also taken at the top level: `lora_r`, `lora_alpha`, `target_modules`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardRun {
    /// Model directory (config.json, safetensors, tokenizer files): a Llama / Mistral / GPT-2
    /// causal LM (a new score head is drawn) or a `*ForSequenceClassification` reward model.
    pub model: Option<PathBuf>,
    /// Training data: JSONL / JSON preference rows in a TRL format (explicit or implicit
    /// prompt, text or conversations, optional `margin`), or `builtin:norsk-pref[:split]`.
    pub data: Option<DatasetSpec>,
    /// Held-out pairs (e.g. `builtin:norsk-pref:eval`), evaluated before the first step, every
    /// `eval_steps` and after the last: eval loss and TRL's `eval_accuracy`, `eval_margin`,
    /// `eval_*_reward`, logged to `metrics.jsonl` and returned in [`RewardOutcome`].
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
    /// Pairs with a chosen or rejected sequence longer than this many tokens are dropped
    /// (TRL: 1024; `None`: no limit).
    pub max_length: Option<usize>,
    /// Pad batches to a multiple of this many columns.
    pub pad_to_multiple_of: Option<usize>,
    /// Coefficient of mean((r_c + r_r)²), which pulls the rewards toward zero mean (TRL: none;
    /// it suggests 0.01).
    pub center_rewards_coefficient: Option<f64>,
    /// Train every weight (no adapter); the model is saved in transformers' layout under
    /// `out/model`.
    pub full: bool,
    /// The LoRA adapter (PEFT's `LoraConfig`; `modules_to_save` defaults to `["score"]`, the
    /// head). Ignored with `full` and `resume`.
    pub lora: LoraConfig,
    /// Preference pairs per batch (TRL's `per_device_train_batch_size`: 8).
    pub batch_size: usize,
    /// Batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate (TRL's `RewardConfig`: 1e-4).
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
    /// Seed of the adapter's and a new score head's initialisation, and of dropout.
    pub seed: u64,
}

impl Default for RewardRun {
    fn default() -> Self {
        let t = TrainConfig::default();
        let a = AdamWConfig::default();
        let p = PreferenceConfig::default();
        Self {
            model: None,
            data: None,
            eval_data: None,
            eval_steps: None,
            early_stopping_patience: None,
            out: None,
            resume: None,
            overwrite_output_dir: false,
            device: "flex".into(),
            chat_template: p.chat_template,
            max_length: Some(1024),
            pad_to_multiple_of: None,
            center_rewards_coefficient: None,
            full: false,
            lora: LoraConfig {
                r: 16,
                lora_alpha: 32.0,
                task_type: Some("SEQ_CLS".into()),
                modules_to_save: Some(vec!["score".into()]),
                ..Default::default()
            },
            batch_size: 8,
            grad_accum: 1,
            lr: 1e-4,
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
    "pad_to_multiple_of",
    "chat_template",
    "center_rewards_coefficient",
    "seed",
];

fn missing(setting: &str) -> TrainError {
    TrainError::MissingSetting {
        setting: setting.into(),
        flag: setting.replace('_', "-"),
    }
}

impl RunConfig for RewardRun {
    const JOB: &'static str = "reward";

    fn shorthands() -> Vec<(&'static str, &'static str, &'static str)> {
        LORA_SHORTHANDS
            .iter()
            .map(|(k, f)| (*k, "lora", *f))
            .collect()
    }

    fn validate(&self) -> tilpass_train::Result<()> {
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
        self.reward_config()
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
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(TrainError::setting("lr", self.lr, "a finite number > 0"));
        }
        self.train_config().validate()?;
        if !self.full && self.resume.is_none() && self.lora.r == 0 {
            return Err(TrainError::setting("lora_r", 0, "an integer >= 1"));
        }
        Ok(())
    }
}

impl RewardRun {
    /// The loss settings (TRL's `RewardConfig` loss fields).
    pub fn reward_config(&self) -> RewardConfig {
        RewardConfig {
            center_rewards_coefficient: self.center_rewards_coefficient,
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

    /// Encodes and batches the pairs of `spec` as TRL's `RewardTrainer` (see the module docs),
    /// in the file's order, `batch_size` pairs per batch.
    pub fn encode(
        &self,
        tok: &Tokenizer,
        spec: &DatasetSpec,
        pad: u32,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Vec<RewardBatch>> {
        let records = load_records(spec).map_err(TrainError::from)?;
        let identical = check_pairs(&records, spec)?;
        if identical > 0 {
            progress(Event::Message(&format!(
                "warning: {spec}: {identical} pair(s) have the same chosen and rejected answer; \
                 their scores are equal and they only add log 2 to the loss"
            )));
        }
        let margins = match spec {
            DatasetSpec::File(p) => read_margins(p, records.len())?,
            DatasetSpec::Builtin { .. } => None,
        };
        let cfg = PreferenceConfig {
            max_length: None,
            chat_template: self.chat_template.clone(),
            ..Default::default()
        };
        let mut pairs: Vec<(Vec<u32>, Vec<u32>, Option<f64>)> = Vec::new();
        let mut dropped = 0;
        for (i, r) in records.iter().enumerate() {
            if !matches!(r, Record::Preference { .. }) {
                return Err(TrainError::setting(
                    "data",
                    spec,
                    format!(
                        "preference rows (`chosen` and `rejected`, optional `prompt`): row {} is \
                         a {} row",
                        i + 1,
                        r.kind().as_str()
                    ),
                )
                .into());
            }
            let e = encode_preference(tok, r, &cfg, i).map_err(TrainError::from)?;
            let chosen = [e.prompt_ids.as_slice(), &e.chosen_ids].concat();
            let rejected = [e.prompt_ids.as_slice(), &e.rejected_ids].concat();
            if self
                .max_length
                .is_some_and(|m| chosen.len() > m || rejected.len() > m)
            {
                dropped += 1;
                continue;
            }
            pairs.push((chosen, rejected, margins.as_ref().map(|m| m[i])));
        }
        progress(Event::Detail(&format!(
            "{spec}: {} pairs, {dropped} dropped (longer than max_length)",
            pairs.len()
        )));
        if pairs.is_empty() {
            return Err(TrainError::setting(
                "data",
                spec,
                "at least one preference pair that fits max_length",
            )
            .into());
        }
        pairs
            .chunks(self.batch_size)
            .map(|c| {
                let chosen: Vec<Vec<u32>> = c.iter().map(|p| p.0.clone()).collect();
                let rejected: Vec<Vec<u32>> = c.iter().map(|p| p.1.clone()).collect();
                let margin = margins
                    .as_ref()
                    .map(|_| c.iter().filter_map(|p| p.2).collect());
                RewardBatch::collate(&chosen, &rejected, margin, pad, self.pad_to_multiple_of)
            })
            .collect()
    }

    /// Runs the training on `device` (made an autodiff device here), reporting progress to
    /// `progress`: checks the settings, writes `out/run_config.json`, encodes and batches the
    /// data in order (TRL shuffles with its seed; tilpass keeps the file's order), trains, and
    /// saves the adapter (with the score head) or the model.
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<RewardOutcome> {
        self.validate()?;
        let model_dir = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let out = self.out.as_ref().ok_or_else(|| missing("out"))?;
        let data = self.data.as_ref().ok_or_else(|| missing("data"))?;
        if let Some(ckpt) = &self.resume {
            check_resume_settings(self, ckpt, RESUME_SETTINGS)?;
        }
        let encoder = is_encoder_reward_model(model_dir);
        if encoder && self.full {
            return Err(TrainError::setting(
                "full",
                "true",
                format!(
                    "an adapter run for the encoder {} (a whole BERT / NorBERT3 reward model \
                     cannot be saved yet; train a LoRA adapter with its head)",
                    model_dir.display()
                ),
            )
            .into());
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
        let _fresh = self.resume.is_none().then(|| FreshStart::new(out));
        write_run_config(self, out)?;
        let device = device.clone().autodiff();
        device.seed(self.seed);
        let tok = Tokenizer::from_dir(model_dir).map_err(TrainError::from)?;
        // Encoders mask padding by the attention mask; their batches pad with id 0 when the
        // tokenizer names no pad or EOS token.
        let fallback = encoder.then_some(0);
        let pad = tok.pad_id().or(tok.eos_id()).or(fallback).ok_or_else(|| {
            TrainError::setting(
                "model",
                model_dir.display(),
                "a tokenizer with a pad or EOS token (the reward model finds each sequence's \
                 last token by the pad id)",
            )
        })?;
        let batches = self.encode(&tok, data, pad, progress)?;
        let eval_batches = match &self.eval_data {
            Some(spec) => self.encode(&tok, spec, pad, progress)?,
            None => Vec::new(),
        };
        let rc = self.reward_config();
        let train = TrainInputs {
            out,
            rc: &rc,
            batches: &batches,
            eval_batches: &eval_batches,
        };
        if encoder {
            let mut model = EncoderModel::load(model_dir, &device)?;
            let keep_head = matches!(model.labels(), Ok(Some(l)) if l.len() == 1)
                && SequenceClassifier::num_labels(&model) == 1;
            if !keep_head {
                // transformers' `num_labels=1` load: a new one-score head (the adapter's saved
                // head replaces it when resuming).
                model = model.with_new_classifier(&["LABEL_0".to_string()], self.seed)?;
            }
            let mut peft = PeftModel::new(model);
            if let Some(dir) = &self.resume {
                peft.load_adapter(dir, "default")?;
            } else {
                let mut lora = self.lora.clone();
                if lora.modules_to_save.as_deref() == Some(&["score".to_string()][..]) {
                    // The default names the decoders' head; take the encoder family's.
                    lora.modules_to_save = None;
                }
                let cfg =
                    tilpass_train::runs::classify::classifier_lora(&lora, peft.model(), model_dir)?;
                peft.add_adapter("default", &cfg, self.seed)?;
            }
            let (summary, initial_eval, final_eval, saved, peft) =
                self.train_model(peft, &train, progress)?;
            return Ok(RewardOutcome {
                summary,
                initial_eval,
                final_eval,
                saved,
                model: TrainedReward::Encoder(Box::new(peft)),
            });
        }
        let init = ScoreInit::NewIfMissing {
            num_labels: 1,
            seed: self.seed,
        };
        let mut model = DecoderClassifier::load_with(model_dir, init, &device)?;
        model.set_pad_token_id(Some(pad));
        let mut peft = PeftModel::new(model);
        if let (false, Some(dir)) = (self.full, &self.resume) {
            peft.load_adapter(dir, "default")?;
        } else if !self.full {
            let mut cfg = self.lora.clone();
            cfg.task_type.get_or_insert_with(|| "SEQ_CLS".into());
            cfg.modules_to_save
                .get_or_insert_with(|| vec!["score".into()]);
            cfg.base_model_name_or_path
                .get_or_insert_with(|| model_dir.display().to_string());
            peft.add_adapter("default", &cfg, self.seed)?;
        }
        let (summary, initial_eval, final_eval, saved, peft) =
            self.train_model(peft, &train, progress)?;
        Ok(RewardOutcome {
            summary,
            initial_eval,
            final_eval,
            saved,
            model: TrainedReward::Decoder(Box::new(peft)),
        })
    }

    /// Trains `peft` (its adapter, or with `full` every weight), evaluating before, every
    /// `eval_steps` and after, and saves it.
    #[allow(clippy::type_complexity)]
    fn train_model<M: RewardModel + SavedWhole>(
        &self,
        mut peft: PeftModel<M>,
        t: &TrainInputs<'_>,
        progress: &mut dyn FnMut(Event),
    ) -> Result<(
        Summary,
        Option<RewardEval>,
        Option<RewardEval>,
        PathBuf,
        PeftModel<M>,
    )> {
        let model_dir = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let out = t.out;
        let target = if self.full {
            let note = format!("full fine-tuning: {} parameters", peft.parameter_count());
            progress(Event::Message(&note));
            Target::Full
        } else {
            peft.freeze_base();
            progress(Event::Message(&peft.trainable_parameters().to_string()));
            Target::Adapter("default")
        };
        let evaluate = |peft: &mut PeftModel<M>, step: usize| -> Result<Option<RewardEval>> {
            if t.eval_batches.is_empty() {
                return Ok(None);
            }
            let e =
                peft.with_eval_mode(|p| evaluate_reward(p.model(), t.rc, t.eval_batches, step))?;
            let line = serde_json::to_value(&e).map_err(|e| TrainError::Config(e.to_string()))?;
            append_json_line(&out.join(METRICS_FILE), &line)?;
            Ok(Some(e))
        };
        let initial_eval = if self.resume.is_none() {
            evaluate(&mut peft, 0)?
        } else {
            None
        };
        let summary = train_reward(
            &mut peft,
            target,
            t.rc,
            t.batches,
            t.eval_batches,
            &self.train_config(),
            self.resume.as_deref(),
            progress,
        )?;
        // The loop's own evaluation at the last step (already in metrics.jsonl) is the final
        // one; otherwise evaluate now.
        let final_eval = match &summary.last_eval {
            Some(e) if e.step == summary.steps => Some(RewardEval::from_eval_log(e)),
            _ => evaluate(&mut peft, summary.steps)?,
        };
        let saved = if self.full {
            let dir = out.join("model");
            peft.model().save_whole(&dir)?;
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
        Ok((summary, initial_eval, final_eval, saved, peft))
    }
}

/// What a run's training step needs besides the model.
struct TrainInputs<'a> {
    out: &'a Path,
    rc: &'a RewardConfig,
    batches: &'a [RewardBatch],
    eval_batches: &'a [RewardBatch],
}

/// A reward model that a `full` run saves whole (transformers' layout).
trait SavedWhole {
    fn save_whole(&self, dir: &Path) -> Result<()>;
}

impl SavedWhole for DecoderClassifier {
    fn save_whole(&self, dir: &Path) -> Result<()> {
        Ok(self.save(dir, tilpass_core::SaveDtype::F32)?)
    }
}

impl SavedWhole for EncoderModel {
    fn save_whole(&self, dir: &Path) -> Result<()> {
        // Refused by `RewardRun::run` before any work; kept as an error, not a panic.
        Err(TrainError::setting(
            "full",
            dir.display(),
            "an adapter run for an encoder reward model (saving a whole encoder is not supported)",
        )
        .into())
    }
}

/// True when `dir/config.json` names an encoder family (BERT, LTG-BERT / NorBERT3).
pub fn is_encoder_reward_model(dir: &Path) -> bool {
    let Ok(v) = tilpass_core::read_json::<Value>(&dir.join("config.json")) else {
        return false;
    };
    v["model_type"]
        .as_str()
        .is_some_and(|t| SUPPORTED_ENCODERS.contains(&t))
}

/// The model a reward run trained: a decoder with transformers' sequence-classification head,
/// or a BERT / NorBERT3 encoder with a one-score classifier.
pub enum TrainedReward {
    /// A Llama / Mistral / GPT-2 classifier.
    Decoder(Box<PeftModel<DecoderClassifier>>),
    /// A BERT / LTG-BERT (NorBERT3) classifier.
    Encoder(Box<PeftModel<EncoderModel>>),
}

impl std::fmt::Debug for TrainedReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Decoder(_) => "TrainedReward::Decoder",
            Self::Encoder(_) => "TrainedReward::Encoder",
        })
    }
}

/// The `margin` column of a JSONL / JSON preference file, one value per row (`None` when no
/// row has one). Errors name the file and row: a margin that is not a number, or a column
/// only some rows have.
pub fn read_margins(path: &Path, rows: usize) -> Result<Option<Vec<f64>>> {
    let values: Vec<(String, Value)> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let v: Value = tilpass_core::read_json(path).map_err(TrainError::from)?;
        match v {
            Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| (tilpass_data::Location::Item(i).to_string(), v))
                .collect(),
            _ => return Ok(None),
        }
    } else {
        let mut out = Vec::new();
        for row in tilpass_data::JsonlRows::open(path).map_err(TrainError::from)? {
            let (loc, v) = row.map_err(TrainError::from)?;
            // Rows that are not JSON were reported by the dataset reader already.
            out.push((format!("{loc}"), v.unwrap_or(Value::Null)));
        }
        out
    };
    let bad = |row: &str, message: String| -> crate::error::PreferenceError {
        TrainError::setting("data", path.display(), format!("{message} ({row})")).into()
    };
    let mut margins = Vec::with_capacity(values.len());
    for (row, v) in &values {
        match v.get("margin") {
            None => margins.push(None),
            Some(Value::Number(n)) => margins.push(n.as_f64()),
            Some(other) => {
                return Err(bad(row, format!("a numeric `margin`, found {other}")));
            }
        }
    }
    let with = margins.iter().filter(|m| m.is_some()).count();
    if with == 0 {
        return Ok(None);
    }
    if with != margins.len() {
        let row = &values[margins.iter().position(Option::is_none).unwrap_or(0)].0;
        return Err(bad(
            row,
            "a `margin` on every row or on none (TRL batches the column)".into(),
        ));
    }
    if margins.len() != rows {
        return Err(bad(
            "whole file",
            format!(
                "one margin per preference row: {} rows with a margin, {rows} rows read",
                margins.len()
            ),
        ));
    }
    Ok(Some(margins.into_iter().flatten().collect()))
}

/// What a reward-model run did.
#[derive(Debug)]
pub struct RewardOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// The evaluation on `eval_data` before the first step (not when resuming).
    pub initial_eval: Option<RewardEval>,
    /// The evaluation on `eval_data` after the last step.
    pub final_eval: Option<RewardEval>,
    /// Where the result went: `out/adapter` (HF PEFT layout, with the score head) or, with
    /// `full`, `out/model` (transformers' `*ForSequenceClassification` layout).
    pub saved: PathBuf,
    /// The trained model (with its adapter).
    pub model: TrainedReward,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_trls_reward_config() {
        let r: RewardRun = serde_json::from_str("{}").unwrap();
        assert_eq!(r.lr, 1e-4);
        assert_eq!(r.max_length, Some(1024));
        assert_eq!(r.center_rewards_coefficient, None);
        assert_eq!(r.max_grad_norm, Some(1.0));
        assert_eq!(r.lr_scheduler_type, ScheduleKind::Linear);
        assert_eq!(r.weight_decay, 0.0);
        assert_eq!(r.lora.modules_to_save, Some(vec!["score".to_string()]));
        assert!(serde_json::from_str::<RewardRun>(r#"{"beta": 0.1}"#).is_err());
    }

    #[test]
    fn margins_are_all_or_nothing_and_numeric() {
        let dir = tempfile_dir();
        let p = dir.join("m.jsonl");
        std::fs::write(&p, "{\"margin\": 0.5}\n{\"margin\": 1}\n").unwrap();
        assert_eq!(read_margins(&p, 2).unwrap(), Some(vec![0.5, 1.0]));
        std::fs::write(&p, "{\"margin\": 0.5}\n{}\n").unwrap();
        let err = read_margins(&p, 2).unwrap_err().to_string();
        assert!(err.contains("every row") && err.contains("line 2"), "{err}");
        std::fs::write(&p, "{\"margin\": \"x\"}\n").unwrap();
        let err = read_margins(&p, 1).unwrap_err().to_string();
        assert!(err.contains("numeric"), "{err}");
        std::fs::write(&p, "{}\n{}\n").unwrap();
        assert_eq!(read_margins(&p, 2).unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tilpass-reward-run-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
