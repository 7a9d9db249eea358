//! Encoding preference triples (prompt, chosen, rejected) as TRL 1.16.0's `DPOTrainer` prepares
//! them (`_prepare_dataset`) and batches them (`DataCollatorForPreference`); checked against
//! TRL itself (tests/fixtures/generate_trl.py → tests/fixtures/tokenize/preference.json).
//!
//! Per row, as TRL:
//! 1. an implicit prompt is extracted from `chosen` / `rejected` (TRL's `extract_prompt`, see
//!    [`Record::with_explicit_prompt`]);
//! 2. plain text: EOS is appended to `chosen` and `rejected` as text unless present;
//! 3. the prompt, prompt + chosen and prompt + rejected are tokenized *each as a whole*: plain
//!    text with the tokenizer's special tokens (so BOS once, at the start), conversations through
//!    the chat template (the prompt with the generation prompt) without special tokens;
//! 4. the prompt is the part of the prompt's tokens that *both* joint tokenizations share
//!    (`common_prefix_length`); each completion is the rest of its joint tokenization;
//! 5. with `max_length` and `keep_start`, rows whose prompt alone fills `max_length` are
//!    dropped;
//! 6. the collator truncates each joint sequence (prompt + completion) to `max_length`
//!    (`keep_start` / `keep_end`) and right-pads `[all chosen; all rejected]`.
//!
//! TRL 1.16 differs from what tilpass did before (and from older TRL): there is no
//! `max_prompt_length` / `max_completion_length`, no separate tokenization of the completion
//! strings with EOS pushed as an id, no BOS/EOS added around the prompt for encoder-decoders,
//! and the text-level chat template application ([`preference_texts`]) is no longer what the
//! ids come from.

use serde::{Deserialize, Serialize};
use tilpass_data::{Content, Message, Record, Role};

use crate::batch::{Batch, BatchRow, Padding};
use crate::chat::{common_prefix_len, common_prefix_length};
use crate::chat_template::{ChatTemplate, RenderOptions};
use crate::error::{Result, TokenizeError};
use crate::sft::{IGNORE_INDEX, Truncation};
use crate::tokenizer::Tokenizer;

/// Options for preference encoding (TRL `DPOConfig` names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreferenceConfig {
    /// Maximum tokens of prompt + completion per sequence (`None`: no limit). TRL default 1024.
    pub max_length: Option<usize>,
    /// Which end of a longer sequence to keep: [`Truncation::KeepStart`] (TRL default) or
    /// [`Truncation::KeepEnd`].
    pub truncation: Truncation,
    /// Pad batches to a multiple of this many columns.
    pub pad_to_multiple_of: Option<usize>,
    /// Chat template name for conversational rows.
    pub chat_template: Option<String>,
}

impl Default for PreferenceConfig {
    fn default() -> Self {
        Self {
            max_length: Some(1024),
            truncation: Truncation::KeepStart,
            pad_to_multiple_of: None,
            chat_template: None,
        }
    }
}

impl PreferenceConfig {
    fn check(&self) -> Result<()> {
        if !matches!(self.truncation, Truncation::KeepStart | Truncation::KeepEnd) {
            return Err(TokenizeError::Invalid(format!(
                "preference truncation must be keep_start or keep_end, not {:?}",
                self.truncation
            )));
        }
        if self.max_length == Some(0) {
            return Err(TokenizeError::Invalid(
                "max_length must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// An encoded preference pair (TRL's `prompt_ids`, `chosen_ids`, `rejected_ids` columns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceExample {
    /// Prompt ids, `[prompt_len]`.
    pub prompt_ids: Vec<u32>,
    /// Chosen completion ids, `[chosen_len]` (ending in EOS for plain text, in the template's
    /// end of turn for conversations).
    pub chosen_ids: Vec<u32>,
    /// Rejected completion ids, `[rejected_len]`.
    pub rejected_ids: Vec<u32>,
}

/// What [`encode_preferences`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PreferenceReport {
    /// Rows given.
    pub input: usize,
    /// Rows kept.
    pub kept: usize,
    /// Rows dropped because the prompt alone fills `max_length` (with `keep_start`).
    pub dropped_prompt_too_long: usize,
}

/// A preference batch: `[all chosen; all rejected]`, right-padded, row-major host arrays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreferenceBatch {
    /// Rows: twice the number of pairs (chosen rows first).
    pub batch_size: usize,
    /// Columns (the longest sequence, rounded up to `pad_to_multiple_of`).
    pub seq_len: usize,
    /// Prompt + completion ids, `[batch, seq]`, padding = the pad id.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, `[batch, seq]`.
    pub attention_mask: Vec<u8>,
    /// 1 for completion tokens, `[batch, seq]`.
    pub completion_mask: Vec<u8>,
}

/// The prompt, chosen and rejected of a row with an explicit prompt (extracted when implicit).
fn explicit(record: &Record, index: usize) -> Result<(Content, Content, Content)> {
    match record.clone().with_explicit_prompt() {
        Record::Preference {
            prompt: Some(p),
            chosen,
            rejected,
        } => Ok((p, chosen, rejected)),
        _ => Err(TokenizeError::UnsupportedRecord {
            index,
            message: format!(
                "expected a preference row, found {}",
                record.kind().as_str()
            ),
        }),
    }
}

fn mixed(index: usize) -> TokenizeError {
    TokenizeError::UnsupportedRecord {
        index,
        message: "prompt, chosen and rejected mix text and messages".into(),
    }
}

/// The prompt, chosen and rejected strings after TRL's `maybe_extract_prompt` and
/// `maybe_apply_chat_template` (what TRL's prompt-based trainers and callbacks render; DPO in
/// TRL 1.16 tokenizes the conversations directly, see [`encode_preference`]). Conversations:
/// the prompt is rendered with the generation prompt (or, when it ends with an assistant
/// message, continuing that message), then cut to its common prefix (in characters) with the
/// renderings of prompt + chosen and prompt + rejected; each completion is its rendering after
/// that prompt. Plain text is returned as is.
pub fn preference_texts(
    tokenizer: &Tokenizer,
    record: &Record,
    chat_template: Option<&str>,
    index: usize,
) -> Result<(String, String, String)> {
    match explicit(record, index)? {
        (Content::Text(p), Content::Text(c), Content::Text(r)) => Ok((p, c, r)),
        (Content::Messages(p), Content::Messages(c), Content::Messages(r)) => {
            let t = tokenizer.chat_template(chat_template)?;
            let opts = match p.last().map(|m| &m.role) {
                Some(Role::User | Role::Tool) => RenderOptions {
                    add_generation_prompt: true,
                    ..Default::default()
                },
                Some(Role::Assistant) => RenderOptions {
                    continue_final_message: true,
                    ..Default::default()
                },
                other => {
                    return Err(TokenizeError::UnsupportedRecord {
                        index,
                        message: format!(
                            "the prompt must end with a user, tool or assistant message, not {other:?}"
                        ),
                    });
                }
            };
            let mut prompt = t.render(&p, &opts)?.text;
            let render_with = |c: &[Message]| -> Result<String> {
                let all: Vec<Message> = p.iter().chain(c).cloned().collect();
                Ok(t.render(&all, &RenderOptions::default())?.text)
            };
            // TRL keeps the common prefix of the prompt and each rendering as the prompt
            // (templates such as DeepSeek-R1's add tokens with the generation prompt) and cuts
            // both completions after the final prompt.
            let prompt_chosen = render_with(&c)?;
            prompt.truncate(common_prefix_len(&prompt, &prompt_chosen));
            let prompt_rejected = render_with(&r)?;
            prompt.truncate(common_prefix_len(&prompt, &prompt_rejected));
            let chosen = prompt_chosen[prompt.len()..].to_string();
            let rejected = prompt_rejected[prompt.len()..].to_string();
            Ok((prompt, chosen, rejected))
        }
        _ => Err(mixed(index)),
    }
}

/// Ids of a rendered conversation (transformers tokenizes templates without special tokens).
fn chat_ids(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<Vec<u32>> {
    let text = template
        .render(
            messages,
            &RenderOptions {
                add_generation_prompt,
                ..Default::default()
            },
        )?
        .text;
    tokenizer.encode(&text, false)
}

/// Encodes one preference row as TRL 1.16.0's `DPOTrainer` does (steps 1–4 of the module
/// documentation); no truncation here (the collator truncates).
pub fn encode_preference(
    tokenizer: &Tokenizer,
    record: &Record,
    config: &PreferenceConfig,
    index: usize,
) -> Result<PreferenceExample> {
    let (prompt_ids, chosen_full, rejected_full) = match explicit(record, index)? {
        (Content::Text(p), Content::Text(c), Content::Text(r)) => {
            let eos = tokenizer.special_tokens().eos.clone().ok_or_else(|| {
                TokenizeError::Invalid(format!(
                    "{}: preference encoding of plain text needs an EOS token",
                    tokenizer.source()
                ))
            })?;
            let with_eos = |s: String| {
                if s.ends_with(eos.as_str()) {
                    s
                } else {
                    s + &eos
                }
            };
            let (c, r) = (with_eos(c), with_eos(r));
            (
                tokenizer.encode(&p, true)?,
                tokenizer.encode(&format!("{p}{c}"), true)?,
                tokenizer.encode(&format!("{p}{r}"), true)?,
            )
        }
        (Content::Messages(p), Content::Messages(c), Content::Messages(r)) => {
            let t = tokenizer.chat_template(config.chat_template.as_deref())?;
            let joint = |c: &[Message]| -> Result<Vec<u32>> {
                let all: Vec<Message> = p.iter().chain(c).cloned().collect();
                chat_ids(tokenizer, &t, &all, false)
            };
            (chat_ids(tokenizer, &t, &p, true)?, joint(&c)?, joint(&r)?)
        }
        _ => return Err(mixed(index)),
    };
    let prompt_len = common_prefix_length(&prompt_ids, &chosen_full)
        .min(common_prefix_length(&prompt_ids, &rejected_full));
    if prompt_len < prompt_ids.len() {
        tracing::warn!(
            example = index,
            "the tokenized prompt is not a prefix of the tokenized prompt+completion; the \
             completion starts where they diverge (as in TRL)"
        );
    }
    Ok(PreferenceExample {
        prompt_ids: prompt_ids[..prompt_len].to_vec(),
        chosen_ids: chosen_full[prompt_len..].to_vec(),
        rejected_ids: rejected_full[prompt_len..].to_vec(),
    })
}

/// Encodes a preference dataset as TRL's `DPOTrainer._prepare_dataset`: every row through
/// [`encode_preference`], then, with `max_length` and `keep_start`, rows whose prompt alone
/// fills `max_length` dropped (they would keep no completion token).
pub fn encode_preferences(
    tokenizer: &Tokenizer,
    records: &[Record],
    config: &PreferenceConfig,
) -> Result<(Vec<PreferenceExample>, PreferenceReport)> {
    config.check()?;
    let mut report = PreferenceReport {
        input: records.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let e = encode_preference(tokenizer, r, config, i)?;
        if let (Some(max), Truncation::KeepStart) = (config.max_length, config.truncation)
            && e.prompt_ids.len() >= max
        {
            report.dropped_prompt_too_long += 1;
            continue;
        }
        out.push(e);
    }
    report.kept = out.len();
    Ok((out, report))
}

/// Batches pairs as TRL's `DataCollatorForPreference`: rows `prompt + chosen` for every pair,
/// then `prompt + rejected` for every pair, each truncated to `config.max_length`
/// (`keep_start`: its first tokens; `keep_end`: its last), right-padded with `pad_id` to the
/// longest row (rounded up to `config.pad_to_multiple_of`) by [`Batch::pad`].
/// `[pairs] → [2·pairs, seq]`.
pub fn collate_preference(
    examples: &[PreferenceExample],
    pad_id: u32,
    config: &PreferenceConfig,
) -> Result<PreferenceBatch> {
    config.check()?;
    let mut rows: Vec<(Vec<u32>, Vec<u8>)> = Vec::with_capacity(2 * examples.len());
    for side in [0, 1] {
        for e in examples {
            let completion = if side == 0 {
                &e.chosen_ids
            } else {
                &e.rejected_ids
            };
            let mut ids = e.prompt_ids.clone();
            ids.extend_from_slice(completion);
            let mut mask = vec![0u8; e.prompt_ids.len()];
            mask.resize(ids.len(), 1);
            if let Some(max) = config.max_length
                && ids.len() > max
            {
                if config.truncation == Truncation::KeepEnd {
                    ids.drain(..ids.len() - max);
                    mask.drain(..mask.len() - max);
                } else {
                    ids.truncate(max);
                    mask.truncate(max);
                }
            }
            rows.push((ids, mask));
        }
    }
    // The completion tokens are the targets: labels = ids there, -100 on the prompt, so the
    // padded batch's supervised columns are the completion mask.
    let labels: Vec<Vec<i64>> = rows
        .iter()
        .map(|(ids, mask)| {
            ids.iter()
                .zip(mask)
                .map(|(&t, &m)| if m == 1 { i64::from(t) } else { IGNORE_INDEX })
                .collect()
        })
        .collect();
    let batch = Batch::pad(
        rows.iter()
            .zip(&labels)
            .map(|((ids, _), l)| BatchRow::new(ids).with_labels(l)),
        Padding::right(pad_id).with_multiple_of(config.pad_to_multiple_of),
    )?;
    Ok(PreferenceBatch {
        batch_size: batch.batch_size,
        seq_len: batch.seq_len,
        completion_mask: batch
            .labels
            .iter()
            .map(|&l| u8::from(l != IGNORE_INDEX))
            .collect(),
        input_ids: batch.input_ids,
        attention_mask: batch.attention_mask,
    })
}
