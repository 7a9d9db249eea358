//! BERT (`model_type: bert`): embeddings (word + position + token type), post-LN encoder,
//! pooler, and the masked-LM, sequence-classification and token-classification heads, as
//! transformers' `modeling_bert.py` computes them (eager attention, inference).

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::Embedding;

use crate::linear::Linear;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tilpass_core::Checkpoint;

use crate::attention::attention_merged;
use crate::encoder::{Activation, EncoderInput, ProblemType, SequenceClassifier, labels_from};
use crate::error::{ModelError, Result};
use crate::norm::LayerNorm;
use crate::params::{FamilyModel, Loader, ParamSpec, ParamTable, Slot, SlotMut};

/// `config.json` of a BERT model (transformers' `BertConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the model.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Feed-forward activation (`gelu` by default).
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Learned positions.
    #[serde(default = "d512")]
    pub max_position_embeddings: usize,
    /// Segment types.
    #[serde(default = "d2")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "eps12")]
    pub layer_norm_eps: f64,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Only `absolute` is supported (transformers 4 wrote this key; transformers 5 dropped it
    /// and has only absolute positions).
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
    /// The masked-LM decoder is the word-embedding matrix (default true); when false the
    /// checkpoint must hold `cls.predictions.decoder.weight`.
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Class names by id (`{"0": "negativ", ...}`); its length is the number of labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    /// `single_label_classification`, `multi_label_classification` or `regression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// The class transformers saved (`BertForMaskedLM`, ...), which picks the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
}

fn gelu() -> String {
    "gelu".into()
}
fn d512() -> usize {
    512
}
fn d2() -> usize {
    2
}
fn eps12() -> f64 {
    1e-12
}
fn absolute() -> String {
    "absolute".into()
}
fn yes() -> bool {
    true
}

impl BertConfig {
    /// Number of classes (length of `id2label`, 2 when absent, as transformers).
    pub fn num_labels(&self) -> usize {
        self.id2label.as_ref().map(|m| m.len()).unwrap_or(2)
    }

    /// The classification problem (`problem_type`, defaulted as transformers does).
    pub fn problem_type(&self) -> Result<crate::encoder::ProblemType> {
        crate::encoder::ProblemType::from_config(self.problem_type.as_deref(), self.num_labels())
    }
}

/// Which output layer a BERT model carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BertHeadKind {
    /// The bare encoder (`BertModel`): hidden states, pooler output, embeddings.
    Base,
    /// `BertForMaskedLM`.
    MaskedLm,
    /// `BertForSequenceClassification`.
    SequenceClassification,
    /// `BertForTokenClassification`.
    TokenClassification,
}

impl BertHeadKind {
    /// The head of a transformers class name; `Base` for anything else.
    pub fn from_architecture(name: &str) -> Self {
        match name {
            "BertForMaskedLM" | "BertForPreTraining" => Self::MaskedLm,
            "BertForSequenceClassification" => Self::SequenceClassification,
            "BertForTokenClassification" => Self::TokenClassification,
            _ => Self::Base,
        }
    }
}

/// One post-LN encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The masked-LM head: `transform` (dense, activation, LayerNorm) then the tied decoder.
#[derive(Module, Debug)]
pub struct BertMlmHead {
    dense: Linear,
    norm: LayerNorm,
    /// Decoder weight `[vocab, hidden]` (the word embeddings unless untied).
    decoder: Param<Tensor<2>>,
    /// Decoder bias `[vocab]`.
    bias: Param<Tensor<1>>,
    /// Whether `decoder` is the word-embedding matrix (no `cls.predictions.decoder.weight`).
    tied: bool,
}

/// The classifier of the classification heads: `Linear(hidden, num_labels)`.
#[derive(Module, Debug)]
pub struct BertClassifier {
    linear: Linear,
}

/// A BERT model with its head.
#[derive(Module, Debug)]
pub struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<BertLayer>,
    pooler: Option<Linear>,
    mlm: Option<BertMlmHead>,
    classifier: Option<BertClassifier>,
    #[module(skip)]
    head: BertHeadKind,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    act: Activation,
    #[module(skip)]
    config: BertConfig,
}

impl Bert {
    /// The device of the weights.
    pub(crate) fn weights_device(&self) -> burn::tensor::Device {
        self.word.weight.device()
    }

    /// Loads the weights of `config` with the head named by `architectures` (or `head`), from
    /// keys with or without the `bert.` prefix (buffers such as `embeddings.position_ids` are
    /// ignored).
    pub fn load(
        config: BertConfig,
        head: Option<BertHeadKind>,
        ckpt: &Checkpoint,
        path: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate().map_err(|e| e.in_file(path))?;
        let unsupported = |message: String| ModelError::UnsupportedConfig {
            path: path.into(),
            message,
        };
        let act = Activation::parse(&config.hidden_act)
            .ok_or_else(|| unsupported(format!("hidden_act `{}`", config.hidden_act)))?;
        if config.position_embedding_type != "absolute" {
            return Err(unsupported(format!(
                "position_embedding_type `{}` (absolute is supported)",
                config.position_embedding_type
            )));
        }
        let (h, heads) = (config.hidden_size, config.num_attention_heads);
        if heads == 0 || h % heads != 0 {
            return Err(unsupported(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {heads}"
            )));
        }
        let head = head.unwrap_or_else(|| {
            config
                .architectures
                .as_ref()
                .and_then(|a| a.first())
                .map(|a| BertHeadKind::from_architecture(a))
                .unwrap_or(BertHeadKind::Base)
        });
        let p = if ckpt.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let eps = config.layer_norm_eps;
        let pooler = ckpt.contains(&format!("{p}pooler.dense.weight"))
            // Classification reads the pooler; a missing one is an error naming it.
            || head == BertHeadKind::SequenceClassification;
        let tied = !ckpt.contains("cls.predictions.decoder.weight");
        if head == BertHeadKind::MaskedLm && tied && !config.tie_word_embeddings {
            return Err(ModelError::MissingLmHead {
                path: path.into(),
                tensor: "cls.predictions.decoder.weight".into(),
            });
        }
        let table = bert_params(&config, head, pooler, tied);
        let mut ld = Loader::new(ckpt, table, device).with_prefix(bert_prefix(head), p);
        // Fields in table order.
        let word = ld.embedding()?;
        let position = ld.embedding()?;
        let token_type = ld.embedding()?;
        let emb_norm = ld.layer_norm(eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            layers.push(BertLayer {
                query: ld.linear()?,
                key: ld.linear()?,
                value: ld.linear()?,
                attn_out: ld.linear()?,
                attn_norm: ld.layer_norm(eps)?,
                intermediate: ld.linear()?,
                output: ld.linear()?,
                out_norm: ld.layer_norm(eps)?,
            });
        }
        let pooler = if pooler { Some(ld.linear()?) } else { None };
        let mlm = if head == BertHeadKind::MaskedLm {
            Some(BertMlmHead {
                dense: ld.linear()?,
                norm: ld.layer_norm(eps)?,
                decoder: if tied {
                    Param::from_tensor(word.weight.val())
                } else {
                    ld.matrix()?
                },
                bias: ld.vector()?,
                tied,
            })
        } else {
            None
        };
        let classifier = match head {
            BertHeadKind::SequenceClassification | BertHeadKind::TokenClassification => {
                Some(BertClassifier {
                    linear: ld.linear()?,
                })
            }
            _ => None,
        };
        ld.finish()?;
        labels_from(&config.id2label)?;
        Ok(Self {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            pooler,
            mlm,
            classifier,
            head,
            heads,
            act,
            config,
        })
    }

    /// Turns the model into a fresh sequence classifier over `labels` (any head it had is
    /// dropped): a new `classifier` initialised as transformers does (weights N(0, 0.02), bias
    /// 0, from `seed`), on the pooler output. Errors when the checkpoint has no pooler.
    pub fn with_new_classifier(mut self, labels: &[String], seed: u64) -> Result<Self> {
        if self.pooler.is_none() {
            return Err(ModelError::Input(
                "a sequence classifier reads the pooler, and this checkpoint has none".into(),
            ));
        }
        if labels.is_empty() {
            return Err(ModelError::Input(
                "a classifier needs at least one label".into(),
            ));
        }
        let (h, k) = (self.config.hidden_size, labels.len());
        let w = tilpass_core::SplitMix64::from_state(seed ^ 0xC1A5_51F1_E500_0001)
            .normal_vec(h * k, 0.02);
        let device = self.word.weight.device();
        self.classifier = Some(BertClassifier {
            linear: Linear::new(
                Tensor::from_data(TensorData::new(w, [h, k]), &device),
                Some(Tensor::zeros([k], &device)),
            ),
        });
        self.mlm = None;
        self.head = BertHeadKind::SequenceClassification;
        self.config.id2label = Some(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
        );
        self.config.architectures = Some(vec!["BertForSequenceClassification".into()]);
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The head this model carries.
    pub fn head(&self) -> BertHeadKind {
        self.head
    }

    /// Last hidden states `[batch, seq, hidden]`.
    pub fn forward_hidden(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        self.forward_hidden_with_prompt(input, None)
    }

    /// [`Self::forward_hidden`] with the word embeddings of the first `n` columns replaced by
    /// `prompt [batch, n, hidden]` (prompt tuning; position and token-type embeddings are still
    /// added, as in PEFT).
    pub fn forward_hidden_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<Tensor<3>> {
        self.hidden_impl(input, prompt, None)
    }

    /// [`Self::forward_hidden`] with prefix tuning's virtual keys/values in front of every
    /// layer's attention (`prefix[layer] = (k, v)`, each `[batch, heads, n, head_dim]`): every
    /// token also attends to them, and positions start at `n` (as transformers with a cache).
    pub fn forward_hidden_with_prefix(
        &self,
        input: &EncoderInput,
        prefix: &[(Tensor<4>, Tensor<4>)],
    ) -> Result<Tensor<3>> {
        if prefix.len() != self.layers.len() {
            return Err(ModelError::Input(format!(
                "the prefix has {} layers, the model {}",
                prefix.len(),
                self.layers.len()
            )));
        }
        self.hidden_impl(input, None, Some(prefix))
    }

    /// Sequence-classification logits with a prefix (see [`Self::forward_hidden_with_prefix`]).
    pub fn classify_with_prefix(
        &self,
        input: &EncoderInput,
        prefix: &[(Tensor<4>, Tensor<4>)],
    ) -> Result<Tensor<2>> {
        let c = self
            .classifier
            .as_ref()
            .filter(|_| self.head == BertHeadKind::SequenceClassification)
            .ok_or_else(|| self.wrong_head("sequence-classification"))?;
        let pooled = self.pooled(self.forward_hidden_with_prefix(input, prefix)?)?;
        Ok(c.linear.forward(pooled))
    }

    /// Errors unless `input` (with `n` virtual tokens in front) fits the model: token ids and
    /// types inside their vocabularies, rows no longer than the learned positions.
    fn check_input(&self, input: &EncoderInput, n: usize) -> Result<()> {
        if input.seq + n > self.config.max_position_embeddings {
            return Err(ModelError::TooLong {
                len: input.seq + n,
                max: self.config.max_position_embeddings,
            });
        }
        input.check_limits(
            self.config.vocab_size,
            Some(self.config.max_position_embeddings),
        )?;
        if let Some(t) = input
            .token_type_ids
            .iter()
            .find(|t| **t as usize >= self.config.type_vocab_size)
        {
            return Err(ModelError::Input(format!(
                "token type {t} is outside type_vocab_size {}",
                self.config.type_vocab_size
            )));
        }
        Ok(())
    }

    fn hidden_impl(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
        prefix: Option<&[(Tensor<4>, Tensor<4>)]>,
    ) -> Result<Tensor<3>> {
        let n = prefix
            .and_then(|p| p.first())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0);
        self.check_input(input, n)?;
        let device = self.word.weight.device();
        let (b, s) = (input.batch, input.seq);
        let ints = |v: &[u32], shape: [usize; 2]| {
            let v: Vec<i64> = v.iter().map(|&t| i64::from(t)).collect();
            Tensor::<2, Int>::from_data(TensorData::new(v, shape), &device)
        };
        let ids = ints(&input.input_ids, [b, s]);
        let types = ints(&input.token_type_ids, [b, s]);
        let pos: Vec<u32> = (n as u32..(n + s) as u32).collect();
        let pos = ints(&pos, [1, s]);
        let words = crate::encoder::splice_prompt(self.word.forward(ids), prompt)?;
        let x = words + self.position.forward(pos) + self.token_type.forward(types);
        let mut x = self.emb_norm.forward(x);
        let mut keys_mask = Vec::with_capacity(b * (n + s));
        for r in 0..b {
            keys_mask.extend(std::iter::repeat_n(1u8, n));
            keys_mask.extend_from_slice(&input.attention_mask[r * s..(r + 1) * s]);
        }
        let mask = crate::encoder::key_padding_mask(&keys_mask, b, s, n + s, &device);
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer(layer, x, &mask, prefix.map(|p| &p[i]));
        }
        Ok(x)
    }

    fn layer(
        &self,
        l: &BertLayer,
        x: Tensor<3>,
        mask: &Tensor<4, Bool>,
        prefix: Option<&(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        let [b, s, h] = x.dims();
        let (nh, hd) = (self.heads, h / self.heads);
        let split = |t: Tensor<3>| t.reshape([b, s, nh, hd]).swap_dims(1, 2);
        let q = split(l.query.forward(x.clone()));
        let mut k = split(l.key.forward(x.clone()));
        let mut v = split(l.value.forward(x.clone()));
        if let Some((pk, pv)) = prefix {
            k = Tensor::cat(vec![pk.clone(), k], 2);
            v = Tensor::cat(vec![pv.clone(), v], 2);
        }
        let ctx = attention_merged(q, k, v, mask, None, 1.0 / (hd as f64).sqrt());
        let x = l.attn_norm.forward(l.attn_out.forward(ctx) + x);
        let inter = self.act.apply(l.intermediate.forward(x.clone()));
        l.out_norm.forward(l.output.forward(inter) + x)
    }

    /// The pooler output `tanh(dense(h[:, 0]))`, `[batch, hidden]`.
    pub fn pooled(&self, hidden: Tensor<3>) -> Result<Tensor<2>> {
        let [b, _, h] = hidden.dims();
        self.pool_cls(hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]))
    }

    /// Masked-LM logits `[batch, seq, vocab]`.
    pub fn mlm_logits(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        let head = self
            .mlm
            .as_ref()
            .ok_or_else(|| self.wrong_head("masked-LM"))?;
        let hidden = self.forward_hidden(input)?;
        let t = head
            .norm
            .forward(self.act.apply(head.dense.forward(hidden)));
        let logits = crate::embedding::tied_logits(t, head.decoder.val());
        Ok(logits + head.bias.val().unsqueeze::<3>())
    }

    /// Sequence-classification logits `[batch, num_labels]` (from the pooler output).
    pub fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        self.classify_with_prompt(input, None)
    }

    /// [`Self::classify`] with prompt embeddings (see [`Self::forward_hidden_with_prompt`]).
    pub fn classify_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<Tensor<2>> {
        if self.head != BertHeadKind::SequenceClassification {
            return Err(self.wrong_head("sequence-classification"));
        }
        let c = self
            .classifier
            .as_ref()
            .ok_or_else(|| self.wrong_head("classifier"))?;
        if prompt.is_none()
            && let Some(lens) = self.packed_lens(input)
        {
            // Fused host kernels over the real tokens only; the classifier reads [CLS], so
            // the last layer runs for the [CLS] queries alone.
            self.check_input(input, 0)?;
            let cls = self.packed_hidden(input, &lens, true);
            return Ok(c.linear.forward(self.pool_cls(cls)?));
        }
        let pooled = self.pooled(self.forward_hidden_with_prompt(input, prompt)?)?;
        Ok(c.linear.forward(pooled))
    }

    /// Last hidden states `[batch, seq, hidden]` where only the real (non-padding) tokens
    /// count: on Flex outside autodiff, with right-padded rows, they are computed over the
    /// real tokens alone (fused host kernels, no padding work) and padding positions hold
    /// zeros; elsewhere this is [`Self::forward_hidden`]. For poolers that ignore padding
    /// (mean, max, `[CLS]`).
    pub fn forward_hidden_real(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        let Some(lens) = self.packed_lens(input) else {
            return self.forward_hidden(input);
        };
        self.check_input(input, 0)?;
        let x = self.packed_hidden(input, &lens, false);
        let device = x.device();
        let [_, h] = x.dims();
        let (b, s) = (input.batch, input.seq);
        let packed = crate::encoder_kernels::host_vec(x.reshape([lens.iter().sum::<usize>() * h]));
        let mut out = vec![0.0f32; b * s * h];
        let mut at = 0;
        for (r, &len) in lens.iter().enumerate() {
            out[r * s * h..(r * s + len) * h].copy_from_slice(&packed[at..at + len * h]);
            at += len * h;
        }
        Ok(Tensor::from_data(TensorData::new(out, [b, s, h]), &device))
    }

    /// The token count of every row when the packed host path can run: a plain Flex f32
    /// model outside autodiff and rows that are real tokens followed by padding only (at
    /// least one token each); `None` otherwise.
    fn packed_lens(&self, input: &EncoderInput) -> Option<Vec<usize>> {
        if !crate::encoder_kernels::usable(&self.word.weight.val()) || input.validate().is_err() {
            return None;
        }
        let mut lens = Vec::with_capacity(input.batch);
        for row in input.attention_mask.chunks_exact(input.seq) {
            let len = row.iter().take_while(|m| **m != 0).count();
            if len == 0 || row[len..].iter().any(|m| *m != 0) {
                return None;
            }
            lens.push(len);
        }
        Some(lens)
    }

    /// The encoder over the real tokens of `input` packed one row after the other (`lens`
    /// tokens each, see [`Self::packed_lens`]): last hidden states `[tokens, hidden]`, or with
    /// `cls_only` those of each row's first token, `[batch, hidden]` (the last layer then
    /// computes only those).
    fn packed_hidden(&self, input: &EncoderInput, lens: &[usize], cls_only: bool) -> Tensor<2> {
        let device = self.word.weight.device();
        let tokens: usize = lens.iter().sum();
        let (mut ids, mut pos, mut types) = (
            Vec::with_capacity(tokens),
            Vec::with_capacity(tokens),
            Vec::with_capacity(tokens),
        );
        for (r, &len) in lens.iter().enumerate() {
            let row = r * input.seq..r * input.seq + len;
            ids.extend(input.input_ids[row.clone()].iter().map(|&t| i64::from(t)));
            types.extend(input.token_type_ids[row].iter().map(|&t| i64::from(t)));
            pos.extend(0..len as i64);
        }
        let ints =
            |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [1, tokens]), &device);
        let x = self.word.forward(ints(ids))
            + self.position.forward(ints(pos))
            + self.token_type.forward(ints(types));
        let h = self.config.hidden_size;
        let mut x: Tensor<2> = self.emb_norm.forward(x).reshape([tokens, h]);
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.packed_layer(layer, x, lens, cls_only && i == last);
        }
        if cls_only && self.layers.is_empty() {
            x = x.select(0, first_rows(lens, &device));
        }
        x
    }

    /// One encoder layer over packed tokens `x [tokens, hidden]` with the fused host kernels:
    /// one query/key/value product (weights side by side) unless an adapter sits on one of
    /// them, attention per row, bias + GELU and bias + residual + layer norm in one pass each.
    /// With `first_only` the output is that of each row's first token alone, `[rows, hidden]`
    /// (every token still serves as key and value).
    fn packed_layer(
        &self,
        l: &BertLayer,
        x: Tensor<2>,
        lens: &[usize],
        first_only: bool,
    ) -> Tensor<2> {
        use crate::encoder_kernels as k;
        let h = self.config.hidden_size;
        let (qkv, bias) = if [&l.query, &l.key, &l.value].into_iter().all(plain) {
            let ws = [
                l.query.weight.val(),
                l.key.weight.val(),
                l.value.weight.val(),
            ];
            let bias: Vec<f32> = [&l.query, &l.key, &l.value]
                .into_iter()
                .flat_map(|lin| bias_of(lin, h))
                .collect();
            (k::matmul_side_by_side(x.clone(), &ws), Some(bias))
        } else {
            let qkv = [&l.query, &l.key, &l.value]
                .into_iter()
                .map(|lin| lin.forward(x.clone()))
                .collect();
            (Tensor::cat(qkv, 1), None)
        };
        let scale = 1.0 / ((h / self.heads) as f32).sqrt();
        let ctx = k::packed_attention(qkv, bias.as_deref(), lens, self.heads, scale, first_only);
        let x = if first_only {
            x.select(0, first_rows(lens, &ctx.device()))
        } else {
            x
        };
        let (a, ab) = product(&l.attn_out, ctx);
        let x = k::bias_residual_layer_norm(a, ab.as_deref(), x, &host_norm(&l.attn_norm));
        let inter = match (self.act, plain(&l.intermediate)) {
            (Activation::Gelu, true) => {
                let i = k::matmul_side_by_side(x.clone(), &[l.intermediate.weight.val()]);
                k::bias_gelu(i, &bias_of(&l.intermediate, i_size(&l.intermediate)))
            }
            _ => self.act.apply(l.intermediate.forward(x.clone())),
        };
        let (o, ob) = product(&l.output, inter);
        k::bias_residual_layer_norm(o, ob.as_deref(), x, &host_norm(&l.out_norm))
    }

    /// The pooler output `tanh(dense(cls))` of the `[CLS]` states `[batch, hidden]`.
    fn pool_cls(&self, cls: Tensor<2>) -> Result<Tensor<2>> {
        let pooler = self.pooler.as_ref().ok_or_else(|| {
            ModelError::Input("this checkpoint has no pooler (pooler.dense)".into())
        })?;
        Ok(pooler.forward(cls).tanh())
    }

    /// Token-classification logits `[batch, seq, num_labels]`.
    pub fn token_logits(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        if self.head != BertHeadKind::TokenClassification {
            return Err(self.wrong_head("token-classification"));
        }
        let c = self
            .classifier
            .as_ref()
            .ok_or_else(|| self.wrong_head("classifier"))?;
        Ok(c.linear.forward(self.forward_hidden(input)?))
    }

    fn wrong_head(&self, wanted: &str) -> ModelError {
        ModelError::Input(format!(
            "the model has a {:?} head, not a {wanted} head (architectures: {:?})",
            self.head, self.config.architectures
        ))
    }
}

/// True when no adapter changes the layer's output (none, inactive or merged).
fn plain(l: &Linear) -> bool {
    l.lora.iter().all(|b| !b.active || b.merged)
}

/// The index of each row's first token among packed rows of `lens` tokens, `[rows]`.
fn first_rows(lens: &[usize], device: &Device) -> Tensor<1, Int> {
    let starts: Vec<i64> = lens
        .iter()
        .scan(0usize, |at, l| {
            let start = *at;
            *at += l;
            Some(start as i64)
        })
        .collect();
    Tensor::from_data(TensorData::new(starts, [lens.len()]), device)
}

/// Output width of a linear layer.
fn i_size(l: &Linear) -> usize {
    l.dims().1
}

/// The bias of a linear layer on the host, zeros `[out]` when it has none.
fn bias_of(l: &Linear, out: usize) -> Vec<f32> {
    match &l.bias {
        Some(b) => crate::encoder_kernels::host_vec(b.val()),
        None => vec![0.0; out],
    }
}

/// `x·W` of a plain layer with its bias left for a fused host pass, or the whole forward
/// (adapters included) of one that carries adapters, with no bias left to add.
fn product(l: &Linear, x: Tensor<2>) -> (Tensor<2>, Option<Vec<f32>>) {
    if plain(l) {
        (
            crate::encoder_kernels::matmul_side_by_side(x, &[l.weight.val()]),
            Some(bias_of(l, i_size(l))),
        )
    } else {
        (l.forward(x), None)
    }
}

/// A layer norm's weights on the host.
fn host_norm(n: &LayerNorm) -> crate::encoder_kernels::HostNorm {
    crate::encoder_kernels::HostNorm {
        gamma: crate::encoder_kernels::host_vec(n.weight.val()),
        beta: crate::encoder_kernels::host_vec(n.bias.val()),
        eps: n.eps as f32,
    }
}

/// The HF module prefix of the base model: `bert.` inside the task classes, none in a bare
/// `BertModel`.
fn bert_prefix(head: BertHeadKind) -> &'static str {
    if head == BertHeadKind::Base {
        ""
    } else {
        "bert."
    }
}

/// The parameter table of a BERT model with `head`: the embeddings, encoder layers, the
/// pooler when `pooler`, and the head's tensors (the masked-LM decoder only when not `tied`
/// to the word embeddings). Names carry the task class's `bert.` prefix.
pub fn bert_params(c: &BertConfig, head: BertHeadKind, pooler: bool, tied: bool) -> Vec<ParamSpec> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let p0 = bert_prefix(head);
    let e = format!("{p0}embeddings");
    let mut t = vec![
        ParamSpec::embedding(format!("{e}.word_embeddings"), c.vocab_size, h),
        ParamSpec::embedding(
            format!("{e}.position_embeddings"),
            c.max_position_embeddings,
            h,
        ),
        ParamSpec::embedding(format!("{e}.token_type_embeddings"), c.type_vocab_size, h),
        ParamSpec::layer_norm(format!("{e}.LayerNorm"), h),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("{p0}encoder.layer.{l}");
        let lin = |n: &str, d_in, d_out| {
            ParamSpec::linear(format!("{p}.{n}"), d_in, d_out, true).adapter()
        };
        t.extend([
            lin("attention.self.query", h, h),
            lin("attention.self.key", h, h),
            lin("attention.self.value", h, h),
            lin("attention.output.dense", h, h),
            ParamSpec::layer_norm(format!("{p}.attention.output.LayerNorm"), h),
            lin("intermediate.dense", h, i),
            lin("output.dense", i, h),
            ParamSpec::layer_norm(format!("{p}.output.LayerNorm"), h),
        ]);
    }
    if pooler {
        t.push(ParamSpec::linear(format!("{p0}pooler.dense"), h, h, true).adapter());
    }
    match head {
        BertHeadKind::MaskedLm => {
            t.push(ParamSpec::linear(
                "cls.predictions.transform.dense",
                h,
                h,
                true,
            ));
            t.push(ParamSpec::layer_norm(
                "cls.predictions.transform.LayerNorm",
                h,
            ));
            if !tied {
                t.push(ParamSpec::tensor(
                    "cls.predictions.decoder.weight",
                    &[c.vocab_size, h],
                ));
            }
            t.push(
                ParamSpec::tensor("cls.predictions.bias", &[c.vocab_size])
                    .alias("cls.predictions.decoder.bias"),
            );
        }
        BertHeadKind::SequenceClassification | BertHeadKind::TokenClassification => {
            t.push(ParamSpec::linear("classifier", h, c.num_labels(), true).adapter());
        }
        BertHeadKind::Base => {}
    }
    t
}

/// The fields of a [`Bert`] in the order of [`bert_params`].
macro_rules! bert_slots {
    ($s:expr, $S:ident $(, $m:tt)?) => {{
        let mut out = vec![
            $S::Embedding(& $($m)? $s.word),
            $S::Embedding(& $($m)? $s.position),
            $S::Embedding(& $($m)? $s.token_type),
            $S::LayerNorm(& $($m)? $s.emb_norm),
        ];
        for l in & $($m)? $s.layers {
            out.extend([
                $S::Linear(& $($m)? l.query),
                $S::Linear(& $($m)? l.key),
                $S::Linear(& $($m)? l.value),
                $S::Linear(& $($m)? l.attn_out),
                $S::LayerNorm(& $($m)? l.attn_norm),
                $S::Linear(& $($m)? l.intermediate),
                $S::Linear(& $($m)? l.output),
                $S::LayerNorm(& $($m)? l.out_norm),
            ]);
        }
        out.extend((& $($m)? $s.pooler).into_iter().map($S::Linear));
        if let Some(h) = & $($m)? $s.mlm {
            out.push($S::Linear(& $($m)? h.dense));
            out.push($S::LayerNorm(& $($m)? h.norm));
            if !h.tied {
                out.push($S::Matrix(& $($m)? h.decoder));
            }
            out.push($S::Vector(& $($m)? h.bias));
        }
        if let Some(c) = & $($m)? $s.classifier {
            out.push($S::Linear(& $($m)? c.linear));
        }
        out
    }};
}

impl ParamTable for Bert {
    fn param_table(&self) -> Vec<ParamSpec> {
        let tied = self.mlm.as_ref().is_none_or(|h| h.tied);
        bert_params(&self.config, self.head, self.pooler.is_some(), tied)
    }
    fn param_slots(&self) -> Vec<Slot<'_>> {
        bert_slots!(self, Slot)
    }
    fn param_slots_mut(&mut self) -> Vec<SlotMut<'_>> {
        bert_slots!(self, SlotMut, mut)
    }
}

impl FamilyModel for Bert {
    fn model_type(&self) -> String {
        "bert".into()
    }
    fn tied_params(&self) -> usize {
        // The MLM decoder is tied to the word embeddings: count it once, as PyTorch does.
        match &self.mlm {
            Some(h) if h.tied => h.decoder.val().dims().iter().product(),
            _ => 0,
        }
    }
}

impl SequenceClassifier for Bert {
    fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        Bert::classify(self, input)
    }
    fn problem_type(&self) -> Result<ProblemType> {
        self.config().problem_type()
    }
    fn num_labels(&self) -> usize {
        self.config().num_labels()
    }
}
