//! `tilpass train classify` (LamBERT step 2): a BERT or NorBERT3 (LTG-BERT) encoder, or a
//! Llama / Mistral / GPT-2 decoder (transformers' `*ForSequenceClassification`: the score head
//! on the last non-pad token), gets a new classifier head over the labels of a JSONL file and
//! learns them with the method of [`ClassifyRun::method`]: LoRA / DoRA (the family's targets and head from
//! [`tilpass_peft::classifier_defaults`] unless [`ClassifyRun::lora`] names its own), prefix
//! tuning, P-tuning, prompt tuning (BERT and decoders, not NorBERT3: see
//! [`crate::classify_methods`] for the family x method table) or full fine-tuning.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tilpass_metrics::ClassificationReport;
use tilpass_models::{EncoderModel, HasLinears};
use tilpass_peft::{
    LoraConfig, PeftModel, PromptAdapter, TargetModules, classifier_defaults, default_targets,
};
use tilpass_tokenize::Tokenizer;

use super::jsonl::{read_rows, text_field};
use super::{LORA_SHORTHANDS, RunConfig, check, write_run_config};
use crate::classify::{cls_batches, evaluate_classifier, train_classifier};
pub use crate::classify_methods::LABELS_FILE;
use crate::classify_methods::{
    ClassifyMethod, DecoderPromptClassifier, PromptClassifier, bert_prompt_dims,
    check_decoder_batch, check_method, decoder_prompt_dims, is_decoder, load_decoder_classifier,
    model_type_of, save_full_classifier, save_full_decoder_classifier, saved_dir,
    train_prompt_classifier, write_labels,
};
use crate::error::{Result, TrainError};
use crate::optim::AdamWConfig;
use crate::schedule::ScheduleKind;
use crate::trainer::{Event, Summary, TrainConfig};

/// Settings of classifier training. Field names are the `tilpass train classify` flags; the
/// LoRA settings are PEFT's `LoraConfig` under `lora` (also at the top level: `lora_r`,
/// `lora_alpha`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyRun {
    /// Model directory with its tokenizer: a BERT or NorBERT3 encoder, or a Llama / Mistral /
    /// GPT-2 decoder (causal LM or `*ForSequenceClassification`).
    pub model: Option<PathBuf>,
    /// Labelled JSONL (e.g. from `tilpass annotate`).
    pub data: Option<PathBuf>,
    /// Field holding the text.
    pub text_field: String,
    /// Field holding the label.
    pub label_field: String,
    /// Output directory: `adapter/` (or `model/` for `full`) with `labels.json`,
    /// `metrics.jsonl`, `run_config.json`.
    pub out: Option<PathBuf>,
    /// Replace an earlier run in a non-empty `out`; without it such an `out` is an error.
    pub overwrite_output_dir: bool,
    /// Device the CLI runs on; [`ClassifyRun::run`] takes the device as an argument.
    pub device: String,
    /// Fraction of the rows (the last ones) held out for evaluation; 0 holds none out.
    pub eval_split: f64,
    /// The adaptation method: lora (default), dora, prefix, p-tuning, prompt or full.
    pub method: ClassifyMethod,
    /// Virtual tokens of a prefix / p-tuning / prompt adapter (required for them, at least 1).
    pub num_virtual_tokens: Option<usize>,
    /// Prefix tuning through PEFT's projection MLP (`prefix` only).
    pub prefix_projection: bool,
    /// Hidden width of the prompt encoder (p-tuning, or prefix with `prefix_projection`;
    /// `None`: the model's hidden size, as PEFT).
    pub encoder_hidden_size: Option<usize>,
    /// The LoRA adapter (lora / dora). `target_modules: null` takes the family's classifier targets and
    /// `modules_to_save: null` its head.
    pub lora: LoraConfig,
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
    /// Truncate texts to this many tokens (at least 2: `[CLS]` and `[SEP]`).
    pub max_length: usize,
    /// Seed of the new head, the adapter and dropout (burn's process-wide RNG, seeded when
    /// the run starts).
    pub seed: u64,
}

impl Default for ClassifyRun {
    fn default() -> Self {
        let t = TrainConfig::default();
        Self {
            model: None,
            data: None,
            text_field: "text".into(),
            label_field: "label".into(),
            out: None,
            overwrite_output_dir: false,
            device: "flex".into(),
            eval_split: 0.1,
            method: ClassifyMethod::Lora,
            num_virtual_tokens: None,
            prefix_projection: false,
            encoder_hidden_size: None,
            lora: LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                task_type: Some("SEQ_CLS".into()),
                ..Default::default()
            },
            batch_size: 16,
            grad_accum: t.gradient_accumulation_steps,
            lr: 1e-3,
            lr_scheduler_type: t.lr_scheduler_type,
            steps: 100,
            warmup: t.warmup_steps,
            max_grad_norm: t.max_grad_norm,
            weight_decay: t.adamw.weight_decay,
            max_length: 128,
            seed: 0,
        }
    }
}

impl RunConfig for ClassifyRun {
    const JOB: &'static str = "classify";

    fn shorthands() -> Vec<(&'static str, &'static str, &'static str)> {
        LORA_SHORTHANDS
            .iter()
            .map(|(k, f)| (*k, "lora", *f))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::path("data", &self.data)?;
        check::path("out", &self.out)?;
        check::fraction("eval_split", self.eval_split, true)?;
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
        check::at_least("max_length", self.max_length, 2)?;
        self.check_method_settings()?;
        check::lora(&self.lora)
    }
}

impl ClassifyRun {
    /// The prompt-learning settings fit the method: a prompt method needs
    /// `num_virtual_tokens` >= 1, `prefix_projection` needs `prefix`, `encoder_hidden_size`
    /// (>= 1) needs p-tuning or prefix with the projection, and the other methods take none.
    pub fn check_method_settings(&self) -> Result<()> {
        let m = self.method;
        let prompt = m.prompt_method().is_some();
        match self.num_virtual_tokens {
            None if prompt => {
                return Err(TrainError::setting(
                    "num_virtual_tokens",
                    "(none)",
                    format!("at least 1 with --method {m}"),
                ));
            }
            Some(0) if prompt => {
                return Err(TrainError::setting(
                    "num_virtual_tokens",
                    0,
                    format!("at least 1 with --method {m}"),
                ));
            }
            Some(n) if !prompt => {
                return Err(TrainError::setting(
                    "num_virtual_tokens",
                    n,
                    format!("unset with --method {m} (it applies to prefix, p-tuning, prompt)"),
                ));
            }
            _ => {}
        }
        if self.prefix_projection && m != ClassifyMethod::Prefix {
            return Err(TrainError::setting(
                "prefix_projection",
                true,
                format!("false with --method {m} (it applies to prefix)"),
            ));
        }
        if let Some(h) = self.encoder_hidden_size {
            let takes = m == ClassifyMethod::PTuning
                || (m == ClassifyMethod::Prefix && self.prefix_projection);
            if !takes {
                return Err(TrainError::setting(
                    "encoder_hidden_size",
                    h,
                    format!(
                        "unset with --method {m} (it applies to p-tuning and to prefix with \
                         prefix_projection)"
                    ),
                ));
            }
            check::at_least("encoder_hidden_size", h, 1)?;
        }
        if m == ClassifyMethod::Lora && self.lora.use_dora {
            // `lora.use_dora` is DoRA by another name.
            return Ok(());
        }
        if m != ClassifyMethod::Dora && m != ClassifyMethod::Lora && self.lora.use_dora {
            return Err(TrainError::setting(
                "lora.use_dora",
                true,
                format!("false with --method {m}"),
            ));
        }
        Ok(())
    }
}

/// What classifier training did.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// The labels, in class order (sorted).
    pub labels: Vec<String>,
    /// Accuracy, macro-F1 and the rest on the held-out rows (none held out: `None`).
    pub eval: Option<ClassificationReport>,
    /// The method that trained it.
    pub method: ClassifyMethod,
    /// The saved classifier with `labels.json`: the adapter directory (HF PEFT layout) or,
    /// for `full`, the transformers model directory.
    pub adapter: PathBuf,
}

/// Encodes texts with the tokenizer's special tokens, truncated to `max_length` tokens as
/// transformers truncates (the content is cut, the special tokens kept:
/// [`Tokenizer::encode_batch_truncated`]).
pub(crate) fn encode_texts(
    tok: &Tokenizer,
    texts: &[&str],
    max_length: usize,
) -> Result<Vec<Vec<u32>>> {
    Ok(tok.encode_batch_truncated(texts, max_length)?)
}

/// The LoRA config of a classifier on `model`: `lora` with the family's targets and head
/// where it names none, `SEQ_CLS` as its task when it names none, and the base model's path.
pub fn classifier_lora(lora: &LoraConfig, model: &EncoderModel, dir: &Path) -> Result<LoraConfig> {
    let mut cfg = lora.clone();
    let family = model.model_type();
    let defaults = classifier_defaults(&family);
    let missing = || {
        TrainError::Config(format!(
            "{family} has no classifier defaults: set lora.target_modules and \
             lora.modules_to_save"
        ))
    };
    if cfg.target_modules.is_none() {
        let d = defaults.ok_or_else(missing)?;
        cfg.target_modules = Some(TargetModules::from(d.target_modules));
    }
    if cfg.modules_to_save.is_none() {
        cfg.modules_to_save = Some(vec![defaults.ok_or_else(missing)?.head.into()]);
    }
    cfg.task_type.get_or_insert_with(|| "SEQ_CLS".into());
    cfg.base_model_name_or_path
        .get_or_insert_with(|| dir.display().to_string());
    Ok(cfg)
}

impl ClassifyRun {
    /// Trains the classifier on `device` (made an autodiff device here): checks the
    /// settings, writes `out/run_config.json`, reads and encodes the rows, trains, evaluates
    /// on the held-out rows and saves `out/adapter` with `labels.json`.
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<ClassifyOutcome> {
        self.validate()?;
        let (model_dir, data) = (
            check::path("model", &self.model)?,
            check::path("data", &self.data)?,
        );
        let out = check::path("out", &self.out)?;
        super::prepare_output_dir(
            out,
            self.overwrite_output_dir,
            false,
            &[model_dir.as_path(), data.as_path()],
        )?;
        let _fresh = super::FreshStart::new(out);
        write_run_config(self, out)?;
        let rows = read_rows(data)?;
        let mut texts = Vec::with_capacity(rows.len());
        let mut labels: Vec<String> = Vec::with_capacity(rows.len());
        for (line, r) in &rows {
            texts.push(text_field(r, &self.text_field, data, *line)?);
            labels.push(text_field(r, &self.label_field, data, *line)?.to_string());
        }
        let mut names: Vec<String> = labels.clone();
        names.sort();
        names.dedup();
        if names.len() < 2 {
            return Err(TrainError::Config(format!(
                "{}: need at least two distinct labels, found {names:?}",
                data.display()
            )));
        }
        let n_eval = held_out_rows(rows.len(), self.eval_split)?;
        let ids: Vec<usize> = labels
            .iter()
            .map(|l| names.iter().position(|n| n == l).unwrap_or(0))
            .collect();
        let device = device.clone().autodiff();
        device.seed(self.seed);
        let tok = Tokenizer::from_dir(model_dir)?;
        let model_type = model_type_of(model_dir)?;
        if is_decoder(&model_type) {
            check_method(&model_type, self.method)?;
        }
        let encoded = encode_texts(&tok, &texts, self.max_length)?;
        let n_train = rows.len() - n_eval;
        let examples: Vec<(Vec<u32>, usize)> = encoded.into_iter().zip(ids).collect();
        let cfg = self.train_config(out);
        let adapter = saved_dir(out, self.method);
        if is_decoder(&model_type) {
            let (summary, eval) = self.train_decoder(
                model_dir,
                &names,
                &examples[..n_train],
                &examples[n_train..],
                &cfg,
                &adapter,
                &device,
                progress,
            )?;
            write_labels(&adapter, &names)?;
            return Ok(ClassifyOutcome {
                method: self.method,
                summary,
                labels: names,
                eval,
                adapter,
            });
        }
        let encoder = EncoderModel::load(model_dir, &device)?;
        check_method(&encoder.model_type(), self.method)?;
        let model = encoder.with_new_classifier(&names, self.seed)?;
        let pad = model.pad_token_id();
        let train = cls_batches(&examples[..n_train], self.batch_size, pad)?;
        let eval = cls_batches(&examples[n_train..], self.batch_size, pad)?;
        let (summary, eval) = match (self.method.prompt_method(), model) {
            (Some(method), EncoderModel::Bert(bert)) => {
                let n = self.num_virtual_tokens.unwrap_or(1);
                let max = bert.config().max_position_embeddings;
                if n + self.max_length > max {
                    return Err(TrainError::setting(
                        "num_virtual_tokens",
                        n,
                        format!(
                            "at most {} with max_length {}: the virtual tokens and the text \
                             share the model's {max} positions",
                            max.saturating_sub(self.max_length),
                            self.max_length
                        ),
                    ));
                }
                let dims = bert_prompt_dims(&bert);
                let mut prompt =
                    PromptAdapter::new_for_dims(dims, method, n, "SEQ_CLS", self.seed, &device)?;
                let hidden = self.encoder_hidden_size.unwrap_or(dims.hidden);
                if self.method == ClassifyMethod::PTuning || self.prefix_projection {
                    prompt = prompt.with_encoder(hidden, None, self.seed, &device)?;
                }
                prompt.config.other.insert(
                    "base_model_name_or_path".into(),
                    model_dir.display().to_string().into(),
                );
                let mut pm = PromptClassifier::new(*bert, prompt);
                progress(Event::Message(&format!(
                    "{} labels {names:?}; {}",
                    names.len(),
                    pm.trainable_report()
                )));
                let summary = train_prompt_classifier(&mut pm, &train, &cfg, None, progress)?;
                let eval = if eval.is_empty() {
                    None
                } else {
                    Some(evaluate_classifier(&pm, &eval)?)
                };
                pm.save(&adapter)?;
                (summary, eval)
            }
            (Some(_), other) => {
                // check_method refuses prompt learning on every other family.
                return Err(TrainError::setting(
                    "method",
                    self.method,
                    format!("a BERT model, not model_type `{}`", other.model_type()),
                ));
            }
            (None, model) => {
                let full = self.method == ClassifyMethod::Full;
                let mut peft = PeftModel::new(model);
                let (summary, eval) = self.train_peft(
                    &mut peft,
                    |m| classifier_lora(&self.lora, m, model_dir),
                    &names,
                    &train,
                    &eval,
                    &cfg,
                    progress,
                )?;
                if full {
                    save_full_classifier(peft.model(), model_dir, &names, &adapter)?;
                } else {
                    peft.save_adapter("default", &adapter)?;
                }
                (summary, eval)
            }
        };
        write_labels(&adapter, &names)?;
        Ok(ClassifyOutcome {
            method: self.method,
            summary,
            labels: names,
            eval,
            adapter,
        })
    }
}

impl ClassifyRun {
    /// Trains a classifier in full (`--method full`) or through a LoRA / DoRA adapter made by
    /// `lora` (the head trained in full, as PEFT's `modules_to_save`), then evaluates it on
    /// `eval`; the caller saves it.
    #[allow(clippy::too_many_arguments)]
    fn train_peft<M: tilpass_models::SequenceClassifier + HasLinears>(
        &self,
        peft: &mut PeftModel<M>,
        lora: impl FnOnce(&M) -> Result<LoraConfig>,
        names: &[String],
        train: &[crate::classify::ClsBatch],
        eval: &[crate::classify::ClsBatch],
        cfg: &TrainConfig,
        progress: &mut dyn FnMut(Event),
    ) -> Result<(Summary, Option<ClassificationReport>)> {
        let summary = if self.method == ClassifyMethod::Full {
            progress(Event::Message(&format!(
                "{} labels {names:?}; every weight trains",
                names.len()
            )));
            train_classifier(
                peft,
                crate::trainer::Target::Full,
                train,
                cfg,
                None,
                progress,
            )?
        } else {
            let mut lora = lora(peft.model())?;
            lora.use_dora |= self.method == ClassifyMethod::Dora;
            peft.add_adapter("default", &lora, self.seed)?;
            peft.freeze_base();
            progress(Event::Message(&format!(
                "{} labels {names:?}; {}",
                names.len(),
                peft.trainable_parameters()
            )));
            train_classifier(peft, "default", train, cfg, None, progress)?
        };
        let eval = if eval.is_empty() {
            None
        } else {
            Some(peft.with_eval_mode(|p| evaluate_classifier(p.model(), eval))?)
        };
        Ok((summary, eval))
    }

    /// The training-loop settings of this run, checkpoints and `metrics.jsonl` under `out`.
    fn train_config(&self, out: &Path) -> TrainConfig {
        TrainConfig {
            learning_rate: self.lr,
            lr_scheduler_type: self.lr_scheduler_type,
            warmup_steps: self.warmup,
            max_steps: self.steps,
            gradient_accumulation_steps: self.grad_accum,
            max_grad_norm: self.max_grad_norm,
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            output_dir: Some(out.to_path_buf()),
            ..Default::default()
        }
    }

    /// Trains a Llama / Mistral / GPT-2 sequence classifier (any method: see
    /// [`crate::classify_methods`]) on the `train` examples, evaluates it on `eval` and
    /// saves it in `saved`.
    #[allow(clippy::too_many_arguments)]
    fn train_decoder(
        &self,
        model_dir: &Path,
        names: &[String],
        train: &[(Vec<u32>, usize)],
        eval: &[(Vec<u32>, usize)],
        cfg: &TrainConfig,
        saved: &Path,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<(Summary, Option<ClassificationReport>)> {
        let model = load_decoder_classifier(model_dir, names, self.seed, device)?;
        check_decoder_batch(&model, "batch_size", self.batch_size)?;
        let pad = model.pad_token_id().unwrap_or(0);
        let train = cls_batches(train, self.batch_size, pad)?;
        let eval = cls_batches(eval, self.batch_size, pad)?;
        if let Some(method) = self.method.prompt_method() {
            let dims = decoder_prompt_dims(&model);
            let n = self.num_virtual_tokens.unwrap_or(1);
            let mut prompt =
                PromptAdapter::new_for_dims(dims, method, n, "SEQ_CLS", self.seed, device)?;
            let hidden = self.encoder_hidden_size.unwrap_or(dims.hidden);
            if self.method == ClassifyMethod::PTuning || self.prefix_projection {
                prompt = prompt.with_encoder(hidden, None, self.seed, device)?;
            }
            prompt.config.other.insert(
                "base_model_name_or_path".into(),
                model_dir.display().to_string().into(),
            );
            let mut pm = DecoderPromptClassifier::new(model, prompt);
            progress(Event::Message(&format!(
                "{} labels {names:?}; {}",
                names.len(),
                pm.trainable_report()
            )));
            let summary = train_prompt_classifier(&mut pm, &train, cfg, None, progress)?;
            let eval = if eval.is_empty() {
                None
            } else {
                Some(evaluate_classifier(&pm, &eval)?)
            };
            pm.save(saved)?;
            return Ok((summary, eval));
        }
        let full = self.method == ClassifyMethod::Full;
        let mut peft = PeftModel::new(model);
        let (summary, eval) = self.train_peft(
            &mut peft,
            |m| decoder_classifier_lora(&self.lora, &m.model_type(), model_dir),
            names,
            &train,
            &eval,
            cfg,
            progress,
        )?;
        if full {
            save_full_decoder_classifier(peft.model(), model_dir, names, saved)?;
        } else {
            peft.save_adapter("default", saved)?;
        }
        Ok((summary, eval))
    }
}

/// The LoRA config of a decoder classifier of `family` (HF `model_type`): `lora` with PEFT's
/// default targets of the family (`q_proj`, `v_proj`; GPT-2 `c_attn`) and PEFT's
/// `modules_to_save = ["classifier", "score"]` (the head is `score`) where it names none, task `SEQ_CLS`, and the base model's path.
pub fn decoder_classifier_lora(lora: &LoraConfig, family: &str, dir: &Path) -> Result<LoraConfig> {
    let mut cfg = lora.clone();
    if cfg.target_modules.is_none() {
        let d = default_targets(family).ok_or_else(|| {
            TrainError::Config(format!(
                "{family} has no default LoRA targets: set lora.target_modules"
            ))
        })?;
        cfg.target_modules = Some(TargetModules::from(d.as_slice()));
    }
    if cfg.modules_to_save.is_none() {
        // PEFT's `SEQ_CLS` list: `classifier` matches no decoder module.
        cfg.modules_to_save = Some(vec!["classifier".into(), "score".into()]);
    }
    cfg.task_type.get_or_insert_with(|| "SEQ_CLS".into());
    cfg.base_model_name_or_path
        .get_or_insert_with(|| dir.display().to_string());
    Ok(cfg)
}

/// Rows held out for evaluation: `eval_split` of `rows`, rounded; an error when a non-zero split
/// holds out no row or leaves none to train on.
fn held_out_rows(rows: usize, eval_split: f64) -> Result<usize> {
    let n_eval = ((rows as f64) * eval_split).round() as usize;
    if eval_split > 0.0 && (n_eval == 0 || n_eval >= rows) {
        return Err(TrainError::setting(
            "eval_split",
            eval_split,
            format!(
                "a fraction of the {rows} rows that holds out at least one row and leaves at \
                 least one to train on (0 holds none out)"
            ),
        ));
    }
    Ok(n_eval)
}

#[cfg(test)]
mod tests {
    use super::held_out_rows;

    #[test]
    fn a_split_must_hold_out_a_row_and_leave_one() {
        assert_eq!(held_out_rows(20, 0.0).unwrap(), 0);
        assert_eq!(held_out_rows(20, 0.1).unwrap(), 2);
        let err = held_out_rows(20, 0.01).unwrap_err().to_string();
        assert!(
            err.contains("eval_split") && err.contains("20 rows"),
            "{err}"
        );
        assert!(held_out_rows(1, 0.9).is_err());
    }
}
