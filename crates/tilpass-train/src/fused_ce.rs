//! Causal-LM cross-entropy over the vocabulary in one host pass on the CPU (Flex; other devices
//! compose it from tensor ops, keeping the logits on the device): per row the log-sum-exp once,
//! the loss `lse - z[label]`, and its gradient `(softmax - onehot) / n` written over the logits'
//! copy; the autodiff graph gets a surrogate whose gradient is exactly that (no log-softmax
//! materialised, no gather/scatter, no slice copies of `[batch, seq, vocab]` in the backward).

use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;
use tilpass_models::head_loss::{LmHead, head_cross_entropy, row_loss};
use tilpass_models::{DecoderLm, ModelError};

use crate::error::Result;

/// Mean next-token cross-entropy of `logits` `[batch, seq, vocab]` against `labels`
/// `[batch, seq]` (row-major; position `t` predicts `labels[t + 1]`, labels < 0 are ignored),
/// and the number of supervised tokens. The value and gradient equal
/// `-mean(log_softmax(logits)[.., :-1].gather(labels[.., 1:]))` over the supervised tokens
/// (transformers' shifted loss; [`tilpass_models::shifted_log_probs`] composes it from
/// tensor ops), with each row's log-sum-exp and sum accumulated in f64. Errors on labels that
/// are not `batch × seq`, a sequence shorter than 2 or a label outside the vocabulary.
pub fn causal_lm_cross_entropy(logits: Tensor<3>, labels: &[i64]) -> Result<(Tensor<1>, usize)> {
    let [b, s, v] = logits.dims();
    let targets = shifted_targets(labels, b, s, v)?;
    if !tilpass_models::pool::on_flex(&logits.device()) {
        // On a GPU the logits stay there: the composed tensor ops, no host round trip.
        let n = targets.iter().filter(|t| t.is_some()).count();
        let (lp, _) = tilpass_models::shifted_log_probs(logits, labels)?;
        return Ok((lp.sum().neg().div_scalar(n.max(1) as f64), n));
    }
    rows_cross_entropy(logits, &targets)
}

/// Mean cross-entropy of `logits` `[batch, t, vocab]` against `labels` `[batch, t]` read as
/// they stand (no shift: encoder-decoder targets), `-100` ignored, and the number of labels:
/// `-mean(log_softmax(logits).gather(labels))` over the labelled positions, as transformers'
/// `CrossEntropyLoss(ignore_index=-100)`. On Flex one host pass (as
/// [`causal_lm_cross_entropy`]); elsewhere composed from tensor ops. Errors on labels that are
/// not `batch × t` or outside `[0, vocab)` (other than `-100`).
pub fn label_cross_entropy(logits: Tensor<3>, labels: &[i64]) -> Result<(Tensor<1>, usize)> {
    let [b, t, v] = logits.dims();
    crate::seq2seq::check_labels(labels, b, t, v)?;
    if !tilpass_models::pool::on_flex(&logits.device()) {
        let (lp, n) = crate::seq2seq::label_log_probs(logits, labels)?;
        return Ok((lp.sum().neg().div_scalar(n.max(1) as f64), n));
    }
    let targets: Vec<Option<usize>> = labels
        .iter()
        .map(|&l| (l >= 0).then_some(l as usize))
        .collect();
    rows_cross_entropy(logits, &targets)
}

/// The mean cross-entropy of every logits row `[batch, seq, vocab]` against its target (rows
/// without one count for nothing) in one host pass on Flex, with the surrogate that hands
/// autodiff the gradient `(softmax - onehot) / n`; and the number of targets.
fn rows_cross_entropy(logits: Tensor<3>, targets: &[Option<usize>]) -> Result<(Tensor<1>, usize)> {
    let [b, s, v] = logits.dims();
    let n = targets.iter().filter(|t| t.is_some()).count();
    let device = logits.device();
    let track = logits.is_tracked();
    let host = logits.clone().inner();
    let host = if host.dtype() == DType::F32 {
        host
    } else {
        host.cast(DType::F32)
    };
    let mut z = host
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Input(format!("logits as f32: {e:?}")))?;
    let inv_n = 1.0 / n.max(1) as f64;
    // Per-row losses collected in order and added on one thread: a parallel `sum` would add
    // them in an order that depends on thread scheduling, and the loss of a resumed run must
    // equal the uninterrupted run's bit for bit.
    let losses: Vec<f64> = z
        .par_chunks_mut(v)
        .zip(targets.par_iter())
        .map(|(row, target)| match *target {
            // d loss / d z = (softmax(z) - onehot(label)) / n.
            Some(label) => row_loss(row, label, inv_n, track),
            None => {
                if track {
                    row.fill(0.0);
                }
                0.0
            }
        })
        .collect();
    let total: f64 = losses.iter().sum();
    let value = Tensor::<1>::from_data(TensorData::new(vec![(total * inv_n) as f32], [1]), &device);
    if !track {
        return Ok((value, n));
    }
    let grad = Tensor::<3>::from_data(TensorData::new(z, [b, s, v]), &device);
    let grad = if logits.dtype() == DType::F32 {
        grad
    } else {
        grad.cast(logits.dtype())
    };
    Ok((with_gradient(logits, grad, value), n))
}

/// The causal-LM loss of `model` from its final hidden states `[batch, seq, hidden]` (what
/// [`DecoderLm::forward_hidden`] returns) against `labels` `[batch, seq]`, as
/// [`causal_lm_cross_entropy`] of the logits computes it. On Flex with a frozen head
/// ([`DecoderLm::frozen_lm_head`]) and f32 states the head is fused with the loss
/// ([`tilpass_models::head_loss`]): logits only for supervised positions, in blocks that never
/// form a `[batch, seq, vocab]` tensor, and the gradient handed to autodiff at the hidden
/// states; otherwise (and while [`set_fused_head_enabled`] is off) the logits are computed.
pub fn causal_lm_loss_from_hidden(
    model: &DecoderLm,
    hidden: Tensor<3>,
    labels: &[i64],
) -> Result<(Tensor<1>, usize)> {
    let head = fused_head_applies(&hidden)
        .then(|| model.frozen_lm_head())
        .flatten();
    match head {
        Some(head) => match head_loss(&hidden, &head, labels)? {
            Some(out) => Ok(out),
            None => causal_lm_cross_entropy(model.logits(hidden), labels),
        },
        None => causal_lm_cross_entropy(model.logits(hidden), labels),
    }
}

static FUSED_HEAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether a loss fused with the head may run on `hidden`: switched on
/// ([`set_fused_head_enabled`]), f32 states, on Flex.
fn fused_head_applies(hidden: &Tensor<3>) -> bool {
    FUSED_HEAD.load(std::sync::atomic::Ordering::Relaxed)
        && hidden.dtype() == DType::F32
        && tilpass_models::pool::on_flex(&hidden.device())
}

/// Turns the head fused with the loss ([`causal_lm_loss_from_hidden`]) on or off for the
/// whole process (on by default): for A/B measurements (`tilpass-compare`'s
/// `lora_sft_step_logits`) and tests that compare both paths.
pub fn set_fused_head_enabled(on: bool) {
    FUSED_HEAD.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The encoder-decoder loss of decoder states `hidden [batch, t, hidden]` through the frozen
/// `head` against `labels` `[batch, t]` read as they stand (`-100` ignored), and the number of
/// labels: [`label_cross_entropy`] of `head.logits(hidden)`, with the head fused with the loss
/// on Flex for f32 states (as [`causal_lm_loss_from_hidden`]; logits only for labelled
/// positions, never a `[batch, t, vocab]` tensor). Errors as [`label_cross_entropy`].
pub fn label_loss_from_hidden(
    hidden: Tensor<3>,
    head: &LmHead,
    labels: &[i64],
) -> Result<(Tensor<1>, usize)> {
    let [b, t, _] = hidden.dims();
    let (_, v) = head.dims();
    crate::seq2seq::check_labels(labels, b, t, v)?;
    if fused_head_applies(&hidden) {
        let targets: Vec<Option<usize>> = labels
            .iter()
            .map(|&l| (l >= 0).then_some(l as usize))
            .collect();
        if let Some(out) = targets_head_loss(&hidden, head, &targets)? {
            return Ok(out);
        }
    }
    label_cross_entropy(head.logits(hidden), labels)
}

/// [`causal_lm_loss_from_hidden`]'s fused path; `Ok(None)` when the head cannot be read in
/// place (the caller then computes logits).
fn head_loss(
    hidden: &Tensor<3>,
    head: &LmHead,
    labels: &[i64],
) -> Result<Option<(Tensor<1>, usize)>> {
    let [b, s, _] = hidden.dims();
    let (_, v) = head.dims();
    let targets = shifted_targets(labels, b, s, v)?;
    targets_head_loss(hidden, head, &targets)
}

/// The mean cross-entropy of `hidden [batch, seq, hidden]` rows through `head` against their
/// `targets` (one per row, `None`: not counted) by [`head_cross_entropy`], with the gradient
/// handed to autodiff at `hidden`; `Ok(None)` when the head cannot be read in place.
fn targets_head_loss(
    hidden: &Tensor<3>,
    head: &LmHead,
    targets: &[Option<usize>],
) -> Result<Option<(Tensor<1>, usize)>> {
    let [b, s, h] = hidden.dims();
    let n = targets.iter().filter(|t| t.is_some()).count();
    let track = hidden.is_tracked();
    let x = hidden
        .clone()
        .inner()
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Input(format!("hidden states as f32: {e:?}")))?;
    let inv_n = 1.0 / n.max(1) as f64;
    let Some(out) = head_cross_entropy(&x, h, head, targets, inv_n, track) else {
        return Ok(None);
    };
    // Added in row order on one thread (see causal_lm_cross_entropy).
    let total: f64 = out.losses.iter().sum();
    let device = hidden.device();
    let value = Tensor::<1>::from_data(TensorData::new(vec![(total * inv_n) as f32], [1]), &device);
    Ok(Some(match out.grad_hidden {
        Some(g) if track => {
            let grad = Tensor::<3>::from_data(TensorData::new(g, [b, s, h]), &device);
            (with_gradient(hidden.clone(), grad, value), n)
        }
        _ => (value, n),
    }))
}

/// `value` with the gradient `grad` at `x`: `value + (Σ x·G − its detached value)`.
fn with_gradient<const D: usize>(x: Tensor<D>, grad: Tensor<D>, value: Tensor<1>) -> Tensor<1> {
    let surrogate = (x * grad).sum();
    surrogate.clone() - surrogate.detach() + value
}

/// The target of each row of `[batch, seq]` positions (`None`: not supervised — the last
/// position of a row or an ignored label), after checking `labels` (`batch × seq` values,
/// `seq >= 2`, every label below `vocab`).
fn shifted_targets(labels: &[i64], b: usize, s: usize, v: usize) -> Result<Vec<Option<usize>>> {
    if labels.len() != b * s || s < 2 {
        return Err(ModelError::Input(format!(
            "labels must be {b}x{s} (and seq >= 2), got {} values",
            labels.len()
        ))
        .into());
    }
    if let Some(l) = labels.iter().find(|&&l| l >= v as i64) {
        return Err(
            ModelError::Input(format!("label {l} is outside the vocabulary of {v}")).into(),
        );
    }
    Ok((0..b * s)
        .map(|i| {
            let t = i % s;
            (t + 1 < s && labels[i + 1] >= 0).then(|| labels[i + 1] as usize)
        })
        .collect())
}
