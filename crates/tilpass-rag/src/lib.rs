//! # tilpass-rag
//!
//! Retrieval for retrieval-augmented generation, Norwegian first: a persistent knowledge base
//! ([`KnowledgeBase`], one directory) of documents cut into passages ([`ChunkerConfig`]) with
//! character spans for citations, incremental add / update / delete on tantivy (deletes removed
//! from disk at commit), and BM25 search ([`Bm25Params`]: Lucene's formula, k1 and b
//! configurable) over a Norwegian analysis chain ([`AnalysisConfig`]: Snowball or Lucene's light
//! stemmer for Bokmål / Nynorsk). Passages are cut by whitespace words or by the tokens of a
//! Hugging Face tokenizer ([`Chunker`]).
//! Semantics: `shared/notes/retrieval-semantics.md` of the project.
//!
//! Dense search, HNSW, hybrid fusion and cited answers are later parts of this crate.

#![warn(missing_docs)]

pub mod analysis;
pub mod bm25;
pub mod chunk;
pub mod error;
pub mod eval;
pub mod kb;
pub mod light_stem;

pub use analysis::{AnalysisConfig, StemmerKind, analyze};
pub use chunk::{Chunk, Chunker, ChunkerConfig, TokenUnit};
pub use error::{RagError, Result};
pub use kb::{
    Bm25Params, CHUNK_TOKENIZER_FILE, CommitStats, Document, FORMAT_NAME, FORMAT_VERSION, Hit,
    KbOptions, KbWriter, KnowledgeBase, MANIFEST_FILE, Manifest,
};
