//! GPT-2 (HF `GPT2LMHeadModel`): learned positions, LayerNorm, fused QKV `Conv1D`, `gelu_new`,
//! LM head tied to the token embeddings.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tilpass_core::Checkpoint;

use crate::attention::attention_merged;
use crate::config::TokenIds;
use crate::decoder_family::DecoderFamily;
use crate::embedding::tied_logits;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::norm::LayerNorm;
use crate::params::{FamilyModel, Loader, ParamSpec, ParamTable, Slot, SlotMut};

/// GPT-2 configuration (`model_type` `gpt2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Heads.
    pub n_head: usize,
    /// Context length.
    #[serde(default = "default_gpt2_pos")]
    pub n_positions: usize,
    /// MLP inner size; defaults to `4 * n_embd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_inner: Option<usize>,
    /// `gelu_new` (also accepted: `gelu_pytorch_tanh`, `gelu_fast`, `gelu`).
    #[serde(default = "default_gpt2_act")]
    pub activation_function: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_gpt2_eps")]
    pub layer_norm_epsilon: f64,
    /// Scale attention by `1 / (layer + 1)` as well (not supported).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Scale attention weights by `1/sqrt(head_dim)`.
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// BOS id (absent: 50256, `GPT2Config`'s default).
    #[serde(default = "gpt2_special")]
    pub bos_token_id: Option<u32>,
    /// EOS id(s) (absent: 50256).
    #[serde(default = "gpt2_eos")]
    pub eos_token_id: Option<TokenIds>,
    /// The LM head is the token-embedding matrix (`GPT2Config` default true; tilpass implements
    /// only the tied head).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Any other fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn gpt2_special() -> Option<u32> {
    Some(50256)
}
fn gpt2_eos() -> Option<TokenIds> {
    Some(TokenIds::One(50256))
}

fn default_gpt2_pos() -> usize {
    1024
}
fn default_gpt2_act() -> String {
    "gelu_new".into()
}
fn default_gpt2_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

use crate::mlp::Activation;
pub use crate::mlp::gelu_new;

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
        let eps = config.layer_norm_epsilon;
        let mut ld = Loader::new(ckpt, gpt2_params(&config), device).with_prefix("transformer.", p);
        let (wte, wpe) = (ld.embedding()?, ld.embedding()?);
        let mut h = Vec::with_capacity(config.n_layer);
        for _ in 0..config.n_layer {
            // Fields in table order.
            h.push(Gpt2Block {
                ln_1: ld.layer_norm(eps)?,
                c_attn: ld.linear()?,
                c_proj: ld.linear()?,
                ln_2: ld.layer_norm(eps)?,
                c_fc: ld.linear()?,
                mlp_proj: ld.linear()?,
            });
        }
        let ln_f = ld.layer_norm(eps)?;
        ld.finish()?;
        Ok(Self {
            wte,
            wpe,
            h,
            ln_f,
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
            let qkv = blk.c_attn.forward_decode(blk.ln_1.forward(x.clone()));
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
            let a = match crate::decoder_kernels::try_attention(&q, &k, &v, Some(mask), scale) {
                Some(ctx) => ctx,
                None => attention_merged(q, k, v, mask, None, scale),
            };
            x = x + blk.c_proj.forward_decode(a);
            let m = blk.mlp_proj.forward_decode(
                Activation::GeluTanh
                    .apply_mul(blk.c_fc.forward_decode(blk.ln_2.forward(x.clone())), None),
            );
            x = x + m;
        }
        self.ln_f.forward(x)
    }

    /// Logits `[batch, seq, vocab]` through the tied head.
    pub fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        tied_logits(hidden, self.wte.weight.val())
    }
}

/// The parameter table of `GPT2LMHeadModel` (HF names with the `transformer.` prefix; the LM
/// head is the tied `wte`).
pub fn gpt2_params(c: &Gpt2Config) -> Vec<ParamSpec> {
    let d = c.n_embd;
    let inner = c.n_inner.unwrap_or(4 * d);
    let mut t = vec![
        ParamSpec::embedding("transformer.wte", c.vocab_size, d),
        ParamSpec::embedding("transformer.wpe", c.n_positions, d),
    ];
    for l in 0..c.n_layer {
        let p = format!("transformer.h.{l}");
        let conv =
            |n: &str, d_in, d_out| ParamSpec::conv1d(format!("{p}.{n}"), d_in, d_out).adapter();
        t.extend([
            ParamSpec::layer_norm(format!("{p}.ln_1"), d),
            conv("attn.c_attn", d, 3 * d),
            conv("attn.c_proj", d, d),
            ParamSpec::layer_norm(format!("{p}.ln_2"), d),
            conv("mlp.c_fc", d, inner),
            conv("mlp.c_proj", inner, d),
        ]);
    }
    t.push(ParamSpec::layer_norm("transformer.ln_f", d));
    t
}

/// The fields of a [`Gpt2`] in the order of [`gpt2_params`].
macro_rules! gpt2_slots {
    ($s:expr, $S:ident $(, $m:tt)?) => {{
        let mut out = vec![$S::Embedding(& $($m)? $s.wte), $S::Embedding(& $($m)? $s.wpe)];
        for b in & $($m)? $s.h {
            out.extend([
                $S::LayerNorm(& $($m)? b.ln_1),
                $S::Linear(& $($m)? b.c_attn),
                $S::Linear(& $($m)? b.c_proj),
                $S::LayerNorm(& $($m)? b.ln_2),
                $S::Linear(& $($m)? b.c_fc),
                $S::Linear(& $($m)? b.mlp_proj),
            ]);
        }
        out.push($S::LayerNorm(& $($m)? $s.ln_f));
        out
    }};
}

impl ParamTable for Gpt2 {
    fn param_table(&self) -> Vec<ParamSpec> {
        gpt2_params(&self.config)
    }
    fn param_slots(&self) -> Vec<Slot<'_>> {
        gpt2_slots!(self, Slot)
    }
    fn param_slots_mut(&mut self) -> Vec<SlotMut<'_>> {
        gpt2_slots!(self, SlotMut, mut)
    }
}

impl FamilyModel for Gpt2 {
    fn model_type(&self) -> String {
        "gpt2".into()
    }
    fn conv1d_layers(&self) -> bool {
        true
    }
}

impl DecoderFamily for Gpt2 {
    fn hf_config(&self) -> serde_json::Result<Value> {
        let mut v = serde_json::to_value(&self.config)?;
        if let Value::Object(o) = &mut v {
            o.insert("model_type".into(), "gpt2".into());
        }
        Ok(v)
    }
    fn hidden_size(&self) -> usize {
        self.config.n_embd
    }
    fn kv_shape(&self) -> (usize, usize) {
        (self.config.n_head, self.config.n_embd / self.config.n_head)
    }
    fn num_layers(&self) -> usize {
        self.h.len()
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn max_positions(&self) -> usize {
        self.config.n_positions
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.config
            .eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }
    fn device(&self) -> Device {
        self.wte.weight.val().device()
    }
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.wte.forward(ids)
    }
    fn hidden_from(
        &self,
        embeds: Tensor<3>,
        positions: &[i64],
        mask: &Tensor<4, Bool>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        Gpt2::hidden_from(self, embeds, positions, mask, cache)
    }
    fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        Gpt2::lm_logits(self, hidden)
    }
    fn frozen_lm_head(&self) -> Option<crate::head_loss::LmHead> {
        let weight = self.wte.weight.val();
        (!weight.is_require_grad()).then_some(crate::head_loss::LmHead {
            weight,
            vocab_major: true,
        })
    }
}
