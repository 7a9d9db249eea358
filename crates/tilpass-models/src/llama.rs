//! Llama and Mistral decoders (HF `LlamaForCausalLM`, `MistralForCausalLM`).

use burn::module::Module;
use burn::nn::Embedding;

use crate::layers::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Bool, Device, Tensor};
use tilpass_core::Checkpoint;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::layers::{KvCache, RmsNorm, Rope, apply_rope, attention, tied_logits};
use crate::params::{
    Loader, ParamSpec, ParamTable, Slot, SlotMut, named_linears, named_linears_mut,
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
        let p = if ckpt.contains("model.embed_tokens.weight") {
            "model."
        } else {
            ""
        };
        let rope = llama_rope(&config, path)?;
        let eps = config.rms_norm_eps;
        let mut ld = Loader::new(ckpt, llama_params(&config), device).with_prefix("model.", p);
        let embed_tokens = ld.embedding()?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            // Fields in table order.
            layers.push(LlamaLayer {
                input_layernorm: ld.rms_norm(eps)?,
                self_attn: LlamaAttention {
                    q_proj: ld.linear()?,
                    k_proj: ld.linear()?,
                    v_proj: ld.linear()?,
                    o_proj: ld.linear()?,
                    n_heads: h,
                    n_kv_heads: kv,
                    head_dim: hd,
                },
                post_attention_layernorm: ld.rms_norm(eps)?,
                mlp: LlamaMlp {
                    gate_proj: ld.linear()?,
                    up_proj: ld.linear()?,
                    down_proj: ld.linear()?,
                },
            });
        }
        let norm = ld.rms_norm(eps)?;
        let lm_head = match config.tie_word_embeddings {
            true => None,
            false => Some(ld.linear()?),
        };
        ld.finish()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
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

/// The parameter table of `LlamaForCausalLM` / `MistralForCausalLM` (HF names with the
/// `model.` prefix; `lm_head` unless the embeddings are tied).
pub fn llama_params(c: &LlamaConfig) -> Vec<ParamSpec> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim(),
        c.kv_heads() * c.head_dim(),
    );
    let (ab, mb) = (c.attention_bias, c.mlp_bias);
    let mut t = vec![ParamSpec::embedding("model.embed_tokens", c.vocab_size, h)];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let lin = |n: &str, d_in, d_out, bias| {
            ParamSpec::linear(format!("{p}.{n}"), d_in, d_out, bias).adapter()
        };
        t.extend([
            ParamSpec::rms_norm(format!("{p}.input_layernorm"), h),
            lin("self_attn.q_proj", h, q, ab),
            lin("self_attn.k_proj", h, kv, ab),
            lin("self_attn.v_proj", h, kv, ab),
            lin("self_attn.o_proj", q, h, ab),
            ParamSpec::rms_norm(format!("{p}.post_attention_layernorm"), h),
            lin("mlp.gate_proj", h, i, mb),
            lin("mlp.up_proj", h, i, mb),
            lin("mlp.down_proj", i, h, mb),
        ]);
    }
    t.push(ParamSpec::rms_norm("model.norm", h));
    if !c.tie_word_embeddings {
        t.push(ParamSpec::linear("lm_head", h, c.vocab_size, false));
    }
    t
}

/// The fields of a [`Llama`] in the order of [`llama_params`].
macro_rules! llama_slots {
    ($s:expr, $S:ident $(, $m:tt)?) => {{
        let mut out = vec![$S::Embedding(& $($m)? $s.embed_tokens)];
        for l in & $($m)? $s.layers {
            let (a, m) = (& $($m)? l.self_attn, & $($m)? l.mlp);
            out.extend([
                $S::RmsNorm(& $($m)? l.input_layernorm),
                $S::Linear(& $($m)? a.q_proj),
                $S::Linear(& $($m)? a.k_proj),
                $S::Linear(& $($m)? a.v_proj),
                $S::Linear(& $($m)? a.o_proj),
                $S::RmsNorm(& $($m)? l.post_attention_layernorm),
                $S::Linear(& $($m)? m.gate_proj),
                $S::Linear(& $($m)? m.up_proj),
                $S::Linear(& $($m)? m.down_proj),
            ]);
        }
        out.push($S::RmsNorm(& $($m)? $s.norm));
        out.extend((& $($m)? $s.lm_head).into_iter().map($S::Linear));
        out
    }};
}

impl ParamTable for Llama {
    fn param_table(&self) -> Vec<ParamSpec> {
        llama_params(&self.config)
    }
    fn param_slots(&self) -> Vec<Slot<'_>> {
        llama_slots!(self, Slot)
    }
    fn param_slots_mut(&mut self) -> Vec<SlotMut<'_>> {
        llama_slots!(self, SlotMut, mut)
    }
}

impl crate::layers::HasLinears for Llama {
    fn linears(&self) -> Vec<(String, &Linear)> {
        named_linears(self)
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        named_linears_mut(self)
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
