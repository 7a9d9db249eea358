//! # tilpass-rag
//!
//! Retrieval for retrieval-augmented generation, Norwegian first: a persistent knowledge base
//! ([`KnowledgeBase`], one directory) of documents cut into passages ([`ChunkerConfig`]) with
//! character spans for citations, incremental add / update / delete on tantivy (deletes removed
//! from disk at commit), and BM25 search over a Norwegian analysis chain ([`AnalysisConfig`]).
//! Semantics: `shared/notes/retrieval-semantics.md` of the project.
//!
//! Dense search ([`dense`], [`vectors`]: passages embedded by any tilpass sentence encoder,
//! exact blocked dot products and an HNSW graph persisted with each commit) and hybrid search
//! ([`fusion`]: reciprocal rank fusion and weighted min-max fusion of BM25 and dense lists).

#![warn(missing_docs)]

pub mod analysis;
pub mod chunk;
pub mod dense;
pub mod error;
pub mod fusion;
pub mod kb;
pub mod vectors;

pub use analysis::{AnalysisConfig, analyze};
pub use chunk::{Chunk, ChunkerConfig, TokenUnit};
pub use dense::{Embedder, EmbedderIdentity, ModelEmbedder};
pub use error::{RagError, Result};
pub use fusion::{FusedHit, FusionConfig, FusionMethod, fuse};
pub use kb::{
    Bm25Params, CommitStats, Document, FORMAT_NAME, FORMAT_VERSION, Hit, KbWriter, KnowledgeBase,
    MANIFEST_FILE, Manifest,
};
pub use kb::{DENSE_DIR, DenseIndex};
pub use vectors::{HnswIndex, HnswParams, RecallReport, VectorStore, recall_at_k};
