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
}

/// Result of the metrics crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

impl From<MetricsError> for tilpass_core::Error {
    fn from(e: MetricsError) -> Self {
        tilpass_core::Error::Component(Box::new(e))
    }
}
