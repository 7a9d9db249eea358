//! # tilpass-rag
//!
//! Retrieval for retrieval-augmented generation, Norwegian first: a persistent knowledge base
//! ([`KnowledgeBase`], one directory) of documents cut into passages ([`ChunkerConfig`]) with
//! character spans for citations, incremental add / update / delete on tantivy (deletes removed
//! from disk at commit), and BM25 search over a Norwegian analysis chain ([`AnalysisConfig`]).
//! Semantics: `shared/notes/retrieval-semantics.md` of the project.
//!
//! Answers with citations: [`build_prompt`] puts numbered passages before the question
//! (Norwegian instructions, chat-template aware, within a token budget) and
//! [`generate_answer`] generates through a tilpass decoder, mapping each `[n]` of the answer to
//! a document id, title and character span ([`Answer`]).

#![warn(missing_docs)]

pub mod analysis;
pub mod answer;
pub mod chunk;
pub mod error;
pub mod kb;
pub mod prompt;

pub use analysis::{AnalysisConfig, analyze};
pub use answer::{Answer, AnswerError, Citation, InvalidCitation, generate_answer};
pub use chunk::{Chunk, ChunkerConfig, TokenUnit};
pub use error::{RagError, Result};
pub use kb::{
    Bm25Params, CommitStats, Document, FORMAT_NAME, FORMAT_VERSION, Hit, KbWriter, KnowledgeBase,
    MANIFEST_FILE, Manifest,
};
pub use prompt::{PromptConfig, PromptLang, PromptPassage, RagPrompt, build_prompt};
