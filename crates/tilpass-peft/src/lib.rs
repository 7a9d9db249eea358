//! # tilpass-peft
//!
//! *Not implemented yet* (issue 5). This crate will own parameter-efficient adapters over any
//! `tilpass-models` architecture: LoRA (rsLoRA, DoRA, dropout, target modules), prefix tuning,
//! P-tuning and prompt tuning; reading and writing HF PEFT `adapter_config.json` and
//! `adapter_model.safetensors`; merge and unmerge; several named adapters, switching and
//! disabling.

#![warn(missing_docs)]
