//! Encoding preference triples (prompt, chosen, rejected) with a shared prompt, as TRL's
//! `DPOTrainer.tokenize_row` does after `maybe_apply_chat_template`.

use serde::{Deserialize, Serialize};
use tilpass_data::{Content, Message, Record};

use crate::chat::common_prefix_len;
use crate::chat_template::RenderOptions;
use crate::error::{Result, TokenizeError};
use crate::tokenizer::Tokenizer;

/// Options for preference encoding (TRL `DPOConfig` names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreferenceConfig {
    /// Keep at most this many prompt tokens (from the end).
    pub max_prompt_length: Option<usize>,
    /// Keep at most this many tokens of each completion (from the start).
    pub max_completion_length: Option<usize>,
    /// Add BOS before and EOS after the prompt (encoder-decoder models).
    pub add_special_tokens: bool,
    /// Chat template name for conversational rows.
    pub chat_template: Option<String>,
}

/// An encoded preference pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceExample {
    /// Prompt ids, `[prompt_len]`.
    pub prompt_ids: Vec<u32>,
    /// Chosen completion ids, ending in EOS, `[chosen_len]`.
    pub chosen_ids: Vec<u32>,
    /// Rejected completion ids, ending in EOS, `[rejected_len]`.
    pub rejected_ids: Vec<u32>,
}

/// The prompt, chosen and rejected strings after applying the chat template, as TRL's
/// `maybe_apply_chat_template`: the prompt is rendered with the generation prompt and cut to
/// its common prefix with the renderings of prompt + chosen and prompt + rejected; each
/// completion is the rest of its rendering. Implicit prompts are extracted first.
pub fn preference_texts(
    tokenizer: &Tokenizer,
    record: &Record,
    chat_template: Option<&str>,
    index: usize,
) -> Result<(String, String, String)> {
    let Record::Preference {
        prompt,
        chosen,
        rejected,
    } = record.clone().with_explicit_prompt()
    else {
        return Err(TokenizeError::UnsupportedRecord {
            index,
            message: format!(
                "expected a preference row, found {}",
                record.kind().as_str()
            ),
        });
    };
    let prompt = prompt.unwrap_or(Content::Text(String::new()));
    match (prompt, chosen, rejected) {
        (Content::Text(p), Content::Text(c), Content::Text(r)) => Ok((p, c, r)),
        (Content::Messages(p), Content::Messages(c), Content::Messages(r)) => {
            let t = tokenizer.chat_template(chat_template)?;
            let prompt_text = t
                .render(
                    &p,
                    &RenderOptions {
                        add_generation_prompt: true,
                        ..Default::default()
                    },
                )?
                .text;
            // TRL keeps the common prefix of the prompt and each rendering as the prompt (templates
            // such as DeepSeek-R1's add tokens with the generation prompt), then cuts it off.
            let render_with = |c: &[Message]| -> Result<String> {
                let all: Vec<Message> = p.iter().chain(c).cloned().collect();
                Ok(t.render(&all, &RenderOptions::default())?.text)
            };
            let prompt_chosen = render_with(&c)?;
            let mut prompt = prompt_text;
            prompt.truncate(common_prefix_len(&prompt, &prompt_chosen));
            let chosen = prompt_chosen[prompt.len()..].to_string();
            let prompt_rejected = render_with(&r)?;
            prompt.truncate(common_prefix_len(&prompt, &prompt_rejected));
            let rejected = prompt_rejected[prompt.len()..].to_string();
            Ok((prompt, chosen, rejected))
        }
        _ => Err(TokenizeError::UnsupportedRecord {
            index,
            message: "prompt, chosen and rejected mix text and messages".into(),
        }),
    }
}

/// Encodes one preference row.
pub fn encode_preference(
    tokenizer: &Tokenizer,
    record: &Record,
    config: &PreferenceConfig,
    index: usize,
) -> Result<PreferenceExample> {
    let (p, c, r) = preference_texts(tokenizer, record, config.chat_template.as_deref(), index)?;
    let mut prompt_ids = tokenizer.encode(&p, false)?;
    let mut chosen_ids = tokenizer.encode(&c, false)?;
    let mut rejected_ids = tokenizer.encode(&r, false)?;
    let eos = tokenizer.eos_id().ok_or_else(|| {
        TokenizeError::Invalid(format!(
            "{}: preference encoding needs an EOS token",
            tokenizer.source()
        ))
    })?;
    if config.add_special_tokens {
        if let Some(bos) = tokenizer.bos_id() {
            prompt_ids.insert(0, bos);
        }
        prompt_ids.push(eos);
    }
    chosen_ids.push(eos);
    rejected_ids.push(eos);
    if let Some(m) = config.max_prompt_length
        && prompt_ids.len() > m
    {
        prompt_ids.drain(..prompt_ids.len() - m);
    }
    if let Some(m) = config.max_completion_length {
        chosen_ids.truncate(m);
        rejected_ids.truncate(m);
    }
    Ok(PreferenceExample {
        prompt_ids,
        chosen_ids,
        rejected_ids,
    })
}
