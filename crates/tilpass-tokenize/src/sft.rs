//! Encoding supervised fine-tuning examples into `input_ids`, `labels` and `attention_mask`,
//! following TRL 1.16.0's `SFTTrainer._prepare_dataset` (checked against TRL itself:
//! tests/fixtures/generate_trl.py → tests/fixtures/tokenize/sft.json).
//!
//! Per example, as TRL:
//! - plain `text`: EOS appended as text unless the text already ends with it, tokenized with the
//!   tokenizer's special tokens (BOS where its post-processor adds one);
//! - plain prompt-completion: EOS appended to the *completion* unless it ends with it; the prompt
//!   and prompt + completion are tokenized separately with special tokens;
//! - conversations: the chat template rendered and tokenized without special tokens;
//!   `assistant_only_loss` takes the `{% generation %}` mask (transformers'
//!   `return_assistant_tokens_mask`); an example with no assistant token is an error for the
//!   whole dataset (TRL raises);
//! - prompt-completion conversations: the prompt rendered with the generation prompt; the
//!   completion starts where the tokenized prompt and prompt + completion *diverge* (TRL's
//!   `common_prefix_length`), not after `len(prompt_ids)`;
//! - labels: the token where every applicable mask is 1 (assistant mask always, completion mask
//!   with `completion_only_loss`), else -100; then truncation to `max_length` (skipped when
//!   packing), and, when `max_length` is set, examples left without a supervised label are
//!   dropped.
//!
//! Differences from TRL that remain, on purpose: `assistant_only_loss` defaults to on and
//! applies to conversational rows only (TRL: off, and an error on plain-text datasets); for a
//! template without `{% generation %}` markers [`MaskMode::Auto`] finds assistant turns by
//! rendering prefixes of the conversation, where TRL swaps in its own patched copy of the few
//! templates it knows (for Llama 3 the result is the same; for Qwen3 the patched template also
//! renders empty think blocks in earlier assistant turns, so multi-turn ids differ: pass TRL's
//! `qwen3_training.jinja` as the chat template to get TRL's ids) and refuses any other;
//! [`Truncation::Drop`] and [`Truncation::Error`] are extra policies.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tilpass_data::{Content, Message, Record};

use crate::chat::{MaskMode, common_prefix_length, encode_chat};
use crate::chat_template::{ChatTemplate, RenderOptions};
use crate::error::{Result, TokenizeError};
use crate::tokenizer::Tokenizer;

/// Label value that the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// What to do with an example longer than `max_length`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Keep the first `max_length` tokens (TRL's `keep_start`, its default).
    #[default]
    KeepStart,
    /// Keep the last `max_length` tokens (TRL's `keep_end`).
    KeepEnd,
    /// Drop the example (counted in the report).
    Drop,
    /// Fail with [`TokenizeError::TooLong`].
    Error,
}

/// Options for SFT encoding. Defaults follow TRL's `SFTConfig` except `assistant_only_loss`,
/// which is on: chat fine-tuning should learn the assistant's turns, not the user's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SftConfig {
    /// Maximum tokens per example (`None` for no limit). TRL default: 1024.
    pub max_length: Option<usize>,
    /// Policy for longer examples.
    pub truncation: Truncation,
    /// Loss only on the completion of prompt-completion rows. `None`: on for prompt-completion
    /// data (TRL's default).
    pub completion_only_loss: Option<bool>,
    /// Loss only on assistant tokens of conversations.
    pub assistant_only_loss: bool,
    /// Append EOS to plain `text` and `completion` strings that do not end with it.
    pub add_eos: bool,
    /// Chat template name (`None`: the tokenizer's default; built-ins `chatml`, `norsk`).
    pub chat_template: Option<String>,
    /// How assistant tokens are found.
    pub mask_mode: MaskMode,
    /// The examples will be packed (TRL's `packing`): no truncation and no filtering here;
    /// [`crate::pack_bfd`] cuts each example to `max_length` (keeping its start) instead.
    pub packing: bool,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            max_length: Some(1024),
            truncation: Truncation::KeepStart,
            completion_only_loss: None,
            assistant_only_loss: true,
            add_eos: true,
            chat_template: None,
            mask_mode: MaskMode::Auto,
            packing: false,
        }
    }
}

/// One encoded example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftExample {
    /// Token ids, `[seq]`.
    pub input_ids: Vec<u32>,
    /// `input_ids` where supervised, else [`IGNORE_INDEX`], `[seq]` (unshifted, as in HF).
    pub labels: Vec<i64>,
    /// 1 for real tokens, `[seq]`.
    pub attention_mask: Vec<u8>,
}

impl SftExample {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Number of supervised labels.
    pub fn supervised(&self) -> usize {
        self.labels.iter().filter(|l| **l != IGNORE_INDEX).count()
    }
}

/// What [`SftEncoder::encode_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EncodeReport {
    /// Records given.
    pub input: usize,
    /// Examples produced.
    pub kept: usize,
    /// Examples truncated.
    pub truncated: usize,
    /// Examples dropped for length ([`Truncation::Drop`]).
    pub dropped_too_long: usize,
    /// Examples dropped because truncation left no supervised token (TRL drops every example
    /// without a supervised label once `max_length` is set and packing is off).
    pub dropped_unsupervised: usize,
    /// Total tokens kept.
    pub tokens: usize,
    /// Total supervised tokens kept.
    pub supervised_tokens: usize,
}

/// Encodes records for SFT with one tokenizer and template.
pub struct SftEncoder<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<ChatTemplate>,
    config: SftConfig,
}

enum Outcome {
    Kept(SftExample, bool),
    TooLong,
    Unsupervised(String),
}

impl<'a> SftEncoder<'a> {
    /// Prepares an encoder. The chat template is compiled when the tokenizer has one (or one is
    /// named); conversations then need it.
    pub fn new(tokenizer: &'a Tokenizer, config: SftConfig) -> Result<Self> {
        let template = match tokenizer.chat_template(config.chat_template.as_deref()) {
            Ok(t) => Some(t),
            Err(TokenizeError::NoChatTemplate { .. }) => None,
            Err(e) => return Err(e),
        };
        if let (Some(max), Truncation::KeepStart | Truncation::KeepEnd) =
            (config.max_length, config.truncation)
            && max == 0
        {
            return Err(TokenizeError::Invalid(
                "max_length must be at least 1".into(),
            ));
        }
        Ok(Self {
            tokenizer,
            template,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SftConfig {
        &self.config
    }

    fn template(&self, index: usize) -> Result<&ChatTemplate> {
        self.template
            .as_ref()
            .ok_or_else(|| TokenizeError::NoChatTemplate {
                context: format!("example {index}: {}", self.tokenizer.source()),
            })
    }

    /// `text` with EOS appended unless it already ends with it (TRL's `add_eos`).
    fn with_eos(&self, text: &str) -> String {
        match (&self.tokenizer.special_tokens().eos, self.config.add_eos) {
            (Some(eos), true) if !text.ends_with(eos.as_str()) => format!("{text}{eos}"),
            _ => text.to_string(),
        }
    }

    /// The assistant mask of a conversation, or TRL's error when it marks no token.
    fn assistant_mask(&self, index: usize, messages: &[Message], mask: Vec<u8>) -> Result<Vec<u8>> {
        if mask.contains(&1) {
            return Ok(mask);
        }
        let reason = if messages
            .iter()
            .any(|m| m.role == tilpass_data::Role::Assistant)
        {
            "the template marks no assistant token (TRL refuses such a dataset under \
             assistant_only_loss)"
        } else {
            "the conversation has no assistant turn (TRL refuses such a dataset under \
             assistant_only_loss)"
        };
        Err(TokenizeError::NoSupervisedTokens {
            index,
            reason: reason.into(),
        })
    }

    /// Token ids and the mask of supervised positions, before truncation.
    fn ids_and_mask(&self, index: usize, record: &Record) -> Result<(Vec<u32>, Vec<u8>)> {
        let tok = self.tokenizer;
        match record {
            Record::Text { text } => {
                let ids = tok.encode(&self.with_eos(text), true)?;
                let n = ids.len();
                Ok((ids, vec![1; n]))
            }
            Record::Conversation { messages } => {
                let t = self.template(index)?;
                let enc = encode_chat(
                    tok,
                    t,
                    messages,
                    &RenderOptions::default(),
                    self.config.mask_mode,
                )?;
                let mask = if self.config.assistant_only_loss {
                    self.assistant_mask(index, messages, enc.assistant_mask)?
                } else {
                    vec![1; enc.ids.len()]
                };
                Ok((enc.ids, mask))
            }
            Record::PromptCompletion { prompt, completion } => {
                let completion_only = self.config.completion_only_loss.unwrap_or(true);
                let (prompt_ids, ids, assistant) = match (prompt, completion) {
                    (Content::Messages(p), Content::Messages(c)) => {
                        let t = self.template(index)?;
                        let prompt_text = t.render(
                            p,
                            &RenderOptions {
                                add_generation_prompt: true,
                                ..Default::default()
                            },
                        )?;
                        let prompt_ids = tok.encode(&prompt_text.text, false)?;
                        let all: Vec<Message> = p.iter().chain(c.iter()).cloned().collect();
                        let enc = encode_chat(
                            tok,
                            t,
                            &all,
                            &RenderOptions::default(),
                            self.config.mask_mode,
                        )?;
                        let assistant = if self.config.assistant_only_loss {
                            Some(self.assistant_mask(index, &all, enc.assistant_mask)?)
                        } else {
                            None
                        };
                        (prompt_ids, enc.ids, assistant)
                    }
                    (Content::Text(p), Content::Text(c)) => {
                        // TRL appends EOS to the completion (not to prompt + completion).
                        let prompt_ids = tok.encode(p, true)?;
                        let ids = tok.encode(&format!("{p}{}", self.with_eos(c)), true)?;
                        (prompt_ids, ids, None)
                    }
                    _ => {
                        return Err(TokenizeError::UnsupportedRecord {
                            index,
                            message: "prompt and completion mix text and messages".into(),
                        });
                    }
                };
                // TRL 1.16: the completion starts where the two tokenizations diverge (tilpass
                // used to start it at len(prompt_ids), which supervised a merged boundary token
                // wrongly or not at all).
                let prompt_len = common_prefix_length(&prompt_ids, &ids);
                if prompt_len < prompt_ids.len() {
                    tracing::warn!(
                        example = index,
                        "the tokenized prompt is not a prefix of the tokenized prompt+completion; \
                         the completion starts where they diverge (as in TRL)"
                    );
                }
                let n = ids.len();
                let mut mask: Vec<u8> = if completion_only {
                    (0..n).map(|i| u8::from(i >= prompt_len)).collect()
                } else {
                    vec![1; n]
                };
                if let Some(a) = assistant {
                    for (m, a) in mask.iter_mut().zip(a) {
                        *m &= a;
                    }
                }
                Ok((ids, mask))
            }
            other => Err(TokenizeError::UnsupportedRecord {
                index,
                message: format!(
                    "SFT takes language-modelling or prompt-completion rows, not {}",
                    other.kind().as_str()
                ),
            }),
        }
    }

    fn outcome(&self, index: usize, record: &Record) -> Result<Outcome> {
        let (mut ids, mut mask) = self.ids_and_mask(index, record)?;
        let mut truncated = false;
        let limit = self.config.max_length.filter(|_| !self.config.packing);
        if let Some(max) = limit
            && ids.len() > max
        {
            match self.config.truncation {
                Truncation::KeepStart => {
                    ids.truncate(max);
                    mask.truncate(max);
                }
                Truncation::KeepEnd => {
                    ids.drain(..ids.len() - max);
                    mask.drain(..mask.len() - max);
                }
                Truncation::Drop => return Ok(Outcome::TooLong),
                Truncation::Error => {
                    return Err(TokenizeError::TooLong {
                        index,
                        len: ids.len(),
                        max_length: max,
                    });
                }
            }
            truncated = true;
        }
        // TRL filters examples without a supervised label after its truncation step, which runs
        // whenever max_length is set and packing is off.
        if limit.is_some() && !mask.contains(&1) {
            let reason = if truncated {
                "the supervised part was cut off by truncation"
            } else {
                "no token is supervised"
            };
            return Ok(Outcome::Unsupervised(reason.to_string()));
        }
        let labels = ids
            .iter()
            .zip(&mask)
            .map(|(&id, &m)| if m == 1 { i64::from(id) } else { IGNORE_INDEX })
            .collect();
        let attention_mask = vec![1; ids.len()];
        Ok(Outcome::Kept(
            SftExample {
                input_ids: ids,
                labels,
                attention_mask,
            },
            truncated,
        ))
    }

    /// Encodes one record (`index` is used in messages). Fails when the example would be
    /// dropped (nothing supervised after truncation, or too long under [`Truncation::Drop`]),
    /// is too long under [`Truncation::Error`], or has no assistant token under
    /// `assistant_only_loss`.
    pub fn encode(&self, index: usize, record: &Record) -> Result<SftExample> {
        match self.outcome(index, record)? {
            Outcome::Kept(e, _) => Ok(e),
            Outcome::TooLong => Err(TokenizeError::TooLong {
                index,
                len: self.config.max_length.unwrap_or(0) + 1,
                max_length: self.config.max_length.unwrap_or(0),
            }),
            Outcome::Unsupervised(reason) => {
                Err(TokenizeError::NoSupervisedTokens { index, reason })
            }
        }
    }

    /// Encodes many records in parallel, as TRL prepares a dataset: examples left without a
    /// supervised token by truncation, or too long under [`Truncation::Drop`], are dropped and
    /// counted; an example without assistant tokens under `assistant_only_loss` is an error
    /// naming it (TRL refuses the dataset); a dataset left with no example at all is an error.
    pub fn encode_all(&self, records: &[Record]) -> Result<(Vec<SftExample>, EncodeReport)> {
        let outcomes: Vec<Result<Outcome>> = records
            .par_iter()
            .enumerate()
            .map(|(i, r)| self.outcome(i, r))
            .collect();
        let mut report = EncodeReport {
            input: records.len(),
            ..Default::default()
        };
        let mut out = Vec::with_capacity(records.len());
        let mut first_unsupervised = None;
        for (i, o) in outcomes.into_iter().enumerate() {
            match o? {
                Outcome::Kept(e, truncated) => {
                    report.truncated += usize::from(truncated);
                    report.tokens += e.len();
                    report.supervised_tokens += e.supervised();
                    out.push(e);
                }
                Outcome::TooLong => report.dropped_too_long += 1,
                Outcome::Unsupervised(reason) => {
                    report.dropped_unsupervised += 1;
                    first_unsupervised.get_or_insert((i, reason));
                }
            }
        }
        report.kept = out.len();
        if out.is_empty() {
            let (index, reason) =
                first_unsupervised.unwrap_or((0, "every example was dropped for length".into()));
            return Err(TokenizeError::NoSupervisedTokens {
                index,
                reason: format!(
                    "no example in the dataset has a supervised token; first: {reason}"
                ),
            });
        }
        Ok((out, report))
    }
}
