//! Llama and Mistral decoders (HF `LlamaForCausalLM`, `MistralForCausalLM`).

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use tilpass_core::Checkpoint;

use crate::attention::attention_merged;
use crate::config::{RopeParameters, TokenIds, class_defaults};
use crate::decoder_family::DecoderFamily;
use crate::embedding::tied_logits;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::norm::RmsNorm;
use crate::params::{FamilyModel, Loader, ParamSpec, ParamTable, Slot, SlotMut};
use crate::rope::{Rope, apply_rope};

/// Llama / Mistral configuration (`model_type` `llama` or `mistral`).
///
/// Deserialising fills absent keys with the class defaults of `model_type` and normalises the
/// RoPE dictionaries (see [`crate::config`]); serialising writes every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct LlamaConfig {
    /// `llama` or `mistral`.
    #[serde(default)]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `None`: `num_attention_heads` (an absent key
    /// is 8 for Mistral, as `MistralConfig`).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head size; defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Context length (absent: 2048 for Llama, 131072 for Mistral).
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (transformers 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (transformers 4; wins over `rope_parameters` when both are present, as in
    /// transformers 5's conversion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParameters>,
    /// RoPE parameters (transformers 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// Biases on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases in the MLP.
    #[serde(default)]
    pub mlp_bias: bool,
    /// The LM head reuses the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Mistral's sliding-window attention size (absent: 4096 for Mistral; Llama ignores it,
    /// see [`LlamaConfig::sliding_window`]).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Activation of the MLP (only `silu` is supported).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// BOS id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// EOS id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Padding id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// Any other fields, kept for saving.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn default_max_pos() -> usize {
    2048
}

impl<'de> Deserialize<'de> for LlamaConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut m = Map::deserialize(d)?;
        let common = [
            ("bos_token_id", Value::from(1)),
            ("eos_token_id", Value::from(2)),
        ];
        class_defaults(&mut m, &common);
        if m.get("model_type").and_then(Value::as_str) == Some("mistral") {
            let mistral = [
                ("num_key_value_heads", Value::from(8)),
                ("max_position_embeddings", Value::from(4096 * 32)),
                ("sliding_window", Value::from(4096)),
            ];
            class_defaults(&mut m, &mistral);
        }
        LlamaConfig::deserialize(Value::Object(m)).map_err(D::Error::custom)
    }
}

impl Serialize for LlamaConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        LlamaConfig::serialize(self, s)
    }
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// The sliding-window size attention uses: Mistral's `sliding_window`; `None` for Llama,
    /// whose attention has none whatever the config says (as transformers' `LlamaAttention`).
    pub fn sliding_window(&self) -> Option<usize> {
        if self.model_type == "mistral" {
            self.sliding_window
        } else {
            None
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The effective RoPE parameters as transformers 5 standardises them: `rope_scaling`
    /// (transformers 4) when present, else `rope_parameters`, else the default type; the base
    /// from the dictionary, else the top-level `rope_theta`, else 10000; for `llama3`, a missing
    /// `original_max_position_embeddings` is `max_position_embeddings`.
    pub fn rope(&self) -> RopeParameters {
        let mut p = self
            .rope_scaling
            .clone()
            .or_else(|| self.rope_parameters.clone())
            .unwrap_or(RopeParameters {
                rope_type: "default".into(),
                rope_theta: None,
                factor: 1.0,
                low_freq_factor: None,
                high_freq_factor: None,
                original_max_position_embeddings: None,
            });
        if p.rope_theta.is_none() {
            p.rope_theta = Some(self.rope_theta.unwrap_or(10_000.0));
        }
        if p.rope_type == "llama3" && p.original_max_position_embeddings.is_none() {
            p.original_max_position_embeddings = Some(self.max_position_embeddings);
        }
        p
    }
}

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
            .forward_decode(x.clone())
            .reshape([b, s, h, d])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward_decode(x.clone())
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward_decode(x)
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        let q = apply_rope(q, cos, sin);
        let k = apply_rope(k, cos, sin);
        let (k, v) = match cache {
            Some((c, layer)) => c.append(layer, k, v),
            None => (k, v),
        };
        let scale = 1.0 / (d as f64).sqrt();
        if let Some(ctx) = crate::decoder_kernels::try_attention(&q, &k, &v, Some(mask), scale) {
            return self.o_proj.forward_decode(ctx);
        }
        self.o_proj
            .forward_decode(attention_merged(q, k, v, mask, None, scale))
    }
}

/// `silu(gate) · up`: one host pass at inference on Flex ([`crate::decoder_kernels::silu_mul`]),
/// [`crate::mlp::Activation::apply_mul`] otherwise.
fn swiglu(gate: Tensor<3>, up: Tensor<3>) -> Tensor<3> {
    if crate::decoder_kernels::applies(&gate) {
        return crate::decoder_kernels::silu_mul(gate, up);
    }
    crate::mlp::Activation::Silu.apply_mul(gate, Some(up))
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
                layer.input_layernorm.forward_fused(x.clone()),
                &cos,
                &sin,
                mask,
                c,
            );
            x = x + a;
            let hdn = layer.post_attention_layernorm.forward_fused(x.clone());
            let m = &layer.mlp;
            let gate = m.gate_proj.forward_decode(hdn.clone());
            let up = m.up_proj.forward_decode(hdn);
            let y = m.down_proj.forward_decode(swiglu(gate, up));
            x = x + y;
        }
        self.norm.forward_fused(x)
    }

    /// Logits `[batch, seq, vocab]` from final hidden states.
    pub fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward_decode(hidden),
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

impl FamilyModel for Llama {
    fn model_type(&self) -> String {
        self.config.model_type.clone()
    }
}

impl DecoderFamily for Llama {
    fn hf_config(&self) -> serde_json::Result<Value> {
        serde_json::to_value(&self.config)
    }
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn kv_shape(&self) -> (usize, usize) {
        (self.config.kv_heads(), self.config.head_dim())
    }
    fn num_layers(&self) -> usize {
        self.layers.len()
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.config
            .eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }
    fn sliding_window(&self) -> Option<usize> {
        self.config.sliding_window()
    }
    fn device(&self) -> Device {
        self.embed_tokens.weight.val().device()
    }
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(ids)
    }
    fn hidden_from(
        &self,
        embeds: Tensor<3>,
        positions: &[i64],
        mask: &Tensor<4, Bool>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        Llama::hidden_from(self, embeds, positions, mask, cache)
    }
    fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        Llama::lm_logits(self, hidden)
    }
    fn frozen_lm_head(&self) -> Option<crate::head_loss::LmHead> {
        match &self.lm_head {
            Some(head) => head
                .frozen_plain_weight()
                .map(|weight| crate::head_loss::LmHead {
                    weight,
                    vocab_major: false,
                }),
            None => {
                let weight = self.embed_tokens.weight.val();
                (!weight.is_require_grad()).then_some(crate::head_loss::LmHead {
                    weight,
                    vocab_major: true,
                })
            }
        }
    }
}
