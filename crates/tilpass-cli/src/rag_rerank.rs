//! `--rerank MODEL_DIR [--rerank-top N]` of `tilpass rag search|eval|ask`: the top N hits of
//! the retriever re-ordered by a cross-encoder (tilpass-rag's `rerank`: any BERT / NorBERT3
//! sequence classifier, scored as sentence-transformers' `CrossEncoder`).

use std::path::PathBuf;

use clap::Args;
use tilpass::rag::{CrossEncoder, CrossEncoderConfig, Hit, RagError, RerankedHit};
use tilpass::{Error, Result};

/// Re-ranking flags.
#[derive(Args)]
pub struct RerankArgs {
    /// Cross-encoder directory (a BERT / NorBERT3 *ForSequenceClassification with its
    /// tokenizer; num_labels 1: score = sigmoid of the logit, num_labels 2: score = logit of
    /// label 1) re-ordering the retriever's top --rerank-top hits.
    #[arg(long)]
    pub rerank: Option<PathBuf>,
    /// Hits of the retriever re-ranked (at least the hits asked for are retrieved; those below
    /// the re-ranked ones follow in the retriever's order).
    #[arg(long, default_value_t = 50)]
    pub rerank_top: usize,
    /// (query, passage) pairs per forward pass of the cross-encoder.
    #[arg(long, default_value_t = 32)]
    pub rerank_batch: usize,
    /// Most tokens of a (query, passage) pair (default: the tokenizer's model_max_length,
    /// capped by the model's positions).
    #[arg(long)]
    pub rerank_max_length: Option<usize>,
    /// Device of the cross-encoder.
    #[arg(long, default_value = "flex")]
    pub rerank_device: String,
}

impl RerankArgs {
    /// Checks the settings (before anything is loaded).
    pub fn check(&self) -> Result<()> {
        if self.rerank.is_some() && self.rerank_top == 0 {
            return Err(RagError::InvalidSetting {
                setting: "--rerank-top".into(),
                message: "0; expected at least 1 hit to re-rank".into(),
            }
            .into());
        }
        Ok(())
    }

    /// Loads `--rerank`, if given.
    pub fn load(&self) -> Result<Option<CrossEncoder>> {
        self.check()?;
        let Some(dir) = &self.rerank else {
            return Ok(None);
        };
        let device = tilpass::device(&self.rerank_device)?;
        Ok(Some(CrossEncoder::load(
            dir,
            CrossEncoderConfig {
                batch_size: self.rerank_batch,
                max_length: self.rerank_max_length,
            },
            &device,
        )?))
    }

    /// Hits to retrieve so that `k` can be returned after re-ranking.
    pub fn depth(&self, k: usize) -> usize {
        if self.rerank.is_some() {
            k.max(self.rerank_top)
        } else {
            k
        }
    }
}

/// `hits` re-ranked by `ce` (its top `top` hits), cut to `k`.
pub fn rerank_hits(
    ce: &CrossEncoder,
    query: &str,
    hits: Vec<Hit>,
    top: usize,
    k: usize,
) -> Result<Vec<RerankedHit>> {
    let mut out = ce.rerank(query, hits, top)?;
    out.truncate(k);
    Ok(out)
}

/// Re-ranked hits as a plain list whose scores follow the new order (`n - position`, the
/// first best), for evaluation, where trec_eval orders a run by score.
pub fn rank_scored(hits: Vec<RerankedHit>) -> Vec<Hit> {
    let n = hits.len();
    hits.into_iter()
        .enumerate()
        .map(|(i, r)| Hit {
            score: (n - i) as f32,
            ..r.hit
        })
        .collect()
}

/// A value as JSON.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid(e.to_string()))
}
