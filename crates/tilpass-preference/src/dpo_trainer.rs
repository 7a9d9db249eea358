//! The DPO trainer (TRL 1.16.0's `DPOTrainer`) on `tilpass-train`'s shared loop: per-sequence
//! completion log-probs of a decoder for collated preference batches, the policy against a
//! reference — the same [`PeftModel`] with its adapters disabled (LoRA: no second copy in
//! memory) or an explicit reference [`DecoderLm`] (full fine-tuning) — the [`dpo_loss`] of
//! [`crate::dpo`], and TRL's logged metrics.
//!
//! As TRL: a batch holds `pairs` chosen rows then `pairs` rejected rows (`[2·pairs, seq]`,
//! right-padded, [`tilpass_tokenize::collate_preference`]); labels are the input ids on
//! completion tokens and -100 elsewhere; the log-prob of a sequence is the sum of its shifted
//! per-token log-probs over completion tokens; the reference runs without gradients. The loop
//! ([`train_loop_with`]) brings gradient accumulation, clipping, the schedule, checkpoints with
//! exact resume and `metrics.jsonl`, where each step's line carries TRL's metric names:
//! `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`,
//! `logps/chosen`, `logps/rejected`, `logits/chosen`, `logits/rejected`, `entropy` and
//! `mean_token_accuracy` (each the mean over the step's accumulated batches, as TRL averages
//! over the `compute_loss` calls of a logging window with `logging_steps=1`). TRL's cumulative
//! `num_tokens` is not logged.
//!
//! Evaluation every `eval_steps` on held-out batches logs `eval_loss` and the same metrics with
//! TRL's `eval_` prefix. WPO (`use_weighting`) weights each pair by the policy's
//! length-normalised `exp(mean_t[log p_t - log sum_v p_v^2])` of both sides, computed from the
//! policy's logits without gradient, as TRL's fused head does. Reference log-probs may be
//! precomputed ([`precompute_reference`], TRL's `precompute_ref_log_probs`) and carried by the
//! batches ([`DpoBatch::reference`]); [`crate::ref_cache`] keeps them on disk.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use tilpass_models::{DecoderInput, DecoderLm, shifted_log_probs};
use tilpass_peft::PeftModel;
use tilpass_tokenize::PreferenceBatch;
use tilpass_train::{
    BatchLoss, EvalLog, Event, Summary, Target, TrainConfig, TrainError, train_loop_with,
};

use crate::dpo::{DpoConfig, DpoInputs, WpoTokens, dpo_loss};
use crate::error::{PreferenceError, Result};
use crate::logps::{
    TokenLogps, check_finite, constant, constant_2d, host, ld_alpha_logps, sequence_logps,
};

/// Precomputed reference log-probs of one batch's pairs (TRL's `ref_chosen_logps` /
/// `ref_rejected_logps` columns with `precompute_ref_log_probs`): per sequence, the sum over
/// completion tokens (LD-weighted with `ld_alpha`), `[pairs]` each, in the batch's order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RefLogps {
    /// The chosen completions', `[pairs]`.
    pub chosen: Vec<f64>,
    /// The rejected completions', `[pairs]`.
    pub rejected: Vec<f64>,
    /// The `ld_alpha` they were reduced with (a loss with another one refuses them).
    pub ld_alpha: Option<f64>,
}

/// One collated preference batch on the host, ready for the model: `pairs` chosen rows, then
/// `pairs` rejected rows, `[2·pairs, seq]` row-major.
#[derive(Debug, Clone)]
pub struct DpoBatch {
    /// The model input (ids, attention mask, positions `0..seq` in every row as transformers'
    /// default for right padding), `[2·pairs, seq]`.
    pub input: DecoderInput,
    /// 1 on completion tokens, 0 on prompt and padding, `[2·pairs, seq]`.
    pub completion_mask: Vec<u8>,
    /// Pairs (half the rows).
    pub pairs: usize,
    /// Precomputed reference log-probs of the pairs ([`DpoBatch::with_reference`]); `None`:
    /// the reference model runs on the batch at every use.
    pub reference: Option<RefLogps>,
}

impl DpoBatch {
    /// A batch from TRL's collated arrays (`input_ids`, `attention_mask`, `completion_mask`,
    /// each `[rows, seq]` row-major). Checks: an even, non-zero number of rows, `seq >= 2`,
    /// arrays of `rows·seq` values, 0/1 masks, completion tokens only where the attention mask
    /// is 1 and every row with at least one token.
    pub fn new(
        input_ids: Vec<u32>,
        attention_mask: Vec<u8>,
        completion_mask: Vec<u8>,
        rows: usize,
        seq: usize,
    ) -> Result<Self> {
        let shape = |got: String, expected: String| PreferenceError::Shape {
            input: "preference batch",
            got,
            expected,
        };
        if rows == 0 || !rows.is_multiple_of(2) {
            return Err(shape(
                format!("{rows} rows"),
                "an even, non-zero number of rows ([all chosen; all rejected])".into(),
            ));
        }
        if seq < 2 {
            return Err(shape(
                format!("sequences of {seq} tokens"),
                "at least 2 tokens per row (a prompt token and a completion token)".into(),
            ));
        }
        check_token_arrays(
            "input_ids",
            &input_ids,
            &attention_mask,
            &completion_mask,
            rows,
            seq,
        )?;
        if let Some(r) =
            (0..rows).find(|r| attention_mask[r * seq..(r + 1) * seq] == vec![0; seq][..])
        {
            return Err(PreferenceError::BadValue {
                input: "attention_mask",
                index: r * seq,
                value: 0.0,
                expected: "at least one token in every row",
            });
        }
        let position_ids = (0..rows).flat_map(|_| 0..seq as i64).collect();
        Ok(Self {
            input: DecoderInput {
                input_ids,
                attention_mask,
                position_ids,
                batch: rows,
                seq,
            },
            completion_mask,
            pairs: rows / 2,
            reference: None,
        })
    }

    /// The batch carrying precomputed reference log-probs: checks one finite value per pair
    /// on each side.
    pub fn with_reference(mut self, reference: RefLogps) -> Result<Self> {
        for (name, v) in [
            ("ref_chosen_logps", &reference.chosen),
            ("ref_rejected_logps", &reference.rejected),
        ] {
            if v.len() != self.pairs {
                return Err(PreferenceError::Shape {
                    input: name,
                    got: format!("[{}]", v.len()),
                    expected: format!("[{}] (one value per pair of the batch)", self.pairs),
                });
            }
            check_finite(name, v)?;
        }
        self.reference = Some(reference);
        Ok(self)
    }

    /// The batch of [`tilpass_tokenize::collate_preference`].
    pub fn from_collated(batch: &PreferenceBatch) -> Result<Self> {
        Self::new(
            batch.input_ids.clone(),
            batch.attention_mask.clone(),
            batch.completion_mask.clone(),
            batch.batch_size,
            batch.seq_len,
        )
    }

    /// Labels as TRL makes them: the ids on completion tokens, -100 elsewhere, `[rows, seq]`.
    pub fn labels(&self) -> Vec<i64> {
        self.input
            .input_ids
            .iter()
            .zip(&self.completion_mask)
            .map(|(&t, &m)| if m == 1 { i64::from(t) } else { -100 })
            .collect()
    }

    /// Completion tokens scored (the shifted mask's ones: every completion token but one in
    /// column 0, which has no context).
    pub fn completion_tokens(&self) -> usize {
        let seq = self.input.seq;
        self.completion_mask
            .iter()
            .enumerate()
            .filter(|(i, m)| **m == 1 && i % seq != 0)
            .count()
    }
}

/// The checks every collated batch of token rows shares: `ids` (named `ids_name`),
/// `attention_mask` and `completion_mask` of `rows·seq` values each, 0/1 masks, and completion
/// tokens only where the attention mask is 1.
pub(crate) fn check_token_arrays(
    ids_name: &'static str,
    ids: &[u32],
    attention_mask: &[u8],
    completion_mask: &[u8],
    rows: usize,
    seq: usize,
) -> Result<()> {
    let n = rows * seq;
    for (name, len) in [
        (ids_name, ids.len()),
        ("attention_mask", attention_mask.len()),
        ("completion_mask", completion_mask.len()),
    ] {
        if len != n {
            return Err(PreferenceError::Shape {
                input: name,
                got: format!("{len} values"),
                expected: format!("{rows}x{seq} = {n} values"),
            });
        }
    }
    for (name, m) in [
        ("attention_mask", attention_mask),
        ("completion_mask", completion_mask),
    ] {
        if let Some(i) = m.iter().position(|&x| x > 1) {
            return Err(PreferenceError::BadValue {
                input: name,
                index: i,
                value: f64::from(m[i]),
                expected: "0 or 1",
            });
        }
    }
    if let Some(i) = (0..n).find(|&i| completion_mask[i] == 1 && attention_mask[i] == 0) {
        return Err(PreferenceError::BadValue {
            input: "completion_mask",
            index: i,
            value: 1.0,
            expected: "completion tokens only where attention_mask is 1",
        });
    }
    Ok(())
}

/// Per-token completion log-probs of a batch, split into its chosen and rejected halves,
/// `[pairs, seq - 1]` each (shifted: entry `t` scores token `t + 1`).
#[derive(Debug, Clone)]
pub struct CompletionLogps {
    /// The chosen rows.
    pub chosen: TokenLogps,
    /// The rejected rows.
    pub rejected: TokenLogps,
}

/// The model-output metrics TRL's `DPOTrainer` logs (from the policy's logits, no gradient).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitMetrics {
    /// `logits/chosen`: mean over chosen completion tokens of the vocabulary-mean logit.
    pub logits_chosen: f64,
    /// `logits/rejected`: the same over rejected completion tokens.
    pub logits_rejected: f64,
    /// `entropy`: mean over all completion tokens of the predictive distribution's entropy.
    pub entropy: f64,
    /// `mean_token_accuracy`: share of chosen completion tokens that are the model's top-1.
    pub mean_token_accuracy: f64,
}

impl LogitMetrics {
    /// `(TRL name, value)` pairs.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("logits/chosen", self.logits_chosen),
            ("logits/rejected", self.logits_rejected),
            ("entropy", self.entropy),
            ("mean_token_accuracy", self.mean_token_accuracy),
        ]
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

/// Runs `model` on `batch` and returns the per-token completion log-probs (differentiable
/// w.r.t. the model's trainable parameters) and, with `with_metrics`, the logit metrics.
pub fn completion_logps(
    model: &DecoderLm,
    batch: &DpoBatch,
    with_metrics: bool,
) -> Result<(CompletionLogps, Option<LogitMetrics>)> {
    let (lp, metrics, _) = policy_outputs(model, batch, with_metrics, false)?;
    Ok((lp, metrics))
}

/// [`completion_logps`] that also returns, with `with_wpo`, WPO's per-token
/// `log sum_v p_v^2` of the chosen and rejected rows (`[pairs, seq - 1]` each, shifted like
/// the log-probs, no gradient).
pub fn policy_outputs(
    model: &DecoderLm,
    batch: &DpoBatch,
    with_metrics: bool,
    with_wpo: bool,
) -> Result<(CompletionLogps, Option<LogitMetrics>, Option<WpoTokens>)> {
    let (rows, seq, pairs) = (batch.input.batch, batch.input.seq, batch.pairs);
    let labels = batch.labels();
    let logits = model.forward(&batch.input, None)?;
    let device = logits.device();
    let dtype = logits.dtype();
    let metrics = if with_metrics {
        Some(logit_metrics(logits.clone().detach(), &labels, pairs)?)
    } else {
        None
    };
    let wpo = if with_wpo {
        let [_, _, vocab] = logits.dims();
        let shifted = logits
            .clone()
            .detach()
            .slice([0..rows, 0..seq - 1, 0..vocab]);
        // log sum_v p_v^2 = log sum_v e^{2(z_v - m)} - 2 log sum_v e^{z_v - m}, m = max_v z_v
        // (TRL's fused head computes it so).
        let z = shifted.clone().sub(shifted.max_dim(2));
        let lssp = z
            .clone()
            .mul_scalar(2.0)
            .exp()
            .sum_dim(2)
            .log()
            .sub(z.exp().sum_dim(2).log().mul_scalar(2.0))
            .reshape([rows, seq - 1]);
        Some(WpoTokens {
            chosen_log_sum_sq: lssp.clone().slice([0..pairs, 0..seq - 1]),
            rejected_log_sum_sq: lssp.slice([pairs..rows, 0..seq - 1]),
        })
    } else {
        None
    };
    let (lp, mask) = shifted_log_probs(logits, &labels)?;
    let mask: Vec<f64> = mask.iter().map(|&m| f64::from(u8::from(m))).collect();
    let half = pairs * (seq - 1);
    let side = |r: std::ops::Range<usize>, m: &[f64]| {
        TokenLogps::new(
            lp.clone().slice([r, 0..seq - 1]),
            constant_2d(m.to_vec(), [pairs, seq - 1], &device, dtype),
        )
    };
    debug_assert_eq!(rows, 2 * pairs);
    Ok((
        CompletionLogps {
            chosen: side(0..pairs, &mask[..half]),
            rejected: side(pairs..rows, &mask[half..]),
        },
        metrics,
        wpo,
    ))
}

/// TRL's `logits/*`, `entropy` and `mean_token_accuracy` from `logits` (`[rows, seq, vocab]`,
/// detached) and the batch's labels.
fn logit_metrics(logits: Tensor<3>, labels: &[i64], pairs: usize) -> Result<LogitMetrics> {
    let [rows, seq, vocab] = logits.dims();
    let shifted = logits.slice([0..rows, 0..seq - 1, 0..vocab]);
    let mean_logits = host(&shifted.clone().mean_dim(2), "mean logits")?;
    let lp = log_softmax(shifted.clone(), 2);
    let entropy = host(&lp.clone().exp().mul(lp).sum_dim(2).neg(), "entropy")?;
    let top1: Vec<i64> =
        shifted
            .argmax(2)
            .try_into_vec_as::<i64>()
            .map_err(|e| PreferenceError::Read {
                input: "top-1 tokens",
                message: format!("{e:?}"),
            })?;
    let (mut logit_sum, mut logit_n) = ([0f64; 2], [0f64; 2]);
    let (mut ent_sum, mut ent_n, mut correct) = (0f64, 0f64, 0f64);
    for r in 0..rows {
        let side = usize::from(r >= pairs);
        for t in 0..seq - 1 {
            let label = labels[r * seq + t + 1];
            if label < 0 {
                continue;
            }
            let i = r * (seq - 1) + t;
            logit_sum[side] += mean_logits[i];
            logit_n[side] += 1.0;
            ent_sum += entropy[i];
            ent_n += 1.0;
            if side == 0 && top1[i] == label {
                correct += 1.0;
            }
        }
    }
    Ok(LogitMetrics {
        logits_chosen: ratio(logit_sum[0], logit_n[0]),
        logits_rejected: ratio(logit_sum[1], logit_n[1]),
        entropy: ratio(ent_sum, ent_n),
        mean_token_accuracy: ratio(correct, logit_n[0]),
    })
}

/// The reference model of a DPO run.
#[derive(Debug, Clone, Copy)]
pub enum DpoReference<'a> {
    /// The trained [`PeftModel`] itself with its adapters disabled (TRL's reference for a PEFT
    /// model without a `ref_model`): no second copy in memory. Only for adapter training.
    DisabledAdapters,
    /// An explicit reference model (full fine-tuning: a frozen copy of the starting weights,
    /// on the policy's device).
    Model(&'a DecoderLm),
    /// No reference model: every batch carries precomputed reference log-probs
    /// ([`DpoBatch::with_reference`], [`precompute_reference`]); TRL's full fine-tuning with
    /// `precompute_ref_log_probs`, which keeps no reference copy in memory.
    Precomputed,
}

/// The loss of one batch and what TRL logs for it.
#[derive(Debug, Clone)]
pub struct DpoBatchOutput {
    /// The DPO loss, `[1]`, differentiable w.r.t. the policy.
    pub loss: Tensor<1>,
    /// `(TRL name, value)` of every logged metric.
    pub metrics: Vec<(&'static str, f64)>,
    /// Completion tokens scored in the batch.
    pub completion_tokens: usize,
}

/// Reference log-probs for `batch` (no gradient).
fn reference_logps(
    model: &mut PeftModel<DecoderLm>,
    reference: DpoReference<'_>,
    batch: &DpoBatch,
) -> Result<CompletionLogps> {
    let (lp, _) = match reference {
        DpoReference::DisabledAdapters => {
            model.with_disabled(|m| completion_logps(m, batch, false))??
        }
        DpoReference::Model(r) => completion_logps(r, batch, false)?,
        DpoReference::Precomputed => return Err(missing_reference()),
    };
    let detach = |t: TokenLogps| TokenLogps::new(t.logps.detach(), t.mask);
    Ok(CompletionLogps {
        chosen: detach(lp.chosen),
        rejected: detach(lp.rejected),
    })
}

fn missing_reference() -> PreferenceError {
    PreferenceError::MissingInput {
        input: "ref_chosen_logps / ref_rejected_logps",
        needed_by: "a DPO run without a reference model (precomputed reference log-probs): \
                    every batch must carry them"
            .into(),
    }
}

/// The reference's per-sequence log-probs of `batch` as the loss uses them (summed, or
/// LD-weighted with `config.ld_alpha`), read back to the host: what
/// [`DpoBatch::with_reference`] takes.
pub fn reference_sequence_logps(
    model: &mut PeftModel<DecoderLm>,
    reference: DpoReference<'_>,
    config: &DpoConfig,
    batch: &DpoBatch,
) -> Result<RefLogps> {
    let lp = reference_logps(model, reference, batch)?;
    let (c, r) = match config.ld_alpha {
        None => (sequence_logps(&lp.chosen)?, sequence_logps(&lp.rejected)?),
        Some(a) => ld_alpha_logps(a, &lp.chosen, &lp.rejected)?,
    };
    let out = RefLogps {
        chosen: host(&c, "ref_chosen_logps")?,
        rejected: host(&r, "ref_rejected_logps")?,
        ld_alpha: config.ld_alpha,
    };
    check_finite("ref_chosen_logps", &out.chosen)?;
    check_finite("ref_rejected_logps", &out.rejected)?;
    Ok(out)
}

/// TRL's `precompute_ref_log_probs`: the reference's per-sequence log-probs of every batch,
/// computed once before training (in the batches' order), with `on_batch(done)` after each
/// batch (for a progress bar).
pub fn precompute_reference(
    model: &mut PeftModel<DecoderLm>,
    reference: DpoReference<'_>,
    config: &DpoConfig,
    batches: &[DpoBatch],
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<RefLogps>> {
    config.validate()?;
    let mut out = Vec::with_capacity(batches.len());
    for (i, b) in batches.iter().enumerate() {
        out.push(reference_sequence_logps(model, reference, config, b)?);
        on_batch(i + 1);
    }
    Ok(out)
}

/// TRL's DPO loss of one batch for `model` (the policy, as it is now) against `reference`,
/// with the metrics TRL logs. A batch that carries precomputed reference log-probs
/// ([`DpoBatch::reference`]) uses them instead of running the reference.
pub fn dpo_batch_loss(
    model: &mut PeftModel<DecoderLm>,
    reference: DpoReference<'_>,
    config: &DpoConfig,
    batch: &DpoBatch,
) -> Result<DpoBatchOutput> {
    check_trainer_config(config)?;
    let precomputed = match &batch.reference {
        Some(r) => {
            if r.ld_alpha != config.ld_alpha {
                return Err(PreferenceError::Incompatible {
                    setting: "ld_alpha",
                    other: "precompute_ref_log_probs",
                    reason: format!(
                        "the batch's reference log-probs were reduced with ld_alpha {:?}, the \
                         loss uses {:?}",
                        r.ld_alpha, config.ld_alpha
                    ),
                });
            }
            Some(r)
        }
        None => None,
    };
    let reference = match precomputed {
        Some(_) => None,
        None => Some(reference_logps(model, reference, batch)?),
    };
    let (policy, logit_metrics, wpo) = policy_outputs(model, batch, true, config.use_weighting)?;
    let (ref_c, ref_r) = match &reference {
        Some(r) => (&r.chosen, &r.rejected),
        // Placeholders with the policy's shapes; the precomputed values replace their sums.
        None => (&policy.chosen, &policy.rejected),
    };
    let mut inputs = DpoInputs::from_tokens(
        config,
        &policy.chosen,
        &policy.rejected,
        ref_c,
        ref_r,
        wpo.as_ref(),
    )?;
    if let Some(r) = precomputed {
        let (device, dtype) = (
            inputs.policy_chosen_logps.device(),
            inputs.policy_chosen_logps.dtype(),
        );
        inputs.ref_chosen_logps = constant(r.chosen.clone(), &device, dtype);
        inputs.ref_rejected_logps = constant(r.rejected.clone(), &device, dtype);
    }
    let out = dpo_loss(config, &inputs)?;
    let mut metrics = out.metrics.entries();
    if let Some(m) = logit_metrics {
        metrics.extend(m.entries());
    }
    Ok(DpoBatchOutput {
        loss: out.loss,
        metrics,
        completion_tokens: batch.completion_tokens(),
    })
}

/// An evaluation of DPO on held-out pairs: the loss and TRL's metrics, each the mean over the
/// batches (TRL's `evaluate` averages its per-batch metrics the same way).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DpoEval {
    /// Optimiser steps done when it was made (0: before training).
    pub step: usize,
    /// Mean DPO loss over the batches (TRL's `eval_loss`).
    pub eval_loss: f64,
    /// TRL's metric names with its `eval_` prefix (`eval_rewards/accuracies`, ...), means over
    /// the batches.
    #[serde(flatten)]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

impl DpoEval {
    /// A metric by TRL's name without the prefix (`rewards/accuracies`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(&format!("eval_{name}")).copied()
    }

    /// The training loop's evaluation record: `eval_loss`, its `perplexity` (exp of the loss,
    /// which the loop always carries) and the `eval_` metrics.
    pub fn to_eval_log(&self) -> EvalLog {
        EvalLog {
            step: self.step,
            eval_loss: self.eval_loss,
            perplexity: self.eval_loss.exp(),
            samples: Vec::new(),
            metrics: self.metrics.clone(),
        }
    }

    /// The evaluation of a training-loop record made by [`DpoEval::to_eval_log`].
    pub fn from_eval_log(log: &EvalLog) -> Self {
        Self {
            step: log.step,
            eval_loss: log.eval_loss,
            metrics: log.metrics.clone(),
        }
    }
}

/// Evaluates `model` on `batches` against `reference` (no optimiser step; the graph of each
/// batch is dropped after reading its values), as at `step`.
pub fn evaluate_dpo(
    model: &mut PeftModel<DecoderLm>,
    reference: DpoReference<'_>,
    config: &DpoConfig,
    batches: &[DpoBatch],
    step: usize,
) -> Result<DpoEval> {
    if batches.is_empty() {
        return Err(PreferenceError::Shape {
            input: "evaluation batches",
            got: "none".into(),
            expected: "at least one batch".into(),
        });
    }
    let mut sums: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let mut loss = 0f64;
    for b in batches {
        let out = dpo_batch_loss(model, reference, config, b)?;
        loss += host(&out.loss.detach(), "evaluation loss")?[0];
        for (k, v) in out.metrics {
            *sums.entry(format!("eval_{k}")).or_default() += v;
        }
    }
    let n = batches.len() as f64;
    Ok(DpoEval {
        step,
        eval_loss: loss / n,
        metrics: sums.into_iter().map(|(k, v)| (k, v / n)).collect(),
    })
}

/// The loss settings (TRL's checks).
fn check_trainer_config(config: &DpoConfig) -> Result<()> {
    config.validate()
}

/// A preference error carried through the training loop's error type (recovered by
/// [`from_train`]).
pub(crate) fn into_train(e: PreferenceError) -> TrainError {
    match e {
        PreferenceError::Train(t) => t,
        other => TrainError::Core(tilpass_core::Error::Component(Box::new(other))),
    }
}

/// Undoes [`into_train`].
pub(crate) fn from_train(e: TrainError) -> PreferenceError {
    match e {
        TrainError::Core(tilpass_core::Error::Component(b)) => {
            match b.downcast::<PreferenceError>() {
                Ok(p) => *p,
                Err(b) => {
                    PreferenceError::Train(TrainError::Core(tilpass_core::Error::Component(b)))
                }
            }
        }
        other => PreferenceError::Train(other),
    }
}

/// Trains `target` of `model` with TRL's DPO loss on `train` (one optimiser step per
/// `gradient_accumulation_steps` batches, cycling through them in order), against
/// `reference`; see [`tilpass_train::train_lm`] for the loop (schedule, clipping,
/// checkpoints, resume, `metrics.jsonl`). Every `cfg.eval_steps` steps it evaluates on `eval`
/// ([`evaluate_dpo`]; `eval_loss` and TRL's `eval_`-prefixed metrics in `metrics.jsonl`,
/// early stopping on `eval_loss`). Checks the settings and every batch before the first
/// step: [`DpoReference::DisabledAdapters`] only with an adapter target (for full fine-tuning
/// it would be the policy itself), [`DpoReference::Precomputed`] only when every batch
/// carries its reference log-probs, evaluation batches when `eval_steps` is set.
#[allow(clippy::too_many_arguments)]
pub fn train_dpo<'t>(
    model: &mut PeftModel<DecoderLm>,
    target: impl Into<Target<'t>>,
    reference: DpoReference<'_>,
    config: &DpoConfig,
    train: &[DpoBatch],
    eval: &[DpoBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let target = target.into();
    check_trainer_config(config)?;
    cfg.validate()?;
    if target == Target::Full && matches!(reference, DpoReference::DisabledAdapters) {
        return Err(PreferenceError::Incompatible {
            setting: "reference",
            other: "target",
            reason: "full fine-tuning needs an explicit reference model: with the adapters \
                     disabled the reference would be the trained model itself"
                .into(),
        });
    }
    if cfg.eval_steps.is_some() && eval.is_empty() {
        return Err(PreferenceError::MissingInput {
            input: "evaluation batches",
            needed_by: format!("eval_steps = {:?}", cfg.eval_steps),
        });
    }
    if cfg.early_stopping_patience.is_some() && cfg.eval_steps.is_none() {
        return Err(PreferenceError::MissingInput {
            input: "eval_steps",
            needed_by: "early_stopping_patience (it counts evaluations)".into(),
        });
    }
    for (name, set) in [("preference batch", train), ("evaluation batch", eval)] {
        if let Some(i) = set.iter().position(|b| b.completion_tokens() == 0) {
            return Err(PreferenceError::BadValue {
                input: name,
                index: i,
                value: 0.0,
                expected: "at least one completion token in every batch",
            });
        }
        if matches!(reference, DpoReference::Precomputed)
            && set.iter().any(|b| b.reference.is_none())
        {
            return Err(missing_reference());
        }
        if let Some(b) = set.iter().find(|b| {
            b.reference
                .as_ref()
                .is_some_and(|r| r.ld_alpha != config.ld_alpha)
        }) {
            return Err(PreferenceError::Incompatible {
                setting: "ld_alpha",
                other: "precompute_ref_log_probs",
                reason: format!(
                    "the precomputed reference log-probs were reduced with ld_alpha {:?}, the \
                     loss uses {:?}",
                    b.reference.as_ref().and_then(|r| r.ld_alpha),
                    config.ld_alpha
                ),
            });
        }
    }
    let tokens: Vec<usize> = train.iter().map(|b| b.input.input_ids.len()).collect();
    train_loop_with(
        model,
        target,
        &tokens,
        &mut |m: &mut PeftModel<DecoderLm>, i| {
            let out = dpo_batch_loss(m, reference, config, &train[i]).map_err(into_train)?;
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
        &mut |m: &mut PeftModel<DecoderLm>, step| {
            if eval.is_empty() {
                return Ok(None);
            }
            let e = evaluate_dpo(m, reference, config, eval, step).map_err(into_train)?;
            Ok(Some(e.to_eval_log()))
        },
        cfg,
        resume,
        on_event,
    )
    .map_err(from_train)
}
