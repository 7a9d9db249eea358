//! Few-row matrix products for decoding (`x [rows, in] · W [in, out]` with `rows <= 8`), and
//! the storage dtype of linear weights for inference ([`WeightDtype`]).
//!
//! A decode step multiplies one row per sequence by every weight matrix: the work is reading
//! the weights (memory-bound), which a general matmul does poorly at `rows = 1`. On Flex
//! (the `flex` feature), [`try_linear`] reads the weight in place (f32 or bf16, converted to
//! f32 in registers) and streams it once per call, each 8 × 16 block of weights loaded into
//! registers once for all the rows (AVX-512, with the next block prefetched), over bands of
//! weight rows (or column blocks, for wide outputs) split across the thread pool. Elsewhere (other backends, autodiff,
//! more rows) it declines and [`crate::Linear`] uses burn's `linear`.

use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Row counts up to this take [`try_linear`]'s kernel.
pub const MAX_ROWS: usize = 8;

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns [`try_linear`]'s kernel on or off for the whole process (on by default; off, every
/// product goes through burn's `linear`): for A/B measurements (`tilpass-compare`'s `_gemm`
/// benchmarks).
pub fn set_kernel_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Storage dtype of linear weights for inference ([`crate::DecoderLm::set_weight_dtype`]):
/// activations stay f32; half-precision weights halve the bytes a decode step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// 32-bit floats (as loaded).
    #[default]
    F32,
    /// bfloat16 (f32's exponent range, 8-bit mantissa; round-to-nearest-even from f32).
    Bf16,
    /// IEEE half precision (burn's generic path only: the weight is cast per product).
    F16,
}

impl WeightDtype {
    /// burn's dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }

    /// Parses `f32`, `bf16` or `f16`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" | "float32" => Some(Self::F32),
            "bf16" | "bfloat16" => Some(Self::Bf16),
            "f16" | "float16" => Some(Self::F16),
            _ => None,
        }
    }
}

/// `x [.., in] · w [in, out] + bias` with the few-row kernel when it applies (Flex tensors
/// outside autodiff, f32 input, f32 or bf16 contiguous weight, at most [`MAX_ROWS`] rows);
/// `None` otherwise (the caller then uses burn's `linear`).
#[cfg(feature = "flex")]
pub fn try_linear<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    let dims = x.dims();
    let [k, n] = w.dims();
    let rows: usize = dims[..D - 1].iter().product();
    if rows == 0
        || rows > MAX_ROWS
        || dims[D - 1] != k
        || x.dtype() != DType::F32
        || !ENABLED.load(std::sync::atomic::Ordering::Relaxed)
    {
        return None;
    }
    let wt = w.clone().try_into_primitive::<Flex>().ok()?;
    let xt = x.clone().try_into_primitive::<Flex>().ok()?;
    let bt = match bias {
        Some(b) => Some(b.clone().try_into_primitive::<Flex>().ok()?),
        None => None,
    };
    let plain =
        |t: &burn::backend::flex::FlexTensor| t.is_contiguous() && t.layout().start_offset() == 0;
    if !plain(&wt) || !plain(&xt) || bt.as_ref().is_some_and(|b| !plain(b)) {
        return None;
    }
    let xs = f32s(xt.bytes(), rows * k)?;
    let bs = match &bt {
        Some(b) if b.dtype() == DType::F32 => Some(f32s(b.bytes(), n)?),
        Some(_) => return None,
        None => None,
    };
    let mut out = vec![0f32; rows * n];
    match wt.dtype() {
        DType::F32 => products(xs, rows, k, f32s(wt.bytes(), k * n)?, n, bs, &mut out),
        DType::BF16 => products(xs, rows, k, u16s(wt.bytes(), k * n)?, n, bs, &mut out),
        _ => return None,
    }
    let mut shape = dims;
    shape[D - 1] = n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// Without the `flex` feature the kernel is not compiled: always `None`.
#[cfg(not(feature = "flex"))]
pub fn try_linear<const D: usize>(
    _x: &Tensor<D>,
    _w: &Tensor<2>,
    _bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    None
}

#[cfg(feature = "flex")]
pub(crate) fn f32s(bytes: &[u8], len: usize) -> Option<&[f32]> {
    // SAFETY: every bit pattern is a valid f32; alignment is checked by `align_to`.
    let (pre, v, _) = unsafe { bytes.align_to::<f32>() };
    (pre.is_empty() && v.len() >= len).then(|| &v[..len])
}

#[cfg(feature = "flex")]
fn u16s(bytes: &[u8], len: usize) -> Option<&[u16]> {
    // SAFETY: every bit pattern is a valid u16; alignment is checked by `align_to`.
    let (pre, v, _) = unsafe { bytes.align_to::<u16>() };
    (pre.is_empty() && v.len() >= len).then(|| &v[..len])
}

mod sealed {
    /// Implemented by `f32` and `u16` (bf16 bits) only: the vector kernel reads the weight
    /// memory as one of the two ([`super::WeightElem::BF16`]).
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
}

/// A weight element the kernel converts to f32: `f32`, or `u16` holding bf16 bits (sealed).
pub trait WeightElem: Copy + Send + Sync + sealed::Sealed {
    /// Whether the element is bf16 bits (`u16`) rather than `f32`.
    const BF16: bool;
    /// The value as f32.
    fn to_f32(self) -> f32;
}

impl WeightElem for f32 {
    const BF16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// bf16 bits: the high half of an f32.
impl WeightElem for u16 {
    const BF16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self) << 16)
    }
}

/// Widest column range of one tile (4 KiB of f32 per weight row: whole pages stream well).
const MAX_COLS: usize = 1024;

/// `out [rows, n] = x [rows, k] · w [k, n] (+ bias [n])` over rayon's pool. The weight is read
/// once, in long sequential runs: narrow outputs (`n <= 4096`) split the input dimension
/// across threads (each tile a contiguous band of weight rows, partial sums added after),
/// wide ones (the LM head) split columns into ranges of at most 1,024.
pub fn products<W: WeightElem>(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    assert!(x.len() >= rows * k && w.len() >= k * n && out.len() >= rows * n);
    let threads = rayon::current_num_threads();
    // (first weight row, rows, first column, columns) of each tile.
    let tiles: Vec<(usize, usize, usize, usize)> = if n <= 4 * MAX_COLS {
        let parts = (2 * threads).min(k.div_ceil(32)).max(1);
        let band = k.div_ceil(parts);
        (0..k)
            .step_by(band)
            .map(|i0| (i0, band.min(k - i0), 0, n))
            .collect()
    } else {
        (0..n)
            .step_by(MAX_COLS)
            .map(|c0| (0, k, c0, MAX_COLS.min(n - c0)))
            .collect()
    };
    let partial: Vec<Vec<f32>> = tiles
        .par_iter()
        .map(|&(i0, kr, c0, cw)| {
            let mut y = vec![0f32; rows * cw];
            tile(x, rows, k, w, n, (i0, kr, c0, cw), &mut y);
            y
        })
        .collect();
    for r in 0..rows {
        let o = &mut out[r * n..(r + 1) * n];
        match bias {
            Some(b) => o.copy_from_slice(&b[..n]),
            None => o.fill(0.0),
        }
        for (&(_, _, c0, cw), y) in tiles.iter().zip(&partial) {
            for (o, y) in o[c0..c0 + cw].iter_mut().zip(&y[r * cw..(r + 1) * cw]) {
                *o += y;
            }
        }
    }
}

/// One tile `(i0, kr, c0, cw)`: `y [rows, cw] += x[.., i0..i0 + kr] · w[i0..i0 + kr, c0..c0 + cw]`,
/// with the widest vectors the CPU has.
fn tile<W: WeightElem>(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[W],
    n: usize,
    t: (usize, usize, usize, usize),
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above).
            unsafe { tile_avx512(x, rows, k, w, n, t, y) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { tile_avx2(x, rows, k, w, n, t, y) };
            return;
        }
    }
    tile_loop(x, rows, k, w, n, t, y);
}

/// [`tile`] with AVX-512: eight weight rows at a time, each 16-column block of them loaded
/// once into registers (bf16 widened to f32 on the way) and applied to every input row's
/// accumulators (kept in `y`, in L1); the same block of the next eight rows is prefetched into
/// L2 meanwhile (one block ahead: the hardware prefetcher alone left decoding at ~65% of the
/// read bandwidth, `docs/benchmarks.md`). Columns past the last full 16 and rows past the last
/// full eight go through [`tile_loop`]'s scalar steps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile_avx512<W: WeightElem>(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[W],
    n: usize,
    (i0, kr, c0, cw): (usize, usize, usize, usize),
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    // Bounds the raw reads below: every weight index is `< (i0 + kr) * n` (rows of the band,
    // columns `c0 + c < c0 + cw <= n`), every input index `< rows * k`, every output `< rows * cw`.
    // Cannot fail: `products` (the only caller, through `tile`) asserts the slice lengths and
    // builds every tile inside `[0, k) × [0, n)` with a `y` of `rows * cw`; kept as the guard
    // of the unsafe reads.
    assert!(
        i0 + kr <= k
            && c0 + cw <= n
            && w.len() >= k * n
            && x.len() >= rows * k
            && y.len() >= rows * cw
    );
    let load = |p: *const W| -> __m512 {
        // SAFETY: `p` points at 16 elements inside `w` (callers' indices, bounded above).
        unsafe {
            if W::BF16 {
                let h = _mm256_loadu_si256(p.cast::<__m256i>());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            } else {
                _mm512_loadu_ps(p.cast::<f32>())
            }
        }
    };
    let full = cw / 16 * 16;
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = i0;
    while i + 8 <= i0 + kr {
        // SAFETY (this block): weight reads at `(i + j) * n + c0 + c` with `j < 8`, `c + 16 <=
        // full <= cw`, inside the band; prefetches (which never fault) one band block further
        // only when that block is inside the band; input reads at `r * k + i + j < rows * k`;
        // output reads and writes at `r * cw + c .. + 16 <= rows * cw`.
        unsafe {
            let base = w.as_ptr().add(i * n + c0);
            let ahead = (i + 16 <= i0 + kr).then(|| base.add(8 * n));
            let mut c = 0;
            while c < full {
                if let Some(pf) = ahead {
                    for j in 0..8 {
                        _mm_prefetch::<_MM_HINT_T1>(pf.add(j * n + c).cast::<i8>());
                    }
                }
                let wv: [__m512; 8] = std::array::from_fn(|j| load(base.add(j * n + c)));
                for r in 0..rows {
                    let xr = xp.add(r * k + i);
                    let yr = yp.add(r * cw + c);
                    let b = |j: usize| _mm512_set1_ps(*xr.add(j));
                    // Two accumulation chains (even and odd rows), added at the end.
                    let mut e = _mm512_fmadd_ps(wv[0], b(0), _mm512_loadu_ps(yr));
                    let mut o = _mm512_mul_ps(wv[1], b(1));
                    e = _mm512_fmadd_ps(wv[2], b(2), e);
                    o = _mm512_fmadd_ps(wv[3], b(3), o);
                    e = _mm512_fmadd_ps(wv[4], b(4), e);
                    o = _mm512_fmadd_ps(wv[5], b(5), o);
                    e = _mm512_fmadd_ps(wv[6], b(6), e);
                    o = _mm512_fmadd_ps(wv[7], b(7), o);
                    _mm512_storeu_ps(yr, _mm512_add_ps(e, o));
                }
                c += 16;
            }
        }
        for r in 0..rows {
            for c in full..cw {
                let mut s = y[r * cw + c];
                for j in 0..8 {
                    s = x[r * k + i + j].mul_add(w[(i + j) * n + c0 + c].to_f32(), s);
                }
                y[r * cw + c] = s;
            }
        }
        i += 8;
    }
    tile_loop(x, rows, k, w, n, (i, i0 + kr - i, c0, cw), y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<W: WeightElem>(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[W],
    n: usize,
    t: (usize, usize, usize, usize),
    y: &mut [f32],
) {
    tile_loop(x, rows, k, w, n, t, y);
}

/// Eight weight rows at a time (eight sequential streams: more loads in flight per output
/// vector, one load and store of the accumulators per eight products), then four, then one;
/// every input row against them while they are in L1.
#[inline(always)]
fn tile_loop<W: WeightElem>(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[W],
    n: usize,
    (i0, kr, c0, cw): (usize, usize, usize, usize),
    y: &mut [f32],
) {
    let wrow = |i: usize| &w[i * n + c0..i * n + c0 + cw];
    let mut i = i0;
    while i + 8 <= i0 + kr {
        let ws: [&[W]; 8] = std::array::from_fn(|j| wrow(i + j));
        for r in 0..rows {
            let xr: [f32; 8] = std::array::from_fn(|j| x[r * k + i + j]);
            let yr = &mut y[r * cw..(r + 1) * cw];
            for c in 0..cw {
                let mut s = yr[c];
                for j in 0..8 {
                    s = xr[j].mul_add(ws[j][c].to_f32(), s);
                }
                yr[c] = s;
            }
        }
        i += 8;
    }
    while i + 4 <= i0 + kr {
        let (w0, w1, w2, w3) = (wrow(i), wrow(i + 1), wrow(i + 2), wrow(i + 3));
        for r in 0..rows {
            let xr = &x[r * k + i..r * k + i + 4];
            let (a, b, c, d) = (xr[0], xr[1], xr[2], xr[3]);
            let yr = &mut y[r * cw..(r + 1) * cw];
            for ((((y, w0), w1), w2), w3) in yr.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                let mut s = *y;
                s = a.mul_add(w0.to_f32(), s);
                s = b.mul_add(w1.to_f32(), s);
                s = c.mul_add(w2.to_f32(), s);
                s = d.mul_add(w3.to_f32(), s);
                *y = s;
            }
        }
        i += 4;
    }
    while i < i0 + kr {
        let w0 = wrow(i);
        for r in 0..rows {
            let a = x[r * k + i];
            for (y, w0) in y[r * cw..(r + 1) * cw].iter_mut().zip(w0) {
                *y = a.mul_add(w0.to_f32(), *y);
            }
        }
        i += 1;
    }
}

/// bf16 bits of `v`, rounded to nearest even (as `torch.Tensor.to(torch.bfloat16)`).
pub fn bf16_bits(v: f32) -> u16 {
    if v.is_nan() {
        return 0x7FC0;
    }
    let b = v.to_bits();
    let round = 0x7FFF + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f64; rows * n];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..n {
                    out[r * n + j] += f64::from(x[r * k + i]) * f64::from(w[i * n + j]);
                }
            }
            for j in 0..n {
                out[r * n + j] += f64::from(b[j]);
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = tilpass_core::SplitMix64::from_state(seed);
        (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect()
    }

    #[test]
    fn products_match_a_plain_loop_for_every_row_count_and_ragged_widths() {
        for (rows, k, n) in [
            (1, 37, 200),
            (3, 64, 64),
            (5, 19, 130),
            (8, 128, 70),
            (2, 7, 5),
            (1, 301, 515),
            (8, 45, 1040),
            (3, 40, 5000),
            (1, 16, 4113),
        ] {
            let (x, w, b) = (values(rows * k, 1), values(k * n, 2), values(n, 3));
            let want = reference(&x, rows, k, &w, n, &b);
            let mut got = vec![0f32; rows * n];
            products(&x, rows, k, &w, n, Some(&b), &mut got);
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() < 1e-5 * (k as f32),
                    "{rows}x{k}x{n}: {g} vs {e}"
                );
            }
            // bf16 weights: the product of the rounded weights.
            let wb: Vec<u16> = w.iter().map(|&v| bf16_bits(v)).collect();
            let wr: Vec<f32> = wb.iter().map(|&v| v.to_f32()).collect();
            let want = reference(&x, rows, k, &wr, n, &b);
            products(&x, rows, k, &wb, n, Some(&b), &mut got);
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() < 1e-5 * (k as f32),
                    "bf16 {rows}x{k}x{n}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_bits(-2.5), 0xC020);
    }
}
