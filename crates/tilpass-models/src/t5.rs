//! T5 (`model_type: t5`, also T5.1.1 / mT5 layouts): RMS layer norms, relative-position
//! buckets shared across layers, encoder, decoder with cross-attention and a KV cache, ReLU or
//! gated feed-forward, tied or untied LM head with or without the `d_model^-0.5` rescale, as
//! transformers' `modeling_t5.py` / `modeling_mt5.py`.
//!
//! The head and the rescale follow transformers 5.23 for configs it wrote and transformers 4 for
//! older ones (see [`T5Config::rescales_decoder_output`] and [`T5::load`]):
//! - transformers 5 always writes `tie_word_embeddings: true` for T5 and keeps the old meaning
//!   in `scale_decoder_outputs`; its LM head is `lm_head.weight` when the checkpoint holds it
//!   (a re-saved T5.1.1) and `shared.weight` otherwise; mT5 never rescales;
//! - transformers 4 rescaled and tied exactly when `tie_word_embeddings` (default true for T5,
//!   false for mT5) was set.

use burn::module::{Module, Param};
use burn::nn::Embedding;

use crate::linear::Linear;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tilpass_core::Checkpoint;

use crate::attention::attention_merged;
use crate::config::TokenIds;
use crate::embedding::tied_logits;
use crate::enc_dec::{EncoderOutput, Seq2SeqModel, T5Cache, check_decoder_ids, forward_seq2seq};
use crate::encoder::{Activation, EncoderInput, key_padding_mask};
use crate::error::{ModelError, Result};
use crate::norm::RmsNorm;
use crate::params::{FamilyModel, Loader, ParamSpec, ParamTable, Slot, SlotMut};

/// `config.json` of a T5 model (transformers' `T5Config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the model.
    pub d_model: usize,
    /// Width of one attention head.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Decoder layers (default: `num_layers`).
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative-position buckets.
    #[serde(default = "d32")]
    pub relative_attention_num_buckets: usize,
    /// Distances beyond this share the last bucket.
    #[serde(default = "d128")]
    pub relative_attention_max_distance: usize,
    /// RMS-norm epsilon.
    #[serde(default = "eps6")]
    pub layer_norm_epsilon: f64,
    /// `relu` (T5 v1.0), `gated-gelu` (T5.1.1, mT5), `gated-silu`, ...; absent: `relu` for
    /// `t5`, `gated-gelu` for `mt5` (see [`T5Config::feed_forward_proj`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_forward_proj: Option<String>,
    /// transformers 4: the LM head is the embedding matrix and the decoder output is rescaled by
    /// `d_model^-0.5` (absent: true for `t5`, false for `mt5`). transformers 5 always writes
    /// `true` here and keeps the rescale in `scale_decoder_outputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// transformers 5: rescale the decoder output by `d_model^-0.5` before the LM head (what
    /// `tie_word_embeddings` meant in transformers 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_decoder_outputs: Option<bool>,
    /// `t5` or `mt5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// The transformers version that wrote the config (`5.23.0`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers_version: Option<String>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// End of sequence.
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// First decoder token.
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
}

fn d32() -> usize {
    32
}
fn d128() -> usize {
    128
}
fn eps6() -> f64 {
    1e-6
}

impl T5Config {
    fn is_mt5(&self) -> bool {
        self.model_type.as_deref() == Some("mt5")
    }

    /// The major version of the transformers that wrote the config (`None` when unrecorded).
    pub fn transformers_major(&self) -> Option<u32> {
        self.transformers_version
            .as_deref()?
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    /// `feed_forward_proj`, defaulted as the config class does (`relu` for T5, `gated-gelu` for
    /// mT5).
    pub fn feed_forward_proj(&self) -> &str {
        match &self.feed_forward_proj {
            Some(f) => f,
            None if self.is_mt5() => "gated-gelu",
            None => "relu",
        }
    }

    /// `tie_word_embeddings`, defaulted as the config class does (true for T5, false for mT5 in
    /// transformers 4; transformers 5 forces it to true and writes it).
    pub fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(!self.is_mt5())
    }

    /// Whether `config.json` says `tie_word_embeddings: false`: the checkpoint must then hold
    /// `lm_head.weight`. (An mT5 config without the key is not taken to declare it: transformers
    /// 5 ties such a head, transformers 4 would have initialised it randomly.)
    pub fn declares_untied_head(&self) -> bool {
        self.tie_word_embeddings == Some(false)
    }

    /// Whether the decoder output is multiplied by `d_model^-0.5` before the LM head:
    /// - T5: `scale_decoder_outputs` when present (transformers 5), else `tie_word_embeddings`
    ///   (transformers 4, and transformers 5 reading a config without the key);
    /// - mT5: never for a config written by transformers 5 (`MT5ForConditionalGeneration` no
    ///   longer rescales), else `tie_word_embeddings` (transformers 4).
    pub fn rescales_decoder_output(&self) -> bool {
        if self.is_mt5() {
            return match self.transformers_major() {
                Some(v) if v >= 5 => false,
                _ => self.tie_word_embeddings(),
            };
        }
        self.scale_decoder_outputs
            .unwrap_or_else(|| self.tie_word_embeddings())
    }

    /// `(gated, activation)` from `feed_forward_proj` as transformers parses it
    /// (`gated-gelu` uses `gelu_new`).
    pub fn feed_forward(&self) -> Option<(bool, Activation)> {
        let proj = self.feed_forward_proj();
        let parts: Vec<&str> = proj.split('-').collect();
        let gated = parts.len() == 2 && parts[0] == "gated";
        if parts.len() > 2 || (parts.len() == 2 && !gated) {
            return None;
        }
        let act = if proj == "gated-gelu" {
            Activation::GeluTanh
        } else {
            Activation::parse(parts[parts.len() - 1])?
        };
        Some((gated, act))
    }
}

/// transformers' `_relative_position_bucket` for `relative = key - query`.
pub fn t5_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> i64 {
    let mut buckets = num_buckets as i64;
    let mut out = 0;
    let rel = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            out += buckets;
        }
        relative.abs()
    } else {
        -relative.min(0)
    };
    let max_exact = buckets / 2;
    if rel < max_exact {
        return out + rel;
    }
    let large = max_exact
        + ((rel as f32 / max_exact as f32).ln()
            / (max_distance as f64 / max_exact as f64).ln() as f32
            * (buckets - max_exact) as f32) as i64;
    out + large.min(buckets - 1)
}

/// Attention without biases and without score scaling (T5 folds it into the init).
#[derive(Module, Debug)]
pub struct T5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

/// The feed-forward: `wo(act(wi x))` or `wo(act(wi_0 x) * wi_1 x)`.
#[derive(Module, Debug)]
pub struct T5Ff {
    wi: Linear,
    wi_1: Option<Linear>,
    wo: Linear,
}

/// One encoder or decoder block.
#[derive(Module, Debug)]
pub struct T5Block {
    self_norm: RmsNorm,
    self_attn: T5Attention,
    cross: Option<(RmsNorm, T5Attention)>,
    ff_norm: RmsNorm,
    ff: T5Ff,
}

impl T5Attention {
    fn load(ld: &mut Loader<'_>) -> Result<Self> {
        Ok(Self {
            q: ld.linear()?,
            k: ld.linear()?,
            v: ld.linear()?,
            o: ld.linear()?,
        })
    }
}

impl T5Block {
    /// The next block of a table (see [`t5_params`]).
    fn load(ld: &mut Loader<'_>, cross: bool, gated: bool, eps: f64) -> Result<Self> {
        Ok(Self {
            self_norm: ld.rms_norm(eps)?,
            self_attn: T5Attention::load(ld)?,
            cross: match cross {
                true => Some((ld.rms_norm(eps)?, T5Attention::load(ld)?)),
                false => None,
            },
            ff_norm: ld.rms_norm(eps)?,
            ff: T5Ff {
                wi: ld.linear()?,
                wi_1: if gated { Some(ld.linear()?) } else { None },
                wo: ld.linear()?,
            },
        })
    }
}

/// A T5 encoder-decoder with its LM head.
#[derive(Module, Debug)]
pub struct T5 {
    shared: Embedding,
    encoder: Vec<T5Block>,
    encoder_bias: Embedding,
    encoder_norm: RmsNorm,
    decoder: Vec<T5Block>,
    decoder_bias: Embedding,
    decoder_norm: RmsNorm,
    lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    rescale: bool,
    #[module(skip)]
    act: Activation,
    #[module(skip)]
    config: T5Config,
}

impl T5 {
    /// The device of the weights.
    pub(crate) fn weights_device(&self) -> burn::tensor::Device {
        self.shared.weight.device()
    }

    /// Loads a T5 directory (`model_type` `t5` or `mt5`; single or sharded safetensors).
    pub fn from_dir(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        let md = tilpass_core::ModelDir::open(dir)?;
        let path = md
            .path()
            .join(tilpass_core::CONFIG_FILE)
            .display()
            .to_string();
        match md.model_type() {
            Some("t5") | Some("mt5") => {}
            other => {
                return Err(ModelError::UnsupportedModelType {
                    path,
                    model_type: other.unwrap_or("(none)").into(),
                    supported: "t5, mt5".into(),
                });
            }
        }
        let cfg: T5Config = md.config()?;
        Self::load(cfg, &md.checkpoint()?, &path, device)
    }

    /// Loads the weights of `config` (`shared`, `encoder.*`, `decoder.*`, `lm_head`).
    ///
    /// As transformers 5.23 loads them: the embedding matrix is `shared.weight`, else (a file
    /// that kept only a tied copy) `encoder.embed_tokens.weight` or `decoder.embed_tokens.weight`;
    /// the LM head `[vocab, d_model]` is `lm_head.weight` whenever the checkpoint holds it
    /// (transformers keeps it untied when it differs from `shared`; when equal, tying changes
    /// nothing) and the embedding matrix otherwise. A config that declares an untied head
    /// (`tie_word_embeddings: false`, which transformers 5 never writes) without
    /// `lm_head.weight` is [`ModelError::MissingLmHead`] (transformers 4 would have used a random
    /// head).
    pub fn load(config: T5Config, ckpt: &Checkpoint, path: &str, device: &Device) -> Result<Self> {
        config.validate().map_err(|e| e.in_file(path))?;
        let (gated, act) = config.feed_forward().ok_or_else(|| ModelError::UnsupportedConfig {
            path: path.into(),
            message: format!(
                "feed_forward_proj `{}` is not supported (relu, gelu, gated-gelu, gated-silu are)",
                config.feed_forward_proj()
            ),
        })?;
        let eps = config.layer_norm_epsilon;
        let lm_head = ckpt.contains("lm_head.weight");
        if !lm_head && config.declares_untied_head() {
            return Err(ModelError::MissingLmHead {
                path: path.into(),
                tensor: "lm_head.weight".into(),
            });
        }
        let mut ld = Loader::new(ckpt, t5_params(&config, lm_head), device);
        // Fields in table order.
        let shared = ld.embedding()?;
        let n_dec = config.num_decoder_layers.unwrap_or(config.num_layers);
        let encoder = (0..config.num_layers)
            .map(|_| T5Block::load(&mut ld, false, gated, eps))
            .collect::<Result<_>>()?;
        let (encoder_bias, encoder_norm) = (ld.embedding()?, ld.rms_norm(eps)?);
        let decoder = (0..n_dec)
            .map(|_| T5Block::load(&mut ld, true, gated, eps))
            .collect::<Result<_>>()?;
        let (decoder_bias, decoder_norm) = (ld.embedding()?, ld.rms_norm(eps)?);
        let lm_head = if lm_head { Some(ld.matrix()?) } else { None };
        ld.finish()?;
        Ok(Self {
            shared,
            encoder,
            encoder_bias,
            encoder_norm,
            decoder,
            decoder_bias,
            decoder_norm,
            lm_head,
            rescale: config.rescales_decoder_output(),
            act,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// Decoder layers.
    pub fn num_decoder_layers(&self) -> usize {
        self.decoder.len()
    }

    /// The end-of-sequence ids (default 1).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.config
            .eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_else(|| vec![1])
    }

    /// The first decoder token (`decoder_start_token_id`, else `pad_token_id`, else 0).
    pub fn decoder_start_token_id(&self) -> u32 {
        self.config
            .decoder_start_token_id
            .or(self.config.pad_token_id)
            .unwrap_or(0)
    }

    fn device(&self) -> Device {
        self.shared.weight.device()
    }

    /// Position bias `[1, heads, q_len, k_len]` for queries at `past..past + q_len`.
    fn position_bias(
        &self,
        table: &Embedding,
        q_len: usize,
        k_len: usize,
        past: usize,
        bidirectional: bool,
    ) -> Tensor<4> {
        let c = &self.config;
        let mut idx = Vec::with_capacity(q_len * k_len);
        for q in 0..q_len {
            for k in 0..k_len {
                idx.push(t5_bucket(
                    k as i64 - (past + q) as i64,
                    bidirectional,
                    c.relative_attention_num_buckets,
                    c.relative_attention_max_distance,
                ));
            }
        }
        let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [q_len, k_len]), &self.device());
        // [q, k, heads] → [1, heads, q, k]
        table.forward(idx).permute([2, 0, 1]).unsqueeze::<4>()
    }

    fn split(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, s, _] = x.dims();
        x.reshape([b, s, self.config.num_heads, self.config.d_kv])
            .swap_dims(1, 2)
    }

    fn ff(&self, f: &T5Ff, x: Tensor<3>) -> Tensor<3> {
        let up = f.wi_1.as_ref().map(|w1| w1.forward(x.clone()));
        let h = self.act.apply_mul(f.wi.forward(x), up);
        f.wo.forward(h)
    }

    /// Encoder hidden states `[batch, seq, d_model]` (after the final norm).
    pub fn encode(&self, input: &EncoderInput) -> Result<EncoderOutput> {
        self.encode_with_prompt(input, None)
    }

    /// [`Self::encode`] with the embeddings of the first `n` encoder columns replaced by
    /// `prompt [batch, n, d_model]` (prompt tuning puts virtual tokens in front of the encoder
    /// input only, as PEFT does for seq2seq models).
    pub fn encode_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<EncoderOutput> {
        input.check_limits(self.config.vocab_size, None)?;
        let device = self.device();
        let (b, s) = (input.batch, input.seq);
        let ids: Vec<i64> = input.input_ids.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &device);
        let mut x = crate::encoder::splice_prompt(self.shared.forward(ids), prompt)?;
        let mask = input.key_padding_mask(&device);
        let bias = self.position_bias(&self.encoder_bias, s, s, 0, true);
        for blk in &self.encoder {
            let h = blk.self_norm.forward_fused(x.clone());
            let a = &blk.self_attn;
            let ctx = attention_merged(
                self.split(a.q.forward(h.clone())),
                self.split(a.k.forward(h.clone())),
                self.split(a.v.forward(h)),
                &mask,
                Some(&bias),
                1.0,
            );
            x = x + a.o.forward(ctx);
            x = x.clone() + self.ff(&blk.ff, blk.ff_norm.forward_fused(x));
        }
        Ok(EncoderOutput {
            hidden: self.encoder_norm.forward_fused(x),
            attention_mask: input.attention_mask.clone(),
        })
    }

    /// Decoder logits `[batch, t, vocab]` for `decoder_ids` (`[batch, t]` row-major) after the
    /// cached positions; all decoder positions are real tokens (no decoder padding).
    pub fn decode(
        &self,
        enc: &EncoderOutput,
        decoder_ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> Result<Tensor<3>> {
        let x = self.decode_hidden(enc, decoder_ids, t, cache)?;
        Ok(tied_logits(x, self.head_weight()))
    }

    /// The LM head's weight `[vocab, d_model]`: `lm_head`, or the shared embeddings when tied.
    fn head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(w) => w.val(),
            None => self.shared.weight.val(),
        }
    }

    /// The LM head as [`crate::head_loss`] reads it, when it takes no gradient (adapter
    /// training); `None` when it is trained.
    pub fn frozen_lm_head(&self) -> Option<crate::head_loss::LmHead> {
        let weight = self.head_weight();
        (!weight.is_require_grad()).then_some(crate::head_loss::LmHead {
            weight,
            vocab_major: true,
        })
    }

    /// What [`Self::decode`] multiplies by the LM head: the decoder's final states `[batch, t,
    /// d_model]` after the last norm (and the `d_model^-0.5` rescale of tied T5 heads).
    pub fn decode_hidden(
        &self,
        enc: &EncoderOutput,
        decoder_ids: &[u32],
        t: usize,
        mut cache: Option<&mut T5Cache>,
    ) -> Result<Tensor<3>> {
        let [b, s, _] = enc.hidden.dims();
        check_decoder_ids(decoder_ids, b, t, self.config.vocab_size)?;
        let device = self.device();
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let ids: Vec<i64> = decoder_ids.iter().map(|&x| i64::from(x)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
        let mut x = self.shared.forward(ids);
        let self_mask =
            crate::attention::causal_mask(&vec![1; b * (past + t)], b, t, past, None, &device);
        let bias = self.position_bias(&self.decoder_bias, t, past + t, past, false);
        let cross_mask: Tensor<4, Bool> = key_padding_mask(&enc.attention_mask, b, t, s, &device);
        for (l, blk) in self.decoder.iter().enumerate() {
            let h = blk.self_norm.forward_fused(x.clone());
            let a = &blk.self_attn;
            let (q, k, v) = (
                self.split(a.q.forward(h.clone())),
                self.split(a.k.forward(h.clone())),
                self.split(a.v.forward(h)),
            );
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.self_attn.append(l, k, v),
                None => (k, v),
            };
            let ctx = attention_merged(q, k, v, &self_mask, Some(&bias), 1.0);
            x = x + a.o.forward(ctx);
            let (norm, ca) = blk
                .cross
                .as_ref()
                .expect("decoder blocks have cross-attention");
            let h = norm.forward_fused(x.clone());
            let cached = cache.as_ref().and_then(|c| c.cross[l].clone());
            let (ck, cv) = match cached {
                Some(kv) => kv,
                None => {
                    let kv = (
                        self.split(ca.k.forward(enc.hidden.clone())),
                        self.split(ca.v.forward(enc.hidden.clone())),
                    );
                    if let Some(c) = cache.as_deref_mut() {
                        c.cross[l] = Some(kv.clone());
                    }
                    kv
                }
            };
            let ctx = attention_merged(self.split(ca.q.forward(h)), ck, cv, &cross_mask, None, 1.0);
            x = x + ca.o.forward(ctx);
            x = x.clone() + self.ff(&blk.ff, blk.ff_norm.forward_fused(x));
        }
        let x = self.decoder_norm.forward_fused(x);
        Ok(if self.rescale {
            x.mul_scalar((self.config.d_model as f64).powf(-0.5))
        } else {
            x
        })
    }

    /// Logits `[batch, t, vocab]` of a full pass: encode `input`, decode `decoder_ids`.
    pub fn forward(&self, input: &EncoderInput, decoder_ids: &[Vec<u32>]) -> Result<Tensor<3>> {
        forward_seq2seq(self, input, decoder_ids)
    }
}

/// The parameter table of `T5ForConditionalGeneration`: `shared` (or a tied copy under
/// `encoder.` / `decoder.embed_tokens`), the encoder and decoder stacks with their relative
/// position biases and final norms, and `lm_head` when the checkpoint has one.
pub fn t5_params(c: &T5Config, lm_head: bool) -> Vec<ParamSpec> {
    let (d, inner, ff) = (c.d_model, c.num_heads * c.d_kv, c.d_ff);
    let gated = c.feed_forward().is_some_and(|(g, _)| g);
    let mut t = vec![
        ParamSpec::embedding("shared", c.vocab_size, d)
            .alias("encoder.embed_tokens")
            .alias("decoder.embed_tokens"),
    ];
    let n_dec = c.num_decoder_layers.unwrap_or(c.num_layers);
    for (stack, n) in [("encoder", c.num_layers), ("decoder", n_dec)] {
        for l in 0..n {
            let p = format!("{stack}.block.{l}.layer");
            let lin = |n: String, d_in, d_out| ParamSpec::linear(n, d_in, d_out, false).adapter();
            let attn = |n: String| {
                [
                    lin(format!("{n}.q"), d, inner),
                    lin(format!("{n}.k"), d, inner),
                    lin(format!("{n}.v"), d, inner),
                    lin(format!("{n}.o"), inner, d),
                ]
            };
            t.push(ParamSpec::rms_norm(format!("{p}.0.layer_norm"), d));
            t.extend(attn(format!("{p}.0.SelfAttention")));
            let f = if stack == "decoder" {
                t.push(ParamSpec::rms_norm(format!("{p}.1.layer_norm"), d));
                t.extend(attn(format!("{p}.1.EncDecAttention")));
                2
            } else {
                1
            };
            t.push(ParamSpec::rms_norm(format!("{p}.{f}.layer_norm"), d));
            let ff_name = |n: &str| format!("{p}.{f}.DenseReluDense.{n}");
            if gated {
                t.push(lin(ff_name("wi_0"), d, ff));
                t.push(lin(ff_name("wi_1"), d, ff));
            } else {
                t.push(lin(ff_name("wi"), d, ff));
            }
            t.push(lin(ff_name("wo"), ff, d));
        }
        t.push(ParamSpec::embedding(
            format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias"),
            c.relative_attention_num_buckets,
            c.num_heads,
        ));
        t.push(ParamSpec::rms_norm(format!("{stack}.final_layer_norm"), d));
    }
    if lm_head {
        t.push(ParamSpec::tensor("lm_head.weight", &[c.vocab_size, d]));
    }
    t
}

/// The fields of a [`T5`] in the order of [`t5_params`].
macro_rules! t5_slots {
    ($s:expr, $S:ident $(, $m:tt)?) => {{
        let mut out = vec![$S::Embedding(& $($m)? $s.shared)];
        for (blocks, bias, norm) in [
            (& $($m)? $s.encoder, & $($m)? $s.encoder_bias, & $($m)? $s.encoder_norm),
            (& $($m)? $s.decoder, & $($m)? $s.decoder_bias, & $($m)? $s.decoder_norm),
        ] {
            for blk in blocks {
                let a = & $($m)? blk.self_attn;
                out.push($S::RmsNorm(& $($m)? blk.self_norm));
                out.extend([$S::Linear(& $($m)? a.q), $S::Linear(& $($m)? a.k)]);
                out.extend([$S::Linear(& $($m)? a.v), $S::Linear(& $($m)? a.o)]);
                if let Some((n, a)) = & $($m)? blk.cross {
                    out.push($S::RmsNorm(n));
                    out.extend([$S::Linear(& $($m)? a.q), $S::Linear(& $($m)? a.k)]);
                    out.extend([$S::Linear(& $($m)? a.v), $S::Linear(& $($m)? a.o)]);
                }
                out.push($S::RmsNorm(& $($m)? blk.ff_norm));
                let ff = & $($m)? blk.ff;
                out.push($S::Linear(& $($m)? ff.wi));
                out.extend((& $($m)? ff.wi_1).into_iter().map($S::Linear));
                out.push($S::Linear(& $($m)? ff.wo));
            }
            out.push($S::Embedding(bias));
            out.push($S::RmsNorm(norm));
        }
        out.extend((& $($m)? $s.lm_head).into_iter().map($S::Matrix));
        out
    }};
}

impl ParamTable for T5 {
    fn param_table(&self) -> Vec<ParamSpec> {
        t5_params(&self.config, self.lm_head.is_some())
    }
    fn param_slots(&self) -> Vec<Slot<'_>> {
        t5_slots!(self, Slot)
    }
    fn param_slots_mut(&mut self) -> Vec<SlotMut<'_>> {
        t5_slots!(self, SlotMut, mut)
    }
}

impl FamilyModel for T5 {
    fn model_type(&self) -> String {
        "t5".into()
    }
}

impl Seq2SeqModel for T5 {
    fn encode(&self, input: &EncoderInput) -> Result<EncoderOutput> {
        T5::encode(self, input)
    }
    fn encode_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<EncoderOutput> {
        T5::encode_with_prompt(self, input, prompt)
    }
    fn hidden_size(&self) -> usize {
        self.config().d_model
    }
    fn kv_shape(&self) -> (usize, usize) {
        (self.config().num_heads, self.config().d_kv)
    }
    fn decode(
        &self,
        enc: &EncoderOutput,
        ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> Result<Tensor<3>> {
        T5::decode(self, enc, ids, t, cache)
    }
    fn decode_to_head(
        &self,
        enc: &EncoderOutput,
        ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> Result<Option<(Tensor<3>, crate::head_loss::LmHead)>> {
        let Some(head) = self.frozen_lm_head() else {
            return Ok(None);
        };
        Ok(Some((self.decode_hidden(enc, ids, t, cache)?, head)))
    }
    fn num_decoder_layers(&self) -> usize {
        T5::num_decoder_layers(self)
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        T5::eos_token_ids(self)
    }
    fn decoder_start_token_id(&self) -> u32 {
        T5::decoder_start_token_id(self)
    }
    fn pad_token_id(&self) -> u32 {
        self.config().pad_token_id.unwrap_or(0)
    }
}
