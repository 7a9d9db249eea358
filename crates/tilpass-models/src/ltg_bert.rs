//! LTG-BERT / NorBERT3 (`modeling_ltgbert.py` of github.com/ltgoslo/ltg-bert): pre-LN layers
//! with an extra LayerNorm after attention, disentangled attention over log-bucketed relative
//! positions (content→position and position→content terms through the shared `in_proj_qk`),
//! a GEGLU feed-forward with un-parameterised LayerNorms, and the masked-LM and
//! sequence-classification heads.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::Embedding;

use crate::layers::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tilpass_core::Checkpoint;

use crate::encoder::{EncoderInput, labels_from};
use crate::error::{ModelError, Result};
use crate::gpt2::gelu_new;
use crate::layers::{
    LayerNorm, attention, load_embedding, load_linear, plain_layer_norm, tied_logits,
};

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
    /// Loads the weights of `config`; the head follows `architectures`
    /// (`…ForMaskedLM` → `classifier.*`, `…ForSequenceClassification` → `head.*`).
    pub fn load(
        config: LtgBertConfig,
        ckpt: &Checkpoint,
        path: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate().map_err(|e| e.in_file(path))?;
        let (h, i, nh) = (
            config.hidden_size,
            config.intermediate_size,
            config.num_attention_heads,
        );
        check_heads_and_buckets(path, h, nh, config.position_bucket_size)?;
        let eps = config.layer_norm_eps;
        let word = load_embedding(
            ckpt,
            "embedding.word_embedding.weight",
            config.vocab_size,
            h,
            device,
        )?;
        let r = 2 * config.position_bucket_size - 1;
        let relative =
            Param::from_tensor(ckpt.tensor("embedding.relative_embedding", [r, h], device)?);
        let relative_norm = LayerNorm::load(ckpt, "embedding.relative_layer_norm", h, eps, device)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("transformer.layers.{l}");
            layers.push(LtgBertLayer {
                in_proj_qk: load_linear(
                    ckpt,
                    &format!("{p}.attention.in_proj_qk"),
                    h,
                    2 * h,
                    true,
                    device,
                )?,
                in_proj_v: load_linear(
                    ckpt,
                    &format!("{p}.attention.in_proj_v"),
                    h,
                    h,
                    true,
                    device,
                )?,
                out_proj: load_linear(
                    ckpt,
                    &format!("{p}.attention.out_proj"),
                    h,
                    h,
                    true,
                    device,
                )?,
                post_norm: LayerNorm::load(
                    ckpt,
                    &format!("{p}.attention.post_layer_norm"),
                    h,
                    eps,
                    device,
                )?,
                ff_in: load_linear(ckpt, &format!("{p}.mlp.mlp.1"), h, 2 * i, false, device)?,
                ff_out: load_linear(ckpt, &format!("{p}.mlp.mlp.4"), i, h, false, device)?,
            });
        }
        let arch = config
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        let head = |prefix: &str, out: usize, tied: Option<&Embedding>| -> Result<LtgHead> {
            let w_name = format!("{prefix}.nonlinearity.5.weight");
            let out_weight = match tied {
                Some(e) if !ckpt.contains(&w_name) => e.weight.val(),
                _ => ckpt.tensor(&w_name, [out, h], device)?,
            };
            Ok(LtgHead {
                dense: load_linear(
                    ckpt,
                    &format!("{prefix}.nonlinearity.1"),
                    h,
                    h,
                    true,
                    device,
                )?,
                out_weight: Param::from_tensor(out_weight),
                out_bias: Param::from_tensor(ckpt.tensor(
                    &format!("{prefix}.nonlinearity.5.bias"),
                    [out],
                    device,
                )?),
            })
        };
        let mlm = if arch.ends_with("ForMaskedLM") {
            Some(head("classifier", config.vocab_size, Some(&word))?)
        } else {
            None
        };
        let classifier = if arch.ends_with("ForSequenceClassification") {
            let n = config.num_labels();
            Some(LtgClassifier {
                dense: load_linear(ckpt, "head.nonlinearity.1", h, h, true, device)?,
                out: load_linear(ckpt, "head.nonlinearity.5", h, n, true, device)?,
            })
        } else {
            None
        };
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

macro_rules! ltg_linears {
    ($s:expr $(, $m:tt)?) => {{
        let mut out = Vec::new();
        for (i, l) in (& $($m)? $s.layers).into_iter().enumerate() {
            let p = format!("transformer.layers.{i}");
            out.push((format!("{p}.attention.in_proj_qk"), & $($m)? l.in_proj_qk));
            out.push((format!("{p}.attention.in_proj_v"), & $($m)? l.in_proj_v));
            out.push((format!("{p}.attention.out_proj"), & $($m)? l.out_proj));
            out.push((format!("{p}.mlp.mlp.1"), & $($m)? l.ff_in));
            out.push((format!("{p}.mlp.mlp.4"), & $($m)? l.ff_out));
        }
        if let Some(c) = & $($m)? $s.classifier {
            out.push(("head.nonlinearity.1".to_string(), & $($m)? c.dense));
            out.push(("head.nonlinearity.5".to_string(), & $($m)? c.out));
        }
        out
    }};
}

impl crate::layers::HasLinears for LtgBert {
    fn linears(&self) -> Vec<(String, &Linear)> {
        ltg_linears!(self)
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        ltg_linears!(self, mut)
    }
    fn model_type(&self) -> String {
        "ltgbert".into()
    }
    fn parameter_count(&self) -> usize {
        // The MLM output weight is the word-embedding matrix (tied), counted once.
        let tied = self
            .mlm
            .as_ref()
            .map(|_| self.word.weight.val().dims().iter().product())
            .unwrap_or(0);
        burn::module::Module::num_params(self) - tied
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
