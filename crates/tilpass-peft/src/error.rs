//! Errors of `tilpass-peft`.

/// Errors of `tilpass-peft`; each names the adapter, module or tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// Reading or writing files failed.
    #[error(transparent)]
    Core(#[from] tilpass_core::Error),
    /// A model error.
    #[error(transparent)]
    Model(#[from] tilpass_models::ModelError),
    /// `target_modules` matched no layer of the model.
    #[error(
        "target_modules {targets} matched no linear layer of this {model_type} model; its layers are named {candidates}"
    )]
    NoTargets {
        /// The targets asked for.
        targets: String,
        /// The model's `model_type`.
        model_type: String,
        /// The last path components available (`q_proj, k_proj, ...`).
        candidates: String,
    },
    /// A configuration value is invalid.
    #[error("invalid adapter config: {0}")]
    Config(String),
    /// The adapter file does not fit the model (another architecture or size).
    #[error("{path}: {message}")]
    Mismatch {
        /// The adapter file.
        path: String,
        /// What does not fit.
        message: String,
    },
    /// No adapter of that name on the model.
    #[error("no adapter named `{0}` on the model")]
    UnknownAdapter(String),
    /// An adapter of that name already exists.
    #[error("an adapter named `{0}` already exists")]
    DuplicateAdapter(String),
}

impl From<PeftError> for tilpass_core::Error {
    fn from(e: PeftError) -> Self {
        match e {
            PeftError::Core(c) => c,
            other => tilpass_core::Error::Component(Box::new(other)),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = PeftError> = std::result::Result<T, E>;
