//! Linear layers that carry LoRA / DoRA branches ([`Linear`], [`LoraBranch`]), their loading
//! from PyTorch `nn.Linear` and GPT-2 `Conv1D` weights, and [`HasLinears`], the view of a model
//! that adapters and trainers use.

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::{Device, Gradients, Tensor};
use tilpass_core::Checkpoint;

use crate::error::Result;

/// A linear layer `y = x·W + b` (`weight [in, out]`, burn's layout) that can carry LoRA / DoRA
/// adapters (`tilpass-peft` adds them): `y = x·W + b + Σ s·dropout(x)·A·B` over the active,
/// unmerged adapters.
#[derive(Module, Debug)]
pub struct Linear {
    /// Weight `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// Bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Adapters, in the order they were added.
    pub lora: Vec<LoraBranch>,
}

/// One named low-rank adapter on a [`Linear`] (HF PEFT's `lora_A`/`lora_B`, optional DoRA
/// magnitude).
#[derive(Module, Debug)]
pub struct LoraBranch {
    /// `A` in burn's layout `[in, r]` (PEFT's `lora_A.weight [r, in]` transposed).
    pub a: Param<Tensor<2>>,
    /// `B` in burn's layout `[r, out]` (PEFT's `lora_B.weight [out, r]` transposed).
    pub b: Param<Tensor<2>>,
    /// DoRA magnitude `m [out]`; `None` for plain LoRA.
    pub magnitude: Option<Param<Tensor<1>>>,
    /// Dropout on the adapter's input (training only).
    pub dropout: Dropout,
    /// `lora_alpha / r` (or `/ √r` with rsLoRA).
    pub scale: f64,
    /// The adapter's name (`default` unless named).
    pub name: String,
    /// Whether the adapter takes part in the forward pass.
    pub active: bool,
    /// Whether `s·A·B` (or the DoRA rescaling) has been folded into the weight.
    pub merged: bool,
    /// DoRA: the norm `‖W + ΔW‖` used by the merge, kept to undo it.
    #[module(skip)]
    pub merge_norm: Option<Tensor<1>>,
}

impl LoraBranch {
    /// `s · (A·B)` as a weight delta `[in, out]`.
    pub fn delta(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }

    /// DoRA's column norm `‖W + ΔW‖` over the input dimension, `[out]` (detached, as PEFT).
    pub fn weight_norm(&self, weight: Tensor<2>) -> Tensor<1> {
        let [_, out] = weight.dims();
        (weight + self.delta())
            .detach()
            .square()
            .sum_dim(0)
            .sqrt()
            .reshape([out])
    }
}

impl Linear {
    /// A plain linear layer from a weight `[in, out]` and optional bias `[out]`.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            lora: Vec::new(),
        }
    }

    /// `(in, out)` sizes.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight.dims();
        (i, o)
    }

    /// The weight `[in, out]` in `dtype` (cast when stored otherwise, e.g. bf16 for inference).
    fn weight_as(&self, dtype: burn::tensor::DType) -> Tensor<2> {
        let w = self.weight.val();
        if w.dtype() == dtype { w } else { w.cast(dtype) }
    }

    /// Stores the weight in `dtype` (bf16 / f16 halve what a decode step reads; see
    /// [`crate::matvec`]). The bias and adapters stay as they are.
    pub fn set_weight_dtype(&mut self, dtype: crate::matvec::WeightDtype) {
        let w = self.weight.val();
        if w.dtype() != dtype.dtype() {
            self.weight = Param::initialized(self.weight.id, w.cast(dtype.dtype()));
        }
    }

    /// Applies the layer to `[.., in]`, giving `[.., out]`, with burn's `linear` (a weight
    /// stored in another dtype than `x` is cast first).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_with(x, false)
    }

    /// [`Self::forward`] for the decoders' layers: a few rows (a decode step) on Flex take
    /// [`crate::matvec::try_linear`]'s kernel, which reads the weight in place (f32 or bf16).
    /// Its sums run in another order than burn's matmul (last-bit differences), so callers
    /// whose outputs are compared byte for byte elsewhere keep [`Self::forward`].
    pub fn forward_decode<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_with(x, true)
    }

    /// The weight `[in, out]` when the layer is a plain frozen matrix: no bias, no adapter
    /// taking part, no gradient (for [`crate::head_loss`]); `None` otherwise.
    pub fn frozen_plain_weight(&self) -> Option<Tensor<2>> {
        let w = self.weight.val();
        let adapted = self.lora.iter().any(|b| b.active && !b.merged);
        (self.bias.is_none() && !adapted && !w.is_require_grad()).then_some(w)
    }

    fn forward_with<const D: usize>(&self, x: Tensor<D>, kernel: bool) -> Tensor<D> {
        if D > 2 {
            // `[.., in]` as one `[rows, in]` matrix: one product per weight (burn multiplies a
            // `[b, s, in]` input batch by batch, packing the weight again for every row group,
            // and sums the per-batch weight gradients of adapters in the backward).
            let dims = x.dims();
            let rows = dims[..D - 1].iter().product::<usize>();
            let y = self.forward_with::<2>(x.reshape([rows, dims[D - 1]]), kernel);
            let mut out = dims;
            out[D - 1] = y.dims()[1];
            return y.reshape(out);
        }
        let bias = self.bias.as_ref().map(|b| b.val());
        #[cfg(feature = "flex")]
        if let Some(y) = self.train_kernel(&x, bias.as_ref()) {
            return y;
        }
        let fast = match kernel {
            true => crate::matvec::try_linear(&x, &self.weight.val(), bias.as_ref()),
            false => None,
        };
        let base = match fast {
            Some(y) => y,
            None => plain_linear(x.clone(), self.weight_as(x.dtype()), bias),
        };
        let mut y = base.clone();
        for br in self.lora.iter().filter(|b| b.active && !b.merged) {
            let h = br.dropout.forward(x.clone());
            let lora = plain_linear(h, br.a.val(), None);
            let lora = plain_linear(lora, br.b.val(), None).mul_scalar(br.scale);
            y = match &br.magnitude {
                None => y + lora,
                Some(m) => {
                    // PEFT: y + (m/n − 1)·Wx + (m/n)·s·BAx, with n = ‖W + ΔW‖ detached.
                    let ratio =
                        (m.val() / br.weight_norm(self.weight_as(x.dtype()))).unsqueeze::<D>();
                    let wx = match &self.bias {
                        Some(b) => base.clone() - b.val().unsqueeze::<D>(),
                        None => base.clone(),
                    };
                    y + wx * (ratio.clone() - 1.0) + lora * ratio
                }
            };
        }
        y
    }
}

impl Linear {
    /// Training on Flex (autodiff): a frozen weight with at most one plain LoRA branch
    /// (no DoRA magnitude, no dropout) as one recorded operation
    /// ([`crate::train_kernels::linear`]); `None` otherwise, and for `D != 2`.
    #[cfg(feature = "flex")]
    fn train_kernel<const D: usize>(
        &self,
        x: &Tensor<D>,
        bias: Option<&Tensor<1>>,
    ) -> Option<Tensor<D>> {
        if D != 2 || !x.device().is_autodiff() {
            return None;
        }
        let x2: Tensor<2> = x.clone().reshape([x.dims()[0], x.dims()[D - 1]]);
        let mut active = self.lora.iter().filter(|b| b.active && !b.merged);
        let branch = match (active.next(), active.next()) {
            (None, _) => None,
            (Some(br), None) if br.magnitude.is_none() && br.dropout.prob == 0.0 => {
                Some((br.a.val(), br.b.val(), br.scale))
            }
            _ => return None,
        };
        let w = self.weight_as(x.dtype());
        let y = crate::train_kernels::linear(
            &x2,
            &w,
            bias,
            branch
                .as_ref()
                .map(|(a, b, scale)| crate::train_kernels::Branch {
                    a,
                    b,
                    scale: *scale,
                }),
        )?;
        let mut out = x.dims();
        out[D - 1] = y.dims()[1];
        Some(y.reshape(out))
    }
}

/// burn's `linear` (`x [.., in] · w [in, out] + bias`); for a matrix input on Flex outside
/// autodiff computed by [`crate::host_gemm::try_linear`] instead: the same values bit for bit,
/// without the copy burn-flex makes of every product's output.
fn plain_linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    if D == 2 {
        let dims = x.dims();
        let x2: Tensor<2> = x.clone().reshape([dims[0], dims[1]]);
        if let Some(y) = crate::host_gemm::try_linear(&x2, &w, bias.as_ref()) {
            let mut out = dims;
            out[1] = y.dims()[1];
            return y.reshape(out);
        }
    }
    burn::tensor::module::linear(x, w, bias)
}

/// A model whose linear layers can carry adapters, each named by its Hugging Face module path
/// (`model.layers.0.self_attn.q_proj`, `bert.encoder.layer.0.attention.self.query`, ...), the
/// names HF PEFT uses in `target_modules` and in adapter files.
pub trait HasLinears {
    /// Every adaptable linear layer with its path, in model order.
    fn linears(&self) -> Vec<(String, &Linear)>;
    /// The same, mutable.
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)>;
    /// HF `model_type` (`llama`, `gpt2`, `bert`, `t5`, ...).
    fn model_type(&self) -> String;
    /// True when the HF modules are GPT-2's `Conv1D` (PEFT then records `fan_in_fan_out`).
    fn conv1d_layers(&self) -> bool {
        false
    }
    /// Total number of parameters, as `sum(p.numel())` over the HF model (tied weights once).
    fn parameter_count(&self) -> usize;
    /// Stops gradient tracking of every parameter (burn's `Module::no_grad`); adapters then
    /// re-enable their own.
    fn freeze(&mut self);
    /// Visits every float parameter (base weights, norms, embeddings, adapters) for whole-model
    /// training; see [`ParamFn`]. Paths are burn's module paths (`layers.0.attn.q.weight`),
    /// stable for a given architecture and config.
    fn map_params(&mut self, grads: Option<&Gradients>, f: &mut ParamFn<'_>);
    /// Makes every parameter trainable (for full fine-tuning on an autodiff device).
    fn unfreeze_all(&mut self) {
        self.map_params(None, &mut |_, v, _, _| {
            Some(Tensor::from_inner(v).require_grad())
        });
    }
}

/// The callback of [`HasLinears::map_params`]: called with a parameter's path, its value
/// flattened to `[numel]` (without autodiff), its rank, and its gradient (flattened, `None` when
/// it has none or no gradients were given). Returning `Some(new)` (`[numel]`) replaces the
/// value, keeping the parameter's id and its gradient tracking (a returned tensor marked
/// `require_grad` turns tracking on).
pub type ParamFn<'a> =
    dyn FnMut(&str, Tensor<1>, usize, Option<Tensor<1>>) -> Option<Tensor<1>> + 'a;

struct FlatMapper<'a, 'b> {
    path: Vec<String>,
    grads: Option<&'a Gradients>,
    f: &'a mut ParamFn<'b>,
}

impl burn::module::ModuleMapper for FlatMapper<'_, '_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let value = param.val();
        let dims = value.dims();
        let numel: usize = dims.iter().product();
        let grad = self
            .grads
            .and_then(|g| value.grad(g))
            .map(|g| g.reshape([numel]));
        let tracked = value.is_require_grad();
        let autodiff = value.is_autodiff();
        let flat = value.inner().reshape([numel]);
        let path = self.path.join(".");
        match (self.f)(&path, flat, D, grad) {
            Some(new) => {
                let track = tracked || new.is_require_grad();
                let t = new.inner().reshape(dims);
                let t = if autodiff || track {
                    Tensor::<D>::from_inner(t)
                } else {
                    t
                };
                let t = if track { t.require_grad() } else { t };
                Param::initialized(param.id, t)
            }
            None => param,
        }
    }
}

/// [`HasLinears::map_params`] for any burn module.
pub fn map_module_params<M: Module>(
    module: M,
    grads: Option<&Gradients>,
    f: &mut ParamFn<'_>,
) -> M {
    let mut mapper = FlatMapper {
        path: Vec::new(),
        grads,
        f,
    };
    module.map(&mut mapper)
}

/// Loads a PyTorch `nn.Linear` (`weight [out, in]`, optional `bias [out]`) into burn's layout
/// (`[in, out]`).
pub fn load_linear(
    ckpt: &Checkpoint,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &Device,
) -> Result<Linear> {
    // Transposed on the host so the stored weight is contiguous: a transposed view would be
    // copied by every matmul.
    let w: Tensor<2> = ckpt
        .read_f32_shaped(&format!("{prefix}.weight"), &[d_out, d_in])?
        .transposed()?
        .to_tensor(device)?;
    let b = if bias {
        Some(Param::from_tensor(ckpt.tensor(
            &format!("{prefix}.bias"),
            [d_out],
            device,
        )?))
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(w),
        bias: b,
        lora: Vec::new(),
    })
}

/// Loads a GPT-2 `Conv1D` (`weight [in, out]`, `bias [out]`), already in burn's layout.
pub fn load_conv1d(
    ckpt: &Checkpoint,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<Linear> {
    Ok(Linear {
        weight: Param::from_tensor(ckpt.tensor(
            &format!("{prefix}.weight"),
            [d_in, d_out],
            device,
        )?),
        bias: Some(Param::from_tensor(ckpt.tensor(
            &format!("{prefix}.bias"),
            [d_out],
            device,
        )?)),
        lora: Vec::new(),
    })
}

/// Implements [`HasLinears`] for a wrapper (`DecoderLm`, `EncoderModel`, ...) by delegating
/// every method to the model that its methods `$via(&self)` / `$via_mut(&mut self)` return
/// (`&dyn HasLinears` or a subtrait).
macro_rules! has_linears_via {
    ($t:ty, $via:ident, $via_mut:ident) => {
        impl $crate::linear::HasLinears for $t {
            fn linears(&self) -> Vec<(String, &$crate::linear::Linear)> {
                self.$via().linears()
            }
            fn linears_mut(&mut self) -> Vec<(String, &mut $crate::linear::Linear)> {
                self.$via_mut().linears_mut()
            }
            fn model_type(&self) -> String {
                self.$via().model_type()
            }
            fn conv1d_layers(&self) -> bool {
                self.$via().conv1d_layers()
            }
            fn parameter_count(&self) -> usize {
                self.$via().parameter_count()
            }
            fn freeze(&mut self) {
                self.$via_mut().freeze()
            }
            fn map_params(
                &mut self,
                grads: Option<&burn::tensor::Gradients>,
                f: &mut $crate::linear::ParamFn<'_>,
            ) {
                self.$via_mut().map_params(grads, f)
            }
            fn unfreeze_all(&mut self) {
                self.$via_mut().unfreeze_all()
            }
        }
    };
}
pub(crate) use has_linears_via;
