//! `tilpass train sft --peft prompt|p-tuning|prefix`: supervised fine-tuning with a
//! prompt-learning adapter (PEFT's prompt tuning, P-tuning with an MLP prompt encoder, prefix
//! tuning with or without its projection) on a decoder or an encoder-decoder (T5, NorT5), the
//! base model frozen, on the shared training loop ([`crate::prompt`]).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tilpass_data::{DatasetSpec, load_records};
use tilpass_models::{DecoderLm, Seq2SeqLm, Seq2SeqModel, is_encoder_decoder};
use tilpass_peft::{PromptAdapter, PromptMethod};
use tilpass_tokenize::{Seq2SeqEncoder, Seq2SeqSftConfig, SftEncoder, Tokenizer};

use super::sft::{RESUME_SETTINGS, append_metrics};
use super::{RunConfig, SftRun, check, write_run_config};
use crate::error::{Result, TrainError};
use crate::prompt::{
    PromptModel, PromptSeq2Seq, evaluate_prompt_lm, evaluate_prompt_seq2seq, train_prompt_lm,
    train_prompt_seq2seq,
};
use crate::seq2seq::{sample_seq2seq_answers, seq2seq_train_batches};
use crate::sft::sft_batches;
use crate::trainer::{EvalLog, Event, Summary};

/// The adapter an SFT run trains (`--peft`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeftMethod {
    /// LoRA (PEFT's `LoraConfig`, the run's `lora` section).
    #[default]
    Lora,
    /// Prompt tuning (`PROMPT_TUNING`): learned virtual-token embeddings.
    Prompt,
    /// P-tuning (`P_TUNING`) with PEFT's MLP prompt encoder.
    PTuning,
    /// Prefix tuning (`PREFIX_TUNING`): learned keys and values (with `prefix_projection`,
    /// through PEFT's projection MLP).
    Prefix,
}

impl PeftMethod {
    /// The prompt-learning method (`None` for LoRA).
    pub fn prompt_method(self) -> Option<PromptMethod> {
        match self {
            Self::Lora => None,
            Self::Prompt => Some(PromptMethod::PromptTuning),
            Self::PTuning => Some(PromptMethod::PTuning),
            Self::Prefix => Some(PromptMethod::Prefix),
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Lora => "lora",
            Self::Prompt => "prompt",
            Self::PTuning => "p-tuning",
            Self::Prefix => "prefix",
        }
    }
}

/// What a prompt-learning SFT run did ([`SftRun::run_prompt`]).
#[derive(Debug)]
pub struct PromptSftOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// The evaluation before the first step (`eval_on_start`).
    pub initial_eval: Option<EvalLog>,
    /// An evaluation after the last step (with `eval_data`).
    pub final_eval: Option<EvalLog>,
    /// `out/adapter`: PEFT's `adapter_config.json` + `adapter_model.safetensors`
    /// (`prompt_embeddings`), and the prompt encoder's weights beside them when there is one.
    pub saved: PathBuf,
    /// The trained adapter.
    pub prompt: PromptAdapter,
}

impl SftRun {
    /// Checks the prompt-learning settings against `peft`: with LoRA none may be set; with a
    /// prompt method `num_virtual_tokens` (>= 1) is required, `prefix_projection` needs
    /// `prefix`, `encoder_hidden_size` (>= 1) needs P-tuning or the projection, and `full`,
    /// `init_adapter` and `packing` do not apply.
    pub fn check_peft_method(&self) -> Result<()> {
        let m = self.peft.flag();
        if self.peft == PeftMethod::Lora {
            if let Some(n) = self.num_virtual_tokens {
                return Err(TrainError::setting(
                    "num_virtual_tokens",
                    n,
                    "not set with LoRA: it sizes a prompt-learning adapter (peft: prompt, \
                     p-tuning or prefix)",
                ));
            }
            if self.prefix_projection {
                return Err(TrainError::setting(
                    "prefix_projection",
                    true,
                    "not set with LoRA: it applies to prefix tuning (peft: prefix)",
                ));
            }
            if let Some(h) = self.encoder_hidden_size {
                return Err(TrainError::setting(
                    "encoder_hidden_size",
                    h,
                    "not set with LoRA: it sizes the prompt encoder of P-tuning or of prefix \
                     tuning with prefix_projection",
                ));
            }
            return Ok(());
        }
        match self.num_virtual_tokens {
            None => {
                return Err(TrainError::setting(
                    "num_virtual_tokens",
                    "(none)",
                    format!(
                        "a number of virtual tokens >= 1 with peft `{m}` (PEFT's configs have no \
                         default; 8 to 32 is usual)"
                    ),
                ));
            }
            Some(0) => {
                return Err(TrainError::setting(
                    "num_virtual_tokens",
                    0,
                    "an integer >= 1",
                ));
            }
            Some(_) => {}
        }
        if self.prefix_projection && self.peft != PeftMethod::Prefix {
            return Err(TrainError::setting(
                "prefix_projection",
                true,
                format!("only with peft `prefix` (prefix tuning), not `{m}`"),
            ));
        }
        if let Some(h) = self.encoder_hidden_size {
            let has_encoder = self.peft == PeftMethod::PTuning
                || (self.peft == PeftMethod::Prefix && self.prefix_projection);
            if !has_encoder {
                return Err(TrainError::setting(
                    "encoder_hidden_size",
                    h,
                    format!(
                        "only with a prompt encoder: peft `p-tuning`, or `prefix` with \
                         prefix_projection (peft `{m}` has none)"
                    ),
                ));
            }
            check::at_least("encoder_hidden_size", h, 1)?;
        }
        if self.full {
            return Err(TrainError::setting(
                "full",
                true,
                format!("not with peft `{m}`: full fine-tuning trains no adapter"),
            ));
        }
        if let Some(dir) = &self.init_adapter {
            return Err(TrainError::setting(
                "init_adapter",
                dir.display(),
                format!("not with peft `{m}`: init_adapter takes a LoRA adapter"),
            ));
        }
        if self.packing {
            return Err(TrainError::setting(
                "packing",
                true,
                format!(
                    "not with peft `{m}`: PEFT puts the virtual tokens in front of each row, \
                     which packed rows do not have"
                ),
            ));
        }
        Ok(())
    }

    /// Errors unless the run trains LoRA (or every weight): `caller` takes no prompt method.
    pub(super) fn lora_only(&self, caller: &str) -> Result<()> {
        if self.peft == PeftMethod::Lora {
            return Ok(());
        }
        Err(TrainError::setting(
            "peft",
            self.peft.flag(),
            format!("lora for `{caller}`: prompt-learning runs go through `SftRun::run_prompt`"),
        ))
    }

    /// The fresh adapter of this run for a model of the given kind: the table (and prompt
    /// encoder, hidden width `encoder_hidden_size` or the table's token width, as PEFT).
    fn fresh_prompt(
        &self,
        adapter: Result<PromptAdapter>,
        model_dir: &Path,
        device: &Device,
    ) -> Result<PromptAdapter> {
        let mut p = adapter?;
        let needs_encoder = self.peft == PeftMethod::PTuning
            || (self.peft == PeftMethod::Prefix && self.prefix_projection);
        if needs_encoder {
            let hidden = self
                .encoder_hidden_size
                .or(p.config.token_dim)
                .unwrap_or(p.dims().hidden);
            p = p.with_encoder(hidden, None, self.seed, device)?;
        }
        p.config.other.insert(
            "base_model_name_or_path".into(),
            Value::String(model_dir.display().to_string()),
        );
        Ok(p)
    }

    /// Trains a prompt-learning adapter (`peft`: prompt, p-tuning or prefix) on a decoder or
    /// an encoder-decoder (T5, NorT5; prefix tuning on T5 only) with this run's data and
    /// optimiser settings: checks the settings, writes `out/run_config.json`, encodes the data
    /// (as [`SftRun::run`] / [`SftRun::run_seq2seq`]), trains with the shared loop
    /// (checkpoints and exact resume included) and saves `out/adapter` in PEFT's format.
    pub fn run_prompt(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<PromptSftOutcome> {
        self.validate()?;
        let Some(method) = self.peft.prompt_method() else {
            return Err(TrainError::setting(
                "peft",
                "lora",
                "prompt, p-tuning or prefix for `SftRun::run_prompt` (LoRA runs go through \
                 `SftRun::run`)",
            ));
        };
        let n = self.num_virtual_tokens.unwrap_or(0);
        let (model_dir, out) = (
            check::path("model", &self.model)?,
            check::path("out", &self.out)?,
        );
        let data = check::required("data", &self.data)?;
        let seq2seq = is_encoder_decoder(model_dir).unwrap_or(false);
        if seq2seq {
            self.check_seq2seq_settings()?;
        }
        if let Some(ckpt) = &self.resume {
            super::check_resume_settings(self, ckpt, RESUME_SETTINGS)?;
        }
        let mut inputs: Vec<&Path> = vec![model_dir.as_path()];
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
        let cfg = self.train_config();
        let bs = self.batch_size;
        let resume = self.resume.as_deref();
        let dir = out.join("adapter");
        if seq2seq {
            let base = Seq2SeqLm::load(model_dir, &device)?;
            let (pad, start) = (base.pad_token_id(), base.decoder_start_token_id());
            let encoder = Seq2SeqEncoder::new(
                &tok,
                Seq2SeqSftConfig {
                    eos_id: tok.eos_id().or(base.eos_token_ids().first().copied()),
                    ..self.seq2seq_config()
                },
            )?;
            let mut encode = |spec: &DatasetSpec| -> Result<Vec<tilpass_tokenize::Seq2SeqExample>> {
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
            let eval = if eval_examples.is_empty() {
                Vec::new()
            } else {
                seq2seq_train_batches(&eval_examples, bs, pad, start, None)?
            };
            let prompt = self.fresh_prompt(
                PromptAdapter::new_seq2seq(&base, method, n, self.seed, &device)
                    .map_err(Into::into),
                model_dir,
                &device,
            )?;
            let mut pm = PromptModel::new(base, prompt);
            progress(Event::Message(&pm.trainable_report()));
            let sources: Vec<Vec<u32>> = eval_examples
                .iter()
                .take(self.eval_samples)
                .map(|e| e.input_ids.clone())
                .collect();
            let n_tokens = self.sample_max_new_tokens;
            let sampler = |m: &PromptModel<Seq2SeqLm>| {
                let with = PromptSeq2Seq {
                    model: &m.model,
                    prompt: &m.prompt,
                };
                sample_seq2seq_answers(&with, &tok, &sources, n_tokens)
            };
            let initial_eval = if self.eval_on_start && !eval.is_empty() && resume.is_none() {
                let mut log = evaluate_prompt_seq2seq(&pm, &eval, 0)?;
                log.samples = sampler(&pm)?;
                append_metrics(out, &log)?;
                progress(Event::Eval(&log));
                Some(log)
            } else {
                None
            };
            let summary = train_prompt_seq2seq(
                &mut pm,
                &train,
                &eval,
                Some(&sampler),
                &cfg,
                resume,
                progress,
            )?;
            let final_eval = match &summary.last_eval {
                _ if eval.is_empty() => None,
                Some(e) if e.step == summary.steps => Some(e.clone()),
                _ => Some(evaluate_prompt_seq2seq(&pm, &eval, summary.steps)?),
            };
            pm.prompt.save(&dir)?;
            return Ok(PromptSftOutcome {
                summary,
                initial_eval,
                final_eval,
                saved: dir,
                prompt: pm.prompt,
            });
        }
        let base = DecoderLm::load(model_dir, &device)?;
        let max_positions = base.max_positions();
        let pad = tok.pad_id().unwrap_or(0);
        let encoder = SftEncoder::new(&tok, self.sft_config())?;
        let mut encode = |spec: &DatasetSpec| -> Result<Vec<tilpass_tokenize::SftExample>> {
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
        // The virtual tokens take positions too.
        let positions = max_positions.saturating_sub(n).max(1);
        let train = sft_batches(&train_examples, bs, pad, positions)?;
        let eval = if eval_examples.is_empty() {
            Vec::new()
        } else {
            sft_batches(&eval_examples, bs, pad, positions)?
        };
        let prompt = self.fresh_prompt(
            PromptAdapter::new(&base, method, n, self.seed, None).map_err(Into::into),
            model_dir,
            &device,
        )?;
        let mut pm = PromptModel::new(base, prompt);
        progress(Event::Message(&pm.trainable_report()));
        let initial_eval = if self.eval_on_start && !eval.is_empty() && resume.is_none() {
            let log = evaluate_prompt_lm(&pm, &eval, 0)?;
            append_metrics(out, &log)?;
            progress(Event::Eval(&log));
            Some(log)
        } else {
            None
        };
        let summary = train_prompt_lm(&mut pm, &train, &eval, None, &cfg, resume, progress)?;
        let final_eval = match &summary.last_eval {
            _ if eval.is_empty() => None,
            Some(e) if e.step == summary.steps => Some(e.clone()),
            _ => Some(evaluate_prompt_lm(&pm, &eval, summary.steps)?),
        };
        pm.prompt.save(&dir)?;
        Ok(PromptSftOutcome {
            summary,
            initial_eval,
            final_eval,
            saved: dir,
            prompt: pm.prompt,
        })
    }
}
