//! Re-ranking with a cross-encoder: a sequence-classification model reads the query and a
//! passage together and scores their relevance; the top `N` hits of BM25, dense or hybrid
//! search are re-ordered by that score.
//!
//! Semantics are those of sentence-transformers' `CrossEncoder.predict`:
//! - **Encoding**: each (query, passage) pair goes through the model's tokenizer as a pair
//!   (`[CLS] query [SEP] passage [SEP]` for BERT, token type ids 0 for the query part and 1 for
//!   the passage part), truncated `longest_first` (a token is taken from the longer of the two
//!   until the pair fits) to the maximum length: [`CrossEncoderConfig::max_length`], else the
//!   tokenizer's `model_max_length`, capped by the model's `max_position_embeddings`. Batches
//!   are padded to their longest row.
//! - **Score**: with `num_labels` 1 (a relevance head) the single logit through the model's
//!   activation, which is a sigmoid unless `config.json` names another
//!   (`sentence_transformers.activation_fn`; the sigmoid does not change the order); with
//!   `num_labels` 2 (not relevant / relevant) the logit of label 1, where `CrossEncoder.predict`
//!   returns both logits unchanged (identity activation). Other label counts are refused:
//!   there is no relevance score to read.
//!
//! Models: any encoder tilpass loads as a sequence classifier (BERT
//! `BertForSequenceClassification`, NorBERT3 / LTG-BERT `*ForSequenceClassification`; the
//! latter have no token types, their tokenizer's pair template decides the layout).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tilpass_models::{AnyModel, EncoderInput, EncoderModel, Family, Head, ModelKind};
use tilpass_tokenize::{Batch, BatchRow, Padding, Tokenizer};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{RagError, Result};
use crate::kb::Hit;

/// Settings of a [`CrossEncoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrossEncoderConfig {
    /// Pairs per forward pass (CrossEncoder's `batch_size`, 32).
    pub batch_size: usize,
    /// Most tokens of an encoded pair; `None`: the tokenizer's `model_max_length`, capped by
    /// the model's `max_position_embeddings`.
    pub max_length: Option<usize>,
}

impl Default for CrossEncoderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_length: None,
        }
    }
}

/// How a cross-encoder's logits `[num_labels]` become one relevance score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreRule {
    /// `num_labels` 1: the sigmoid of the logit (CrossEncoder's default activation).
    SigmoidOfLogit,
    /// `num_labels` 1 with an identity activation in the config: the logit itself.
    Logit,
    /// `num_labels` 2: the logit of label 1 (relevant).
    PositiveLogit,
    /// `num_labels` 2 with a sigmoid activation in the config: the sigmoid of label 1's logit.
    SigmoidOfPositiveLogit,
}

impl ScoreRule {
    /// The score of one row of logits.
    pub fn apply(self, logits: &[f32]) -> f32 {
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        match self {
            Self::SigmoidOfLogit => sigmoid(logits[0]),
            Self::Logit => logits[0],
            Self::PositiveLogit => logits[1],
            Self::SigmoidOfPositiveLogit => sigmoid(logits[1]),
        }
    }
}

/// A hit after re-ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerankedHit {
    /// The passage; `score` is the cross-encoder's score when `rerank_score` is set, else the
    /// retriever's (a hit below the re-ranked top `N`).
    #[serde(flatten)]
    pub hit: Hit,
    /// The cross-encoder's score, for the re-ranked top `N`.
    pub rerank_score: Option<f32>,
    /// 1-based rank in the retriever's list.
    pub retriever_rank: usize,
    /// The retriever's score.
    pub retriever_score: f32,
}

/// A sequence-classification model used as a cross-encoder (see the module docs).
#[derive(Debug)]
pub struct CrossEncoder {
    model: EncoderModel,
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
    num_labels: usize,
    rule: ScoreRule,
    max_length: usize,
    batch_size: usize,
    dir: PathBuf,
}

/// A model, tokenizer or file error as the crate's error.
fn ext(e: impl Into<tilpass_core::Error>) -> RagError {
    RagError::File(e.into())
}

fn bad(dir: &Path, message: impl Into<String>) -> RagError {
    RagError::Reranker {
        path: dir.to_path_buf(),
        message: message.into(),
    }
}

/// The activation `config.json` names for sentence-transformers (`true` = sigmoid,
/// `false` = identity), `None` when it names none.
fn configured_activation(dir: &Path, config: &serde_json::Value) -> Result<Option<bool>> {
    let path = config["sentence_transformers"]["activation_fn"]
        .as_str()
        .or_else(|| config["sbert_ce_default_activation_function"].as_str());
    Ok(match path {
        None => None,
        Some("torch.nn.modules.activation.Sigmoid" | "torch.nn.Sigmoid") => Some(true),
        Some("torch.nn.modules.linear.Identity" | "torch.nn.Identity") => Some(false),
        Some(other) => {
            return Err(bad(
                dir,
                format!(
                    "config.json names the cross-encoder activation {other:?}; supported: \
                     torch.nn.Sigmoid, torch.nn.Identity"
                ),
            ));
        }
    })
}

impl CrossEncoder {
    /// Loads a sequence-classification model directory and its tokenizer on `device`. Errors
    /// (before any weights are read where possible): not a sequence classifier, a decoder
    /// classifier, a label count other than 1 or 2, an unknown activation, no usable maximum
    /// length, a batch size of 0.
    pub fn load(dir: impl AsRef<Path>, cfg: CrossEncoderConfig, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if cfg.batch_size == 0 {
            return Err(RagError::InvalidSetting {
                setting: "rerank batch_size".into(),
                message: "0; expected at least 1".into(),
            });
        }
        let kind = ModelKind::from_dir(dir).map_err(ext)?;
        if kind.head != Head::SequenceClassification {
            return Err(bad(
                dir,
                format!(
                    "not a sequence classifier: {} ({}); a cross-encoder is a \
                     *ForSequenceClassification model",
                    kind.class_name(),
                    kind.head.describe()
                ),
            ));
        }
        let md = tilpass_core::ModelDir::open(dir)?;
        let config = md.config_json().clone();
        let activation = configured_activation(dir, &config)?;
        // As transformers: the length of id2label, else num_labels, else 2.
        let num_labels = config["id2label"]
            .as_object()
            .map(|m| m.len())
            .or_else(|| config["num_labels"].as_u64().map(|n| n as usize))
            .unwrap_or(2);
        let rule = match (num_labels, activation) {
            (1, None | Some(true)) => ScoreRule::SigmoidOfLogit,
            (1, Some(false)) => ScoreRule::Logit,
            (2, None | Some(false)) => ScoreRule::PositiveLogit,
            (2, Some(true)) => ScoreRule::SigmoidOfPositiveLogit,
            (n, _) => {
                return Err(bad(
                    dir,
                    format!(
                        "wrong labels: {n} classes (id2label); a cross-encoder has 1 (a \
                         relevance logit) or 2 (not relevant / relevant)"
                    ),
                ));
            }
        };
        if matches!(kind.family, Family::Llama | Family::Mistral | Family::Gpt2) {
            return Err(bad(
                dir,
                format!(
                    "{} is a decoder sequence classifier (a reward model); cross-encoders here \
                     are encoders (BERT, NorBERT3 *ForSequenceClassification)",
                    kind.class_name()
                ),
            ));
        }
        let tok = Tokenizer::from_dir(dir).map_err(ext)?;
        let positions = config["max_position_embeddings"]
            .as_u64()
            .map(|n| n as usize);
        let max_length = match (cfg.max_length, tok.model_max_length(), positions) {
            (Some(0), _, _) => {
                return Err(RagError::InvalidSetting {
                    setting: "rerank max_length".into(),
                    message: "0; expected at least 1".into(),
                });
            }
            (Some(m), _, Some(p)) if m > p => {
                return Err(RagError::InvalidSetting {
                    setting: "rerank max_length".into(),
                    message: format!("{m}; the model has {p} positions (max_position_embeddings)"),
                });
            }
            (Some(m), _, _) => m,
            (None, Some(t), Some(p)) => t.min(p),
            (None, Some(t), None) => t,
            (None, None, Some(p)) => p,
            (None, None, None) => {
                return Err(bad(
                    dir,
                    "no maximum length: neither tokenizer_config.json's model_max_length nor \
                     config.json's max_position_embeddings is set (give a max length)",
                ));
            }
        };
        let model = match AnyModel::load_kind(&kind, device).map_err(ext)? {
            AnyModel::SequenceClassifier(m) => m,
            other => {
                return Err(bad(
                    dir,
                    format!("not a sequence classifier ({})", other.head().describe()),
                ));
            }
        };
        let mut tokenizer = tok.inner().clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| bad(dir, format!("tokenizer truncation: {e}")))?;
        Ok(Self {
            pad_id: model.pad_token_id(),
            model,
            tokenizer,
            num_labels,
            rule,
            max_length,
            batch_size: cfg.batch_size,
            dir: dir.to_path_buf(),
        })
    }

    /// Number of classes of the head (1 or 2).
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// How logits become a score.
    pub fn rule(&self) -> ScoreRule {
        self.rule
    }

    /// Most tokens of an encoded pair.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Token ids and token type ids of a (query, passage) pair, with special tokens, truncated
    /// `longest_first` to [`Self::max_length`].
    pub fn encode_pair(&self, query: &str, passage: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let enc = self
            .tokenizer
            .encode((query, passage), true)
            .map_err(|e| bad(&self.dir, format!("encoding a (query, passage) pair: {e}")))?;
        Ok((enc.get_ids().to_vec(), enc.get_type_ids().to_vec()))
    }

    /// Logits `[pairs, num_labels]` (row-major, one `Vec` per pair) of every pair, in
    /// batches of the configured size, in order.
    pub fn logits(&self, pairs: &[(&str, &str)]) -> Result<Vec<Vec<f32>>> {
        let encoded = pairs
            .iter()
            .map(|(q, p)| self.encode_pair(q, p))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in encoded.chunks(self.batch_size) {
            let rows = chunk
                .iter()
                .map(|(ids, types)| BatchRow::new(ids).with_token_type_ids(types));
            let batch = Batch::pad(rows, Padding::right(self.pad_id)).map_err(ext)?;
            let input = EncoderInput::from_batch(&batch).map_err(ext)?;
            let logits = self.model.classify(&input).map_err(ext)?;
            let [b, n] = logits.dims();
            let v = logits
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| bad(&self.dir, format!("reading logits: {e:?}")))?;
            if n != self.num_labels || b != chunk.len() {
                return Err(bad(
                    &self.dir,
                    format!(
                        "the head gave logits [{b}, {n}] for {} pairs and {} labels",
                        chunk.len(),
                        self.num_labels
                    ),
                ));
            }
            out.extend(v.chunks(n).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// The relevance score of every pair ([`ScoreRule`]), in order.
    pub fn score_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        Ok(self
            .logits(pairs)?
            .iter()
            .map(|l| self.rule.apply(l))
            .collect())
    }

    /// Re-orders the first `top_n` of `hits` (best first, as a retriever returned them) by the
    /// cross-encoder's score of (`query`, passage), best first, equal scores in the retriever's
    /// order; the hits below them follow in the retriever's order with its scores.
    pub fn rerank(&self, query: &str, hits: Vec<Hit>, top_n: usize) -> Result<Vec<RerankedHit>> {
        if query.trim().is_empty() {
            return Err(RagError::EmptyQuery);
        }
        let n = top_n.min(hits.len());
        let pairs: Vec<(&str, &str)> = hits[..n]
            .iter()
            .map(|h| (query, h.passage.as_str()))
            .collect();
        let scores = self.score_pairs(&pairs)?;
        let mut out: Vec<RerankedHit> = hits
            .into_iter()
            .enumerate()
            .map(|(i, hit)| RerankedHit {
                retriever_rank: i + 1,
                retriever_score: hit.score,
                rerank_score: scores.get(i).copied(),
                hit,
            })
            .collect();
        out[..n].sort_by(|a, b| {
            b.rerank_score
                .unwrap_or(f32::NEG_INFINITY)
                .total_cmp(&a.rerank_score.unwrap_or(f32::NEG_INFINITY))
                .then(a.retriever_rank.cmp(&b.retriever_rank))
        });
        for h in &mut out[..n] {
            if let Some(s) = h.rerank_score {
                h.hit.score = s;
            }
        }
        Ok(out)
    }
}
