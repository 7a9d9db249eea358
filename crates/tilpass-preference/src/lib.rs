//! # tilpass-preference
//!
//! Preference optimisation for tilpass. **What exists now**: the losses of TRL 1.16.0 as pure,
//! differentiable functions of log-probabilities (burn [`Tensor`](burn::tensor::Tensor)s on any
//! device and float dtype), with TRL's config names and defaults (serde) and the metrics TRL's
//! trainers log from them. Each is checked against values computed by TRL's own loss code
//! (`tests/fixtures/generate_preference.py`; tests in `tests/all/preference_losses.rs`).
//!
//! | module | loss | TRL |
//! |---|---|---|
//! | [`dpo`] | every DPO `loss_type` (sigmoid, hinge, ipo, exo_pair, nca_pair, robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm), weighted lists, label smoothing, `ld_alpha`, WPO | `DPOTrainer` |
//! | [`divergence`] | f-DPO scores: reverse / forward KL, Jensen-Shannon, alpha | `f_divergence_type` |
//! | [`kto`] | KTO with the rotated-batch KL reference point and class weights; `apo_zero_unpaired` | `KTOTrainer` |
//! | [`orpo`] | ORPO's odds-ratio loss | `experimental.orpo` |
//! | [`cpo`] | CPO (sigmoid, hinge, ipo), SimPO, CPO-SimPO, AlphaPO | `experimental.cpo` |
//! | [`reward`] | Bradley-Terry reward loss with margins and centring | `RewardTrainer` |
//! | [`logps`] | per-token log-probs + masks -> sums, averages, LD-DPO sums, the SFT term, WPO weights | (the trainers' reductions) |
//! | [`dpo_trainer`] | DPO on the training loop: completion log-probs, reference, metrics | `DPOTrainer.train` |
//! | [`dpo_run`] | `tilpass train dpo` as a serde run config | `DPOConfig` |
//! | [`kto_trainer`] | KTO on the training loop: unpaired rows, rotated KL batches, reference | `KTOTrainer.train` |
//! | [`orpo_run`], [`cpo_run`], [`kto_run`] | `tilpass train orpo|cpo|kto` as serde run configs | `ORPOConfig`, `CPOConfig`, `KTOConfig` |
//! | [`orpo_trainer`] | ORPO on the training loop (no reference model) | `ORPOTrainer.train` |
//! | [`cpo_trainer`] | CPO / SimPO / AlphaPO on the training loop (no reference model) | `CPOTrainer.train` |
//! | [`reward_trainer`] | reward models (decoder sequence classifiers) on the training loop | `RewardTrainer.train` |
//! | [`reward_run`] | `tilpass train reward` as a serde run config | `RewardConfig` |
//! | [`ref_cache`] | precomputed reference log-probs cached on disk, keyed by model, adapter, data and settings | `precompute_ref_log_probs` |
//! | [`grpo`] | GRPO group advantages (`scale_rewards`, `multi_objective_aggregation`), the clipped loss with k3 KL and grpo / bnpo / dr_grpo / dapo aggregation, EOS masking and completion metrics | `GRPOTrainer` (advantages, `_compute_loss`) |
//! | [`rloo`] | RLOO: KL-penalised rewards, leave-one-out baselines, sequence-level clipped loss | `RLOOTrainer` (advantages, `_compute_loss`) |
//! | [`rewards`] | reward functions: closures, written form (nb / nn), length, distinct-n, regex format, exact answer; `--reward` specs | `reward_funcs` |
//! | [`model_reward`] | reward-model rewards (a sequence classifier scoring prompt + completion) | `reward_funcs` with a model |
//! | [`grpo_trainer`] | GRPO / RLOO on the training loop: sampling generation batches, rewards, advantages, `num_iterations` passes with old / reference log-probs, exact resume | `GRPOTrainer.train`, `RLOOTrainer.train` |
//! | [`grpo_run`] | `tilpass train grpo|rloo` as a serde run config: prompts, reward specs, reward models | `GRPOConfig`, `RLOOConfig` |
//!
//! Conventions: sequence inputs are `[batch]` tensors (one value per completion or pair),
//! per-token inputs `[batch, seq]` with a 0/1 completion mask ([`TokenLogps`]). Reference
//! log-probs are detached inside the losses. Every loss checks its settings and inputs before
//! computing (shapes, NaN / infinity, domain) and returns a typed [`PreferenceError`] naming the
//! setting or input; it does not panic on user input. Metrics are computed on the host in `f64`
//! from the same inputs, so computing a loss reads its `[batch]` inputs back from the device.
//!
//! Where TRL refuses a setting, so do these losses: `loss_weights` of another length than
//! `loss_type`; a non-default f-divergence with a loss not built on the chosen-rejected
//! difference; WPO with aot / aot_unpaired (TRL: not implemented) or with sft (TRL 1.16.0 fails on
//! it); exo_pair without label smoothing; KTO batches of one example. Stricter than TRL, which
//! only warns or fails later: `beta` > 0, `label_smoothing` in [0, 0.5) for every loss,
//! `ld_alpha` in [0, 1], non-negative class weights and `cpo_alpha`.
//!
//! **Trainers**: [`dpo_trainer`] trains DPO (every loss above, WPO included) on
//! `tilpass-train`'s loop — accumulation, clipping, schedules, evaluation every `eval_steps`,
//! checkpoints with exact resume, `metrics.jsonl` with TRL's metric names — against the same model with its adapters disabled (LoRA) or an
//! explicit reference model (full fine-tuning), or reference log-probs precomputed once and
//! cached on disk ([`ref_cache`]); [`dpo_run::DpoRun`] is `tilpass train dpo`.
//! Checked against TRL's own `DPOTrainer` (tests/fixtures/generate_dpo.py, tests in
//! `tests/all/dpo_parity.rs`).
//!
//! **Reward models**: [`reward_trainer`] trains a decoder sequence classifier
//! ([`tilpass_models::DecoderClassifier`], transformers' `*ForSequenceClassification`) with the
//! Bradley-Terry loss (margins, centring) and TRL's metrics, checked against TRL's own
//! `RewardTrainer` (tests/fixtures/generate_reward.py, tests in `tests/all/reward_parity.rs`).
//!
//! **Trainers without a reference** and **KTO**: [`orpo_trainer`] (ORPO) and [`cpo_trainer`]
//! (CPO, SimPO, AlphaPO) on the same loop, and [`kto_trainer`] (KTO: unpaired rows, the KL
//! reference point from each batch's rotated completions, the reference as for DPO), with
//! TRL's metric names; [`orpo_run::OrpoRun`], [`cpo_run::CpoRun`] and [`kto_run::KtoRun`] are
//! `tilpass train orpo|cpo|kto`, whose encoding of the data equals TRL's batches. Checked
//! against TRL's own `ORPOTrainer`, `CPOTrainer` and `KTOTrainer`
//! (tests/fixtures/generate_pref_trainers.py, tests in `tests/all/pref_trainer_parity.rs`).
//!
//! **Online methods** (issue 18): [`grpo`] and [`rloo`] compute advantages, losses and metrics
//! as TRL 1.16.0 does on given inputs (checked against TRL's own advantage code and
//! `_compute_loss`: tests/fixtures/generate_grpo.py, tests/all/grpo_parity.rs); [`rewards`] and
//! [`model_reward`] score completions; [`grpo_trainer::train_online`] trains with them on the
//! shared loop, checked against TRL's own `GRPOTrainer` / `RLOOTrainer` on fixed completions
//! (tests/fixtures/generate_grpo_trainer.py, tests/all/grpo_trainer_parity.rs).
//!
//! **Not here yet**: evaluation sets in the ORPO / CPO / KTO and online trainers, BERT /
//! NorBERT3 reward models in the CLI.

#![warn(missing_docs)]

pub mod cpo;
pub mod cpo_run;
pub mod cpo_trainer;
pub mod divergence;
pub mod dpo;
pub mod dpo_run;
pub mod dpo_trainer;
pub mod error;
pub mod grpo;
pub mod grpo_run;
pub mod grpo_trainer;
pub mod kto;
pub mod kto_run;
pub mod kto_trainer;
pub mod logps;
pub mod model_reward;
pub mod orpo;
pub mod orpo_run;
pub mod orpo_trainer;
mod paired_policy;
mod pref_run;
pub mod ref_cache;
pub mod reward;
pub mod reward_run;
pub mod reward_trainer;
pub mod rewards;
pub mod rloo;
pub mod seq2seq_pref;
pub mod seq2seq_pref_run;

pub use cpo::{CpoConfig, CpoInputs, CpoLossType, CpoMetrics, CpoOutput, cpo_loss};
pub use cpo_run::CpoRun;
pub use cpo_trainer::{cpo_batch_loss, evaluate_cpo, train_cpo};
pub use divergence::FDivergence;
pub use dpo::{DpoConfig, DpoInputs, DpoLossType, DpoMetrics, DpoOutput, WpoTokens, dpo_loss};
pub use dpo_run::{DpoOutcome, DpoRun};
pub use dpo_trainer::{
    CompletionLogps, DpoBatch, DpoBatchOutput, DpoEval, DpoReference, LogitMetrics, RefLogps,
    completion_logps, dpo_batch_loss, evaluate_dpo, policy_outputs, precompute_reference,
    reference_sequence_logps, train_dpo,
};
pub use error::{PreferenceError, Result};
pub use grpo::{
    GrpoAdvantages, GrpoConfig, GrpoInputs, GrpoLossType, GrpoOutput, MultiObjectiveAggregation,
    ScaleRewards, completion_metrics, completions_after_eos, grpo_advantages, grpo_loss,
};
pub use grpo_run::{
    GrpoOutcome, GrpoRun, LoadedRewardModel, OnlineKind, load_reward_model, read_prompts,
};
pub use grpo_trainer::{
    FixedRollout, GENERATION_BUFFER_FILE, OnlineAlgorithm, OnlineConfig, OnlineExtras, PromptRow,
    WeightedReward, train_online, train_online_with,
};
pub use kto::{KtoConfig, KtoInputs, KtoLossType, KtoMetrics, KtoOutput, kl_rotation, kto_loss};
pub use kto_run::KtoRun;
pub use kto_trainer::{
    KtoBatch, KtoRows, evaluate_kto, kto_batch_loss, kto_weight_warning, train_kto,
};
pub use logps::{TokenLogps, average_logps, ld_alpha_logps, sequence_logps, sft_nll, wpo_weights};
pub use model_reward::ModelReward;
pub use orpo::{OrpoConfig, OrpoInputs, OrpoMetrics, OrpoOutput, orpo_loss};
pub use orpo_run::{OrpoRun, PreferenceOutcome};
pub use orpo_trainer::{evaluate_orpo, orpo_batch_loss, train_orpo};
pub use reward::{RewardConfig, RewardInputs, RewardMetrics, RewardOutput, reward_loss};
pub use reward_run::{RewardOutcome, RewardRun, TrainedReward, is_encoder_reward_model};
pub use reward_trainer::{
    RewardBatch, RewardBatchOutput, RewardEval, RewardModel, evaluate_reward, pair_rewards,
    reward_batch_loss, train_reward,
};
pub use rewards::{
    DistinctN, ExactAnswer, FnReward, FormTarget, LengthWindow, RegexFormat, RewardFunction,
    RewardKind, RewardSpec, WrittenForm, score_rewards,
};
pub use rloo::{RlooAdvantages, RlooConfig, RlooInputs, RlooOutput, rloo_advantages, rloo_loss};
pub use seq2seq_pref::{
    Seq2SeqPairBatch, cpo_seq2seq_batch_loss, orpo_seq2seq_batch_loss, train_cpo_seq2seq,
    train_orpo_seq2seq,
};
pub use seq2seq_pref_run::{
    SEQ2SEQ_MAX_COMPLETION_LENGTH, Seq2SeqPreferenceOutcome, seq2seq_pair_batches,
};
