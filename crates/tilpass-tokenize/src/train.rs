//! Training new tokenizers (BPE, Unigram, WordPiece) from text files with the `tokenizers`
//! trainers, and measuring fertility (tokens per word).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::unigram::{Unigram, UnigramTrainerBuilder};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, decoders, normalizers, pre_tokenizers};

use crate::error::{Result, TokenizeError, tk_err};
use crate::tokenizer::{Tokenizer, cls_sep_processor};

/// The tokenization algorithm to train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Byte-level BPE (GPT-2, Llama 3 style): never produces an unknown token.
    #[default]
    Bpe,
    /// SentencePiece-style Unigram with `▁` word boundaries (T5, NorT5 style).
    Unigram,
    /// BERT WordPiece with `##` continuation pieces.
    WordPiece,
}

impl std::str::FromStr for TokenizerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bpe" => Ok(Self::Bpe),
            "unigram" => Ok(Self::Unigram),
            "wordpiece" => Ok(Self::WordPiece),
            _ => Err(format!(
                "unknown tokenizer kind `{s}`; expected bpe, unigram or wordpiece"
            )),
        }
    }
}

/// Options for [`train_tokenizer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Algorithm.
    pub kind: TokenizerKind,
    /// Target vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Minimum pair/word frequency (BPE, WordPiece).
    pub min_frequency: u64,
    /// Special tokens, in id order. Empty: `<unk> <s> </s> <pad>` (BPE, Unigram) or
    /// `[PAD] [UNK] [CLS] [SEP] [MASK]` (WordPiece).
    pub special_tokens: Vec<String>,
    /// Lower-case text first (WordPiece only; BPE and Unigram keep case).
    pub lowercase: bool,
    /// Show a progress bar on stderr.
    pub show_progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            kind: TokenizerKind::Bpe,
            vocab_size: 32_000,
            min_frequency: 2,
            special_tokens: vec![],
            lowercase: false,
            show_progress: true,
        }
    }
}

impl TrainConfig {
    fn specials(&self) -> Vec<String> {
        if !self.special_tokens.is_empty() {
            return self.special_tokens.clone();
        }
        match self.kind {
            TokenizerKind::Bpe | TokenizerKind::Unigram => {
                ["<unk>", "<s>", "</s>", "<pad>"].map(String::from).to_vec()
            }
            TokenizerKind::WordPiece => ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                .map(String::from)
                .to_vec(),
        }
    }
}

fn added(tokens: &[String]) -> Vec<AddedToken> {
    tokens
        .iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect()
}

/// Bytes the trainers reserve per vocabulary entry before training (the BPE trainer's
/// token-to-id map and id-to-token list are allocated for the whole vocabulary up front).
const TRAINER_BYTES_PER_TOKEN: u128 = 64;

/// A vocabulary size must fit token ids (`u32`) and the memory the trainer reserves for it.
fn check_vocab_size(vocab_size: usize) -> Result<()> {
    if u32::try_from(vocab_size).is_err() {
        return Err(TokenizeError::Invalid(format!(
            "vocab_size {vocab_size} does not fit token ids (at most {})",
            u32::MAX
        )));
    }
    tilpass_core::limits::check_memory(
        format!("tokenizer training: vocab_size {vocab_size}"),
        vocab_size as u128 * TRAINER_BYTES_PER_TOKEN,
    )?;
    Ok(())
}

/// Trains a tokenizer on text files (one document or sentence per line).
///
/// BPE and Unigram tokenizers add `<s>` (BOS) with `add_special_tokens`, like Llama; their
/// `tokenizer_config.json` names `<s>`, `</s>`, `<unk>`, `<pad>` (when those are among the special
/// tokens). WordPiece tokenizers wrap inputs in `[CLS] ... [SEP]` like BERT.
pub fn train_tokenizer(files: &[PathBuf], config: &TrainConfig) -> Result<Tokenizer> {
    if files.is_empty() {
        return Err(TokenizeError::Invalid("no training files given".into()));
    }
    for f in files {
        if !f.is_file() {
            return Err(TokenizeError::Io {
                path: f.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "training file not found",
                ),
            });
        }
    }
    let specials = config.specials();
    if config.vocab_size <= specials.len() {
        return Err(TokenizeError::Invalid(format!(
            "vocab_size {} must exceed the {} special tokens",
            config.vocab_size,
            specials.len()
        )));
    }
    check_vocab_size(config.vocab_size)?;
    let file_names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let ctx = format!("training a tokenizer on {}", file_names.join(", "));
    let mut tok: tokenizers::Tokenizer;
    let mut trainer: TrainerWrapper;
    match config.kind {
        TokenizerKind::Bpe => {
            tok = tokenizers::Tokenizer::new(BPE::default());
            tok.with_pre_tokenizer(Some(
                pre_tokenizers::byte_level::ByteLevel::default().add_prefix_space(false),
            ));
            tok.with_decoder(Some(decoders::byte_level::ByteLevel::default()));
            trainer = BpeTrainerBuilder::new()
                .vocab_size(config.vocab_size)
                .min_frequency(config.min_frequency)
                .special_tokens(added(&specials))
                .initial_alphabet(
                    pre_tokenizers::byte_level::ByteLevel::alphabet()
                        .into_iter()
                        .collect(),
                )
                .show_progress(config.show_progress)
                .build()
                .into();
        }
        TokenizerKind::Unigram => {
            tok = tokenizers::Tokenizer::new(Unigram::default());
            tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
            tok.with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)));
            let unk = specials.iter().find(|s| s.contains("unk")).cloned();
            trainer = UnigramTrainerBuilder::default()
                .vocab_size(config.vocab_size as u32)
                .special_tokens(added(&specials))
                .unk_token(unk)
                .show_progress(config.show_progress)
                .build()
                .map_err(|e| TokenizeError::Invalid(e.to_string()))?
                .into();
        }
        TokenizerKind::WordPiece => {
            let unk = specials
                .iter()
                .find(|s| s.to_ascii_lowercase().contains("unk"))
                .cloned()
                .unwrap_or_else(|| "[UNK]".into());
            tok = tokenizers::Tokenizer::new(
                WordPiece::builder()
                    .unk_token(unk)
                    .build()
                    .map_err(tk_err(&ctx))?,
            );
            tok.with_normalizer(Some(normalizers::bert::BertNormalizer::new(
                true,
                true,
                None,
                config.lowercase,
            )))
            .map_err(tk_err(&ctx))?;
            tok.with_pre_tokenizer(Some(pre_tokenizers::bert::BertPreTokenizer));
            tok.with_decoder(Some(decoders::wordpiece::WordPiece::default()));
            trainer = WordPieceTrainerBuilder::new()
                .vocab_size(config.vocab_size)
                .min_frequency(config.min_frequency)
                .special_tokens(added(&specials))
                .show_progress(config.show_progress)
                .build()
                .into();
        }
    }
    tok.train_from_files(&mut trainer, file_names)
        .map_err(tk_err(&ctx))?;
    // Post-processor: BOS for BPE/Unigram, [CLS] .. [SEP] for WordPiece.
    let find = |pred: &dyn Fn(&str) -> bool| specials.iter().find(|s| pred(s)).cloned();
    let mut cfg = serde_json::Map::new();
    match config.kind {
        TokenizerKind::Bpe | TokenizerKind::Unigram => {
            let bos = find(&|s| s == "<s>" || s.contains("bos") || s.contains("begin"));
            let eos = find(&|s| s == "</s>" || s.contains("eos") || s.contains("end"));
            let pad = find(&|s| s.contains("pad"));
            let unk = find(&|s| s.contains("unk"));
            if let Some(b) = &bos {
                let id = tok
                    .token_to_id(b)
                    .expect("special tokens are in the vocabulary");
                let post = TemplateProcessing::builder()
                    .try_single(format!("{b}:0 $A:0"))
                    .and_then(|x| x.try_pair(format!("{b}:0 $A:0 {b}:1 $B:1")))
                    .map_err(|e| TokenizeError::Invalid(e.to_string()))?
                    .special_tokens(vec![(b.clone(), id)])
                    .build()
                    .map_err(|e| TokenizeError::Invalid(e.to_string()))?;
                tok.with_post_processor(Some(post));
            }
            for (k, v) in [
                ("bos_token", bos),
                ("eos_token", eos),
                ("pad_token", pad),
                ("unk_token", unk),
            ] {
                if let Some(v) = v {
                    cfg.insert(k.into(), serde_json::Value::String(v));
                }
            }
        }
        TokenizerKind::WordPiece => {
            let get = |name: &str| find(&|s| s.to_ascii_uppercase().contains(name));
            if let (Some(cls), Some(sep)) = (get("CLS"), get("SEP")) {
                let (ci, si) = (
                    tok.token_to_id(&cls).expect("special"),
                    tok.token_to_id(&sep).expect("special"),
                );
                tok.with_post_processor(Some(cls_sep_processor(&cls, ci, &sep, si)?));
            }
            for (k, name) in [
                ("cls_token", "CLS"),
                ("sep_token", "SEP"),
                ("pad_token", "PAD"),
                ("unk_token", "UNK"),
                ("mask_token", "MASK"),
            ] {
                if let Some(v) = get(name) {
                    cfg.insert(k.into(), serde_json::Value::String(v));
                }
            }
            cfg.insert(
                "do_lower_case".into(),
                serde_json::Value::Bool(config.lowercase),
            );
        }
    }
    Ok(Tokenizer::from_parts(tok, "trained tokenizer", cfg))
}

/// Tokens per word over a corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Fertility {
    /// White-space separated words.
    pub words: usize,
    /// Tokens (without special tokens).
    pub tokens: usize,
    /// `tokens / words`.
    pub fertility: f64,
}

/// Measures fertility (tokens per white-space word, special tokens excluded) over lines of text.
pub fn fertility<S: AsRef<str> + Sync>(tokenizer: &Tokenizer, lines: &[S]) -> Result<Fertility> {
    use rayon::prelude::*;
    let (words, tokens) = lines
        .par_iter()
        .map(|l| -> Result<(usize, usize)> {
            let l = l.as_ref();
            let words = l.split_whitespace().count();
            if words == 0 {
                return Ok((0, 0));
            }
            Ok((words, tokenizer.encode(l, false)?.len()))
        })
        .try_reduce(|| (0, 0), |a, b| Ok((a.0 + b.0, a.1 + b.1)))?;
    Ok(Fertility {
        words,
        tokens,
        fertility: if words == 0 {
            0.0
        } else {
            tokens as f64 / words as f64
        },
    })
}
