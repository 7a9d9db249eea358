//! Shared pieces of the encoders: padded input batches, key-padding masks, activations,
//! sentence-embedding pooling, label maps.

use std::collections::BTreeMap;

use burn::tensor::{Bool, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tilpass_tokenize::{Batch, PadSide};

use crate::error::{ModelError, Result};

/// A batch for an encoder, as host arrays (`[batch, seq]` row-major each).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderInput {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u8>,
    /// Segment ids (BERT `token_type_ids`); zeros when not given.
    pub token_type_ids: Vec<u32>,
    /// Rows.
    pub batch: usize,
    /// Columns.
    pub seq: usize,
}

impl EncoderInput {
    /// The model input of a right-padded [`Batch`] (`tilpass_tokenize::Batch::pad` or
    /// `Batch::from_ids` with `Padding::right(pad_id)`): its ids, 0/1 attention mask and token
    /// types, `[batch, seq]`. Errors on left padding (encoders count positions from the first
    /// column), on packed document numbers (encoder attention has no documents), on an empty
    /// batch or a row without any token.
    pub fn from_batch(batch: &Batch) -> Result<Self> {
        if batch.padding_side != PadSide::Right {
            return Err(ModelError::Input(
                "encoders take right-padded batches (their positions count from the first \
                 column)"
                    .into(),
            ));
        }
        if batch.attention_mask.iter().any(|m| *m > 1) {
            return Err(ModelError::Input(
                "encoder attention masks are 0/1; packed rows (document numbers) are for \
                 decoders"
                    .into(),
            ));
        }
        let input = Self {
            input_ids: batch.input_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
            token_type_ids: batch.token_type_ids.clone(),
            batch: batch.batch_size,
            seq: batch.seq_len,
        };
        input.validate()?;
        if (0..input.batch).any(|r| batch.row_mask(r).iter().all(|m| *m == 0)) {
            return Err(ModelError::Input(
                "every row needs at least one token".into(),
            ));
        }
        Ok(input)
    }

    /// Checks that every array is `batch × seq`.
    pub fn validate(&self) -> Result<()> {
        let n = self.batch * self.seq;
        if self.input_ids.len() != n
            || self.attention_mask.len() != n
            || self.token_type_ids.len() != n
            || n == 0
        {
            return Err(ModelError::Input(format!(
                "expected input_ids, attention_mask and token_type_ids of {}x{} (non-empty), \
                 got {}, {} and {} values",
                self.batch,
                self.seq,
                self.input_ids.len(),
                self.attention_mask.len(),
                self.token_type_ids.len()
            )));
        }
        Ok(())
    }

    /// Errors if a token id is outside `vocab` or the rows are longer than `max_positions`.
    pub fn check_limits(&self, vocab: usize, max_positions: Option<usize>) -> Result<()> {
        self.validate()?;
        if let Some(t) = self.input_ids.iter().find(|t| **t as usize >= vocab) {
            return Err(ModelError::Input(format!(
                "token id {t} is outside the vocabulary of {vocab}"
            )));
        }
        if let Some(max) = max_positions
            && self.seq > max
        {
            return Err(ModelError::TooLong { len: self.seq, max });
        }
        Ok(())
    }

    /// Hidden-key mask `[batch, 1, seq, seq]` for bidirectional attention: `true` where the key
    /// column is padding.
    pub fn key_padding_mask(&self, device: &Device) -> Tensor<4, Bool> {
        key_padding_mask(&self.attention_mask, self.batch, self.seq, self.seq, device)
    }
}

/// Replaces the first `n` rows of `x [batch, seq, hidden]` with `prompt [batch, n, hidden]`
/// (prompt tuning: learned virtual tokens in front; their ids are placeholders).
pub fn splice_prompt(x: Tensor<3>, prompt: Option<Tensor<3>>) -> Result<Tensor<3>> {
    let Some(p) = prompt else {
        return Ok(x);
    };
    let [b, s, h] = x.dims();
    let [pb, n, ph] = p.dims();
    if pb != b || n > s || ph != h {
        return Err(ModelError::Input(format!(
            "prompt embeddings {:?} do not fit a batch of {b}x{s} with hidden size {h}",
            [pb, n, ph]
        )));
    }
    Ok(Tensor::cat(vec![p, x.slice([0..b, n..s, 0..h])], 1))
}

/// Mask `[batch, 1, q_len, k_len]`, `true` where `attention_mask[b][j] == 0` (padding key).
pub fn key_padding_mask(
    attention_mask: &[u8],
    batch: usize,
    q_len: usize,
    k_len: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    let mut masked = Vec::with_capacity(batch * q_len * k_len);
    for b in 0..batch {
        let row: Vec<bool> = attention_mask[b * k_len..(b + 1) * k_len]
            .iter()
            .map(|m| *m == 0)
            .collect();
        for _ in 0..q_len {
            masked.extend_from_slice(&row);
        }
    }
    Tensor::from_data(TensorData::new(masked, [batch, 1, q_len, k_len]), device)
}

pub use crate::mlp::{Activation, erf_f32, gelu_exact, is_flex};

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingMode {
    /// Mean over real (non-padding) tokens.
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over real tokens.
    Max,
}

/// Pools `hidden [batch, seq, dim]` with `attention_mask` (`[batch, seq]`) into
/// `[batch, dim]`, then L2-normalises each row when `normalize` (as sentence-transformers'
/// `Normalize`, with its 1e-12 floor).
pub fn pool(
    hidden: Tensor<3>,
    attention_mask: &[u8],
    mode: PoolingMode,
    normalize: bool,
) -> Tensor<2> {
    let [b, s, d] = hidden.dims();
    let device = hidden.device();
    let mask: Vec<f32> = attention_mask.iter().map(|m| f32::from(*m)).collect();
    let m = Tensor::<2>::from_data(TensorData::new(mask, [b, s]), &device).unsqueeze_dim::<3>(2);
    let pooled: Tensor<2> = match mode {
        PoolingMode::Cls => hidden.slice([0..b, 0..1, 0..d]).reshape([b, d]),
        PoolingMode::Mean => {
            let sum = (hidden * m.clone()).sum_dim(1).reshape([b, d]);
            let n = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
            sum / n
        }
        PoolingMode::Max => {
            // Padding positions get a very small value so they never win.
            let masked = hidden + (m.neg().add_scalar(1.0)).mul_scalar(-1e9);
            masked.max_dim(1).reshape([b, d])
        }
    };
    if normalize {
        let norm = pooled.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        pooled / norm
    } else {
        pooled
    }
}

/// What a sequence classifier predicts (transformers' `problem_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// One class per input: softmax over the logits.
    SingleLabelClassification,
    /// Any number of classes per input: a sigmoid per logit.
    MultiLabelClassification,
    /// A real value per output: the logits themselves.
    Regression,
}

impl ProblemType {
    /// From a config's `problem_type`, defaulting as transformers does when it is absent:
    /// regression for one label, single-label classification otherwise.
    pub fn from_config(problem_type: Option<&str>, num_labels: usize) -> Result<Self> {
        Ok(match problem_type {
            Some("single_label_classification") => Self::SingleLabelClassification,
            Some("multi_label_classification") => Self::MultiLabelClassification,
            Some("regression") => Self::Regression,
            Some(other) => {
                return Err(ModelError::Input(format!(
                    "problem_type `{other}` is not one of single_label_classification, \
                     multi_label_classification, regression"
                )));
            }
            None if num_labels == 1 => Self::Regression,
            None => Self::SingleLabelClassification,
        })
    }

    /// Class probabilities (or regression values) from logits `[batch, num_labels]`.
    pub fn probabilities(self, logits: Tensor<2>) -> Tensor<2> {
        match self {
            Self::SingleLabelClassification => burn::tensor::activation::softmax(logits, 1),
            Self::MultiLabelClassification => burn::tensor::activation::sigmoid(logits),
            Self::Regression => logits,
        }
    }
}

/// `id2label` of a config as an ordered list (index = class id); `None` when absent.
pub fn labels_from(id2label: &Option<BTreeMap<String, String>>) -> Result<Option<Vec<String>>> {
    let Some(map) = id2label else {
        return Ok(None);
    };
    let mut out = vec![String::new(); map.len()];
    for (k, v) in map {
        let i: usize = k.parse().ok().filter(|i| *i < map.len()).ok_or_else(|| {
            ModelError::Input(format!(
                "id2label key `{k}` is not a class id below {}",
                map.len()
            ))
        })?;
        out[i] = v.clone();
    }
    Ok(Some(out))
}

/// A sequence classifier (BERT, LTG-BERT / NorBERT3, or either as an
/// [`crate::EncoderModel`]), for classification training and prediction.
pub trait SequenceClassifier: crate::linear::HasLinears {
    /// Logits `[batch, num_labels]`.
    fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>>;
    /// How logits become probabilities (the config's `problem_type`, transformers' default).
    fn problem_type(&self) -> Result<ProblemType>;
    /// Number of classes.
    fn num_labels(&self) -> usize;
}
