//! Language-model metrics from log-probabilities: corpus perplexity (token-weighted), HF
//! `evaluate`'s mean of per-text perplexities, and lm-evaluation-harness's word perplexity,
//! byte perplexity and bits per byte — the tokenizer-independent numbers to compare models
//! with different vocabularies.

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// One scored text: the natural-log probabilities of its predicted tokens (the first token is
/// not predicted) and the text itself (for word and byte counts).
#[derive(Debug, Clone)]
pub struct ScoredText<'a> {
    /// `ln p(token | prefix)` for each predicted token.
    pub logprobs: &'a [f64],
    /// The text.
    pub text: &'a str,
}

/// Perplexities and bits per byte of a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LmScores {
    /// `exp(−Σ ll / Σ tokens)`.
    pub perplexity: f64,
    /// Mean over texts of each text's perplexity (HF `evaluate`'s number).
    pub mean_text_perplexity: f64,
    /// `exp(−Σ ll / Σ words)` (whitespace-separated words).
    pub word_perplexity: f64,
    /// `exp(−Σ ll / Σ bytes)` over UTF-8 bytes.
    pub byte_perplexity: f64,
    /// `−Σ ll / (Σ bytes · ln 2)`.
    pub bits_per_byte: f64,
    /// Tokens scored.
    pub tokens: usize,
}

/// The metrics of `texts`. Errors on a non-finite log-probability or no scored tokens.
pub fn lm_scores(texts: &[ScoredText]) -> Result<LmScores> {
    let (mut ll, mut tokens, mut words, mut bytes, mut mean) = (0.0, 0usize, 0usize, 0usize, 0.0);
    let mut scored = 0usize;
    for (i, t) in texts.iter().enumerate() {
        if let Some(j) = t.logprobs.iter().position(|x| !x.is_finite() || *x > 0.0) {
            return Err(MetricsError::Invalid(format!(
                "text {}: log-probability {} at token {j} is not a finite value ≤ 0",
                i + 1,
                t.logprobs[j]
            )));
        }
        let s: f64 = t.logprobs.iter().sum();
        ll += s;
        tokens += t.logprobs.len();
        words += t.text.split_whitespace().count();
        bytes += t.text.len();
        if !t.logprobs.is_empty() {
            mean += (-s / t.logprobs.len() as f64).exp();
            scored += 1;
        }
    }
    if tokens == 0 {
        return Err(MetricsError::Invalid("no scored tokens".into()));
    }
    let per = |n: usize| {
        if n == 0 {
            f64::NAN
        } else {
            (-ll / n as f64).exp()
        }
    };
    Ok(LmScores {
        perplexity: per(tokens),
        mean_text_perplexity: mean / scored as f64,
        word_perplexity: per(words),
        byte_perplexity: per(bytes),
        bits_per_byte: if bytes == 0 {
            f64::NAN
        } else {
            -ll / (bytes as f64 * std::f64::consts::LN_2)
        },
        tokens,
    })
}
