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
    /// A model produced a NaN or infinite score, probability or loss.
    #[error(
        "the {what} is {value}: the model produced a non-finite value (check its weights and settings)"
    )]
    NonFiniteOutput {
        /// What it is and where (`label score of row 3 (label 1)`, `evaluation loss after
        /// step 20`).
        what: String,
        /// The value.
        value: f64,
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
    /// A dataset could not be read.
    #[error(transparent)]
    Data(#[from] tilpass_data::DataError),
    /// A metric could not be computed.
    #[error(transparent)]
    Metrics(#[from] tilpass_metrics::MetricsError),
    /// A setting of a run config is outside the range it accepts.
    #[error("invalid setting `{setting}` = {value}: expected {expected}")]
    InvalidSetting {
        /// The setting's name in the run config (its flag is the kebab-case form).
        setting: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A run config names a setting the job does not have.
    #[error("unknown setting `{setting}`; the settings here are {known}")]
    UnknownSetting {
        /// The key given.
        setting: String,
        /// The settings there are.
        known: String,
    },
    /// A run config lacks a setting the job needs.
    #[error("missing setting `{setting}`: give --{flag} (or \"{setting}\" in --config)")]
    MissingSetting {
        /// The setting's name in the run config.
        setting: String,
        /// Its command-line flag (without the dashes).
        flag: String,
    },
    /// A run config could not be read (unknown key, wrong type, not a JSON object).
    #[error("{source_name}: {message}")]
    RunConfig {
        /// The file, or `command-line flags`.
        source_name: String,
        /// What serde reported (it names the key).
        message: String,
    },
    /// A row of an input file is malformed.
    #[error("{path}:{line}: {message}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
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

impl TrainError {
    /// An [`TrainError::InvalidSetting`].
    pub fn setting(
        setting: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidSetting {
            setting: setting.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
