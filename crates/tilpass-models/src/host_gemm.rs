//! Products on the host for Flex tensors read in place: `with_host_f32` borrows a tensor's
//! f32 buffer, `gemm_into` multiplies strided f32 matrices with gemm into a caller's buffer
//! (used by the fused LM-head loss and the packed encoder layers).

use burn::tensor::Tensor;

/// Runs `f` on the f32 values of `w` read in place (no copy), `None` when `w` is not a
/// contiguous Flex f32 tensor (autodiff's wrapper is looked through: for tensors that take
/// no gradient).
#[cfg(feature = "flex")]
pub(crate) fn with_host_f32<R>(w: &Tensor<2>, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    use burn::backend::Flex;
    use burn::tensor::DType;
    let t = w.clone().inner().try_into_primitive::<Flex>().ok()?;
    if !t.is_contiguous() || t.layout().start_offset() != 0 || t.dtype() != DType::F32 {
        return None;
    }
    let len = w.dims().iter().product();
    Some(f(crate::matvec::f32s(t.bytes(), len)?))
}

/// Without the `flex` feature nothing is read in place: always `None`.
#[cfg(not(feature = "flex"))]
pub(crate) fn with_host_f32<R>(_w: &Tensor<2>, _f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    None
}

/// `dst = lhs · rhs` for f32 matrices given as `(pointer, column stride, row stride)` in
/// elements, `(m, n, k)` = (rows of dst, columns of dst, inner size); dst is overwritten.
///
/// # Safety
/// Every element `dst[i, j]`, `lhs[i, l]`, `rhs[l, j]` for `i < m`, `j < n`, `l < k` reached
/// through the strides must lie inside its allocation, and dst must not overlap the operands.
pub(crate) unsafe fn gemm_into(
    dims: (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's contract is `gemm_f32`'s.
    unsafe { gemm_f32(dims, dst, lhs, rhs, par, false) }
}

/// `lhs · rhs` as a fresh row-major `[m, n]` vector, operands as for [`gemm_into`]. On x86_64
/// the vector is not zero-filled first: gemm told not to read its destination writes every
/// element of it without reading any (its x86 kernels, the matrix-vector, vector-vector,
/// small-matrix and `k = 0` paths all store `beta · product` when `alpha` is 0; the test
/// `fresh_products_do_not_read_the_destination` checks every path with a destination full of
/// NaN). A zero-fill of every product's output was 2-3% of a LoRA step and of a prefill.
///
/// # Safety
/// Every element `lhs[i, l]`, `rhs[l, j]` for `i < m`, `j < n`, `l < k` reached through the
/// strides must lie inside its allocation.
#[cfg(feature = "flex")]
pub(crate) unsafe fn gemm_new(
    (m, n, k): (usize, usize, usize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    par: gemm::Parallelism,
) -> Vec<f32> {
    let len = m * n;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    if cfg!(not(target_arch = "x86_64")) {
        v.resize(len, 0.0); // gemm's other kernels were not checked
    }
    // SAFETY: the caller's contract for the operands; the destination is `v`'s allocation of
    // `len` = m·n values, row-major, new (no overlap). gemm writes each of them and reads none
    // (see above), so all `len` are initialised when it returns.
    unsafe {
        gemm_f32(
            (m, n, k),
            (v.as_mut_ptr(), 1, n as isize),
            lhs,
            rhs,
            par,
            false,
        );
        v.set_len(len);
    }
    v
}

/// `dst += lhs · rhs` (gemm adds the finished product to each `dst` element: one rounding),
/// with operands as for [`gemm_into`].
///
/// # Safety
/// As [`gemm_into`].
#[cfg(feature = "flex")]
pub(crate) unsafe fn gemm_acc(
    dims: (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's contract is `gemm_f32`'s.
    unsafe { gemm_f32(dims, dst, lhs, rhs, par, true) }
}

/// gemm's f32 product into `dst`, overwriting it or (`accumulate`) adding to it.
///
/// # Safety
/// As [`gemm_into`].
unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    par: gemm::Parallelism,
    accumulate: bool,
) {
    let alpha = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the caller's contract is gemm's.
    unsafe {
        gemm::gemm(
            m, n, k, dst.0, dst.1, dst.2, accumulate, lhs.0, lhs.1, lhs.2, rhs.0, rhs.1, rhs.2,
            alpha, 1.0, false, false, false, par,
        )
    };
}

/// gemm's threading for a product of `work` multiply-adds: the Rayon pool when it has more
/// than one thread and the work is worth splitting (over 2^18), else the calling thread.
pub(crate) fn parallelism(work: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && work > 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// burn-flex's threshold for a parallel product (`m·n·k` multiply-adds; `ops/matmul.rs`).
#[cfg(feature = "flex")]
const FLEX_PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// burn-flex's matmul threading for an `[m, k] · [k, n]` product: the whole pool from its
/// threshold on, else the calling thread.
#[cfg(feature = "flex")]
pub(crate) fn flex_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m.saturating_mul(n).saturating_mul(k) >= FLEX_PARALLEL_THRESHOLD {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// A 2-d f32 Flex tensor: its buffer, `(column stride, row stride)` and start, when every
/// stride is non-negative and every element lies in the buffer.
#[cfg(feature = "flex")]
fn matrix(t: &burn::backend::flex::FlexTensor) -> Option<(&[f32], isize, isize, usize)> {
    let (buf, [rs, cs], start) = crate::decoder_kernels::strided_dims::<2>(t)?;
    Some((buf, cs, rs, start))
}

/// `x [m, k] · w [k, n] (+ bias [n])` for Flex f32 tensors outside autodiff (any non-negative
/// strides), computed as burn's `linear` computes it — the same gemm call as burn-flex's
/// matmul (strides, parallelism), then the bias added — so the values are bit-identical, but
/// written into a buffer that becomes the output tensor as it is: burn-flex allocates a
/// matmul's output with `FlexTensor::empty`, whose byte vector is copied once more to meet its
/// alignment (a zero-fill and a copy of every product's output; 3-4% of a prefill).
/// `None` when it does not apply (other backends, autodiff, other dtypes, empty shapes).
#[cfg(feature = "flex")]
pub(crate) fn try_linear(
    x: &Tensor<2>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    let ([m, k], [kw, n]) = (x.dims(), w.dims());
    if k != kw || m == 0 || n == 0 || k == 0 {
        return None;
    }
    let xt = x.clone().try_into_primitive::<Flex>().ok()?;
    let wt = w.clone().try_into_primitive::<Flex>().ok()?;
    let (xs, xcs, xrs, xo) = matrix(&xt)?;
    let (ws, wcs, wrs, wo) = matrix(&wt)?;
    let bt = match bias {
        Some(b) => {
            let b = b.clone().try_into_primitive::<Flex>().ok()?;
            let plain = b.is_contiguous() && b.layout().start_offset() == 0;
            if !plain || b.dtype() != burn::tensor::DType::F32 {
                return None;
            }
            Some(b)
        }
        None => None,
    };
    let bs = match &bt {
        Some(b) => Some(crate::matvec::f32s(b.bytes(), n)?),
        None => None,
    };
    let par = flex_parallelism(m, n, k);
    // SAFETY: `matrix` checked that every element of x ([m, k]) and w ([k, n]) reached through
    // their strides lies in its buffer.
    let mut out = unsafe {
        gemm_new(
            (m, n, k),
            (xs[xo..].as_ptr(), xcs, xrs),
            (ws[wo..].as_ptr(), wcs, wrs),
            par,
        )
    };
    if let Some(b) = bs {
        for row in out.chunks_exact_mut(n) {
            for (o, b) in row.iter_mut().zip(b) {
                *o += b;
            }
        }
    }
    Some(Tensor::from_data(TensorData::new(out, [m, n]), &x.device()))
}

/// Without the `flex` feature nothing runs on the host: always `None`.
#[cfg(not(feature = "flex"))]
pub(crate) fn try_linear(
    _x: &Tensor<2>,
    _w: &Tensor<2>,
    _bias: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    None
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn try_linear_is_bit_identical_to_burns_linear() {
        let dev = device();
        // Small (one thread) and over burn-flex's parallel threshold; with and without bias;
        // the weight contiguous and as a transposed view.
        for (m, k, n) in [(3, 5, 7), (1, 64, 9), (300, 200, 250), (512, 256, 384)] {
            let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev);
            let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &dev);
            let wt = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &dev).transpose();
            let b = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &dev);
            for (w, bias) in [(&w, None), (&w, Some(&b)), (&wt, Some(&b))] {
                let want = burn::tensor::module::linear(x.clone(), w.clone(), bias.cloned());
                let got = super::try_linear(&x, w, bias).expect("applies to Flex f32");
                let (g, e) = (
                    got.into_data().try_to_vec::<f32>().unwrap(),
                    want.into_data().try_to_vec::<f32>().unwrap(),
                );
                assert_eq!(g.len(), e.len());
                for (i, (g, e)) in g.iter().zip(&e).enumerate() {
                    assert_eq!(g.to_bits(), e.to_bits(), "{m}x{k}x{n} at {i}: {g} vs {e}");
                }
            }
        }
        // Autodiff tensors are left to burn.
        let ad = dev.autodiff();
        let x = Tensor::<2>::ones([2, 3], &ad);
        let w = Tensor::<2>::ones([3, 4], &ad);
        assert!(super::try_linear(&x, &w, None).is_none());
    }

    /// gemm told not to read its destination must not: every path of gemm 0.19 (the packed
    /// kernels with edge tiles, matrix-vector, vector-vector, small-matrix, `k = 0`, one thread
    /// and the pool, transposed operands) gives the same bits over a destination of NaN as
    /// over zeros, so [`super::gemm_new`] may hand it memory that was never written.
    #[test]
    fn fresh_products_do_not_read_the_destination() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let shapes = [
            (1, 1, 1),
            (1, 37, 64),
            (37, 1, 64),
            (5, 7, 1),
            (16, 16, 9),
            (3, 5, 0),
            (65, 7, 33),
            (64, 48, 512),
            (300, 200, 100),
            (1024, 96, 64),
        ];
        for (m, n, k) in shapes {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(2)] {
                // Row-major operands, and the left one read as a transposed view.
                let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                let ops = [
                    (
                        (a.as_ptr(), 1isize, k as isize),
                        (b.as_ptr(), 1isize, n as isize),
                    ),
                    (
                        (at.as_ptr(), m as isize, 1isize),
                        (b.as_ptr(), 1isize, n as isize),
                    ),
                ];
                for (lhs, rhs) in ops {
                    let run = |fill: f32| {
                        let mut d = vec![fill; m * n];
                        // SAFETY: a / at are [m, k], b is [k, n], d is [m, n]; no overlap.
                        unsafe {
                            super::gemm_into(
                                (m, n, k),
                                (d.as_mut_ptr(), 1, n as isize),
                                lhs,
                                rhs,
                                par,
                            )
                        };
                        d
                    };
                    let (zero, nan) = (run(0.0), run(f32::NAN));
                    // SAFETY: as above.
                    let fresh = unsafe { super::gemm_new((m, n, k), lhs, rhs, par) };
                    assert_eq!(fresh.len(), m * n);
                    for (i, ((z, x), f)) in zero.iter().zip(&nan).zip(&fresh).enumerate() {
                        assert!(z.is_finite(), "{m}x{n}x{k}: finite product at {i}");
                        assert_eq!(z.to_bits(), x.to_bits(), "{m}x{n}x{k} at {i}: read NaN");
                        assert_eq!(z.to_bits(), f.to_bits(), "{m}x{n}x{k} at {i}: gemm_new");
                    }
                }
            }
        }
    }
}
