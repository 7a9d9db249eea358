//! Chunking documents into passages: sentences packed greedily up to a token budget, with an
//! overlap of whole trailing sentences between neighbours; a sentence longer than the budget is
//! cut into windows of tokens. Every passage is a contiguous slice of its document and keeps its
//! character span (`start..end` in Unicode scalar values, as Python's `str` indexes), so a
//! citation points into the source.

use serde::{Deserialize, Serialize};

use crate::error::{RagError, Result};

/// How tokens are counted for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUnit {
    /// Runs of non-whitespace characters.
    Whitespace,
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
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            unit: TokenUnit::Whitespace,
            max_tokens: 200,
            overlap_tokens: 40,
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

    /// Cuts `text` into passages (none for text without a token).
    pub fn chunk(&self, text: &str) -> Result<Vec<Chunk>> {
        self.validate()?;
        let sentences = sentences(text);
        let mut spans: Vec<(usize, usize)> = Vec::new(); // byte spans
        let n = sentences.len();
        let mut i = 0;
        while i < n {
            let s = &sentences[i];
            if s.tokens.len() > self.max_tokens {
                // An over-long sentence: windows of tokens.
                let step = self.max_tokens - self.overlap_tokens;
                let mut w = 0;
                loop {
                    let last = (w + self.max_tokens).min(s.tokens.len());
                    spans.push((s.tokens[w].0, s.tokens[last - 1].1));
                    if last == s.tokens.len() {
                        break;
                    }
                    w += step;
                }
                i += 1;
                continue;
            }
            // Pack sentences i..j.
            let mut j = i;
            let mut total = 0;
            while j < n && total + sentences[j].tokens.len() <= self.max_tokens {
                total += sentences[j].tokens.len();
                j += 1;
            }
            spans.push((sentences[i].start, sentences[j - 1].end));
            if j == n {
                break;
            }
            // Overlap: the earliest k in (i, j) whose sentences k..j fit the overlap and leave
            // room for sentence j; else no overlap.
            let next_len = sentences[j].tokens.len();
            let mut k = j;
            let mut tail = 0;
            while k > i + 1 {
                let t = sentences[k - 1].tokens.len();
                if tail + t > self.overlap_tokens || tail + t + next_len > self.max_tokens {
                    break;
                }
                tail += t;
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
    // Tokens (byte spans of non-whitespace runs).
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
