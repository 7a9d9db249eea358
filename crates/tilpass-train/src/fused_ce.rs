//! Causal-LM cross-entropy over the vocabulary in one host pass on the CPU (Flex; other devices
//! compose it from tensor ops, keeping the logits on the device): per row the log-sum-exp once,
//! the loss `lse - z[label]`, and its gradient `(softmax - onehot) / n` written over the logits'
//! copy; the autodiff graph gets a surrogate whose gradient is exactly that (no log-softmax
//! materialised, no gather/scatter, no slice copies of `[batch, seq, vocab]` in the backward).

use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;
use tilpass_models::ModelError;

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
    // Target of each logits row (`None`: not supervised — last position or ignored label).
    let targets: Vec<Option<usize>> = (0..b * s)
        .map(|i| {
            let t = i % s;
            (t + 1 < s && labels[i + 1] >= 0).then(|| labels[i + 1] as usize)
        })
        .collect();
    let n = targets.iter().filter(|t| t.is_some()).count();
    let device = logits.device();
    if !tilpass_models::pool::on_flex(&device) {
        // On a GPU the logits stay there: the composed tensor ops, no host round trip.
        let (lp, _) = tilpass_models::shifted_log_probs(logits, labels)?;
        return Ok((lp.sum().neg().div_scalar(n.max(1) as f64), n));
    }
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
        .map(|(row, target)| {
            let Some(label) = *target else {
                if track {
                    row.fill(0.0);
                }
                return 0.0;
            };
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let target = row[label];
            let sum: f64 = if track {
                // exp(z - max) kept in place for the gradient: one exp per logit.
                row.iter_mut()
                    .map(|x| {
                        *x = (*x - max).exp();
                        f64::from(*x)
                    })
                    .sum()
            } else {
                row.iter().map(|&x| f64::from((x - max).exp())).sum()
            };
            let lse = f64::from(max) + sum.ln();
            let loss = lse - f64::from(target);
            if track {
                // d loss / d z = (softmax(z) - onehot(label)) / n.
                let scale = (inv_n / sum) as f32;
                for x in row.iter_mut() {
                    *x *= scale;
                }
                row[label] -= inv_n as f32;
            }
            loss
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
    // value + (Σ logits·G − its detached value): the value stays, the gradient is G.
    let surrogate = (logits * grad).sum();
    let loss = surrogate.clone() - surrogate.detach() + value;
    Ok((loss, n))
}
