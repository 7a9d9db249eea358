//! # tilpass-models
//!
//! Language-model architectures as burn modules, loaded from Hugging Face model directories.
//!
//! Every architecture matches its reference (transformers, or the public modelling code for
//! LTG-BERT and NorT5) to 1e-4 on padded batches, on Flex and on wgpu.
//!
//! - **Decoders** — [`Llama`] (also Mistral: grouped-query attention, RoPE with `linear` and
//!   `llama3` scaling, sliding windows, optional biases, tied or untied head) and [`Gpt2`],
//!   behind [`DecoderLm::load`] (dispatch on `model_type`, single or sharded safetensors,
//!   bf16/f16 cast to f32) and [`DecoderLm::save`] (HF layout); left-padded batches, a
//!   [`KvCache`], [`generate()`] (greedy, temperature / top-k / top-p sampling, repetition
//!   penalty) and [`generate_text`] (stop strings, streamed text). [`DecoderClassifier`] is
//!   the same decoders with transformers' sequence-classification (reward) head (`score`, read
//!   at the last non-padding token).
//! - **Encoders** — [`Bert`] (masked LM, sequence and token classification, pooler) and
//!   [`LtgBert`] (NorBERT3) behind [`EncoderModel::load`]; sentence embeddings with
//!   sentence-transformers' pooling files through [`SentenceEmbedder`]; [`ProblemType`] for
//!   class probabilities.
//! - **Encoder-decoders** — [`T5`] (v1.0, T5.1.1 / mT5) and [`NorT5`] behind
//!   [`Seq2SeqLm::load`], with a decoder cache and [`generate_seq2seq`] (greedy, sampling and
//!   transformers' beam search).
//! - **Any directory** — [`AnyModel::load`] picks the family from `model_type` and the task
//!   head from `architectures` as transformers does ([`ModelKind`], [`Head`]), and
//!   [`AnyModel::logits`] gives one sequence's logits whatever the head.
//! - **Parameter tables** — each family names its Hugging Face tensors in one place
//!   ([`params`]: `llama_params`, `gpt2_params`, `bert_params`, `ltg_bert_params`, `t5_params`,
//!   `nort5_params`): module path, layer kind, shape from the config, adapter target. Loading
//!   ([`params::Loader`]), saving ([`params::hf_tensors`]), [`HasLinears`] names and
//!   [`create_llama`] are derived from it.
//!
//! Shared layers live in `attention`, `rope`, `norm`, `mlp`, `kv_cache`, `linear` (with the
//! LoRA branch) and `embedding` (re-exported together from `layers`); `decoder_family` and
//! `enc_dec` hold what the decoder and encoder-decoder families share with their wrappers.
//!
//! ```no_run
//! use tilpass_models::{EncoderInput, Seq2SeqConfig, Seq2SeqLm, SentenceEmbedder, generate_seq2seq};
//! use tilpass_tokenize::{Batch, Padding};
//! # fn demo(device: &burn::tensor::Device) -> tilpass_models::Result<()> {
//! // Sentence embeddings: token ids (with special tokens) per sentence → one vector each.
//! let embedder = SentenceEmbedder::load("all-MiniLM-L6-v2", device)?;
//! let vectors = embedder.embed_ids(&[vec![101, 2023, 2003, 102]], 32)?;
//! // Beam search with a T5 or NorT5 model.
//! let t5 = Seq2SeqLm::load("nort5-base", device)?;
//! let input = EncoderInput::from_batch(&Batch::from_ids(&[vec![37, 423, 1]], Padding::right(0)))?;
//! let cfg = Seq2SeqConfig { num_beams: 4, max_new_tokens: 40, ..Default::default() };
//! let tokens = generate_seq2seq(&t5, &input, &cfg)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod attention;
pub mod auto;
pub mod bert;
pub mod config;
pub mod decoder;
pub mod decoder_classifier;
pub mod decoder_family;
pub mod decoder_kernels;
pub mod embed;
pub mod embedding;
pub mod enc_dec;
pub mod encoder;
pub mod encoder_kernels;
pub mod error;
pub mod generate;
pub mod gpt2;
pub mod head_loss;
pub mod host_gemm;
pub mod init;
pub mod kv_cache;
pub mod layers;
pub mod linear;
pub mod llama;
pub mod ltg_bert;
pub mod matvec;
pub mod mlp;
pub mod norm;
pub mod nort5;
pub mod params;
pub mod pool;
pub mod rope;
pub mod seq2seq;
pub mod t5;
#[cfg(feature = "flex")]
pub mod train_kernels;
pub mod validate;
pub mod vmath;

pub use auto::{AnyModel, Family, Head, Logits, ModelKind, supported_model_types};
pub use bert::{Bert, BertConfig, BertHeadKind};
pub use config::{RopeParameters, TokenIds};
pub use decoder::{DecoderFamily, DecoderInput, DecoderLm, SUPPORTED_DECODERS, shifted_log_probs};
pub use decoder_classifier::{DecoderClassifier, ScoreInit};
pub use embed::{EncoderModel, PoolingConfig, SUPPORTED_ENCODERS, SentenceEmbedder, cosine};
pub use enc_dec::{EncoderOutput, T5Cache};
pub use encoder::{
    Activation, EncoderInput, PoolingMode, ProblemType, SequenceClassifier, key_padding_mask,
    labels_from, pool,
};
pub use error::{ModelError, Result};
pub use generate::{
    GenerateConfig, Generation, Sampler, StopReason, VirtualPrefix, apply_repetition_penalty,
    generate, generate_greedy, generate_text, generate_text_with_prefix, generate_with_prefix,
    next_token,
};
pub use gpt2::{Gpt2, Gpt2Config};
pub use init::create_llama;
pub use layers::{HasLinears, KvCache, Linear, LoraBranch, causal_mask};
pub use llama::{Llama, LlamaConfig};
pub use ltg_bert::{LtgBert, LtgBertConfig};
pub use matvec::WeightDtype;
pub use nort5::{NorT5, NorT5Config};
pub use params::{ParamKind, ParamSpec, ParamTable};
pub use seq2seq::{
    EarlyStopping, SUPPORTED_SEQ2SEQ, Seq2SeqConfig, Seq2SeqLm, Seq2SeqModel, generate_seq2seq,
    generate_seq2seq_stream, generate_seq2seq_text, is_encoder_decoder,
};
pub use t5::{T5, T5Config, t5_bucket};
