//! # tilpass-preference
//!
//! *Not implemented yet*. This crate will own preference optimisation: reward models, the DPO
//! family (sigmoid, IPO, hinge, robust), ORPO, SimPO/CPO, KTO and online methods (GRPO), as
//! pure loss functions of log-probabilities plus trainers on `tilpass-train`.

#![warn(missing_docs)]
