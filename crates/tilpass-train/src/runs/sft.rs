//! `tilpass train sft`: supervised fine-tuning of a decoder on a chat / prompt-completion
//! dataset (TRL formats or a built-in set) with a LoRA adapter — every option of PEFT's
//! `LoraConfig` in [`SftRun::lora`] — or every weight ([`SftRun::full`]). Encoder-decoder model
//! directories (T5, T5.1.1, mT5, NorT5: [`is_encoder_decoder`]) go through
//! [`SftRun::run_seq2seq`] with the same settings: each assistant turn a decoder target, the
//! dialogue before it the encoder input (see `tilpass_tokenize::seq2seq`).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tilpass_data::{DatasetSpec, load_records};
use tilpass_models::{DecoderLm, HasLinears, Seq2SeqLm, Seq2SeqModel, is_encoder_decoder};
use tilpass_peft::{LoraConfig, PeftModel};
use tilpass_tokenize::{
    Seq2SeqEncoder, Seq2SeqExample, Seq2SeqSftConfig, SftConfig, SftEncoder, SftExample, Tokenizer,
    Truncation,
};

use super::sft_prompt::PeftMethod;
use super::{LORA_SHORTHANDS, RunConfig, check, write_run_config};
use crate::error::{Result, TrainError};
use crate::optim::AdamWConfig;
use crate::schedule::ScheduleKind;
use crate::seq2seq::{
    Seq2SeqTrainBatch, evaluate_seq2seq, sample_seq2seq_answers, seq2seq_train_batches,
    train_seq2seq,
};
use crate::sft::{packed_batches, prompt_of, sample_answers, sft_batches};
use crate::trainer::{
    EvalLog, Event, LmBatch, Summary, Target, TrainConfig, evaluate, train_lm_with_samples,
};

/// Settings of a supervised fine-tuning run. Field names are the `tilpass train sft` flags
/// (`--eval-steps` = `eval_steps`); the LoRA settings are PEFT's `LoraConfig`, nested under
/// `lora` (and also taken at the top level: `lora_r`, `lora_alpha`, `target_modules`,
/// `use_dora`, ... see [`LORA_SHORTHANDS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftRun {
    /// Base model directory (config.json, safetensors, tokenizer files).
    pub model: Option<PathBuf>,
    /// Training data: a JSONL / JSON file in a TRL format, or `builtin:norsk-chat[:split]`.
    pub data: Option<DatasetSpec>,
    /// Evaluation data (eval loss, perplexity and sample answers every `eval_steps`).
    pub eval_data: Option<DatasetSpec>,
    /// Output directory: `adapter/` (or `model/` with `full`), `checkpoint-N/`,
    /// `metrics.jsonl`, `run_config.json`.
    pub out: Option<PathBuf>,
    /// Continue from a checkpoint directory (`out/checkpoint-N`) of an earlier run.
    pub resume: Option<PathBuf>,
    /// Replace an earlier run in a non-empty `out` (its checkpoints, adapter, metrics);
    /// without it such an `out` is an error unless resuming.
    pub overwrite_output_dir: bool,
    /// Device the CLI runs on (`flex`, `wgpu`, `cuda:0`, ...); [`SftRun::run`] takes the
    /// device as an argument.
    pub device: String,
    /// Chat template: the tokenizer's (default) or a named one (`chatml`, `norsk`, ...).
    pub chat_template: Option<String>,
    /// Truncate examples to this many tokens (`None`: no limit; with `packing`, the row
    /// length, examples cut when packed). For an encoder-decoder, the longest encoder input
    /// (the history cut from the left) and the longest target (cut at its end, EOS kept).
    pub max_length: Option<usize>,
    /// What to do with longer examples: keep_start, keep_end, drop or error.
    pub truncation: Truncation,
    /// Loss on the assistant's turns only (conversations).
    pub assistant_only_loss: bool,
    /// Loss on the completion only (prompt-completion rows; `None`: on, as TRL).
    pub completion_only_loss: Option<bool>,
    /// Pack several examples into each row (best-fit decreasing, rows of `max_length` or the
    /// model's context up to 2048 tokens; attention stays within each example). As TRL's
    /// `packing`: examples are not truncated or filtered before packing.
    pub packing: bool,
    /// Train every weight (no adapter); the model is saved in HF layout under `out/model`.
    pub full: bool,
    /// The LoRA adapter (PEFT's `LoraConfig`; `target_modules: null` = the model family's
    /// defaults, as PEFT). Ignored with `full`, `init_adapter` and `resume`.
    pub lora: LoraConfig,
    /// Train an existing LoRA adapter (HF PEFT layout: one PEFT initialised, or an earlier
    /// run's `adapter/`) instead of a new one made from `lora`; its adapter_config.json
    /// applies.
    pub init_adapter: Option<PathBuf>,
    /// The adapter method: `lora` (default), or a prompt-learning method — `prompt` (PEFT's
    /// prompt tuning), `p-tuning` (an MLP prompt encoder) or `prefix` (prefix tuning) —
    /// trained by [`SftRun::run_prompt`].
    pub peft: PeftMethod,
    /// Virtual tokens of a prompt-learning adapter (required with `peft` other than `lora`:
    /// PEFT's configs have no default).
    pub num_virtual_tokens: Option<usize>,
    /// Prefix tuning through PEFT's projection MLP (`Linear → tanh → Linear`).
    pub prefix_projection: bool,
    /// Hidden width of the prompt encoder (P-tuning, or prefix tuning with
    /// `prefix_projection`); `None`: the model's hidden size, as PEFT.
    pub encoder_hidden_size: Option<usize>,
    /// Rows per batch.
    pub batch_size: usize,
    /// Batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Schedule after warmup: linear, cosine or constant.
    pub lr_scheduler_type: ScheduleKind,
    /// Optimiser steps.
    pub steps: usize,
    /// Linear warmup steps (at most `steps`).
    pub warmup: usize,
    /// Global-norm gradient clipping (`None`: off).
    pub max_grad_norm: Option<f64>,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW's β₁.
    pub adam_beta1: f64,
    /// AdamW's β₂.
    pub adam_beta2: f64,
    /// AdamW's ε.
    pub adam_epsilon: f64,
    /// Evaluate every this many steps (with `eval_data`).
    pub eval_steps: Option<usize>,
    /// Evaluate once before the first step too (HF's `eval_on_start`).
    pub eval_on_start: bool,
    /// Held-out prompts answered (greedily) at each evaluation.
    pub eval_samples: usize,
    /// Tokens per sample answer.
    pub sample_max_new_tokens: usize,
    /// Stop after this many evaluations without a better eval loss.
    pub early_stopping_patience: Option<usize>,
    /// Checkpoint every this many steps.
    pub save_steps: Option<usize>,
    /// Checkpoints kept.
    pub save_total_limit: usize,
    /// Seed of the adapter's initialisation and of dropout (burn's process-wide RNG, seeded
    /// when the run starts: runs in parallel threads of one process share it).
    pub seed: u64,
}

impl Default for SftRun {
    fn default() -> Self {
        let t = TrainConfig::default();
        let s = SftConfig::default();
        let a = AdamWConfig::default();
        Self {
            model: None,
            data: None,
            eval_data: None,
            out: None,
            resume: None,
            overwrite_output_dir: false,
            device: "flex".into(),
            chat_template: s.chat_template,
            max_length: None,
            truncation: s.truncation,
            assistant_only_loss: s.assistant_only_loss,
            completion_only_loss: s.completion_only_loss,
            packing: s.packing,
            full: false,
            lora: LoraConfig {
                r: 16,
                lora_alpha: 32.0,
                task_type: Some("CAUSAL_LM".into()),
                ..Default::default()
            },
            init_adapter: None,
            peft: PeftMethod::Lora,
            num_virtual_tokens: None,
            prefix_projection: false,
            encoder_hidden_size: None,
            batch_size: 4,
            grad_accum: t.gradient_accumulation_steps,
            lr: t.learning_rate,
            lr_scheduler_type: t.lr_scheduler_type,
            steps: t.max_steps,
            warmup: t.warmup_steps,
            max_grad_norm: t.max_grad_norm,
            weight_decay: a.weight_decay,
            adam_beta1: a.beta1,
            adam_beta2: a.beta2,
            adam_epsilon: a.eps,
            eval_steps: t.eval_steps,
            eval_on_start: false,
            eval_samples: 2,
            sample_max_new_tokens: 48,
            early_stopping_patience: t.early_stopping_patience,
            save_steps: t.save_steps,
            save_total_limit: t.save_total_limit,
            seed: 0,
        }
    }
}

impl RunConfig for SftRun {
    const JOB: &'static str = "sft";

    fn shorthands() -> Vec<(&'static str, &'static str, &'static str)> {
        LORA_SHORTHANDS
            .iter()
            .map(|(k, f)| (*k, "lora", *f))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::required("data", &self.data)?;
        check::path("out", &self.out)?;
        check::opt_at_least("max_length", self.max_length, 1)?;
        check::at_least("batch_size", self.batch_size, 1)?;
        check::at_least("grad_accum", self.grad_accum, 1)?;
        check::positive("lr", self.lr)?;
        check::at_least("steps", self.steps, 1)?;
        if self.warmup > self.steps {
            return Err(TrainError::setting(
                "warmup",
                self.warmup,
                format!("at most `steps` ({})", self.steps),
            ));
        }
        if let Some(n) = self.max_grad_norm {
            check::positive("max_grad_norm", n)?;
        }
        check::non_negative("weight_decay", self.weight_decay)?;
        check::beta("adam_beta1", self.adam_beta1)?;
        check::beta("adam_beta2", self.adam_beta2)?;
        check::positive("adam_epsilon", self.adam_epsilon)?;
        check::opt_at_least("eval_steps", self.eval_steps, 1)?;
        check::at_least("sample_max_new_tokens", self.sample_max_new_tokens, 1)?;
        check::opt_at_least("early_stopping_patience", self.early_stopping_patience, 1)?;
        check::opt_at_least("save_steps", self.save_steps, 1)?;
        check::at_least("save_total_limit", self.save_total_limit, 1)?;
        if let (true, Some(dir)) = (self.full, &self.init_adapter) {
            return Err(TrainError::setting(
                "init_adapter",
                dir.display(),
                "no adapter with `full` (full fine-tuning trains the model's own weights)",
            ));
        }
        self.check_peft_method()?;
        if !self.full
            && self.peft == PeftMethod::Lora
            && self.resume.is_none()
            && self.init_adapter.is_none()
        {
            check::lora(&self.lora)?;
        }
        Ok(())
    }
}

/// The settings a resumed run must share with the run it continues (those that shape the
/// optimisation or the data; `steps` may grow, and the adapter comes from the checkpoint).
pub const RESUME_SETTINGS: &[&str] = &[
    "full",
    "peft",
    "num_virtual_tokens",
    "prefix_projection",
    "encoder_hidden_size",
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
    "packing",
    "assistant_only_loss",
    "completion_only_loss",
    "chat_template",
    "seed",
];

/// What an SFT run did.
#[derive(Debug)]
pub struct SftOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// The evaluation before the first step (`eval_on_start`).
    pub initial_eval: Option<EvalLog>,
    /// An evaluation after the last step (with `eval_data`; the last logged one when it was
    /// at the last step).
    pub final_eval: Option<EvalLog>,
    /// Where the result went: `out/adapter` (HF PEFT layout) or, with `full`, `out/model`
    /// (HF layout with the tokenizer files).
    pub saved: PathBuf,
    /// The trained model (with its adapter).
    pub model: PeftModel<DecoderLm>,
}

impl SftRun {
    /// The encoding settings of the training data (TRL's `SFTConfig` fields).
    pub fn sft_config(&self) -> SftConfig {
        SftConfig {
            max_length: self.max_length,
            truncation: self.truncation,
            completion_only_loss: self.completion_only_loss,
            assistant_only_loss: self.assistant_only_loss,
            chat_template: self.chat_template.clone(),
            packing: self.packing,
            ..SftConfig::default()
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

    /// Runs the fine-tuning on `device` (made an autodiff device here), reporting progress
    /// to `progress`: checks the settings, writes `out/run_config.json`, encodes the data,
    /// trains, and saves the adapter (or the model).
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<SftOutcome> {
        self.validate()?;
        let (model_dir, out) = (
            check::path("model", &self.model)?,
            check::path("out", &self.out)?,
        );
        let data = check::required("data", &self.data)?;
        self.lora_only("SftRun::run")?;
        if is_encoder_decoder(model_dir).unwrap_or(false) {
            return Err(TrainError::setting(
                "model",
                model_dir.display(),
                "a decoder-only model for `SftRun::run`; this is an encoder-decoder: use \
                 `SftRun::run_seq2seq` (`tilpass train sft` chooses by itself)",
            ));
        }
        if let Some(ckpt) = &self.resume {
            super::check_resume_settings(self, ckpt, RESUME_SETTINGS)?;
        }
        let mut inputs: Vec<&Path> = vec![model_dir.as_path()];
        inputs.extend(self.init_adapter.as_deref());
        inputs.extend(self.resume.as_deref());
        for spec in [Some(data), self.eval_data.as_ref()].into_iter().flatten() {
            if let DatasetSpec::File(p) = spec {
                inputs.push(p.as_path());
            }
        }
        super::prepare_output_dir(
            out,
            self.overwrite_output_dir,
            self.resume.is_some(),
            &inputs,
        )?;
        let _fresh = self.resume.is_none().then(|| super::FreshStart::new(out));
        write_run_config(self, out)?;
        let device = device.clone().autodiff();
        device.seed(self.seed);
        let tok = Tokenizer::from_dir(model_dir)?;
        let base = DecoderLm::load(model_dir, &device)?;
        let max_positions = base.max_positions();
        let pad = tok.pad_id().unwrap_or(0);
        let bs = self.batch_size;
        // Packing encodes without truncation (TRL); evaluation rows are not packed.
        let train_encoder = SftEncoder::new(&tok, self.sft_config())?;
        let eval_encoder = SftEncoder::new(
            &tok,
            SftConfig {
                packing: false,
                ..self.sft_config()
            },
        )?;
        let mut encode = |spec: &DatasetSpec, enc: &SftEncoder| -> Result<Vec<SftExample>> {
            let (examples, report) = enc.encode_all(&load_records(spec)?)?;
            let note = format!("{spec}: {} examples ({report:?})", examples.len());
            progress(Event::Detail(&note));
            Ok(examples)
        };
        let train_examples = encode(data, &train_encoder)?;
        let eval_examples = match &self.eval_data {
            Some(spec) => encode(spec, &eval_encoder)?,
            None => Vec::new(),
        };
        let train = if self.packing {
            let len = self.max_length.unwrap_or(max_positions.min(2048));
            let packed = packed_batches(&train_examples, len, bs, pad, max_positions)?;
            progress(Event::Message(&format!(
                "packing: {} examples into {} batches of up to {bs} rows × {len} tokens",
                train_examples.len(),
                packed.len()
            )));
            packed
        } else {
            sft_batches(&train_examples, bs, pad, max_positions)?
        };
        let eval: Vec<LmBatch> = if eval_examples.is_empty() {
            Vec::new()
        } else {
            sft_batches(&eval_examples, bs, pad, max_positions)?
        };
        let mut peft = PeftModel::new(base);
        match (
            self.resume.as_ref().or(self.init_adapter.as_ref()),
            self.full,
        ) {
            (_, true) => {}
            (Some(dir), false) => {
                peft.load_adapter(dir, "default")?;
            }
            (None, false) => {
                let mut cfg = self.lora.clone();
                cfg.task_type.get_or_insert_with(|| "CAUSAL_LM".into());
                cfg.base_model_name_or_path
                    .get_or_insert_with(|| model_dir.display().to_string());
                peft.add_adapter("default", &cfg, self.seed)?;
            }
        }
        if self.full {
            let note = format!("full fine-tuning: {} parameters", peft.parameter_count());
            progress(Event::Message(&note));
        } else {
            peft.freeze_base();
            progress(Event::Message(&peft.trainable_parameters().to_string()));
        }
        // Sample answers to the first held-out prompts at each evaluation.
        let sample_prompts: Vec<Vec<u32>> = eval_examples
            .iter()
            .take(self.eval_samples)
            .map(|e| prompt_of(e).to_vec())
            .collect();
        let n_tokens = self.sample_max_new_tokens;
        let sampler = |m: &DecoderLm| sample_answers(m, &tok, &sample_prompts, n_tokens);
        let cfg = self.train_config();
        let initial_eval = if self.eval_on_start && !eval.is_empty() && self.resume.is_none() {
            let mut log = peft.with_eval_mode(|p| evaluate(p.model(), &eval, 0))?;
            log.samples = sampler(&peft)?;
            append_metrics(out, &log)?;
            progress(Event::Eval(&log));
            Some(log)
        } else {
            None
        };
        let target = if self.full {
            Target::Full
        } else {
            Target::Adapter("default")
        };
        let summary = train_lm_with_samples(
            &mut peft,
            target,
            &train,
            &eval,
            Some(&sampler),
            &cfg,
            self.resume.as_deref(),
            progress,
        )?;
        let final_eval = match &summary.last_eval {
            _ if eval.is_empty() => None,
            Some(e) if e.step == summary.steps => Some(e.clone()),
            _ => Some(peft.with_eval_mode(|p| evaluate(p.model(), &eval, summary.steps))?),
        };
        let saved = if self.full {
            let dir = out.join("model");
            peft.save(&dir, tilpass_core::SaveDtype::F32)?;
            copy_tokenizer_files(model_dir, &dir)?;
            dir
        } else {
            let dir = out.join("adapter");
            peft.save_adapter("default", &dir)?;
            dir
        };
        Ok(SftOutcome {
            summary,
            initial_eval,
            final_eval,
            saved,
            model: peft,
        })
    }
}

/// What an encoder-decoder SFT run did ([`SftRun::run_seq2seq`]).
#[derive(Debug)]
pub struct Seq2SeqSftOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// The evaluation before the first step (`eval_on_start`).
    pub initial_eval: Option<EvalLog>,
    /// An evaluation after the last step (with `eval_data`).
    pub final_eval: Option<EvalLog>,
    /// Where the result went: `out/adapter` (HF PEFT layout, task `SEQ_2_SEQ_LM`) or, with
    /// `full`, `out/model` (HF layout with the tokenizer files).
    pub saved: PathBuf,
    /// The trained model (with its adapter).
    pub model: PeftModel<Seq2SeqLm>,
}

impl SftRun {
    /// The settings of a decoder SFT run that mean nothing for an encoder-decoder, with why:
    /// an error naming the first one set. Packing (encoder-decoder batches are padded,
    /// length-grouped), a truncation policy (the history is cut from the left, the target at
    /// its end, always), `assistant_only_loss: false` and `completion_only_loss: false` (the
    /// decoder's targets are the answers only; the dialogue is the encoder's input).
    pub fn check_seq2seq_settings(&self) -> Result<()> {
        let reject = |name: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(TrainError::setting(
                name,
                value,
                format!("not set for an encoder-decoder model: {why}"),
            ))
        };
        if self.packing {
            return reject(
                "packing",
                &true,
                "its batches are padded and grouped by length, never packed",
            );
        }
        if self.truncation != Truncation::default() {
            return reject(
                "truncation",
                &format!("{:?}", self.truncation),
                "the dialogue history is always cut from the left to fit max_length and the \
                 answer at its end",
            );
        }
        if !self.assistant_only_loss {
            return reject(
                "assistant_only_loss",
                &false,
                "the decoder only ever predicts the assistant's answers",
            );
        }
        if self.completion_only_loss == Some(false) {
            return reject(
                "completion_only_loss",
                &false,
                "the prompt is the encoder's input, never a decoder target",
            );
        }
        match self.lora.task_type.as_deref() {
            None | Some("CAUSAL_LM") | Some("SEQ_2_SEQ_LM") => Ok(()),
            Some(other) => reject(
                "lora.task_type",
                &other,
                "an encoder-decoder adapter is PEFT task SEQ_2_SEQ_LM",
            ),
        }
    }

    /// The encoding settings for an encoder-decoder: `max_length` limits the source and
    /// the target (`None`: no limit).
    pub fn seq2seq_config(&self) -> Seq2SeqSftConfig {
        Seq2SeqSftConfig {
            max_source_length: self.max_length,
            max_target_length: self.max_length.map(|n| n.max(2)),
            chat_template: self.chat_template.clone(),
            eos_id: None,
        }
    }

    /// [`SftRun::run`] for an encoder-decoder model directory (T5, T5.1.1, mT5, NorT5): checks
    /// the settings (also [`SftRun::check_seq2seq_settings`]), writes `out/run_config.json`,
    /// encodes the data (one example per assistant turn), trains a LoRA adapter (PEFT task
    /// `SEQ_2_SEQ_LM`; `target_modules` may name modules of either stack) or every weight, and
    /// saves it (`out/adapter`, or `out/model` in HF layout).
    pub fn run_seq2seq(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Seq2SeqSftOutcome> {
        self.validate()?;
        self.check_seq2seq_settings()?;
        self.lora_only("SftRun::run_seq2seq")?;
        let (model_dir, out) = (
            check::path("model", &self.model)?,
            check::path("out", &self.out)?,
        );
        let data = check::required("data", &self.data)?;
        if let Some(ckpt) = &self.resume {
            super::check_resume_settings(self, ckpt, RESUME_SETTINGS)?;
        }
        let mut inputs: Vec<&Path> = vec![model_dir.as_path()];
        inputs.extend(self.init_adapter.as_deref());
        inputs.extend(self.resume.as_deref());
        for spec in [Some(data), self.eval_data.as_ref()].into_iter().flatten() {
            if let DatasetSpec::File(p) = spec {
                inputs.push(p.as_path());
            }
        }
        super::prepare_output_dir(
            out,
            self.overwrite_output_dir,
            self.resume.is_some(),
            &inputs,
        )?;
        let _fresh = self.resume.is_none().then(|| super::FreshStart::new(out));
        write_run_config(self, out)?;
        let device = device.clone().autodiff();
        device.seed(self.seed);
        let tok = Tokenizer::from_dir(model_dir)?;
        let base = Seq2SeqLm::load(model_dir, &device)?;
        let pad = base.pad_token_id();
        let start = base.decoder_start_token_id();
        let bs = self.batch_size;
        // Targets end in the tokenizer's EOS, or the model's when the tokenizer names none.
        let encoder = Seq2SeqEncoder::new(
            &tok,
            Seq2SeqSftConfig {
                eos_id: tok.eos_id().or(base.eos_token_ids().first().copied()),
                ..self.seq2seq_config()
            },
        )?;
        let layout = if encoder.uses_template() {
            "the chat template"
        } else {
            "the plain `user:` / `assistant:` layout"
        };
        progress(Event::Detail(&format!(
            "encoder inputs rendered with {layout}"
        )));
        let mut encode = |spec: &DatasetSpec| -> Result<Vec<Seq2SeqExample>> {
            let (examples, report) = encoder.encode_all(&load_records(spec)?)?;
            let note = format!("{spec}: {} examples ({report:?})", examples.len());
            progress(Event::Detail(&note));
            Ok(examples)
        };
        let train_examples = encode(data)?;
        let eval_examples = match &self.eval_data {
            Some(spec) => encode(spec)?,
            None => Vec::new(),
        };
        let train = seq2seq_train_batches(&train_examples, bs, pad, start, None)?;
        let eval: Vec<Seq2SeqTrainBatch> = if eval_examples.is_empty() {
            Vec::new()
        } else {
            seq2seq_train_batches(&eval_examples, bs, pad, start, None)?
        };
        let mut peft = PeftModel::new(base);
        match (
            self.resume.as_ref().or(self.init_adapter.as_ref()),
            self.full,
        ) {
            (_, true) => {}
            (Some(dir), false) => {
                peft.load_adapter(dir, "default")?;
            }
            (None, false) => {
                let mut cfg = self.lora.clone();
                // The run's default task is the decoder's; an encoder-decoder's is this.
                cfg.task_type = Some("SEQ_2_SEQ_LM".into());
                cfg.base_model_name_or_path
                    .get_or_insert_with(|| model_dir.display().to_string());
                peft.add_adapter("default", &cfg, self.seed)?;
            }
        }
        if self.full {
            let note = format!("full fine-tuning: {} parameters", peft.parameter_count());
            progress(Event::Message(&note));
        } else {
            peft.freeze_base();
            progress(Event::Message(&peft.trainable_parameters().to_string()));
        }
        let sources: Vec<Vec<u32>> = eval_examples
            .iter()
            .take(self.eval_samples)
            .map(|e| e.input_ids.clone())
            .collect();
        let n_tokens = self.sample_max_new_tokens;
        let sampler = |m: &Seq2SeqLm| sample_seq2seq_answers(m, &tok, &sources, n_tokens);
        let cfg = self.train_config();
        let initial_eval = if self.eval_on_start && !eval.is_empty() && self.resume.is_none() {
            let mut log = peft.with_eval_mode(|p| evaluate_seq2seq(p.model(), &eval, 0))?;
            log.samples = sampler(&peft)?;
            append_metrics(out, &log)?;
            progress(Event::Eval(&log));
            Some(log)
        } else {
            None
        };
        let target = if self.full {
            Target::Full
        } else {
            Target::Adapter("default")
        };
        let summary = train_seq2seq(
            &mut peft,
            target,
            &train,
            &eval,
            Some(&sampler),
            &cfg,
            self.resume.as_deref(),
            progress,
        )?;
        let final_eval = match &summary.last_eval {
            _ if eval.is_empty() => None,
            Some(e) if e.step == summary.steps => Some(e.clone()),
            _ => Some(peft.with_eval_mode(|p| evaluate_seq2seq(p.model(), &eval, summary.steps))?),
        };
        let saved = if self.full {
            let dir = out.join("model");
            let base_config = tilpass_core::ModelDir::open(model_dir)?
                .config_json()
                .clone();
            peft.save(&dir, tilpass_core::SaveDtype::F32, Some(&base_config))?;
            copy_tokenizer_files(model_dir, &dir)?;
            let gen_cfg = model_dir.join("generation_config.json");
            if gen_cfg.is_file() {
                std::fs::copy(&gen_cfg, dir.join("generation_config.json"))
                    .map_err(|e| tilpass_core::Error::io(&gen_cfg, e))?;
            }
            dir
        } else {
            let dir = out.join("adapter");
            peft.save_adapter("default", &dir)?;
            dir
        };
        Ok(Seq2SeqSftOutcome {
            summary,
            initial_eval,
            final_eval,
            saved,
            model: peft,
        })
    }
}

/// Appends an evaluation to `dir/metrics.jsonl`, as the training loop logs its own (a whole
/// line in one write).
pub(super) fn append_metrics(dir: &Path, log: &EvalLog) -> Result<()> {
    let v = serde_json::to_value(log).map_err(|e| TrainError::Config(e.to_string()))?;
    crate::trainer::append_json_line(&dir.join(crate::trainer::METRICS_FILE), &v)
}

/// Copies the tokenizer files of `from` that exist into `to` (a fully fine-tuned model's
/// directory, so it loads with its tokenizer).
pub(super) fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let src = from.join(f);
        if src.is_file() {
            std::fs::copy(&src, to.join(f)).map_err(|e| tilpass_core::Error::io(&src, e))?;
        }
    }
    Ok(())
}
