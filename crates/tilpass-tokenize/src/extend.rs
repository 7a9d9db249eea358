//! Vocabulary extension for a new language: find frequent words that the tokenizer splits into
//! many pieces, add them as tokens, and measure fertility before and after.
//!
//! New tokens go into the model itself, not into the added-token list (whose matching before
//! normalization breaks word boundaries for SentencePiece-style tokenizers):
//!
//! - **BPE** (GPT-2, Llama 2/3, Mistral, Qwen): the word's current pieces are merged left to
//!   right by new merges appended after the existing ones (so they apply only once every old
//!   merge is done), creating the intermediate tokens as needed; the word then becomes one
//!   token, in the tokenizer's own form (`▁word`, `Ġword`), and decodes exactly as before;
//! - **WordPiece** (BERT): the word is added to the vocabulary; longest-match-first picks it.
//!
//! New ids follow the largest existing id. The model's embeddings must then be resized to
//! [`crate::Tokenizer::vocab_size`].

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

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
    /// The token added, in the model's own form (`▁word`, `Ġword`, `word`).
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
    /// Vocabulary size after, intermediate merge tokens included (resize the model's
    /// embeddings to this).
    pub vocab_size: usize,
}

/// Words: maximal runs of alphabetic characters (so `blåbærsyltetøy` is one word).
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
}

/// The kind of model whose vocabulary is extended.
enum ModelJson {
    Bpe,
    WordPiece,
}

fn is_byte_fallback(piece: &str) -> bool {
    piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>')
}

/// The pieces a word takes in running text (after a first word, so it gets its word-initial
/// form).
fn pieces_of(tok: &Tokenizer, word: &str) -> Result<Vec<String>> {
    let prefix = tok.encode_full("x", false)?.get_tokens().len();
    let enc = tok.encode_full(&format!("x {word}"), false)?;
    Ok(enc.get_tokens()[prefix.min(enc.get_tokens().len())..].to_vec())
}

/// Finds frequent, badly split words in `corpus` and adds them to `tokenizer`.
pub fn extend_vocabulary<S: AsRef<str> + Sync>(
    tokenizer: &mut Tokenizer,
    corpus: &[S],
    config: &ExtendConfig,
) -> Result<ExtendReport> {
    if corpus.is_empty() {
        return Err(TokenizeError::Invalid(
            "vocabulary extension needs a corpus".into(),
        ));
    }
    let before = fertility(tokenizer, corpus)?;
    let mut json: serde_json::Value = serde_json::from_str(
        &tokenizer
            .inner()
            .to_string(false)
            .map_err(crate::error::tk_err("serialising the tokenizer"))?,
    )
    .map_err(|e| TokenizeError::Invalid(format!("tokenizer JSON: {e}")))?;
    let kind = match json["model"]["type"].as_str() {
        Some("BPE") => ModelJson::Bpe,
        Some("WordPiece") => ModelJson::WordPiece,
        other => {
            return Err(TokenizeError::Invalid(format!(
                "vocabulary extension supports BPE and WordPiece tokenizers, not {}",
                other.unwrap_or("this model")
            )));
        }
    };
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
    let mut scored: Vec<(&str, usize, Vec<String>)> = frequent
        .par_iter()
        .map(|&(w, c)| -> Result<Option<(&str, usize, Vec<String>)>> {
            let pieces = pieces_of(tok_ref, w)?;
            if pieces.len() < config.min_pieces.max(2) || pieces.iter().any(|p| is_byte_fallback(p))
            {
                return Ok(None);
            }
            Ok(Some((w, c, pieces)))
        })
        .filter_map(|r| r.transpose())
        .collect::<Result<_>>()?;
    let candidates = scored.len();
    // Tokens saved if added: frequency x (pieces - 1); ties broken by the word for determinism.
    scored.sort_by(|a, b| {
        (b.1 * (b.2.len() - 1))
            .cmp(&(a.1 * (a.2.len() - 1)))
            .then_with(|| a.0.cmp(b.0))
    });

    let model = json["model"].as_object_mut().expect("model object");
    let mut next_id = model["vocab"]
        .as_object()
        .map(|v| {
            v.values()
                .filter_map(serde_json::Value::as_u64)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let added_max = tokenizer
        .inner()
        .get_added_tokens_decoder()
        .keys()
        .copied()
        .max()
        .map(u64::from)
        .unwrap_or(0);
    next_id = next_id.max(added_max) + 1;
    let merges_as_pairs = model
        .get("merges")
        .and_then(|m| m.as_array())
        .and_then(|m| m.first())
        .is_some_and(serde_json::Value::is_array);
    let mut new_vocab: Vec<(String, u64)> = vec![];
    let mut new_merges: Vec<(String, String)> = vec![];
    let vocab = model["vocab"].as_object().expect("vocab object").clone();
    let has = |t: &str, new_vocab: &[(String, u64)]| {
        vocab.contains_key(t) || new_vocab.iter().any(|(n, _)| n == t)
    };
    let mut added = vec![];
    for (word, frequency, pieces) in scored {
        if added.len() >= config.max_new_tokens {
            break;
        }
        let token = match kind {
            ModelJson::Bpe => pieces.concat(),
            ModelJson::WordPiece => pieces
                .iter()
                .map(|p| p.strip_prefix("##").unwrap_or(p))
                .collect(),
        };
        if has(&token, &new_vocab) {
            continue;
        }
        match kind {
            ModelJson::Bpe => {
                let mut left = pieces[0].clone();
                for right in &pieces[1..] {
                    let merged = format!("{left}{right}");
                    if !has(&merged, &new_vocab) {
                        new_vocab.push((merged.clone(), next_id));
                        next_id += 1;
                    }
                    if !new_merges.iter().any(|(a, b)| *a == left && b == right) {
                        new_merges.push((left.clone(), right.clone()));
                    }
                    left = merged;
                }
            }
            ModelJson::WordPiece => {
                new_vocab.push((token.clone(), next_id));
                next_id += 1;
            }
        }
        added.push(NewToken {
            word: word.to_string(),
            token,
            frequency,
            pieces_before: pieces.len(),
        });
    }
    let vocab_obj = model["vocab"].as_object_mut().expect("vocab object");
    for (t, id) in &new_vocab {
        vocab_obj.insert(t.clone(), serde_json::Value::from(*id));
    }
    if let Some(merges) = model.get_mut("merges").and_then(|m| m.as_array_mut()) {
        for (a, b) in new_merges {
            merges.push(if merges_as_pairs {
                serde_json::json!([a, b])
            } else {
                serde_json::Value::String(format!("{a} {b}"))
            });
        }
    }
    let rebuilt: tokenizers::Tokenizer = json
        .to_string()
        .parse()
        .map_err(crate::error::tk_err("rebuilding the extended tokenizer"))?;
    *tokenizer.inner_mut() = rebuilt;
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
