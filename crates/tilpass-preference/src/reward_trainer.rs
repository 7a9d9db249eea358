//! The reward-model trainer (TRL 1.16.0's `RewardTrainer`) on `tilpass-train`'s shared loop: a
//! decoder sequence classifier with one output ([`DecoderClassifier`], transformers'
//! `*ForSequenceClassification`) scores the chosen and the rejected sequence of each pair, and
//! the Bradley-Terry loss of [`crate::reward`] pushes the chosen score above the rejected one.
//!
//! As TRL: a batch holds `pairs` chosen rows then `pairs` rejected rows (`[2·pairs, seq]`,
//! right-padded with the pad id, TRL's `DataCollatorForPreference`), each row the whole
//! prompt + completion (+ EOS) sequence; the score of a row is read at its last token that is
//! not the pad id (see [`DecoderClassifier`]); an optional per-pair `margin` is subtracted from
//! the score difference and `center_rewards_coefficient` adds mean((r_c + r_r)²). The loop
//! ([`train_loop_with`]) brings gradient accumulation, clipping, the schedule, checkpoints with
//! exact resume and `metrics.jsonl`, where each step's line carries TRL's metric names:
//! `min_reward`, `mean_reward`, `max_reward`, `accuracy` and `margin` (each the mean over the
//! step's accumulated batches, as TRL averages over the `compute_loss` calls of a logging
//! window). TRL's cumulative `num_tokens` is not logged (as in the DPO trainer).
//!
//! With LoRA the score head is trained whole (PEFT's `modules_to_save = ["score"]`, what PEFT
//! sets for the `SEQ_CLS` task type); with [`Target::Full`] every weight is. BERT / NorBERT3
//! sequence classifiers with one label ([`EncoderModel`]) train the same way ([`RewardModel`]),
//! their head being `classifier` / `head`.

use std::path::Path;

use burn::tensor::Tensor;
use tilpass_models::{
    DecoderClassifier, DecoderInput, EncoderInput, EncoderModel, HasLinears, SequenceClassifier,
};
use tilpass_peft::PeftModel;
use tilpass_train::{BatchLoss, EvalLog, Event, Summary, Target, TrainConfig, train_loop_with};

use crate::dpo_trainer::{from_train, into_train};
use crate::error::{PreferenceError, Result};
use crate::logps::{constant, host};
use crate::reward::{RewardConfig, RewardInputs, reward_loss};

/// One collated reward batch on the host: `pairs` chosen rows, then `pairs` rejected rows,
/// `[2·pairs, seq]` row-major, with optional per-pair margins.
#[derive(Debug, Clone)]
pub struct RewardBatch {
    /// The model input (ids, attention mask, positions `0..seq` in every row as transformers'
    /// default for right padding), `[2·pairs, seq]`.
    pub input: DecoderInput,
    /// Pairs (half the rows).
    pub pairs: usize,
    /// The dataset's `margin` column for the batch's pairs, `[pairs]`.
    pub margin: Option<Vec<f64>>,
}

impl RewardBatch {
    /// A batch from TRL's collated arrays (`input_ids`, `attention_mask`, each `[rows, seq]`
    /// row-major) and margins (`[rows / 2]`). Checks: an even, non-zero number of rows,
    /// arrays of `rows·seq` values, a 0/1 mask, every row with at least one token and finite
    /// margins.
    pub fn new(
        input_ids: Vec<u32>,
        attention_mask: Vec<u8>,
        rows: usize,
        seq: usize,
        margin: Option<Vec<f64>>,
    ) -> Result<Self> {
        if rows == 0 || !rows.is_multiple_of(2) || seq == 0 {
            return Err(PreferenceError::Shape {
                input: "reward batch",
                got: format!("{rows} rows of {seq} tokens"),
                expected: "an even, non-zero number of non-empty rows ([all chosen; all \
                           rejected])"
                    .into(),
            });
        }
        let n = rows * seq;
        for (name, len) in [
            ("input_ids", input_ids.len()),
            ("attention_mask", attention_mask.len()),
        ] {
            if len != n {
                return Err(PreferenceError::Shape {
                    input: name,
                    got: format!("{len} values"),
                    expected: format!("{rows}x{seq} = {n} values"),
                });
            }
        }
        if let Some(i) = attention_mask.iter().position(|&x| x > 1) {
            return Err(PreferenceError::BadValue {
                input: "attention_mask",
                index: i,
                value: f64::from(attention_mask[i]),
                expected: "0 or 1",
            });
        }
        if let Some(r) = (0..rows).find(|r| {
            attention_mask[r * seq..(r + 1) * seq]
                .iter()
                .all(|m| *m == 0)
        }) {
            return Err(PreferenceError::BadValue {
                input: "attention_mask",
                index: r * seq,
                value: 0.0,
                expected: "at least one token in every row",
            });
        }
        let pairs = rows / 2;
        if let Some(m) = &margin {
            if m.len() != pairs {
                return Err(PreferenceError::Shape {
                    input: "margin",
                    got: format!("{} values", m.len()),
                    expected: format!("one per pair ({pairs})"),
                });
            }
            if let Some(i) = m.iter().position(|v| !v.is_finite()) {
                return Err(PreferenceError::BadValue {
                    input: "margin",
                    index: i,
                    value: m[i],
                    expected: "a finite number",
                });
            }
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
            pairs,
            margin,
        })
    }

    /// TRL's `DataCollatorForPreference`: `[all chosen; all rejected]` right-padded with
    /// `pad_id` to the longest sequence (rounded up to a multiple of `pad_to_multiple_of`),
    /// attention mask 1 on tokens. `chosen` and `rejected` hold the whole sequences (prompt +
    /// completion), one pair per index; `margin` one value per pair.
    pub fn collate(
        chosen: &[Vec<u32>],
        rejected: &[Vec<u32>],
        margin: Option<Vec<f64>>,
        pad_id: u32,
        pad_to_multiple_of: Option<usize>,
    ) -> Result<Self> {
        if chosen.len() != rejected.len() {
            return Err(PreferenceError::Shape {
                input: "rejected",
                got: format!("{} sequences", rejected.len()),
                expected: format!("one per chosen sequence ({})", chosen.len()),
            });
        }
        let rows: Vec<&Vec<u32>> = chosen.iter().chain(rejected).collect();
        let mut seq = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if let Some(m) = pad_to_multiple_of.filter(|m| *m > 0) {
            seq = seq.div_ceil(m) * m;
        }
        let mut ids = Vec::with_capacity(rows.len() * seq);
        let mut mask = Vec::with_capacity(rows.len() * seq);
        for r in &rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(pad_id, seq - r.len()));
            mask.extend(std::iter::repeat_n(1u8, r.len()));
            mask.extend(std::iter::repeat_n(0u8, seq - r.len()));
        }
        Self::new(ids, mask, rows.len(), seq, margin)
    }

    /// Tokens in the batch (ones of the attention mask; TRL's `num_tokens` counts these).
    pub fn tokens(&self) -> usize {
        self.input
            .attention_mask
            .iter()
            .map(|m| usize::from(*m))
            .sum()
    }
}

/// The loss of one batch and what TRL logs for it.
#[derive(Debug, Clone)]
pub struct RewardBatchOutput {
    /// The reward loss, `[1]`, differentiable w.r.t. the model.
    pub loss: Tensor<1>,
    /// `(TRL name, value)` of every logged metric.
    pub metrics: Vec<(&'static str, f64)>,
    /// Pairs in the batch.
    pub pairs: usize,
}

/// A sequence classifier that can serve as a reward model: a decoder
/// ([`DecoderClassifier`], the score at the last non-padding token) or an encoder
/// ([`EncoderModel`]: BERT / NorBERT3 with a classification head, the pooled first token).
pub trait RewardModel: HasLinears {
    /// Scores `[rows, num_labels]` of right-padded rows (differentiable).
    fn row_scores(&self, input: &DecoderInput) -> Result<Tensor<2>>;
    /// Outputs per sequence (a reward model has 1).
    fn outputs(&self) -> usize;
    /// Errors when the model cannot score padded batches (a decoder without a pad id).
    fn check_padding(&self) -> Result<()> {
        Ok(())
    }
}

impl RewardModel for DecoderClassifier {
    fn row_scores(&self, input: &DecoderInput) -> Result<Tensor<2>> {
        Ok(self.scores(input)?)
    }
    fn outputs(&self) -> usize {
        self.num_labels()
    }
    fn check_padding(&self) -> Result<()> {
        if self.pad_token_id().is_none() {
            return Err(PreferenceError::InvalidSetting {
                setting: "pad_token_id",
                value: "none".into(),
                expected: "the pad id of the batches (TRL copies the tokenizer's pad token, else \
                           its EOS, into the model config)"
                    .into(),
            });
        }
        Ok(())
    }
}

impl RewardModel for EncoderModel {
    fn row_scores(&self, input: &DecoderInput) -> Result<Tensor<2>> {
        // Token types all 0, as BERT's tokenizer gives one segment; positions from column 0.
        let enc = EncoderInput {
            input_ids: input.input_ids.clone(),
            attention_mask: input.attention_mask.clone(),
            token_type_ids: vec![0; input.input_ids.len()],
            batch: input.batch,
            seq: input.seq,
        };
        Ok(self.classify(&enc)?)
    }
    fn outputs(&self) -> usize {
        SequenceClassifier::num_labels(self)
    }
}

/// The scores of a batch's chosen and rejected rows, `[pairs]` each (differentiable).
pub fn pair_rewards<M: RewardModel>(
    model: &M,
    batch: &RewardBatch,
) -> Result<(Tensor<1>, Tensor<1>)> {
    check_model(model)?;
    let p = batch.pairs;
    let scores = model.row_scores(&batch.input)?.reshape([2 * p]);
    Ok((scores.clone().narrow(0, 0, p), scores.narrow(0, p, p)))
}

/// A reward model has one output (TRL refuses others) and, for a decoder, a pad id (it finds
/// each row's last token by it).
fn check_model<M: RewardModel>(model: &M) -> Result<()> {
    if model.outputs() != 1 {
        return Err(PreferenceError::InvalidSetting {
            setting: "num_labels",
            value: model.outputs().to_string(),
            expected: "1: a reward model outputs one score per sequence".into(),
        });
    }
    model.check_padding()
}

/// TRL's reward loss of one batch for `model`, with the metrics TRL logs.
pub fn reward_batch_loss<M: RewardModel>(
    model: &M,
    config: &RewardConfig,
    batch: &RewardBatch,
) -> Result<RewardBatchOutput> {
    config.validate()?;
    let (chosen, rejected) = pair_rewards(model, batch)?;
    let margin = batch
        .margin
        .as_ref()
        .map(|m| constant(m.clone(), &chosen.device(), chosen.dtype()));
    let out = reward_loss(
        config,
        &RewardInputs {
            chosen_rewards: chosen,
            rejected_rewards: rejected,
            margin,
        },
    )?;
    Ok(RewardBatchOutput {
        loss: out.loss,
        metrics: out.metrics.entries(),
        pairs: batch.pairs,
    })
}

/// An evaluation of a reward model on held-out pairs: the loss and TRL's metrics, each the
/// mean over the batches (TRL's `evaluate` averages its per-batch metrics the same way).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RewardEval {
    /// Optimiser steps done when it was made (0: before training).
    pub step: usize,
    /// Mean loss over the batches (TRL's `eval_loss`).
    pub eval_loss: f64,
    /// TRL's metric names with its `eval_` prefix (`eval_accuracy`, `eval_margin`, ...), means
    /// over the batches.
    #[serde(flatten)]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

impl RewardEval {
    /// A metric by TRL's name without the prefix (`accuracy`).
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

    /// The evaluation of a training-loop record made by [`RewardEval::to_eval_log`].
    pub fn from_eval_log(log: &EvalLog) -> Self {
        Self {
            step: log.step,
            eval_loss: log.eval_loss,
            metrics: log.metrics.clone(),
        }
    }
}

/// Evaluates `model` on `batches` (no optimiser step; each batch's graph is dropped after its
/// values are read), as at `step`.
pub fn evaluate_reward<M: RewardModel>(
    model: &M,
    config: &RewardConfig,
    batches: &[RewardBatch],
    step: usize,
) -> Result<RewardEval> {
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
        let out = reward_batch_loss(model, config, b)?;
        loss += host(&out.loss.detach(), "evaluation loss")?[0];
        for (k, v) in out.metrics {
            *sums.entry(format!("eval_{k}")).or_default() += v;
        }
    }
    let n = batches.len() as f64;
    Ok(RewardEval {
        step,
        eval_loss: loss / n,
        metrics: sums.into_iter().map(|(k, v)| (k, v / n)).collect(),
    })
}

/// Trains `target` of `model` with TRL's reward loss on `train` (one optimiser step per
/// `gradient_accumulation_steps` batches, cycling through them in order); see
/// [`tilpass_train::train_lm`] for the loop (schedule, clipping, checkpoints, resume,
/// `metrics.jsonl`). Every `cfg.eval_steps` steps it evaluates on `eval` ([`evaluate_reward`]:
/// `eval_loss` and TRL's `eval_accuracy`, `eval_margin`, ... in `metrics.jsonl`, early stopping
/// on `eval_loss`). Checks before the first step: the settings, a model with one output and a
/// pad id, evaluation batches when `eval_steps` is set. With an adapter target,
/// the adapter should list `score` in `modules_to_save` (else the head stays as it started).
#[allow(clippy::too_many_arguments)]
pub fn train_reward<'t, M: RewardModel>(
    model: &mut PeftModel<M>,
    target: impl Into<Target<'t>>,
    config: &RewardConfig,
    train: &[RewardBatch],
    eval: &[RewardBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let target = target.into();
    config.validate()?;
    cfg.validate()?;
    check_model(model.model())?;
    crate::paired_policy::check_eval_settings(cfg, eval.len())?;
    let tokens: Vec<usize> = train.iter().map(|b| b.input.input_ids.len()).collect();
    train_loop_with(
        model,
        target,
        &tokens,
        &mut |m: &mut PeftModel<M>, i| {
            let out = reward_batch_loss(m.model(), config, &train[i]).map_err(into_train)?;
            Ok(BatchLoss {
                loss: out.loss,
                items: out.pairs,
                metrics: out
                    .metrics
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
        },
        &mut |m: &mut PeftModel<M>, step| {
            if eval.is_empty() {
                return Ok(None);
            }
            let e = evaluate_reward(m.model(), config, eval, step).map_err(into_train)?;
            Ok(Some(e.to_eval_log()))
        },
        cfg,
        resume,
        on_event,
    )
    .map_err(from_train)
}
