//! # tilpass-models
//!
//! Language-model architectures as burn modules, loaded from Hugging Face model directories.
//!
//! Implemented so far (issue 3, in progress): the decoders [`Llama`] (also Mistral, with
//! sliding-window attention; grouped-query attention, RoPE with `linear` and `llama3`
//! scaling, optional biases, tied or untied head) and [`Gpt2`], behind [`DecoderLm::load`]
//! (dispatch on `model_type`, single or sharded safetensors, bf16/f16 cast to f32); padded
//! batches; a [`KvCache`]; [`generate`] (greedy, temperature / top-k / top-p sampling,
//! repetition penalty, stop strings and streamed text through [`generate_text`]).
//!
//! Planned: encoders and encoder-decoders (`bert`,
//! `ltg_bert`, `t5`, `nort5`, issue 4); classification and embedding heads.

#![warn(missing_docs)]

pub mod bert;
pub mod config;
pub mod decoder;
pub mod embed;
pub mod encoder;
pub mod error;
pub mod generate;
pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod ltg_bert;
pub mod nort5;
pub mod seq2seq;
pub mod t5;

pub use bert::{Bert, BertConfig, BertHeadKind};
pub use config::{Gpt2Config, LlamaConfig, RopeParameters, TokenIds};
pub use decoder::{DecoderInput, DecoderLm, SUPPORTED_DECODERS, shifted_log_probs};
pub use embed::{EncoderModel, PoolingConfig, SUPPORTED_ENCODERS, SentenceEmbedder, cosine};
pub use encoder::{
    Activation, EncoderInput, PoolingMode, ProblemType, key_padding_mask, labels_from, pool,
};
pub use error::{ModelError, Result};
pub use generate::{
    GenerateConfig, Generation, Sampler, StopReason, apply_repetition_penalty, generate,
    generate_greedy, generate_text, next_token,
};
pub use gpt2::Gpt2;
pub use layers::{KvCache, causal_mask};
pub use llama::Llama;
pub use ltg_bert::{LtgBert, LtgBertConfig};
pub use nort5::{NorT5, NorT5Config};
pub use seq2seq::{
    EarlyStopping, SUPPORTED_SEQ2SEQ, Seq2SeqConfig, Seq2SeqLm, Seq2SeqModel, generate_seq2seq,
};
pub use t5::{EncoderOutput, T5, T5Cache, T5Config, t5_bucket};
