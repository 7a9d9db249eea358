//! Fused host kernels for decoder inference on Flex: RMS normalisation and the SwiGLU product
//! `silu(gate) · up`, each one pass over the rows instead of burn's five and three ops (each a
//! fresh buffer and a full pass), and attention read in place from the query / key / value head
//! views with the context written in the output projection's layout ([`try_attention`], with
//! the `flex` feature).
//!
//! Like [`crate::encoder_kernels`], they run when [`crate::encoder_kernels::usable`] says so (a
//! plain Flex f32 tensor outside autodiff) and [`enabled`]; every other backend, and training,
//! keeps burn's ops. The sums run in another order than burn's (last-bit differences).

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::encoder_kernels::{exp_f32, host, host_vec, usable, values, values_ref};

/// Rows per Rayon task.
const ROWS_PER_TASK: usize = 16;

/// Elements at or below which a kernel runs on the calling thread (a decode step's rows).
const SEQUENTIAL: usize = 32 * 1024;

/// Query rows per attention product, here and in the training kernel
/// ([`crate::train_kernels::attention`]): each block multiplies only over the keys its rows see
/// (causal masks: about half the products of long rows; at 256 queries, blocks of 64 do 62.5%
/// of the full products, which gemm runs at ~86% of its speed on the full `[256, 256]` ones on
/// a Zen 4 core).
#[cfg(feature = "flex")]
pub(crate) const QUERY_BLOCK: usize = 64;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the decoder kernels on or off for the whole process (on by default); off, every
/// decoder runs burn's ops. For in-process A/B timings.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the decoder kernels are on ([`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// True when the kernels run on `x`: on, and `x` a plain Flex f32 tensor outside autodiff.
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    enabled() && usable(x)
}

/// `w · x / sqrt(mean(x²) + eps)` over the last dimension of `x [.., n]` (`weight` the `[n]`
/// scale, as HF Llama / T5 compute it in f32), in place, one pass per row.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let device = x.device();
    let n = x.dims()[D - 1];
    if n == 0 {
        return x;
    }
    let w = host_vec(weight);
    debug_assert_eq!(w.len(), n);
    let mut data = host(x);
    let v = values(&mut data);
    if v.len() <= SEQUENTIAL {
        // A decode step's few rows: handing them to the pool costs more than the pass.
        rms_rows(v, &w, eps as f32);
    } else {
        v.par_chunks_mut(n * ROWS_PER_TASK)
            .for_each(|rows| rms_rows(rows, &w, eps as f32));
    }
    Tensor::from_data(data, &device)
}

/// `silu(gate) · up` elementwise (`gate`, `up` of one shape), written over `gate`'s buffer.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let device = gate.device();
    debug_assert_eq!(gate.dims(), up.dims());
    let mut g = host(gate);
    let u = host(up);
    let u = values_ref(&u);
    const CHUNK: usize = 4096;
    let gv = values(&mut g);
    if gv.len() <= SEQUENTIAL {
        silu_mul_chunk(gv, u);
    } else {
        gv.par_chunks_mut(CHUNK)
            .zip(u.par_chunks(CHUNK))
            .for_each(|(g, u)| silu_mul_chunk(g, u));
    }
    Tensor::from_data(g, &device)
}

/// Rotary position embeddings `x·cos + rotate_half(x)·sin` of `x [b, h, s, d]` read in place
/// (any non-negative strides with contiguous rows of `d`, such as the projections' head views
/// `[b, s, h, d]` swapped to `[b, h, s, d]`), with `cos` / `sin [b, 1, s, d]` from
/// [`crate::rope::Rope::cos_sin`], in one pass into a contiguous `[b, h, s, d]` output instead
/// of burn's six broadcasting ops: the same products and sums, so the same values. `None` when
/// it does not apply (kernels off, not Flex f32 tensors outside autodiff, other shapes or
/// layouts): the caller then runs burn's ops.
#[cfg(feature = "flex")]
pub fn try_rope(x: &Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<4>> {
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    if !enabled() || !usable(x) || !usable(cos) || !usable(sin) {
        return None;
    }
    let [b, h, s, d] = crate::rope::kernel_dims(x, cos, sin)?;
    let prim = |x: &Tensor<4>| x.clone().try_into_primitive::<Flex>().ok();
    let (xt, ct, st) = (prim(x)?, prim(cos)?, prim(sin)?);
    let (xs, [s0, s1, s2, s3, start]) = strided(&xt)?;
    if s3 != 1 {
        return None;
    }
    fn table(t: &burn::backend::flex::FlexTensor, len: usize) -> Option<&[f32]> {
        let plain = t.is_contiguous() && t.layout().start_offset() == 0;
        plain.then(|| crate::matvec::f32s(t.bytes(), len)).flatten()
    }
    let (cs, ss) = (table(&ct, b * s * d)?, table(&st, b * s * d)?);
    let y = rope_strided(xs, [s0, s1, s2, start], cs, ss, [b, h, s, d]);
    Some(Tensor::from_data(
        TensorData::new(y, [b, h, s, d]),
        &x.device(),
    ))
}

/// The forward rotation of `x` (`[b, h, s, d]` at strides `[s0, s1, s2]` from `start` in `xs`,
/// rows of `d` contiguous) with `cos` / `sin [b, 1, s, d]` (contiguous), into a contiguous
/// `[b, h, s, d]` buffer; (batch, head) blocks on the Rayon pool unless small. Every element
/// of `x` must lie in `xs` (as [`strided`] checks).
#[cfg(feature = "flex")]
pub(crate) fn rope_strided(
    xs: &[f32],
    [s0, s1, s2, start]: [isize; 4],
    cs: &[f32],
    ss: &[f32],
    [b, h, s, d]: [usize; 4],
) -> Vec<f32> {
    let mut y = vec![0f32; b * h * s * d];
    // One (batch, head) block of `s` rows.
    let block = |bh: usize, y: &mut [f32]| {
        let (bi, hi) = (bh / h, bh % h);
        let trig = bi * s * d..(bi + 1) * s * d;
        let (cb, sb) = (&cs[trig.clone()], &ss[trig]);
        for (si, yr) in y.chunks_exact_mut(d).enumerate() {
            // In the buffer: the caller's contract.
            let o = (start + bi as isize * s0 + hi as isize * s1 + si as isize * s2) as usize;
            let t = si * d..(si + 1) * d;
            crate::train_kernels::rope_rows(&xs[o..o + d], &cb[t.clone()], &sb[t], yr, d, false);
        }
    };
    if y.len() <= SEQUENTIAL {
        y.chunks_exact_mut(s * d)
            .enumerate()
            .for_each(|(bh, y)| block(bh, y));
    } else {
        y.par_chunks_exact_mut(s * d)
            .enumerate()
            .for_each(|(bh, y)| block(bh, y));
    }
    y
}

/// Without the `flex` feature nothing runs on the host: always `None`.
#[cfg(not(feature = "flex"))]
pub fn try_rope(_x: &Tensor<4>, _cos: &Tensor<4>, _sin: &Tensor<4>) -> Option<Tensor<4>> {
    None
}

/// Scaled dot-product attention of a decoder layer read in place from burn's tensors, with
/// the context written straight into the `[batch, seq, heads·head_dim]` layout the output
/// projection takes (no head transposes, no key/value head expansion, no mask broadcast):
/// `q [b, h, s, d]`, `k` / `v [b, kv, t, d]` with `h % kv == 0`, `mask [b, 1, s, t]` `true`
/// where a key is hidden (as [`crate::attention::attention`] takes it); a query row that sees
/// no key gets zeros. `None` when it does not apply (kernels off, not Flex f32 tensors
/// outside autodiff, not contiguous, other shapes): the caller then runs
/// [`crate::attention::attention`].
#[cfg(feature = "flex")]
pub fn try_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<4, burn::tensor::Bool>>,
    scale: f64,
) -> Option<Tensor<3>> {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::DType;

    if !enabled() || !usable(q) || !usable(k) || !usable(v) {
        return None;
    }
    let [b, h, s, d] = q.dims();
    let [bk, kv, t, dk] = k.dims();
    if bk != b || dk != d || v.dims() != [b, kv, t, d] || kv == 0 || h % kv != 0 || t == 0 {
        return None;
    }
    let prim = |x: &Tensor<4>| x.clone().try_into_primitive::<Flex>().ok();
    let (qt, kt, vt) = (prim(q)?, prim(k)?, prim(v)?);
    // Any layout with non-negative strides is read in place (the projections' head views,
    // `[b, s, h, d]` swapped to `[b, h, s, d]`, included).
    let (qs, qst) = strided(&qt)?;
    let (ks, kst) = strided(&kt)?;
    let (vs, vst) = strided(&vt)?;
    let mt: Option<FlexTensor> = match mask {
        Some(m) if m.dims() == [b, 1, s, t] => {
            let p = m.clone().try_into_primitive::<Flex>().ok()?;
            let plain = p.is_contiguous() && p.layout().start_offset() == 0;
            Some((plain && matches!(p.dtype(), DType::Bool(_))).then_some(p)?)
        }
        Some(_) => return None,
        None => None,
    };
    // Flex stores a bool as one byte, 0 or 1.
    let ms: Option<&[u8]> = match &mt {
        Some(m) => Some(m.bytes().get(..b * s * t)?),
        None => None,
    };
    // Per query row: one past the last key it sees (0: none).
    let limits: Vec<usize> = match ms {
        Some(ms) => ms
            .chunks_exact(t)
            .map(|row| {
                row.iter()
                    .rposition(|&hidden| hidden == 0)
                    .map_or(0, |j| j + 1)
            })
            .collect(),
        None => vec![t; b * s],
    };
    let hd = h * d;
    let mut out = vec![0f32; b * s * hd];
    let group = h / kv;
    let out_ptr = SendPtr(out.as_mut_ptr());
    let at = |st: &[isize; 5], i: usize, j: usize| {
        (st[4] + i as isize * st[0] + j as isize * st[1]) as usize
    };
    let task = |scores: &mut Vec<f32>, bh: usize| {
        let (bi, head) = (bh / h, bh % h);
        let kvh = head / group;
        let k = ks[at(&kst, bi, kvh)..].as_ptr();
        let v = vs[at(&vst, bi, kvh)..].as_ptr();
        for i0 in (0..s).step_by(QUERY_BLOCK) {
            let rows = (s - i0).min(QUERY_BLOCK);
            let lim = &limits[bi * s + i0..bi * s + i0 + rows];
            // Keys past the last one any query of the block sees are skipped (causal
            // masks: about half the products of a prefill).
            let tb = lim.iter().copied().max().unwrap_or(0);
            if tb == 0 {
                continue; // no query of the block sees a key: zeros
            }
            let q = qs[at(&qst, bi, head) + i0 * qst[2] as usize..].as_ptr();
            // The product overwrites the block (gemm without reading its destination), so
            // the buffer grows only when a block needs more, instead of a zero-fill per block.
            if scores.len() < rows * tb {
                scores.resize(rows * tb, 0.0);
            }
            let scores = &mut scores[..rows * tb];
            // SAFETY: `strided` checked that every element of q, k and v lies in its
            // buffer; q rows i0 .. i0 + rows are read as [rows, d] (row stride qst[2],
            // column stride qst[3]), keys 0 .. tb as kᵀ [d, tb]; `scores` is [rows, tb].
            unsafe {
                gemm::gemm(
                    rows,
                    tb,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    tb as isize,
                    false,
                    q,
                    qst[3],
                    qst[2],
                    k,
                    kst[2],
                    kst[3],
                    0.0,
                    scale as f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            if let Some(ms) = ms {
                for (r, row) in scores.chunks_exact_mut(tb).enumerate() {
                    let at_row = (bi * s + i0 + r) * t;
                    let (row, hidden) = (&mut row[..tb], &ms[at_row..at_row + tb]);
                    // Indexed, not zipped: LLVM left the `Zip` here un-inlined.
                    for j in 0..tb {
                        if hidden[j] != 0 {
                            row[j] = f32::NEG_INFINITY;
                        }
                    }
                    if lim[r] == 0 {
                        row.fill(0.0);
                    }
                }
            }
            crate::encoder_kernels::softmax_rows(scores, tb);
            for (r, row) in scores.chunks_exact_mut(tb).enumerate() {
                if lim[r] == 0 {
                    row.fill(0.0);
                }
            }
            // SAFETY: this task writes rows bi·s + i0 .. + rows, columns head·d .. + d of
            // `out` [b·s, h·d] (row stride h·d): a block no other task writes; `scores` is
            // [rows, tb]; values 0 .. tb are read as [tb, d] (row stride vst[2], column
            // vst[3]).
            unsafe {
                let dst = out_ptr.get().add((bi * s + i0) * hd + head * d);
                gemm::gemm(
                    rows,
                    d,
                    tb,
                    dst,
                    1,
                    hd as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    tb as isize,
                    v,
                    vst[3],
                    vst[2],
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    };
    if b * h * s * t * d <= SEQUENTIAL * 64 {
        // A decode step's products: handing them to the pool costs more than the work.
        let mut scores = Vec::new();
        for bh in 0..b * h {
            task(&mut scores, bh);
        }
    } else {
        (0..b * h).into_par_iter().for_each_init(Vec::new, task);
    }
    Some(Tensor::from_data(
        burn::tensor::TensorData::new(out, [b, s, hd]),
        &q.device(),
    ))
}

/// Without the `flex` feature the kernel is not compiled: always `None`.
#[cfg(not(feature = "flex"))]
pub fn try_attention(
    _q: &Tensor<4>,
    _k: &Tensor<4>,
    _v: &Tensor<4>,
    _mask: Option<&Tensor<4, burn::tensor::Bool>>,
    _scale: f64,
) -> Option<Tensor<3>> {
    None
}

/// A 4-d f32 Flex tensor's whole buffer with its strides and start (`[s0, s1, s2, s3,
/// start]`, in elements), when every stride is non-negative and every element lies in the
/// buffer.
#[cfg(feature = "flex")]
pub(crate) fn strided(x: &burn::backend::flex::FlexTensor) -> Option<(&[f32], [isize; 5])> {
    let (buf, st, start) = strided_dims::<4>(x)?;
    Some((buf, [st[0], st[1], st[2], st[3], start as isize]))
}

/// An `N`-d f32 Flex tensor's whole buffer with its strides (in elements) and start offset,
/// when every stride is non-negative and every element lies in the buffer.
#[cfg(feature = "flex")]
pub(crate) fn strided_dims<const N: usize>(
    x: &burn::backend::flex::FlexTensor,
) -> Option<(&[f32], [isize; N], usize)> {
    if x.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let l = x.layout();
    let (shape, st) = (l.shape(), l.strides());
    if shape.num_dims() != N || st.len() != N || st.iter().any(|&v| v < 0) {
        return None;
    }
    let buf: &[f32] = x.storage::<f32>();
    let last: usize = (0..N).map(|i| (shape[i].max(1) - 1) * st[i] as usize).sum();
    if l.start_offset() + last >= buf.len() {
        return None;
    }
    Some((buf, std::array::from_fn(|i| st[i]), l.start_offset()))
}

/// A raw pointer Rayon tasks share (here and in [`crate::train_kernels`]); each task writes
/// its own disjoint block.
#[cfg(feature = "flex")]
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

#[cfg(feature = "flex")]
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }

    /// The pointer `off` elements further on.
    pub(crate) fn at(self, off: usize) -> *mut f32 {
        // SAFETY: callers stay inside the allocation the pointer was made from.
        unsafe { self.0.add(off) }
    }
}

// SAFETY: the tasks write disjoint blocks of the buffer (see `try_attention` and the training
// kernels), which outlives them (the parallel loop ends before it is read).
#[cfg(feature = "flex")]
unsafe impl Send for SendPtr {}
// SAFETY: as above.
#[cfg(feature = "flex")]
unsafe impl Sync for SendPtr {}

macro_rules! vectorised {
    ($vis:vis $name:ident, $loop:ident, ($($arg:ident: $ty:ty),*)) => {
        /// The loop with the widest vectors the CPU has.
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $loop($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $loop($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    unsafe { avx512($($arg),*) };
                    return;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            $loop($($arg),*)
        }
    };
}
#[cfg(feature = "flex")]
pub(crate) use vectorised;

vectorised!(rms_rows, rms_loop, (v: &mut [f32], w: &[f32], eps: f32));
vectorised!(silu_mul_chunk, silu_mul_loop, (g: &mut [f32], u: &[f32]));

/// Lanes of the partial sums (so that the sum of squares vectorises).
const LANES: usize = 16;

/// The lanes in fixed-size blocks, indexed (a zipped lane loop is what LLVM left un-inlined in
/// the softmax passes: a call per block out of the vectorised code).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexed lanes: what vectorises
fn rms_loop(v: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for row in v.chunks_exact_mut(n) {
        let mut acc = [0.0f32; LANES];
        let (blocks, rest) = row.as_chunks::<LANES>();
        for c in blocks {
            for j in 0..LANES {
                acc[j] += c[j] * c[j];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for x in rest {
            sum += x * x;
        }
        let inv = 1.0 / (sum / n as f32 + eps).sqrt();
        for (x, wi) in row.iter_mut().zip(w) {
            *x = wi * (*x * inv);
        }
    }
}

#[inline(always)]
fn silu_mul_loop(g: &mut [f32], u: &[f32]) {
    for (x, y) in g.iter_mut().zip(u) {
        *x = *x / (1.0 + exp_f32(-*x)) * y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A fixed spread of values in about [-6, 6], large and small.
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (h % 12_001) as f32 / 1000.0 - 6.0
            })
            .collect()
    }

    #[test]
    fn rms_rows_match_a_double_precision_reference() {
        // Widths below, at and past the lane count, with a remainder.
        for n in [1, 7, 16, 37, 512] {
            let rows = 5;
            let x = values(rows * n, 1);
            let w = values(n, 2);
            let eps = 1e-6;
            let mut got = x.clone();
            rms_rows(&mut got, &w, eps);
            for r in 0..rows {
                let row = &x[r * n..(r + 1) * n];
                let ms: f64 = row
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    / n as f64;
                let inv = 1.0 / (ms + f64::from(eps)).sqrt();
                for j in 0..n {
                    let want = f64::from(w[j]) * f64::from(row[j]) * inv;
                    let g = f64::from(got[r * n + j]);
                    assert!(
                        (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "n {n} row {r} col {j}: {g} vs {want}"
                    );
                }
            }
        }
    }

    /// The composed ops of [`crate::rope::apply_rope`] without the kernels.
    #[cfg(feature = "flex")]
    fn composed_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
        let x2 = x.clone().slice([0..b, 0..h, 0..s, d / 2..d]);
        x * cos.clone() + Tensor::cat(vec![x2.neg(), x1], 3) * sin.clone()
    }

    #[cfg(feature = "flex")]
    #[test]
    fn rope_is_bit_identical_to_the_composed_ops() {
        use burn::tensor::{Device, Distribution};
        let dev = Device::flex();
        let rope = crate::rope::Rope {
            inv_freq: (0..8).map(|i| 10_000f32.powf(-(i as f32) / 8.0)).collect(),
            attention_scaling: 1.0,
        };
        // Batch 2, 3 heads, 5 positions, head_dim 16: the head view of a projection
        // (`[b, s, h, d]` swapped, strided) as the layers pass it, a contiguous tensor, and a
        // decode step's single position.
        for (s, offset) in [(5usize, 0i64), (1, 7)] {
            let positions: Vec<i64> = (0..2).flat_map(|_| offset..offset + s as i64).collect();
            let (cos, sin) = rope.cos_sin(&positions, 2, s, &dev);
            let proj = Tensor::<3>::random([2, s, 48], Distribution::Default, &dev);
            let view = proj.reshape([2, s, 3, 16]).swap_dims(1, 2);
            let plain = Tensor::<4>::random([2, 3, s, 16], Distribution::Default, &dev);
            for x in [view, plain] {
                let got = try_rope(&x, &cos, &sin).expect("the kernel applies");
                let want = composed_rope(x, &cos, &sin);
                assert_eq!(got.dims(), want.dims());
                let (g, w) = (got.into_data(), want.into_data());
                let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
                assert_eq!(g.len(), w.len());
                for (i, (a, e)) in g.iter().zip(w).enumerate() {
                    assert!(a.to_bits() == e.to_bits(), "element {i}: {a} vs {e}");
                }
            }
        }
        // Shapes it does not take: an odd head_dim, tables of another length.
        let x = Tensor::<4>::random([1, 2, 3, 5], Distribution::Default, &dev);
        let t = Tensor::<4>::ones([1, 1, 3, 5], &dev);
        assert!(try_rope(&x, &t, &t).is_none());
        let x = Tensor::<4>::random([1, 2, 3, 4], Distribution::Default, &dev);
        let t = Tensor::<4>::ones([1, 1, 2, 4], &dev);
        assert!(try_rope(&x, &t, &t).is_none());
    }

    #[test]
    fn silu_mul_matches_a_double_precision_reference() {
        let mut g = values(1001, 3);
        g.extend([-100.0, -88.5, 88.5, 100.0, 0.0]);
        let u = values(g.len(), 4);
        let mut got = g.clone();
        silu_mul_chunk(&mut got, &u);
        for ((&x, &y), &o) in g.iter().zip(&u).zip(&got) {
            let (x, y) = (f64::from(x), f64::from(y));
            let want = x / (1.0 + (-x).exp()) * y;
            assert!(o.is_finite(), "{x}: {o}");
            assert!(
                (f64::from(o) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "silu({x}) * {y}: {o} vs {want}"
            );
        }
    }
}
