//! Dataset records in TRL's formats, plus Alpaca.
//!
//! | kind | keys |
//! | --- | --- |
//! | language modelling | `text`, or `messages` (conversational) |
//! | prompt-only | `prompt` |
//! | prompt-completion | `prompt`, `completion` |
//! | preference | `prompt`, `chosen`, `rejected` (explicit) or `chosen`, `rejected` (implicit prompt) |
//! | unpaired preference | `prompt`, `completion`, `label` (bool) |
//! | Alpaca | `instruction`, `input` (optional), `output`: converted to `messages` |
//!
//! Values are either plain strings ("standard") or lists of `{"role", "content"}` messages
//! ("conversational"), as in TRL.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::RecordError;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The human side.
    User,
    /// The model's side (the supervised side in SFT).
    Assistant,
    /// Output of a tool call.
    Tool,
}

impl Role {
    /// The role as written in datasets and templates.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// One chat message. Fields other than `role` and `content` (e.g. `tool_calls`, `name`) are kept
/// in `extra` and passed to chat templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Any other fields of the message object.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message with no extra fields.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            extra: Map::new(),
        }
    }
}

/// A field value: a plain string or a list of messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Standard (plain text).
    Text(String),
    /// Conversational.
    Messages(Vec<Message>),
}

impl Content {
    /// True for a message list.
    pub fn is_conversational(&self) -> bool {
        matches!(self, Content::Messages(_))
    }

    /// Total characters (Unicode scalar values) of the text or of all message contents.
    pub fn chars(&self) -> usize {
        match self {
            Content::Text(t) => t.chars().count(),
            Content::Messages(m) => m.iter().map(|m| m.content.chars().count()).sum(),
        }
    }

    /// Number of messages (1 for plain text).
    pub fn turns(&self) -> usize {
        match self {
            Content::Text(_) => 1,
            Content::Messages(m) => m.len(),
        }
    }

    /// The plain text, or the message contents joined by newlines.
    pub fn joined_text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Messages(m) => m
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The kind of a record, i.e. which TRL dataset type it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// `text` or `messages`.
    LanguageModeling,
    /// `prompt` only.
    PromptOnly,
    /// `prompt` + `completion`.
    PromptCompletion,
    /// `chosen` + `rejected` (+ optional `prompt`).
    Preference,
    /// `prompt` + `completion` + `label`.
    UnpairedPreference,
    /// `instruction` + `input` + `output` (read as language modelling `messages`).
    Alpaca,
}

impl RecordKind {
    /// The name used in options and reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::LanguageModeling => "language_modeling",
            RecordKind::PromptOnly => "prompt_only",
            RecordKind::PromptCompletion => "prompt_completion",
            RecordKind::Preference => "preference",
            RecordKind::UnpairedPreference => "unpaired_preference",
            RecordKind::Alpaca => "alpaca",
        }
    }

    /// All kinds, for help texts.
    pub const ALL: [RecordKind; 6] = [
        RecordKind::LanguageModeling,
        RecordKind::PromptOnly,
        RecordKind::PromptCompletion,
        RecordKind::Preference,
        RecordKind::UnpairedPreference,
        RecordKind::Alpaca,
    ];

    /// Detects the kind from an object's keys.
    pub fn detect(obj: &Map<String, Value>) -> Option<Self> {
        let has = |k: &str| obj.contains_key(k);
        Some(if has("chosen") || has("rejected") {
            RecordKind::Preference
        } else if has("label") && has("completion") {
            RecordKind::UnpairedPreference
        } else if has("completion") {
            RecordKind::PromptCompletion
        } else if has("instruction") && has("output") {
            RecordKind::Alpaca
        } else if has("messages") || has("text") {
            RecordKind::LanguageModeling
        } else if has("prompt") {
            RecordKind::PromptOnly
        } else {
            return None;
        })
    }
}

impl std::str::FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown dataset format `{s}`; expected one of: {}",
                    RecordKind::ALL.map(|k| k.as_str()).join(", ")
                )
            })
    }
}

/// One dataset row.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Language modelling, standard: `{"text": ...}`.
    Text {
        /// The document.
        text: String,
    },
    /// Language modelling, conversational: `{"messages": [...]}` (also what Alpaca becomes).
    Conversation {
        /// The turns.
        messages: Vec<Message>,
    },
    /// Prompt-only: `{"prompt": ...}`.
    PromptOnly {
        /// The prompt.
        prompt: Content,
    },
    /// Prompt-completion: `{"prompt": ..., "completion": ...}`.
    PromptCompletion {
        /// The prompt.
        prompt: Content,
        /// The supervised continuation.
        completion: Content,
    },
    /// Preference: `{"prompt"?, "chosen", "rejected"}`.
    Preference {
        /// The shared prompt; `None` when implicit (then [`Record::with_explicit_prompt`]
        /// extracts it from the common prefix of `chosen` and `rejected`).
        prompt: Option<Content>,
        /// The preferred continuation.
        chosen: Content,
        /// The dispreferred continuation.
        rejected: Content,
    },
    /// Unpaired preference: `{"prompt", "completion", "label": bool}`.
    Unpaired {
        /// The prompt.
        prompt: Content,
        /// The continuation.
        completion: Content,
        /// True when the completion is desirable.
        label: bool,
    },
}

fn take_str(obj: &Map<String, Value>, key: &str) -> Result<String, RecordError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(RecordError::field(
            key,
            format!("expected a string, found {}", json_type(other)),
        )),
        None => Err(RecordError::field(key, "missing")),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a list of messages, naming the offending element and field on error.
pub fn parse_messages(v: &Value) -> Result<Vec<Message>, RecordError> {
    let arr = v.as_array().ok_or_else(|| {
        RecordError::record(format!(
            "expected a list of {{\"role\", \"content\"}} messages, found {}",
            json_type(v)
        ))
    })?;
    if arr.is_empty() {
        return Err(RecordError::record("empty list of messages"));
    }
    arr.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |e: RecordError| e.within(&format!("[{i}]"));
            let obj = m.as_object().ok_or_else(|| {
                at(RecordError::record(format!(
                    "expected a message object, found {}",
                    json_type(m)
                )))
            })?;
            let role_s = take_str(obj, "role").map_err(at)?;
            let role = Role::parse(&role_s).ok_or_else(|| {
                at(RecordError::field(
                    "role",
                    format!("unknown role `{role_s}`; expected system, user, assistant or tool"),
                ))
            })?;
            let content = match obj.get("content") {
                Some(Value::String(s)) => s.clone(),
                // Tool-calling assistant turns may carry no content.
                Some(Value::Null) | None if obj.contains_key("tool_calls") => String::new(),
                Some(other) => {
                    return Err(at(RecordError::field(
                        "content",
                        format!("expected a string, found {}", json_type(other)),
                    )));
                }
                None => return Err(at(RecordError::field("content", "missing"))),
            };
            let extra = obj
                .iter()
                .filter(|(k, _)| *k != "role" && *k != "content")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(Message {
                role,
                content,
                extra,
            })
        })
        .collect()
}

fn take_content(obj: &Map<String, Value>, key: &str) -> Result<Content, RecordError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(Content::Text(s.clone())),
        Some(v @ Value::Array(_)) => parse_messages(v)
            .map(Content::Messages)
            .map_err(|e| e.within(key)),
        Some(other) => Err(RecordError::field(
            key,
            format!(
                "expected a string or a list of messages, found {}",
                json_type(other)
            ),
        )),
        None => Err(RecordError::field(key, "missing")),
    }
}

impl Record {
    /// Parses a JSON object as a record of `kind` (or of the kind its keys suggest when `None`).
    pub fn from_json(value: &Value, kind: Option<RecordKind>) -> Result<Self, RecordError> {
        let obj = value.as_object().ok_or_else(|| {
            RecordError::record(format!(
                "expected a JSON object, found {}",
                json_type(value)
            ))
        })?;
        let kind = match kind {
            Some(k) => k,
            None => RecordKind::detect(obj).ok_or_else(|| {
                RecordError::record(format!(
                    "unrecognised record with keys [{}]; expected `text`, `messages`, `prompt`, \
                     `prompt`+`completion`, `chosen`+`rejected`, `prompt`+`completion`+`label` \
                     or `instruction`+`output`",
                    obj.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?,
        };
        Ok(match kind {
            RecordKind::LanguageModeling => match (obj.get("messages"), obj.get("text")) {
                (Some(m), _) => Record::Conversation {
                    messages: parse_messages(m).map_err(|e| e.within("messages"))?,
                },
                (None, Some(_)) => Record::Text {
                    text: take_str(obj, "text")?,
                },
                (None, None) => {
                    return Err(RecordError::field(
                        "messages",
                        "missing (a language-modelling record needs `messages` or `text`)",
                    ));
                }
            },
            RecordKind::PromptOnly => Record::PromptOnly {
                prompt: take_content(obj, "prompt")?,
            },
            RecordKind::PromptCompletion => {
                let prompt = take_content(obj, "prompt")?;
                let completion = take_content(obj, "completion")?;
                check_same_style(&prompt, &completion, "completion")?;
                Record::PromptCompletion { prompt, completion }
            }
            RecordKind::Preference => {
                let prompt = match obj.get("prompt") {
                    Some(_) => Some(take_content(obj, "prompt")?),
                    None => None,
                };
                let chosen = take_content(obj, "chosen")?;
                let rejected = take_content(obj, "rejected")?;
                check_same_style(&chosen, &rejected, "rejected")?;
                if let Some(p) = &prompt {
                    check_same_style(p, &chosen, "chosen")?;
                }
                Record::Preference {
                    prompt,
                    chosen,
                    rejected,
                }
            }
            RecordKind::UnpairedPreference => {
                let prompt = take_content(obj, "prompt")?;
                let completion = take_content(obj, "completion")?;
                check_same_style(&prompt, &completion, "completion")?;
                let label = match obj.get("label") {
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(RecordError::field(
                            "label",
                            format!("expected true or false, found {}", json_type(other)),
                        ));
                    }
                    None => return Err(RecordError::field("label", "missing")),
                };
                Record::Unpaired {
                    prompt,
                    completion,
                    label,
                }
            }
            RecordKind::Alpaca => {
                let instruction = take_str(obj, "instruction")?;
                let input = match obj.get("input") {
                    None | Some(Value::Null) => String::new(),
                    Some(_) => take_str(obj, "input")?,
                };
                let output = take_str(obj, "output")?;
                let mut messages = Vec::with_capacity(3);
                if let Some(Value::String(system)) = obj.get("system") {
                    messages.push(Message::new(Role::System, system.clone()));
                }
                let user = if input.trim().is_empty() {
                    instruction
                } else {
                    format!("{instruction}\n\n{input}")
                };
                messages.push(Message::new(Role::User, user));
                messages.push(Message::new(Role::Assistant, output));
                Record::Conversation { messages }
            }
        })
    }

    /// The TRL dataset type of this record.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Text { .. } | Record::Conversation { .. } => RecordKind::LanguageModeling,
            Record::PromptOnly { .. } => RecordKind::PromptOnly,
            Record::PromptCompletion { .. } => RecordKind::PromptCompletion,
            Record::Preference { .. } => RecordKind::Preference,
            Record::Unpaired { .. } => RecordKind::UnpairedPreference,
        }
    }

    /// True when the record holds message lists rather than plain strings.
    pub fn is_conversational(&self) -> bool {
        match self {
            Record::Text { .. } => false,
            Record::Conversation { .. } => true,
            Record::PromptOnly { prompt }
            | Record::PromptCompletion { prompt, .. }
            | Record::Unpaired { prompt, .. } => prompt.is_conversational(),
            Record::Preference { chosen, .. } => chosen.is_conversational(),
        }
    }

    /// The record as a TRL-format JSON object (Alpaca rows come out as `messages`).
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        let put = |o: &mut Map<String, Value>, k: &str, c: &Content| {
            o.insert(
                k.into(),
                serde_json::to_value(c).expect("content serialises"),
            );
        };
        match self {
            Record::Text { text } => {
                o.insert("text".into(), Value::String(text.clone()));
            }
            Record::Conversation { messages } => {
                o.insert(
                    "messages".into(),
                    serde_json::to_value(messages).expect("messages serialise"),
                );
            }
            Record::PromptOnly { prompt } => put(&mut o, "prompt", prompt),
            Record::PromptCompletion { prompt, completion } => {
                put(&mut o, "prompt", prompt);
                put(&mut o, "completion", completion);
            }
            Record::Preference {
                prompt,
                chosen,
                rejected,
            } => {
                if let Some(p) = prompt {
                    put(&mut o, "prompt", p);
                }
                put(&mut o, "chosen", chosen);
                put(&mut o, "rejected", rejected);
            }
            Record::Unpaired {
                prompt,
                completion,
                label,
            } => {
                put(&mut o, "prompt", prompt);
                put(&mut o, "completion", completion);
                o.insert("label".into(), Value::Bool(*label));
            }
        }
        Value::Object(o)
    }

    /// The fields of the record, in order, for statistics and filters.
    pub fn contents(&self) -> Vec<Content> {
        match self {
            Record::Text { text } => vec![Content::Text(text.clone())],
            Record::Conversation { messages } => vec![Content::Messages(messages.clone())],
            Record::PromptOnly { prompt } => vec![prompt.clone()],
            Record::PromptCompletion { prompt, completion }
            | Record::Unpaired {
                prompt, completion, ..
            } => vec![prompt.clone(), completion.clone()],
            Record::Preference {
                prompt,
                chosen,
                rejected,
            } => prompt
                .iter()
                .cloned()
                .chain([chosen.clone(), rejected.clone()])
                .collect(),
        }
    }

    /// Characters in all fields.
    pub fn chars(&self) -> usize {
        self.contents().iter().map(Content::chars).sum()
    }

    /// Makes an implicit preference prompt explicit, as TRL's `extract_prompt` does: the longest
    /// common prefix of `chosen` and `rejected` (whole messages for conversations; characters,
    /// less a trailing space, for text) becomes the prompt. Other records are returned unchanged.
    pub fn with_explicit_prompt(self) -> Self {
        match self {
            Record::Preference {
                prompt: None,
                chosen,
                rejected,
            } => {
                let (prompt, chosen, rejected) = extract_prompt(chosen, rejected);
                Record::Preference {
                    prompt: Some(prompt),
                    chosen,
                    rejected,
                }
            }
            other => other,
        }
    }
}

fn check_same_style(a: &Content, b: &Content, field: &str) -> Result<(), RecordError> {
    if a.is_conversational() != b.is_conversational() {
        return Err(RecordError::field(
            field,
            "mixes plain text and message lists; use strings for every field or messages for every field",
        ));
    }
    Ok(())
}

/// TRL 1.16.0's `extract_prompt` (`trl/data_utils.py`), quirks included:
///
/// ```python
/// for idx in range(min(len(chosen), len(rejected))):
///     if chosen[idx] != rejected[idx]:
///         if chosen[idx - 1] == " ":  # remove space before the prompt
///             idx -= 1
///         break
/// return chosen[:idx], chosen[idx:], rejected[idx:]
/// ```
///
/// Elements are messages or characters. When one side is a prefix of the other the loop ends
/// without `break` and `idx` is the *last* index, so the prompt stops one element short of the
/// shared part. A difference at the very first character with `chosen` ending in a space reads
/// `chosen[-1]` and cuts at -1 (Python's negative index). Both are followed here (tilpass used to
/// keep the whole shared part and never moved before 0). Python raises when a side is empty;
/// here the prompt is then empty.
fn extract_prompt(chosen: Content, rejected: Content) -> (Content, Content, Content) {
    /// The cut, as an index that may be -1 (Python's `x[:-1]`).
    fn cut(
        n_chosen: usize,
        n_rejected: usize,
        first_diff: Option<usize>,
        space_before: impl Fn(usize) -> bool,
    ) -> isize {
        let n = n_chosen.min(n_rejected);
        if n == 0 {
            return 0;
        }
        match first_diff {
            // `chosen[idx - 1]`, with Python's wrap-around at idx = 0.
            Some(idx) => {
                let before = if idx == 0 { n_chosen - 1 } else { idx - 1 };
                idx as isize - isize::from(space_before(before))
            }
            None => n as isize - 1,
        }
    }
    /// `x[:k]` and `x[k:]` with Python's meaning of a negative `k`.
    fn split_at<T: Clone>(x: &[T], k: isize) -> (Vec<T>, Vec<T>) {
        let k = if k < 0 {
            x.len().saturating_sub(k.unsigned_abs())
        } else {
            (k as usize).min(x.len())
        };
        (x[..k].to_vec(), x[k..].to_vec())
    }
    match (chosen, rejected) {
        (Content::Messages(c), Content::Messages(r)) => {
            let diff = c.iter().zip(&r).position(|(a, b)| a != b);
            // A message never equals " ", so the space rule does not apply to conversations.
            let k = cut(c.len(), r.len(), diff, |_| false);
            let (prompt, chosen) = split_at(&c, k);
            let (_, rejected) = split_at(&r, k);
            (
                Content::Messages(prompt),
                Content::Messages(chosen),
                Content::Messages(rejected),
            )
        }
        (Content::Text(c), Content::Text(r)) => {
            // Python indexes code points.
            let cc: Vec<char> = c.chars().collect();
            let rc: Vec<char> = r.chars().collect();
            let diff = cc.iter().zip(&rc).position(|(a, b)| a != b);
            let k = cut(cc.len(), rc.len(), diff, |i| cc[i] == ' ');
            let (prompt, chosen) = split_at(&cc, k);
            let (_, rejected) = split_at(&rc, k);
            (
                Content::Text(prompt.into_iter().collect()),
                Content::Text(chosen.into_iter().collect()),
                Content::Text(rejected.into_iter().collect()),
            )
        }
        (c, r) => (Content::Text(String::new()), c, r),
    }
}
