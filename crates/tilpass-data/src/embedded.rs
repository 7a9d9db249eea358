//! The datasets that ship with tilpass, compiled into the library (the repository's `data/`;
//! licence and contents in `data/README.md`, all CC0):
//!
//! - `norsk-chat` ([`norsk_chat`]): 457 short conversations, Bokmål (`nb`) and Nynorsk (`nn`),
//!   over explanations, advice, rewriting, summaries, writing, small talk, recipes, facts,
//!   calendar, translation, Bokmål ↔ Nynorsk, opposites, arithmetic, numbers in words and
//!   sentiment;
//! - `norsk-pref` ([`norsk_pref`]): 334 preference pairs (prompt, chosen, rejected) in TRL's
//!   conversational explicit-prompt format, half Bokmål and half Nynorsk, whose rejected
//!   answers are wrong, in another language, in the other written standard, rude or evasive
//!   ([`Rejection`]).
//!
//! - `norsk-topic` ([`norsk_topic`]): 1,020 news-style sentences on Norwegian public life in six
//!   topics ([`TOPIC_LABELS`]), each written in Bokmål and in Nynorsk — gold labels for
//!   classifiers (the LamBERT recipe) and for the written-form task.
//!
//! In `norsk-chat` and `norsk-pref` a fixed tenth is the `eval` split, the rest `train`; in
//! `norsk-topic` a fifth of each topic's sentence pairs is `test`, the rest `train`.
//!
//! ```
//! let train = tilpass_data::embedded::norsk_chat(Some("train")).unwrap();
//! assert!(train.len() > 300);
//! assert!(train.iter().any(|c| c.lang == "nn"));
//! let pairs = tilpass_data::embedded::norsk_pref(Some("eval")).unwrap();
//! assert!(pairs.iter().all(|p| p.chosen != p.rejected));
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Location, Result};
use crate::record::{Content, Message, Record};

/// The dataset's JSONL text, compiled into the library.
pub const NORSK_CHAT_JSONL: &str = include_str!("../../../data/norsk-chat.jsonl");

/// The name `--data builtin:norsk-chat` refers to in the CLI.
pub const NORSK_CHAT: &str = "norsk-chat";

/// The `norsk-pref` JSONL text, compiled into the library.
pub const NORSK_PREF_JSONL: &str = include_str!("../../../data/norsk-pref.jsonl");

/// The name `--data builtin:norsk-pref` refers to in the CLI.
pub const NORSK_PREF: &str = "norsk-pref";

/// The name `builtin:norsk-rag` refers to: the Norwegian retrieval evaluation set of
/// `data/rag/` (passages, queries, qrels; `tilpass rag eval`).
pub const NORSK_RAG: &str = "norsk-rag";

/// The `norsk-rag` passages, JSONL rows `{"id", "text", "title", "meta"}` (one knowledge-base
/// document each), compiled into the library.
pub const NORSK_RAG_PASSAGES_JSONL: &str = include_str!("../../../data/rag/passages.jsonl");

/// The `norsk-rag` queries, JSONL rows `{"id", "text", "lang"}`.
pub const NORSK_RAG_QUERIES_JSONL: &str = include_str!("../../../data/rag/queries.jsonl");

/// The `norsk-rag` relevance judgements, TREC qrels lines `qid 0 passage_id grade` (2 answers
/// the query, 1 related or partial).
pub const NORSK_RAG_QRELS: &str = include_str!("../../../data/rag/qrels.txt");

/// The `norsk-topic` JSONL text, rows `{"id", "pair", "split", "lang", "label", "text"}`,
/// compiled into the library.
pub const NORSK_TOPIC_JSONL: &str = include_str!("../../../data/norsk-topic.jsonl");

/// The name of the topic-classification set.
pub const NORSK_TOPIC: &str = "norsk-topic";

/// The six labels of `norsk-topic`, in class order: health, education, transport, culture,
/// sport, nature and environment.
pub const TOPIC_LABELS: [&str; 6] = [
    "helse",
    "utdanning",
    "samferdsel",
    "kultur",
    "idrett",
    "natur",
];

/// The splits of `norsk-topic`.
pub const TOPIC_SPLITS: [&str; 2] = ["train", "test"];

/// The names of the built-in datasets (`builtin:NAME`).
pub const BUILTIN_DATASETS: [&str; 2] = [NORSK_CHAT, NORSK_PREF];

/// The splits every built-in dataset has (`builtin:NAME:SPLIT`).
pub const SPLITS: [&str; 2] = ["train", "eval"];

/// Checks that `name` is a built-in dataset ([`DataError::UnknownBuiltin`] lists them if not).
pub fn check_builtin(name: &str) -> Result<()> {
    if BUILTIN_DATASETS.contains(&name) {
        Ok(())
    } else {
        Err(DataError::UnknownBuiltin {
            name: name.into(),
            available: BUILTIN_DATASETS.map(str::to_string).to_vec(),
        })
    }
}

/// Checks that `split` is one of [`SPLITS`] ([`DataError::UnknownSplit`] lists them if not).
pub fn check_split(dataset: &str, split: &str) -> Result<()> {
    if SPLITS.contains(&split) {
        Ok(())
    } else {
        Err(DataError::UnknownSplit {
            dataset: dataset.into(),
            split: split.into(),
            available: SPLITS.map(str::to_string).to_vec(),
        })
    }
}

/// The records of built-in dataset `name`, split `split` (`None`: `train`): conversations for
/// `norsk-chat`, preference records with an explicit prompt for `norsk-pref`.
pub fn builtin_records(name: &str, split: Option<&str>) -> Result<Vec<Record>> {
    check_builtin(name)?;
    let split = Some(split.unwrap_or("train"));
    Ok(if name == NORSK_PREF {
        norsk_pref(split)?.iter().map(|p| p.record()).collect()
    } else {
        norsk_chat(split)?.iter().map(|c| c.record()).collect()
    })
}

/// Parses the rows of an embedded JSONL text, keeping those of `split` (`None`: all).
fn rows<T: serde::de::DeserializeOwned>(
    name: &str,
    jsonl: &str,
    split: Option<&str>,
    split_of: impl Fn(&T) -> &str,
) -> Result<Vec<T>> {
    if let Some(s) = split {
        check_split(name, s)?;
    }
    parse_rows(name, jsonl, split, split_of)
}

/// [`rows`] without the split check.
fn parse_rows<T: serde::de::DeserializeOwned>(
    name: &str,
    jsonl: &str,
    split: Option<&str>,
    split_of: impl Fn(&T) -> &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (i, line) in jsonl.lines().enumerate() {
        let row: T = serde_json::from_str(line).map_err(|e| DataError::Json {
            path: name.into(),
            location: Location::Line(i + 1),
            message: e.to_string(),
        })?;
        if split.is_none_or(|s| s == split_of(&row)) {
            out.push(row);
        }
    }
    Ok(out)
}

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
    rows(NORSK_CHAT, NORSK_CHAT_JSONL, split, |c: &ChatExample| {
        &c.split
    })
}

/// How the rejected answer of a [`PreferenceExample`] falls short of the chosen one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Factually or arithmetically wrong (in the right language and written standard).
    Wrong,
    /// In another language (English, Swedish or Danish).
    Language,
    /// In the other written standard: Bokmål to a Nynorsk prompt or Nynorsk to a Bokmål one.
    WrittenForm,
    /// Right content, rude manner.
    Rude,
    /// Dodges the question.
    Evasive,
}

impl Rejection {
    /// Every class, in the order above.
    pub const ALL: [Rejection; 5] = [
        Rejection::Wrong,
        Rejection::Language,
        Rejection::WrittenForm,
        Rejection::Rude,
        Rejection::Evasive,
    ];

    /// The name used in the dataset (`written_form`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::Wrong => "wrong",
            Rejection::Language => "language",
            Rejection::WrittenForm => "written_form",
            Rejection::Rude => "rude",
            Rejection::Evasive => "evasive",
        }
    }
}

/// One preference pair of `norsk-pref`, in TRL's conversational format with an explicit
/// prompt: `prompt` holds the user turn, `chosen` and `rejected` one assistant turn each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceExample {
    /// Stable id (`norsk-pref-0042`).
    pub id: String,
    /// `train` or `eval`.
    pub split: String,
    /// The written standard of the conversation: `nb` (Bokmål) or `nn` (Nynorsk).
    pub lang: String,
    /// The kind of task (`fakta`, `regning`, `råd`, `oversetting`, ...).
    pub task: String,
    /// What is wrong with the rejected answer.
    pub rejection: Rejection,
    /// The prompt's turns (one user message).
    pub prompt: Vec<Message>,
    /// The preferred answer (one assistant message).
    pub chosen: Vec<Message>,
    /// The dispreferred answer (one assistant message).
    pub rejected: Vec<Message>,
}

impl PreferenceExample {
    /// The pair as a preference record with an explicit prompt (for the preference encoder).
    pub fn record(&self) -> Record {
        Record::Preference {
            prompt: Some(Content::Messages(self.prompt.clone())),
            chosen: Content::Messages(self.chosen.clone()),
            rejected: Content::Messages(self.rejected.clone()),
        }
    }
}

/// The pairs of `norsk-pref`, all or one split (`"train"` / `"eval"`).
pub fn norsk_pref(split: Option<&str>) -> Result<Vec<PreferenceExample>> {
    rows(
        NORSK_PREF,
        NORSK_PREF_JSONL,
        split,
        |p: &PreferenceExample| &p.split,
    )
}

/// One item of `norsk-topic`: a sentence and its topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicExample {
    /// Stable id, `norsk-topic-NNNN`.
    pub id: String,
    /// The sentence pair it belongs to: the Bokmål and the Nynorsk version share it (and their
    /// split).
    pub pair: usize,
    /// `train` or `test`.
    pub split: String,
    /// Written standard: `nb` or `nn`.
    pub lang: String,
    /// Topic, one of [`TOPIC_LABELS`].
    pub label: String,
    /// The sentence.
    pub text: String,
}

/// The items of `norsk-topic`, split `train` or `test` (`None`: all), in file order.
///
/// ```
/// let test = tilpass_data::embedded::norsk_topic(Some("test")).unwrap();
/// assert_eq!(test.len(), 204);
/// assert!(test.iter().all(|t| tilpass_data::embedded::TOPIC_LABELS.contains(&t.label.as_str())));
/// ```
pub fn norsk_topic(split: Option<&str>) -> Result<Vec<TopicExample>> {
    if let Some(s) = split
        && !TOPIC_SPLITS.contains(&s)
    {
        return Err(DataError::UnknownSplit {
            dataset: NORSK_TOPIC.into(),
            split: s.into(),
            available: TOPIC_SPLITS.map(str::to_string).to_vec(),
        });
    }
    parse_rows(NORSK_TOPIC, NORSK_TOPIC_JSONL, split, |t: &TopicExample| {
        &t.split
    })
}
