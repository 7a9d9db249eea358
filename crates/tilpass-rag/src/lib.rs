//! # tilpass-rag
//!
//! Retrieval for retrieval-augmented generation, Norwegian first: a persistent knowledge base
//! ([`KnowledgeBase`], one directory) of documents cut into passages ([`ChunkerConfig`]) with
//! character spans for citations, incremental add / update / delete on tantivy (deletes removed
//! from disk at commit), and BM25 search over a Norwegian analysis chain ([`AnalysisConfig`]).
//! Semantics: `shared/notes/retrieval-semantics.md` of the project.
//!
//! Dense search, HNSW, hybrid fusion and cited answers are later parts of this crate.

#![warn(missing_docs)]

pub mod analysis;
pub mod chunk;
pub mod error;
pub mod eval;
pub mod kb;

pub use analysis::{AnalysisConfig, analyze};
pub use chunk::{Chunk, ChunkerConfig, TokenUnit};
pub use error::{RagError, Result};
pub use kb::{
    Bm25Params, CommitStats, Document, FORMAT_NAME, FORMAT_VERSION, Hit, KbWriter, KnowledgeBase,
    MANIFEST_FILE, Manifest,
};
