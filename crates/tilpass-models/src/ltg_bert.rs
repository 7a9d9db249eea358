//! LTG-BERT / NorBERT3 (`modeling_ltgbert.py` of github.com/ltgoslo/ltg-bert): pre-LN layers
//! with an extra LayerNorm after attention, disentangled attention over log-bucketed relative
//! positions (content→position and position→content terms through the shared `in_proj_qk`),
//! a GEGLU feed-forward with un-parameterised LayerNorms, and the masked-LM and
//! sequence-classification heads.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::Embedding;

use crate::linear::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tilpass_core::Checkpoint;

use crate::attention::attention;
use crate::embedding::tied_logits;
use crate::encoder::{EncoderInput, ProblemType, SequenceClassifier, labels_from};
use crate::error::{ModelError, Result};
use crate::gpt2::gelu_new;
use crate::norm::{LayerNorm, plain_layer_norm};
use crate::params::{FamilyModel, Loader, ParamSpec, ParamTable, Slot, SlotMut};

/// `config.json` of an LTG-BERT / NorBERT3 model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LtgBertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the model.
    pub hidden_size: usize,
    /// GEGLU width (the first projection is twice this).
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest input; also the range of the relative-position buckets.
    #[serde(default = "d512")]
    pub max_position_embeddings: usize,
    /// Relative-position buckets on each side.
    #[serde(default = "d32")]
    pub position_bucket_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "eps7")]
    pub layer_norm_eps: f64,
    /// Padding id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// Class names by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    /// The class that saved it (`NorbertForMaskedLM`, ...), which picks the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
}

fn d512() -> usize {
    512
}
fn d32() -> usize {
    32
}
fn eps7() -> f64 {
    1e-7
}

impl LtgBertConfig {
    /// Number of classes (length of `id2label`, 2 when absent).
    pub fn num_labels(&self) -> usize {
        self.id2label.as_ref().map(|m| m.len()).unwrap_or(2)
    }
}

/// `make_log_bucket_position` of the reference for one relative position `i - j`, computed
/// in f32 as PyTorch does.
pub fn log_bucket(relative: i64, bucket_size: usize, max_position: usize) -> i64 {
    let mid = (bucket_size / 2) as i64;
    let abs = if relative < mid && relative > -mid {
        mid - 1
    } else {
        relative.abs().min(max_position as i64 - 1)
    };
    if abs <= mid {
        return relative;
    }
    let ratio = (abs as f32 / mid as f32).ln();
    let denom = ((max_position as f64 - 1.0) / mid as f64).ln() as f32;
    let log_pos = (ratio / denom * (mid - 1) as f32).ceil() as i64 + mid;
    log_pos * relative.signum()
}

/// Bucket indices `[q_len, k_len]` (shifted into `[0, 2 * buckets - 1)`) for
/// queries at positions `offset..offset + q_len` and keys `0..k_len`.
pub fn bucket_indices(
    q_len: usize,
    k_len: usize,
    offset: usize,
    bucket_size: usize,
    max_position: usize,
    device: &Device,
) -> Tensor<2, Int> {
    let mut idx = Vec::with_capacity(q_len * k_len);
    for q in 0..q_len as i64 {
        for k in 0..k_len as i64 {
            idx.push(
                bucket_size as i64 - 1
                    + log_bucket(q + offset as i64 - k, bucket_size, max_position),
            );
        }
    }
    Tensor::<2, Int>::from_data(TensorData::new(idx, [q_len, k_len]), device)
}

/// The disentangled relative terms added to the attention scores, `[b, h, s, t]`:
/// content→position `q_i · key_pos[idx(i, j)]` plus position→content `k_j · query_pos[idx(i, j)]`,
/// both times `scale`. `q [b, h, s, d]`, `k [b, h, t, d]`, `q_pos`/`k_pos [1, h, r, d]` (the
/// projected relative embeddings), `idx [s, t]` from [`bucket_indices`].
pub fn disentangled_bias(
    q: &Tensor<4>,
    k: &Tensor<4>,
    q_pos: Tensor<4>,
    k_pos: Tensor<4>,
    idx: &Tensor<2, Int>,
    scale: f64,
) -> Tensor<4> {
    let [b, h, s, d] = q.dims();
    let t = k.dims()[2];
    let idx: Tensor<4, Int> = idx.clone().unsqueeze::<4>().expand([b, h, s, t]);
    let r = q_pos.dims()[2];
    let c2p = q.clone().matmul(k_pos.swap_dims(2, 3)).mul_scalar(scale); // [b, h, s, r]
    let c2p = c2p.gather(3, idx.clone());
    let p2c = q_pos
        .expand([b, h, r, d])
        .matmul(k.clone().swap_dims(2, 3))
        .mul_scalar(scale); // [b, h, r, t]
    c2p + p2c.gather(2, idx)
}

/// Errors unless `hidden` splits into `heads` and there are at least 4 position buckets.
pub fn check_heads_and_buckets(
    path: &str,
    hidden: usize,
    heads: usize,
    buckets: usize,
) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) || buckets < 4 {
        return Err(ModelError::UnsupportedConfig {
            path: path.into(),
            message: format!(
                "hidden_size {hidden} must be a multiple of num_attention_heads {heads}, and \
                 position_bucket_size ({buckets}) at least 4"
            ),
        });
    }
    Ok(())
}

/// One LTG-BERT layer.
#[derive(Module, Debug)]
pub struct LtgBertLayer {
    in_proj_qk: Linear,
    in_proj_v: Linear,
    out_proj: Linear,
    post_norm: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

/// The two-layer head shared by masked LM and classification:
/// `LN → Linear → GELU → LN → Linear` (LNs without parameters).
#[derive(Module, Debug)]
pub struct LtgHead {
    dense: Linear,
    out_weight: Param<Tensor<2>>,
    out_bias: Param<Tensor<1>>,
    /// Whether `out_weight` is the word-embedding matrix (the checkpoint has no copy).
    #[module(skip)]
    tied: bool,
}

/// Which head an LTG-BERT model carries, from the class named first in `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LtgHeadKind {
    /// The bare encoder.
    Base,
    /// `…ForMaskedLM`: `classifier.*`.
    MaskedLm,
    /// `…ForSequenceClassification`: `head.*`.
    SequenceClassification,
}

impl LtgHeadKind {
    /// The head of a class name.
    pub fn from_architecture(name: &str) -> Self {
        if name.ends_with("ForMaskedLM") {
            Self::MaskedLm
        } else if name.ends_with("ForSequenceClassification") {
            Self::SequenceClassification
        } else {
            Self::Base
        }
    }
}

/// The sequence-classification head `head.nonlinearity`: `LN → Linear(h, h) → GELU → LN →
/// Linear(h, labels)` (LNs without parameters); both projections are [`Linear`] layers, so
/// adapters (`modules_to_save = ["head"]`) reach them.
#[derive(Module, Debug)]
pub struct LtgClassifier {
    dense: Linear,
    out: Linear,
}

/// An LTG-BERT / NorBERT3 model with its head.
#[derive(Module, Debug)]
pub struct LtgBert {
    word: Embedding,
    relative: Param<Tensor<2>>,
    relative_norm: LayerNorm,
    layers: Vec<LtgBertLayer>,
    mlm: Option<LtgHead>,
    classifier: Option<LtgClassifier>,
    #[module(skip)]
    config: LtgBertConfig,
}

impl LtgBert {
    /// The device of the weights.
    pub(crate) fn weights_device(&self) -> burn::tensor::Device {
        self.word.weight.device()
    }

    /// Loads the weights of `config`; the head follows `architectures`
    /// (`…ForMaskedLM` → `classifier.*`, `…ForSequenceClassification` → `head.*`).
    pub fn load(
        config: LtgBertConfig,
        ckpt: &Checkpoint,
        path: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate().map_err(|e| e.in_file(path))?;
        let (h, nh) = (config.hidden_size, config.num_attention_heads);
        check_heads_and_buckets(path, h, nh, config.position_bucket_size)?;
        let eps = config.layer_norm_eps;
        let arch = config
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        let head = LtgHeadKind::from_architecture(&arch);
        let tied = !ckpt.contains("classifier.nonlinearity.5.weight");
        let mut ld = Loader::new(ckpt, ltg_bert_params(&config, head, tied), device);
        // Fields in table order.
        let word = ld.embedding()?;
        let relative = ld.matrix()?;
        let relative_norm = ld.layer_norm(eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            layers.push(LtgBertLayer {
                in_proj_qk: ld.linear()?,
                in_proj_v: ld.linear()?,
                out_proj: ld.linear()?,
                post_norm: ld.layer_norm(eps)?,
                ff_in: ld.linear()?,
                ff_out: ld.linear()?,
            });
        }
        let mlm = match head {
            LtgHeadKind::MaskedLm => Some(LtgHead {
                dense: ld.linear()?,
                out_weight: if tied {
                    Param::from_tensor(word.weight.val())
                } else {
                    ld.matrix()?
                },
                out_bias: ld.vector()?,
                tied,
            }),
            _ => None,
        };
        let classifier = match head {
            LtgHeadKind::SequenceClassification => Some(LtgClassifier {
                dense: ld.linear()?,
                out: ld.linear()?,
            }),
            _ => None,
        };
        ld.finish()?;
        labels_from(&config.id2label)?;
        Ok(Self {
            word,
            relative,
            relative_norm,
            layers,
            mlm,
            classifier,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LtgBertConfig {
        &self.config
    }

    /// Last hidden states `[batch, seq, hidden]` (the reference's `last_hidden_state`).
    pub fn forward_hidden(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        let c = &self.config;
        input.check_limits(c.vocab_size, Some(c.max_position_embeddings))?;
        let device = self.word.weight.device();
        let (b, s) = (input.batch, input.seq);
        let ids: Vec<i64> = input.input_ids.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &device);
        let eps = c.layer_norm_eps;
        let mut x = plain_layer_norm(self.word.forward(ids), eps);
        let rel = self.relative_norm.forward(self.relative.val());
        let (nh, h) = (c.num_attention_heads, c.hidden_size);
        let hd = h / nh;
        let r = rel.dims()[0];
        let idx = bucket_indices(
            s,
            s,
            0,
            c.position_bucket_size,
            c.max_position_embeddings,
            &device,
        );
        let mask = input.key_padding_mask(&device);
        let scale = 1.0 / ((3 * hd) as f64).sqrt();
        for l in &self.layers {
            let hn = plain_layer_norm(x.clone(), eps);
            let qk = l.in_proj_qk.forward(hn.clone());
            let split = |t: Tensor<3>| t.reshape([b, s, nh, hd]).swap_dims(1, 2);
            let q = split(qk.clone().slice([0..b, 0..s, 0..h]));
            let k = split(qk.slice([0..b, 0..s, h..2 * h]));
            let v = split(l.in_proj_v.forward(hn));
            // Relative projections [r, 2h] → query_pos / key_pos [1, nh, r, hd].
            let pos = l
                .in_proj_qk
                .forward(rel.clone().unsqueeze::<3>())
                .reshape([r, 2 * h]);
            let heads = |t: Tensor<2>| t.reshape([r, nh, hd]).swap_dims(0, 1).unsqueeze::<4>();
            let q_pos = heads(pos.clone().slice([0..r, 0..h]));
            let k_pos = heads(pos.slice([0..r, h..2 * h]));
            let rel_bias = disentangled_bias(&q, &k, q_pos, k_pos, &idx, scale);
            let ctx = attention(q, k, v, Some(&mask), Some(&rel_bias), scale)
                .swap_dims(1, 2)
                .reshape([b, s, h]);
            x = x + l.post_norm.forward(l.out_proj.forward(ctx));
            let ff = l.ff_in.forward(plain_layer_norm(x.clone(), eps));
            let i = c.intermediate_size;
            let gated =
                ff.clone().slice([0..b, 0..s, 0..i]) * gelu_new(ff.slice([0..b, 0..s, i..2 * i]));
            x = x + l.ff_out.forward(plain_layer_norm(gated, eps));
        }
        Ok(x)
    }

    fn run_head(&self, head: &LtgHead, x: Tensor<3>) -> Tensor<3> {
        let eps = self.config.layer_norm_eps;
        let t = plain_layer_norm(
            crate::encoder::gelu_exact(head.dense.forward(plain_layer_norm(x, eps))),
            eps,
        );
        tied_logits(t, head.out_weight.val()) + head.out_bias.val().unsqueeze::<3>()
    }

    /// Masked-LM logits `[batch, seq, vocab]`. The reference file additionally sets the logits
    /// of ids 0..=106 (NorBERT3's special tokens) to `-inf`; tilpass returns them unchanged.
    pub fn mlm_logits(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        let head = self
            .mlm
            .as_ref()
            .ok_or_else(|| self.wrong_head("masked-LM"))?;
        Ok(self.run_head(head, self.forward_hidden(input)?))
    }

    /// Sequence-classification logits `[batch, num_labels]` from the first token.
    pub fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        let head = self
            .classifier
            .as_ref()
            .ok_or_else(|| self.wrong_head("sequence-classification"))?;
        let x = self.forward_hidden(input)?;
        let [b, _, h] = x.dims();
        let first = x.slice([0..b, 0..1, 0..h]);
        let eps = self.config.layer_norm_eps;
        let t = plain_layer_norm(
            crate::encoder::gelu_exact(head.dense.forward(plain_layer_norm(first, eps))),
            eps,
        );
        let n = head.out.dims().1;
        Ok(head.out.forward(t).reshape([b, n]))
    }

    /// Turns the model into a fresh sequence classifier over `labels` (any head it had is
    /// dropped): a new `head` initialised as the reference `Classifier.initialize` does
    /// (weights truncated-normal with std `sqrt(2 / (5·hidden))` cut at ±2 std, biases 0, from
    /// `seed`).
    pub fn with_new_classifier(mut self, labels: &[String], seed: u64) -> Result<Self> {
        if labels.is_empty() {
            return Err(ModelError::Input(
                "a classifier needs at least one label".into(),
            ));
        }
        let (h, k) = (self.config.hidden_size, labels.len());
        let std = (2.0 / (5.0 * h as f64)).sqrt();
        let mut rng = tilpass_core::SplitMix64::from_state(seed ^ 0x17C0_11A5_51F1);
        let mut trunc = |n: usize| -> Vec<f32> {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                for v in rng.normal_vec(n - out.len(), std) {
                    if f64::from(v).abs() <= 2.0 * std {
                        out.push(v);
                    }
                }
            }
            out
        };
        let device = self.word.weight.device();
        let dense = Tensor::from_data(TensorData::new(trunc(h * h), [h, h]), &device);
        let out = Tensor::from_data(TensorData::new(trunc(h * k), [h, k]), &device);
        self.classifier = Some(LtgClassifier {
            dense: Linear::new(dense, Some(Tensor::zeros([h], &device))),
            out: Linear::new(out, Some(Tensor::zeros([k], &device))),
        });
        self.mlm = None;
        self.config.id2label = Some(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
        );
        self.config.architectures = Some(vec!["NorbertForSequenceClassification".into()]);
        Ok(self)
    }

    fn wrong_head(&self, wanted: &str) -> ModelError {
        ModelError::Input(format!(
            "the model has no {wanted} head (architectures: {:?})",
            self.config.architectures
        ))
    }
}

/// The parameter table of an LTG-BERT / NorBERT3 model with `head` (the masked-LM output
/// weight only when not `tied` to the word embeddings).
pub fn ltg_bert_params(c: &LtgBertConfig, head: LtgHeadKind, tied: bool) -> Vec<ParamSpec> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let r = 2 * c.position_bucket_size - 1;
    let mut t = vec![
        ParamSpec::embedding("embedding.word_embedding", c.vocab_size, h),
        ParamSpec::tensor("embedding.relative_embedding", &[r, h]),
        ParamSpec::layer_norm("embedding.relative_layer_norm", h),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("transformer.layers.{l}");
        let lin = |n: &str, d_in, d_out, bias| {
            ParamSpec::linear(format!("{p}.{n}"), d_in, d_out, bias).adapter()
        };
        t.extend([
            lin("attention.in_proj_qk", h, 2 * h, true),
            lin("attention.in_proj_v", h, h, true),
            lin("attention.out_proj", h, h, true),
            ParamSpec::layer_norm(format!("{p}.attention.post_layer_norm"), h),
            lin("mlp.mlp.1", h, 2 * i, false),
            lin("mlp.mlp.4", i, h, false),
        ]);
    }
    match head {
        LtgHeadKind::MaskedLm => {
            t.push(ParamSpec::linear("classifier.nonlinearity.1", h, h, true));
            if !tied {
                t.push(ParamSpec::tensor(
                    "classifier.nonlinearity.5.weight",
                    &[c.vocab_size, h],
                ));
            }
            t.push(ParamSpec::tensor(
                "classifier.nonlinearity.5.bias",
                &[c.vocab_size],
            ));
        }
        LtgHeadKind::SequenceClassification => {
            t.push(ParamSpec::linear("head.nonlinearity.1", h, h, true).adapter());
            t.push(ParamSpec::linear("head.nonlinearity.5", h, c.num_labels(), true).adapter());
        }
        LtgHeadKind::Base => {}
    }
    t
}

/// The fields of an [`LtgBert`] in the order of [`ltg_bert_params`].
macro_rules! ltg_slots {
    ($s:expr, $S:ident $(, $m:tt)?) => {{
        let mut out = vec![
            $S::Embedding(& $($m)? $s.word),
            $S::Matrix(& $($m)? $s.relative),
            $S::LayerNorm(& $($m)? $s.relative_norm),
        ];
        for l in & $($m)? $s.layers {
            out.extend([
                $S::Linear(& $($m)? l.in_proj_qk),
                $S::Linear(& $($m)? l.in_proj_v),
                $S::Linear(& $($m)? l.out_proj),
                $S::LayerNorm(& $($m)? l.post_norm),
                $S::Linear(& $($m)? l.ff_in),
                $S::Linear(& $($m)? l.ff_out),
            ]);
        }
        if let Some(h) = & $($m)? $s.mlm {
            out.push($S::Linear(& $($m)? h.dense));
            if !h.tied {
                out.push($S::Matrix(& $($m)? h.out_weight));
            }
            out.push($S::Vector(& $($m)? h.out_bias));
        }
        if let Some(c) = & $($m)? $s.classifier {
            out.push($S::Linear(& $($m)? c.dense));
            out.push($S::Linear(& $($m)? c.out));
        }
        out
    }};
}

impl ParamTable for LtgBert {
    fn param_table(&self) -> Vec<ParamSpec> {
        let (head, tied) = match (&self.mlm, &self.classifier) {
            (Some(h), _) => (LtgHeadKind::MaskedLm, h.tied),
            (None, Some(_)) => (LtgHeadKind::SequenceClassification, true),
            (None, None) => (LtgHeadKind::Base, true),
        };
        ltg_bert_params(&self.config, head, tied)
    }
    fn param_slots(&self) -> Vec<Slot<'_>> {
        ltg_slots!(self, Slot)
    }
    fn param_slots_mut(&mut self) -> Vec<SlotMut<'_>> {
        ltg_slots!(self, SlotMut, mut)
    }
}

impl FamilyModel for LtgBert {
    fn model_type(&self) -> String {
        "ltgbert".into()
    }
    fn tied_params(&self) -> usize {
        // The MLM output weight is the word-embedding matrix (tied), counted once.
        self.mlm
            .as_ref()
            .map(|_| self.word.weight.val().dims().iter().product())
            .unwrap_or(0)
    }
}

impl SequenceClassifier for LtgBert {
    fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        LtgBert::classify(self, input)
    }
    fn problem_type(&self) -> Result<ProblemType> {
        ProblemType::from_config(None, self.config().num_labels())
    }
    fn num_labels(&self) -> usize {
        self.config().num_labels()
    }
}
