//! Encoding supervised fine-tuning examples for encoder-decoders (T5, mT5, NorT5): the
//! dialogue so far as encoder input, one assistant turn as decoder target.
//!
//! Per record:
//! - a conversation gives **one example per assistant turn**: the messages before the turn are
//!   the source, the turn's content the target;
//! - a prompt-completion row with text gives one example (prompt → completion); with messages,
//!   one example per assistant turn of the completion, the prompt (and the completion's
//!   earlier turns) as history;
//! - plain `text` rows and other kinds are [`TokenizeError::UnsupportedRecord`]: an
//!   encoder-decoder needs a source and a target.
//!
//! The source:
//! - with a chat template (the tokenizer's, or one named in
//!   [`Seq2SeqSftConfig::chat_template`]): the history rendered with the generation prompt and
//!   tokenized without special tokens, as transformers' `apply_chat_template(tokenize=True)`;
//! - without one, the plain layout [`plain_source`]: one line `role: content` per message
//!   followed by a last line `assistant:`, tokenized *with* special tokens (T5's tokenizer
//!   appends `</s>`, as `tokenizer(source)` does in transformers' seq2seq examples). Text
//!   prompts are tokenized with special tokens as they are.
//!
//! A source longer than [`Seq2SeqSftConfig::max_source_length`] loses its history from the
//! left: whole messages are dropped, oldest first (a leading system message is kept as long
//! as anything else can go); if the newest message alone is still too long, its tokens are
//! cut from the left (the last `max_source_length` tokens are kept).
//!
//! The target: the content tokenized without special tokens, followed by EOS (which a T5
//! tokenizer's `tokenizer(text_target=...)` appends), cut to
//! [`Seq2SeqSftConfig::max_target_length`] keeping its start and the final EOS.
//!
//! Batches ([`collate_seq2seq`]): sources right-padded with their attention mask; `labels` the
//! targets right-padded with -100; `decoder_input_ids` the labels shifted right with the
//! decoder start token and -100 replaced by the pad id ([`shift_right`]), exactly what
//! transformers' `T5ForConditionalGeneration._shift_right(labels)` feeds the decoder.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tilpass_data::{Content, Message, Record, Role};

use crate::batch::length_grouped_batches;
use crate::chat_template::{ChatTemplate, RenderOptions};
use crate::error::{Result, TokenizeError};
use crate::sft::IGNORE_INDEX;
use crate::tokenizer::Tokenizer;

/// Options for seq2seq SFT encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seq2SeqSftConfig {
    /// Longest encoder input in tokens (`None`: no limit); the history is cut from the left.
    pub max_source_length: Option<usize>,
    /// Longest decoder target in tokens, EOS included (`None`: no limit); cut at the end,
    /// keeping EOS last.
    pub max_target_length: Option<usize>,
    /// Chat template name (`None`: the tokenizer's own if it has one, else the plain layout).
    pub chat_template: Option<String>,
    /// The id that ends every target (`None`: the tokenizer's EOS; set it from the model's
    /// config when the tokenizer names none).
    pub eos_id: Option<u32>,
}

impl Default for Seq2SeqSftConfig {
    fn default() -> Self {
        Self {
            max_source_length: Some(512),
            max_target_length: Some(512),
            chat_template: None,
            eos_id: None,
        }
    }
}

/// One encoded encoder-decoder example (unpadded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seq2SeqExample {
    /// Encoder input ids, `[src]`.
    pub input_ids: Vec<u32>,
    /// Decoder target ids ending in EOS, `[tgt]` (every one supervised).
    pub labels: Vec<u32>,
}

/// What [`Seq2SeqEncoder::encode_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Seq2SeqReport {
    /// Records given.
    pub input: usize,
    /// Examples produced (one per assistant turn).
    pub examples: usize,
    /// Examples whose history was cut to fit `max_source_length`.
    pub source_truncated: usize,
    /// Examples whose target was cut to `max_target_length`.
    pub target_truncated: usize,
    /// Encoder tokens in all.
    pub source_tokens: usize,
    /// Target (supervised) tokens in all.
    pub target_tokens: usize,
}

/// The plain source layout used when there is no chat template: `role: content` lines, then
/// `assistant:` (the turn to answer).
///
/// ```
/// use tilpass_data::{Message, Role};
/// let h = [Message::new(Role::User, "Hei!"), Message::new(Role::Assistant, "Hallo."),
///          Message::new(Role::User, "Korleis går det?")];
/// assert_eq!(tilpass_tokenize::seq2seq::plain_source(&h),
///            "user: Hei!\nassistant: Hallo.\nuser: Korleis går det?\nassistant:");
/// ```
pub fn plain_source(history: &[Message]) -> String {
    let mut s = String::new();
    for m in history {
        s.push_str(m.role.as_str());
        s.push_str(": ");
        s.push_str(&m.content);
        s.push('\n');
    }
    s.push_str("assistant:");
    s
}

/// transformers' `_shift_right`: `[start, labels[0], ..., labels[n-2]]` with -100 replaced by
/// `pad_id`, `[tgt]`.
pub fn shift_right(labels: &[i64], decoder_start: u32, pad_id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(labels.len());
    if labels.is_empty() {
        return out;
    }
    out.push(decoder_start);
    out.extend(
        labels[..labels.len() - 1].iter().map(
            |&l| {
                if l == IGNORE_INDEX { pad_id } else { l as u32 }
            },
        ),
    );
    out
}

/// A padded encoder-decoder batch, row-major.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seq2SeqBatch {
    /// Rows.
    pub batch: usize,
    /// Encoder columns (the longest source).
    pub src_len: usize,
    /// Decoder columns (the longest target).
    pub tgt_len: usize,
    /// Encoder ids, right-padded with the pad id, `[batch, src_len]`.
    pub input_ids: Vec<u32>,
    /// 1 for real encoder tokens, `[batch, src_len]`.
    pub attention_mask: Vec<u8>,
    /// Targets, -100 on padding, `[batch, tgt_len]`.
    pub labels: Vec<i64>,
    /// [`shift_right`] of each row of `labels`, `[batch, tgt_len]`.
    pub decoder_input_ids: Vec<u32>,
}

/// Pads `examples` into one batch (sources with `pad_id` and a 0/1 mask, targets with -100)
/// and derives `decoder_input_ids` with [`shift_right`]. Errors on an empty batch or an
/// example with an empty source or target.
pub fn collate_seq2seq(
    examples: &[&Seq2SeqExample],
    pad_id: u32,
    decoder_start: u32,
) -> Result<Seq2SeqBatch> {
    if examples.is_empty() {
        return Err(TokenizeError::Invalid(
            "a seq2seq batch needs at least one example".into(),
        ));
    }
    for (row, e) in examples.iter().enumerate() {
        if e.input_ids.is_empty() || e.labels.is_empty() {
            return Err(TokenizeError::BatchRow {
                row,
                message: format!(
                    "{} source and {} target tokens; both must be at least 1",
                    e.input_ids.len(),
                    e.labels.len()
                ),
            });
        }
    }
    let src_len = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let tgt_len = examples.iter().map(|e| e.labels.len()).max().unwrap_or(0);
    let b = examples.len();
    let mut out = Seq2SeqBatch {
        batch: b,
        src_len,
        tgt_len,
        input_ids: Vec::with_capacity(b * src_len),
        attention_mask: Vec::with_capacity(b * src_len),
        labels: Vec::with_capacity(b * tgt_len),
        decoder_input_ids: Vec::with_capacity(b * tgt_len),
    };
    for e in examples {
        let pad = src_len - e.input_ids.len();
        out.input_ids.extend_from_slice(&e.input_ids);
        out.input_ids.extend(std::iter::repeat_n(pad_id, pad));
        out.attention_mask
            .extend(std::iter::repeat_n(1u8, e.input_ids.len()));
        out.attention_mask.extend(std::iter::repeat_n(0u8, pad));
        let mut labels: Vec<i64> = e.labels.iter().map(|&t| i64::from(t)).collect();
        labels.resize(tgt_len, IGNORE_INDEX);
        out.decoder_input_ids
            .extend(shift_right(&labels, decoder_start, pad_id));
        out.labels.extend(labels);
    }
    Ok(out)
}

/// Groups examples of similar length (source + target tokens, longest first) into batches
/// of at most `batch_size`, padded by [`collate_seq2seq`]: less padding than taking them in
/// order. Deterministic.
pub fn seq2seq_batches(
    examples: &[Seq2SeqExample],
    batch_size: usize,
    pad_id: u32,
    decoder_start: u32,
) -> Result<Vec<Seq2SeqBatch>> {
    let lengths: Vec<usize> = examples
        .iter()
        .map(|e| e.input_ids.len() + e.labels.len())
        .collect();
    length_grouped_batches(&lengths, batch_size)
        .into_iter()
        .map(|idx| {
            let rows: Vec<&Seq2SeqExample> = idx.iter().map(|&i| &examples[i]).collect();
            collate_seq2seq(&rows, pad_id, decoder_start)
        })
        .collect()
}

/// Encodes records for an encoder-decoder with one tokenizer and (optional) template.
pub struct Seq2SeqEncoder<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<ChatTemplate>,
    eos: u32,
    config: Seq2SeqSftConfig,
}

/// One example with what truncation did to it.
struct Encoded {
    example: Seq2SeqExample,
    source_truncated: bool,
    target_truncated: bool,
}

impl<'a> Seq2SeqEncoder<'a> {
    /// Prepares an encoder: compiles the chat template when the tokenizer has one (or one is
    /// named: then it must exist). Errors when neither the config nor the tokenizer gives an
    /// EOS id (targets end in it), or a length limit is 0 (the target limit must leave room
    /// for EOS and one token: 2).
    pub fn new(tokenizer: &'a Tokenizer, config: Seq2SeqSftConfig) -> Result<Self> {
        let template = match tokenizer.chat_template(config.chat_template.as_deref()) {
            Ok(t) => Some(t),
            Err(TokenizeError::NoChatTemplate { .. }) if config.chat_template.is_none() => None,
            Err(e) => return Err(e),
        };
        let eos = config
            .eos_id
            .or_else(|| tokenizer.eos_id())
            .ok_or_else(|| {
                TokenizeError::Invalid(format!(
                    "{}: the tokenizer has no EOS token, which ends every seq2seq target (set \
                 eos_token in tokenizer_config.json)",
                    tokenizer.source()
                ))
            })?;
        if eos as usize >= tokenizer.vocab_size() {
            return Err(TokenizeError::Invalid(format!(
                "EOS id {eos} is outside the tokenizer's vocabulary of {} ({})",
                tokenizer.vocab_size(),
                tokenizer.source()
            )));
        }
        if config.max_source_length == Some(0) {
            return Err(TokenizeError::Invalid(
                "max_source_length must be at least 1".into(),
            ));
        }
        if config.max_target_length.is_some_and(|n| n < 2) {
            return Err(TokenizeError::Invalid(
                "max_target_length must be at least 2 (a token and EOS)".into(),
            ));
        }
        Ok(Self {
            tokenizer,
            template,
            eos,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Seq2SeqSftConfig {
        &self.config
    }

    /// Whether sources are rendered with a chat template (else [`plain_source`]).
    pub fn uses_template(&self) -> bool {
        self.template.is_some()
    }

    /// Encoder ids of a dialogue to answer, `[src]`, rendered as for training (chat template
    /// with the generation prompt, or [`plain_source`]) and cut from the left to
    /// `max_source_length` as training cuts it; and whether anything was cut. This is the
    /// encoder input a chat sends for the next assistant turn.
    pub fn source(&self, history: &[Message]) -> Result<(Vec<u32>, bool)> {
        self.fitted_source(history)
    }

    /// Encoder ids of a history (untruncated).
    fn source_ids(&self, history: &[Message]) -> Result<Vec<u32>> {
        match &self.template {
            Some(t) => {
                let r = t.render(
                    history,
                    &RenderOptions {
                        add_generation_prompt: true,
                        ..Default::default()
                    },
                )?;
                self.tokenizer.encode(&r.text, false)
            }
            None => self.tokenizer.encode(&plain_source(history), true),
        }
    }

    /// Encoder ids of `history` cut from the left to fit, and whether anything was cut.
    fn fitted_source(&self, history: &[Message]) -> Result<(Vec<u32>, bool)> {
        let Some(max) = self.config.max_source_length else {
            return Ok((self.source_ids(history)?, false));
        };
        let keep_system = history.first().is_some_and(|m| m.role == Role::System);
        let first = usize::from(keep_system);
        let mut start = first;
        loop {
            let view: Vec<Message> = history[..first]
                .iter()
                .chain(history[start..].iter())
                .cloned()
                .collect();
            let ids = self.source_ids(&view)?;
            if ids.len() <= max {
                return Ok((ids, start > first));
            }
            if start + 1 < history.len() {
                start += 1;
                continue;
            }
            // Only the newest message (with the system message) is left: cut its tokens from
            // the left; and without the system message if even that does not fit.
            let last = self.source_ids(&history[history.len().saturating_sub(1)..])?;
            let mut ids = last;
            if ids.len() > max {
                ids.drain(..ids.len() - max);
            }
            return Ok((ids, true));
        }
    }

    /// Target ids: content tokens + EOS, cut to fit; and whether it was cut.
    fn target_ids(&self, content: &str) -> Result<(Vec<u32>, bool)> {
        let mut ids = self.tokenizer.encode(content, false)?;
        let mut cut = false;
        if let Some(max) = self.config.max_target_length
            && ids.len() + 1 > max
        {
            ids.truncate(max - 1);
            cut = true;
        }
        ids.push(self.eos);
        Ok((ids, cut))
    }

    /// The examples of one conversation: one per assistant turn at index `>= from`.
    fn turns(&self, index: usize, messages: &[Message], from: usize) -> Result<Vec<Encoded>> {
        let mut out = Vec::new();
        for (i, m) in messages.iter().enumerate().skip(from) {
            if m.role != Role::Assistant {
                continue;
            }
            if i == 0 {
                return Err(TokenizeError::UnsupportedRecord {
                    index,
                    message: "the conversation starts with an assistant turn: an \
                              encoder-decoder needs history before each answer"
                        .into(),
                });
            }
            let (input_ids, source_truncated) = self.fitted_source(&messages[..i])?;
            let (labels, target_truncated) = self.target_ids(&m.content)?;
            out.push(Encoded {
                example: Seq2SeqExample { input_ids, labels },
                source_truncated,
                target_truncated,
            });
        }
        if out.is_empty() {
            return Err(TokenizeError::NoSupervisedTokens {
                index,
                reason: "the conversation has no assistant turn to use as a target".into(),
            });
        }
        Ok(out)
    }

    fn encode_record(&self, index: usize, record: &Record) -> Result<Vec<Encoded>> {
        match record {
            Record::Conversation { messages } => self.turns(index, messages, 0),
            Record::PromptCompletion { prompt, completion } => match (prompt, completion) {
                (Content::Messages(p), Content::Messages(c)) => {
                    let all: Vec<Message> = p.iter().chain(c.iter()).cloned().collect();
                    self.turns(index, &all, p.len())
                }
                (Content::Text(p), Content::Text(c)) => {
                    let mut input_ids = self.tokenizer.encode(p, true)?;
                    let mut source_truncated = false;
                    if let Some(max) = self.config.max_source_length
                        && input_ids.len() > max
                    {
                        input_ids.drain(..input_ids.len() - max);
                        source_truncated = true;
                    }
                    let (labels, target_truncated) = self.target_ids(c)?;
                    Ok(vec![Encoded {
                        example: Seq2SeqExample { input_ids, labels },
                        source_truncated,
                        target_truncated,
                    }])
                }
                _ => Err(TokenizeError::UnsupportedRecord {
                    index,
                    message: "prompt and completion mix text and messages".into(),
                }),
            },
            other => Err(TokenizeError::UnsupportedRecord {
                index,
                message: format!(
                    "encoder-decoder SFT takes conversations (`messages`) or prompt-completion \
                     rows, not {}: it needs a source and a target",
                    other.kind().as_str()
                ),
            }),
        }
    }

    /// The examples of one record (`index` is used in messages): one per assistant turn.
    pub fn encode(&self, index: usize, record: &Record) -> Result<Vec<Seq2SeqExample>> {
        Ok(self
            .encode_record(index, record)?
            .into_iter()
            .map(|e| e.example)
            .collect())
    }

    /// Encodes many records in parallel; the examples come in record order, turn order
    /// within a record. Any record that cannot be encoded is an error naming it; an empty
    /// dataset is an error.
    pub fn encode_all(&self, records: &[Record]) -> Result<(Vec<Seq2SeqExample>, Seq2SeqReport)> {
        let encoded: Vec<Result<Vec<Encoded>>> = records
            .par_iter()
            .enumerate()
            .map(|(i, r)| self.encode_record(i, r))
            .collect();
        let mut report = Seq2SeqReport {
            input: records.len(),
            ..Default::default()
        };
        let mut out = Vec::new();
        for r in encoded {
            for e in r? {
                report.source_truncated += usize::from(e.source_truncated);
                report.target_truncated += usize::from(e.target_truncated);
                report.source_tokens += e.example.input_ids.len();
                report.target_tokens += e.example.labels.len();
                out.push(e.example);
            }
        }
        report.examples = out.len();
        if out.is_empty() {
            return Err(TokenizeError::Invalid(
                "the dataset holds no record to encode".into(),
            ));
        }
        Ok((out, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_right_is_transformers() {
        // _shift_right: shifted[..., 1:] = labels[..., :-1]; shifted[..., 0] = start;
        // masked_fill(shifted == -100, pad).
        assert_eq!(
            shift_right(&[5, 6, 1, -100, -100], 0, 9),
            vec![0, 5, 6, 1, 9]
        );
        assert_eq!(shift_right(&[7], 3, 0), vec![3]);
        assert!(shift_right(&[], 3, 0).is_empty());
    }

    #[test]
    fn collate_pads_and_shifts() {
        let a = Seq2SeqExample {
            input_ids: vec![10, 11, 12],
            labels: vec![20, 1],
        };
        let b = Seq2SeqExample {
            input_ids: vec![13],
            labels: vec![21, 22, 23, 1],
        };
        let batch = collate_seq2seq(&[&a, &b], 0, 0).unwrap();
        assert_eq!((batch.batch, batch.src_len, batch.tgt_len), (2, 3, 4));
        assert_eq!(batch.input_ids, vec![10, 11, 12, 13, 0, 0]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.labels, vec![20, 1, -100, -100, 21, 22, 23, 1]);
        assert_eq!(batch.decoder_input_ids, vec![0, 20, 1, 0, 0, 21, 22, 23]);
        let empty = Seq2SeqExample {
            input_ids: vec![],
            labels: vec![1],
        };
        assert!(matches!(
            collate_seq2seq(&[&a, &empty], 0, 0),
            Err(TokenizeError::BatchRow { row: 1, .. })
        ));
        assert!(collate_seq2seq(&[], 0, 0).is_err());
    }

    #[test]
    fn batches_group_by_length() {
        let ex = |n: usize| Seq2SeqExample {
            input_ids: vec![5; n],
            labels: vec![1],
        };
        let examples = [ex(1), ex(9), ex(2), ex(8)];
        let b = seq2seq_batches(&examples, 2, 0, 0).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].src_len, b[1].src_len), (9, 2));
    }
}
