//! Errors of `tilpass-data`.

use std::fmt;
use std::path::PathBuf;

/// Where in a file a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// 1-based line of a JSONL file.
    Line(usize),
    /// 0-based index of an element of a JSON array file.
    Item(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Item(n) => write!(f, "item {n}"),
        }
    }
}

/// What is wrong with one record, before it is tied to a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct RecordError {
    /// The offending field (a JSON path such as `messages[2].role`), when one is to blame.
    pub field: Option<String>,
    /// What was expected.
    pub message: String,
}

impl RecordError {
    /// An error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about the record as a whole.
    pub fn record(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }

    /// Prefixes the field path (e.g. `chosen` + `[1].role`).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = Some(match self.field {
            Some(f) if f.starts_with('[') => format!("{parent}{f}"),
            Some(f) => format!("{parent}.{f}"),
            None => parent.to_string(),
        });
        self
    }
}

/// Errors of `tilpass-data`; each names the file and, for a record, its line or item.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line (or the whole file) is not valid JSON.
    #[error("{path}:{location}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Line or item.
        location: Location,
        /// serde's description.
        message: String,
    },
    /// A record is valid JSON but not a valid record.
    #[error("{path}:{location}: {error}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Line or item.
        location: Location,
        /// What is wrong.
        error: RecordError,
    },
    /// The file holds no record.
    #[error("{path}: no records")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A line is not UTF-8 or longer than the limit (the error names the file and line), or
    /// a whole file is not UTF-8.
    #[error(transparent)]
    Text(#[from] tilpass_core::Error),
    /// An option or argument is invalid.
    #[error("{0}")]
    Invalid(String),
    /// `builtin:NAME` names no dataset built into tilpass.
    #[error(
        "unknown built-in dataset `{name}`: expected one of {} (splits :train, :eval)",
        available.iter().map(|n| format!("builtin:{n}")).collect::<Vec<_>>().join(", ")
    )]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
        /// The datasets built in.
        available: Vec<String>,
    },
    /// A built-in dataset has no split of that name.
    #[error("{dataset}: unknown split `{split}`: expected one of {}", available.join(", "))]
    UnknownSplit {
        /// The built-in dataset (`norsk-pref`).
        dataset: String,
        /// The split asked for.
        split: String,
        /// Its splits.
        available: Vec<String>,
    },
}

impl From<DataError> for tilpass_core::Error {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Text(e) => e,
            other => tilpass_core::Error::Component(Box::new(other)),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
