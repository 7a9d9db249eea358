//! Fused host kernels with their own backward pass, for training on Flex under autodiff: RMS
//! normalisation, the gated activations `act(gate) · up`, rotary embeddings, scaled
//! dot-product attention and linear layers with a frozen weight and a LoRA branch
//! ([`linear`]), each one recorded operation instead of burn's composition of three to
//! fifteen (each a fresh buffer and a full pass, forward and backward).
//!
//! They apply when every input is a Flex f32 tensor on an autodiff device without gradient
//! checkpointing and [`enabled`]; the functions return `None` otherwise, and the caller runs
//! burn's ops (other backends, checkpointing, inference — which has [`crate::decoder_kernels`]).
//! [`rms_norm`] also steps aside when its weight is trained (full fine-tuning): there the
//! composed ops stay, since with the kernel the full fine-tuning DPO parity run
//! (tests/all/dpo_parity.rs) ended 6.2e-5 from TRL's float64 weights, over its 3e-5 bound, though
//! the kernel's values and gradients are closer to exact ones than the composed ops'
//! (`rms_norm_is_within_f32_rounding_of_the_exact_values`); Adam turns the rounding of small
//! gradients into step-sized moves, and the cause was not pinned down.
//!
//! Numerics: row statistics (sums of squares, the softmax's and its backward's row sums) are
//! accumulated in f64; the exponentials are [`crate::vmath::exp_rounded_f32`], computed in f64
//! and rounded once (correctly rounded but for ~1e-14-close ties, as libm's `expf` to within
//! an ulp, and vectorised where `f32::exp` is a libm call per element; the faster f32
//! polynomial of [`crate::encoder_kernels::exp_f32`], a few ulp off, moved the full
//! fine-tuning parity run to 5.6e-5). Values and gradients
//! match the composed ops to 1e-5 relative (the tests below); the reference trainer tests
//! (PEFT / TRL fixtures) run through the kernels.
//!
//! Attention multiplies with gemm head by head, in blocks of query rows over only the keys
//! some row of the block sees (a causal mask skips about half the products of long rows). It
//! keeps the softmax probabilities of those blocks for the backward (at most the `[batch,
//! heads, seq, keys]` burn's composed attention under autodiff keeps, about half of it under a
//! causal mask) while they fit in [`attention_memory_budget`]; past it (long contexts), it
//! keeps only the mask and forms each block's probabilities again in the backward, with the
//! same product and passes as the forward, so the gradients are the same bits either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, BackendTypes, Flex};
use burn::tensor::{Bool, DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::decoder_kernels::{QUERY_BLOCK, SendPtr, rope_strided, strided, vectorised};
use crate::mlp::Activation;
use crate::vmath::{exp_rounded_f32, tanh_f64};

mod linear;
pub use linear::{Branch, linear};

/// Autodiff over Flex without checkpointing: the only backend these kernels record on.
type Ad = Autodiff<Flex>;
/// Its float primitive (a Flex tensor with its graph node).
type AdTensor = <Ad as BackendTypes>::FloatTensorPrimitive;

/// Rows per Rayon task of the row-wise kernels.
const ROWS_PER_TASK: usize = 16;
/// Elements per Rayon task of the element-wise kernels.
const CHUNK: usize = 8192;
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the training kernels on or off for the whole process (on by default); off, training
/// runs burn's composed ops. For in-process A/B timings and parity tests.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the training kernels are on ([`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `x` as an autodiff-over-Flex f32 primitive, `None` when the kernels are off or `x` is not one.
fn tracked<const D: usize>(x: &Tensor<D>) -> Option<AdTensor> {
    if !enabled() || x.dtype() != DType::F32 || !x.device().is_autodiff() {
        return None;
    }
    let t = x.clone().try_into_primitive::<Ad>().ok()?;
    (t.primitive().dtype() == DType::F32).then_some(t)
}

/// `t` with a contiguous buffer (a cheap handle when it has one already).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// The values of a tensor made by [`contiguous`] or [`flex`].
fn slice(t: &FlexTensor) -> &[f32] {
    // Cannot fail: every tensor passed here came from `contiguous` (a contiguous copy when
    // `as_slice` is `None`) or `flex` (a fresh contiguous buffer) of f32 data (`tracked` admits
    // f32 inputs only, and gradients of f32 outputs are f32).
    t.as_slice::<f32>()
        .expect("train_kernels: a tensor made contiguous f32 by this module")
}

/// A contiguous Flex tensor of `shape` over `v`.
fn flex(v: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape.to_vec()))
}

/// Records `op` with `inputs` as parents and `state` for its backward; returns the output as
/// a tensor of the autodiff device.
fn record<const D: usize, const N: usize, O>(
    op: O,
    inputs: [&AdTensor; N],
    state: O::State,
    out: FlexTensor,
) -> Tensor<D>
where
    O: Backward<Flex, N>,
{
    let t = match op
        .prepare::<NoCheckpointing>(inputs.map(AdTensor::node))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive::<Ad>(t)
}

/// The gradient arriving at `ops`' output, contiguous.
fn incoming<S, const N: usize>(ops: &Ops<S, N>, grads: &mut Gradients) -> FlexTensor {
    contiguous(&grads.consume::<Flex>(&ops.node))
}

// ---------------------------------------------------------------------------------------
// RMS normalisation

#[derive(Debug)]
struct RmsNormOp;

#[derive(Debug, Clone)]
struct RmsNormState {
    x: FlexTensor,
    w: FlexTensor,
    /// `1 / sqrt(mean(x²) + eps)` per row.
    rstd: Arc<Vec<f64>>,
}

impl Backward<Flex, 1> for RmsNormOp {
    type State = RmsNormState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = incoming(&ops, grads);
        let [px] = ops.parents;
        let Some(node) = px else { return };
        let st = ops.state;
        let (x, w, g) = (slice(&st.x), slice(&st.w), slice(&g));
        let n = w.len();
        let mut dx = vec![0.0f32; x.len()];
        dx.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(x.par_chunks(n * ROWS_PER_TASK))
            .zip(g.par_chunks(n * ROWS_PER_TASK))
            .zip(st.rstd.par_chunks(ROWS_PER_TASK))
            .for_each(|(((dx, x), g), r)| rms_backward_rows(x, w, g, r, dx));
        grads.register::<Flex>(node.id, flex(dx, st.x.layout().shape()));
    }
}

/// `w · x / sqrt(mean(x²) + eps)` over the last dimension of `x [.., n]` (`weight [n]`), as
/// [`crate::norm::RmsNorm`] computes it, recorded as one operation with the gradient for `x`;
/// `weight` is a constant (frozen). `None` when it does not apply, `weight` trained included
/// (see the module docs).
pub fn rms_norm<const D: usize>(x: &Tensor<D>, weight: &Tensor<1>, eps: f64) -> Option<Tensor<D>> {
    let n = weight.dims()[0];
    if n == 0 || x.dims()[D - 1] != n {
        return None;
    }
    let (xt, wt) = (tracked(x)?, tracked(weight)?);
    if wt.is_tracked() {
        // A trained norm weight (full fine-tuning): burn's ops, see the module docs.
        return None;
    }
    let (xp, wp) = (contiguous(xt.primitive()), contiguous(wt.primitive()));
    let (xs, ws) = (slice(&xp), slice(&wp));
    let rows = xs.len() / n;
    let mut y = vec![0.0f32; xs.len()];
    let mut rstd = vec![0.0f64; rows];
    y.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(xs.par_chunks(n * ROWS_PER_TASK))
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((y, x), r)| rms_forward_rows(x, ws, eps as f32, y, r));
    let out = flex(y, &x.dims());
    let state = RmsNormState {
        x: xp,
        w: wp,
        rstd: Arc::new(rstd),
    };
    Some(record(RmsNormOp, [&xt], state, out))
}

vectorised!(rms_forward_rows, rms_forward_loop, (x: &[f32], w: &[f32], eps: f32, y: &mut [f32], rstd: &mut [f64]));
vectorised!(rms_backward_rows, rms_backward_loop, (x: &[f32], w: &[f32], g: &[f32], rstd: &[f64], dx: &mut [f32]));

/// `Σ a_j · b_j` (times `w_j` when given), accumulated in f64 over 8 lanes (so that it
/// vectorises, and the row statistics carry no more rounding than the f32 inputs have).
///
/// The hot loops here index fixed-size blocks instead of nesting `zip`s: a `zip` that LLVM
/// leaves un-inlined is a call per block, compiled without the calling variant's vector
/// features (seen in the profile of a long-context step: 3.8% of its samples).
#[inline(always)]
fn dot64(a: &[f32], b: &[f32], w: Option<&[f32]>) -> f64 {
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    let n = a.len().min(b.len());
    let full = n - n % L;
    let (xa, _) = a[..full].as_chunks::<L>();
    let (yb, _) = b[..full].as_chunks::<L>();
    match w {
        None => {
            for i in 0..xa.len() {
                let (x, y) = (&xa[i], &yb[i]);
                for j in 0..L {
                    acc[j] += f64::from(x[j]) * f64::from(y[j]);
                }
            }
        }
        Some(w) => {
            let (wc, _) = w[..full].as_chunks::<L>();
            for i in 0..xa.len() {
                let (x, y, w) = (&xa[i], &yb[i], &wc[i]);
                for j in 0..L {
                    acc[j] += f64::from(x[j]) * f64::from(w[j]) * f64::from(y[j]);
                }
            }
        }
    }
    let mut s: f64 = acc.iter().sum();
    for j in full..n {
        s += f64::from(a[j]) * f64::from(b[j]) * w.map_or(1.0, |w| f64::from(w[j]));
    }
    s
}

#[inline(always)]
fn rms_forward_loop(x: &[f32], w: &[f32], eps: f32, y: &mut [f32], rstd: &mut [f64]) {
    let n = w.len();
    for ((x, y), r) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).zip(rstd) {
        let inv = 1.0 / (dot64(x, x, None) / n as f64 + f64::from(eps)).sqrt();
        *r = inv;
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
            *y = (f64::from(w) * (f64::from(x) * inv)) as f32;
        }
    }
}

/// `dx = r · w ⊙ g − x · r³ · (Σ w ⊙ g ⊙ x) / n` per row, in f64 before the one rounding.
#[inline(always)]
fn rms_backward_loop(x: &[f32], w: &[f32], g: &[f32], rstd: &[f64], dx: &mut [f32]) {
    let n = w.len();
    for (((x, g), dx), &r) in x
        .chunks_exact(n)
        .zip(g.chunks_exact(n))
        .zip(dx.chunks_exact_mut(n))
        .zip(rstd)
    {
        let c = dot64(g, x, Some(w)) * r * r * r / n as f64;
        for (((d, &g), &w), &x) in dx.iter_mut().zip(g).zip(w).zip(x) {
            *d = (r * (f64::from(g) * f64::from(w)) - f64::from(x) * c) as f32;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Activations, gated or not: `act(gate) · up` and `act(x)`

/// An activation with its derivative, in f32 (SiLU through the standard library's `exp`,
/// the tanh GELU in f64 through [`crate::vmath::tanh_f64`]).
trait Act {
    fn value(x: f32) -> f32;
    fn slope(x: f32) -> f32;
    /// `(value(x), slope(x))`, sharing what both need.
    #[inline(always)]
    fn value_slope(x: f32) -> (f32, f32) {
        (Self::value(x), Self::slope(x))
    }
}

/// `silu(x) = x · sigmoid(x)`.
struct SiluAct;

impl Act for SiluAct {
    #[inline(always)]
    fn value(x: f32) -> f32 {
        x / (1.0 + exp_rounded_f32(-x))
    }
    /// `s (1 + x (1 − s))`, `s = sigmoid(x)`.
    #[inline(always)]
    fn slope(x: f32) -> f32 {
        let s = 1.0 / (1.0 + exp_rounded_f32(-x));
        s * (1.0 + x * (1.0 - s))
    }
    /// One `exp` for both (the same roundings as [`Self::value`] and [`Self::slope`]).
    #[inline(always)]
    fn value_slope(x: f32) -> (f32, f32) {
        let d = 1.0 + exp_rounded_f32(-x);
        let s = 1.0 / d;
        (x / d, s * (1.0 + x * (1.0 - s)))
    }
}

/// transformers' `gelu_new`: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, value and slope
/// evaluated in f64 (tanh by [`crate::vmath::tanh_f64`]) and rounded once each.
struct GeluTanhAct;

/// √(2/π).
const GELU_K: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

impl Act for GeluTanhAct {
    #[inline(always)]
    fn value(x: f32) -> f32 {
        Self::value_slope(x).0
    }
    #[inline(always)]
    fn slope(x: f32) -> f32 {
        Self::value_slope(x).1
    }
    /// The slope is `0.5 (1 + t) + 0.5 x (1 − t²) √(2/π) (1 + 3 · 0.044715 x²)` with the
    /// value's `t = tanh(..)`.
    #[inline(always)]
    fn value_slope(x: f32) -> (f32, f32) {
        let x = f64::from(x);
        let u = GELU_K * (x + GELU_C * x * x * x);
        let t = tanh_f64(u.abs()).copysign(u);
        let value = 0.5 * x * (1.0 + t);
        let slope =
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * x * x);
        (value as f32, slope as f32)
    }
}

/// `y = act(x) · u` (`u` empty: `act(x)`).
#[inline(always)]
fn act_forward<A: Act>(x: &[f32], u: &[f32], y: &mut [f32]) {
    if u.is_empty() {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = A::value(x);
        }
    } else {
        for ((y, &x), &u) in y.iter_mut().zip(x).zip(u) {
            *y = A::value(x) * u;
        }
    }
}

/// `dx = g ⊙ u ⊙ act'(x)` (`u` empty: 1), `du = g ⊙ act(x)`; an empty `dx` or `du` is not
/// computed.
#[inline(always)]
fn act_backward<A: Act>(x: &[f32], u: &[f32], g: &[f32], dx: &mut [f32], du: &mut [f32]) {
    if !dx.is_empty() && !du.is_empty() && !u.is_empty() {
        // Both gradients of a gated product: one pass, the activation evaluated once.
        for ((((d, e), &x), &u), &g) in dx.iter_mut().zip(du.iter_mut()).zip(x).zip(u).zip(g) {
            let (value, slope) = A::value_slope(x);
            *d = g * u * slope;
            *e = g * value;
        }
        return;
    }
    if !dx.is_empty() {
        if u.is_empty() {
            for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                *d = g * A::slope(x);
            }
        } else {
            for (((d, &x), &u), &g) in dx.iter_mut().zip(x).zip(u).zip(g) {
                *d = g * u * A::slope(x);
            }
        }
    }
    if !du.is_empty() {
        for ((d, &x), &g) in du.iter_mut().zip(x).zip(g) {
            *d = g * A::value(x);
        }
    }
}

#[inline(always)]
fn silu_forward_loop(x: &[f32], u: &[f32], y: &mut [f32]) {
    act_forward::<SiluAct>(x, u, y)
}
#[inline(always)]
fn gelu_tanh_forward_loop(x: &[f32], u: &[f32], y: &mut [f32]) {
    act_forward::<GeluTanhAct>(x, u, y)
}
#[inline(always)]
fn silu_backward_loop(x: &[f32], u: &[f32], g: &[f32], dx: &mut [f32], du: &mut [f32]) {
    act_backward::<SiluAct>(x, u, g, dx, du)
}
#[inline(always)]
fn gelu_tanh_backward_loop(x: &[f32], u: &[f32], g: &[f32], dx: &mut [f32], du: &mut [f32]) {
    act_backward::<GeluTanhAct>(x, u, g, dx, du)
}

vectorised!(silu_forward_chunk, silu_forward_loop, (x: &[f32], u: &[f32], y: &mut [f32]));
vectorised!(gelu_tanh_forward_chunk, gelu_tanh_forward_loop, (x: &[f32], u: &[f32], y: &mut [f32]));
vectorised!(silu_backward_chunk, silu_backward_loop, (x: &[f32], u: &[f32], g: &[f32], dx: &mut [f32], du: &mut [f32]));
vectorised!(gelu_tanh_backward_chunk, gelu_tanh_backward_loop, (x: &[f32], u: &[f32], g: &[f32], dx: &mut [f32], du: &mut [f32]));

/// The activations with a kernel.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Silu,
    GeluTanh,
}

impl Kind {
    fn of(act: Activation) -> Option<Self> {
        match act {
            Activation::Silu => Some(Self::Silu),
            Activation::GeluTanh => Some(Self::GeluTanh),
            Activation::Gelu | Activation::Relu => None,
        }
    }

    fn forward(self, x: &[f32], u: &[f32], y: &mut [f32]) {
        match self {
            Self::Silu => silu_forward_chunk(x, u, y),
            Self::GeluTanh => gelu_tanh_forward_chunk(x, u, y),
        }
    }

    fn backward(self, x: &[f32], u: &[f32], g: &[f32], dx: &mut [f32], du: &mut [f32]) {
        match self {
            Self::Silu => silu_backward_chunk(x, u, g, dx, du),
            Self::GeluTanh => gelu_tanh_backward_chunk(x, u, g, dx, du),
        }
    }
}

/// `act(x) · up` (or `act(x)`) with gradients for `x` and `up`.
#[derive(Debug)]
struct ActOp(Kind);

#[derive(Debug, Clone)]
struct ActState {
    x: FlexTensor,
    /// `None`: no gate product.
    up: Option<FlexTensor>,
}

/// The backward of [`ActOp`] for parents `[x]` or `[x, up]`.
fn act_backward_step(
    kind: Kind,
    st: ActState,
    g: &FlexTensor,
    parents: (Option<NodeId>, Option<NodeId>),
    grads: &mut Gradients,
) {
    let (x, g) = (slice(&st.x), slice(g));
    let u: &[f32] = st.up.as_ref().map_or(&[], slice);
    let shape = st.x.layout().shape().to_vec();
    let mut dx = vec![0.0f32; if parents.0.is_some() { g.len() } else { 0 }];
    let mut du = vec![0.0f32; if parents.1.is_some() { g.len() } else { 0 }];
    let (nx, nu) = (dx.len().min(CHUNK), du.len().min(CHUNK));
    let chunks = g.len().div_ceil(CHUNK);
    let (dxp, dup) = (SendPtr(dx.as_mut_ptr()), SendPtr(du.as_mut_ptr()));
    (0..chunks).into_par_iter().for_each(|c| {
        let r = c * CHUNK..((c + 1) * CHUNK).min(g.len());
        let len = r.len();
        // SAFETY: chunk `c` of dx / du (when computed) is written by this task alone.
        let (dxc, duc) = unsafe {
            (
                std::slice::from_raw_parts_mut(dxp.at(r.start), if nx > 0 { len } else { 0 }),
                std::slice::from_raw_parts_mut(dup.at(r.start), if nu > 0 { len } else { 0 }),
            )
        };
        let uc = if u.is_empty() { u } else { &u[r.clone()] };
        kind.backward(&x[r.clone()], uc, &g[r], dxc, duc);
    });
    if let Some(id) = parents.0 {
        grads.register::<Flex>(id, flex(dx, &shape));
    }
    if let Some(id) = parents.1 {
        grads.register::<Flex>(id, flex(du, &shape));
    }
}

impl Backward<Flex, 2> for ActOp {
    type State = ActState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = incoming(&ops, grads);
        let [px, pu] = ops.parents;
        let ids = (px.map(|n| n.id), pu.map(|n| n.id));
        act_backward_step(self.0, ops.state, &g, ids, grads);
    }
}

impl Backward<Flex, 1> for ActOp {
    type State = ActState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = incoming(&ops, grads);
        let [px] = ops.parents;
        act_backward_step(self.0, ops.state, &g, (px.map(|n| n.id), None), grads);
    }
}

/// `act(x) · up` element-wise (`up` of `x`'s shape; without it `act(x)`), recorded as one
/// operation with gradients for both; `act` SiLU or transformers' `gelu_new` (tanh
/// approximation). `None` when it does not apply (another activation; see the module docs).
pub fn activation_mul<const D: usize>(
    act: Activation,
    x: &Tensor<D>,
    up: Option<&Tensor<D>>,
) -> Option<Tensor<D>> {
    let kind = Kind::of(act)?;
    if up.is_some_and(|u| u.dims() != x.dims()) {
        return None;
    }
    let xt = tracked(x)?;
    let ut = match up {
        Some(u) => Some(tracked(u)?),
        None => None,
    };
    let xp = contiguous(xt.primitive());
    let upp = ut.as_ref().map(|u| contiguous(u.primitive()));
    let (xs, us): (&[f32], &[f32]) = (slice(&xp), upp.as_ref().map_or(&[], slice));
    let mut y = vec![0.0f32; xs.len()];
    y.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (y, x))| {
            let u = if us.is_empty() {
                us
            } else {
                &us[c * CHUNK..c * CHUNK + x.len()]
            };
            kind.forward(x, u, y)
        });
    let out = flex(y, &x.dims());
    let state = ActState { x: xp, up: upp };
    Some(match &ut {
        Some(ut) => record(ActOp(kind), [&xt, ut], state, out),
        None => record(ActOp(kind), [&xt], state, out),
    })
}

// ---------------------------------------------------------------------------------------
// Rotary embeddings

#[derive(Debug)]
struct RopeOp;

#[derive(Debug, Clone)]
struct RopeState {
    cos: FlexTensor,
    sin: FlexTensor,
    shape: [usize; 4],
}

impl Backward<Flex, 1> for RopeOp {
    type State = RopeState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = incoming(&ops, grads);
        let [px] = ops.parents;
        let Some(node) = px else { return };
        let st = ops.state;
        let [_, h, s, d] = st.shape;
        let (cos, sin, g) = (slice(&st.cos), slice(&st.sin), slice(&g));
        let mut dx = vec![0.0f32; g.len()];
        // dx₁ = g₁ ⊙ cos₁ + g₂ ⊙ sin₂, dx₂ = g₂ ⊙ cos₂ − g₁ ⊙ sin₁ (the transpose of the
        // forward's rotation).
        dx.par_chunks_mut(s * d)
            .zip(g.par_chunks(s * d))
            .enumerate()
            .for_each(|(bh, (dx, g))| {
                let b = bh / h;
                let (c, sn) = (
                    &cos[b * s * d..(b + 1) * s * d],
                    &sin[b * s * d..(b + 1) * s * d],
                );
                rope_rows(g, c, sn, dx, d, true);
            });
        grads.register::<Flex>(node.id, flex(dx, &st.shape));
    }
}

/// Rotary embeddings in HF's rotate-half layout, `x · cos + rotate_half(x) · sin`, for
/// `x [batch, heads, seq, head_dim]` (any strides) and `cos` / `sin [batch, 1, seq, head_dim]`
/// (constants), recorded as one operation; the output is contiguous. `None` when it does not
/// apply (see the module docs).
pub fn rope(x: &Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<4>> {
    let [b, h, s, d] = crate::rope::kernel_dims(x, cos, sin)?;
    let xt = tracked(x)?;
    let (ct, st) = (tracked(cos)?, tracked(sin)?);
    if ct.is_tracked() || st.is_tracked() {
        return None;
    }
    let (cp, sp) = (contiguous(ct.primitive()), contiguous(st.primitive()));
    let (cs, ss) = (slice(&cp), slice(&sp));
    // The head view (`[b, s, h, d]` swapped) is read in place; other layouts are copied first.
    let dims = [b, h, s, d];
    let y = match strided(xt.primitive()) {
        Some((xs, [s0, s1, s2, 1, start])) => rope_strided(xs, [s0, s1, s2, start], cs, ss, dims),
        _ => {
            let xp = contiguous(xt.primitive());
            let plain = [(h * s * d) as isize, (s * d) as isize, d as isize, 0];
            rope_strided(slice(&xp), plain, cs, ss, dims)
        }
    };
    let state = RopeState {
        cos: cp,
        sin: sp,
        shape: [b, h, s, d],
    };
    Some(record(RopeOp, [&xt], state, flex(y, &[b, h, s, d])))
}

vectorised!(pub(crate) rope_rows, rope_loop, (x: &[f32], cos: &[f32], sin: &[f32], y: &mut [f32], d: usize, transpose: bool));

/// Forward (`transpose` false): `y₁ = x₁ cos₁ − x₂ sin₁`, `y₂ = x₂ cos₂ + x₁ sin₂` per row of
/// `d` (halves `₁`, `₂`); backward (`transpose`): `y₁ = x₁ cos₁ + x₂ sin₂`,
/// `y₂ = x₂ cos₂ − x₁ sin₁`.
///
/// The halves go in fixed-size blocks of [`ROPE_BLOCK`] (`as_chunks`), rows by index: a plain
/// loop over a half of 32 (head size 64) stayed scalar, LLVM's vector loop asking for more
/// iterations than that. Each element's arithmetic is the same either way.
#[inline(always)]
fn rope_loop(x: &[f32], cos: &[f32], sin: &[f32], y: &mut [f32], d: usize, transpose: bool) {
    let half = d / 2;
    let rows = (x.len() / d)
        .min(y.len() / d)
        .min(cos.len() / d)
        .min(sin.len() / d);
    for r in 0..rows {
        let at = r * d..(r + 1) * d;
        let (x1, x2) = x[at.clone()].split_at(half);
        let (y1, y2) = y[at.clone()].split_at_mut(half);
        let (c1, c2) = cos[at.clone()].split_at(half);
        let (s1, s2) = sin[at].split_at(half);
        fn blocks(v: &[f32]) -> &[[f32; ROPE_BLOCK]] {
            v.as_chunks().0
        }
        let (x1b, x2b, c1b, c2b) = (blocks(x1), blocks(x2), blocks(c1), blocks(c2));
        let (s1b, s2b) = (blocks(s1), blocks(s2));
        let (y1b, y2b) = (
            y1.as_chunks_mut::<ROPE_BLOCK>().0,
            y2.as_chunks_mut::<ROPE_BLOCK>().0,
        );
        let blocks = x1b.len();
        for i in 0..blocks {
            let (a, b, ca, cb, sa, sb) = (&x1b[i], &x2b[i], &c1b[i], &c2b[i], &s1b[i], &s2b[i]);
            // Into locals first: written straight through the two output blocks, the loop
            // stayed scalar (LLVM did not see that they cannot overlap the inputs).
            let (mut oa, mut ob) = ([0f32; ROPE_BLOCK], [0f32; ROPE_BLOCK]);
            if transpose {
                for j in 0..ROPE_BLOCK {
                    oa[j] = a[j] * ca[j] + b[j] * sb[j];
                    ob[j] = b[j] * cb[j] - a[j] * sa[j];
                }
            } else {
                for j in 0..ROPE_BLOCK {
                    oa[j] = a[j] * ca[j] - b[j] * sa[j];
                    ob[j] = b[j] * cb[j] + a[j] * sb[j];
                }
            }
            (y1b[i], y2b[i]) = (oa, ob);
        }
        for j in blocks * ROPE_BLOCK..half {
            if transpose {
                y1[j] = x1[j] * c1[j] + x2[j] * s2[j];
                y2[j] = x2[j] * c2[j] - x1[j] * s1[j];
            } else {
                y1[j] = x1[j] * c1[j] - x2[j] * s1[j];
                y2[j] = x2[j] * c2[j] + x1[j] * s2[j];
            }
        }
    }
}

/// Lanes per block of [`rope_loop`]: one AVX-512 vector of f32.
const ROPE_BLOCK: usize = 16;

// ---------------------------------------------------------------------------------------
// Attention

/// A 4-d operand for gemm: the tensor (kept alive) and its element strides and start.
#[derive(Debug, Clone)]
struct Operand {
    t: FlexTensor,
    strides: [usize; 4],
    start: usize,
}

impl Operand {
    /// `t` read in place when its strides are non-negative and in bounds
    /// ([`crate::decoder_kernels`]' `strided`), else a contiguous copy.
    fn new(t: &FlexTensor) -> Option<Self> {
        if let Some((_, [s0, s1, s2, s3, start])) = strided(t) {
            return Some(Self {
                t: t.clone(),
                strides: [s0, s1, s2, s3].map(|v| v as usize),
                start: start as usize,
            });
        }
        let shape = t.layout().shape();
        if shape.num_dims() != 4 {
            return None;
        }
        let (d1, d2, d3) = (shape[1], shape[2], shape[3]);
        Some(Self {
            t: t.to_contiguous(),
            strides: [d1 * d2 * d3, d2 * d3, d3, 1],
            start: 0,
        })
    }

    /// Pointer to row `r` of matrix `[i, j]` (the last two dimensions; `r` below its row
    /// count), with the matrix's `(column, row)` strides.
    fn rows(&self, i: usize, j: usize, r: usize) -> (*const f32, isize, isize) {
        let buf = self.t.storage::<f32>();
        let off = self.start + i * self.strides[0] + j * self.strides[1] + r * self.strides[2];
        // SAFETY (of later reads): `new` checked that every element is inside the buffer.
        (
            buf[off..].as_ptr(),
            self.strides[3] as isize,
            self.strides[2] as isize,
        )
    }
}

#[derive(Debug)]
struct AttentionOp;

#[derive(Debug, Clone)]
struct AttentionState {
    q: Operand,
    k: Operand,
    v: Operand,
    saved: Saved,
    /// The key span of each block of query rows and where its probabilities lie in
    /// [`Saved::Probs`].
    spans: Arc<KeySpans>,
    dims: [usize; 5],
    scale: f32,
}

/// What the attention's backward gets the softmax probabilities from.
#[derive(Debug, Clone)]
enum Saved {
    /// The forward's probabilities of each run over its keys, laid out by the spans.
    Probs(Arc<Vec<f32>>),
    /// Formed again per run from `q`, `k`, the score bias and the mask ([`Scores::probs`]):
    /// the hidden keys `[b, s, t]` one bit each ([`pack_bits`]) and the bias `[1 or b, h, s,
    /// t]` (contiguous) with its batch size.
    Recompute {
        hidden: Arc<Vec<u64>>,
        bias: Option<(FlexTensor, usize)>,
    },
}

/// Default of [`attention_memory_budget`]: 256 MiB.
const DEFAULT_ATTENTION_MEMORY: usize = 256 << 20;
static ATTENTION_MEMORY: AtomicUsize = AtomicUsize::new(DEFAULT_ATTENTION_MEMORY);

/// Sets the bytes of softmax probabilities one training attention call may keep for its
/// backward (for the whole process; default 256 MiB). A call whose probabilities (4 bytes
/// for each query row and key it multiplies, per head: `b · h · s · t · 4` at most, about
/// half under a causal mask) would exceed it keeps only the mask (`b · s · t` bits) and
/// forms the probabilities again in the backward, one block of query rows at a time: one more
/// score product and softmax pass per block, bit-identical gradients. `0` always forms them
/// again; `usize::MAX` always keeps them.
pub fn set_attention_memory_budget(bytes: usize) {
    ATTENTION_MEMORY.store(bytes, Ordering::Relaxed);
}

/// The bytes of probabilities one training attention call may keep
/// ([`set_attention_memory_budget`]).
pub fn attention_memory_budget() -> usize {
    ATTENTION_MEMORY.load(Ordering::Relaxed)
}

/// The forward's scores and softmax of one run, shared by the forward and the backward's
/// recomputation (the same calls on the same inputs give the same bits).
struct Scores<'a> {
    q: &'a Operand,
    k: &'a Operand,
    /// The additive bias `[1 or b, h, s, t]` (contiguous) and its batch size.
    bias: Option<(&'a [f32], usize)>,
    /// `[b, s, t]`, `true` where a key is hidden.
    hidden: Hidden<'a>,
    /// `(h, kv, s, t, d)`.
    dims: (usize, usize, usize, usize, usize),
    scale: f32,
}

impl Scores<'_> {
    /// The probabilities `[run.rows, run.width()]` (row stride `run.width()`) of head `hi` of
    /// batch row `bi` over the run's keys, into `out`: `scale · Q·Kᵀ`, plus the bias, then the
    /// softmax over the keys not hidden.
    fn probs(&self, bi: usize, hi: usize, run: Run, out: &mut [f32]) {
        let (h, kv, s, t, d) = self.dims;
        let (r0, rows, lo, w) = (run.r0, run.rows, run.lo, run.width());
        let g = hi / (h / kv);
        let out = &mut out[..rows * w];
        // SAFETY: the operands were checked in bounds (`Operand::new`), rows r0..r0+rows and
        // keys lo..lo+w lie inside them, and `out` holds `[rows, w]`.
        unsafe {
            let (kp, kcs, krs) = self.k.rows(bi, g, lo);
            product(
                (rows, w, d),
                (out.as_mut_ptr(), 1, w as isize),
                self.q.rows(bi, hi, r0),
                (kp, krs, kcs),
                self.scale,
                false,
            );
        }
        let keys = |r: usize| (r0 + r) * t + lo..(r0 + r) * t + lo + w;
        if let Some((bias, bb)) = self.bias {
            let bi = if bb == 1 { 0 } else { bi };
            let off = (bi * h + hi) * s * t;
            let bias = &bias[off..off + s * t];
            for (r, row) in out.chunks_exact_mut(w).enumerate() {
                for (x, y) in row.iter_mut().zip(&bias[keys(r)]) {
                    *x += y;
                }
            }
        }
        let mut unpacked = Vec::new();
        for (r, row) in out.chunks_exact_mut(w).enumerate() {
            let keys = keys(r);
            let hidden = match self.hidden {
                Hidden::Bools(m) => &m[bi * s * t..][keys],
                Hidden::Bits(bits) => {
                    unpack_bits(bits, bi * s * t + keys.start, w, &mut unpacked);
                    &unpacked[..]
                }
            };
            masked_softmax_row(row, hidden);
        }
    }
}

/// Where the attention's backward reads a run's probabilities from ([`Saved`] borrowed).
enum Source<'a> {
    Kept(&'a [f32]),
    Formed(Scores<'a>),
}

/// The attention mask `[b, s, t]` as [`Scores`] reads it: the forward's booleans, or the bits
/// the backward keeps ([`pack_bits`]).
#[derive(Clone, Copy)]
enum Hidden<'a> {
    Bools(&'a [bool]),
    Bits(&'a [u64]),
}

/// Bits `at..at + n` of `bits` ([`pack_bits`]' layout) into `out` (cleared first), a word at a
/// time.
fn unpack_bits(bits: &[u64], at: usize, n: usize, out: &mut Vec<bool>) {
    out.clear();
    let (mut i, end) = (at, at + n);
    while i < end {
        let word = bits[i / 64] >> (i % 64);
        let take = (64 - i % 64).min(end - i);
        out.extend((0..take).map(|j| word >> j & 1 == 1));
        i += take;
    }
}

/// `hidden` one bit each: bit `i % 64` of word `i / 64` is `hidden[i]`.
fn pack_bits(hidden: &[bool]) -> Vec<u64> {
    let mut bits = vec![0u64; hidden.len().div_ceil(64)];
    bits.par_iter_mut()
        .zip(hidden.par_chunks(64))
        .for_each(|(word, chunk)| {
            *word = chunk
                .iter()
                .enumerate()
                .fold(0, |acc, (j, &h)| acc | (u64::from(h) << j));
        });
    bits
}

/// `dst = beta · lhs · rhs (+ dst when accumulate)`, one thread.
///
/// # Safety
/// As [`crate::host_gemm::gemm_into`].
unsafe fn product(
    dims: (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    beta: f32,
    accumulate: bool,
) {
    // SAFETY: the caller's contract is gemm's.
    unsafe {
        gemm::gemm(
            dims.0,
            dims.1,
            dims.2,
            dst.0,
            dst.1,
            dst.2,
            accumulate,
            lhs.0,
            lhs.1,
            lhs.2,
            rhs.0,
            rhs.1,
            rhs.2,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

impl Backward<Flex, 3> for AttentionOp {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let go = incoming(&ops, grads);
        let [pq, pk, pv] = ops.parents;
        let st = ops.state;
        let [b, h, kv, s, t] = st.dims;
        let d = st.q.t.layout().shape()[3];
        let rep = h / kv;
        let go = slice(&go);
        let mut dq = vec![0.0f32; b * h * s * d];
        let mut dk = vec![0.0f32; b * kv * t * d];
        let mut dv = vec![0.0f32; b * kv * t * d];
        let (dqp, dkp, dvp) = (
            SendPtr(dq.as_mut_ptr()),
            SendPtr(dk.as_mut_ptr()),
            SendPtr(dv.as_mut_ptr()),
        );
        let spans = &*st.spans;
        // Where each run's probabilities come from: the kept buffer, or formed again.
        let source = match &st.saved {
            Saved::Probs(p) => Source::Kept(&p[..]),
            Saved::Recompute { hidden, bias } => Source::Formed(Scores {
                q: &st.q,
                k: &st.k,
                bias: bias.as_ref().map(|(x, bb)| (slice(x), *bb)),
                hidden: Hidden::Bits(hidden),
                dims: (h, kv, s, t, d),
                scale: st.scale,
            }),
        };
        (0..b * kv).into_par_iter().for_each(|task| {
            let (bi, g) = (task / kv, task % kv);
            // dS of one block `[rows, span]` (and its probabilities, when formed again here),
            // grown to the largest block.
            let mut ds: Vec<f32> = Vec::new();
            let mut pbuf: Vec<f32> = Vec::new();
            let kvo = (bi * kv + g) * t * d;
            for hi in g * rep..(g + 1) * rep {
                let go_ptr = go[bi * s * h * d + hi * d..].as_ptr();
                // Runs whose rows see no key keep their dq rows 0.
                for run in spans.seen(bi) {
                    let (r0, m, lo, w) = (run.r0, run.rows, run.lo, run.width());
                    // The run's probabilities `[m, w]` (row stride w); dS alike.
                    let pblk: &[f32] = match &source {
                        Source::Kept(p) => &p[spans.head_start(bi, hi) + run.offset..][..m * w],
                        Source::Formed(sc) => {
                            if pbuf.len() < m * w {
                                pbuf.resize(m * w, 0.0);
                            }
                            sc.probs(bi, hi, run, &mut pbuf);
                            &pbuf[..m * w]
                        }
                    };
                    if ds.len() < m * w {
                        ds.resize(m * w, 0.0);
                    }
                    // SAFETY: row r0 < s of dO `[b, s, h·d]` lies inside `go`.
                    let dout = (unsafe { go_ptr.add(r0 * h * d) }, 1isize, (h * d) as isize);
                    // SAFETY: every pointer below addresses a matrix inside its buffer (the
                    // operands' bounds were checked, the outputs sized [b, h or kv, s or t, d],
                    // rows r0..r0+m and keys lo..lo+w inside them); the task writes only its
                    // own kv head's dk / dv and its heads' dq.
                    unsafe {
                        // dV[span] += P[block, span]ᵀ · dO[block]
                        product(
                            (w, d, m),
                            (dvp.at(kvo + lo * d), 1, d as isize),
                            (pblk.as_ptr(), w as isize, 1),
                            dout,
                            1.0,
                            true,
                        );
                        // dP[block, span] = dO[block] · V[span]ᵀ
                        let (vp, vcs, vrs) = st.v.rows(bi, g, lo);
                        product(
                            (m, w, d),
                            (ds.as_mut_ptr(), 1, w as isize),
                            dout,
                            (vp, vrs, vcs),
                            1.0,
                            false,
                        );
                    }
                    // dS = P ⊙ (dP − rowsum(dP ⊙ P)) over the span (P is 0 outside it)
                    for (dsr, pr) in ds[..m * w].chunks_exact_mut(w).zip(pblk.chunks_exact(w)) {
                        softmax_backward_row(dsr, pr);
                    }
                    // SAFETY: as above.
                    unsafe {
                        // dQ[block] = scale · dS[block, span] · K[span]
                        let (kp, kcs, krs) = st.k.rows(bi, g, lo);
                        product(
                            (m, d, w),
                            (dqp.at((bi * h + hi) * s * d + r0 * d), 1, d as isize),
                            (ds.as_ptr(), 1, w as isize),
                            (kp, kcs, krs),
                            st.scale,
                            false,
                        );
                        // dK[span] += scale · dS[block, span]ᵀ · Q[block]
                        let (qp, qcs, qrs) = st.q.rows(bi, hi, r0);
                        product(
                            (w, d, m),
                            (dkp.at(kvo + lo * d), 1, d as isize),
                            (ds.as_ptr(), w as isize, 1),
                            (qp, qcs, qrs),
                            st.scale,
                            true,
                        );
                    }
                }
            }
        });
        for (parent, grad, heads, len) in [(pq, dq, h, s), (pk, dk, kv, t), (pv, dv, kv, t)] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex(grad, &[b, heads, len, d]));
            }
        }
    }
}

/// Scaled dot-product attention for training, `q [b, h, s, d]`, `k` / `v [b, kv, t, d]` (any
/// strides, `h % kv == 0`), `mask [b, 1, s, t]` `true` where a key is hidden, `bias [1 or b, h,
/// s, t]` a constant added to the scaled scores (as [`crate::attention::attention`] takes
/// them; a query row that sees no key gets zeros),
/// recorded as one operation; the context comes back as `[b, s, h·d]` (the output
/// projection's layout). `None` when it does not apply (see the module docs).
pub fn attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: &Tensor<4, Bool>,
    bias: Option<&Tensor<4>>,
    scale: f64,
) -> Option<Tensor<3>> {
    attention_within(q, k, v, mask, bias, scale, attention_memory_budget())
}

/// [`attention`] keeping at most `budget` bytes of probabilities for the backward.
fn attention_within(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: &Tensor<4, Bool>,
    bias: Option<&Tensor<4>>,
    scale: f64,
    budget: usize,
) -> Option<Tensor<3>> {
    let [b, h, s, d] = q.dims();
    let [_, kv, t, _] = k.dims();
    // Empty shapes (and the chunk sizes they would make) are left to burn.
    if [b, h, kv, s, t, d].contains(&0) || h % kv != 0 {
        return None;
    }
    if k.dims() != [b, kv, t, d] || v.dims() != [b, kv, t, d] {
        return None;
    }
    if mask.dims() != [b, 1, s, t] {
        return None;
    }
    let (qt, kt, vt) = (tracked(q)?, tracked(k)?, tracked(v)?);
    let (qo, ko, vo) = (
        Operand::new(qt.primitive())?,
        Operand::new(kt.primitive())?,
        Operand::new(vt.primitive())?,
    );
    // The additive score bias (T5's relative positions): a constant `[1 or b, h, s, t]`.
    let bias = match bias {
        None => None,
        Some(x) => {
            let [bb, bh, bs, bk] = x.dims();
            if (bb != 1 && bb != b) || [bh, bs, bk] != [h, s, t] {
                return None;
            }
            let xt = tracked(x)?;
            if xt.is_tracked() {
                return None;
            }
            Some((contiguous(xt.primitive()), bb))
        }
    };
    let hidden = mask.to_data().try_to_vec::<bool>().ok()?;
    let spans = KeySpans::new(&hidden, b, h, s, t);
    let rep = h / kv;
    let scale = scale as f32;
    // Keep the probabilities when they fit in the budget; else each task forms a run's in a
    // scratch buffer and the backward forms them again.
    let keep = spans.total.saturating_mul(size_of::<f32>()) <= budget;
    let mut p = if keep {
        vec![0.0f32; spans.total]
    } else {
        Vec::new()
    };
    let mut heads: Vec<Option<&mut [f32]>> = Vec::with_capacity(b * h);
    let mut rest = &mut p[..];
    for bi in 0..b {
        for _ in 0..h {
            if keep {
                let (head, tail) = rest.split_at_mut(spans.head_len[bi]);
                heads.push(Some(head));
                rest = tail;
            } else {
                heads.push(None);
            }
        }
    }
    let sc = Scores {
        q: &qo,
        k: &ko,
        bias: bias.as_ref().map(|(x, bb)| (slice(x), *bb)),
        hidden: Hidden::Bools(&hidden),
        dims: (h, kv, s, t, d),
        scale,
    };
    let mut ctx = vec![0.0f32; b * s * h * d];
    let ctxp = SendPtr(ctx.as_mut_ptr());
    heads.into_par_iter().enumerate().for_each(|(bh, mut ph)| {
        let (bi, hi) = (bh / h, bh % h);
        let g = hi / rep;
        let mut scratch: Vec<f32> = Vec::new();
        // Runs whose rows see no key keep their context 0.
        for run in spans.seen(bi) {
            let (r0, rows, lo, w) = (run.r0, run.rows, run.lo, run.width());
            // The run's probabilities `[rows, w]` (row stride w): this task's own share of
            // the kept buffer, or its scratch.
            let pblk: &mut [f32] = match ph.as_deref_mut() {
                Some(ph) => &mut ph[run.offset..][..rows * w],
                None => {
                    if scratch.len() < rows * w {
                        scratch.resize(rows * w, 0.0);
                    }
                    &mut scratch[..rows * w]
                }
            };
            sc.probs(bi, hi, run, pblk);
            // SAFETY: operands checked in bounds; the task writes only columns
            // hi·d..(hi+1)·d of batch bi's context rows.
            unsafe {
                product(
                    (rows, d, w),
                    (
                        ctxp.at(bi * s * h * d + r0 * h * d + hi * d),
                        1,
                        (h * d) as isize,
                    ),
                    (pblk.as_ptr(), 1, w as isize),
                    vo.rows(bi, g, lo),
                    1.0,
                    false,
                );
            }
        }
    });
    let saved = if keep {
        Saved::Probs(Arc::new(p))
    } else {
        Saved::Recompute {
            hidden: Arc::new(pack_bits(&hidden)),
            bias,
        }
    };
    let state = AttentionState {
        q: qo,
        k: ko,
        v: vo,
        saved,
        spans: Arc::new(spans),
        dims: [b, h, kv, s, t],
        scale,
    };
    Some(record(
        AttentionOp,
        [&qt, &kt, &vt],
        state,
        flex(ctx, &[b, s, h * d]),
    ))
}

/// Consecutive query rows of one batch row that multiply over the same keys `[lo, hi)` (`lo ==
/// hi`: no row of the run sees a key), and where their probabilities `[rows, hi - lo]`
/// (row-major) start within a head's share of the compact buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    r0: usize,
    rows: usize,
    lo: usize,
    hi: usize,
    offset: usize,
}

/// The keys each block of [`QUERY_BLOCK`] query rows multiplies over (from the first to the
/// last key any row of the block sees), with adjacent blocks of the same keys merged into one
/// run (a mask that hides no key gives one run of all rows: one product, as before blocking),
/// and the layout of the training attention's compact buffer of probabilities: per batch row,
/// each head's runs one after another (a causal mask keeps about half of `[s, t]`).
#[derive(Debug)]
struct KeySpans {
    /// Per batch row, its runs in row order, covering rows `0..s`.
    runs: Vec<Vec<Run>>,
    /// Per batch row: one head's share (its runs' `rows · (hi - lo)` summed).
    head_len: Vec<usize>,
    /// Per batch row: where its heads' shares start (`heads · head_len` of the rows before).
    batch_start: Vec<usize>,
    /// The buffer's length: every batch row's heads' shares.
    total: usize,
}

impl KeySpans {
    /// The spans of `hidden` `[b, s, t]` (`true`: the key is hidden from the query), for
    /// `heads` heads.
    fn new(hidden: &[bool], b: usize, heads: usize, s: usize, t: usize) -> Self {
        let mut runs = Vec::with_capacity(b);
        let (mut head_len, mut batch_start) = (Vec::with_capacity(b), Vec::with_capacity(b));
        let mut total = 0;
        for bi in 0..b {
            let mut len = 0;
            let mut row_runs: Vec<Run> = Vec::new();
            for r0 in (0..s).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(s - r0);
                let (mut lo, mut hi) = (t, 0);
                for r in r0..r0 + rows {
                    let row = &hidden[(bi * s + r) * t..(bi * s + r + 1) * t];
                    if let Some(first) = row.iter().position(|&m| !m) {
                        lo = lo.min(first);
                        hi = hi.max(row.iter().rposition(|&m| !m).unwrap_or(first) + 1);
                    }
                }
                let (lo, hi) = if lo < hi { (lo, hi) } else { (0, 0) };
                len += rows * (hi - lo);
                match row_runs.last_mut() {
                    Some(run) if (run.lo, run.hi) == (lo, hi) => run.rows += rows,
                    _ => row_runs.push(Run {
                        r0,
                        rows,
                        lo,
                        hi,
                        offset: len - rows * (hi - lo),
                    }),
                }
            }
            runs.push(row_runs);
            head_len.push(len);
            batch_start.push(total);
            total += heads * len;
        }
        Self {
            runs,
            head_len,
            batch_start,
            total,
        }
    }

    /// Where head `hi` of batch row `bi` starts.
    fn head_start(&self, bi: usize, hi: usize) -> usize {
        self.batch_start[bi] + hi * self.head_len[bi]
    }

    /// Batch row `bi`'s runs whose rows see some key (the others' outputs and gradients
    /// stay 0).
    fn seen(&self, bi: usize) -> impl Iterator<Item = Run> + '_ {
        self.runs[bi].iter().copied().filter(|run| run.width() > 0)
    }
}

impl Run {
    /// The keys the run multiplies over, `hi - lo`.
    fn width(&self) -> usize {
        self.hi - self.lo
    }
}

/// Softmax of a row of scores over the keys not `hidden`, in place; hidden keys (and every key
/// of a row that sees none) get 0.
fn masked_softmax_row(row: &mut [f32], hidden: &[bool]) {
    let mut max = f32::NEG_INFINITY;
    mask_max(row, hidden, &mut max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    softmax_shifted(row, max);
}

vectorised!(softmax_shifted, softmax_shifted_loop, (row: &mut [f32], max: f32));
vectorised!(mask_max, mask_max_loop, (row: &mut [f32], hidden: &[bool], max: &mut f32));

/// Sets the `hidden` keys of `row` to `−∞` and raises `max` to the largest of the others
/// (branch-free in 16 lanes; the maximum is the same value in any order, NaN never counts).
#[inline(always)]
fn mask_max_loop(row: &mut [f32], hidden: &[bool], max: &mut f32) {
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    // Fixed-size blocks by index, the hidden keys' −∞ chosen by a bit mask and the block
    // written from a local: with zipped chunk iterators and a select on the bool, LLVM
    // compiled this loop scalar.
    let n = row.len().min(hidden.len());
    let (row, hidden) = (&mut row[..n], &hidden[..n]);
    let (rows, rest) = row.as_chunks_mut::<L>();
    let (keys, rest_keys) = hidden.as_chunks::<L>();
    for i in 0..rows.len().min(keys.len()) {
        let (r, h) = (&mut rows[i], &keys[i]);
        let mut out = [0f32; L];
        for j in 0..L {
            // All ones where the key is hidden.
            let m = u32::from(h[j]).wrapping_neg();
            let v = f32::from_bits((r[j].to_bits() & !m) | (f32::NEG_INFINITY.to_bits() & m));
            out[j] = v;
            lanes[j] = if v > lanes[j] { v } else { lanes[j] };
        }
        *r = out;
    }
    for (j, x) in rest.iter_mut().enumerate() {
        if rest_keys[j] {
            *x = f32::NEG_INFINITY;
        } else if *x > *max {
            *max = *x;
        }
    }
    for v in lanes {
        if v > *max {
            *max = v;
        }
    }
}
vectorised!(softmax_backward_row, softmax_backward_loop, (ds: &mut [f32], p: &[f32]));

/// `exp(x − max) / Σ exp(x − max)` in place (`−∞` gives 0).
#[inline(always)]
fn softmax_shifted_loop(row: &mut [f32], max: f32) {
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    // Fixed-size blocks, as in `dot64`.
    let (blocks, rest) = row.as_chunks_mut::<L>();
    for c in blocks.iter_mut() {
        for j in 0..L {
            c[j] = exp_rounded_f32(c[j] - max);
            acc[j] += f64::from(c[j]);
        }
    }
    let mut sum: f64 = acc.iter().sum();
    for x in rest.iter_mut() {
        *x = exp_rounded_f32(*x - max);
        sum += f64::from(*x);
    }
    let inv = (1.0 / sum) as f32;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `ds ← p ⊙ (ds − Σ ds ⊙ p)` in place.
#[inline(always)]
fn softmax_backward_loop(ds: &mut [f32], p: &[f32]) {
    let c = dot64(ds, p, None) as f32;
    let n = ds.len().min(p.len());
    let (ds, p) = (&mut ds[..n], &p[..n]);
    for j in 0..n {
        ds[j] = p[j] * (ds[j] - c);
    }
}

#[cfg(test)]
mod tests {
    //! Each kernel against burn's autodiff of the same definition composed of tensor ops
    //! (values and input gradients of `Σ out ⊙ r` for a random `r`), on inputs with strides,
    //! grouped-query heads, padding and a query row that sees no key. The flag of
    //! [`set_enabled`] is never touched here (tests run in parallel).
    use super::*;
    use burn::tensor::activation::{silu, softmax};
    use burn::tensor::{Device, Distribution};

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    fn vals<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
        t.to_data().try_to_vec::<f32>().expect("f32 values")
    }

    /// Fails on a length mismatch, a NaN on either side, or a difference over `tol · (1 + |want|)`.
    fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                g.is_finite() && w.is_finite() && (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Value of `f` and the gradients of `Σ f(inputs) ⊙ r` at `inputs` (fresh leaves).
    fn run<const D: usize, const E: usize, const N: usize>(
        inputs: [Tensor<D>; N],
        r: &Tensor<E>,
        f: impl Fn(&[Tensor<D>; N]) -> Tensor<E>,
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let leaves: [Tensor<D>; N] = inputs.map(|t| t.detach().require_grad());
        let out = f(&leaves);
        let grads = (out.clone() * r.clone()).sum().backward();
        let g = leaves
            .iter()
            .map(|l| vals(&l.grad(&grads).expect("a gradient for every input")))
            .collect();
        (vals(&out), g)
    }

    #[test]
    fn rms_norm_matches_the_composed_ops() {
        let dev = device();
        let n = 37;
        // A transposed view: the kernel reads it through a contiguous copy.
        let x = randn([5, 3, n], &dev).swap_dims(0, 1);
        let w = randn([n], &dev);
        let r = randn([3, 5, n], &dev);
        let eps = 1e-6;
        let (y, g) = run([x.clone()], &r, |[x]| {
            rms_norm(x, &w, eps).expect("the kernel applies")
        });
        let (y0, g0) = run([x.clone()], &r, |[x]| {
            let var = x.clone().square().mean_dim(2);
            x.clone() * var.add_scalar(eps).sqrt().recip() * w.clone().unsqueeze::<3>()
        });
        close("rms_norm", &y, &y0, 1e-5);
        close("rms_norm dx", &g[0], &g0[0], 1e-4);
        // A trained weight (full fine-tuning) keeps burn's ops.
        assert!(rms_norm(&x, &w.clone().require_grad(), eps).is_none());
    }

    #[test]
    fn silu_mul_matches_the_composed_ops() {
        let dev = device();
        let gate = randn([3, 7, 1001], &dev).mul_scalar(4.0);
        let up = randn([3, 7, 1001], &dev);
        let r = randn([3, 7, 1001], &dev);
        let (y, g) = run([gate.clone(), up.clone()], &r, |[g, u]| {
            activation_mul(Activation::Silu, g, Some(u)).expect("the kernel applies")
        });
        let (y0, g0) = run([gate, up], &r, |[g, u]| silu(g.clone()) * u.clone());
        close("silu_mul", &y, &y0, 1e-5);
        close("silu_mul dgate", &g[0], &g0[0], 1e-5);
        close("silu_mul dup", &g[1], &g0[1], 1e-5);
    }

    #[test]
    fn gelu_tanh_and_ungated_activations_match_the_composed_ops() {
        let dev = device();
        let x = randn([3, 7, 1001], &dev).mul_scalar(3.0);
        let up = randn([3, 7, 1001], &dev);
        let r = randn([3, 7, 1001], &dev);
        let gelu = |x: &Tensor<3>| crate::mlp::gelu_new(x.clone());
        // Gated gelu_new (T5.1.1's feed-forward).
        let (y, g) = run([x.clone(), up.clone()], &r, |[x, u]| {
            activation_mul(Activation::GeluTanh, x, Some(u)).expect("the kernel applies")
        });
        let (y0, g0) = run([x.clone(), up.clone()], &r, |[x, u]| gelu(x) * u.clone());
        close("gelu_tanh · up", &y, &y0, 1e-5);
        close("gelu_tanh · up dx", &g[0], &g0[0], 1e-5);
        close("gelu_tanh · up dup", &g[1], &g0[1], 1e-5);
        // gelu_new alone (GPT-2's MLP) and SiLU alone.
        let (y, g) = run([x.clone()], &r, |[x]| {
            activation_mul(Activation::GeluTanh, x, None).expect("the kernel applies")
        });
        let (y0, g0) = run([x.clone()], &r, |[x]| gelu(x));
        close("gelu_tanh", &y, &y0, 1e-5);
        close("gelu_tanh dx", &g[0], &g0[0], 1e-5);
        let (y, g) = run([x.clone()], &r, |[x]| {
            activation_mul(Activation::Silu, x, None).expect("the kernel applies")
        });
        let (y0, g0) = run([x], &r, |[x]| silu(x.clone()));
        close("silu", &y, &y0, 1e-5);
        close("silu dx", &g[0], &g0[0], 1e-5);
        // Exact GELU and ReLU have no kernel.
        let z = randn([2, 3], &dev);
        assert!(activation_mul(Activation::Gelu, &z, None).is_none());
        assert!(activation_mul(Activation::Relu, &z, None).is_none());
    }

    #[test]
    fn rope_matches_the_composed_ops() {
        let dev = device();
        let (b, h, s, d) = (2, 3, 5, 8);
        let cos = randn([b, 1, s, d], &dev);
        let sin = randn([b, 1, s, d], &dev);
        let r = randn([b, h, s, d], &dev);
        // [b, s, h, d] viewed as [b, h, s, d], as the projections give it (read in place), and
        // [b, h, d, s] viewed as [b, h, s, d] (rows not contiguous: copied first).
        let views = [
            randn([b, s, h, d], &dev).swap_dims(1, 2),
            randn([b, h, d, s], &dev).swap_dims(2, 3),
        ];
        for x in views {
            let (y, g) = run([x.clone()], &r, |[x]| {
                rope(x, &cos, &sin).expect("the kernel applies")
            });
            let (y0, g0) = run([x], &r, |[x]| {
                let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
                let x2 = x.clone().slice([0..b, 0..h, 0..s, d / 2..d]);
                let rot = Tensor::cat(vec![x2.neg(), x1], 3);
                x.clone() * cos.clone() + rot * sin.clone()
            });
            close("rope", &y, &y0, 1e-5);
            close("rope dx", &g[0], &g0[0], 1e-5);
        }
    }

    #[test]
    fn attention_matches_the_composed_ops() {
        // Grouped-query heads (4 over 2), keys past the queries (a cache of 3), strided q / v;
        // and a longer causal case over 150 queries and 170 keys.
        // The longer one also with a sliding window of 40 keys (blocks of query rows whose
        // keys start past the first: the spans the products are cut to), and bidirectional
        // (padding only: the blocks merge into one run per batch row).
        for (b, h, kv, s, past, d, keys) in [
            (2, 4, 2, 5, 3, 8, Keys::Causal(None)),
            (2, 2, 1, 150, 20, 8, Keys::Causal(None)),
            (2, 2, 1, 150, 20, 8, Keys::Causal(Some(40))),
            (2, 2, 1, 150, 0, 8, Keys::All),
        ] {
            attention_case(b, h, kv, s, past, d, keys);
        }
    }

    /// The keys a query may see in [`attention_case`] (besides padding).
    #[derive(Clone, Copy)]
    enum Keys {
        /// Causal, with an optional sliding window.
        Causal(Option<usize>),
        /// Every key (an encoder's mask).
        All,
    }

    #[test]
    fn key_spans_cover_every_visible_key_of_their_runs() {
        // Causal over 130 queries after a cache of 6, a window of 50 keys, two documents
        // packed in the second row, and the first row's queries 64..=70 seeing nothing.
        let (b, s, past) = (2, 130, 6);
        let t = past + s;
        let mut am = vec![1u8; b * t];
        for j in 0..t {
            am[t + j] = if j < 90 { 1 } else { 2 };
        }
        let dev = device();
        let mut hidden = vals_bool(&crate::attention::causal_mask(
            &am,
            b,
            s,
            past,
            Some(50),
            &dev,
        ));
        for r in 64..=70 {
            hidden[r * t..(r + 1) * t].fill(true);
        }
        let heads = 3;
        let spans = KeySpans::new(&hidden, b, heads, s, t);
        assert_eq!(spans.runs.len(), b);
        // The runs tile the buffer: each head's share is its runs' areas, back to back.
        let mut at = 0;
        for bi in 0..b {
            for hi in 0..heads {
                assert_eq!(spans.head_start(bi, hi), at);
                for run in &spans.runs[bi] {
                    assert_eq!(spans.head_start(bi, hi) + run.offset, at);
                    at += run.rows * (run.hi - run.lo);
                }
            }
        }
        assert_eq!(at, spans.total);
        let mut narrower = 0;
        for (bi, runs) in spans.runs.iter().enumerate() {
            // The runs cover the rows in order, in whole blocks, and adjacent runs differ.
            let mut next = 0;
            for (i, run) in runs.iter().enumerate() {
                assert_eq!(run.r0, next);
                assert!(run.r0 % QUERY_BLOCK == 0 && run.rows > 0);
                next += run.rows;
                if i > 0 {
                    assert_ne!((runs[i - 1].lo, runs[i - 1].hi), (run.lo, run.hi));
                }
            }
            assert_eq!(next, s);
            for run in runs {
                let (lo, hi) = (run.lo, run.hi);
                let mut seen = false;
                for r in run.r0..run.r0 + run.rows {
                    for j in 0..t {
                        if !hidden[(bi * s + r) * t + j] {
                            seen = true;
                            assert!(lo <= j && j < hi, "row {r} key {j} outside {lo}..{hi}");
                        }
                    }
                }
                // The span is tight in each of the run's blocks: its first and last keys are
                // seen by some row of the block.
                if seen {
                    for b0 in (run.r0..run.r0 + run.rows).step_by(QUERY_BLOCK) {
                        let col = |j: usize| {
                            (b0..(b0 + QUERY_BLOCK).min(s)).any(|r| !hidden[(bi * s + r) * t + j])
                        };
                        assert!(col(lo) && col(hi - 1), "{lo}..{hi} not tight");
                    }
                    narrower += usize::from(hi - lo < t);
                } else {
                    assert_eq!((lo, hi), (0, 0));
                }
            }
        }
        assert!(
            narrower >= 4,
            "only {narrower} spans narrower than the keys"
        );
        // A mask that hides nothing (an encoder's): one run of all rows over all keys.
        let open = KeySpans::new(&vec![false; b * s * t], b, heads, s, t);
        for runs in &open.runs {
            assert_eq!(
                runs,
                &[Run {
                    r0: 0,
                    rows: s,
                    lo: 0,
                    hi: t,
                    offset: 0
                }]
            );
        }
        assert_eq!(open.total, b * heads * s * t);
    }

    fn attention_case(b: usize, h: usize, kv: usize, s: usize, past: usize, d: usize, keys: Keys) {
        let dev = device();
        let t = past + s;
        let q = randn([b, s, h, d], &dev).swap_dims(1, 2);
        let k = randn([b, kv, t, d], &dev);
        let v = randn([b, t, kv, d], &dev).swap_dims(1, 2);
        // Causal over the cache, the first row's keys 0 and 1 padded, and in the second
        // row a query (its position 2) that sees no key.
        let mut am = vec![1u8; b * t];
        am[0] = 0;
        am[1] = 0;
        let window = match keys {
            Keys::Causal(window) => window,
            Keys::All => None,
        };
        let mut mask = vals_bool(&crate::attention::causal_mask(
            &am, b, s, past, window, &dev,
        ));
        if matches!(keys, Keys::All) {
            // An encoder's mask: the padding only (the blocks merge into one run per row).
            for bi in 0..b {
                for r in 0..s {
                    for j in 0..t {
                        mask[(bi * s + r) * t + j] = am[bi * t + j] == 0;
                    }
                }
            }
        }
        for j in 0..t {
            mask[(s + 2) * t + j] = true;
        }
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(mask, [b, 1, s, t]), &dev);
        let r = randn([b, s, h * d], &dev);
        // Without and with an additive score bias (T5: relative positions, no scaling).
        for bias in [None, Some(randn([1, h, s, t], &dev))] {
            let scale = if bias.is_some() {
                1.0
            } else {
                1.0 / (d as f64).sqrt()
            };
            let (y, g) = run([q.clone(), k.clone(), v.clone()], &r, |[q, k, v]| {
                attention_within(q, k, v, &mask, bias.as_ref(), scale, usize::MAX)
                    .expect("the kernel applies")
            });
            // Without room to keep the probabilities, the backward forms them again: the
            // same bits.
            let (y1, g1) = run([q.clone(), k.clone(), v.clone()], &r, |[q, k, v]| {
                attention_within(q, k, v, &mask, bias.as_ref(), scale, 0)
                    .expect("the kernel applies")
            });
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y1), bits(&y), "attention formed again: values");
            for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
                assert_eq!(bits(&g1[i]), bits(&g[i]), "attention formed again: {name}");
            }
            let (y0, g0) = run([q.clone(), k.clone(), v.clone()], &r, |[q, k, v]| {
                let rep = h / kv;
                let expand = |x: &Tensor<4>| {
                    x.clone()
                        .unsqueeze_dim::<5>(2)
                        .expand([b, kv, rep, t, d])
                        .reshape([b, h, t, d])
                };
                let mut scores = q
                    .clone()
                    .matmul(expand(k).swap_dims(2, 3))
                    .mul_scalar(scale);
                if let Some(bias) = &bias {
                    scores = scores + bias.clone();
                }
                let scores = scores.mask_fill(mask.clone().expand([b, h, s, t]), -1e30);
                let p = softmax(scores, 3);
                // The row that sees no key: zeros, as the kernel and burn's attention give.
                let seen = mask
                    .clone()
                    .bool_not()
                    .float()
                    .sum_dim(3)
                    .greater_elem(0.0)
                    .float();
                let p = p * seen;
                p.matmul(expand(v)).swap_dims(1, 2).reshape([b, s, h * d])
            });
            close("attention", &y, &y0, 1e-5);
            for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
                close(&format!("attention {name}"), &g[i], &g0[i], 1e-4);
            }
            // The row that sees no key is zeros.
            let row = &y[(s + 2) * h * d..(s + 3) * h * d];
            assert!(row.iter().all(|&x| x == 0.0), "{row:?}");
        }
    }

    #[test]
    fn masked_softmax_rows_equal_the_sequential_pass_bit_for_bit() {
        // The plain loop the lane version replaced: hidden keys to −∞, the maximum of the others.
        fn sequential(row: &mut [f32], hidden: &[bool]) -> f32 {
            let mut max = f32::NEG_INFINITY;
            for (x, &m) in row.iter_mut().zip(hidden) {
                if m {
                    *x = f32::NEG_INFINITY;
                } else if *x > max {
                    max = *x;
                }
            }
            max
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Widths around the 16 lanes, masks from none to all hidden, signed zeros and ties.
        for w in [1, 15, 16, 17, 33, 64, 100, 257] {
            for density in [0u64, 1, 4, 8] {
                let row: Vec<f32> = (0..w)
                    .map(|_| match next() % 7 {
                        0 => 0.0,
                        1 => -0.0,
                        2 => 3.5,
                        _ => (next() % 2000) as f32 / 100.0 - 10.0,
                    })
                    .collect();
                let hidden: Vec<bool> = (0..w).map(|_| next() % 8 < density).collect();
                let (mut a, mut b) = (row.clone(), row.clone());
                let max = sequential(&mut a, &hidden);
                let mut lanes = f32::NEG_INFINITY;
                mask_max(&mut b, &hidden, &mut lanes);
                assert_eq!(max, lanes, "w {w}, density {density}");
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "w {w}, density {density}");
                // The softmax after it gives the same bits with either maximum's sign of zero.
                let (mut pa, mut pb) = (row.clone(), row);
                masked_softmax_row(&mut pb, &hidden);
                let m = sequential(&mut pa, &hidden);
                if m == f32::NEG_INFINITY {
                    pa.fill(0.0);
                } else {
                    softmax_shifted(&mut pa, m);
                }
                assert_eq!(bits(&pa), bits(&pb), "softmax: w {w}, density {density}");
            }
        }
    }

    #[test]
    fn unpacked_bits_are_the_packed_booleans() {
        let hidden: Vec<bool> = (0..300).map(|i| (i * 7 + i / 13) % 3 == 0).collect();
        let bits = pack_bits(&hidden);
        let mut out = Vec::new();
        for (at, n) in [
            (0, 300),
            (5, 59),
            (63, 2),
            (64, 64),
            (100, 200),
            (299, 1),
            (10, 0),
        ] {
            unpack_bits(&bits, at, n, &mut out);
            assert_eq!(out, hidden[at..at + n], "{at}..{}", at + n);
        }
    }

    fn vals_bool(t: &Tensor<4, Bool>) -> Vec<bool> {
        t.to_data().try_to_vec::<bool>().expect("bool values")
    }

    #[test]
    fn kernels_step_aside_outside_autodiff_and_for_other_shapes() {
        let plain = Device::flex();
        let x = randn([2, 4], &plain);
        assert!(rms_norm(&x, &randn([4], &plain), 1e-6).is_none());
        let dev = device();
        let x = randn([2, 4], &dev);
        assert!(rms_norm(&x, &randn([3], &dev), 1e-6).is_none());
        assert!(activation_mul(Activation::Silu, &x, Some(&randn([4, 2], &dev))).is_none());
        // Empty shapes are left to burn.
        let e = randn([1, 2, 0, 4], &dev);
        let cs = randn([1, 1, 0, 4], &dev);
        assert!(rope(&e, &cs, &cs).is_none());
        let m =
            Tensor::<4, Bool>::from_data(TensorData::new(Vec::<bool>::new(), [1, 1, 0, 0]), &dev);
        assert!(attention(&e, &e, &e, &m, None, 1.0).is_none());
    }

    #[test]
    fn rms_norm_is_within_f32_rounding_of_the_exact_values() {
        // Large activations (as deep decoders have): the kernel's value and gradient against
        // f64, and no further from it than the composed ops are.
        let dev = device();
        let (rows, n, eps) = (40, 64, 1e-6);
        let x = Tensor::<2>::random([rows, n], Distribution::Normal(0.0, 30.0), &dev);
        let w = Tensor::<1>::random([n], Distribution::Normal(1.0, 0.3), &dev);
        let r = randn([rows, n], &dev);
        let (xv, wv, rv) = (vals(&x), vals(&w), vals(&r));
        let (mut y64, mut dx64) = (vec![0f64; rows * n], vec![0f64; rows * n]);
        for i in 0..rows {
            let xr: Vec<f64> = xv[i * n..(i + 1) * n]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let inv = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
            let gw: Vec<f64> = (0..n)
                .map(|j| f64::from(rv[i * n + j]) * f64::from(wv[j]))
                .collect();
            let dot: f64 = (0..n).map(|j| gw[j] * xr[j]).sum();
            for j in 0..n {
                y64[i * n + j] = f64::from(wv[j]) * xr[j] * inv;
                dx64[i * n + j] = inv * gw[j] - xr[j] * inv.powi(3) * dot / n as f64;
            }
        }
        let err = |a: &[f32], b: &[f64]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .map(|(&a, &b)| (f64::from(a) - b).abs() / (b.abs() + 1e-3))
                .fold(
                    0.0f64,
                    |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
                )
        };
        let (y, g) = run([x.clone()], &r, |[x]| {
            rms_norm(x, &w, eps).expect("applies")
        });
        let (y0, g0) = run([x], &r, |[x]| {
            let var = x.clone().square().mean_dim(1);
            x.clone() * var.add_scalar(eps).sqrt().recip() * w.clone().unsqueeze::<2>()
        });
        let (ey, edx) = (err(&y, &y64), err(&g[0], &dx64));
        let (ey0, edx0) = (err(&y0, &y64), err(&g0[0], &dx64));
        assert!(
            ey <= 2.5e-7 && edx <= 2.5e-7,
            "kernel: value {ey:e}, gradient {edx:e}"
        );
        assert!(
            ey <= ey0 && edx <= edx0,
            "kernel {ey:e} / {edx:e}, composed {ey0:e} / {edx0:e}"
        );
    }

    /// The rotary rows in blocks give the bits of the plain per-element loop they replaced,
    /// forward and backward, for head sizes with and without a whole block per half.
    #[test]
    fn rope_rows_in_blocks_match_the_plain_loop() {
        let mut state = 0x9e37_79b9_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 4.0 - 2.0
        };
        for d in [2usize, 8, 32, 40, 64, 96, 128, 130] {
            let rows = 5;
            let v =
                |next: &mut dyn FnMut() -> f32| (0..rows * d).map(|_| next()).collect::<Vec<_>>();
            let (x, c, s) = (v(&mut next), v(&mut next), v(&mut next));
            for transpose in [false, true] {
                let mut got = vec![f32::NAN; rows * d];
                rope_rows(&x, &c, &s, &mut got, d, transpose);
                let mut want = vec![0f32; rows * d];
                let half = d / 2;
                for r in 0..rows {
                    for j in 0..half {
                        let (i1, i2) = (r * d + j, r * d + half + j);
                        if transpose {
                            want[i1] = x[i1] * c[i1] + x[i2] * s[i2];
                            want[i2] = x[i2] * c[i2] - x[i1] * s[i1];
                        } else {
                            want[i1] = x[i1] * c[i1] - x[i2] * s[i1];
                            want[i2] = x[i2] * c[i2] + x[i1] * s[i2];
                        }
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "d {d}, transpose {transpose}");
            }
        }
    }
}
