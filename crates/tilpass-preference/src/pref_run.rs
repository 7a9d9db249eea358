//! What the run configs of `tilpass train orpo|cpo|kto` share ([`crate::orpo_run::OrpoRun`],
//! [`crate::cpo_run::CpoRun`], [`crate::kto_run::KtoRun`]): the data, model, adapter and
//! optimiser settings with the names and defaults of `tilpass train dpo`
//! ([`crate::dpo_run::DpoRun`]: transformers' `TrainingArguments` defaults, but a learning rate
//! of 5e-5 instead of TRL's 1e-6, which barely moves a LoRA adapter), declared once by
//! [`preference_run!`] next to each trainer's own settings (TRL's config names); and the steps
//! of a run around the trainer: output directory, run config, model and adapter, saving.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tilpass_data::{Content, DatasetSpec};
use tilpass_models::{DecoderLm, HasLinears};
use tilpass_peft::{LoraConfig, PeftModel};
use tilpass_tokenize::Tokenizer;
use tilpass_train::runs::{
    FreshStart, RunConfig, check_resume_settings, prepare_output_dir, write_run_config,
};
use tilpass_train::{AdamWConfig, Event, ScheduleKind, TrainConfig, TrainError};

use crate::error::Result;

/// The common settings of a preference run, borrowed from its config.
pub(crate) struct Common<'a> {
    pub model: &'a Option<PathBuf>,
    pub data: &'a Option<DatasetSpec>,
    pub eval_data: &'a Option<DatasetSpec>,
    pub eval_steps: Option<usize>,
    pub early_stopping_patience: Option<usize>,
    pub out: &'a Option<PathBuf>,
    pub resume: &'a Option<PathBuf>,
    pub overwrite_output_dir: bool,
    pub max_length: Option<usize>,
    pub full: bool,
    pub lora: &'a LoraConfig,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub lr_scheduler_type: ScheduleKind,
    pub steps: usize,
    pub warmup: usize,
    pub max_grad_norm: Option<f64>,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub save_steps: Option<usize>,
    pub save_total_limit: usize,
    pub seed: u64,
}

/// The settings a resumed run must share with the run it continues (besides each trainer's
/// own loss settings).
pub(crate) const COMMON_RESUME_SETTINGS: &[&str] = &[
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
    "chat_template",
    "seed",
];

pub(crate) fn missing(setting: &str) -> TrainError {
    TrainError::MissingSetting {
        setting: setting.into(),
        flag: setting.replace('_', "-"),
    }
}

impl Common<'_> {
    /// Checks the common settings (required paths, ranges, the loop's own checks).
    pub fn validate(&self) -> tilpass_train::Result<()> {
        let at_least_one = |name: &str, v: usize| {
            if v >= 1 {
                Ok(())
            } else {
                Err(TrainError::setting(name, v, "an integer >= 1"))
            }
        };
        if self.model.is_none() {
            return Err(missing("model"));
        }
        if self.out.is_none() {
            return Err(missing("out"));
        }
        if self.data.is_none() {
            return Err(missing("data"));
        }
        if let Some(n) = self.max_length {
            at_least_one("max_length", n)?;
        }
        at_least_one("batch_size", self.batch_size)?;
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
}

/// A run after its checks: the output directory prepared, `run_config.json` written, the
/// tokenizer read and the autodiff device seeded.
pub(crate) struct Started {
    pub model_dir: PathBuf,
    pub out: PathBuf,
    pub data: DatasetSpec,
    pub tokenizer: Tokenizer,
    pub device: Device,
    /// Removes a fresh run's `out` again if the run fails before training.
    pub fresh: Option<FreshStart>,
}

/// Checks `run`, prepares its output directory and writes its config (see
/// [`crate::dpo_run::DpoRun::run`]).
pub(crate) fn start<R: RunConfig>(
    run: &R,
    common: &Common<'_>,
    resume_settings: &[&str],
    device: &Device,
) -> Result<Started> {
    run.validate()?;
    let model_dir = common.model.clone().ok_or_else(|| missing("model"))?;
    let out = common.out.clone().ok_or_else(|| missing("out"))?;
    let data = common.data.clone().ok_or_else(|| missing("data"))?;
    if let Some(ckpt) = common.resume {
        check_resume_settings(run, ckpt, resume_settings)?;
    }
    let mut inputs: Vec<&Path> = vec![model_dir.as_path()];
    inputs.extend(common.resume.as_deref());
    for spec in [Some(&data), common.eval_data.as_ref()]
        .into_iter()
        .flatten()
    {
        if let DatasetSpec::File(p) = spec {
            inputs.push(p.as_path());
        }
    }
    prepare_output_dir(
        &out,
        common.overwrite_output_dir,
        common.resume.is_some(),
        &inputs,
    )?;
    let fresh = common.resume.is_none().then(|| FreshStart::new(&out));
    write_run_config(run, &out)?;
    let device = device.clone().autodiff();
    device.seed(common.seed);
    let tokenizer = Tokenizer::from_dir(&model_dir).map_err(TrainError::from)?;
    Ok(Started {
        model_dir,
        out,
        data,
        tokenizer,
        device,
        fresh,
    })
}

/// The model to train: the base with a new (or the resumed) LoRA adapter, frozen base; or,
/// with `full`, every weight. Reports the trainable parameters.
pub(crate) fn load_model(
    common: &Common<'_>,
    started: &Started,
    progress: &mut dyn FnMut(Event),
) -> Result<PeftModel<DecoderLm>> {
    let base = DecoderLm::load(&started.model_dir, &started.device)?;
    let mut peft = PeftModel::new(base);
    if common.full {
        let note = format!("full fine-tuning: {} parameters", peft.parameter_count());
        progress(Event::Message(&note));
        return Ok(peft);
    }
    if let Some(dir) = common.resume {
        peft.load_adapter(dir, "default")?;
    } else {
        let mut cfg = common.lora.clone();
        cfg.task_type.get_or_insert_with(|| "CAUSAL_LM".into());
        cfg.base_model_name_or_path
            .get_or_insert_with(|| started.model_dir.display().to_string());
        peft.add_adapter("default", &cfg, common.seed)?;
    }
    peft.freeze_base();
    progress(Event::Message(&peft.trainable_parameters().to_string()));
    Ok(peft)
}

/// Saves the adapter under `out/adapter` or, with `full`, the model (HF layout, with the
/// tokenizer files) under `out/model`; returns the directory.
pub(crate) fn save(
    common: &Common<'_>,
    started: &Started,
    peft: &PeftModel<DecoderLm>,
) -> Result<PathBuf> {
    if common.full {
        let dir = started.out.join("model");
        peft.save(&dir, tilpass_core::SaveDtype::F32)?;
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let src = started.model_dir.join(f);
            if src.is_file() {
                std::fs::copy(&src, dir.join(f))
                    .map_err(|e| TrainError::from(tilpass_core::Error::io(&src, e)))?;
            }
        }
        Ok(dir)
    } else {
        let dir = started.out.join("adapter");
        peft.save_adapter("default", &dir)?;
        Ok(dir)
    }
}

/// True for text that is empty or only whitespace, or conversations without any content.
pub(crate) fn is_empty(c: &Content) -> bool {
    match c {
        Content::Text(t) => t.trim().is_empty(),
        Content::Messages(m) => m.iter().all(|m| m.content.trim().is_empty()),
    }
}

/// The rows of `spec` and where each came from (`file:line` for JSONL, `file item N` for JSON
/// arrays, `builtin:... row N`), for errors that name the row.
pub(crate) fn load_rows(spec: &DatasetSpec) -> Result<(Vec<tilpass_data::Record>, Vec<String>)> {
    use tilpass_data::{Location, ReadOptions, load_records, read_dataset};
    match spec {
        DatasetSpec::File(p) => {
            let d = read_dataset(p, &ReadOptions::default()).map_err(TrainError::from)?;
            let at = d
                .locations
                .iter()
                .map(|l| match l {
                    Location::Line(n) => format!("{}:{n}", p.display()),
                    other => format!("{} {other}", p.display()),
                })
                .collect();
            Ok((d.records, at))
        }
        other => {
            let records = load_records(other).map_err(TrainError::from)?;
            let at = (1..=records.len())
                .map(|i| format!("{other} row {i}"))
                .collect();
            Ok((records, at))
        }
    }
}

/// The error for the row at `at` (see [`load_rows`]).
pub(crate) fn row_error(at: &str, expected: String) -> TrainError {
    TrainError::setting("data", at, expected)
}

/// Declares a preference run config: the common fields (documented here once, serde names =
/// `tilpass train` flags) followed by the trainer's own settings, its [`Default`] and its
/// [`RunConfig`] impl (validation: [`Common::validate`] then `self.validate_own()`).
macro_rules! preference_run {
    (
        $(#[$doc:meta])*
        pub struct $name:ident (job = $job:literal) {
            $( $(#[$fdoc:meta])* pub $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Base model directory (config.json, safetensors, tokenizer files).
            pub model: Option<std::path::PathBuf>,
            /// Training data: JSONL / JSON rows in a TRL format, or `builtin:norsk-pref[:split]`.
            pub data: Option<tilpass_data::DatasetSpec>,
            /// Held-out rows in the same format (e.g. `builtin:norsk-pref:eval`), evaluated
            /// every `eval_steps`: `eval_loss` and TRL's metrics with the `eval_` prefix in
            /// `metrics.jsonl`.
            pub eval_data: Option<tilpass_data::DatasetSpec>,
            /// Evaluate on `eval_data` every this many optimiser steps.
            pub eval_steps: Option<usize>,
            /// Stop after this many evaluations without a lower `eval_loss` (needs
            /// `eval_steps`).
            pub early_stopping_patience: Option<usize>,
            /// Output directory: `adapter/` (or `model/` with `full`), `checkpoint-N/`,
            /// `metrics.jsonl`, `run_config.json`.
            pub out: Option<std::path::PathBuf>,
            /// Continue from a checkpoint directory (`out/checkpoint-N`) of an earlier run.
            pub resume: Option<std::path::PathBuf>,
            /// Replace an earlier run in a non-empty `out`.
            pub overwrite_output_dir: bool,
            /// Device the CLI runs on (`flex`, `wgpu`, `cuda:0`, ...).
            pub device: String,
            /// Chat template for conversational rows: the tokenizer's (default) or a named one.
            pub chat_template: Option<String>,
            /// Tokens of prompt + completion kept per sequence (TRL: 1024; `None`: no limit);
            /// the start is kept, rows whose prompt alone fills it are left out.
            pub max_length: Option<usize>,
            /// Train every weight; the model is saved in HF layout under `out/model`.
            pub full: bool,
            /// The LoRA adapter (PEFT's `LoraConfig`). Ignored with `full` and `resume`.
            pub lora: tilpass_peft::LoraConfig,
            /// Rows per batch (TRL's `per_device_train_batch_size`: 8).
            pub batch_size: usize,
            /// Batches per optimiser step.
            pub grad_accum: usize,
            /// Peak learning rate. Default 5e-5 (TRL: 1e-6, too small for LoRA; use ~1e-6
            /// with `full`).
            pub lr: f64,
            /// Schedule after warmup: linear (default), cosine or constant.
            pub lr_scheduler_type: tilpass_train::ScheduleKind,
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
            $( $(#[$fdoc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                let t = tilpass_train::TrainConfig::default();
                let a = tilpass_train::AdamWConfig::default();
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
                    chat_template: None,
                    max_length: Some(1024),
                    full: false,
                    lora: tilpass_peft::LoraConfig {
                        r: 16,
                        lora_alpha: 32.0,
                        task_type: Some("CAUSAL_LM".into()),
                        ..Default::default()
                    },
                    batch_size: 8,
                    grad_accum: 1,
                    lr: 5e-5,
                    lr_scheduler_type: tilpass_train::ScheduleKind::Linear,
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
                    $( $field: $default, )*
                }
            }
        }

        impl $name {
            pub(crate) fn common(&self) -> crate::pref_run::Common<'_> {
                crate::pref_run::Common {
                    model: &self.model,
                    data: &self.data,
                    eval_data: &self.eval_data,
                    eval_steps: self.eval_steps,
                    early_stopping_patience: self.early_stopping_patience,
                    out: &self.out,
                    resume: &self.resume,
                    overwrite_output_dir: self.overwrite_output_dir,
                    max_length: self.max_length,
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
            pub fn train_config(&self) -> tilpass_train::TrainConfig {
                self.common().train_config()
            }
        }

        impl tilpass_train::runs::RunConfig for $name {
            const JOB: &'static str = $job;

            fn shorthands() -> Vec<(&'static str, &'static str, &'static str)> {
                tilpass_train::runs::LORA_SHORTHANDS
                    .iter()
                    .map(|(k, f)| (*k, "lora", *f))
                    .collect()
            }

            fn validate(&self) -> tilpass_train::Result<()> {
                self.common().validate()?;
                self.validate_own()
                    .map_err(|e| tilpass_train::TrainError::Config(e.to_string()))
            }
        }
    };
}

pub(crate) use preference_run;

/// The paired data of an ORPO / CPO run, encoded as TRL's `ORPOTrainer` / `CPOTrainer` do:
/// TRL's DPO encoding ([`tilpass_tokenize::encode_preferences`]: explicit or implicit prompt,
/// plain text with EOS, or conversations through the chat template), then BOS before the
/// prompt and EOS after each answer where missing (their `add_bos_token_if_needed` /
/// `add_eos_token_if_needed`), collated `[all chosen; all rejected]`, right-padded, the start
/// kept. Empty answers are errors naming the row; rows whose prompt alone fills `max_length`
/// are left out (reported).
pub(crate) fn paired_batches(
    tok: &Tokenizer,
    spec: &DatasetSpec,
    max_length: Option<usize>,
    batch_size: usize,
    chat_template: Option<&str>,
    progress: &mut dyn FnMut(Event),
) -> Result<Vec<crate::dpo_trainer::DpoBatch>> {
    use tilpass_data::Record;
    use tilpass_tokenize::{PreferenceConfig, Truncation, collate_preference, encode_preferences};
    let (records, at) = load_rows(spec)?;
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Preference {
                chosen, rejected, ..
            } => {
                for (side, c) in [("chosen", chosen), ("rejected", rejected)] {
                    if is_empty(c) {
                        return Err(row_error(
                            &at[i],
                            format!("a non-empty `{side}` answer (this row's is empty)"),
                        )
                        .into());
                    }
                }
            }
            other => {
                return Err(row_error(
                    &at[i],
                    format!(
                        "a preference row with `chosen` and `rejected` (and `prompt`), found a \
                         {} row",
                        other.kind().as_str()
                    ),
                )
                .into());
            }
        }
    }
    let cfg = PreferenceConfig {
        max_length,
        truncation: Truncation::KeepStart,
        pad_to_multiple_of: None,
        chat_template: chat_template.map(str::to_string),
    };
    let (mut examples, report) =
        encode_preferences(tok, &records, &cfg).map_err(TrainError::from)?;
    let (bos, eos) = (tok.bos_id(), tok.eos_id());
    for e in &mut examples {
        if let Some(b) = bos
            && e.prompt_ids.first() != Some(&b)
        {
            e.prompt_ids.insert(0, b);
        }
        if let Some(t) = eos {
            for ids in [&mut e.chosen_ids, &mut e.rejected_ids] {
                if ids.last() != Some(&t) {
                    ids.push(t);
                }
            }
        }
    }
    // With BOS added, a prompt may now fill `max_length` too.
    let before = examples.len();
    if let Some(max) = max_length {
        examples.retain(|e| e.prompt_ids.len() < max);
    }
    progress(Event::Detail(&format!(
        "{spec}: {} pairs ({report:?}; {} more left out whose prompt with BOS fills max_length)",
        examples.len(),
        before - examples.len()
    )));
    if examples.is_empty() {
        return Err(TrainError::setting(
            "data",
            spec,
            "at least one preference pair that fits max_length",
        )
        .into());
    }
    let pad = tok.pad_id().or(eos).unwrap_or(0);
    examples
        .chunks(batch_size)
        .map(|c| {
            let b = collate_preference(c, pad, &cfg).map_err(TrainError::from)?;
            crate::dpo_trainer::DpoBatch::from_collated(&b)
        })
        .collect()
}
