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
//! Dense search ([`dense`], [`vectors`]: passages embedded by any tilpass sentence encoder,
//! exact blocked dot products and an HNSW graph persisted with each commit) and hybrid search
//! ([`fusion`]: reciprocal rank fusion and weighted min-max fusion of BM25 and dense lists).
//!
//! Re-ranking ([`rerank`]): a cross-encoder ([`CrossEncoder`], any BERT / NorBERT3
//! sequence classifier) re-orders the top hits of any retriever as sentence-transformers'
//! `CrossEncoder` scores them.
//!
//! Fine-tuning data for cited answers ([`sft`]): chat examples whose user turn is the
//! prompt `rag ask` builds and whose assistant turn quotes the answering passage and cites it.
//!
//! Answers with citations: [`build_prompt`] puts numbered passages before the question
//! (Norwegian instructions, chat-template aware, within a token budget) and
//! [`generate_answer`] generates through a tilpass decoder, mapping each `[n]` of the answer to
//! a document id, title and character span ([`Answer`]).

#![warn(missing_docs)]

pub mod analysis;
pub mod answer;
pub mod bm25;
pub mod chunk;
pub mod dense;
pub mod error;
pub mod eval;
pub mod fusion;
pub mod hnsw;
pub mod kb;
pub mod light_stem;
pub mod prompt;
pub mod rerank;
pub mod sft;
pub mod vectors;

pub use analysis::{AnalysisConfig, StemmerKind, analyze};
pub use answer::{Answer, AnswerError, Citation, InvalidCitation, generate_answer};
pub use chunk::{Chunk, Chunker, ChunkerConfig, TokenUnit};
pub use dense::{Embedder, EmbedderIdentity, ModelEmbedder};
pub use error::{RagError, Result};
pub use fusion::{FusedHit, FusionConfig, FusionMethod, fuse};
pub use kb::{
    Bm25Params, CHUNK_TOKENIZER_FILE, CommitStats, Document, FORMAT_NAME, FORMAT_VERSION, Hit,
    KbOptions, KbWriter, KnowledgeBase, MANIFEST_FILE, Manifest,
};
pub use kb::{DENSE_DIR, DenseIndex};
pub use prompt::{PromptConfig, PromptLang, PromptPassage, RagPrompt, build_prompt};
pub use rerank::{CrossEncoder, CrossEncoderConfig, RerankedHit, ScoreRule};
pub use sft::{RagSftConfig, RagSftExample, RagSftReport, build_rag_sft};
pub use vectors::{HnswIndex, HnswParams, RecallReport, VectorStore, recall_at_k};
