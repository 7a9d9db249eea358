//! `norsk-chat`, the small Norwegian chat dataset that ships with tilpass (the repository's
//! `data/norsk-chat.jsonl`; licence and contents in `data/README.md`): 457 short
//! conversations, Bokmål (`nb`) and Nynorsk (`nn`), over explanations, advice, rewriting,
//! summaries, writing, small talk, recipes, facts, calendar, translation, Bokmål ↔ Nynorsk,
//! opposites, arithmetic, numbers in words and sentiment. A fixed tenth is the `eval` split.
//!
//! ```
//! let train = tilpass_data::embedded::norsk_chat(Some("train")).unwrap();
//! assert!(train.len() > 300);
//! assert!(train.iter().any(|c| c.lang == "nn"));
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location, Result};
use crate::record::{Message, Record};

/// The dataset's JSONL text, compiled into the library.
pub const NORSK_CHAT_JSONL: &str = include_str!("../../../data/norsk-chat.jsonl");

/// The name `--data builtin:norsk-chat` refers to in the CLI.
pub const NORSK_CHAT: &str = "norsk-chat";

/// One conversation of `norsk-chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatExample {
    /// Stable id (`norsk-chat-0042`).
    pub id: String,
    /// `train` or `eval`.
    pub split: String,
    /// `nb` (Bokmål) or `nn` (Nynorsk).
    pub lang: String,
    /// The kind of task (`forklaring`, `fakta`, `regning`, ...).
    pub task: String,
    /// The turns: user, assistant, ...
    pub messages: Vec<Message>,
}

impl ChatExample {
    /// The conversation as a dataset record (for the SFT encoder).
    pub fn record(&self) -> Record {
        Record::Conversation {
            messages: self.messages.clone(),
        }
    }
}

/// The conversations of `norsk-chat`, all or one split (`"train"` / `"eval"`).
pub fn norsk_chat(split: Option<&str>) -> Result<Vec<ChatExample>> {
    if let Some(s) = split
        && s != "train"
        && s != "eval"
    {
        return Err(DataError::Invalid(format!(
            "{NORSK_CHAT}: unknown split `{s}`: expected `train` or `eval`"
        )));
    }
    let mut out = Vec::new();
    for (i, line) in NORSK_CHAT_JSONL.lines().enumerate() {
        let ex: ChatExample = serde_json::from_str(line).map_err(|e| DataError::Json {
            path: NORSK_CHAT.into(),
            location: Location::Line(i + 1),
            message: e.to_string(),
        })?;
        if split.is_none_or(|s| s == ex.split) {
            out.push(ex);
        }
    }
    Ok(out)
}
