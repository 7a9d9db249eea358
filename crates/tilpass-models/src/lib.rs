//! # tilpass-models
//!
//! *Not implemented yet* (issues 3 and 4). This crate will own the model architectures as burn
//! modules, each in its own module file: `bert`, `ltg_bert` (NorBERT3), `llama` (also Mistral),
//! `gpt2`, `t5`, `nort5`; the shared layers (`attention`, `rope`, `norm`, `mlp`, `kv_cache`); the
//! heads (causal LM, masked LM, sequence classification, embedding pooling); generation
//! (greedy, sampling, top-k/top-p, repetition penalty, stop strings, beam search); and loading
//! each family from a Hugging Face model directory through `tilpass-core`.

#![warn(missing_docs)]
