//! The causal-LM head fused with its cross-entropy on the CPU (Flex, `flex` feature): the
//! logits of a block of supervised positions are computed into one reused host buffer, turned
//! into losses and gradients in place, and multiplied back through the head, so the
//! `[batch, seq, vocab]` logits never exist as a tensor (nor their host copy, their gradient or
//! autodiff's product with it): memory for logits is bounded by one block (64 MiB) whatever
//! the batch and sequence. Positions without a label (the last of each row, ignored labels:
//! the prompts of chat data) get no logits at all.
//!
//! Used by `tilpass-train`'s causal-LM losses when the head is frozen (adapter training); the
//! loss and gradient are those of `log_softmax(hidden · W)` gathered at the labels, with the
//! same per-row arithmetic as the logits path (`exp(z - max)` in f32, sums in f64).

use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

/// A frozen LM head's weight as the fused loss reads it.
#[derive(Debug, Clone)]
pub struct LmHead {
    /// The weight: `[hidden, vocab]` (a linear head, burn's layout) or, when `vocab_major`,
    /// `[vocab, hidden]` (embeddings tied to the head).
    pub weight: Tensor<2>,
    /// Whether `weight` is `[vocab, hidden]`.
    pub vocab_major: bool,
}

impl LmHead {
    /// `(hidden, vocab)` of the head.
    pub fn dims(&self) -> (usize, usize) {
        let [a, b] = self.weight.dims();
        if self.vocab_major { (b, a) } else { (a, b) }
    }

    /// Logits `[batch, seq, vocab]` of `hidden [batch, seq, hidden]` through the head, as the
    /// models compute them (for where the fused loss does not apply).
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        if self.vocab_major {
            crate::embedding::tied_logits(hidden, self.weight.clone())
        } else {
            hidden.matmul(self.weight.clone().unsqueeze::<3>())
        }
    }
}

/// What [`head_cross_entropy`] returns.
#[derive(Debug, Clone)]
pub struct HeadLoss {
    /// `-log softmax(z)[label]` of every supervised row, in row order (f64).
    pub losses: Vec<f64>,
    /// `d(Σ losses · grad_scale) / d hidden`, `[rows, hidden]` row-major (zeros on rows
    /// without a target), when asked for.
    pub grad_hidden: Option<Vec<f32>>,
}

/// Logits held at once per block, in f32 values (64 MiB; at least 64 rows): the head's weight
/// is streamed and packed twice per block, so blocks are large (at a vocabulary of 32,000: 524
/// rows; blocks of 131 rows were slower than the logits path in a trial), while the memory
/// stays bounded whatever the batch (`tilpass-compare train --bench lm_head_loss`).
const BLOCK_VALUES: usize = 16 << 20;

/// The fused head + cross-entropy over `hidden` `[rows, h]` (row-major, host f32): for each row
/// with a target, the logits `hidden[row] · W` (`[vocab]`), the loss `lse - z[target]` and,
/// with `need_grad`, the gradient `((softmax(z) - onehot(target)) · grad_scale) · Wᵀ` into
/// `grad_hidden`. `None` when the head cannot be read in place (not a Flex f32 tensor, the
/// `flex` feature off): the caller then computes logits. Targets must be `< vocab`.
pub fn head_cross_entropy(
    hidden: &[f32],
    h: usize,
    head: &LmHead,
    targets: &[Option<usize>],
    grad_scale: f64,
    need_grad: bool,
) -> Option<HeadLoss> {
    let (hh, v) = head.dims();
    let rows = targets.len();
    if hh != h || hidden.len() != rows * h || head.weight.dtype() != DType::F32 {
        return None;
    }
    if targets.iter().flatten().any(|&t| t >= v) {
        return None;
    }
    crate::host_gemm::with_host_f32(&head.weight, |w| {
        if w.len() != h * v {
            return None;
        }
        let block = (BLOCK_VALUES / v.max(1)).max(64);
        let layout = Layout {
            h,
            v,
            vocab_major: head.vocab_major,
            block,
        };
        Some(crate::pool::on_pool(&head.weight.device(), || {
            fused(hidden, w, layout, targets, grad_scale, need_grad)
        }))
    })
    .flatten()
}

/// Sizes of [`fused`]'s work: hidden width, vocabulary, the weight's layout and the
/// supervised rows per block.
#[derive(Debug, Clone, Copy)]
struct Layout {
    h: usize,
    v: usize,
    vocab_major: bool,
    block: usize,
}

/// The work of [`head_cross_entropy`] on host slices: `w` is `[h, v]`, or `[v, h]` when
/// `vocab_major`; blocks of supervised rows, each through gemm, the row pass and gemm back.
fn fused(
    hidden: &[f32],
    w: &[f32],
    Layout {
        h,
        v,
        vocab_major,
        block,
    }: Layout,
    targets: &[Option<usize>],
    grad_scale: f64,
    need_grad: bool,
) -> HeadLoss {
    let sup: Vec<(usize, usize)> = targets
        .iter()
        .enumerate()
        .filter_map(|(r, t)| t.map(|t| (r, t)))
        .collect();
    let par = crate::host_gemm::parallelism(usize::MAX);
    // Strides (column, row) of W read as [h, v]: the right operand of x·W, the left of W·gᵀ.
    let (w_cs, w_rs) = if vocab_major {
        (h as isize, 1)
    } else {
        (1, v as isize)
    };
    let mut losses = Vec::with_capacity(sup.len());
    let mut grad = need_grad.then(|| vec![0f32; targets.len() * h]);
    let mut x = Vec::new();
    let mut z = Vec::new();
    let mut dx = Vec::new();
    for chunk in sup.chunks(block) {
        let m = chunk.len();
        x.clear();
        for &(r, _) in chunk {
            x.extend_from_slice(&hidden[r * h..(r + 1) * h]);
        }
        z.clear();
        z.resize(m * v, 0.0);
        // SAFETY: x is [m, h] row-major, w is [h, v] (or [v, h] read transposed through the
        // strides), z is [m, v] row-major: every index the product touches is in bounds.
        unsafe {
            crate::host_gemm::gemm_into(
                (m, v, h),
                (z.as_mut_ptr(), 1, v as isize),
                (x.as_ptr(), 1, h as isize),
                (w.as_ptr(), w_cs, w_rs),
                par,
            )
        };
        let block_losses: Vec<f64> = z
            .par_chunks_mut(v)
            .zip(chunk.par_iter())
            .map(|(row, &(_, label))| row_loss(row, label, grad_scale, need_grad))
            .collect();
        losses.extend(block_losses);
        if let Some(grad) = grad.as_mut() {
            dx.clear();
            dx.resize(m * h, 0.0);
            // dxᵀ [h, m] = W [h, v] · zᵀ [v, m], written into dx [m, h] through its strides:
            // gemm gets the long dimension (h) as rows and the weight in its own layout.
            // SAFETY: z (now the logits' gradient) is [m, v] row-major and read as zᵀ
            // through the strides, W is read as [h, v] (through the strides when stored
            // [v, h]), dx is [m, h] row-major written as [h, m] (row stride 1, column h).
            unsafe {
                crate::host_gemm::gemm_into(
                    (h, m, v),
                    (dx.as_mut_ptr(), h as isize, 1),
                    (w.as_ptr(), w_cs, w_rs),
                    (z.as_ptr(), v as isize, 1),
                    par,
                )
            };
            for (&(r, _), d) in chunk.iter().zip(dx.chunks_exact(h)) {
                grad[r * h..(r + 1) * h].copy_from_slice(d);
            }
        }
    }
    HeadLoss {
        losses,
        grad_hidden: grad,
    }
}

/// One row's loss `lse(z) - z[label]`; with `need_grad` the row becomes
/// `(softmax(z) - onehot(label)) · scale` (one exp per logit, kept for the gradient; without
/// it the row is left holding `exp(z - max)`). The exponentials are
/// [`crate::encoder_kernels::exp_f32`] (within 4 ulp; 0 below `z - max = -87`, where the
/// exact value is under 1.7e-38), vectorised with the widest vectors the CPU has, summed in f64
/// over 16 lanes in a fixed order.
pub fn row_loss(row: &mut [f32], label: usize, scale: f64, need_grad: bool) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { row_loss_avx512(row, label, scale, need_grad) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { row_loss_avx2(row, label, scale, need_grad) };
        }
    }
    row_loss_loop(row, label, scale, need_grad)
}

/// [`row_loss_loop`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_loss_avx512(row: &mut [f32], label: usize, scale: f64, need_grad: bool) -> f64 {
    row_loss_loop(row, label, scale, need_grad)
}

/// [`row_loss_loop`] compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_loss_avx2(row: &mut [f32], label: usize, scale: f64, need_grad: bool) -> f64 {
    row_loss_loop(row, label, scale, need_grad)
}

/// Partial results per row pass (maximum, sum): independent lanes the loops vectorise over.
const LANES: usize = 16;

/// The work of [`row_loss`], inlined into each target-feature variant.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed lanes: what vectorises
fn row_loss_loop(row: &mut [f32], label: usize, scale: f64, need_grad: bool) -> f64 {
    let target = row[label];
    // The inference softmax's maximum: the same lanes, in the same order.
    let max = crate::encoder_kernels::lane_max(row);
    for x in row.iter_mut() {
        *x = crate::encoder_kernels::exp_f32(*x - max);
    }
    let mut acc = [0f64; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] += f64::from(c[j]);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    let sum = acc.iter().sum::<f64>() + tail;
    let lse = f64::from(max) + sum.ln();
    if need_grad {
        let s = (scale / sum) as f32;
        for x in row.iter_mut() {
            *x *= s;
        }
        row[label] -= scale as f32;
    }
    lse - f64::from(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss and hidden-state gradient of every row, computed plainly in f64 from the
    /// definition: `z = x·W`, `loss = lse(z) - z[t]`, `dx = ((softmax(z) - onehot(t))·s)·Wᵀ`.
    fn reference(
        x: &[f32],
        w_hv: &[f32],
        h: usize,
        v: usize,
        targets: &[Option<usize>],
        s: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut losses = Vec::new();
        let mut grad = vec![0f64; targets.len() * h];
        for (r, t) in targets.iter().enumerate() {
            let Some(t) = *t else { continue };
            let z: Vec<f64> = (0..v)
                .map(|j| {
                    (0..h)
                        .map(|k| f64::from(x[r * h + k] * w_hv[k * v + j]))
                        .sum()
                })
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|zj| (zj - max).exp()).sum();
            losses.push(max + sum.ln() - z[t]);
            for j in 0..v {
                let g = ((z[j] - max).exp() / sum - f64::from(u8::from(j == t))) * s;
                for k in 0..h {
                    grad[r * h + k] += g * f64::from(w_hv[k * v + j]);
                }
            }
        }
        (losses, grad)
    }

    #[test]
    fn blocks_of_any_size_and_both_layouts_match_the_definition() {
        let (rows, h, v) = (37usize, 8usize, 50usize);
        let mut rng = tilpass_core::SplitMix64::from_state(7);
        let x = rng.normal_vec(rows * h, 1.0);
        let w_hv = rng.normal_vec(h * v, 0.5);
        // The same head stored [v, h] (tied embeddings).
        let w_vh: Vec<f32> = (0..v * h).map(|i| w_hv[(i % h) * v + i / h]).collect();
        let targets: Vec<Option<usize>> = (0..rows)
            .map(|r| (r % 4 != 3).then_some((r * 13 + 5) % v))
            .collect();
        let scale = 1.0 / 28.0;
        let (want_loss, want_grad) = reference(&x, &w_hv, h, v, &targets, scale);
        for vocab_major in [false, true] {
            let w = if vocab_major { &w_vh } else { &w_hv };
            for block in [1, 2, 5, 16, 27, 28, 64] {
                let layout = Layout {
                    h,
                    v,
                    vocab_major,
                    block,
                };
                let out = fused(&x, w, layout, &targets, scale, true);
                assert_eq!(out.losses.len(), want_loss.len());
                for (a, b) in out.losses.iter().zip(&want_loss) {
                    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
                }
                let grad = out.grad_hidden.expect("asked for the gradient");
                assert_eq!(grad.len(), want_grad.len());
                for (r, (a, b)) in grad.iter().zip(&want_grad).enumerate() {
                    assert!(
                        (f64::from(*a) - b).abs() <= 1e-6,
                        "row {} ({vocab_major}, block {block}): {a} vs {b}",
                        r / h
                    );
                }
                let plain = fused(&x, w, layout, &targets, scale, false);
                assert_eq!(plain.losses, out.losses);
                assert!(plain.grad_hidden.is_none());
            }
        }
    }
}
