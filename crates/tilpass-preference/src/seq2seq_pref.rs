//! ORPO and CPO/SimPO for encoder-decoders (T5, T5.1.1, mT5, NorT5), as TRL 1.16.0's
//! `trl.experimental` `ORPOTrainer` and `CPOTrainer` do when `model.config.is_encoder_decoder`:
//! the prompt goes to the encoder, the answers are the decoder's labels.
//!
//! TRL's encoder-decoder path, step by step:
//! - tokenisation: prompt, chosen and rejected each with the tokenizer's special tokens (T5:
//!   EOS appended); the answers truncated to `max_completion_length`;
//! - collation ([`Seq2SeqPairBatch::new`]): the prompts right-padded with the pad id (mask 0)
//!   and repeated for both halves, `[2·pairs, src]`; the chosen and rejected labels
//!   right-padded with -100 to the longer of the two halves, `[all chosen; all rejected]`,
//!   `[2·pairs, tgt]`; the decoder input `_shift_right(labels)` (decoder start token first,
//!   -100 read as the pad id). No decoder attention mask (the decoder is causal; padding comes
//!   last);
//! - one forward pass over the concatenated batch; log-probs of the labels under the decoder's
//!   logits **without a shift** (`get_batch_logps(is_encoder_decoder=True)`);
//! - the NLL term: the token-mean cross-entropy over the chosen **labels** (ORPO always; CPO
//!   when `cpo_alpha` > 0) — for encoder-decoders ORPO's "full prompt and response" NLL is the
//!   answer only, the prompt being the encoder's;
//! - `logits/chosen` / `logits/rejected`: the plain means of the whole logits tensor of each
//!   half (every position, padding included, every vocabulary entry), for ORPO and CPO alike.
//!
//! The metrics are those of [`crate::orpo_trainer`] and [`crate::cpo_trainer`]; the loop is
//! `tilpass-train`'s ([`train_orpo_seq2seq`], [`train_cpo_seq2seq`]).

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use tilpass_models::{EncoderInput, HasLinears, Seq2SeqModel, seq2seq::forward_seq2seq};
use tilpass_peft::PeftModel;
use tilpass_train::{BatchLoss, Event, Summary, Target, TrainConfig, train_loop_with};

use crate::cpo::{CpoConfig, CpoInputs, cpo_loss};
use crate::dpo_trainer::{DpoBatchOutput, from_train, into_train};
use crate::error::{PreferenceError, Result};
use crate::logps::{TokenLogps, average_logps, constant_2d, sequence_logps, sft_nll};
use crate::orpo::{OrpoConfig, OrpoInputs, orpo_loss};
use crate::paired_policy::logits_mean;

/// The label value that is not scored (transformers' `-100`).
const IGNORE: i64 = -100;

/// One concatenated preference batch for an encoder-decoder, as TRL's `concatenated_inputs`
/// builds it: rows `[all chosen; all rejected]`.
#[derive(Debug, Clone)]
pub struct Seq2SeqPairBatch {
    /// Encoder input: each prompt twice (chosen half, then rejected half), right-padded with
    /// the pad id, `[2·pairs, src]`.
    pub input: EncoderInput,
    /// Decoder input: the labels shifted right with the decoder start token, -100 read as
    /// the pad id, `[2·pairs][tgt]`.
    pub decoder_input_ids: Vec<Vec<u32>>,
    /// Targets (the answers' tokens), -100 on padding, `[2·pairs * tgt]` row-major.
    pub labels: Vec<i64>,
    /// Chosen/rejected pairs.
    pub pairs: usize,
    /// Decoder positions, `tgt`.
    pub tgt: usize,
}

impl Seq2SeqPairBatch {
    /// Collates tokenised pairs as TRL does (see the module doc): `prompts[i]` (encoder ids),
    /// `chosen[i]` and `rejected[i]` (label ids, EOS included), `pad_id` and `decoder_start`
    /// the model's. Empty prompts or answers and unequal counts are errors.
    pub fn new(
        prompts: &[Vec<u32>],
        chosen: &[Vec<u32>],
        rejected: &[Vec<u32>],
        pad_id: u32,
        decoder_start: u32,
    ) -> Result<Self> {
        let pairs = prompts.len();
        if pairs == 0 || chosen.len() != pairs || rejected.len() != pairs {
            return Err(PreferenceError::Shape {
                input: "seq2seq preference rows",
                got: format!(
                    "{pairs} prompts, {} chosen, {} rejected",
                    chosen.len(),
                    rejected.len()
                ),
                expected: "at least one pair and as many prompts, chosen and rejected answers"
                    .into(),
            });
        }
        for (name, rows) in [
            ("prompt ids", prompts),
            ("chosen ids", chosen),
            ("rejected ids", rejected),
        ] {
            if let Some(i) = rows.iter().position(Vec::is_empty) {
                return Err(PreferenceError::BadValue {
                    input: name,
                    index: i,
                    value: 0.0,
                    expected: "at least one token in every row",
                });
            }
        }
        let src = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let tgt = chosen
            .iter()
            .chain(rejected)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            for p in prompts {
                ids.extend(p.iter().copied());
                ids.extend(std::iter::repeat_n(pad_id, src - p.len()));
                mask.extend(std::iter::repeat_n(1u8, p.len()));
                mask.extend(std::iter::repeat_n(0u8, src - p.len()));
            }
        }
        let mut labels = Vec::with_capacity(2 * pairs * tgt);
        let mut decoder_input_ids = Vec::with_capacity(2 * pairs);
        for row in chosen.iter().chain(rejected) {
            let start = labels.len();
            labels.extend(row.iter().map(|&t| i64::from(t)));
            labels.extend(std::iter::repeat_n(IGNORE, tgt - row.len()));
            let mut dec = vec![decoder_start];
            dec.extend(
                labels[start..start + tgt - 1]
                    .iter()
                    .map(|&l| if l == IGNORE { pad_id } else { l as u32 }),
            );
            decoder_input_ids.push(dec);
        }
        Ok(Self {
            input: EncoderInput {
                token_type_ids: vec![0; ids.len()],
                input_ids: ids,
                attention_mask: mask,
                batch: 2 * pairs,
                seq: src,
            },
            decoder_input_ids,
            labels,
            pairs,
            tgt,
        })
    }

    /// Scored answer tokens of both halves.
    pub fn completion_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }

    /// Encoder and decoder tokens (padding included).
    pub fn tokens(&self) -> usize {
        self.input.input_ids.len() + self.labels.len()
    }
}

/// The policy's outputs on one encoder-decoder paired batch.
struct Seq2SeqForward {
    /// Per-token log-probs of the chosen labels, `[pairs, tgt]` (no shift).
    chosen: TokenLogps,
    /// The same for the rejected labels.
    rejected: TokenLogps,
    /// The decoder's logits, `[2·pairs, tgt, vocab]`, differentiable.
    logits: Tensor<3>,
}

/// Runs `model` once on `batch` and takes the labels' log-probs.
fn forward_pairs(model: &dyn Seq2SeqModel, batch: &Seq2SeqPairBatch) -> Result<Seq2SeqForward> {
    let logits = forward_seq2seq(model, &batch.input, &batch.decoder_input_ids)?;
    let [rows, tgt, vocab] = logits.dims();
    if rows != 2 * batch.pairs || tgt != batch.tgt || batch.labels.len() != rows * tgt {
        return Err(PreferenceError::Shape {
            input: "seq2seq preference logits",
            got: format!("[{rows}, {tgt}, {vocab}] for {} labels", batch.labels.len()),
            expected: format!("[{}, {}, vocab]", 2 * batch.pairs, batch.tgt),
        });
    }
    if let Some(i) = batch
        .labels
        .iter()
        .position(|&l| l != IGNORE && (l < 0 || l >= vocab as i64))
    {
        return Err(PreferenceError::BadValue {
            input: "seq2seq preference labels",
            index: i,
            value: batch.labels[i] as f64,
            expected: "a token id below the vocabulary size, or -100",
        });
    }
    let (device, dtype) = (logits.device(), logits.dtype());
    let idx: Vec<i64> = batch.labels.iter().map(|&l| l.max(0)).collect();
    let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [rows, tgt, 1]), &device);
    let lp = burn::tensor::activation::log_softmax(logits.clone(), 2)
        .gather(2, idx)
        .reshape([rows, tgt]);
    let mask: Vec<f64> = batch
        .labels
        .iter()
        .map(|&l| if l == IGNORE { 0.0 } else { 1.0 })
        .collect();
    let (p, half) = (batch.pairs, batch.pairs * tgt);
    let side = |r: std::ops::Range<usize>, m: &[f64]| {
        TokenLogps::new(
            lp.clone().slice([r, 0..tgt]),
            constant_2d(m.to_vec(), [p, tgt], &device, dtype),
        )
    };
    Ok(Seq2SeqForward {
        chosen: side(0..p, &mask[..half]),
        rejected: side(p..rows, &mask[half..]),
        logits,
    })
}

/// The `logits/chosen` and `logits/rejected` metrics (whole tensor of each half).
fn logits_metrics(out: &Seq2SeqForward, pairs: usize) -> Result<[(&'static str, f64); 2]> {
    Ok([
        ("logits/chosen", logits_mean(&out.logits, 0..pairs, false)?),
        (
            "logits/rejected",
            logits_mean(&out.logits, pairs..2 * pairs, false)?,
        ),
    ])
}

/// TRL's ORPO loss of one encoder-decoder batch for `model` and the metrics TRL logs for it
/// (NLL over the chosen answers' tokens; average answer log-probs).
pub fn orpo_seq2seq_batch_loss(
    model: &dyn Seq2SeqModel,
    config: &OrpoConfig,
    batch: &Seq2SeqPairBatch,
) -> Result<DpoBatchOutput> {
    config.validate()?;
    let out = forward_pairs(model, batch)?;
    let inputs = OrpoInputs {
        chosen_logps: average_logps(&out.chosen)?,
        rejected_logps: average_logps(&out.rejected)?,
        nll_loss: sft_nll(&out.chosen)?,
    };
    let loss = orpo_loss(config, &inputs)?;
    let mut metrics = loss.metrics.entries();
    metrics.extend(logits_metrics(&out, batch.pairs)?);
    Ok(DpoBatchOutput {
        loss: loss.loss,
        metrics,
        completion_tokens: batch.completion_tokens(),
    })
}

/// TRL's CPO loss (sigmoid, hinge, ipo, simpo; AlphaPO) of one encoder-decoder batch for
/// `model` and the metrics TRL logs for it.
pub fn cpo_seq2seq_batch_loss(
    model: &dyn Seq2SeqModel,
    config: &CpoConfig,
    batch: &Seq2SeqPairBatch,
) -> Result<DpoBatchOutput> {
    config.validate()?;
    let out = forward_pairs(model, batch)?;
    let reduce = if config.loss_type.uses_average_logps() {
        average_logps
    } else {
        sequence_logps
    };
    let inputs = CpoInputs {
        chosen_logps: reduce(&out.chosen)?,
        rejected_logps: reduce(&out.rejected)?,
        nll_loss: if config.cpo_alpha == 0.0 {
            None
        } else {
            Some(sft_nll(&out.chosen)?)
        },
    };
    let loss = cpo_loss(config, &inputs)?;
    let mut metrics = loss.metrics.entries();
    metrics.extend(logits_metrics(&out, batch.pairs)?);
    Ok(DpoBatchOutput {
        loss: loss.loss,
        metrics,
        completion_tokens: batch.completion_tokens(),
    })
}

/// Checks before training: no evaluation settings (not supported yet), at least one batch,
/// an answer token in every row.
fn check_seq2seq_training(
    cfg: &TrainConfig,
    train: &[Seq2SeqPairBatch],
    trainer: &str,
) -> Result<()> {
    cfg.validate()?;
    if cfg.eval_steps.is_some() || cfg.early_stopping_patience.is_some() {
        return Err(PreferenceError::InvalidSetting {
            setting: "eval_steps",
            value: format!("{:?}", cfg.eval_steps),
            expected: format!("none: the encoder-decoder {trainer} trainer does not evaluate yet"),
        });
    }
    if train.is_empty() {
        return Err(PreferenceError::Shape {
            input: "seq2seq preference batches",
            got: "none".into(),
            expected: "at least one batch".into(),
        });
    }
    for (i, b) in train.iter().enumerate() {
        if let Some(r) = b
            .labels
            .chunks(b.tgt.max(1))
            .position(|row| row.iter().all(|&l| l == IGNORE))
        {
            return Err(PreferenceError::BadValue {
                input: "seq2seq preference labels",
                index: i,
                value: r as f64,
                expected: "at least one answer token in every row of every batch",
            });
        }
    }
    Ok(())
}

/// Runs `tilpass-train`'s loop with `loss_of(model, batch)` as the per-batch loss.
fn train_seq2seq_pairs<'t, M: HasLinears + Seq2SeqModel>(
    model: &mut PeftModel<M>,
    target: Target<'t>,
    train: &[Seq2SeqPairBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
    loss_of: &dyn Fn(&dyn Seq2SeqModel, &Seq2SeqPairBatch) -> Result<DpoBatchOutput>,
) -> Result<Summary> {
    let tokens: Vec<usize> = train.iter().map(Seq2SeqPairBatch::tokens).collect();
    train_loop_with(
        model,
        target,
        &tokens,
        &mut |m: &mut PeftModel<M>, i| {
            let base: &M = m;
            let out = loss_of(base, &train[i]).map_err(into_train)?;
            Ok(BatchLoss {
                loss: out.loss,
                items: out.completion_tokens,
                metrics: out
                    .metrics
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
        },
        &mut |_: &mut PeftModel<M>, _| Ok(None),
        cfg,
        resume,
        on_event,
    )
    .map_err(from_train)
}

/// Trains `target` of an encoder-decoder (a LoRA adapter, PEFT task `SEQ_2_SEQ_LM`, or
/// [`Target::Full`]) with TRL's ORPO loss on `train` (one optimiser step per
/// `gradient_accumulation_steps` batches, in order), on the shared loop (schedule, clipping,
/// checkpoints, resume, `metrics.jsonl`). Checks the settings before the first step;
/// evaluation settings are refused (not supported yet).
pub fn train_orpo_seq2seq<'t, M: HasLinears + Seq2SeqModel>(
    model: &mut PeftModel<M>,
    target: impl Into<Target<'t>>,
    config: &OrpoConfig,
    train: &[Seq2SeqPairBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    config.validate()?;
    check_seq2seq_training(cfg, train, "ORPO")?;
    train_seq2seq_pairs(
        model,
        target.into(),
        train,
        cfg,
        resume,
        on_event,
        &|m, b| orpo_seq2seq_batch_loss(m, config, b),
    )
}

/// [`train_orpo_seq2seq`] with TRL's CPO loss (`loss_type` sigmoid, hinge, ipo or simpo;
/// AlphaPO with `alpha` != 0).
pub fn train_cpo_seq2seq<'t, M: HasLinears + Seq2SeqModel>(
    model: &mut PeftModel<M>,
    target: impl Into<Target<'t>>,
    config: &CpoConfig,
    train: &[Seq2SeqPairBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    config.validate()?;
    check_seq2seq_training(cfg, train, "CPO")?;
    train_seq2seq_pairs(
        model,
        target.into(),
        train,
        cfg,
        resume,
        on_event,
        &|m, b| cpo_seq2seq_batch_loss(m, config, b),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collates_as_trl() {
        let b = Seq2SeqPairBatch::new(
            &[vec![5, 6, 1], vec![7, 1]],
            &[vec![8, 1], vec![9, 10, 11, 1]],
            &[vec![12, 13, 1], vec![14, 1]],
            0,
            0,
        )
        .unwrap();
        assert_eq!(b.input.input_ids, [5, 6, 1, 7, 1, 0, 5, 6, 1, 7, 1, 0]);
        assert_eq!(b.input.attention_mask, [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0]);
        assert_eq!(b.tgt, 4);
        assert_eq!(&b.labels[..4], &[8, 1, -100, -100]);
        assert_eq!(b.decoder_input_ids[0], [0, 8, 1, 0]);
        assert_eq!(b.decoder_input_ids[1], [0, 9, 10, 11]);
        assert_eq!(b.completion_tokens(), 11);
    }

    #[test]
    fn refuses_empty_answers() {
        let e = Seq2SeqPairBatch::new(&[vec![5, 1]], &[vec![]], &[vec![3, 1]], 0, 0);
        assert!(matches!(
            e,
            Err(PreferenceError::BadValue {
                input: "chosen ids",
                ..
            })
        ));
    }
}
