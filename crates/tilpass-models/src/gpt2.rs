//! GPT-2 (HF `GPT2LMHeadModel`): learned positions, LayerNorm, fused QKV `Conv1D`, `gelu_new`,
//! LM head tied to the token embeddings.

use burn::module::Module;
use burn::nn::Embedding;

use crate::layers::Linear;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use tilpass_core::Checkpoint;

use crate::config::Gpt2Config;
use crate::error::{ModelError, Result};
use crate::layers::{KvCache, LayerNorm, attention, load_conv1d, load_embedding, tied_logits};

/// `gelu_new`: `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`.
pub fn gelu_new<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

/// One GPT-2 block.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Fused QKV projection `[hidden, 3 * hidden]`.
    pub c_attn: Linear,
    /// Attention output projection.
    pub c_proj: Linear,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP input projection.
    pub c_fc: Linear,
    /// MLP output projection.
    pub mlp_proj: Linear,
}

/// A GPT-2 causal language model.
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embeddings (also the LM head).
    pub wte: Embedding,
    /// Position embeddings.
    pub wpe: Embedding,
    /// Blocks.
    pub h: Vec<Gpt2Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
    /// The configuration.
    #[module(skip)]
    pub config: Gpt2Config,
}

impl Gpt2 {
    /// Loads weights (keys with or without the `transformer.` prefix).
    pub fn load(
        config: Gpt2Config,
        ckpt: &Checkpoint,
        path: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate().map_err(|e| e.in_file(path))?;
        if config.scale_attn_by_inverse_layer_idx {
            return Err(ModelError::UnsupportedConfig {
                path: path.into(),
                message: "scale_attn_by_inverse_layer_idx = true is not supported".into(),
            });
        }
        if !config.tie_word_embeddings {
            // transformers would use `lm_head.weight`; tilpass computes only the tied head.
            return Err(ModelError::UnsupportedConfig {
                path: path.into(),
                message:
                    "tie_word_embeddings = false (an untied `lm_head.weight`) is not supported \
                          for GPT-2"
                        .into(),
            });
        }
        if !matches!(
            config.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast"
        ) {
            return Err(ModelError::UnsupportedConfig {
                path: path.into(),
                message: format!(
                    "activation_function `{}` is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast are)",
                    config.activation_function
                ),
            });
        }
        let p = if ckpt.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let d = config.n_embd;
        let inner = config.n_inner.unwrap_or(4 * d);
        let eps = config.layer_norm_epsilon;
        let mut h = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let l = format!("{p}h.{i}");
            h.push(Gpt2Block {
                ln_1: LayerNorm::load(ckpt, &format!("{l}.ln_1"), d, eps, device)?,
                c_attn: load_conv1d(ckpt, &format!("{l}.attn.c_attn"), d, 3 * d, device)?,
                c_proj: load_conv1d(ckpt, &format!("{l}.attn.c_proj"), d, d, device)?,
                ln_2: LayerNorm::load(ckpt, &format!("{l}.ln_2"), d, eps, device)?,
                c_fc: load_conv1d(ckpt, &format!("{l}.mlp.c_fc"), d, inner, device)?,
                mlp_proj: load_conv1d(ckpt, &format!("{l}.mlp.c_proj"), inner, d, device)?,
            });
        }
        Ok(Self {
            wte: load_embedding(
                ckpt,
                &format!("{p}wte.weight"),
                config.vocab_size,
                d,
                device,
            )?,
            wpe: load_embedding(
                ckpt,
                &format!("{p}wpe.weight"),
                config.n_positions,
                d,
                device,
            )?,
            h,
            ln_f: LayerNorm::load(ckpt, &format!("{p}ln_f"), d, eps, device)?,
            config,
        })
    }

    /// Hidden states after `ln_f`, `[batch, seq, hidden]`.
    pub fn hidden(
        &self,
        input_ids: Tensor<2, Int>,
        positions: &[i64],
        mask: &Tensor<4, Bool>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let x = self.wte.forward(input_ids);
        self.hidden_from(x, positions, mask, cache)
    }

    /// Final hidden states from token embeddings `[batch, seq, hidden]` (position embeddings
    /// are added here).
    pub fn hidden_from(
        &self,
        embeds: Tensor<3>,
        positions: &[i64],
        mask: &Tensor<4, Bool>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, s, _] = embeds.dims();
        let device = embeds.device();
        let pos = Tensor::<2, Int>::from_data(TensorData::new(positions.to_vec(), [b, s]), &device);
        let mut x = embeds + self.wpe.forward(pos);
        let (d, nh) = (self.config.n_embd, self.config.n_head);
        let hd = d / nh;
        let scale = if self.config.scale_attn_weights {
            1.0 / (hd as f64).sqrt()
        } else {
            1.0
        };
        for (i, blk) in self.h.iter().enumerate() {
            let qkv = blk.c_attn.forward(blk.ln_1.forward(x.clone()));
            let split = |j: usize| {
                qkv.clone()
                    .slice([0..b, 0..s, j * d..(j + 1) * d])
                    .reshape([b, s, nh, hd])
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(i, k, v),
                None => (k, v),
            };
            let a = attention(q, k, v, Some(mask), None, scale)
                .swap_dims(1, 2)
                .reshape([b, s, d]);
            x = x + blk.c_proj.forward(a);
            let m = blk
                .mlp_proj
                .forward(gelu_new(blk.c_fc.forward(blk.ln_2.forward(x.clone()))));
            x = x + m;
        }
        self.ln_f.forward(x)
    }

    /// Logits `[batch, seq, vocab]` through the tied head.
    pub fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        tied_logits(hidden, self.wte.weight.val())
    }
}

macro_rules! gpt2_linears {
    ($s:expr $(, $m:tt)?) => {{
        let mut out = Vec::new();
        for (i, b) in (& $($m)? $s.h).into_iter().enumerate() {
            let p = format!("transformer.h.{i}");
            out.push((format!("{p}.attn.c_attn"), & $($m)? b.c_attn));
            out.push((format!("{p}.attn.c_proj"), & $($m)? b.c_proj));
            out.push((format!("{p}.mlp.c_fc"), & $($m)? b.c_fc));
            out.push((format!("{p}.mlp.c_proj"), & $($m)? b.mlp_proj));
        }
        out
    }};
}

impl crate::layers::HasLinears for Gpt2 {
    fn linears(&self) -> Vec<(String, &Linear)> {
        gpt2_linears!(self)
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        gpt2_linears!(self, mut)
    }
    fn model_type(&self) -> String {
        "gpt2".into()
    }
    fn conv1d_layers(&self) -> bool {
        true
    }
    fn parameter_count(&self) -> usize {
        burn::module::Module::num_params(self)
    }
    fn map_params(
        &mut self,
        grads: Option<&burn::tensor::Gradients>,
        f: &mut crate::layers::ParamFn<'_>,
    ) {
        *self = crate::layers::map_module_params(self.clone(), grads, f);
    }
    fn freeze(&mut self) {
        *self = burn::module::Module::no_grad(self.clone());
    }
}
