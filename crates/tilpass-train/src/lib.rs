//! # tilpass-train
//!
//! The training engine (issue 6, in progress): AdamW with PyTorch's exact update
//! ([`AdamW`]), HF's learning-rate schedules ([`LrSchedule`]: constant, linear and cosine with
//! warmup) and global-norm gradient clipping ([`clip_global_norm`]), over the named trainable
//! parameters of a [`tilpass_peft::PeftModel`]; the causal-LM training loop [`train_lm`] with
//! gradient accumulation, evaluation and early stopping, NaN/inf detection naming step and
//! batch, atomic checkpoints (adapter + optimiser + trainer state) every N steps keeping the
//! last K, exact resume, and metrics appended to `metrics.jsonl`. Checked against PyTorch +
//! PEFT: five LoRA SFT steps give the same losses, gradient norms and final adapter; a resumed
//! run ends bit-identical to an uninterrupted one.
//!
//! Planned: the SFT task from chat datasets, the classification (LamBERT) tasks, full
//! fine-tuning, the CLI and the quickstart.

#![warn(missing_docs)]

pub mod error;
pub mod optim;
pub mod schedule;
pub mod sft;
pub mod trainer;

pub use error::{Result, TrainError};
pub use optim::{AdamW, AdamWConfig, NamedGrads, clip_global_norm, collect_grads, global_norm};
pub use schedule::{LrSchedule, ScheduleKind};
pub use sft::sft_batches;
pub use trainer::{
    EvalLog, Event, LmBatch, StepLog, Summary, TrainConfig, TrainerState, causal_lm_loss, evaluate,
    save_checkpoint, train_lm,
};
