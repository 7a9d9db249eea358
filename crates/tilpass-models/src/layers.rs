//! Shared layers: norms, linear loading, rotary embeddings, attention with a KV cache, masks.

use burn::module::{Module, Param};
use burn::nn::{Dropout, Embedding};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Gradients, Tensor, TensorData};
use tilpass_core::Checkpoint;

use crate::error::Result;

/// RMS normalisation as HF Llama computes it: `w * x / sqrt(mean(x²) + eps)`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Scale, `[hidden]`.
    pub weight: Param<Tensor<1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// Loads `{prefix}.weight`.
    pub fn load(
        ckpt: &Checkpoint,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(ckpt.tensor(&format!("{prefix}.weight"), [dim], device)?),
            eps,
        })
    }

    /// Normalises the last dimension of `[.., hidden]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let var = x.clone().square().mean_dim(D - 1);
        let normed = x * (var.add_scalar(self.eps).sqrt().recip());
        normed * self.weight.val().unsqueeze::<D>()
    }
}

/// Layer normalisation with weight and bias (biased variance, as PyTorch).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, `[hidden]`.
    pub weight: Param<Tensor<1>>,
    /// Shift, `[hidden]`.
    pub bias: Param<Tensor<1>>,
    /// Epsilon.
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(
        ckpt: &Checkpoint,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(ckpt.tensor(&format!("{prefix}.weight"), [dim], device)?),
            bias: Param::from_tensor(ckpt.tensor(&format!("{prefix}.bias"), [dim], device)?),
            eps,
        })
    }

    /// Normalises the last dimension of `[.., hidden]` (burn's fused `layer_norm`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}

/// Layer normalisation without weight and bias over the last dimension (PyTorch's
/// `LayerNorm(elementwise_affine=False)`).
pub fn plain_layer_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let d = x.dims()[D - 1];
    let ones = Tensor::<1>::ones([d], &x.device());
    burn::tensor::module::layer_norm(x, ones, None, eps)
}

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

    /// Applies the layer to `[.., in]`, giving `[.., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let base = burn::tensor::module::linear(
            x.clone(),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
        );
        let mut y = base.clone();
        for br in self.lora.iter().filter(|b| b.active && !b.merged) {
            let h = br.dropout.forward(x.clone());
            let lora = burn::tensor::module::linear(h, br.a.val(), None);
            let lora = burn::tensor::module::linear(lora, br.b.val(), None).mul_scalar(br.scale);
            y = match &br.magnitude {
                None => y + lora,
                Some(m) => {
                    // PEFT: y + (m/n − 1)·Wx + (m/n)·s·BAx, with n = ‖W + ΔW‖ detached.
                    let ratio = (m.val() / br.weight_norm(self.weight.val())).unsqueeze::<D>();
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

/// Loads an embedding table `[n, dim]`.
pub fn load_embedding(
    ckpt: &Checkpoint,
    name: &str,
    n: usize,
    dim: usize,
    device: &Device,
) -> Result<Embedding> {
    Ok(Embedding {
        weight: Param::from_tensor(ckpt.tensor(name, [n, dim], device)?),
    })
}

/// Logits through a tied head: `hidden [b, s, d] · embeddingᵀ` with `embedding [vocab, d]`,
/// computed as `(E · hᵀ)ᵀ` so the large embedding matrix is never transposed (a transposed
/// view would be copied by the matmul on every call).
pub fn tied_logits(hidden: Tensor<3>, embedding: Tensor<2>) -> Tensor<3> {
    let [b, s, d] = hidden.dims();
    let [v, _] = embedding.dims();
    let h = hidden.reshape([b * s, d]).transpose();
    embedding.matmul(h).transpose().reshape([b, s, v])
}

/// Rotary position embeddings in HF's rotate-half layout.
#[derive(Debug, Clone)]
pub struct Rope {
    /// Inverse frequencies, `[head_dim / 2]`, after any scaling.
    pub inv_freq: Vec<f32>,
    /// Multiplier on cos and sin (1 for the default, linear and llama3 types).
    pub attention_scaling: f32,
}

impl Rope {
    /// `cos` and `sin` for positions `[batch, seq]`, each `[batch, 1, seq, head_dim]`, computed
    /// in f32 as transformers does (`freqs = inv_freq ⊗ position`, duplicated halves).
    pub fn cos_sin(
        &self,
        positions: &[i64],
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let hd = 2 * half;
        let mut cos = Vec::with_capacity(batch * seq * hd);
        let mut sin = Vec::with_capacity(batch * seq * hd);
        for &p in positions {
            let mut c = Vec::with_capacity(hd);
            let mut s = Vec::with_capacity(hd);
            for &f in &self.inv_freq {
                let a = f * p as f32;
                c.push(a.cos() * self.attention_scaling);
                s.push(a.sin() * self.attention_scaling);
            }
            cos.extend_from_slice(&c);
            cos.extend_from_slice(&c);
            sin.extend_from_slice(&s);
            sin.extend_from_slice(&s);
        }
        let shape = [batch, 1, seq, hd];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// `[-x2, x1]` for `x = [x1, x2]` along the last dimension.
fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let [b, h, s, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
    let x2 = x.slice([0..b, 0..h, 0..s, d / 2..d]);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// Applies rotary embeddings to `[batch, heads, seq, head_dim]`.
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    x.clone() * cos.clone() + rotate_half(x) * sin.clone()
}

/// Cached keys and values of every layer, `[batch, kv_heads, past, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
        }
    }

    /// A cache holding given keys and values per layer, `[batch, kv_heads, n, head_dim]` each
    /// (prefix tuning's virtual tokens).
    pub fn from_layers(layers: Vec<(Tensor<4>, Tensor<4>)>) -> Self {
        Self {
            layers: layers.into_iter().map(Some).collect(),
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every cached key and value tensor by `f(tensor)` (e.g. selecting beam rows).
    pub fn map(&mut self, f: impl Fn(Tensor<4>) -> Tensor<4>) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = f(k.clone());
            *v = f(v.clone());
        }
    }

    /// Appends new keys/values of `layer` and returns the full ones.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// Decoder attention mask `[batch, 1, q_len, past + q_len]`, `true` where query `i` (column
/// `past + i`) may **not** see key column `j`: it may see it when `j <= past + i`,
/// `attention_mask[b][j] != 0`, the key belongs to the query's document (packed rows number
/// their documents 1, 2, ...; a 0/1 mask is one document) and, with a sliding window `w`,
/// `past + i - j < w` (as transformers' causal / sliding-window masks).
pub fn causal_mask(
    attention_mask: &[u8],
    batch: usize,
    q_len: usize,
    past: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Tensor<4, Bool> {
    let k_len = past + q_len;
    debug_assert_eq!(attention_mask.len(), batch * k_len);
    let mut masked = vec![true; batch * q_len * k_len];
    for b in 0..batch {
        for i in 0..q_len {
            let qpos = past + i;
            // Packed rows number their documents 1, 2, ...: a real query sees only keys of
            // its own document (the usual 0/1 mask is one document).
            let doc = attention_mask[b * k_len + qpos];
            for j in 0..=qpos {
                let key = attention_mask[b * k_len + j];
                let visible = key != 0
                    && (doc == 0 || key == doc)
                    && sliding_window.is_none_or(|w| qpos - j < w);
                if visible {
                    masked[(b * q_len + i) * k_len + j] = false;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(masked, [batch, 1, q_len, k_len]), device)
}

/// Scaled dot-product attention with grouped-query heads: `q [b, h, s, d]`, `k`/`v`
/// `[b, kv, t, d]` with `h % kv == 0`; `mask [b, 1 or h, s, t]` is `true` where a key is hidden,
/// `bias [b, 1 or h, s, t]` is added to the scaled scores (relative positions). Returns
/// `[b, h, s, d]`. A query row that sees no key gets zeros.
///
/// Runs burn's fused `attention` (on Flex: tiled with an online softmax for long sequences,
/// so the `[s, t]` scores of every head are never materialised at once). Key/value heads are
/// expanded to the query heads first, since not every backend's kernel accepts GQA.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<&Tensor<4, Bool>>,
    bias: Option<&Tensor<4>>,
    scale: f64,
) -> Tensor<4> {
    let [b, h, _, d] = q.dims();
    let [_, kv, t, _] = k.dims();
    let (k, v) = if kv == h {
        (k, v)
    } else {
        let rep = h / kv;
        let expand = |x: Tensor<4>| {
            x.unsqueeze_dim::<5>(2)
                .expand([b, kv, rep, t, d])
                .reshape([b, h, t, d])
        };
        (expand(k), expand(v))
    };
    burn::tensor::module::attention(
        q,
        k,
        v,
        mask.cloned(),
        bias.cloned(),
        AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal: false,
        },
    )
}
