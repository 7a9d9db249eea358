//! # tilpass-train
//!
//! The training engine (issue 6, in progress): AdamW with PyTorch's exact update
//! ([`AdamW`]), HF's learning-rate schedules ([`LrSchedule`]: constant, linear and cosine with
//! warmup) and global-norm gradient clipping ([`clip_global_norm`]), over the named trainable
//! parameters of a [`tilpass_peft::PeftModel`]. Checked against PyTorch + PEFT: five LoRA SFT
//! steps give the same losses.
//!
//! Planned: the trainer loop (accumulation, evaluation, early stopping, NaN detection,
//! checkpoints and resume, progress and metric logs), the SFT and classification tasks, the
//! CLI and the quickstart.

#![warn(missing_docs)]

pub mod optim;
pub mod schedule;

pub use optim::{AdamW, AdamWConfig, NamedGrads, clip_global_norm, collect_grads, global_norm};
pub use schedule::{LrSchedule, ScheduleKind};
