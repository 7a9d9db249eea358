//! Dense embedders for the knowledge base: the [`Embedder`] trait, the path-independent
//! [`EmbedderIdentity`] a knowledge base records in its manifest, and [`ModelEmbedder`], any
//! tilpass sentence encoder (MiniLM / BERT, NorBERT3) pooled and normalised as its
//! sentence-transformers config says.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tilpass_models::{PoolingMode, SentenceEmbedder};
use tilpass_tokenize::Tokenizer;

use crate::error::{RagError, Result};

/// Files whose bytes make an embedder's fingerprint, when present (weights, config, tokenizer,
/// sentence-transformers pooling); the directory's path and name are not part of it.
pub const FINGERPRINT_FILES: [&str; 9] = [
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "model.safetensors",
];

/// What a knowledge base's vectors were made with: two embedders with equal identities give
/// the same vectors. Stored in the manifest's `embedder` slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderIdentity {
    /// The model directory as given at index time (canonical path): where searches without
    /// an explicit embedder load it from. Not compared, so a moved model still matches.
    pub source: String,
    /// `config.json`'s `model_type` (`bert`, `ltgbert`, ...).
    pub model_type: String,
    /// Vector width.
    pub dim: usize,
    /// Pooling (`mean`, `cls`, `max`).
    pub pooling: PoolingMode,
    /// Whether the model's own pipeline L2-normalises (the knowledge base always normalises).
    pub normalize: bool,
    /// Inputs truncated to this many tokens.
    pub max_seq_length: Option<usize>,
    /// SHA-256 over the model files' names and bytes ([`FINGERPRINT_FILES`] and any other
    /// `*.safetensors`), hex.
    pub fingerprint: String,
}

impl EmbedderIdentity {
    /// Whether vectors of `self` and `other` are comparable (everything but `source` equal).
    pub fn same_model(&self, other: &Self) -> bool {
        let strip = |e: &Self| Self {
            source: String::new(),
            ..e.clone()
        };
        strip(self) == strip(other)
    }

    /// A one-line description for error messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, dim {}, {:?} pooling, fingerprint {})",
            Path::new(&self.source)
                .file_name()
                .map_or_else(|| self.source.clone(), |n| n.to_string_lossy().into_owned()),
            self.model_type,
            self.dim,
            self.pooling,
            &self.fingerprint[..self.fingerprint.len().min(12)]
        )
    }
}

/// Turns passages and queries into vectors `[dim]` each (normalised by the knowledge base).
pub trait Embedder {
    /// What the vectors are made with.
    fn identity(&self) -> &EmbedderIdentity;
    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// SHA-256 of the model files in `dir` (names and bytes), hex.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let mut names: Vec<String> = FINGERPRINT_FILES.iter().map(|s| s.to_string()).collect();
    let listing = std::fs::read_dir(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
    let mut shards: Vec<String> = listing
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".safetensors") && n != "model.safetensors")
        .collect();
    shards.sort();
    names.extend(shards);
    let mut h = Sha256::new();
    for n in names {
        let p = dir.join(&n);
        if !p.is_file() {
            continue;
        }
        let mut f = std::fs::File::open(&p).map_err(|e| tilpass_core::Error::io(&p, e))?;
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update(
            f.metadata()
                .map_err(|e| tilpass_core::Error::io(&p, e))?
                .len()
                .to_le_bytes(),
        );
        std::io::copy(&mut f, &mut h).map_err(|e| tilpass_core::Error::io(&p, e))?;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A tilpass sentence encoder and its tokenizer as an [`Embedder`].
#[derive(Debug)]
pub struct ModelEmbedder {
    model: SentenceEmbedder,
    tokenizer: Tokenizer,
    identity: EmbedderIdentity,
    /// Texts per forward pass.
    pub batch_size: usize,
}

fn model_err(e: impl Into<tilpass_core::Error>) -> RagError {
    RagError::File(e.into())
}

impl ModelEmbedder {
    /// Loads the encoder, tokenizer and sentence-transformers pooling of `dir` on `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let model = SentenceEmbedder::load(dir, device).map_err(model_err)?;
        let tokenizer = Tokenizer::from_dir(dir).map_err(model_err)?;
        let md = tilpass_core::ModelDir::open(dir)?;
        let model_type = md.model_type().unwrap_or("").to_string();
        let dim =
            md.config_json()["hidden_size"]
                .as_u64()
                .ok_or_else(|| RagError::InvalidSetting {
                    setting: "embedder".into(),
                    message: format!("{}: config.json has no integer hidden_size", dir.display()),
                })? as usize;
        let source = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
            .to_string();
        let identity = EmbedderIdentity {
            source,
            model_type,
            dim,
            pooling: model.pooling.mode,
            normalize: model.pooling.normalize,
            max_seq_length: model.pooling.max_seq_length,
            fingerprint: fingerprint(dir)?,
        };
        Ok(Self {
            model,
            tokenizer,
            identity,
            batch_size: 32,
        })
    }
}

impl Embedder for ModelEmbedder {
    fn identity(&self) -> &EmbedderIdentity {
        &self.identity
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.model
            .embed_texts(&self.tokenizer, texts, self.batch_size)
            .map_err(model_err)
    }
}
