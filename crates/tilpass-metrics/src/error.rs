//! Errors of the text metrics.

/// What went wrong computing a metric.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Hypotheses and references (or other paired inputs) of different lengths.
    #[error("{what} has {found} lines, expected {expected} (one per hypothesis)")]
    LengthMismatch {
        /// Which input.
        what: String,
        /// Lines expected.
        expected: usize,
        /// Lines found.
        found: usize,
    },
    /// An invalid setting or input.
    #[error("{0}")]
    Invalid(String),
    /// A row of an input file is malformed.
    #[error("{path}:{line}: {message}")]
    Input {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An input file could not be read, is not UTF-8 or has an over-long line (the error
    /// names the file and line).
    #[error(transparent)]
    File(#[from] tilpass_core::Error),
}

/// Result of the metrics crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

impl From<MetricsError> for tilpass_core::Error {
    fn from(e: MetricsError) -> Self {
        tilpass_core::Error::Component(Box::new(e))
    }
}
