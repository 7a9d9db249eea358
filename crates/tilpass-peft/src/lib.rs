//! # tilpass-peft
//!
//! Parameter-efficient adapters over `tilpass-models` architectures, file-compatible with HF
//! PEFT both ways.
//!
//! Implemented (issue 5, in progress): **LoRA** with rsLoRA and **DoRA**, dropout,
//! `target_modules` as names / regex / `all-linear` (or PEFT's defaults per model type),
//! `exclude_modules`, `rank_pattern` / `alpha_pattern`, `modules_to_save` (e.g. a classifier
//! head); PEFT's initialisation (a fresh adapter changes nothing); reading and writing
//! `adapter_config.json` + `adapter_model.safetensors`; several named adapters, switching,
//! a disabled forward (the DPO reference), merge / unmerge / merge-and-unload; PEFT's
//! trainable-parameter count. Works on every model with [`tilpass_models::HasLinears`]:
//! Llama/Mistral, GPT-2, BERT, LTG-BERT, T5, NorT5 (checked against PEFT on Llama, GPT-2,
//! BERT and T5).
//!
//! **Prompt learning** ([`PromptAdapter`]): prefix tuning (GQA-aware, through the KV cache,
//! so cached generation works), prompt tuning (random or text initialisation) and P-tuning on
//! decoders, BERT classifiers and T5 (prefix on the decoder, prompts on the encoder, as PEFT),
//! loaded from and saved to PEFT's `prompt_embeddings` files with PEFT's forward and
//! `generate` semantics; the training-time prompt encoders (prefix projection MLP, P-tuning
//! MLP / bidirectional LSTM) with a sidecar file to resume them ([`PromptEncoder`]).
//!
//! Planned: LoRA on embedding layers.
//!
//! ```no_run
//! use tilpass_models::{DecoderInput, DecoderLm};
//! use tilpass_peft::{LoraConfig, PeftModel};
//! # fn demo(device: &burn::tensor::Device) -> Result<(), Box<dyn std::error::Error>> {
//! let model = DecoderLm::load("normistral-7b", device)?;
//! let mut peft = PeftModel::new(model);
//! let lora = LoraConfig::builder().r(16).lora_alpha(32.0).target_modules(["q_proj", "k_proj", "v_proj", "o_proj"]).build()?;
//! peft.add_adapter("default", &lora, 0)?;
//! println!("{}", peft.trainable_parameters());     // trainable params: ... || all params: ...
//! let logits = peft.forward(&DecoderInput::unpadded(&[vec![1, 2, 3]])?, None)?;
//! peft.save_adapter("default", "my-adapter")?;     // loads in PEFT's PeftModel.from_pretrained
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod auto;
pub mod config;
pub mod error;
pub mod lora;
pub mod prompt;
pub mod prompt_encoder;

pub use auto::load_causal_lm;
pub use config::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, ClassifierDefaults, LoraConfig, LoraConfigBuilder, PEFT_TYPES,
    TargetModules, adapter_peft_type, classifier_defaults, default_targets, is_prompt_adapter,
};
pub use error::{PeftError, Result};
pub use lora::{KEY_PREFIX, ParamMut, PeftModel, TrainableReport};
pub use prompt::{PromptAdapter, PromptConfig, PromptDims, PromptMethod};
pub use prompt_encoder::{ENCODER_SIDECAR, EncoderKind, PromptEncoder};
