//! # tilpass-train
//!
//! *Not implemented yet* (issue 6). This crate will own the training engine: AdamW with PyTorch
//! semantics, learning-rate schedules, gradient accumulation, global-norm clipping, evaluation,
//! atomic checkpoints with bit-identical resume, progress and metric logs; and the tasks
//! causal-LM SFT, sequence classification and annotation with an LLM (label scoring).

#![warn(missing_docs)]
