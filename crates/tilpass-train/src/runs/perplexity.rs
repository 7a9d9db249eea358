//! Perplexity of a decoder on texts (`tilpass metrics perplexity`): each text scored with the
//! tokenizer's special tokens, truncated to the model's context, its log-probabilities turned
//! into token / word / byte perplexity and bits per byte by [`tilpass_metrics::lm_scores`].

use serde::Serialize;
use tilpass_metrics::{LmScores, ScoredText, lm_scores};
use tilpass_models::{DecoderInput, DecoderLm, shifted_log_probs};
use tilpass_tokenize::Tokenizer;

use crate::error::{Result, TrainError};

/// The perplexities of a set of texts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TextPerplexity {
    /// Texts given.
    pub texts: usize,
    /// Texts cut to the model's context.
    pub truncated: usize,
    /// The scores.
    pub scores: LmScores,
}

/// The start of `text` that the truncated `ids` cover: up to the end offset of the last kept
/// token (the decoded ids where offsets do not fall on a character boundary).
fn scored_prefix(tokenizer: &Tokenizer, text: &str, ids: &[u32]) -> Result<String> {
    let enc = tokenizer.encode_full(text, true)?;
    let end = enc
        .get_offsets()
        .iter()
        .take(ids.len())
        .map(|o| o.1)
        .max()
        .unwrap_or(0);
    if end <= text.len() && text.is_char_boundary(end) {
        return Ok(text[..end].to_string());
    }
    Ok(tokenizer.decode(ids, true)?)
}

/// Scores `texts` with `model`, one text per forward pass. Texts of fewer than two tokens
/// predict nothing and count only towards words and bytes.
pub fn text_perplexity(
    model: &DecoderLm,
    tokenizer: &Tokenizer,
    texts: &[String],
) -> Result<TextPerplexity> {
    let ctx = model.max_positions();
    let mut logprobs: Vec<Vec<f64>> = Vec::with_capacity(texts.len());
    // The part of each text that was scored (all of it unless truncated): words and bytes
    // are counted over it, so per-word and per-byte figures divide what was scored.
    let mut scored_texts: Vec<std::borrow::Cow<'_, str>> = Vec::with_capacity(texts.len());
    let mut truncated = 0usize;
    for text in texts {
        let mut ids = tokenizer.encode(text, true)?;
        if ids.len() > ctx {
            ids.truncate(ctx);
            truncated += 1;
            scored_texts.push(scored_prefix(tokenizer, text, &ids)?.into());
        } else {
            scored_texts.push(text.as_str().into());
        }
        if ids.len() < 2 {
            logprobs.push(Vec::new());
            continue;
        }
        let labels: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let logits = model.forward(&DecoderInput::unpadded(&[ids])?, None)?;
        let (lp, _) = shifted_log_probs(logits, &labels)?;
        logprobs.push(
            lp.into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| TrainError::Config(format!("{e:?}")))?
                .into_iter()
                .map(f64::from)
                .collect(),
        );
    }
    let scored: Vec<ScoredText> = scored_texts
        .iter()
        .zip(&logprobs)
        .map(|(t, l)| ScoredText {
            logprobs: l,
            text: t.as_ref(),
        })
        .collect();
    Ok(TextPerplexity {
        texts: texts.len(),
        truncated,
        scores: lm_scores(&scored)?,
    })
}
