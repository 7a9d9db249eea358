//! Errors of the knowledge base: each names the directory, file, line, setting or id it
//! concerns and what was expected.

use std::path::PathBuf;

/// What went wrong with a knowledge base.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// The directory exists and holds files but is not a tilpass knowledge base (no manifest, or
    /// a manifest of another format).
    #[error("{path}: not a tilpass knowledge base ({reason})")]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The directory is a knowledge base whose files are damaged or inconsistent.
    #[error("{path}: corrupt knowledge base: {message}")]
    Corrupt {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The manifest names a format version this build does not read.
    #[error("{path}: knowledge-base format version {found}, this build reads version {expected}")]
    UnsupportedVersion {
        /// The manifest.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// Another process (or another writer in this one) holds the knowledge base's writer lock.
    #[error("{path}: the knowledge base is being written by another process (writer lock held)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A document id that is not in the knowledge base.
    #[error("unknown document id {id:?} (not in the knowledge base)")]
    UnknownId {
        /// The id.
        id: String,
    },
    /// A query without any text.
    #[error("empty query: give some text to search for")]
    EmptyQuery,
    /// A document (a JSONL row or a value handed to the library) is malformed.
    #[error("{source_name}: {message}")]
    InvalidDocument {
        /// Where it came from (`file:line`, or `document N`).
        source_name: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A setting is out of range or conflicts with the knowledge base's manifest.
    #[error("{setting}: {message}")]
    InvalidSetting {
        /// The setting (`chunk_tokens`, `k`, ...).
        setting: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The search library failed on a knowledge base's index.
    #[error("{path}: index error: {message}")]
    Index {
        /// The directory.
        path: PathBuf,
        /// tantivy's message.
        message: String,
    },
    /// The embedder given does not make the vectors the knowledge base holds.
    #[error(
        "embedder mismatch: the knowledge base's vectors were made with {index}; got {given} (use that model, or a new --kb)"
    )]
    EmbedderMismatch {
        /// The knowledge base's embedder.
        index: String,
        /// The one given.
        given: String,
    },
    /// Dense or hybrid search on a knowledge base without vectors.
    #[error("{path}: the knowledge base has no dense vectors (index it with --embedder MODEL_DIR)")]
    NoVectors {
        /// The directory.
        path: PathBuf,
    },
    /// A re-ranking model that cannot serve as a cross-encoder (not a sequence classifier,
    /// a label count other than 1 or 2, an unknown activation, ...).
    #[error("{path}: cannot re-rank with this model: {message}")]
    Reranker {
        /// The model directory.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A file could not be read or written (the error names it).
    #[error(transparent)]
    File(#[from] tilpass_core::Error),
}

/// Result of the rag crate.
pub type Result<T> = std::result::Result<T, RagError>;

impl From<RagError> for tilpass_core::Error {
    fn from(e: RagError) -> Self {
        tilpass_core::Error::Component(Box::new(e))
    }
}
