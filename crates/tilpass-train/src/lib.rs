//! # tilpass-train
//!
//! The training engine: AdamW with PyTorch's exact update
//! ([`AdamW`]), HF's learning-rate schedules ([`LrSchedule`]: constant, linear and cosine with
//! warmup) and global-norm gradient clipping ([`clip_global_norm`]), over the named trainable
//! parameters of a [`tilpass_peft::PeftModel`]; the causal-LM training loop [`train_lm`] with
//! gradient accumulation, evaluation and early stopping, NaN/inf detection naming step and
//! batch, atomic checkpoints (adapter + optimiser + trainer state) every N steps keeping the
//! last K, exact resume, and metrics appended to `metrics.jsonl`. Checked against PyTorch +
//! PEFT: five LoRA SFT steps give the same losses, gradient norms and final adapter; a resumed
//! run ends bit-identical to an uninterrupted one.
//!
//! Tasks: supervised fine-tuning batches from `tilpass-tokenize`'s SFT encoder
//! ([`sft_batches`], `tilpass train sft`); the LamBERT recipe — label scoring with an LLM
//! ([`score_labels`], [`label_probabilities`]), classifier training ([`train_classifier`]),
//! prediction and scikit-learn-exact metrics ([`predict`], [`evaluate_classifier`]).
//!
//! The jobs of the `tilpass` command are library types in [`runs`]: [`SftRun`],
//! [`ClassifyRun`], [`AnnotateRun`], [`PredictRun`] — serde run configs (unknown keys are
//! errors; the job's defaults in its `Default`) with a `run(device, progress)` that checks
//! every setting, writes `run_config.json` and does the job; [`runs::resolve`] merges a config
//! file and command-line settings. [`runs::text_perplexity`] scores texts with a decoder
//! (`tilpass metrics perplexity`).
//!
//! Encoder-decoders (T5, T5.1.1, mT5, NorT5): [`train_seq2seq`] on the same loop, with
//! transformers' `T5ForConditionalGeneration` loss; `tilpass train sft` takes them too.
//!
//! Full fine-tuning ([`Target::Full`]) runs through the same loop (every parameter, HF's
//! no-decay rule, whole-model checkpoints), checked against transformers + torch AdamW.
//! [`Progress`] renders a run's events as a progress bar.

#![warn(missing_docs)]

pub mod classify;
pub mod classify_methods;
pub mod decoder_prompt_classifier;
pub mod error;
pub mod fused_ce;
pub mod optim;
pub mod progress;
pub mod prompt;
pub mod runs;
pub mod schedule;
pub mod seq2seq;
pub mod sft;
pub mod trainer;

pub use classify::{
    ClsBatch, classification_loss, cls_batches, evaluate_classifier, label_probabilities, predict,
    score_labels, train_classifier,
};
pub use classify_methods::{
    ClassifyMethod, LoadedClassifier, PromptClassifier, check_method, load_classifier,
    train_prompt_classifier,
};
pub use error::{Result, TrainError};
pub use fused_ce::causal_lm_cross_entropy;
pub use optim::{AdamW, AdamWConfig, NamedGrads, clip_global_norm, collect_grads, global_norm};
pub use progress::{Progress, count_bar, count_spinner, peak_gflops, train_flops_per_token};
pub use prompt::{
    PromptModel, PromptSampler, PromptSeq2Seq, evaluate_prompt_lm, evaluate_prompt_seq2seq,
    prompt_lm_loss, prompt_seq2seq_loss, train_prompt_lm, train_prompt_seq2seq,
};
pub use runs::{
    AnnotateOutcome, AnnotateReport, AnnotateRun, ClassifyOutcome, ClassifyRun, MergeOutcome,
    PeftMethod, PredictOutcome, PredictRun, Predictor, PromptSftOutcome, RunConfig,
    Seq2SeqSftOutcome, SftOutcome, SftRun, Shard, StudyOutcome, StudyResult, StudyRun,
    merge_shards,
};
pub use schedule::{LrSchedule, ScheduleKind};
pub use seq2seq::{
    Seq2SeqTrainBatch, evaluate_seq2seq, sample_seq2seq_answers, seq2seq_lm_loss,
    seq2seq_train_batches, train_seq2seq,
};
pub use sft::{packed_batches, prompt_of, sample_answers, sft_batches};
pub use trainer::{
    BatchLoss, CheckpointExtrasFn, EvalLog, Event, LmBatch, LoopHooks, ModelEvalFn, ModelLossFn,
    PeftTarget, StepLog, StepLogFn, Summary, Target, TrainConfig, Trainable, TrainerState,
    causal_lm_loss, evaluate, save_checkpoint, save_checkpoint_of, save_checkpoint_with_extras,
    train_lm, train_lm_with_samples, train_loop, train_loop_with, train_loop_with_hooks,
    train_trainable, train_trainable_with_hooks,
};
