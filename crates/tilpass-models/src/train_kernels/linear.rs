//! A linear layer with a frozen weight, and at most one LoRA branch, as one recorded
//! operation: `y = x·W (+ bias) + s·(x·A)·B` with gradients for `x`, `A` and `B`.
//!
//! burn records the same layer as three to six operations (two or three products, the scaling,
//! the sum, the bias), each output a fresh buffer that burn-flex zero-fills and copies once more
//! for alignment, and sums the two gradients of `x` in a separate pass. Here every product is
//! one gemm call into a buffer that becomes the tensor as it is, and the backward accumulates
//! `dh·Aᵀ` into `g·Wᵀ` inside gemm. The arithmetic is burn's, operation for operation (the same
//! gemm products, `s·t` rounded before it is added, `g·s` formed before the adapter's
//! products), so outputs and gradients are bit-identical to the composed ops (unit test); only
//! the order in which a shared input's gradients from several layers are summed can differ.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::{contiguous, flex, incoming, record, slice, tracked};
use crate::host_gemm::{flex_parallelism, gemm_acc, gemm_new};

/// One LoRA branch for [`linear`]: `A [in, r]`, `B [r, out]` and the scale `s`.
pub struct Branch<'a> {
    /// `A`, `[in, r]`.
    pub a: &'a Tensor<2>,
    /// `B`, `[r, out]`.
    pub b: &'a Tensor<2>,
    /// `s` (`lora_alpha / r`, or `/ √r` with rsLoRA).
    pub scale: f64,
}

/// A matrix operand read in place: the buffer from its first element, column and row strides.
#[derive(Debug, Clone, Copy)]
struct Mat {
    ptr: *const f32,
    cs: isize,
    rs: isize,
}

impl Mat {
    /// The transpose, the same buffer read the other way.
    fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            cs: self.rs,
            rs: self.cs,
        }
    }

    /// A row-major `[rows, cols]` buffer.
    fn rows(v: &[f32], cols: usize) -> Self {
        Self {
            ptr: v.as_ptr(),
            cs: 1,
            rs: cols as isize,
        }
    }

    fn pair(self) -> (*const f32, isize, isize) {
        (self.ptr, self.cs, self.rs)
    }
}

/// A 2-d f32 tensor checked once to be readable in place (non-negative strides, every element
/// in its buffer), kept with its strides so that the backward reads it without checking again.
#[derive(Debug, Clone)]
struct Checked {
    t: FlexTensor,
    start: usize,
    cs: isize,
    rs: isize,
}

impl Checked {
    /// `t` when it can be read in place, else `None`.
    fn new(t: FlexTensor) -> Option<Self> {
        let (_, [rs, cs], start) = crate::decoder_kernels::strided_dims::<2>(&t)?;
        Some(Self { t, start, cs, rs })
    }

    /// The operand for gemm.
    fn mat(&self) -> Mat {
        Mat {
            ptr: self.t.storage::<f32>()[self.start..].as_ptr(),
            cs: self.cs,
            rs: self.rs,
        }
    }
}

/// `lhs · rhs` as a new row-major `[m, n]` vector, `k` inner ([`gemm_new`]: not zero-filled
/// first).
///
/// # Safety
/// `lhs` must reach `[m, k]` and `rhs` `[k, n]` elements inside their buffers.
unsafe fn product((m, n, k): (usize, usize, usize), lhs: Mat, rhs: Mat) -> Vec<f32> {
    // SAFETY: the caller's contract.
    unsafe { gemm_new((m, n, k), lhs.pair(), rhs.pair(), flex_parallelism(m, n, k)) }
}

#[derive(Debug)]
struct LinearOp;

#[derive(Debug, Clone)]
struct LinearState {
    /// `x [m, k]`, `W [k, n]` (as stored: any strides).
    x: Checked,
    w: Checked,
    /// `A [k, r]`, `B [r, n]`, `h = x·A [m, r]` and `s`, when there is a branch.
    lora: Option<(Checked, Checked, FlexTensor, f32)>,
    dims: (usize, usize, usize, usize),
}

// SAFETY (for the `unsafe` products below): every `Mat` comes from a `Checked` tensor whose
// shape is the one its product reads ([m, k], [k, n], [k, r], [r, n], checked in `linear`), or
// from `Mat::rows` on a buffer of exactly that size; destinations are fresh vectors.

impl Backward<Flex, 3> for LinearOp {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = incoming(&ops, grads);
        let [px, pa, pb] = ops.parents;
        let st = ops.state;
        let (m, n, k, r) = st.dims;
        let gs = slice(&g);
        let (xm, wm) = (st.x.mat(), st.w.mat());
        let gm = Mat::rows(gs, n);
        let mut dh: Option<Vec<f32>> = None;
        let mut am = None;
        if let Some((a, b, h, s)) = &st.lora
            && (px.is_some() || pa.is_some() || pb.is_some())
        {
            let bm = b.mat();
            am = Some(a.mat());
            // g·s, as burn's scalar product's backward forms it.
            // In blocks of plain loops: a per-element `par_iter().map()` called its closure
            // once per value (1.2% of a LoRA step).
            let mut g_s = gs.to_vec();
            g_s.par_chunks_mut(1 << 14).for_each(|c| {
                for v in c {
                    *v *= s;
                }
            });
            let gsm = Mat::rows(&g_s, n);
            if let Some(node) = pb {
                // SAFETY: see above (hᵀ [r, m], g·s [m, n]).
                let db = unsafe { product((r, n, m), Mat::rows(slice(h), r).t(), gsm) };
                grads.register::<Flex>(node.id, flex(db, &[r, n]));
            }
            if px.is_some() || pa.is_some() {
                // SAFETY: see above (g·s [m, n], Bᵀ [n, r]).
                let d = unsafe { product((m, r, n), gsm, bm.t()) };
                dh = Some(d);
            }
        }
        if let (Some(node), Some(d)) = (pa, &dh) {
            // SAFETY: see above (xᵀ [k, m], dh [m, r]).
            let da = unsafe { product((k, r, m), xm.t(), Mat::rows(d, r)) };
            grads.register::<Flex>(node.id, flex(da, &[k, r]));
        }
        if let Some(node) = px {
            // SAFETY: see above (g [m, n], Wᵀ [n, k]).
            let mut dx = unsafe { product((m, k, n), gm, wm.t()) };
            if let (Some(d), Some(a)) = (&dh, am) {
                // dx += dh·Aᵀ (gemm adds the finished product to dx: one rounding, as the
                // separate sum of the two gradients).
                // SAFETY: see above (dh [m, r], Aᵀ [r, k]); dx is [m, k].
                unsafe {
                    gemm_acc(
                        (m, k, r),
                        (dx.as_mut_ptr(), 1, k as isize),
                        Mat::rows(d, r).pair(),
                        a.t().pair(),
                        flex_parallelism(m, k, r),
                    )
                };
            }
            grads.register::<Flex>(node.id, flex(dx, &[m, k]));
        }
    }
}

/// `x [m, in] · W [in, out] (+ bias [out]) + s · (x·A)·B` for a frozen `W` (and bias) with at
/// most one LoRA branch, as [`crate::linear::Linear`] computes it with burn's ops, recorded as
/// one operation with the gradients for `x`, `A` and `B` (those that are tracked). `None`
/// when it does not apply: the kernels off, another backend or dtype, a trained `W` or bias,
/// mismatched or empty shapes.
pub fn linear(
    x: &Tensor<2>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    branch: Option<Branch<'_>>,
) -> Option<Tensor<2>> {
    let ([m, k], [kw, n]) = (x.dims(), w.dims());
    if k != kw || m == 0 || n == 0 || k == 0 {
        return None;
    }
    let (xt, wt) = (tracked(x)?, tracked(w)?);
    if wt.is_tracked() {
        return None;
    }
    let bias = match bias {
        Some(b) => {
            let bt = tracked(b)?;
            if bt.is_tracked() || b.dims() != [n] {
                return None;
            }
            Some(contiguous(bt.primitive()))
        }
        None => None,
    };
    let lora = match &branch {
        Some(br) => {
            let ([ka, r], [rb, nb]) = (br.a.dims(), br.b.dims());
            if ka != k || rb != r || nb != n || r == 0 {
                return None;
            }
            Some((tracked(br.a)?, tracked(br.b)?, br.scale as f32))
        }
        None => None,
    };
    let (xc, wc) = (
        Checked::new(xt.primitive().clone())?,
        Checked::new(wt.primitive().clone())?,
    );
    let (xm, wm) = (xc.mat(), wc.mat());
    // SAFETY: x is [m, k] and W [k, n] (dims checked above; `Checked` checked the buffers).
    let mut y = unsafe { product((m, n, k), xm, wm) };
    if let Some(b) = &bias {
        let b = slice(b);
        y.par_chunks_mut(n * 64).for_each(|rows| {
            for row in rows.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        });
    }
    let out_dims = [m, n];
    let Some((at, bt, s)) = lora else {
        let state = LinearState {
            x: xc,
            w: wc,
            lora: None,
            dims: (m, n, k, 0),
        };
        return Some(record(FrozenLinearOp, [&xt], state, flex(y, &out_dims)));
    };
    let r = at.primitive().layout().shape()[1];
    let (ac, bc) = (
        Checked::new(at.primitive().clone())?,
        Checked::new(bt.primitive().clone())?,
    );
    let (am, bm) = (ac.mat(), bc.mat());
    // SAFETY: x [m, k], A [k, r] (dims checked above).
    let h = unsafe { product((m, r, k), xm, am) };
    // SAFETY: h [m, r] (just made), B [r, n] (dims checked above).
    let t = unsafe { product((m, n, r), Mat::rows(&h, r), bm) };
    // y + (t·s): the scaled branch rounded, then added, as burn's two operations.
    y.par_chunks_mut(1 << 14)
        .zip(t.par_chunks(1 << 14))
        .for_each(|(y, t)| y.iter_mut().zip(t).for_each(|(y, t)| *y += t * s));
    let state = LinearState {
        x: xc,
        w: wc,
        lora: Some((ac, bc, flex(h, &[m, r]), s)),
        dims: (m, n, k, r),
    };
    Some(record(LinearOp, [&xt, &at, &bt], state, flex(y, &out_dims)))
}

/// [`LinearOp`] without a branch: the gradient for `x` only.
#[derive(Debug)]
struct FrozenLinearOp;

impl Backward<Flex, 1> for FrozenLinearOp {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = incoming(&ops, grads);
        let [px] = ops.parents;
        let Some(node) = px else { return };
        let st = ops.state;
        let (m, n, k, _) = st.dims;
        let wm = st.w.mat();
        // SAFETY: g [m, n] (row-major, from `incoming`), Wᵀ [n, k].
        let dx = unsafe { product((m, k, n), Mat::rows(slice(&g), n), wm.t()) };
        grads.register::<Flex>(node.id, flex(dx, &[m, k]));
    }
}

#[cfg(test)]
mod tests {
    //! The kernel against burn's autodiff of the composed layer (as `Linear` builds it from
    //! `burn::tensor::module::linear`), bit for bit: values and the gradients of `Σ y ⊙ r`.
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    fn bits<const D: usize>(t: &Tensor<D>) -> Vec<u32> {
        let v = t.to_data().try_to_vec::<f32>().expect("f32 values");
        assert!(v.iter().all(|x| x.is_finite()), "finite values");
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// `(y, dx, dA, dB)` bits of the kernel (`fused`) or the composed ops.
    fn run(
        x: &Tensor<2>,
        w: &Tensor<2>,
        bias: Option<&Tensor<1>>,
        ab: Option<(&Tensor<2>, &Tensor<2>)>,
        r: &Tensor<2>,
        fused: bool,
    ) -> Vec<Vec<u32>> {
        let s = 2.5;
        let x = x.clone().detach().require_grad();
        let ab = ab.map(|(a, b)| {
            (
                a.clone().detach().require_grad(),
                b.clone().detach().require_grad(),
            )
        });
        let y = if fused {
            let branch = ab.as_ref().map(|(a, b)| Branch { a, b, scale: s });
            linear(&x, w, bias, branch).expect("the kernel applies")
        } else {
            let base = burn::tensor::module::linear(x.clone(), w.clone(), bias.cloned());
            match &ab {
                Some((a, b)) => {
                    let h = burn::tensor::module::linear(x.clone(), a.clone(), None);
                    base + burn::tensor::module::linear(h, b.clone(), None).mul_scalar(s)
                }
                None => base,
            }
        };
        let grads = (y.clone() * r.clone()).sum().backward();
        let mut out = vec![bits(&y), bits(&x.grad(&grads).expect("dx"))];
        if let Some((a, b)) = &ab {
            out.push(bits(&a.grad(&grads).expect("dA")));
            out.push(bits(&b.grad(&grads).expect("dB")));
        }
        out
    }

    #[test]
    fn linear_is_bit_identical_to_the_composed_layer() {
        let dev = Device::flex().autodiff();
        // Small (one thread) and over burn-flex's parallel threshold; W read through a
        // transposed view, as a checkpoint's [out, in] weight is.
        for (m, k, n, rank) in [(7, 5, 3, 2), (300, 160, 200, 16)] {
            let x = randn([m, k], &dev);
            let w = randn([n, k], &dev).transpose();
            let bias = randn([n], &dev);
            let (a, b) = (randn([k, rank], &dev), randn([rank, n], &dev));
            let r = randn([m, n], &dev);
            for (bias, ab) in [
                (Some(&bias), Some((&a, &b))),
                (None, Some((&a, &b))),
                (Some(&bias), None),
                (None, None),
            ] {
                let want = run(&x, &w, bias, ab, &r, false);
                let got = run(&x, &w, bias, ab, &r, true);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.len(), w.len());
                    let off = g.iter().zip(w).filter(|(g, w)| g != w).count();
                    assert_eq!(off, 0, "{m}x{k}x{n}: output {i} differs in {off} values");
                }
            }
        }
    }

    #[test]
    fn linear_steps_aside_where_it_does_not_apply() {
        let dev = Device::flex().autodiff();
        let x = randn([4, 3], &dev);
        let w = randn([3, 2], &dev);
        // A trained weight, mismatched shapes, and inference (no autodiff).
        assert!(linear(&x, &w.clone().require_grad(), None, None).is_none());
        assert!(linear(&x, &randn([4, 2], &dev), None, None).is_none());
        let a = randn([3, 2], &dev);
        let b = randn([3, 2], &dev);
        let branch = Branch {
            a: &a,
            b: &b,
            scale: 1.0,
        };
        assert!(linear(&x, &w, None, Some(branch)).is_none());
        let plain = Device::flex();
        assert!(linear(&randn([4, 3], &plain), &randn([3, 2], &plain), None, None).is_none());
    }
}
