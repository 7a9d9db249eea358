//! What the reference-free paired trainers (ORPO, CPO/SimPO) share: one forward pass of the
//! policy over a [`DpoBatch`] (`[all chosen; all rejected]`, `[2·pairs, seq]`) giving the
//! per-token completion log-probs of each half and the logits (for the NLL term and TRL's
//! `logits/*` metrics), and the training loop around a per-batch loss.
//!
//! TRL's `ORPOTrainer` and `CPOTrainer` (trl.experimental, 1.16.0) run the concatenated batch
//! once (`concatenated_forward`); so does this. Evaluation runs the same loss on held-out
//! batches ([`mean_evaluation`], TRL's `prediction_step` + `log` with the `eval_` prefix).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Tensor;
use tilpass_models::{DecoderLm, shifted_log_probs};
use tilpass_peft::PeftModel;
use tilpass_train::{BatchLoss, Event, Summary, Target, TrainConfig, train_loop_with};

use crate::dpo_trainer::{DpoBatch, DpoBatchOutput, DpoEval, from_train, into_train};
use crate::error::{PreferenceError, Result};
use crate::logps::{TokenLogps, constant_2d, host};

/// The policy's outputs on one paired batch.
pub(crate) struct PairedForward {
    /// Per-token completion log-probs of the chosen rows, `[pairs, seq - 1]` (shifted).
    pub chosen: TokenLogps,
    /// The same for the rejected rows.
    pub rejected: TokenLogps,
    /// The logits, `[2·pairs, seq, vocab]`, differentiable.
    pub logits: Tensor<3>,
}

/// Runs `model` once on `batch`.
pub(crate) fn paired_forward(model: &DecoderLm, batch: &DpoBatch) -> Result<PairedForward> {
    let (rows, seq, pairs) = (batch.input.batch, batch.input.seq, batch.pairs);
    let logits = model.forward(&batch.input, None)?;
    let (device, dtype) = (logits.device(), logits.dtype());
    let (lp, mask) = shifted_log_probs(logits.clone(), &batch.labels())?;
    let mask: Vec<f64> = mask.iter().map(|&m| f64::from(u8::from(m))).collect();
    let half = pairs * (seq - 1);
    let side = |r: std::ops::Range<usize>, m: &[f64]| {
        TokenLogps::new(
            lp.clone().slice([r, 0..seq - 1]),
            constant_2d(m.to_vec(), [pairs, seq - 1], &device, dtype),
        )
    };
    Ok(PairedForward {
        chosen: side(0..pairs, &mask[..half]),
        rejected: side(pairs..rows, &mask[half..]),
        logits,
    })
}

/// Per-token log-probs of the chosen rows for the labels `labels` (`[pairs, seq]`, -100 where
/// not scored), `[pairs, seq - 1]`: the tokens of TRL's `cross_entropy_loss` NLL term.
pub(crate) fn chosen_token_logps(
    logits: &Tensor<3>,
    labels: &[i64],
    pairs: usize,
) -> Result<TokenLogps> {
    let [_, seq, vocab] = logits.dims();
    let chosen = logits.clone().slice([0..pairs, 0..seq, 0..vocab]);
    let (device, dtype) = (chosen.device(), chosen.dtype());
    let (lp, mask) = shifted_log_probs(chosen, labels)?;
    let mask: Vec<f64> = mask.iter().map(|&m| f64::from(u8::from(m))).collect();
    Ok(TokenLogps::new(
        lp,
        constant_2d(mask, [pairs, seq - 1], &device, dtype),
    ))
}

/// The mean of every logit of rows `rows` (all positions but the last with `shifted`, every
/// vocabulary entry, padding included), as TRL's `policy_chosen_logits.detach().mean()`.
pub(crate) fn logits_mean(
    logits: &Tensor<3>,
    rows: std::ops::Range<usize>,
    shifted: bool,
) -> Result<f64> {
    let [_, seq, vocab] = logits.dims();
    let end = if shifted { seq - 1 } else { seq };
    let part = logits.clone().detach().slice([rows, 0..end, 0..vocab]);
    Ok(host(&part.mean(), "logits")?[0])
}

/// Checks of the evaluation settings shared by the preference trainers: `eval_steps` needs
/// evaluation batches, `early_stopping_patience` needs `eval_steps` (as
/// [`crate::dpo_trainer::train_dpo`]).
pub(crate) fn check_eval_settings(cfg: &TrainConfig, eval_batches: usize) -> Result<()> {
    if cfg.eval_steps.is_some() && eval_batches == 0 {
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
    Ok(())
}

/// Checks shared by the reference-free trainers before training: the evaluation settings
/// ([`check_eval_settings`]) and at least one training batch.
pub(crate) fn check_training(
    cfg: &TrainConfig,
    train: &[DpoBatch],
    eval: &[DpoBatch],
) -> Result<()> {
    cfg.validate()?;
    check_eval_settings(cfg, eval.len())?;
    if train.is_empty() {
        return Err(PreferenceError::Shape {
            input: "preference batches",
            got: "none".into(),
            expected: "at least one batch".into(),
        });
    }
    Ok(())
}

/// An evaluation over `batches` with `loss_of` as the per-batch loss, as at `step`: the mean
/// loss over the batches (`eval_loss`) and each metric with TRL's `eval_` prefix, the mean over
/// the batches that logged it (TRL's `log` averages the values its `prediction_step` stored;
/// KTO logs `rewards/chosen` only for batches with desirable rows). Each batch's graph is
/// dropped after its values are read.
pub(crate) fn mean_evaluation<B>(
    batches: &[B],
    step: usize,
    loss_of: &mut dyn FnMut(&B) -> Result<DpoBatchOutput>,
) -> Result<DpoEval> {
    if batches.is_empty() {
        return Err(PreferenceError::Shape {
            input: "evaluation batches",
            got: "none".into(),
            expected: "at least one batch".into(),
        });
    }
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut loss = 0f64;
    for b in batches {
        let out = loss_of(b)?;
        loss += host(&out.loss.detach(), "evaluation loss")?[0];
        for (k, v) in out.metrics {
            let e = sums.entry(format!("eval_{k}")).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    Ok(DpoEval {
        step,
        eval_loss: loss / batches.len() as f64,
        metrics: sums
            .into_iter()
            .map(|(k, (v, n))| (k, v / n as f64))
            .collect(),
    })
}

/// Runs `tilpass-train`'s loop with `loss_of(model, batch)` as the per-batch loss (no
/// reference model), evaluating on `eval` every `cfg.eval_steps` steps with the same loss
/// ([`mean_evaluation`]; early stopping on `eval_loss`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_paired<'t>(
    model: &mut PeftModel<DecoderLm>,
    target: Target<'t>,
    train: &[DpoBatch],
    eval: &[DpoBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
    loss_of: &dyn Fn(&DecoderLm, &DpoBatch) -> Result<DpoBatchOutput>,
) -> Result<Summary> {
    let tokens: Vec<usize> = train.iter().map(|b| b.input.input_ids.len()).collect();
    train_loop_with(
        model,
        target,
        &tokens,
        &mut |m: &mut PeftModel<DecoderLm>, i| {
            let out = loss_of(m, &train[i]).map_err(into_train)?;
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
            let e = mean_evaluation(eval, step, &mut |b| loss_of(m, b)).map_err(into_train)?;
            Ok(Some(e.to_eval_log()))
        },
        cfg,
        resume,
        on_event,
    )
    .map_err(from_train)
}
