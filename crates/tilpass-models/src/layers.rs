//! Shared layers: norms, linear loading, rotary embeddings, attention with a KV cache, masks.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Tensor, TensorData};
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
/// `attention_mask[b][j] == 1` and, with a sliding window `w`, `past + i - j < w` (as
/// transformers' causal / sliding-window masks).
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
            for j in 0..=qpos {
                let visible = attention_mask[b * k_len + j] == 1
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
