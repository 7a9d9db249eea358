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
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    par: gemm::Parallelism,
) {
    // SAFETY: the caller's contract is gemm's.
    unsafe {
        gemm::gemm(
            m, n, k, dst.0, dst.1, dst.2, false, lhs.0, lhs.1, lhs.2, rhs.0, rhs.1, rhs.2, 0.0,
            1.0, false, false, false, par,
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
