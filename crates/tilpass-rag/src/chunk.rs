//! Chunking documents into passages: sentences packed greedily up to a token budget, with an
//! overlap of whole trailing sentences between neighbours; a sentence longer than the budget is
//! cut into windows of tokens. Every passage is a contiguous slice of its document and keeps its
//! character span (`start..end` in Unicode scalar values, as Python's `str` indexes), so a
//! citation points into the source.
//!
//! Tokens are whitespace-separated words ([`ChunkerConfig::chunk`]) or the tokens of a Hugging
//! Face tokenizer ([`Chunker`] with [`TokenUnit::Tokenizer`]): the budget is checked on the
//! passage text itself (encoded alone, without special tokens), so a passage never has more
//! than `max_tokens` tokens of that tokenizer even where subword merges differ at its edges.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tilpass_tokenize::Tokenizer;

use crate::error::{RagError, Result};

/// How tokens are counted for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUnit {
    /// Runs of non-whitespace characters.
    Whitespace,
    /// Tokens of a Hugging Face tokenizer (`tokenizer.json`; a knowledge base keeps its copy).
    Tokenizer,
}

/// Settings of the chunker (stored in the manifest: every passage of a knowledge base is cut
/// the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerConfig {
    /// What a token is.
    pub unit: TokenUnit,
    /// Most tokens in one passage (at least 1).
    pub max_tokens: usize,
    /// Tokens of trailing sentences repeated at the start of the next passage (whole sentences
    /// whose tokens fit; windows of an over-long sentence overlap by exactly this many tokens);
    /// less than `max_tokens`.
    pub overlap_tokens: usize,
    /// Where the tokenizer of [`TokenUnit::Tokenizer`] was loaded from (for the record; the
    /// knowledge base reads its own copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_source: Option<String>,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            unit: TokenUnit::Whitespace,
            max_tokens: 200,
            overlap_tokens: 40,
            tokenizer_source: None,
        }
    }
}

/// One passage of a document: its span in the document (characters, end exclusive) and text
/// (`document.chars()[start..end]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// First character (Unicode scalar value) of the passage in its document.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// The passage text.
    pub text: String,
}

impl ChunkerConfig {
    /// Checks the settings before any work.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(RagError::InvalidSetting {
                setting: "chunk_tokens".into(),
                message: "0 tokens per passage; expected at least 1".into(),
            });
        }
        if self.overlap_tokens >= self.max_tokens {
            return Err(RagError::InvalidSetting {
                setting: "chunk_overlap".into(),
                message: format!(
                    "{} overlap tokens; expected fewer than the {} tokens of a passage",
                    self.overlap_tokens, self.max_tokens
                ),
            });
        }
        Ok(())
    }

    /// Cuts `text` into passages by whitespace tokens (none for text without a token);
    /// [`TokenUnit::Tokenizer`] needs a [`Chunker`] holding the tokenizer.
    pub fn chunk(&self, text: &str) -> Result<Vec<Chunk>> {
        if self.unit != TokenUnit::Whitespace {
            return Err(RagError::InvalidSetting {
                setting: "chunk_tokenizer".into(),
                message: "chunking by tokenizer tokens needs the tokenizer (use a Chunker)".into(),
            });
        }
        Chunker::new(self.clone(), None)?.chunk(text)
    }
}

/// A chunker ready to run: its settings and, for [`TokenUnit::Tokenizer`], the tokenizer.
#[derive(Debug, Clone)]
pub struct Chunker {
    config: ChunkerConfig,
    tokenizer: Option<Arc<Tokenizer>>,
}

impl Chunker {
    /// Checks that `tokenizer` is given exactly when `config.unit` is [`TokenUnit::Tokenizer`].
    pub fn new(config: ChunkerConfig, tokenizer: Option<Arc<Tokenizer>>) -> Result<Self> {
        config.validate()?;
        match (config.unit, tokenizer.is_some()) {
            (TokenUnit::Tokenizer, false) => Err(RagError::InvalidSetting {
                setting: "chunk_tokenizer".into(),
                message: "chunking by tokenizer tokens without a tokenizer".into(),
            }),
            (TokenUnit::Whitespace, true) => Err(RagError::InvalidSetting {
                setting: "chunk_tokenizer".into(),
                message: "a tokenizer given for whitespace chunking".into(),
            }),
            _ => Ok(Self { config, tokenizer }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ChunkerConfig {
        &self.config
    }

    /// The tokenizer, for [`TokenUnit::Tokenizer`].
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_deref()
    }

    /// Byte spans of the tokens of `text` (whitespace runs, or the tokenizer's offsets without
    /// special tokens; empty spans dropped).
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        match &self.tokenizer {
            None => Ok(whitespace_tokens(text)),
            Some(t) => {
                let enc = t
                    .encode_full(text, false)
                    .map_err(|e| RagError::InvalidSetting {
                        setting: "chunk_tokenizer".into(),
                        message: e.to_string(),
                    })?;
                Ok(enc
                    .get_offsets()
                    .iter()
                    .copied()
                    .filter(|(s, e)| e > s)
                    .collect())
            }
        }
    }

    /// The number of tokens of `text` for the budget (whitespace runs, or the tokenizer's tokens
    /// without special tokens).
    pub fn count(&self, text: &str) -> Result<usize> {
        match &self.tokenizer {
            None => Ok(text.split_whitespace().count()),
            Some(t) => Ok(t
                .encode_full(text, false)
                .map_err(|e| RagError::InvalidSetting {
                    setting: "chunk_tokenizer".into(),
                    message: e.to_string(),
                })?
                .len()),
        }
    }

    /// Cuts `text` into passages (none for text without a token).
    pub fn chunk(&self, text: &str) -> Result<Vec<Chunk>> {
        let max = self.config.max_tokens;
        let overlap = self.config.overlap_tokens;
        let sentences = sentences(text);
        let n = sentences.len();
        // Tokens of the text from byte `a` to byte `b` (whitespace counts add up over sentences;
        // subword counts are taken on the span itself).
        let additive = self.tokenizer.is_none();
        let mut sentence_tokens = Vec::with_capacity(n);
        for s in &sentences {
            sentence_tokens.push(if additive {
                s.tokens.len()
            } else {
                self.count(&text[s.start..s.end])?
            });
        }
        let count = |i: usize, j: usize| -> Result<usize> {
            // Sentences i..j (j exclusive, i < j).
            if additive || j == i + 1 {
                Ok(sentence_tokens[i..j].iter().sum())
            } else {
                self.count(&text[sentences[i].start..sentences[j - 1].end])
            }
        };
        let mut spans: Vec<(usize, usize)> = Vec::new(); // byte spans
        let mut i = 0;
        while i < n {
            let s = &sentences[i];
            if sentence_tokens[i] > max {
                self.windows(text, s.start, s.end, &mut spans)?;
                i += 1;
                continue;
            }
            // Pack sentences i..j.
            let mut j = i + 1;
            while j < n && count(i, j + 1)? <= max {
                j += 1;
            }
            spans.push((sentences[i].start, sentences[j - 1].end));
            if j == n {
                break;
            }
            // Overlap: the earliest k in (i, j) whose sentences k..j fit the overlap and leave
            // room for sentence j; else no overlap.
            let mut k = j;
            while k > i + 1 {
                if count(k - 1, j)? > overlap || count(k - 1, j + 1)? > max {
                    break;
                }
                k -= 1;
            }
            i = k;
        }
        // Byte spans to character spans.
        let mut out = Vec::with_capacity(spans.len());
        let mut char_at = 0usize;
        let mut byte_at = 0usize;
        let mut to_char = |b: usize| {
            // spans are visited in non-decreasing start order, but ends may exceed later
            // starts (overlap): count from the start of the text when moving back.
            if b < byte_at {
                char_at = 0;
                byte_at = 0;
            }
            char_at += text[byte_at..b].chars().count();
            byte_at = b;
            char_at
        };
        for (bs, be) in spans {
            let start = to_char(bs);
            let end = to_char(be);
            out.push(Chunk {
                start,
                end,
                text: text[bs..be].to_string(),
            });
        }
        Ok(out)
    }

    /// Cuts the over-long sentence `text[start..end]` into windows of `max_tokens` tokens that
    /// overlap by `overlap_tokens` (with a tokenizer, a window whose text encodes to more tokens
    /// than the budget is shortened by whole tokens until it fits).
    fn windows(
        &self,
        text: &str,
        start: usize,
        end: usize,
        spans: &mut Vec<(usize, usize)>,
    ) -> Result<()> {
        let max = self.config.max_tokens;
        let step = max - self.config.overlap_tokens;
        let toks: Vec<(usize, usize)> = self
            .token_spans(&text[start..end])?
            .into_iter()
            .map(|(a, b)| (a + start, b + start))
            .collect();
        // Offsets of byte-level tokens may include the space before a word: trim it.
        let trimmed = |a: usize, b: usize| {
            let piece = &text[a..b];
            (
                a + piece.len() - piece.trim_start().len(),
                b - (piece.len() - piece.trim_end().len()),
            )
        };
        let mut w = 0;
        while w < toks.len() {
            let mut last = (w + max).min(toks.len());
            let (mut a, mut b) = trimmed(toks[w].0, toks[last - 1].1);
            if self.tokenizer.is_some() {
                while last > w + 1 && b > a && self.count(&text[a..b])? > max {
                    last -= 1;
                    (a, b) = trimmed(toks[w].0, toks[last - 1].1);
                }
            }
            if b > a {
                spans.push((a, b));
            }
            if last == toks.len() {
                break;
            }
            // Always advance; by `step` unless the window was shortened below it.
            w += step.min(last - w).max(1);
        }
        Ok(())
    }
}

/// Byte spans of the runs of non-whitespace characters of `text`.
fn whitespace_tokens(text: &str) -> Vec<(usize, usize)> {
    let mut tokens: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (b, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                tokens.push((s, b));
            }
        } else if start.is_none() {
            start = Some(b);
        }
    }
    if let Some(s) = start {
        tokens.push((s, text.len()));
    }
    tokens
}

/// A sentence: byte span (trimmed) and its tokens' byte spans.
struct Sentence {
    start: usize,
    end: usize,
    tokens: Vec<(usize, usize)>,
}

/// Splits text into sentences: a sentence ends after `.`, `!`, `?` or `…` (with any closing
/// quotes or brackets) when whitespace follows and the next word does not start with a
/// lowercase letter (so `f.eks. en` stays whole), and at every blank line.
fn sentences(text: &str) -> Vec<Sentence> {
    let tokens = whitespace_tokens(text);
    let mut out = Vec::new();
    let mut first = 0;
    for (t, &(ts, te)) in tokens.iter().enumerate() {
        let word = &text[ts..te];
        let ends_sentence = if t + 1 == tokens.len() {
            true
        } else {
            let gap = &text[te..tokens[t + 1].0];
            let blank_line = gap.matches('\n').count() >= 2;
            let core = word.trim_end_matches(['"', '\'', ')', ']', '»', '”', '’']);
            let terminal = core.ends_with(['.', '!', '?', '…']);
            let next_lower = text[tokens[t + 1].0..]
                .chars()
                .next()
                .is_some_and(char::is_lowercase);
            blank_line || (terminal && !next_lower)
        };
        if ends_sentence {
            out.push(Sentence {
                start: tokens[first].0,
                end: te,
                tokens: tokens[first..=t].to_vec(),
            });
            first = t + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invariants(text: &str, cfg: &ChunkerConfig, chunks: &[Chunk]) {
        let chars: Vec<char> = text.chars().collect();
        for c in chunks {
            let slice: String = chars[c.start..c.end].iter().collect();
            assert_eq!(
                slice, c.text,
                "span {}..{} is the passage text",
                c.start, c.end
            );
            let n = c.text.split_whitespace().count();
            assert!(
                (1..=cfg.max_tokens).contains(&n),
                "{n} tokens > {}",
                cfg.max_tokens
            );
        }
        // Every token of the text is in some passage, and passages advance.
        let covered: usize = chunks.last().map_or(0, |c| c.end);
        assert_eq!(covered, text.trim_end().chars().count());
        for w in chunks.windows(2) {
            assert!(w[1].start > w[0].start && w[1].end > w[0].end);
            assert!(
                w[1].start <= w[0].end
                    || text
                        .chars()
                        .skip(w[0].end)
                        .take(w[1].start - w[0].end)
                        .all(char::is_whitespace)
            );
        }
    }

    #[test]
    fn sentences_pack_with_overlap_and_exact_spans() {
        let text = "Kommunen har ansvar for skolen. Fylket driver vidaregåande skular! \
                    Staten betaler mye, f.eks. til sykehusene. Hva med veiene? \
                    «Det er fylkets sak.» Så enkelt er det.\n\nNytt avsnitt her.";
        for (max, ov) in [(4, 0), (6, 2), (8, 5), (12, 6), (200, 40), (1, 0), (3, 2)] {
            let cfg = ChunkerConfig {
                max_tokens: max,
                overlap_tokens: ov,
                ..Default::default()
            };
            let chunks = cfg.chunk(text).unwrap();
            check_invariants(text, &cfg, &chunks);
        }
        let one = ChunkerConfig::default().chunk(text).unwrap();
        assert_eq!(one.len(), 1, "a short document is one passage");
        // "f.eks. til" does not end a sentence; "sykehusene." does.
        let s = sentences(text);
        let texts: Vec<&str> = s.iter().map(|s| &text[s.start..s.end]).collect();
        assert!(
            texts.contains(&"Staten betaler mye, f.eks. til sykehusene."),
            "{texts:?}"
        );
        assert!(texts.contains(&"«Det er fylkets sak.»"), "{texts:?}");
        assert_eq!(texts.len(), 7, "{texts:?}");
    }

    #[test]
    fn overlap_repeats_whole_sentences() {
        let text = "A b c. D e f. G h i. J k l.";
        let cfg = ChunkerConfig {
            max_tokens: 6,
            overlap_tokens: 3,
            ..Default::default()
        };
        let chunks = cfg.chunk(text).unwrap();
        let t: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(t, ["A b c. D e f.", "D e f. G h i.", "G h i. J k l."]);
    }

    #[test]
    fn long_sentence_is_windowed() {
        let text = "én to tre fire fem seks sju åtte ni ti";
        let cfg = ChunkerConfig {
            max_tokens: 4,
            overlap_tokens: 1,
            ..Default::default()
        };
        let chunks = cfg.chunk(text).unwrap();
        let t: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(t, ["én to tre fire", "fire fem seks sju", "sju åtte ni ti"]);
        assert_eq!((chunks[1].start, chunks[1].end), (10, 27));
        check_invariants(text, &cfg, &chunks);
    }

    /// A document of sentences of varied length (one far over any budget below), with
    /// non-ASCII letters, quotes and a blank line.
    fn long_document() -> String {
        let mut t = String::new();
        for i in 0..40 {
            let n = 3 + (i * 7) % 19;
            let words: Vec<String> = (0..n)
                .map(|j| {
                    [
                        "kommunen",
                        "fylkeskommunane",
                        "sjøen",
                        "værmeldinga",
                        "Ålesund",
                        "f.eks.",
                        "«bibliotek»",
                        "barnehageplassar",
                    ][(i + j) % 8]
                        .to_string()
                })
                .collect();
            t.push_str(&words.join(" "));
            t.push_str(if i % 9 == 4 { ".\n\n" } else { ". " });
        }
        let run: Vec<&str> = std::iter::repeat_n("skuleveg", 150).collect();
        t.push_str(&run.join(" "));
        t.push_str(". Slutt.");
        t
    }

    #[test]
    fn tokenizer_tokens_bound_every_passage_and_spans_are_exact() {
        use tilpass_tokenize::{TokenizerKind, TrainConfig, train_tokenizer};
        let text = long_document();
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train.txt");
        std::fs::write(&train, text.repeat(3)).unwrap();
        for kind in [
            TokenizerKind::Bpe,
            TokenizerKind::WordPiece,
            TokenizerKind::Unigram,
        ] {
            let tok = train_tokenizer(
                std::slice::from_ref(&train),
                &TrainConfig {
                    kind,
                    vocab_size: 400,
                    min_frequency: 1,
                    show_progress: false,
                    ..Default::default()
                },
            )
            .unwrap();
            let tok = Arc::new(tok);
            for (max, ov) in [(16, 4), (40, 10), (7, 0), (64, 32)] {
                let cfg = ChunkerConfig {
                    unit: TokenUnit::Tokenizer,
                    max_tokens: max,
                    overlap_tokens: ov,
                    tokenizer_source: None,
                };
                let ch = Chunker::new(cfg, Some(tok.clone())).unwrap();
                let chunks = ch.chunk(&text).unwrap();
                assert!(chunks.len() > 3, "{kind:?} {max}");
                let chars: Vec<char> = text.chars().collect();
                for c in &chunks {
                    let slice: String = chars[c.start..c.end].iter().collect();
                    assert_eq!(slice, c.text, "{kind:?} {max}: span {}..{}", c.start, c.end);
                    let n = tok.encode(&c.text, false).unwrap().len();
                    assert!(
                        (1..=max).contains(&n),
                        "{kind:?}: {n} tokens > {max}: {:?}",
                        c.text
                    );
                    assert_eq!(c.text.trim(), c.text);
                }
                for w in chunks.windows(2) {
                    assert!(
                        w[1].start > w[0].start && w[1].end > w[0].end,
                        "{kind:?} {max}"
                    );
                }
                // Sentence-aligned where sentences fit the budget: most passages end one.
                let ends = chunks.iter().filter(|c| c.text.ends_with('.')).count();
                if max >= 40 {
                    assert!(
                        ends * 2 > chunks.len(),
                        "{kind:?} {max}: {ends}/{}",
                        chunks.len()
                    );
                }
                // Everything is covered up to the end.
                assert_eq!(chunks.last().unwrap().end, chars.len());
            }
        }
        // The unit and the tokenizer must agree.
        let ws = ChunkerConfig::default();
        assert!(matches!(
            ChunkerConfig {
                unit: TokenUnit::Tokenizer,
                ..ws.clone()
            }
            .chunk("x"),
            Err(RagError::InvalidSetting { .. })
        ));
        assert!(matches!(
            Chunker::new(
                ChunkerConfig {
                    unit: TokenUnit::Tokenizer,
                    ..ws
                },
                None
            ),
            Err(RagError::InvalidSetting { .. })
        ));
    }

    #[test]
    fn empty_and_bad_settings() {
        assert!(ChunkerConfig::default().chunk("  \n ").unwrap().is_empty());
        let bad = ChunkerConfig {
            max_tokens: 4,
            overlap_tokens: 4,
            ..Default::default()
        };
        assert!(matches!(
            bad.chunk("x"),
            Err(RagError::InvalidSetting { .. })
        ));
    }
}
