//! NorT5 (the public `modeling_nort5.py` of the ltg/nort5-* models): an LTG-BERT-style
//! encoder-decoder — shared word embedding with an un-parameterised LayerNorm, pre-LN
//! attention with separate q/k/v projections, disentangled log-bucket relative positions in
//! self- *and* cross-attention (separate relative tables for each), post-attention LayerNorm,
//! GEGLU feed-forward, and an untied LM head after a LayerNorm.

use burn::module::{Module, Param};
use burn::nn::Embedding;

use crate::linear::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tilpass_core::Checkpoint;

use crate::attention::{attention, causal_mask};
use crate::enc_dec::{EncoderOutput, Seq2SeqModel, T5Cache, check_decoder_ids};
use crate::encoder::{EncoderInput, key_padding_mask};
use crate::error::Result;
use crate::gpt2::gelu_new;
use crate::ltg_bert::{bucket_indices, check_heads_and_buckets, disentangled_bias};
use crate::norm::{LayerNorm, plain_layer_norm};
use crate::params::{FamilyModel, Loader, ParamSpec, ParamTable, Slot, SlotMut};

/// The modelling code computes relative buckets over 512 positions whatever the config says.
const BUCKET_RANGE: usize = 512;

/// `config.json` of a NorT5 model (`NorT5Config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NorT5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the model.
    pub hidden_size: usize,
    /// GEGLU width.
    pub intermediate_size: usize,
    /// Layers of the encoder and of the decoder.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Relative-position buckets on each side.
    #[serde(default = "d32")]
    pub position_bucket_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "eps7")]
    pub layer_norm_eps: f64,
    /// Padding id.
    #[serde(default = "d3")]
    pub pad_token_id: u32,
    /// `[CLS]`; replaced by `bos_token_id` in decoder inputs.
    #[serde(default = "d1")]
    pub cls_token_id: u32,
    /// `[SEP]`; replaced by `eos_token_id` in decoder inputs.
    #[serde(default = "d2")]
    pub sep_token_id: u32,
    /// First decoder token.
    #[serde(default = "d5")]
    pub bos_token_id: u32,
    /// End of sequence.
    #[serde(default = "d6")]
    pub eos_token_id: u32,
}

fn d32() -> usize {
    32
}
fn eps7() -> f64 {
    1e-7
}
fn d1() -> u32 {
    1
}
fn d2() -> u32 {
    2
}
fn d3() -> u32 {
    3
}
fn d5() -> u32 {
    5
}
fn d6() -> u32 {
    6
}

/// One attention block (self or cross).
#[derive(Module, Debug)]
pub struct NorT5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: LayerNorm,
}

/// A layer: self-attention, optional cross-attention, GEGLU feed-forward.
#[derive(Module, Debug)]
pub struct NorT5Layer {
    self_attn: NorT5Attention,
    cross: Option<NorT5Attention>,
    ff_in: Linear,
    ff_out: Linear,
}

impl NorT5Attention {
    fn load(ld: &mut Loader<'_>, eps: f64) -> Result<Self> {
        Ok(Self {
            q: ld.linear()?,
            k: ld.linear()?,
            v: ld.linear()?,
            o: ld.linear()?,
            post_norm: ld.layer_norm(eps)?,
        })
    }
}

impl NorT5Layer {
    /// The next layer of a table (see [`nort5_params`]).
    fn load(ld: &mut Loader<'_>, cross: bool, eps: f64) -> Result<Self> {
        Ok(Self {
            self_attn: NorT5Attention::load(ld, eps)?,
            cross: match cross {
                true => Some(NorT5Attention::load(ld, eps)?),
                false => None,
            },
            ff_in: ld.linear()?,
            ff_out: ld.linear()?,
        })
    }
}

/// A relative-position table and its LayerNorm.
#[derive(Module, Debug)]
pub struct RelativeTable {
    table: Param<Tensor<2>>,
    norm: LayerNorm,
}

impl RelativeTable {
    fn load(ld: &mut Loader<'_>, eps: f64) -> Result<Self> {
        Ok(Self {
            table: ld.matrix()?,
            norm: ld.layer_norm(eps)?,
        })
    }

    fn forward(&self) -> Tensor<2> {
        self.norm.forward(self.table.val())
    }
}

/// A NorT5 encoder-decoder with its LM head.
#[derive(Module, Debug)]
pub struct NorT5 {
    word: Embedding,
    enc_rel: RelativeTable,
    encoder: Vec<NorT5Layer>,
    dec_self_rel: RelativeTable,
    dec_cross_rel: RelativeTable,
    decoder: Vec<NorT5Layer>,
    head: Linear,
    #[module(skip)]
    config: NorT5Config,
}

impl NorT5 {
    /// The device of the weights.
    pub(crate) fn weights_device(&self) -> burn::tensor::Device {
        self.word.weight.device()
    }

    /// Loads a NorT5 directory (`model_type` `nort5`, or `architectures` naming a NorT5 class).
    pub fn from_dir(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        let md = tilpass_core::ModelDir::open(dir)?;
        let path = md
            .path()
            .join(tilpass_core::CONFIG_FILE)
            .display()
            .to_string();
        let cfg: NorT5Config = md.config()?;
        Self::load(cfg, &md.checkpoint()?, &path, device)
    }

    /// Loads the weights of `config` (`position_indices` buffers are not needed).
    pub fn load(
        config: NorT5Config,
        ckpt: &Checkpoint,
        path: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate().map_err(|e| e.in_file(path))?;
        let (h, nh) = (config.hidden_size, config.num_attention_heads);
        check_heads_and_buckets(path, h, nh, config.position_bucket_size)?;
        let eps = config.layer_norm_eps;
        let n = config.num_hidden_layers;
        let mut ld = Loader::new(ckpt, nort5_params(&config), device);
        // Fields in table order.
        let word = ld.embedding()?;
        let enc_rel = RelativeTable::load(&mut ld, eps)?;
        let encoder = (0..n)
            .map(|_| NorT5Layer::load(&mut ld, false, eps))
            .collect::<Result<_>>()?;
        let dec_self_rel = RelativeTable::load(&mut ld, eps)?;
        let dec_cross_rel = RelativeTable::load(&mut ld, eps)?;
        let decoder = (0..n)
            .map(|_| NorT5Layer::load(&mut ld, true, eps))
            .collect::<Result<_>>()?;
        let head = ld.linear()?;
        ld.finish()?;
        Ok(Self {
            word,
            enc_rel,
            encoder,
            dec_self_rel,
            dec_cross_rel,
            decoder,
            head,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NorT5Config {
        &self.config
    }

    /// Decoder layers.
    pub fn num_decoder_layers(&self) -> usize {
        self.decoder.len()
    }

    fn device(&self) -> Device {
        self.word.weight.device()
    }

    fn embed(&self, ids: &[u32], b: usize, s: usize) -> Tensor<3> {
        let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &self.device());
        plain_layer_norm(self.word.forward(ids), self.config.layer_norm_eps)
    }

    fn split(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, s, h] = x.dims();
        let nh = self.config.num_attention_heads;
        x.reshape([b, s, nh, h / nh]).swap_dims(1, 2)
    }

    fn rel_heads(&self, proj: &Linear, rel: &Tensor<2>) -> Tensor<4> {
        let [r, h] = rel.dims();
        let nh = self.config.num_attention_heads;
        proj.forward(rel.clone().unsqueeze::<3>())
            .reshape([r, nh, h / nh])
            .swap_dims(0, 1)
            .unsqueeze::<4>()
    }

    /// Keys and values of `kv [b, t, h]` for block `a` (LayerNorm, projections), per head.
    fn keys_values(&self, a: &NorT5Attention, kv: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let kvn = plain_layer_norm(kv, self.config.layer_norm_eps);
        (
            self.split(a.k.forward(kvn.clone())),
            self.split(a.v.forward(kvn)),
        )
    }

    /// Attention of queries `x [b, s, h]` at positions `offset..` over `k`/`v`, with the
    /// relative table `rel` and hidden-key `mask`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        a: &NorT5Attention,
        x: Tensor<3>,
        k: Tensor<4>,
        v: Tensor<4>,
        rel: &Tensor<2>,
        offset: usize,
        mask: &Tensor<4, burn::tensor::Bool>,
    ) -> Tensor<3> {
        let c = &self.config;
        let [b, s, h] = x.dims();
        let nh = c.num_attention_heads;
        let t = k.dims()[2];
        let scale = 1.0 / ((3 * (h / nh)) as f64).sqrt();
        let q = self.split(a.q.forward(plain_layer_norm(x, c.layer_norm_eps)));
        let idx = bucket_indices(
            s,
            t,
            offset,
            c.position_bucket_size,
            BUCKET_RANGE,
            &self.device(),
        );
        let bias = disentangled_bias(
            &q,
            &k,
            self.rel_heads(&a.q, rel),
            self.rel_heads(&a.k, rel),
            &idx,
            scale,
        );
        let ctx = attention(q, k, v, Some(mask), Some(&bias), scale)
            .swap_dims(1, 2)
            .reshape([b, s, h]);
        a.post_norm.forward(a.o.forward(ctx))
    }

    fn ff(&self, l: &NorT5Layer, x: Tensor<3>) -> Tensor<3> {
        let eps = self.config.layer_norm_eps;
        let [b, s, _] = x.dims();
        let i = self.config.intermediate_size;
        let f = l.ff_in.forward(plain_layer_norm(x, eps));
        let g = f.clone().slice([0..b, 0..s, 0..i]) * gelu_new(f.slice([0..b, 0..s, i..2 * i]));
        l.ff_out.forward(plain_layer_norm(g, eps))
    }

    /// Encoder hidden states `[batch, seq, hidden]` (the last layer; NorT5 has no final norm).
    pub fn encode(&self, input: &EncoderInput) -> Result<EncoderOutput> {
        self.encode_with_prompt(input, None)
    }

    /// [`Self::encode`] with the word embeddings of the first `n` encoder columns replaced by
    /// `prompt [batch, n, hidden]` before the embedding LayerNorm (PEFT's prompt tuning puts
    /// its virtual tokens where `get_input_embeddings()` — NorT5's `word_embedding` — would
    /// give the token embeddings).
    pub fn encode_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<EncoderOutput> {
        input.check_limits(self.config.vocab_size, None)?;
        let (b, s) = (input.batch, input.seq);
        let ids: Vec<i64> = input.input_ids.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &self.device());
        let words = crate::encoder::splice_prompt(self.word.forward(ids), prompt)?;
        let mut x = plain_layer_norm(words, self.config.layer_norm_eps);
        let rel = self.enc_rel.forward();
        let mask = input.key_padding_mask(&self.device());
        for l in &self.encoder {
            let (k, v) = self.keys_values(&l.self_attn, x.clone());
            x = x.clone() + self.attend(&l.self_attn, x, k, v, &rel, 0, &mask);
            x = x.clone() + self.ff(l, x);
        }
        Ok(EncoderOutput {
            hidden: x,
            attention_mask: input.attention_mask.clone(),
        })
    }

    /// Decoder logits `[batch, t, vocab]` for `decoder_ids` (`[batch, t]` row-major; `[CLS]`
    /// and `[SEP]` are read as BOS and EOS, as the reference does) after the cached positions.
    pub fn decode(
        &self,
        enc: &EncoderOutput,
        decoder_ids: &[u32],
        t: usize,
        mut cache: Option<&mut T5Cache>,
    ) -> Result<Tensor<3>> {
        let c = &self.config;
        let [b, s, _] = enc.hidden.dims();
        check_decoder_ids(decoder_ids, b, t, c.vocab_size)?;
        let ids: Vec<u32> = decoder_ids
            .iter()
            .map(|&x| {
                if x == c.cls_token_id {
                    c.bos_token_id
                } else if x == c.sep_token_id {
                    c.eos_token_id
                } else {
                    x
                }
            })
            .collect();
        // The config's bos/eos ids replace cls/sep: they must be in the vocabulary too.
        if let Some(x) = ids.iter().find(|x| **x as usize >= c.vocab_size) {
            return Err(crate::error::ModelError::Input(format!(
                "token id {x} (after mapping cls/sep to the config's bos/eos) is outside the \
                 vocabulary of {}",
                c.vocab_size
            )));
        }
        let device = self.device();
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let mut x = self.embed(&ids, b, t);
        let self_rel = self.dec_self_rel.forward();
        let cross_rel = self.dec_cross_rel.forward();
        let self_mask = causal_mask(&vec![1; b * (past + t)], b, t, past, None, &device);
        let cross_mask = key_padding_mask(&enc.attention_mask, b, t, s, &device);
        for (li, l) in self.decoder.iter().enumerate() {
            let (k, v) = self.keys_values(&l.self_attn, x.clone());
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.self_attn.append(li, k, v),
                None => (k, v),
            };
            x = x.clone() + self.attend(&l.self_attn, x, k, v, &self_rel, past, &self_mask);
            let ca = l
                .cross
                .as_ref()
                .expect("decoder layers have cross-attention");
            let cached = cache.as_ref().and_then(|c| c.cross[li].clone());
            let (ck, cv) = match cached {
                Some(kv) => kv,
                None => {
                    let kv = self.keys_values(ca, enc.hidden.clone());
                    if let Some(c) = cache.as_deref_mut() {
                        c.cross[li] = Some(kv.clone());
                    }
                    kv
                }
            };
            x = x.clone() + self.attend(ca, x, ck, cv, &cross_rel, past, &cross_mask);
            x = x.clone() + self.ff(l, x);
        }
        let x = plain_layer_norm(x, c.layer_norm_eps);
        Ok(self.head.forward(x))
    }
}

/// The parameter table of a NorT5 model (the reference's module names).
pub fn nort5_params(c: &NorT5Config) -> Vec<ParamSpec> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let r = 2 * c.position_bucket_size - 1;
    let relative = |p: &str| {
        [
            ParamSpec::tensor(format!("{p}.relative_embedding"), &[r, h]),
            ParamSpec::layer_norm(format!("{p}.relative_layer_norm"), h),
        ]
    };
    let attn = |p: String| {
        let lin = |n: &str| ParamSpec::linear(format!("{p}.{n}"), h, h, true).adapter();
        [
            lin("in_proj_q"),
            lin("in_proj_k"),
            lin("in_proj_v"),
            lin("out_proj"),
            ParamSpec::layer_norm(format!("{p}.post_layer_norm"), h),
        ]
    };
    let mut t = vec![ParamSpec::embedding(
        "embedding.word_embedding",
        c.vocab_size,
        h,
    )];
    for stack in ["encoder", "decoder"] {
        if stack == "encoder" {
            t.extend(relative("encoder.relative_embedding"));
        } else {
            t.extend(relative("decoder.self_relative_embedding"));
            t.extend(relative("decoder.cross_relative_embedding"));
        }
        for l in 0..c.num_hidden_layers {
            let p = format!("{stack}.layers.{l}");
            if stack == "encoder" {
                t.extend(attn(format!("{p}.attention")));
            } else {
                t.extend(attn(format!("{p}.self_attention")));
                t.extend(attn(format!("{p}.cross_attention")));
            }
            t.push(ParamSpec::linear(format!("{p}.mlp.mlp.1"), h, 2 * i, false).adapter());
            t.push(ParamSpec::linear(format!("{p}.mlp.mlp.4"), i, h, false).adapter());
        }
    }
    t.push(ParamSpec::linear(
        "classifier.nonlinearity.2",
        h,
        c.vocab_size,
        true,
    ));
    t
}

/// The fields of a [`NorT5`] in the order of [`nort5_params`].
macro_rules! nort5_slots {
    ($s:expr, $S:ident $(, $m:tt)?) => {{
        let mut out = vec![$S::Embedding(& $($m)? $s.word)];
        let rels = [
            vec![& $($m)? $s.enc_rel],
            vec![& $($m)? $s.dec_self_rel, & $($m)? $s.dec_cross_rel],
        ];
        for (rel, layers) in rels.into_iter().zip([& $($m)? $s.encoder, & $($m)? $s.decoder]) {
            for t in rel {
                out.push($S::Matrix(& $($m)? t.table));
                out.push($S::LayerNorm(& $($m)? t.norm));
            }
            for l in layers {
                for a in std::iter::once(& $($m)? l.self_attn).chain(& $($m)? l.cross) {
                    out.extend([$S::Linear(& $($m)? a.q), $S::Linear(& $($m)? a.k)]);
                    out.extend([$S::Linear(& $($m)? a.v), $S::Linear(& $($m)? a.o)]);
                    out.push($S::LayerNorm(& $($m)? a.post_norm));
                }
                out.push($S::Linear(& $($m)? l.ff_in));
                out.push($S::Linear(& $($m)? l.ff_out));
            }
        }
        out.push($S::Linear(& $($m)? $s.head));
        out
    }};
}

impl ParamTable for NorT5 {
    fn param_table(&self) -> Vec<ParamSpec> {
        nort5_params(&self.config)
    }
    fn param_slots(&self) -> Vec<Slot<'_>> {
        nort5_slots!(self, Slot)
    }
    fn param_slots_mut(&mut self) -> Vec<SlotMut<'_>> {
        nort5_slots!(self, SlotMut, mut)
    }
}

impl FamilyModel for NorT5 {
    fn model_type(&self) -> String {
        "nort5".into()
    }
}

impl Seq2SeqModel for NorT5 {
    fn encode(&self, input: &EncoderInput) -> Result<EncoderOutput> {
        NorT5::encode(self, input)
    }
    fn encode_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<EncoderOutput> {
        NorT5::encode_with_prompt(self, input, prompt)
    }
    fn takes_prefix_cache(&self) -> bool {
        false
    }
    fn hidden_size(&self) -> usize {
        self.config().hidden_size
    }
    fn kv_shape(&self) -> (usize, usize) {
        let c = self.config();
        (
            c.num_attention_heads,
            c.hidden_size / c.num_attention_heads.max(1),
        )
    }
    fn decode(
        &self,
        enc: &EncoderOutput,
        ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> Result<Tensor<3>> {
        NorT5::decode(self, enc, ids, t, cache)
    }
    fn num_decoder_layers(&self) -> usize {
        NorT5::num_decoder_layers(self)
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        vec![self.config().eos_token_id]
    }
    fn decoder_start_token_id(&self) -> u32 {
        self.config().bos_token_id
    }
    fn pad_token_id(&self) -> u32 {
        self.config().pad_token_id
    }
    /// As `NorT5ForConditionalGeneration.forward(labels=...)`: `[CLS]` becomes `[BOS]`, `[SEP]`
    /// becomes `[EOS]` (`set_decoder_special_tokens`), and the pad id is not a target (its
    /// `labels.masked_fill_(labels == pad_token_id, -100)`).
    fn loss_labels(&self, labels: &[i64]) -> Vec<i64> {
        let c = self.config();
        labels
            .iter()
            .map(|&l| {
                let l = if l == i64::from(c.cls_token_id) {
                    i64::from(c.bos_token_id)
                } else if l == i64::from(c.sep_token_id) {
                    i64::from(c.eos_token_id)
                } else {
                    l
                };
                if l == i64::from(c.pad_token_id) {
                    -100
                } else {
                    l
                }
            })
            .collect()
    }
}
