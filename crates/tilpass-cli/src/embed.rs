//! `tilpass embed`: sentence embeddings from an encoder (BERT, NorBERT3), pooled as the
//! directory's sentence-transformers config says.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use tilpass::models::{PoolingMode, SentenceEmbedder};
use tilpass::{Error, Result};

use crate::common::{ModelArgs, print, read_lines, with_adapter};

/// The flags of `embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to embed (repeatable).
    #[arg(long)]
    text: Vec<String>,
    /// A file with one text per line.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Pooling (default: the directory's sentence-transformers config, else mean).
    #[arg(long, value_parser = ["mean", "cls", "max"])]
    pooling: Option<String>,
    /// L2-normalise the embeddings (default: as the directory's modules.json says).
    #[arg(long)]
    normalize: bool,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

/// Runs `tilpass embed`.
pub fn embed_cmd(a: EmbedArgs) -> Result<()> {
    let mut texts = a.text.clone();
    if let Some(f) = &a.file {
        texts.extend(read_lines(f)?);
    }
    if texts.is_empty() {
        return Err(Error::invalid("give --text TEXT or --file FILE"));
    }
    let device = tilpass::device(&a.model.device)?;
    let mut embedder = SentenceEmbedder::load(&a.model.model, &device)?;
    embedder.model = with_adapter(embedder.model, &a.model)?;
    if let Some(p) = &a.pooling {
        embedder.pooling.mode = match p.as_str() {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            _ => PoolingMode::Mean,
        };
    }
    embedder.pooling.normalize |= a.normalize;
    let tok = tilpass::tokenize::Tokenizer::from_dir(&a.model.model)?;
    let start = std::time::Instant::now();
    let single = texts.len() == 1 && a.file.is_none();
    let mut done = 0usize;
    for chunk in texts.chunks(a.batch_size.max(1) * 8) {
        let full = chunk
            .iter()
            .map(|t| tok.encode(t, true))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&str> = chunk.iter().map(|t| t.as_ref()).collect();
        let ids = embedder.encode_texts(&tok, &refs)?;
        let vectors = embedder.embed_ids(&ids, a.batch_size)?;
        let limit = embedder.pooling.max_seq_length;
        for (i, ((t, v), ids)) in chunk.iter().zip(vectors).zip(&full).enumerate() {
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "the embedding of text {} is not finite ({x}): the model produced NaN/inf \
                     (check its weights)",
                    done + i + 1
                )));
            }
            // Texts longer than the model's max_seq_length are cut as sentence-transformers
            // cuts them (the content, keeping the special tokens).
            let truncated = limit.is_some_and(|m| ids.len() > m);
            if single {
                print(&json!({"dim": v.len(), "embedding": v, "truncated": truncated}));
            } else {
                print(&json!({"text": t, "embedding": v, "truncated": truncated}));
            }
        }
        done += chunk.len();
        tracing::info!(
            "{done}/{} texts, {:.1}/s",
            texts.len(),
            done as f64 / start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
