//! Llama and Mistral decoders (HF `LlamaForCausalLM`, `MistralForCausalLM`).

use burn::module::Module;
use burn::nn::Embedding;

use crate::layers::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Bool, Device, Tensor};
use tilpass_core::Checkpoint;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::layers::{
    KvCache, RmsNorm, Rope, apply_rope, attention, load_embedding, load_linear, tied_logits,
};

/// Self-attention with grouped-query heads and rotary embeddings.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection `[hidden, heads * head_dim]`.
    pub q_proj: Linear,
    /// Key projection `[hidden, kv_heads * head_dim]`.
    pub k_proj: Linear,
    /// Value projection `[hidden, kv_heads * head_dim]`.
    pub v_proj: Linear,
    /// Output projection `[heads * head_dim, hidden]`.
    pub o_proj: Linear,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
}

impl LlamaAttention {
    fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: &Tensor<4, Bool>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kv, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, s, h, d])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let q = apply_rope(q, cos, sin);
        let k = apply_rope(k, cos, sin);
        let (k, v) = match cache {
            Some((c, layer)) => c.append(layer, k, v),
            None => (k, v),
        };
        let out = attention(q, k, v, Some(mask), None, 1.0 / (d as f64).sqrt());
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, h * d]))
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
}

/// One decoder layer (pre-norm attention and MLP with residuals).
#[derive(Module, Debug)]
pub struct LlamaLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: LlamaAttention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// MLP.
    pub mlp: LlamaMlp,
}

/// A Llama / Mistral causal language model.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embeddings `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<LlamaLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// LM head `[hidden, vocab]`; `None` when tied to the embeddings.
    pub lm_head: Option<Linear>,
    /// The configuration.
    #[module(skip)]
    pub config: LlamaConfig,
    /// Rotary embeddings.
    #[module(skip)]
    pub rope: Rope,
}

/// Inverse RoPE frequencies with the config's scaling, in f32 as transformers computes them.
pub fn llama_rope(config: &LlamaConfig, path: &str) -> Result<Rope> {
    let p = config.rope();
    let dim = config.head_dim();
    let base = p.rope_theta.unwrap_or(10_000.0) as f32;
    let mut inv: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32))
        .collect();
    match p.rope_type.as_str() {
        "default" => {}
        "linear" => inv.iter_mut().for_each(|f| *f /= p.factor as f32),
        "llama3" => {
            let factor = p.factor as f32;
            let low = p.low_freq_factor.unwrap_or(1.0) as f32;
            let high = p.high_freq_factor.unwrap_or(4.0) as f32;
            let old = p
                .original_max_position_embeddings
                .unwrap_or(config.max_position_embeddings) as f32;
            let low_wavelen = old / low;
            let high_wavelen = old / high;
            for f in &mut inv {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                let scaled = if wavelen > low_wavelen {
                    *f / factor
                } else {
                    *f
                };
                let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                *f = if medium {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                };
            }
        }
        other => {
            return Err(ModelError::UnsupportedConfig {
                path: path.into(),
                message: format!(
                    "rope type `{other}` is not supported (default, linear, llama3 are)"
                ),
            });
        }
    }
    Ok(Rope {
        inv_freq: inv,
        attention_scaling: 1.0,
    })
}

impl Llama {
    /// Loads the weights of `config` from `ckpt` (keys with or without the `model.` prefix).
    pub fn load(
        config: LlamaConfig,
        ckpt: &Checkpoint,
        path: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate().map_err(|e| e.in_file(path))?;
        if config.hidden_act != "silu" {
            return Err(ModelError::UnsupportedConfig {
                path: path.into(),
                message: format!(
                    "hidden_act `{}` is not supported (silu is)",
                    config.hidden_act
                ),
            });
        }
        let (hd, h, kv) = (
            config.head_dim(),
            config.num_attention_heads,
            config.kv_heads(),
        );
        if h % kv != 0 {
            return Err(ModelError::UnsupportedConfig {
                path: path.into(),
                message: format!(
                    "num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
                ),
            });
        }
        let hidden = config.hidden_size;
        let p = if ckpt.contains("model.embed_tokens.weight") {
            "model."
        } else {
            ""
        };
        let rope = llama_rope(&config, path)?;
        let eps = config.rms_norm_eps;
        let (ab, mb) = (config.attention_bias, config.mlp_bias);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = format!("{p}layers.{i}");
            layers.push(LlamaLayer {
                input_layernorm: RmsNorm::load(
                    ckpt,
                    &format!("{l}.input_layernorm"),
                    hidden,
                    eps,
                    device,
                )?,
                self_attn: LlamaAttention {
                    q_proj: load_linear(
                        ckpt,
                        &format!("{l}.self_attn.q_proj"),
                        hidden,
                        h * hd,
                        ab,
                        device,
                    )?,
                    k_proj: load_linear(
                        ckpt,
                        &format!("{l}.self_attn.k_proj"),
                        hidden,
                        kv * hd,
                        ab,
                        device,
                    )?,
                    v_proj: load_linear(
                        ckpt,
                        &format!("{l}.self_attn.v_proj"),
                        hidden,
                        kv * hd,
                        ab,
                        device,
                    )?,
                    o_proj: load_linear(
                        ckpt,
                        &format!("{l}.self_attn.o_proj"),
                        h * hd,
                        hidden,
                        ab,
                        device,
                    )?,
                    n_heads: h,
                    n_kv_heads: kv,
                    head_dim: hd,
                },
                post_attention_layernorm: RmsNorm::load(
                    ckpt,
                    &format!("{l}.post_attention_layernorm"),
                    hidden,
                    eps,
                    device,
                )?,
                mlp: LlamaMlp {
                    gate_proj: load_linear(
                        ckpt,
                        &format!("{l}.mlp.gate_proj"),
                        hidden,
                        config.intermediate_size,
                        mb,
                        device,
                    )?,
                    up_proj: load_linear(
                        ckpt,
                        &format!("{l}.mlp.up_proj"),
                        hidden,
                        config.intermediate_size,
                        mb,
                        device,
                    )?,
                    down_proj: load_linear(
                        ckpt,
                        &format!("{l}.mlp.down_proj"),
                        config.intermediate_size,
                        hidden,
                        mb,
                        device,
                    )?,
                },
            });
        }
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(load_linear(
                ckpt,
                "lm_head",
                hidden,
                config.vocab_size,
                false,
                device,
            )?)
        };
        Ok(Self {
            embed_tokens: load_embedding(
                ckpt,
                &format!("{p}embed_tokens.weight"),
                config.vocab_size,
                hidden,
                device,
            )?,
            layers,
            norm: RmsNorm::load(ckpt, &format!("{p}norm"), hidden, eps, device)?,
            lm_head,
            config,
            rope,
        })
    }

    /// Hidden states after the final norm, `[batch, seq, hidden]`.
    pub fn hidden(
        &self,
        input_ids: burn::tensor::Tensor<2, burn::tensor::Int>,
        positions: &[i64],
        mask: &Tensor<4, Bool>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let x = self.embed_tokens.forward(input_ids);
        self.hidden_from(x, positions, mask, cache)
    }

    /// Final hidden states from input embeddings `[batch, seq, hidden]` (prompt tuning
    /// prepends learned vectors to them).
    pub fn hidden_from(
        &self,
        embeds: Tensor<3>,
        positions: &[i64],
        mask: &Tensor<4, Bool>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, s, _] = embeds.dims();
        let device = embeds.device();
        let (cos, sin) = self.rope.cos_sin(positions, b, s, &device);
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            let a = layer.self_attn.forward(
                layer.input_layernorm.forward(x.clone()),
                &cos,
                &sin,
                mask,
                c,
            );
            x = x + a;
            let hdn = layer.post_attention_layernorm.forward(x.clone());
            let m = &layer.mlp;
            let y = m
                .down_proj
                .forward(silu(m.gate_proj.forward(hdn.clone())) * m.up_proj.forward(hdn));
            x = x + y;
        }
        self.norm.forward(x)
    }

    /// Logits `[batch, seq, vocab]` from final hidden states.
    pub fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => tied_logits(hidden, self.embed_tokens.weight.val()),
        }
    }
}

macro_rules! llama_linears {
    ($s:expr $(, $m:tt)?) => {{
        let mut out = Vec::new();
        for (i, l) in (& $($m)? $s.layers).into_iter().enumerate() {
            // LlamaForCausalLM's module paths (whatever the checkpoint's key prefix).
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.self_attn.q_proj"), & $($m)? l.self_attn.q_proj));
            out.push((format!("{p}.self_attn.k_proj"), & $($m)? l.self_attn.k_proj));
            out.push((format!("{p}.self_attn.v_proj"), & $($m)? l.self_attn.v_proj));
            out.push((format!("{p}.self_attn.o_proj"), & $($m)? l.self_attn.o_proj));
            out.push((format!("{p}.mlp.gate_proj"), & $($m)? l.mlp.gate_proj));
            out.push((format!("{p}.mlp.up_proj"), & $($m)? l.mlp.up_proj));
            out.push((format!("{p}.mlp.down_proj"), & $($m)? l.mlp.down_proj));
        }
        out
    }};
}

impl crate::layers::HasLinears for Llama {
    fn linears(&self) -> Vec<(String, &Linear)> {
        llama_linears!(self)
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        llama_linears!(self, mut)
    }
    fn model_type(&self) -> String {
        self.config.model_type.clone()
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
