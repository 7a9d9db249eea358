//! # tilpass-metrics
//!
//! *Not implemented yet* (issue 7). This crate will own evaluation metrics with the reference
//! libraries' exact numbers: BLEU, chrF/chrF++ and TER (sacrebleu), ROUGE (rouge-score), SQuAD
//! EM/F1, perplexity and bits-per-byte, classification and retrieval metrics (pytrec_eval),
//! chat-response metrics, language identification and pairwise LLM-as-judge.

#![warn(missing_docs)]
