//! # tilpass-rag
//!
//! *Not implemented yet*. This crate will own retrieval-augmented generation: chunking, BM25,
//! a dense embedding index (exact and approximate), hybrid fusion, persistence, and
//! retrieval-augmented prompts with citations.

#![warn(missing_docs)]
