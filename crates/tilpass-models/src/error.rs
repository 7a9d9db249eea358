//! Errors of `tilpass-models`.

/// Errors of `tilpass-models`; each names the file, tensor or input concerned.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading the checkpoint or config failed (missing or mis-shaped tensor, bad JSON, ...).
    #[error(transparent)]
    Core(#[from] tilpass_core::Error),
    /// `config.json` names an architecture tilpass does not implement.
    #[error("{path}: unsupported model_type `{model_type}`; supported: {supported}")]
    UnsupportedModelType {
        /// The config file.
        path: String,
        /// The `model_type` found.
        model_type: String,
        /// The supported ones.
        supported: String,
    },
    /// `config.json`'s `architectures` names a class (a task head) tilpass does not implement
    /// for that family.
    #[error(
        "{path}: unsupported architecture `{architecture}` (model_type `{model_type}`); supported for {model_type}: {supported}"
    )]
    UnsupportedArchitecture {
        /// The config file.
        path: String,
        /// The class named in `architectures[0]`.
        architecture: String,
        /// The `model_type` found.
        model_type: String,
        /// The heads tilpass implements for this family.
        supported: String,
    },
    /// A config value that would divide by zero or makes no sense (zero heads, a hidden size
    /// the heads do not divide, a non-positive epsilon, ...); see the configs' `validate()`.
    #[error("{path}: `{field}` {message}")]
    InvalidConfig {
        /// The config file (or `config` when validated outside a load).
        path: String,
        /// The field, e.g. `num_attention_heads` or `rope_scaling.factor`.
        field: String,
        /// What is wrong and what was found.
        message: String,
    },
    /// A config option tilpass does not implement.
    #[error("{path}: {message}")]
    UnsupportedConfig {
        /// The config file.
        path: String,
        /// Which option and why.
        message: String,
    },
    /// `config.json` declares an untied LM head but the checkpoint does not hold it.
    #[error(
        "{path}: `tie_word_embeddings` is false (an untied LM head) but the checkpoint has no \
         `{tensor}`"
    )]
    MissingLmHead {
        /// The config file.
        path: String,
        /// The tensor that was expected (`lm_head.weight`).
        tensor: String,
    },
    /// A task class needs a head tensor that the checkpoint does not hold (a causal-LM
    /// checkpoint loaded as a sequence classifier without asking for a new head).
    #[error(
        "{path}: loading as {class} needs `{tensor}`, which the checkpoint does not hold (a \
         causal-LM checkpoint has no score head: start a new one, as `tilpass train reward` does)"
    )]
    MissingHead {
        /// The config file.
        path: String,
        /// The tensor that was expected (`score.weight`).
        tensor: String,
        /// The class being loaded (`LlamaForSequenceClassification`).
        class: String,
    },
    /// A decoder sequence classifier without `pad_token_id` was given several rows: it cannot
    /// tell where each row ends (transformers: "Cannot handle batch sizes > 1 if no padding
    /// token is defined").
    #[error(
        "cannot score a batch of {batch} rows without a pad_token_id: set `pad_token_id` in \
         config.json (TRL uses the tokenizer's pad token, else its EOS) or score one row at a \
         time"
    )]
    NoPadToken {
        /// Rows in the batch.
        batch: usize,
    },
    /// The input is longer than the model's context.
    #[error("sequence of {len} tokens exceeds the model's context of {max} positions")]
    TooLong {
        /// Tokens asked for (prompt + new tokens).
        len: usize,
        /// `max_position_embeddings` / `n_positions`.
        max: usize,
    },
    /// The detokenizer given to [`crate::generate_text`] failed.
    #[error("decoding generated tokens failed: {0}")]
    Decode(String),
    /// Inputs of inconsistent shapes.
    #[error("invalid input: {0}")]
    Input(String),
}

impl From<ModelError> for tilpass_core::Error {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Core(c) => c,
            other => tilpass_core::Error::Component(Box::new(other)),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
