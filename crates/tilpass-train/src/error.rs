//! Errors of `tilpass-train`.

/// Errors of training; each names the step, batch or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing files failed.
    #[error(transparent)]
    Core(#[from] tilpass_core::Error),
    /// A model error.
    #[error(transparent)]
    Model(#[from] tilpass_models::ModelError),
    /// An adapter error.
    #[error(transparent)]
    Peft(#[from] tilpass_peft::PeftError),
    /// A tokenizer error (encoding data, decoding samples).
    #[error(transparent)]
    Tokenize(#[from] tilpass_tokenize::TokenizeError),
    /// The loss became NaN or infinite.
    #[error(
        "the loss is {value} at step {step} (batch {batch}): training stopped; lower the learning rate or check the data"
    )]
    NonFinite {
        /// Optimiser step (0-based).
        step: usize,
        /// Index of the batch in the training set.
        batch: usize,
        /// The loss value.
        value: f32,
    },
    /// A batch has no supervised token.
    #[error("batch {batch} has no supervised token (every label is -100)")]
    NoSupervision {
        /// Index of the batch.
        batch: usize,
    },
    /// Invalid settings or data.
    #[error("{0}")]
    Config(String),
    /// The checkpoint does not belong to this run.
    #[error("{path}: {message}")]
    Resume {
        /// The checkpoint.
        path: String,
        /// Why it cannot be resumed.
        message: String,
    },
}

impl From<TrainError> for tilpass_core::Error {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Core(c) => c,
            other => tilpass_core::Error::Component(Box::new(other)),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
