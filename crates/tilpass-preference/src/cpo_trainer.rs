//! The CPO / SimPO / AlphaPO trainer (TRL 1.16.0's `trl.experimental.cpo.CPOTrainer`) on
//! `tilpass-train`'s shared loop: no reference model; per-sequence completion log-probs of the
//! chosen and rejected rows of a [`DpoBatch`] — summed for `sigmoid` / `hinge`, averaged for
//! `ipo` / `simpo` ([`CpoLossType::uses_average_logps`]) — the NLL term, [`cpo_loss`], and
//! TRL's logged metrics.
//!
//! As TRL (`concatenated_forward`):
//! - the NLL term (`cpo_alpha` > 0) is the token-mean cross-entropy over the chosen
//!   **completion** tokens (the batch's labels); with `cpo_alpha` 0 it is not computed and
//!   `nll_loss` logs 0;
//! - `logits/chosen` / `logits/rejected` are the plain means of the whole logits tensor of each
//!   half (`all_logits[:n].mean()`: every position including the last, padding and prompt,
//!   every vocabulary entry);
//! - logged per batch: `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`,
//!   `rewards/margins`, `logps/chosen`, `logps/rejected`, `logits/chosen`, `logits/rejected`,
//!   `nll_loss`, each the mean over a step's accumulated batches.
//!
//! [`CpoLossType::uses_average_logps`]: crate::cpo::CpoLossType::uses_average_logps

use std::path::Path;

use tilpass_models::DecoderLm;
use tilpass_peft::PeftModel;
use tilpass_train::{Event, Summary, Target, TrainConfig};

use crate::cpo::{CpoConfig, CpoInputs, cpo_loss};
use crate::dpo_trainer::{DpoBatch, DpoBatchOutput, DpoEval};
use crate::error::Result;
use crate::logps::{average_logps, sequence_logps, sft_nll};
use crate::paired_policy::{
    check_training, logits_mean, mean_evaluation, paired_forward, train_paired,
};

/// TRL's CPO loss of one batch for `model` and the metrics TRL logs for it.
pub fn cpo_batch_loss(
    model: &DecoderLm,
    config: &CpoConfig,
    batch: &DpoBatch,
) -> Result<DpoBatchOutput> {
    config.validate()?;
    let pairs = batch.pairs;
    let out = paired_forward(model, batch)?;
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
    metrics.push(("logits/chosen", logits_mean(&out.logits, 0..pairs, false)?));
    metrics.push((
        "logits/rejected",
        logits_mean(&out.logits, pairs..2 * pairs, false)?,
    ));
    Ok(DpoBatchOutput {
        loss: loss.loss,
        metrics,
        completion_tokens: batch.completion_tokens(),
    })
}

/// Evaluates `model` with TRL's CPO loss on `batches` (no optimiser step), as at `step`:
/// `eval_loss` (the mean batch loss) and TRL's metrics with the `eval_` prefix, each the mean
/// over the batches (TRL's `prediction_step` / `log`).
pub fn evaluate_cpo(
    model: &DecoderLm,
    config: &CpoConfig,
    batches: &[DpoBatch],
    step: usize,
) -> Result<DpoEval> {
    mean_evaluation(batches, step, &mut |b| cpo_batch_loss(model, config, b))
}

/// Trains `target` of `model` with TRL's CPO loss (`loss_type` sigmoid, hinge, ipo or simpo;
/// AlphaPO with `alpha` != 0) on `train`, evaluating on `eval` every `cfg.eval_steps` steps
/// ([`evaluate_cpo`]); see [`crate::orpo_trainer::train_orpo`] for the loop and the checks.
#[allow(clippy::too_many_arguments)]
pub fn train_cpo<'t>(
    model: &mut PeftModel<DecoderLm>,
    target: impl Into<Target<'t>>,
    config: &CpoConfig,
    train: &[DpoBatch],
    eval: &[DpoBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    config.validate()?;
    check_training(cfg, train, eval)?;
    train_paired(
        model,
        target.into(),
        train,
        eval,
        cfg,
        resume,
        on_event,
        &|m, b| cpo_batch_loss(m, config, b),
    )
}
