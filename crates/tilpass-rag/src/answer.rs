//! Answers with citations: generation from a [`RagPrompt`] through tilpass's decoders
//! (streamed), and the `[n]` markers of the answer mapped to the passages of the prompt —
//! document id, title and character span in the source document. Markers naming a passage the
//! prompt did not hold are kept as invalid citations.

use serde::{Deserialize, Serialize};
use tilpass_models::{DecoderLm, GenerateConfig, StopReason, VirtualPrefix};
use tilpass_tokenize::Tokenizer;

use crate::error::RagError;
use crate::prompt::{PromptPassage, RagPrompt};

/// What went wrong building a prompt or generating an answer.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// A setting of the prompt or the generation is out of range.
    #[error("{setting}: {message}")]
    InvalidSetting {
        /// The setting (`max_tokens`, `max_passages`, ...).
        setting: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The knowledge base failed (or the question is empty).
    #[error(transparent)]
    Rag(#[from] RagError),
    /// The tokenizer or its chat template failed.
    #[error(transparent)]
    Tokenize(#[from] tilpass_tokenize::TokenizeError),
    /// The model failed to generate.
    #[error(transparent)]
    Model(#[from] tilpass_models::ModelError),
}

impl From<AnswerError> for tilpass_core::Error {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Rag(e) => e.into(),
            AnswerError::Tokenize(e) => e.into(),
            AnswerError::Model(e) => e.into(),
            e @ AnswerError::InvalidSetting { .. } => tilpass_core::Error::Component(Box::new(e)),
        }
    }
}

/// One `[n]` reference in a text: `[1]`, each number of `[1, 2]` or `[1; 3]`, each bracket of
/// `[1][3]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The number referred to.
    pub n: u64,
    /// Byte range of the whole bracket in the text.
    pub span: (usize, usize),
}

/// Longest number read as a citation (longer bracketed digit runs are not markers).
const MAX_DIGITS: usize = 9;

/// Every citation marker of `text`, in order: a `[`, numbers of at most 9 digits separated by
/// `,` or `;` (spaces allowed around them), and a `]`. Anything else in brackets is not a
/// marker.
pub fn markers(text: &str) -> Vec<Marker> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'[' {
            i += 1;
            continue;
        }
        let open = i;
        let mut j = i + 1;
        let mut nums = Vec::new();
        let closed = loop {
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let d0 = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j == d0 || j - d0 > MAX_DIGITS {
                break None;
            }
            // At most nine ASCII digits: always a valid u64.
            nums.push(text[d0..j].parse::<u64>().unwrap_or(u64::MAX));
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            match b.get(j) {
                Some(b']') => break Some(j + 1),
                Some(b',' | b';') => j += 1,
                _ => break None,
            }
        };
        match closed {
            Some(end) => {
                out.extend(nums.into_iter().map(|n| Marker {
                    n,
                    span: (open, end),
                }));
                i = end;
            }
            None => i = open + 1,
        }
    }
    out
}

/// A citation of a passage of the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Citation {
    /// The passage's number in the prompt.
    pub n: usize,
    /// Document id.
    pub id: String,
    /// Document title, if any.
    pub title: Option<String>,
    /// First character of the cited passage in the document.
    pub start: u64,
    /// One past its last character (of the part given to the model, when it was cut).
    pub end: u64,
}

/// A marker naming no passage of the prompt (`[0]`, or a number beyond the passages given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidCitation {
    /// The number in the marker.
    pub n: u64,
    /// How many passages the prompt held (valid numbers are `1..=passages`).
    pub passages: usize,
}

/// A generated answer with its citations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The generated text (trimmed).
    pub text: String,
    /// Each passage cited, once, in the order of its first marker.
    pub citations: Vec<Citation>,
    /// Each number cited that names no passage, once, in the order of its first marker.
    pub invalid_citations: Vec<InvalidCitation>,
    /// Why generation stopped (`None` for an answer made from given text).
    pub stop_reason: Option<StopReason>,
}

impl Answer {
    /// The answer `text` to a prompt whose passages were `passages`: its markers mapped to
    /// them.
    pub fn from_text(text: &str, passages: &[PromptPassage]) -> Self {
        let mut citations: Vec<Citation> = Vec::new();
        let mut invalid: Vec<InvalidCitation> = Vec::new();
        for m in markers(text) {
            let p = usize::try_from(m.n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| passages.get(i));
            match p {
                Some(p) if !citations.iter().any(|c| c.n == p.n) => citations.push(Citation {
                    n: p.n,
                    id: p.id.clone(),
                    title: p.title.clone(),
                    start: p.start,
                    end: p.end,
                }),
                Some(_) => {}
                None if !invalid.iter().any(|c| c.n == m.n) => invalid.push(InvalidCitation {
                    n: m.n,
                    passages: passages.len(),
                }),
                None => {}
            }
        }
        Self {
            text: text.trim().to_string(),
            citations,
            invalid_citations: invalid,
            stop_reason: None,
        }
    }

    /// The document id of each distinct cited number, in order (`None` for an invalid
    /// citation, which cites nothing relevant): what
    /// `tilpass_metrics::citation::citation_precision` takes.
    pub fn cited_ids(&self) -> Vec<Option<&str>> {
        self.citations
            .iter()
            .map(|c| Some(c.id.as_str()))
            .chain(self.invalid_citations.iter().map(|_| None))
            .collect()
    }
}

/// Generates the answer to `prompt` with `model` (a decoder, optionally with virtual tokens of
/// a prompt-learning adapter in `prefix`), decoding with `tok` and streaming the text to
/// `on_text` as it settles. `cfg`'s EOS defaults to the model's and the tokenizer's;
/// `max_new_tokens` is lowered to what the context leaves (an empty room is
/// [`AnswerError::InvalidSetting`]).
pub fn generate_answer(
    model: &DecoderLm,
    tok: &Tokenizer,
    prompt: &RagPrompt,
    cfg: &GenerateConfig,
    prefix: Option<&VirtualPrefix>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Answer, AnswerError> {
    cfg.validate()?;
    let virtual_tokens = match prefix {
        Some(VirtualPrefix::Cache { n, .. } | VirtualPrefix::Embeds { n, .. }) => *n,
        None => 0,
    };
    let context = model.max_positions();
    let room = context.saturating_sub(prompt.ids.len() + virtual_tokens);
    if room == 0 || prompt.ids.is_empty() {
        return Err(AnswerError::InvalidSetting {
            setting: "max_tokens".into(),
            message: format!(
                "the prompt has {} tokens (+{virtual_tokens} virtual), the model's context is \
                 {context}: no room for an answer",
                prompt.ids.len()
            ),
        });
    }
    let mut cfg = cfg.clone();
    cfg.max_new_tokens = cfg.max_new_tokens.min(room);
    if cfg.eos_token_ids.is_none() {
        let mut eos = model.eos_token_ids();
        eos.extend(tok.eos_id());
        cfg.eos_token_ids = Some(eos);
    }
    let decode = |ids: &[u32]| tok.decode(ids, true).map_err(|e| e.to_string());
    let mut rows = tilpass_models::generate_text_with_prefix(
        model,
        std::slice::from_ref(&prompt.ids),
        &cfg,
        prefix,
        &decode,
        &mut |_, chunk| on_text(chunk),
    )?;
    let row = rows.remove(0);
    let mut answer = Answer::from_text(&row.text, &prompt.passages);
    answer.stop_reason = Some(row.stop);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(n: usize, id: &str) -> PromptPassage {
        PromptPassage {
            n,
            id: id.into(),
            title: Some(format!("Tittel {id}")),
            text: "tekst".into(),
            start: 10 * n as u64,
            end: 10 * n as u64 + 5,
            score: 1.0,
            truncated: false,
        }
    }

    fn ns(text: &str) -> Vec<u64> {
        markers(text).iter().map(|m| m.n).collect()
    }

    #[test]
    fn markers_single_lists_and_adjacent() {
        assert_eq!(ns("Svar [1]."), [1]);
        assert_eq!(ns("Svar [1, 2] og [3;4]"), [1, 2, 3, 4]);
        assert_eq!(ns("Svar [1][3]"), [1, 3]);
        assert_eq!(ns("[ 2 ,5 ]"), [2, 5]);
        let m = markers("ab [12] c");
        assert_eq!(m[0].span, (3, 7));
    }

    #[test]
    fn non_markers_are_ignored() {
        assert!(ns("[a] [] [1,] [,1] [1 2] [1 [x] 1234567890]").is_empty());
        assert_eq!(ns("[[1]]"), [1]);
        assert_eq!(ns("[1234567890] [123456789]"), [123_456_789]);
        assert_eq!(ns("æøå [7] å"), [7]);
    }

    #[test]
    fn citations_map_to_passages_and_invalid_ones_are_kept() {
        let ps = [passage(1, "a"), passage(2, "b")];
        let a = Answer::from_text(" Ja [2], se også [1, 2][3] og [0]. [3] ", &ps);
        assert_eq!(a.text, "Ja [2], se også [1, 2][3] og [0]. [3]");
        let cited: Vec<(usize, &str, u64, u64)> = a
            .citations
            .iter()
            .map(|c| (c.n, c.id.as_str(), c.start, c.end))
            .collect();
        assert_eq!(cited, [(2, "b", 20, 25), (1, "a", 10, 15)]);
        assert_eq!(a.citations[0].title.as_deref(), Some("Tittel b"));
        let bad: Vec<u64> = a.invalid_citations.iter().map(|c| c.n).collect();
        assert_eq!(bad, [3, 0]);
        assert!(a.invalid_citations.iter().all(|c| c.passages == 2));
        assert_eq!(a.cited_ids(), [Some("b"), Some("a"), None, None]);
    }

    #[test]
    fn no_markers_no_citations() {
        let a = Answer::from_text("Det står ikke i kildene.", &[passage(1, "a")]);
        assert!(a.citations.is_empty() && a.invalid_citations.is_empty());
    }
}
