//! Fused host kernels for encoder inference on Flex: attention read straight from a packed
//! `[batch, seq, 3·hidden]` query/key/value projection (no head transposes, padding keys
//! skipped), bias + exact GELU in one pass, and bias + residual + layer norm in one pass.
//!
//! They take over the element-wise work between the matrix products of a BERT layer when
//! [`usable`] says so (a plain Flex f32 tensor outside autodiff); every other backend, and
//! training, keeps burn's ops. Tensors go to the host and back without copies (Flex hands over
//! a buffer it holds alone), and the kernels work in place over rows spread on the Rayon pool.

use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::mlp::{erf_f32, is_flex};

/// Rows per Rayon task of the row-wise kernels.
const ROWS_PER_TASK: usize = 16;

/// True when the host kernels can run on `x`: a plain Flex (CPU) f32 tensor that autodiff does
/// not track.
pub fn usable<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && !x.is_require_grad() && is_flex(&x.device())
}

/// The data of a float tensor as f32, row-major, to change in place (no copy when the tensor
/// is f32 and holds its buffer alone; another float type is cast on the device first).
pub(crate) fn host<const D: usize>(x: Tensor<D>) -> TensorData {
    if x.dtype() == DType::F32 {
        x.into_data()
    } else {
        x.cast(DType::F32).into_data()
    }
}

/// `x [m, k] · [w₀ | w₁ | ..] ` — the weights `[k, nᵢ]` side by side, `[m, Σ nᵢ]` — with gemm
/// writing straight into the output's buffer: each weight is read in place (no concatenated
/// copy), the output is neither zero-filled nor copied again (burn-flex's matmul zero-fills a
/// byte vector and then copies it into an aligned one). Falls back to burn's matmul and
/// concatenation when a weight cannot be read in place (not a contiguous Flex f32 tensor, the
/// `flex` feature off). For [`usable`] inputs.
pub fn matmul_side_by_side(x: Tensor<2>, ws: &[Tensor<2>]) -> Tensor<2> {
    let [m, k] = x.dims();
    let n: usize = ws.iter().map(|w| w.dims()[1]).sum();
    let fits = !ws.is_empty() && ws.iter().all(|w| w.dims()[0] == k);
    let out = fits
        .then(|| {
            crate::host_gemm::with_host_f32(&x, |xs| {
                let mut out: Vec<f32> = Vec::with_capacity(m * n);
                let mut col = 0;
                for w in ws {
                    let wn = w.dims()[1];
                    let done = crate::host_gemm::with_host_f32(w, |wv| {
                        if wv.len() != k * wn || xs.len() != m * k {
                            return false;
                        }
                        // SAFETY: out has capacity m·n; this writes columns col .. col + wn of
                        // every row (row stride n) and reads x [m, k] and w [k, wn] row-major,
                        // all in bounds.
                        unsafe {
                            crate::host_gemm::gemm_into(
                                (m, wn, k),
                                (out.as_mut_ptr().add(col), 1, n as isize),
                                (xs.as_ptr(), 1, k as isize),
                                (wv.as_ptr(), 1, wn as isize),
                                crate::host_gemm::parallelism(m * k * wn),
                            )
                        };
                        true
                    });
                    if done != Some(true) {
                        return None;
                    }
                    col += wn;
                }
                // SAFETY: the products above wrote every one of the m·n values (each column
                // range of every row once).
                unsafe { out.set_len(m * n) };
                Some(out)
            })
            .flatten()
        })
        .flatten();
    match out {
        Some(out) => Tensor::from_data(TensorData::new(out, [m, n]), &x.device()),
        None => {
            let mut ys: Vec<Tensor<2>> = ws.iter().map(|w| x.clone().matmul(w.clone())).collect();
            match ys.len() {
                1 => ys.remove(0),
                _ => Tensor::cat(ys, 1),
            }
        }
    }
}

/// The f32 values of [`host`] data, mutable.
pub(crate) fn values(data: &mut TensorData) -> &mut [f32] {
    match data.as_mut_slice::<f32>() {
        Ok(v) => v,
        // `host` made the data f32, and an f32 buffer is a slice of f32.
        Err(e) => unreachable!("an f32 tensor's data is a slice of f32: {e:?}"),
    }
}

/// The f32 values of [`host`] data, read-only.
pub(crate) fn values_ref(data: &TensorData) -> &[f32] {
    match data.as_slice::<f32>() {
        Ok(v) => v,
        // `host` made the data f32, and an f32 buffer is a slice of f32.
        Err(e) => unreachable!("an f32 tensor's data is a slice of f32: {e:?}"),
    }
}

/// The values of a small tensor (biases, norm weights) on the host, as f32 whatever the
/// tensor's float type.
pub fn host_vec(x: Tensor<1>) -> Vec<f32> {
    match host(x).try_into_vec::<f32>() {
        Ok(v) => v,
        // `host` made the data f32.
        Err(e) => unreachable!("an f32 tensor converts to Vec<f32>: {e:?}"),
    }
}

/// Multi-head attention of an encoder layer over packed sequences (no padding): `qkv [tokens,
/// 3·hidden]` holds the query, key and value projections side by side (heads `hidden / heads`
/// wide each) of `lens.len()` sequences, one after the other, `lens[i]` tokens each; `bias
/// [3·hidden]` is added first when given. Every token attends to every token of its own
/// sequence: `softmax(q·kᵀ·scale)·v` per head. Returns the context `[tokens, hidden]` with the
/// heads side by side (what a padded batch with a key-padding mask gives at its real tokens),
/// or with `first_only` that of each sequence's first token alone, `[sequences, hidden]`.
pub fn packed_attention(
    qkv: Tensor<2>,
    bias: Option<&[f32]>,
    lens: &[usize],
    heads: usize,
    scale: f32,
    first_only: bool,
) -> Tensor<2> {
    let [tokens, h3] = qkv.dims();
    let device = qkv.device();
    let h = h3 / 3;
    let d = h / heads;
    debug_assert_eq!(h * 3, h3);
    debug_assert_eq!(lens.iter().sum::<usize>(), tokens);
    let mut qkv = host(qkv);
    let queries = |len: usize| if first_only { len.min(1) } else { len };
    let rows: usize = lens.iter().map(|&l| queries(l)).sum();
    let mut out = vec![0.0f32; rows * h];
    // One (projection, context) pair of slices per sequence.
    let mut parts = Vec::with_capacity(lens.len());
    let (mut x_rest, mut o_rest) = (values(&mut qkv), out.as_mut_slice());
    for &len in lens {
        let (x, xr) = x_rest.split_at_mut(len * h3);
        let (o, or) = o_rest.split_at_mut(queries(len) * h);
        parts.push((x, o));
        (x_rest, o_rest) = (xr, or);
    }
    parts.into_par_iter().for_each(|(x, o)| {
        let s = x.len() / h3;
        let m = o.len() / h;
        if let Some(bias) = bias {
            for row in x.chunks_exact_mut(h3) {
                for (v, bb) in row.iter_mut().zip(bias) {
                    *v += bb;
                }
            }
        }
        let mut scores = vec![0.0f32; m * s];
        for head in 0..heads {
            let q = x[head * d..].as_ptr();
            let k = x[h + head * d..].as_ptr();
            let v = x[2 * h + head * d..].as_ptr();
            // SAFETY: q, k, v point into `x` ([s, 3h]); the products read rows 0..m (q) or
            // 0..s (k, v), m <= s, `d` columns from there, row stride 3h, all inside `x`;
            // `scores` is [m, s]; `o` is [m, h] and the written block (columns head·d.., d
            // wide) lies in it.
            unsafe {
                gemm::gemm(
                    m,
                    s,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    s as isize,
                    false,
                    q,
                    1,
                    h3 as isize,
                    k,
                    h3 as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            softmax_rows(&mut scores, s);
            // SAFETY: as above.
            unsafe {
                gemm::gemm(
                    m,
                    d,
                    s,
                    o[head * d..].as_mut_ptr(),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    s as isize,
                    v,
                    1,
                    h3 as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    });
    Tensor::from_data(TensorData::new(out, [rows, h]), &device)
}

/// Softmax of every `n`-wide row of `v` in place (finite values), with the widest vectors the
/// CPU has.
pub(crate) fn softmax_rows(v: &mut [f32], n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { softmax_avx512(v, n) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { softmax_avx2(v, n) };
            return;
        }
    }
    softmax_loop(v, n);
}

/// The softmax loop, inlined into each target-feature variant so that it vectorises: the
/// maximum and the sum over [`LANES`] partial results, `exp` by [`exp_f32`].
#[inline(always)]
fn softmax_loop(v: &mut [f32], n: usize) {
    for row in v.chunks_exact_mut(n) {
        let max = lane_max(row);
        // exp and the sum in one pass: the sum's order is `lane_sum`'s.
        let (blocks, rest) = row.as_chunks_mut::<LANES>();
        let mut acc = [0.0f32; LANES];
        for c in blocks.iter_mut() {
            for j in 0..LANES {
                let e = exp_f32(c[j] - max);
                c[j] = e;
                acc[j] += e;
            }
        }
        for e in rest.iter_mut() {
            *e = exp_f32(*e - max);
        }
        let mut total: f32 = rest.iter().sum();
        total += acc.iter().sum::<f32>();
        let inv = 1.0 / total;
        for e in row.iter_mut() {
            *e *= inv;
        }
    }
}

/// [`softmax_loop`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(v: &mut [f32], n: usize) {
    softmax_loop(v, n);
}

/// [`softmax_loop`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(v: &mut [f32], n: usize) {
    softmax_loop(v, n);
}

/// `exp(x)` for f32 without branches (Cephes' `expf`: `x = n·ln 2 + r`, a degree-5 polynomial
/// for `exp(r)` on `|r| <= ln 2 / 2`, `2^n` from the exponent bits), within a few ulp of the
/// exact value on `[-87, 88]`; below that it gives 0 (softmax's `x - max <= 0` never goes
/// above), so the loop vectorises.
///
/// `2^n` is built from the integer that adding 1.5 · 2^23 leaves in the low mantissa bits,
/// not from `n as i32`: Rust's float-to-int `as` saturates and maps NaN to 0, which LLVM
/// compiles lane by lane (a compare, two conditional moves and an insert per lane), and that
/// had made this function's vector loops mostly scalar. n is an integer in `[-126, 127]`
/// here, so both give the same bits (test `exp_scale_matches_the_integer_conversion`).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: the sum with an integer of magnitude below 2^22 is exact and holds it,
    // two's complement, in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let tiny = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    let k = (n + SHIFTER).to_bits().wrapping_sub(SHIFTER.to_bits());
    let scale = f32::from_bits(k.wrapping_add(127) << 23);
    if tiny { 0.0 } else { e * scale }
}

/// `gelu(x + bias)` over the last dimension of `x [.., n]` (`bias [n]`), the exact GELU of
/// [`crate::mlp::gelu_exact`] computed the same way, in one pass.
pub fn bias_gelu<const D: usize>(x: Tensor<D>, bias: &[f32]) -> Tensor<D> {
    let device = x.device();
    let n = bias.len();
    debug_assert_eq!(x.dims()[D - 1], n);
    let mut data = host(x);
    values(&mut data)
        .par_chunks_mut(n * ROWS_PER_TASK)
        .for_each(|rows| bias_gelu_rows(rows, bias));
    Tensor::from_data(data, &device)
}

/// [`bias_gelu_loop`] with the widest vectors the CPU has.
fn bias_gelu_rows(v: &mut [f32], bias: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { bias_gelu_avx512(v, bias) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { bias_gelu_avx2(v, bias) };
            return;
        }
    }
    bias_gelu_loop(v, bias);
}

/// The bias + GELU loop, inlined into each target-feature variant so that it vectorises.
#[inline(always)]
fn bias_gelu_loop(v: &mut [f32], bias: &[f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for row in v.chunks_exact_mut(bias.len()) {
        for (e, b) in row.iter_mut().zip(bias) {
            let x = *e + b;
            *e = 0.5 * x * (1.0 + erf_f32(x * FRAC_1_SQRT_2));
        }
    }
}

/// [`bias_gelu_loop`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bias_gelu_avx512(v: &mut [f32], bias: &[f32]) {
    bias_gelu_loop(v, bias);
}

/// [`bias_gelu_loop`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bias_gelu_avx2(v: &mut [f32], bias: &[f32]) {
    bias_gelu_loop(v, bias);
}

/// The weights of a layer norm on the host: `gamma [n]`, `beta [n]`, epsilon.
pub struct HostNorm {
    /// Scale.
    pub gamma: Vec<f32>,
    /// Shift.
    pub beta: Vec<f32>,
    /// Epsilon.
    pub eps: f32,
}

/// `layer_norm(y + bias + residual)` over the last dimension (`y`, `residual` `[.., n]`,
/// `bias [n]`), biased variance as PyTorch, in one pass over each row.
pub fn bias_residual_layer_norm<const D: usize>(
    y: Tensor<D>,
    bias: Option<&[f32]>,
    residual: Tensor<D>,
    norm: &HostNorm,
) -> Tensor<D> {
    let device = y.device();
    let n = y.dims()[D - 1];
    debug_assert_eq!(residual.dims(), y.dims());
    let mut data = host(y);
    let res = host(residual);
    let r = values_ref(&res);
    values(&mut data)
        .par_chunks_mut(n * ROWS_PER_TASK)
        .zip(r.par_chunks(n * ROWS_PER_TASK))
        .for_each(|(v, r)| residual_norm_rows(v, r, bias, norm));
    Tensor::from_data(data, &device)
}

/// [`residual_norm_loop`] with the widest vectors the CPU has.
fn residual_norm_rows(v: &mut [f32], r: &[f32], bias: Option<&[f32]>, norm: &HostNorm) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { residual_norm_avx512(v, r, bias, norm) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { residual_norm_avx2(v, r, bias, norm) };
            return;
        }
    }
    residual_norm_loop(v, r, bias, norm);
}

/// Lanes of the partial sums (so that the reductions vectorise).
const LANES: usize = 16;

/// Sum of a slice with [`LANES`] partial sums, in fixed-size blocks (no iterator adapters in
/// the loop: LLVM left `Zip` un-inlined there, a call per block out of the vectorised code).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed lanes: what vectorises
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (blocks, rest) = x.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for c in blocks {
        for j in 0..LANES {
            acc[j] += f(c[j]);
        }
    }
    let mut total: f32 = rest.iter().map(|e| f(*e)).sum();
    total += acc.iter().sum::<f32>();
    total
}

/// Maximum of a slice with [`LANES`] partial maxima (then the rest, then the lanes, in order);
/// also the fused head loss's row maximum ([`crate::head_loss`]).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed lanes: what vectorises
pub(crate) fn lane_max(x: &[f32]) -> f32 {
    let (blocks, rest) = x.as_chunks::<LANES>();
    let mut acc = [f32::NEG_INFINITY; LANES];
    for c in blocks {
        for j in 0..LANES {
            acc[j] = acc[j].max(c[j]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for e in rest.iter().chain(&acc) {
        m = m.max(*e);
    }
    m
}

/// The residual + layer-norm loop, inlined into each target-feature variant.
#[inline(always)]
fn residual_norm_loop(v: &mut [f32], r: &[f32], bias: Option<&[f32]>, norm: &HostNorm) {
    let n = norm.gamma.len();
    for (row, res) in v.chunks_exact_mut(n).zip(r.chunks_exact(n)) {
        match bias {
            Some(b) => {
                for ((e, x), bb) in row.iter_mut().zip(res).zip(b) {
                    *e += x + bb;
                }
            }
            None => {
                for (e, x) in row.iter_mut().zip(res) {
                    *e += x;
                }
            }
        }
        let mean = lane_sum(row, |e| e) / n as f32;
        let var = lane_sum(row, |e| (e - mean) * (e - mean)) / n as f32;
        let rstd = 1.0 / (var + norm.eps).sqrt();
        for ((e, g), bb) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *e = (*e - mean) * rstd * g + bb;
        }
    }
}

/// [`residual_norm_loop`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn residual_norm_avx512(v: &mut [f32], r: &[f32], bias: Option<&[f32]>, norm: &HostNorm) {
    residual_norm_loop(v, r, bias, norm);
}

/// [`residual_norm_loop`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn residual_norm_avx2(v: &mut [f32], r: &[f32], bias: Option<&[f32]>, norm: &HostNorm) {
    residual_norm_loop(v, r, bias, norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_a_few_ulp_of_the_exact_value() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = (-87.0 + 87.0 * f64::from(i) / 200_000.0) as f32;
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(
            worst < 4.0 * f64::from(f32::EPSILON),
            "relative error {worst:e}"
        );
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    /// `2^n` from the shifted sum's bits is `2^n` from `n as i32` for every `n` the clamped
    /// argument gives, and `exp_f32` keeps its special values.
    #[test]
    fn exp_scale_matches_the_integer_conversion() {
        const SHIFTER: f32 = 12_582_912.0;
        let lo = (-87.0f32 * std::f32::consts::LOG2_E + 0.5).floor();
        let hi = (88.0f32 * std::f32::consts::LOG2_E + 0.5).floor();
        assert_eq!((lo, hi), (-126.0, 127.0));
        for n in -126..=127 {
            let n = n as f32;
            let k = (n + SHIFTER).to_bits().wrapping_sub(SHIFTER.to_bits());
            let want = ((n as i32 + 127) as u32) << 23;
            assert_eq!(k.wrapping_add(127) << 23, want, "n = {n}");
        }
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), exp_f32(88.0));
        assert!(exp_f32(88.0).is_finite());
        assert_eq!(exp_f32(-87.0), (-87.0f64).exp() as f32);
    }

    /// The softmax as it was before its loops took fixed-size blocks (four passes, zipped
    /// lanes): the blocks must not change a bit.
    fn softmax_zipped(v: &mut [f32], n: usize) {
        for row in v.chunks_exact_mut(n) {
            let mut acc = [f32::NEG_INFINITY; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for c in &mut chunks {
                for (a, e) in acc.iter_mut().zip(c) {
                    *a = a.max(*e);
                }
            }
            let max = chunks
                .remainder()
                .iter()
                .chain(&acc)
                .fold(f32::NEG_INFINITY, |m, e| m.max(*e));
            for e in row.iter_mut() {
                *e = exp_f32(*e - max);
            }
            let mut acc = [0.0f32; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for c in &mut chunks {
                for (a, e) in acc.iter_mut().zip(c) {
                    *a += *e;
                }
            }
            let mut total: f32 = chunks.remainder().iter().sum();
            total += acc.iter().sum::<f32>();
            let inv = 1.0 / total;
            for e in row.iter_mut() {
                *e *= inv;
            }
        }
    }

    #[test]
    fn blocked_softmax_equals_the_zipped_loops_bit_for_bit() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in (1..=70).chain([128, 384, 511, 1000]) {
            // Scores with masked (-inf) keys, ties, signed zeros and a wide range.
            let mut v: Vec<f32> = (0..5 * n)
                .map(|_| match next() % 9 {
                    0 => f32::NEG_INFINITY,
                    1 => 0.0,
                    2 => -0.0,
                    3 => 3.25,
                    _ => ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 60.0,
                })
                .collect();
            // Every row sees at least one key.
            for row in v.chunks_exact_mut(n) {
                row[(next() as usize) % n] = 1.5;
            }
            let mut want = v.clone();
            softmax_zipped(&mut want, n);
            let mut got = v.clone();
            softmax_rows(&mut got, n);
            let mut plain = v;
            softmax_loop(&mut plain, n);
            for (i, ((w, g), p)) in want.iter().zip(&got).zip(&plain).enumerate() {
                assert!(w.is_finite(), "width {n}: finite at {i}");
                assert_eq!(w.to_bits(), g.to_bits(), "width {n} at {i}: {w} vs {g}");
                assert_eq!(w.to_bits(), p.to_bits(), "width {n} at {i}: {w} vs {p}");
            }
        }
    }

    #[test]
    fn vectorised_softmax_equals_the_plain_loop_and_sums_to_one() {
        let mut v: Vec<f32> = (0..7 * 37)
            .map(|i| ((i * 7919) % 113) as f32 * 0.1 - 5.0)
            .collect();
        let mut plain = v.clone();
        softmax_rows(&mut v, 37);
        softmax_loop(&mut plain, 37);
        assert_eq!(v, plain);
        for row in v.chunks_exact(37) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        }
    }
}
