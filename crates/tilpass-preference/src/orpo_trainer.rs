//! The ORPO trainer (TRL 1.16.0's `trl.experimental.orpo.ORPOTrainer`) on `tilpass-train`'s
//! shared loop: no reference model; per-sequence **average** completion log-probs of the
//! chosen and rejected rows of a [`DpoBatch`], the NLL term, [`orpo_loss`], and TRL's logged
//! metrics.
//!
//! As TRL (`concatenated_forward`):
//! - the NLL term is the token-mean cross-entropy over the **whole chosen sequence, prompt
//!   included** (labels = the input ids wherever the attention mask is 1, shifted by one): TRL's
//!   comment "orpo chosen nll loss is computed over the full prompt and response";
//! - `logps/*` are the average completion log-probs (`get_batch_logps(average_log_prob=True)`);
//! - `logits/chosen` / `logits/rejected` are the plain means of the logits tensor of each half
//!   without its last position (`all_logits[:n, :-1, :].mean()`: every position, padding and
//!   prompt included, every vocabulary entry) — not DPO's completion-token means;
//! - logged per batch: `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`,
//!   `rewards/margins`, `logps/chosen`, `logps/rejected`, `logits/chosen`, `logits/rejected`,
//!   `nll_loss`, `log_odds_ratio`, `log_odds_chosen`, each the mean over a step's accumulated
//!   batches (TRL's `store_metrics` / `log`).

use std::path::Path;

use tilpass_models::DecoderLm;
use tilpass_peft::PeftModel;
use tilpass_train::{Event, Summary, Target, TrainConfig};

use crate::dpo_trainer::{DpoBatch, DpoBatchOutput, DpoEval};
use crate::error::Result;
use crate::logps::{average_logps, sft_nll};
use crate::orpo::{OrpoConfig, OrpoInputs, orpo_loss};
use crate::paired_policy::{
    check_training, chosen_token_logps, logits_mean, mean_evaluation, paired_forward, train_paired,
};

/// TRL's ORPO loss of one batch for `model` and the metrics TRL logs for it.
pub fn orpo_batch_loss(
    model: &DecoderLm,
    config: &OrpoConfig,
    batch: &DpoBatch,
) -> Result<DpoBatchOutput> {
    config.validate()?;
    let pairs = batch.pairs;
    let out = paired_forward(model, batch)?;
    // The NLL labels: every attended token of the chosen rows (prompt included).
    let seq = batch.input.seq;
    let labels: Vec<i64> = batch.input.input_ids[..pairs * seq]
        .iter()
        .zip(&batch.input.attention_mask[..pairs * seq])
        .map(|(&t, &m)| if m == 1 { i64::from(t) } else { -100 })
        .collect();
    let nll = sft_nll(&chosen_token_logps(&out.logits, &labels, pairs)?)?;
    let inputs = OrpoInputs {
        chosen_logps: average_logps(&out.chosen)?,
        rejected_logps: average_logps(&out.rejected)?,
        nll_loss: nll,
    };
    let loss = orpo_loss(config, &inputs)?;
    let mut metrics = loss.metrics.entries();
    metrics.push(("logits/chosen", logits_mean(&out.logits, 0..pairs, true)?));
    metrics.push((
        "logits/rejected",
        logits_mean(&out.logits, pairs..2 * pairs, true)?,
    ));
    Ok(DpoBatchOutput {
        loss: loss.loss,
        metrics,
        completion_tokens: batch.completion_tokens(),
    })
}

/// Evaluates `model` with TRL's ORPO loss on `batches` (no optimiser step), as at `step`:
/// `eval_loss` (the mean batch loss) and TRL's metrics with the `eval_` prefix, each the mean
/// over the batches (TRL's `prediction_step` / `log`).
pub fn evaluate_orpo(
    model: &DecoderLm,
    config: &OrpoConfig,
    batches: &[DpoBatch],
    step: usize,
) -> Result<DpoEval> {
    mean_evaluation(batches, step, &mut |b| orpo_batch_loss(model, config, b))
}

/// Trains `target` of `model` with TRL's ORPO loss on `train` (one optimiser step per
/// `gradient_accumulation_steps` batches, cycling through them in order); see
/// [`tilpass_train::train_lm`] for the loop (schedule, clipping, checkpoints, resume,
/// `metrics.jsonl`). No reference model: adapter and full fine-tuning alike. Every
/// `cfg.eval_steps` steps it evaluates on `eval` ([`evaluate_orpo`]: `eval_loss` and TRL's
/// `eval_`-prefixed metrics in `metrics.jsonl`, early stopping on `eval_loss`). Checks the
/// settings before the first step (evaluation batches when `eval_steps` is set).
#[allow(clippy::too_many_arguments)]
pub fn train_orpo<'t>(
    model: &mut PeftModel<DecoderLm>,
    target: impl Into<Target<'t>>,
    config: &OrpoConfig,
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
        &|m, b| orpo_batch_loss(m, config, b),
    )
}
