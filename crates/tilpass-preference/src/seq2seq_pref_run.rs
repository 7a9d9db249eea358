//! `tilpass train orpo|cpo` on an encoder-decoder model directory (T5, T5.1.1, mT5, NorT5):
//! [`OrpoRun::run_seq2seq`] and [`CpoRun::run_seq2seq`], as TRL 1.16.0's ORPO and CPO trainers
//! run encoder-decoders ([`crate::seq2seq_pref`]); and the refusal of encoder-decoders by the
//! decoder runs (TRL 1.16.0's DPO, KTO and reward trainers do not support them).
//!
//! The data: text rows with `prompt`, `chosen` and `rejected` (an implicit prompt is the common
//! prefix of the answers, as for decoders), each tokenised with the tokenizer's special tokens
//! as TRL does (T5: EOS appended), the answers truncated to TRL's default
//! `max_completion_length` of 128 tokens for encoder-decoders, the prompt not truncated (TRL's
//! `max_length` does not apply to encoder-decoders); batched in the file's order.
//! Conversational rows are refused: TRL renders them with a chat template, which T5 and NorT5
//! tokenizers do not have. Held-out evaluation (`eval_data`) is not supported here yet.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tilpass_data::{Content, DatasetSpec, Record};
use tilpass_models::{HasLinears, Seq2SeqLm, Seq2SeqModel, is_encoder_decoder};
use tilpass_peft::PeftModel;
use tilpass_tokenize::Tokenizer;
use tilpass_train::runs::RunConfig;
use tilpass_train::{Event, Summary, Target, TrainConfig, TrainError};

use crate::cpo_run::CpoRun;
use crate::error::Result;
use crate::orpo_run::OrpoRun;
use crate::pref_run::{COMMON_RESUME_SETTINGS, Common, load_rows, row_error, start_any};
use crate::seq2seq_pref::{Seq2SeqPairBatch, train_cpo_seq2seq, train_orpo_seq2seq};

/// TRL's `max_completion_length` for encoder-decoders when unset (ORPO and CPO alike).
pub const SEQ2SEQ_MAX_COMPLETION_LENGTH: usize = 128;

/// What an encoder-decoder ORPO or CPO run did.
#[derive(Debug)]
pub struct Seq2SeqPreferenceOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// Where the result went: `out/adapter` (HF PEFT layout, task `SEQ_2_SEQ_LM`) or, with
    /// `full`, `out/model`.
    pub saved: PathBuf,
    /// The trained model (with its adapter).
    pub model: PeftModel<Seq2SeqLm>,
}

/// An error when `model_dir` holds an encoder-decoder: the runs of `job` (`dpo`, `kto`,
/// `reward`; `orpo` and `cpo` in their decoder `run`) refuse encoder-decoders before any work,
/// naming what to use instead.
pub(crate) fn check_decoder_dir(model_dir: &Path, job: &str) -> tilpass_train::Result<()> {
    if !is_encoder_decoder(model_dir).unwrap_or(false) {
        return Ok(());
    }
    let expected = match job {
        "orpo" | "cpo" => format!(
            "a decoder-only model for the decoder {job} run; this is an encoder-decoder: use \
             `run_seq2seq` (`tilpass train {job}` chooses by itself)"
        ),
        "reward" => "a decoder or an encoder (BERT, NorBERT3): TRL 1.16 does not support \
                     encoder-decoders in DPO/KTO/Reward (`reward`); use orpo or cpo"
            .to_string(),
        _ => format!(
            "a decoder-only model: TRL 1.16 does not support encoder-decoders in DPO/KTO/Reward \
             (`{job}`); use orpo or cpo"
        ),
    };
    Err(TrainError::setting("model", model_dir.display(), expected))
}

/// The encoder-decoder batches of `spec` as [`OrpoRun::run_seq2seq`] and
/// [`CpoRun::run_seq2seq`] encode them (see the module doc), `batch_size` pairs each in the
/// data's order, with the model's `pad` id and `decoder_start` token. Rows that are not text
/// preference rows, and empty answers, are errors naming `file:line`.
pub fn seq2seq_pair_batches(
    tok: &Tokenizer,
    spec: &DatasetSpec,
    batch_size: usize,
    pad: u32,
    decoder_start: u32,
    progress: &mut dyn FnMut(Event),
) -> Result<Vec<Seq2SeqPairBatch>> {
    let (records, at) = load_rows(spec)?;
    let mut rows: Vec<[Vec<u32>; 3]> = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let texts = match r.with_explicit_prompt() {
            Record::Preference {
                prompt: Some(Content::Text(p)),
                chosen: Content::Text(c),
                rejected: Content::Text(j),
            } => [p, c, j],
            Record::Preference { .. } => {
                return Err(row_error(
                    &at[i],
                    "a text row (`prompt`, `chosen`, `rejected` strings) for an encoder-decoder: \
                     conversational rows need a chat template, which TRL applies and T5 / NorT5 \
                     tokenizers lack"
                        .into(),
                )
                .into());
            }
            other => {
                return Err(row_error(
                    &at[i],
                    format!(
                        "a preference row with `chosen` and `rejected` (and `prompt`), found a {} \
                         row",
                        other.kind().as_str()
                    ),
                )
                .into());
            }
        };
        let mut ids: [Vec<u32>; 3] = Default::default();
        for (k, (text, side)) in texts
            .iter()
            .zip(["prompt", "chosen", "rejected"])
            .enumerate()
        {
            let mut t = tok.encode(text, true).map_err(TrainError::from)?;
            if k > 0 {
                t.truncate(SEQ2SEQ_MAX_COMPLETION_LENGTH);
            }
            if t.is_empty() || (k > 0 && text.trim().is_empty()) {
                return Err(row_error(
                    &at[i],
                    format!("a non-empty `{side}` (this row's is empty)"),
                )
                .into());
            }
            ids[k] = t;
        }
        rows.push(ids);
    }
    progress(Event::Detail(&format!(
        "{spec}: {} pairs for the encoder-decoder (answers truncated to {} tokens)",
        rows.len(),
        SEQ2SEQ_MAX_COMPLETION_LENGTH
    )));
    if rows.is_empty() {
        return Err(TrainError::setting("data", spec, "at least one preference pair").into());
    }
    rows.chunks(batch_size)
        .map(|c| {
            let col = |k: usize| c.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
            Seq2SeqPairBatch::new(&col(0), &col(1), &col(2), pad, decoder_start)
        })
        .collect()
}

/// A trainer of an encoder-decoder on preference batches (the run's loss bound in).
type TrainSeq2SeqFn<'a> = &'a mut dyn FnMut(
    &mut PeftModel<Seq2SeqLm>,
    Target<'static>,
    &[Seq2SeqPairBatch],
    &TrainConfig,
    &mut dyn FnMut(Event),
) -> Result<Summary>;

/// The shared steps of an encoder-decoder preference run around `train`.
fn run_seq2seq_pref<R: RunConfig>(
    run: &R,
    common: &Common<'_>,
    resume_settings: &[&str],
    device: &Device,
    progress: &mut dyn FnMut(Event),
    train: TrainSeq2SeqFn<'_>,
) -> Result<Seq2SeqPreferenceOutcome> {
    if let Some(spec) = common.eval_data {
        return Err(TrainError::setting(
            "eval_data",
            spec,
            "none: encoder-decoder ORPO / CPO runs do not evaluate yet",
        )
        .into());
    }
    let started = start_any(run, common, resume_settings, device)?;
    if !is_encoder_decoder(&started.model_dir).unwrap_or(false) {
        return Err(TrainError::setting(
            "model",
            started.model_dir.display(),
            "an encoder-decoder (T5, mT5, NorT5) for `run_seq2seq`; use `run` for decoders",
        )
        .into());
    }
    let base = Seq2SeqLm::load(&started.model_dir, &started.device)?;
    let (pad, decoder_start) = (base.pad_token_id(), base.decoder_start_token_id());
    let batches = seq2seq_pair_batches(
        &started.tokenizer,
        &started.data,
        common.batch_size,
        pad,
        decoder_start,
        progress,
    )?;
    let mut peft = PeftModel::new(base);
    if common.full {
        let note = format!("full fine-tuning: {} parameters", peft.parameter_count());
        progress(Event::Message(&note));
    } else {
        if let Some(dir) = common.resume {
            peft.load_adapter(dir, "default")?;
        } else {
            let mut cfg = common.lora.clone();
            cfg.task_type = Some("SEQ_2_SEQ_LM".into());
            cfg.base_model_name_or_path
                .get_or_insert_with(|| started.model_dir.display().to_string());
            peft.add_adapter("default", &cfg, common.seed)?;
        }
        peft.freeze_base();
        progress(Event::Message(&peft.trainable_parameters().to_string()));
    }
    let target = if common.full {
        Target::Full
    } else {
        Target::Adapter("default")
    };
    let summary = train(
        &mut peft,
        target,
        &batches,
        &common.train_config(),
        progress,
    )?;
    let saved = if common.full {
        let dir = started.out.join("model");
        let base_config = tilpass_core::ModelDir::open(&started.model_dir)
            .map_err(TrainError::from)?
            .config_json()
            .clone();
        peft.save(&dir, tilpass_core::SaveDtype::F32, Some(&base_config))?;
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "spiece.model",
            "generation_config.json",
        ] {
            let src = started.model_dir.join(f);
            if src.is_file() {
                std::fs::copy(&src, dir.join(f))
                    .map_err(|e| TrainError::from(tilpass_core::Error::io(&src, e)))?;
            }
        }
        dir
    } else {
        let dir = started.out.join("adapter");
        peft.save_adapter("default", &dir)?;
        dir
    };
    drop(started.fresh);
    Ok(Seq2SeqPreferenceOutcome {
        summary,
        saved,
        model: peft,
    })
}

impl OrpoRun {
    /// [`OrpoRun::run`] for an encoder-decoder model directory: checks the settings, writes
    /// `out/run_config.json`, encodes the data as TRL's ORPO does for encoder-decoders (see the
    /// module doc), trains a LoRA adapter (PEFT task `SEQ_2_SEQ_LM`) or every weight with
    /// [`train_orpo_seq2seq`], and saves it (`out/adapter`, or `out/model` in HF layout).
    pub fn run_seq2seq(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Seq2SeqPreferenceOutcome> {
        let mut resume = COMMON_RESUME_SETTINGS.to_vec();
        resume.push("beta");
        let config = self.orpo_config();
        config.validate()?;
        let resume_dir = self.resume.clone();
        run_seq2seq_pref(
            self,
            &self.common(),
            &resume,
            device,
            progress,
            &mut |m, target, batches, cfg, on_event| {
                train_orpo_seq2seq(
                    m,
                    target,
                    &config,
                    batches,
                    cfg,
                    resume_dir.as_deref(),
                    on_event,
                )
            },
        )
    }
}

impl CpoRun {
    /// [`CpoRun::run`] for an encoder-decoder model directory; see [`OrpoRun::run_seq2seq`]
    /// (trains with [`train_cpo_seq2seq`]).
    pub fn run_seq2seq(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Seq2SeqPreferenceOutcome> {
        let mut resume = COMMON_RESUME_SETTINGS.to_vec();
        resume.extend([
            "beta",
            "loss_type",
            "label_smoothing",
            "cpo_alpha",
            "simpo_gamma",
            "alpha",
        ]);
        let config = self.cpo_config();
        config.validate()?;
        let resume_dir = self.resume.clone();
        run_seq2seq_pref(
            self,
            &self.common(),
            &resume,
            device,
            progress,
            &mut |m, target, batches, cfg, on_event| {
                train_cpo_seq2seq(
                    m,
                    target,
                    &config,
                    batches,
                    cfg,
                    resume_dir.as_deref(),
                    on_event,
                )
            },
        )
    }
}
