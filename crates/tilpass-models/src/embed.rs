//! Encoders behind one API, and sentence embeddings with sentence-transformers semantics.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use serde::Deserialize;
use tilpass_core::{CONFIG_FILE, ModelDir};
use tilpass_tokenize::{Batch, Padding, Tokenizer};

use crate::bert::{Bert, BertConfig};
use crate::encoder::{EncoderInput, PoolingMode, ProblemType, SequenceClassifier, pool};
use crate::error::{ModelError, Result};
use crate::ltg_bert::{LtgBert, LtgBertConfig};

/// `model_type`s that [`EncoderModel::load`] understands (`ltgbert`/`norbert` are NorBERT3 /
/// LTG-BERT checkpoints, recognised also by `architectures` when `model_type` is missing).
pub const SUPPORTED_ENCODERS: [&str; 4] = ["bert", "ltgbert", "norbert", "norbert3"];

/// A bidirectional encoder: BERT or LTG-BERT (NorBERT3).
#[derive(Debug)]
pub enum EncoderModel {
    /// BERT and its heads.
    Bert(Box<Bert>),
    /// LTG-BERT / NorBERT3 and its heads.
    LtgBert(Box<LtgBert>),
}

impl EncoderModel {
    /// Loads an encoder directory, dispatching on `model_type` (or `architectures`); the head
    /// follows `architectures[0]`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_as(dir, None, device)
    }

    /// [`Self::load`] with the head of `architecture` (a transformers class name such as
    /// `BertForMaskedLM` or `NorbertForSequenceClassification`) instead of the one
    /// `config.json` names; `None` keeps the config's. [`crate::AnyModel`] uses it to give a
    /// config without `architectures` its default head.
    pub fn load_as(
        dir: impl AsRef<Path>,
        architecture: Option<&str>,
        device: &Device,
    ) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let path = md.path().join(CONFIG_FILE).display().to_string();
        let model_type = md.model_type().unwrap_or("").to_string();
        let arch = md.config_json()["architectures"][0]
            .as_str()
            .unwrap_or("")
            .to_string();
        let ckpt = md.checkpoint()?;
        let is_ltg = matches!(model_type.as_str(), "ltgbert" | "norbert" | "norbert3")
            || (model_type.is_empty()
                && (arch.starts_with("Norbert") || arch.starts_with("LtgBert")));
        if model_type == "bert" {
            let mut cfg: BertConfig = md.config()?;
            if let Some(a) = architecture {
                cfg.architectures = Some(vec![a.to_string()]);
            }
            return Ok(Self::Bert(Box::new(Bert::load(
                cfg, None, &ckpt, &path, device,
            )?)));
        }
        if is_ltg {
            let mut cfg: LtgBertConfig = md.config()?;
            if let Some(a) = architecture {
                cfg.architectures = Some(vec![a.to_string()]);
            }
            return Ok(Self::LtgBert(Box::new(LtgBert::load(
                cfg, &ckpt, &path, device,
            )?)));
        }
        Err(ModelError::UnsupportedModelType {
            path,
            model_type: if model_type.is_empty() {
                "(none)".into()
            } else {
                model_type
            },
            supported: SUPPORTED_ENCODERS.join(", "),
        })
    }

    /// The device of the weights.
    fn weights_device(&self) -> burn::tensor::Device {
        match self {
            Self::Bert(m) => m.weights_device(),
            Self::LtgBert(m) => m.weights_device(),
        }
    }

    /// Last hidden states `[batch, seq, hidden]`.
    pub fn forward_hidden(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        crate::pool::on_pool(&self.weights_device(), || match self {
            Self::Bert(m) => m.forward_hidden(input),
            Self::LtgBert(m) => m.forward_hidden(input),
        })
    }

    /// Last hidden states `[batch, seq, hidden]` for poolers that ignore padding: at padding
    /// positions they may be zeros instead of what [`Self::forward_hidden`] computes there
    /// (BERT on Flex skips the padding; see [`crate::Bert::forward_hidden_real`]).
    pub fn forward_hidden_real(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        crate::pool::on_pool(&self.weights_device(), || match self {
            Self::Bert(m) => m.forward_hidden_real(input),
            Self::LtgBert(m) => m.forward_hidden(input),
        })
    }

    /// Turns the model into a fresh sequence classifier over `labels` (see
    /// [`crate::Bert::with_new_classifier`] and [`crate::LtgBert::with_new_classifier`]).
    pub fn with_new_classifier(self, labels: &[String], seed: u64) -> Result<Self> {
        Ok(match self {
            Self::Bert(m) => Self::Bert(Box::new(m.with_new_classifier(labels, seed)?)),
            Self::LtgBert(m) => Self::LtgBert(Box::new(m.with_new_classifier(labels, seed)?)),
        })
    }

    /// Sequence-classification logits `[batch, num_labels]`.
    pub fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        crate::pool::on_pool(&self.weights_device(), || match self {
            Self::Bert(m) => m.classify(input),
            Self::LtgBert(m) => m.classify(input),
        })
    }

    /// Masked-LM logits `[batch, seq, vocab]`.
    pub fn mlm_logits(&self, input: &EncoderInput) -> Result<Tensor<3>> {
        crate::pool::on_pool(&self.weights_device(), || match self {
            Self::Bert(m) => m.mlm_logits(input),
            Self::LtgBert(m) => m.mlm_logits(input),
        })
    }

    /// Class names by id, from `id2label`, when the config has them.
    pub fn labels(&self) -> Result<Option<Vec<String>>> {
        match self {
            Self::Bert(m) => crate::encoder::labels_from(&m.config().id2label),
            Self::LtgBert(m) => crate::encoder::labels_from(&m.config().id2label),
        }
    }

    /// The padding id to use for batches (`pad_token_id`, else 0).
    pub fn pad_token_id(&self) -> u32 {
        match self {
            Self::Bert(m) => m.config().pad_token_id.unwrap_or(0),
            Self::LtgBert(m) => m.config().pad_token_id.unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct StModule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize, Default)]
struct StPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode: Option<String>,
}

#[derive(Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

/// How a directory turns token vectors into sentence vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolingConfig {
    /// The pooling.
    pub mode: PoolingMode,
    /// L2-normalise the pooled vector.
    pub normalize: bool,
    /// Truncate inputs to this many tokens, special tokens included:
    /// `sentence_bert_config.json`'s `max_seq_length`, else (in a sentence-transformers
    /// directory, one with `modules.json`) `tokenizer_config.json`'s `model_max_length` capped
    /// by `config.json`'s `max_position_embeddings`, as sentence-transformers reads them.
    pub max_seq_length: Option<usize>,
}

impl PoolingConfig {
    /// Reads sentence-transformers' files in `dir` — `modules.json` (a `Normalize` module),
    /// `1_Pooling/config.json` (or the Pooling module's path) and `sentence_bert_config.json`
    /// — falling back to mean pooling without normalisation when they are absent.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &Path| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if !p.exists() {
                return Ok(None);
            }
            Ok(Some(tilpass_core::read_json(&p)?))
        };
        let mut normalize = false;
        let mut pooling_path = std::path::PathBuf::from("1_Pooling");
        if let Some(v) = read(Path::new("modules.json"))? {
            let modules: Vec<StModule> = serde_json::from_value(v).map_err(|e| {
                ModelError::Input(format!("{}: {e}", dir.join("modules.json").display()))
            })?;
            for m in modules {
                if m.kind.ends_with(".Normalize") {
                    normalize = true;
                }
                if m.kind.ends_with(".Pooling") && !m.path.is_empty() {
                    pooling_path = m.path.into();
                }
            }
        }
        let pooling: StPooling = match read(&pooling_path.join("config.json"))? {
            Some(v) => serde_json::from_value(v).map_err(|e| {
                ModelError::Input(format!(
                    "{}: {e}",
                    pooling_path.join("config.json").display()
                ))
            })?,
            None => StPooling {
                pooling_mode_mean_tokens: true,
                ..Default::default()
            },
        };
        let mode = match pooling.pooling_mode.as_deref() {
            Some("mean") => PoolingMode::Mean,
            Some("cls") => PoolingMode::Cls,
            Some("max") => PoolingMode::Max,
            Some(other) => {
                return Err(ModelError::Input(format!(
                    "{}: pooling_mode `{other}` is not supported (mean, cls, max are)",
                    pooling_path.display()
                )));
            }
            None if pooling.pooling_mode_mean_sqrt_len_tokens => {
                return Err(ModelError::Input(format!(
                    "{}: pooling_mode_mean_sqrt_len_tokens is not supported",
                    pooling_path.display()
                )));
            }
            None => {
                let n = [
                    pooling.pooling_mode_cls_token,
                    pooling.pooling_mode_mean_tokens,
                    pooling.pooling_mode_max_tokens,
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if n > 1 {
                    return Err(ModelError::Input(format!(
                        "{}: several pooling modes at once (concatenation) are not supported",
                        pooling_path.display()
                    )));
                }
                if pooling.pooling_mode_cls_token {
                    PoolingMode::Cls
                } else if pooling.pooling_mode_max_tokens {
                    PoolingMode::Max
                } else {
                    PoolingMode::Mean
                }
            }
        };
        let mut max_seq_length = read(Path::new("sentence_bert_config.json"))?
            .and_then(|v| serde_json::from_value::<StConfig>(v).ok())
            .and_then(|c| c.max_seq_length);
        if max_seq_length.is_none() && dir.join("modules.json").exists() {
            // sentence-transformers 6 records `max_seq_length` as the tokenizer's
            // `model_max_length`; older versions fall back to it too, capped by the model's
            // `max_position_embeddings`.
            let number = |v: Option<serde_json::Value>, key: &str| {
                v.and_then(|v| v.get(key).and_then(serde_json::Value::as_f64))
                    .filter(|n| *n >= 1.0 && *n < 1e12)
                    .map(|n| n as usize)
            };
            let tok = number(
                read(Path::new("tokenizer_config.json"))?,
                "model_max_length",
            );
            let pos = number(read(Path::new(CONFIG_FILE))?, "max_position_embeddings");
            max_seq_length = match (tok, pos) {
                (Some(t), Some(p)) => Some(t.min(p)),
                (t, _) => t,
            };
        }
        Ok(Self {
            mode,
            normalize,
            max_seq_length,
        })
    }
}

/// An encoder plus its pooling: sentence embeddings as sentence-transformers computes them.
#[derive(Debug)]
pub struct SentenceEmbedder {
    /// The encoder.
    pub model: EncoderModel,
    /// Pooling, normalisation and truncation.
    pub pooling: PoolingConfig,
}

impl SentenceEmbedder {
    /// Loads the encoder in `dir` and its sentence-transformers pooling files.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        Ok(Self {
            model: EncoderModel::load(dir, device)?,
            pooling: PoolingConfig::from_dir(dir)?,
        })
    }

    /// Embeds texts as sentence-transformers' `encode` does: each is encoded with `tok` and
    /// truncated to `max_seq_length` the way the reference truncates (the content is cut,
    /// then the special tokens are added, so a long text still ends in `[SEP]`), then
    /// embedded by [`Self::embed_ids`]. One vector per text, in input order.
    pub fn embed_texts(
        &self,
        tok: &Tokenizer,
        texts: &[&str],
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let ids = self.encode_texts(tok, texts)?;
        self.embed_ids(&ids, batch_size)
    }

    /// The token ids [`Self::embed_texts`] embeds: `texts` encoded with their special tokens,
    /// truncated to `max_seq_length` as sentence-transformers truncates.
    pub fn encode_texts(&self, tok: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        match self.pooling.max_seq_length {
            Some(m) => tok.encode_batch_truncated(texts, m),
            None => tok.encode_batch(texts, true),
        }
        .map_err(|e| ModelError::Input(e.to_string()))
    }

    /// Embeds tokenized sentences (with their special tokens), `batch_size` at a time.
    /// Rows are expected to be truncated already ([`Self::encode_texts`] or
    /// [`Tokenizer::encode_batch_truncated`]); a row still longer than `max_seq_length` keeps
    /// its first `max_seq_length` tokens, which drops its closing special token (unlike the
    /// reference, which truncates the text). Like sentence-transformers,
    /// rows are batched in order of decreasing length (less padding); the result is in input
    /// order, one vector per row.
    pub fn embed_ids(&self, rows: &[Vec<u32>], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        crate::pool::on_pool(&self.model.weights_device(), || {
            self.embed_ids_here(rows, batch_size)
        })
    }

    /// [`Self::embed_ids`] on the calling thread.
    fn embed_ids_here(&self, rows: &[Vec<u32>], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let pad = self.model.pad_token_id();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rows[i].len()));
        let mut out = vec![Vec::new(); rows.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| match self.pooling.max_seq_length {
                    Some(m) if rows[i].len() > m => rows[i][..m].to_vec(),
                    _ => rows[i].clone(),
                })
                .collect();
            let input = EncoderInput::from_batch(&Batch::from_ids(&batch, Padding::right(pad)))?;
            let hidden = self.model.forward_hidden_real(&input)?;
            let pooled = pool(
                hidden,
                &input.attention_mask,
                self.pooling.mode,
                self.pooling.normalize,
            );
            let [b, d] = pooled.dims();
            let v = pooled
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| ModelError::Input(format!("{e:?}")))?;
            for (k, &i) in chunk.iter().enumerate().take(b) {
                out[i] = v[k * d..(k + 1) * d].to_vec();
            }
        }
        Ok(out)
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

impl EncoderModel {
    /// The model behind the wrapper, as adapters see it.
    fn as_linears(&self) -> &dyn crate::linear::HasLinears {
        match self {
            Self::Bert(m) => m.as_ref(),
            Self::LtgBert(m) => m.as_ref(),
        }
    }

    fn as_linears_mut(&mut self) -> &mut dyn crate::linear::HasLinears {
        match self {
            Self::Bert(m) => m.as_mut(),
            Self::LtgBert(m) => m.as_mut(),
        }
    }
}

crate::linear::has_linears_via!(EncoderModel, as_linears, as_linears_mut);

impl SequenceClassifier for EncoderModel {
    fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        EncoderModel::classify(self, input)
    }
    fn problem_type(&self) -> Result<ProblemType> {
        match self {
            Self::Bert(m) => m.problem_type(),
            Self::LtgBert(m) => SequenceClassifier::problem_type(m.as_ref()),
        }
    }
    fn num_labels(&self) -> usize {
        match self {
            Self::Bert(m) => m.config().num_labels(),
            Self::LtgBert(m) => m.config().num_labels(),
        }
    }
}
