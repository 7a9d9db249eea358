//! The KTO trainer (TRL 1.16.0's `KTOTrainer`) on `tilpass-train`'s shared loop: unpaired rows
//! (prompt, completion, desirable or not), summed completion log-probs of the policy against a
//! reference — the same [`PeftModel`] with its adapters disabled (LoRA) or an explicit
//! reference [`DecoderLm`] (full fine-tuning) — the KL reference point from each batch's
//! rotated completions, [`kto_loss`] with the class weights, and TRL's logged metrics.
//!
//! As TRL (`_compute_loss`):
//! - a batch is `[rows, seq]`, right-padded (TRL's `DataCollatorForUnpairedPreference`), with a
//!   0/1 completion mask and a label per row; its KL batch pairs each prompt with the completion
//!   of the row before it in the batch (row 0 with the last row's: [`crate::kl_rotation`],
//!   TRL's `add_kl_completion_ids` per `per_device_train_batch_size` rows), collated alike;
//! - the log-prob of a sequence is the sum of its shifted per-token log-probs over completion
//!   tokens; the policy's KL log-probs are computed without gradient; z = mean over the batch of
//!   (policy − reference) KL log-probs, clamped at 0;
//! - logged per batch: `kl`, `rewards/chosen`, `logps/chosen` (when the batch has desirable
//!   rows), `rewards/rejected`, `logps/rejected` (undesirable rows), `rewards/margins` (both),
//!   `entropy` (mean predictive entropy over all completion tokens), `logits/chosen` /
//!   `logits/rejected` (mean over the side's completion tokens of the vocabulary-mean logit);
//!   each the mean over a step's batches that logged it. TRL's cumulative `num_tokens` is not
//!   logged (the step's `tokens` are).
//!
//! TRL refuses per-device batches of one example for the `kto` loss (the KL term would be the
//! implied reward) and warns when the class weights are outside the band of the KTO paper's
//! Eq. (8) for the data's balance ([`kto_weight_warning`]).

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use tilpass_models::{DecoderInput, DecoderLm, shifted_log_probs};
use tilpass_peft::PeftModel;
use tilpass_train::{BatchLoss, Event, Summary, Target, TrainConfig, train_loop_with};

use crate::dpo_trainer::{DpoBatchOutput, DpoEval, DpoReference, from_train, into_train};
use crate::error::{PreferenceError, Result};
use crate::kto::{KtoConfig, KtoInputs, kto_loss};
use crate::logps::host;
use crate::paired_policy::{check_eval_settings, mean_evaluation};

/// Token rows of a batch on the host: the model input and its completion mask.
#[derive(Debug, Clone)]
pub struct KtoRows {
    /// Ids, attention mask, positions `0..seq` in every row, `[rows, seq]`.
    pub input: DecoderInput,
    /// 1 on completion tokens, 0 on prompt and padding, `[rows, seq]`.
    pub completion_mask: Vec<u8>,
}

impl KtoRows {
    /// Checks and wraps collated arrays (`[rows, seq]` row-major each): `seq >= 2`, arrays of
    /// `rows·seq` values, 0/1 masks, completion tokens only where the attention mask is 1,
    /// at least one completion token in every row.
    fn new(
        name: &'static str,
        input_ids: Vec<u32>,
        attention_mask: Vec<u8>,
        completion_mask: Vec<u8>,
        rows: usize,
        seq: usize,
    ) -> Result<Self> {
        if rows == 0 || seq < 2 {
            return Err(PreferenceError::Shape {
                input: name,
                got: format!("{rows} rows of {seq} tokens"),
                expected: "at least one row of at least 2 tokens".into(),
            });
        }
        crate::dpo_trainer::check_token_arrays(
            name,
            &input_ids,
            &attention_mask,
            &completion_mask,
            rows,
            seq,
        )?;
        // A completion token in column 0 has no context and is not scored.
        if let Some(r) =
            (0..rows).find(|r| !completion_mask[r * seq + 1..(r + 1) * seq].contains(&1))
        {
            return Err(PreferenceError::BadValue {
                input: "completion_mask",
                index: r * seq,
                value: 0.0,
                expected: "at least one scored completion token in every row (an empty completion)",
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
        })
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
}

/// One collated KTO batch on the host.
#[derive(Debug, Clone)]
pub struct KtoBatch {
    /// The (prompt, completion) rows, `[rows, seq]`.
    pub rows: KtoRows,
    /// Desirable (`true`) or undesirable, one per row.
    pub labels: Vec<bool>,
    /// The KL rows (each prompt with the rotated completion), `[rows, kl_seq]`; needed by the
    /// `kto` loss, not by `apo_zero_unpaired`.
    pub kl: Option<KtoRows>,
}

impl KtoBatch {
    /// A batch from TRL's collated arrays (`input_ids`, `attention_mask`, `completion_mask`,
    /// `[rows, seq]` row-major, `rows` = `labels.len()`); see [`KtoBatch::with_kl`] for the KL
    /// rows.
    pub fn new(
        input_ids: Vec<u32>,
        attention_mask: Vec<u8>,
        completion_mask: Vec<u8>,
        labels: Vec<bool>,
        seq: usize,
    ) -> Result<Self> {
        let rows = KtoRows::new(
            "input_ids",
            input_ids,
            attention_mask,
            completion_mask,
            labels.len(),
            seq,
        )?;
        Ok(Self {
            rows,
            labels,
            kl: None,
        })
    }

    /// Adds the KL rows (TRL's `KL_input_ids`, `KL_attention_mask`, `KL_completion_mask`,
    /// `[rows, kl_seq]`, as many rows as the batch).
    pub fn with_kl(
        mut self,
        input_ids: Vec<u32>,
        attention_mask: Vec<u8>,
        completion_mask: Vec<u8>,
        seq: usize,
    ) -> Result<Self> {
        self.kl = Some(KtoRows::new(
            "KL_input_ids",
            input_ids,
            attention_mask,
            completion_mask,
            self.labels.len(),
            seq,
        )?);
        Ok(self)
    }

    /// Completion tokens scored in the batch (not counting the KL rows).
    pub fn completion_tokens(&self) -> usize {
        let seq = self.rows.input.seq;
        self.rows
            .completion_mask
            .iter()
            .enumerate()
            .filter(|(i, m)| **m == 1 && i % seq != 0)
            .count()
    }
}

/// TRL's warning about the class weights: with `n_desirable` != `n_undesirable` (each counted
/// at least 1, as TRL does), the text TRL logs when neither `desirable_weight` lies in
/// `[n_U·λ_U/n_D, 1.33·n_U·λ_U/n_D]` nor `undesirable_weight` in `[n_D·λ_D/n_U/1.33,
/// n_D·λ_D/n_U]` (bounds rounded to 2 decimals, as TRL; the KTO paper's Eq. (8)); `None`
/// otherwise.
pub fn kto_weight_warning(labels: &[bool], config: &KtoConfig) -> Option<String> {
    let n_d = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let n_u = (labels.len() as f64 - n_d).max(1.0);
    if n_d == n_u {
        return None;
    }
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let (wd, wu) = (config.desirable_weight, config.undesirable_weight);
    let d_lo = round2(n_u * wu / n_d);
    let d_hi = round2(n_u * wu / n_d * 1.33);
    let u_lo = round2(n_d * wd / n_u / 1.33);
    let u_hi = round2(n_d * wd / n_u);
    let ok = (d_lo..=d_hi).contains(&wd) || (u_lo..=u_hi).contains(&wu);
    (!ok).then(|| {
        format!(
            "{n_d} desirable and {n_u} undesirable examples, but desirable_weight {wd} and \
             undesirable_weight {wu} put λ_D·n_D / (λ_U·n_U) outside [1, 4/3] (KTO paper, \
             Eq. 8): set EITHER desirable_weight in [{d_lo}, {d_hi}] OR undesirable_weight in \
             [{u_lo}, {u_hi}]"
        )
    })
}

/// What the policy's logits give TRL's KTO metrics.
struct KtoLogitMetrics {
    entropy: f64,
    logits_chosen: Option<f64>,
    logits_rejected: Option<f64>,
}

/// Summed completion log-probs of `rows` under `model`, `[rows]` (with the graph), and, with
/// `labels`, TRL's entropy / logits metrics from the detached logits.
fn sequence_sums(
    model: &DecoderLm,
    rows: &KtoRows,
    labels: Option<&[bool]>,
) -> Result<(Tensor<1>, Option<KtoLogitMetrics>)> {
    let token_labels = rows.labels();
    let logits = model.forward(&rows.input, None)?;
    let metrics = match labels {
        Some(l) => Some(logit_metrics(logits.clone().detach(), &token_labels, l)?),
        None => None,
    };
    let (lp, _) = shifted_log_probs(logits, &token_labels)?;
    Ok((lp.sum_dim(1).squeeze_dim(1), metrics))
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// TRL's `entropy` and `logits/*` from `logits` (`[rows, seq, vocab]`, detached).
fn logit_metrics(logits: Tensor<3>, labels: &[i64], desirable: &[bool]) -> Result<KtoLogitMetrics> {
    let [rows, seq, vocab] = logits.dims();
    let shifted = logits.slice([0..rows, 0..seq - 1, 0..vocab]);
    let mean_logits = host(&shifted.clone().mean_dim(2), "mean logits")?;
    let lp = log_softmax(shifted, 2);
    let entropy = host(&lp.clone().exp().mul(lp).sum_dim(2).neg(), "entropy")?;
    let (mut logit_sum, mut logit_n) = ([0f64; 2], [0f64; 2]);
    let (mut ent_sum, mut ent_n) = (0f64, 0f64);
    for (r, &d) in desirable.iter().enumerate() {
        let side = usize::from(!d);
        for t in 0..seq - 1 {
            if labels[r * seq + t + 1] < 0 {
                continue;
            }
            let i = r * (seq - 1) + t;
            logit_sum[side] += mean_logits[i];
            logit_n[side] += 1.0;
            ent_sum += entropy[i];
            ent_n += 1.0;
        }
    }
    Ok(KtoLogitMetrics {
        entropy: ratio(ent_sum, ent_n).unwrap_or(0.0),
        logits_chosen: ratio(logit_sum[0], logit_n[0]),
        logits_rejected: ratio(logit_sum[1], logit_n[1]),
    })
}

/// KTO batches carry no reference log-probs (yet).
fn precomputed_unsupported() -> PreferenceError {
    PreferenceError::InvalidSetting {
        setting: "reference",
        value: "precomputed".into(),
        expected: "the model with its adapters disabled or an explicit reference model: the \
                   KTO trainer does not take precomputed reference log-probs yet"
            .into(),
    }
}

/// TRL's KTO loss of one batch for `model` (the policy, as it is now) against `reference`,
/// with the metrics TRL logs.
pub fn kto_batch_loss(
    model: &mut PeftModel<DecoderLm>,
    reference: DpoReference<'_>,
    config: &KtoConfig,
    batch: &KtoBatch,
) -> Result<DpoBatchOutput> {
    config.validate()?;
    let kl_rows = if config.uses_kl() {
        Some(batch.kl.as_ref().ok_or(PreferenceError::MissingInput {
            input: "KL rows",
            needed_by: "loss_type `kto` (the KL reference point)".into(),
        })?)
    } else {
        None
    };
    // The policy's KL log-probs, without gradient (TRL: `torch.no_grad()`).
    let kl_policy = match kl_rows {
        Some(k) => Some(sequence_sums(model, k, None)?.0.detach()),
        None => None,
    };
    let (policy, logit_metrics) = sequence_sums(model, &batch.rows, Some(&batch.labels))?;
    let reference_sums = |m: &DecoderLm| -> Result<(Tensor<1>, Option<Tensor<1>>)> {
        let kl = match kl_rows {
            Some(k) => Some(sequence_sums(m, k, None)?.0.detach()),
            None => None,
        };
        Ok((sequence_sums(m, &batch.rows, None)?.0.detach(), kl))
    };
    let (ref_logps, kl_ref) = match reference {
        DpoReference::DisabledAdapters => model.with_disabled(|m| reference_sums(m))??,
        DpoReference::Model(r) => reference_sums(r)?,
        DpoReference::Precomputed => return Err(precomputed_unsupported()),
    };
    let out = kto_loss(
        config,
        &KtoInputs {
            policy_logps: policy,
            ref_logps,
            labels: batch.labels.clone(),
            kl_policy_logps: kl_policy,
            kl_ref_logps: kl_ref,
        },
    )?;
    let mut metrics = out.metrics.entries();
    if let Some(m) = logit_metrics {
        metrics.push(("entropy", m.entropy));
        if let Some(v) = m.logits_chosen {
            metrics.push(("logits/chosen", v));
        }
        if let Some(v) = m.logits_rejected {
            metrics.push(("logits/rejected", v));
        }
    }
    Ok(DpoBatchOutput {
        loss: out.loss,
        metrics,
        completion_tokens: batch.completion_tokens(),
    })
}

/// Evaluates `model` with TRL's KTO loss on `batches` against `reference` (no optimiser step),
/// as at `step`: `eval_loss` (the mean batch loss) and TRL's metrics with the `eval_` prefix,
/// each the mean over the batches that logged it (TRL's `log`; `rewards/chosen` only from
/// batches with desirable rows). Each batch's KL reference point comes from its own KL rows,
/// as in training (TRL's eval collator rotates completions per evaluation batch).
pub fn evaluate_kto(
    model: &mut PeftModel<DecoderLm>,
    reference: DpoReference<'_>,
    config: &KtoConfig,
    batches: &[KtoBatch],
    step: usize,
) -> Result<DpoEval> {
    mean_evaluation(batches, step, &mut |b| {
        kto_batch_loss(model, reference, config, b)
    })
}

/// Trains `target` of `model` with TRL's KTO loss on `train` (one optimiser step per
/// `gradient_accumulation_steps` batches, cycling through them in order), against
/// `reference`; see [`tilpass_train::train_lm`] for the loop. Checks before the first step:
/// the settings; for the `kto` loss every batch has more than one row and its KL rows (TRL:
/// "Actual (not effective) batch size must be > 1"); [`DpoReference::DisabledAdapters`] only
/// with an adapter target; evaluation batches (checked alike) when `eval_steps` is set. Every
/// `cfg.eval_steps` steps it evaluates on `eval` ([`evaluate_kto`]: `eval_loss`, TRL's
/// `eval_`-prefixed metrics in `metrics.jsonl`, early stopping on `eval_loss`). The class-weight
/// warning ([`kto_weight_warning`] over all batches' labels) goes to `on_event` as a
/// [`Event::Message`].
#[allow(clippy::too_many_arguments)]
pub fn train_kto<'t>(
    model: &mut PeftModel<DecoderLm>,
    target: impl Into<Target<'t>>,
    reference: DpoReference<'_>,
    config: &KtoConfig,
    train: &[KtoBatch],
    eval: &[KtoBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let target = target.into();
    config.validate()?;
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
    if matches!(reference, DpoReference::Precomputed) {
        return Err(precomputed_unsupported());
    }
    check_eval_settings(cfg, eval.len())?;
    if train.is_empty() {
        return Err(PreferenceError::Shape {
            input: "KTO batches",
            got: "none".into(),
            expected: "at least one batch".into(),
        });
    }
    if config.uses_kl() {
        if let Some(i) = eval.iter().position(|b| b.kl.is_none()) {
            return Err(PreferenceError::MissingInput {
                input: "KL rows",
                needed_by: format!("loss_type `kto` (evaluation batch {i} has none)"),
            });
        }
        if let Some(i) = train.iter().position(|b| b.labels.len() < 2) {
            return Err(PreferenceError::InvalidSetting {
                setting: "per_device_train_batch_size",
                value: format!("{} (batch {i})", train[i].labels.len()),
                expected: "more than 1 example per batch: KTO's KL term pairs each prompt with \
                           another example's completion; with one example it would equal the \
                           implied reward"
                    .into(),
            });
        }
        if let Some(i) = train.iter().position(|b| b.kl.is_none()) {
            return Err(PreferenceError::MissingInput {
                input: "KL rows",
                needed_by: format!("loss_type `kto` (batch {i} has none)"),
            });
        }
    }
    let labels: Vec<bool> = train.iter().flat_map(|b| b.labels.clone()).collect();
    if let Some(w) = kto_weight_warning(&labels, config) {
        on_event(Event::Message(&format!("warning: {w}")));
    }
    let tokens: Vec<usize> = train.iter().map(|b| b.rows.input.input_ids.len()).collect();
    train_loop_with(
        model,
        target,
        &tokens,
        &mut |m: &mut PeftModel<DecoderLm>, i| {
            let out = kto_batch_loss(m, reference, config, &train[i]).map_err(into_train)?;
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
            let e = evaluate_kto(m, reference, config, eval, step).map_err(into_train)?;
            Ok(Some(e.to_eval_log()))
        },
        cfg,
        resume,
        on_event,
    )
    .map_err(from_train)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_warning_follows_trls_band() {
        let cfg = |wd, wu| KtoConfig {
            desirable_weight: wd,
            undesirable_weight: wu,
            ..Default::default()
        };
        // Balanced: never.
        assert!(kto_weight_warning(&[true, false], &cfg(5.0, 1.0)).is_none());
        // 7 desirable, 5 undesirable: λ_D in [0.71, 0.95] or λ_U in [1.05, 1.4].
        let labels = [
            true, true, true, true, true, true, true, false, false, false, false, false,
        ];
        assert!(kto_weight_warning(&labels, &cfg(1.0, 1.0)).is_some());
        assert!(kto_weight_warning(&labels, &cfg(1.2, 1.0)).is_some());
        assert!(kto_weight_warning(&labels, &cfg(0.8, 1.0)).is_none());
        assert!(kto_weight_warning(&labels, &cfg(1.0, 1.2)).is_none());
    }

    #[test]
    fn batches_are_checked() {
        // An empty completion, a completion token on padding, wrong lengths.
        assert!(
            KtoBatch::new(
                vec![1, 2, 1, 2],
                vec![1; 4],
                vec![0, 0, 0, 1],
                vec![true, false],
                2
            )
            .is_err()
        );
        assert!(
            KtoBatch::new(
                vec![1, 2, 1, 0],
                vec![1, 1, 1, 0],
                vec![0, 1, 0, 1],
                vec![true, false],
                2
            )
            .is_err()
        );
        assert!(
            KtoBatch::new(
                vec![1, 2, 1],
                vec![1; 3],
                vec![0, 1, 1],
                vec![true, false],
                2
            )
            .is_err()
        );
        let ok = KtoBatch::new(
            vec![1, 2, 1, 2],
            vec![1; 4],
            vec![0, 1, 0, 1],
            vec![true, false],
            2,
        )
        .unwrap();
        assert_eq!(ok.completion_tokens(), 2);
        assert!(
            ok.clone()
                .with_kl(vec![1, 2, 3], vec![1; 3], vec![0, 1, 1], 3)
                .is_err()
        );
        assert!(
            ok.with_kl(vec![1, 2, 1, 2], vec![1; 4], vec![0, 1, 0, 1], 2)
                .is_ok()
        );
    }
}
