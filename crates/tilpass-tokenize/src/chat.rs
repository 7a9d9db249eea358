//! Tokenizing conversations through a chat template, with assistant-token masks.

use serde::{Deserialize, Serialize};
use tilpass_data::{Message, Role};

use crate::chat_template::{ChatTemplate, RenderOptions, RenderedChat};
use crate::error::{Result, TokenizeError};
use crate::tokenizer::Tokenizer;

/// How assistant tokens are found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// `{% generation %}` blocks when the template has them, else [`MaskMode::Prefix`].
    #[default]
    Auto,
    /// Only `{% generation %}` blocks (transformers' `return_assistant_tokens_mask=True`).
    GenerationBlocks,
    /// Render growing prefixes of the conversation: each assistant turn's tokens are those
    /// after the rendering of the turns before it (with the generation prompt) and before
    /// the point where the rendering of the conversation up to that turn stops agreeing with
    /// the whole rendering.
    Prefix,
}

/// A tokenized conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatEncoding {
    /// The rendered text.
    pub text: String,
    /// Token ids of `text` (tokenized with `add_special_tokens = false`, as transformers does).
    pub ids: Vec<u32>,
    /// 1 for tokens of assistant turns, else 0 (same length as `ids`).
    pub assistant_mask: Vec<u8>,
}

/// Applies HF's span-to-token rule (`char_to_token` on the span's first and last character)
/// to produce an assistant mask from the spans of generation blocks.
pub fn mask_from_spans(
    encoding: &tokenizers::Encoding,
    spans: &[std::ops::Range<usize>],
) -> Vec<u8> {
    let n = encoding.get_ids().len();
    let mut mask = vec![0u8; n];
    for span in spans {
        let Some(start_token) = encoding.char_to_token(span.start, 0) else {
            // transformers stops at the first span it cannot place (e.g. after truncation).
            break;
        };
        let end_token = if span.end == 0 {
            None
        } else {
            encoding.char_to_token(span.end - 1, 0)
        };
        // transformers: `range(start, end + 1 if end_token else len(ids))` (0 counts as false).
        let stop = match end_token {
            Some(e) if e != 0 => e + 1,
            _ => n,
        };
        for m in mask.iter_mut().take(stop).skip(start_token) {
            *m = 1;
        }
    }
    mask
}

/// Marks tokens whose first byte lies in one of the byte ranges.
fn mask_from_byte_ranges(
    encoding: &tokenizers::Encoding,
    ranges: &[std::ops::Range<usize>],
) -> Vec<u8> {
    encoding
        .get_offsets()
        .iter()
        .map(|(s, e)| u8::from(s < e && ranges.iter().any(|r| r.contains(s))))
        .collect()
}

/// Length in bytes of the longest common prefix of two strings (on a character boundary).
pub fn common_prefix_len(a: &str, b: &str) -> usize {
    let mut n = 0;
    for ((i, ca), cb) in a.char_indices().zip(b.chars()) {
        if ca != cb {
            return i;
        }
        n = i + ca.len_utf8();
    }
    n
}

/// Number of leading tokens two id sequences share (TRL's `common_prefix_length`).
pub fn common_prefix_length(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Byte spans of assistant turns found by rendering prefixes (see [`MaskMode::Prefix`]).
pub fn prefix_spans(
    template: &ChatTemplate,
    messages: &[Message],
    full: &RenderedChat,
    opts: &RenderOptions,
) -> Result<Vec<std::ops::Range<usize>>> {
    let mut spans = vec![];
    for (i, m) in messages.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let before = template.render(
            &messages[..i],
            &RenderOptions {
                add_generation_prompt: true,
                continue_final_message: false,
                ..opts.clone()
            },
        )?;
        let start = common_prefix_len(&before.text, &full.text);
        if start < before.text.len() {
            return Err(TokenizeError::Template {
                name: template.name().to_string(),
                message: format!(
                    "cannot find assistant turn {i}: the rendering of the turns before it is not a \
                     prefix of the whole conversation; add {{% generation %}} markers to the template"
                ),
            });
        }
        let end = if i + 1 == messages.len() {
            full.text.len()
        } else {
            let upto = template.render(
                &messages[..=i],
                &RenderOptions {
                    add_generation_prompt: false,
                    continue_final_message: false,
                    ..opts.clone()
                },
            )?;
            common_prefix_len(&upto.text, &full.text)
        };
        if end > start {
            spans.push(start..end);
        }
    }
    Ok(spans)
}

/// Renders and tokenizes a conversation, with its assistant mask.
pub fn encode_chat(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    opts: &RenderOptions,
    mode: MaskMode,
) -> Result<ChatEncoding> {
    let rendered = template.render(messages, opts)?;
    let encoding = tokenizer.encode_full(&rendered.text, false)?;
    let use_blocks = match mode {
        MaskMode::Auto => template.has_generation_blocks(),
        MaskMode::GenerationBlocks => {
            if !template.has_generation_blocks() {
                return Err(TokenizeError::Template {
                    name: template.name().to_string(),
                    message:
                        "the template has no {% generation %} blocks, so it cannot produce an \
                              assistant mask; use mask mode `prefix` or a template with markers"
                            .into(),
                });
            }
            true
        }
        MaskMode::Prefix => false,
    };
    let assistant_mask = if use_blocks {
        mask_from_spans(&encoding, &rendered.generation_spans)
    } else {
        let spans = prefix_spans(template, messages, &rendered, opts)?;
        mask_from_byte_ranges(&encoding, &spans)
    };
    Ok(ChatEncoding {
        text: rendered.text,
        ids: encoding.get_ids().to_vec(),
        assistant_mask,
    })
}
