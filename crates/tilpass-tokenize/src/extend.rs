//! Vocabulary extension for a new language: find frequent words that the tokenizer splits into
//! many pieces, add them as tokens, and measure fertility before and after.
//!
//! New tokens are added the way `tokenizer.add_tokens(...)` does in transformers (as *added
//! tokens*, matched before the model), in the word-initial form the tokenizer uses: `▁word` for
//! SentencePiece-style tokenizers (Llama 2, Mistral), ` word` (leading space) for byte-level BPE
//! (GPT-2, Llama 3), and the bare word for WordPiece. The model's embeddings must then be
//! resized to [`crate::Tokenizer::vocab_size`].

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::AddedToken;

use crate::error::{Result, TokenizeError};
use crate::tokenizer::Tokenizer;
use crate::train::{Fertility, fertility};

/// Options for [`extend_vocabulary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtendConfig {
    /// Add at most this many tokens.
    pub max_new_tokens: usize,
    /// Only words seen at least this often.
    pub min_frequency: usize,
    /// Only words the tokenizer splits into at least this many pieces.
    pub min_pieces: usize,
    /// Only words of at least this many characters.
    pub min_chars: usize,
}

impl Default for ExtendConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 1000,
            min_frequency: 5,
            min_pieces: 3,
            min_chars: 3,
        }
    }
}

/// A token added by [`extend_vocabulary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewToken {
    /// The word as found in the corpus.
    pub word: String,
    /// The token string added (word-initial form).
    pub token: String,
    /// Occurrences in the corpus.
    pub frequency: usize,
    /// Pieces the word took before.
    pub pieces_before: usize,
}

/// What [`extend_vocabulary`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtendReport {
    /// Distinct words in the corpus.
    pub distinct_words: usize,
    /// Words meeting the frequency, length and piece thresholds.
    pub candidates: usize,
    /// Tokens added, most useful first.
    pub added: Vec<NewToken>,
    /// Fertility on the corpus before.
    pub before: Fertility,
    /// Fertility on the corpus after.
    pub after: Fertility,
    /// Vocabulary size after (resize the model's embeddings to this).
    pub vocab_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordStyle {
    /// `▁word` in the normalized text.
    Metaspace,
    /// ` word` in the raw text (byte-level).
    SpacePrefix,
    /// Bare word, single-word match.
    Plain,
}

fn detect_style(tok: &Tokenizer) -> Result<WordStyle> {
    let enc = tok.encode_full("a b", false)?;
    let last = enc.get_tokens().last().cloned().unwrap_or_default();
    Ok(if last.starts_with('▁') {
        WordStyle::Metaspace
    } else if last.starts_with('Ġ') || last.starts_with(' ') {
        WordStyle::SpacePrefix
    } else {
        WordStyle::Plain
    })
}

/// Words: maximal runs of alphabetic characters (so `blåbærsyltetøy` is one word).
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty())
}

fn normalize(tok: &Tokenizer, word: &str) -> String {
    match tok.inner().get_normalizer() {
        Some(n) => {
            use tokenizers::{NormalizedString, Normalizer};
            let mut s = NormalizedString::from(word);
            match n.normalize(&mut s) {
                Ok(()) => s.get().to_string(),
                Err(_) => word.to_string(),
            }
        }
        None => word.to_string(),
    }
}

/// Finds frequent, badly split words in `corpus` and adds them to `tokenizer`.
pub fn extend_vocabulary<S: AsRef<str> + Sync>(
    tokenizer: &mut Tokenizer,
    corpus: &[S],
    config: &ExtendConfig,
) -> Result<ExtendReport> {
    if corpus.is_empty() {
        return Err(TokenizeError::Invalid("vocabulary extension needs a corpus".into()));
    }
    let before = fertility(tokenizer, corpus)?;
    let style = detect_style(tokenizer)?;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in corpus {
        for w in words(line.as_ref()) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let distinct_words = counts.len();
    let frequent: Vec<(&str, usize)> = counts
        .into_iter()
        .filter(|(w, c)| *c >= config.min_frequency && w.chars().count() >= config.min_chars)
        .collect();
    let tok_ref = &*tokenizer;
    let mut scored: Vec<(String, &str, usize, usize)> = frequent
        .par_iter()
        .map(|&(w, c)| -> Result<Option<(String, &str, usize, usize)>> {
            // Pieces of the word as it appears mid-sentence.
            let probe = format!("x {w}");
            let with = tok_ref.encode(&probe, false)?.len();
            let without = tok_ref.encode("x", false)?.len();
            let pieces = with.saturating_sub(without).max(1);
            if pieces < config.min_pieces {
                return Ok(None);
            }
            let norm = normalize(tok_ref, w);
            let token = match style {
                WordStyle::Metaspace => format!("▁{norm}"),
                WordStyle::SpacePrefix => format!(" {w}"),
                WordStyle::Plain => norm,
            };
            Ok(Some((token, w, c, pieces)))
        })
        .filter_map(|r| r.transpose())
        .collect::<Result<_>>()?;
    let candidates = scored.len();
    // Tokens saved if added: frequency x (pieces - 1); ties broken by the word for determinism.
    scored.sort_by(|a, b| {
        (b.2 * (b.3 - 1))
            .cmp(&(a.2 * (a.3 - 1)))
            .then_with(|| a.1.cmp(b.1))
    });
    let mut added = vec![];
    let mut to_add = vec![];
    for (token, word, frequency, pieces_before) in scored {
        if added.len() >= config.max_new_tokens {
            break;
        }
        if tokenizer.token_to_id(&token).is_some() || to_add.iter().any(|t: &AddedToken| t.content == token) {
            continue;
        }
        let t = match style {
            WordStyle::Metaspace => AddedToken::from(token.clone(), false).normalized(true),
            WordStyle::SpacePrefix => AddedToken::from(token.clone(), false).normalized(false),
            WordStyle::Plain => AddedToken::from(token.clone(), false)
                .normalized(true)
                .single_word(true),
        };
        to_add.push(t);
        added.push(NewToken {
            word: word.to_string(),
            token,
            frequency,
            pieces_before,
        });
    }
    tokenizer
        .inner_mut()
        .add_tokens(to_add)
        .map_err(crate::error::tk_err("adding tokens"))?;
    let after = fertility(tokenizer, corpus)?;
    Ok(ExtendReport {
        distinct_words,
        candidates,
        added,
        before,
        after,
        vocab_size: tokenizer.vocab_size(),
    })
}
