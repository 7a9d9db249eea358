//! Errors of `tilpass-preference`.

/// Errors of the preference losses; each names the setting or tensor concerned and what was
/// expected. They are raised before any loss is computed.
#[derive(Debug, thiserror::Error)]
pub enum PreferenceError {
    /// A setting is outside the range it accepts.
    #[error("invalid setting `{setting}` = {value}: expected {expected}")]
    InvalidSetting {
        /// The setting's name (TRL's config name).
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// Settings that are valid alone but not together (TRL refuses the combination).
    #[error("settings `{setting}` and `{other}` do not go together: {reason}")]
    Incompatible {
        /// The first setting's name.
        setting: &'static str,
        /// The setting it conflicts with.
        other: &'static str,
        /// Why.
        reason: String,
    },
    /// An input tensor (or list) has the wrong shape or length.
    #[error("input `{input}` has shape {got}: expected {expected}")]
    Shape {
        /// The input's name.
        input: &'static str,
        /// The shape or length given.
        got: String,
        /// The shape or length expected.
        expected: String,
    },
    /// An input holds a NaN or an infinity, or a value outside its domain.
    #[error("input `{input}` has {value} at index {index}: expected {expected}")]
    BadValue {
        /// The input's name.
        input: &'static str,
        /// Flat index of the first bad element.
        index: usize,
        /// The value found.
        value: f64,
        /// What the input must hold.
        expected: &'static str,
    },
    /// An input the configured loss needs was not given.
    #[error("input `{input}` is required by {needed_by}")]
    MissingInput {
        /// The input's name.
        input: &'static str,
        /// The setting that needs it.
        needed_by: String,
    },
    /// A tensor could not be read back from its device.
    #[error("reading input `{input}` from the device failed: {message}")]
    Read {
        /// The input's name.
        input: &'static str,
        /// What burn reported.
        message: String,
    },
    /// The model failed (a forward pass, bad token ids).
    #[error(transparent)]
    Model(#[from] tilpass_models::ModelError),
    /// The adapters could not be disabled (e.g. while merged).
    #[error(transparent)]
    Peft(#[from] tilpass_peft::PeftError),
    /// The training loop failed (settings, checkpoints, a non-finite loss, ...).
    #[error(transparent)]
    Train(#[from] tilpass_train::TrainError),
}

/// `Result` with [`PreferenceError`].
pub type Result<T> = std::result::Result<T, PreferenceError>;

impl From<PreferenceError> for tilpass_core::Error {
    fn from(e: PreferenceError) -> Self {
        match e {
            PreferenceError::Train(t) => t.into(),
            other => tilpass_core::Error::Component(Box::new(other)),
        }
    }
}
