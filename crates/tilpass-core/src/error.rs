//! The error type shared by every tilpass crate.
//!
//! Each crate has its own `thiserror` enum for what it alone can get wrong; all of them convert
//! into [`Error`] (through [`Error::Component`]) so applications can use one `Result` type.

use std::path::PathBuf;

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `tilpass-core`, plus a slot for the other crates' errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or quota) is full while writing: nothing partial is left in place (writes
    /// are atomic), and the earlier checkpoints are untouched.
    #[error(
        "{path}: no space left on the device: free some space (or keep fewer checkpoints: \
         save_total_limit) and resume from the last checkpoint"
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// A JSON file could not be parsed or did not have the expected structure.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What serde reported, with line and column.
        message: String,
    },
    /// A text file is not valid UTF-8.
    #[error(
        "{path}:{line}: invalid UTF-8 at byte {column} of the line (the file must be UTF-8 text)"
    )]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based byte of the line where the invalid sequence starts.
        column: usize,
    },
    /// A line of a text file is longer than the reader's limit.
    #[error(
        "{path}:{line}: the line is longer than {limit} bytes (the limit on one line; raise it \
         if the file really has such lines)"
    )]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A size taken from a file or an option implies more memory than the budget allows
    /// (see [`crate::limits::check_memory`]); nothing was allocated.
    #[error(
        "{what}: would need {} of memory, more than the {} allowed (the machine's memory, or \
         TILPASS_MEMORY_LIMIT)",
        crate::limits::human_bytes(u128::from(*bytes)),
        crate::limits::human_bytes(u128::from(*limit))
    )]
    TooLarge {
        /// The value(s) that imply the size, e.g. `config.json: vocab_size 10^12`.
        what: String,
        /// The bytes implied (`u64::MAX` for more).
        bytes: u64,
        /// The budget in bytes.
        limit: u64,
    },
    /// A path read from a file points outside the directory it must stay in.
    #[error("{file}: `{entry}` points outside the file's directory: {reason}")]
    PathEscapes {
        /// The file that names the path (e.g. `model.safetensors.index.json`).
        file: PathBuf,
        /// The path as written in the file.
        entry: String,
        /// Why it was rejected (absolute, `..`, a link leaving the directory).
        reason: String,
    },
    /// A required file is missing from a model directory.
    #[error("{dir}: no {what} found (looked for {looked_for})")]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// What was being looked for, e.g. "weights".
        what: String,
        /// The file names tried.
        looked_for: String,
    },
    /// A safetensors file is malformed.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A tensor that the caller needs is absent from the checkpoint.
    #[error("tensor `{name}` not found in {location}{hint}")]
    MissingTensor {
        /// The tensor's (remapped) name.
        name: String,
        /// The checkpoint directory or file.
        location: PathBuf,
        /// Close names, pre-formatted (empty when none).
        hint: String,
    },
    /// A tensor has a shape other than the expected one.
    #[error("tensor `{name}` in {file}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The file that holds it.
        file: PathBuf,
        /// The shape the caller expected.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype tilpass cannot convert to what was asked.
    #[error("tensor `{name}` in {file}: unsupported dtype {dtype} (expected {expected})")]
    UnsupportedDtype {
        /// The tensor's name.
        name: String,
        /// The file that holds it.
        file: PathBuf,
        /// The dtype found.
        dtype: String,
        /// What would have been accepted.
        expected: String,
    },
    /// Two source keys were renamed to the same key by a remapping.
    #[error("key remapping maps both `{first}` and `{second}` to `{target}`")]
    RemapCollision {
        /// First original key.
        first: String,
        /// Second original key.
        second: String,
        /// The key both map to.
        target: String,
    },
    /// A key-remapping pattern is not a valid regular expression.
    #[error("invalid key-remapping pattern `{pattern}`: {message}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// The regex error.
        message: String,
    },
    /// A device string could not be parsed.
    #[error(
        "invalid device `{spec}`: {reason}. Expected one of: flex, wgpu, wgpu-cpu, wgpu:N, cuda, cuda:N"
    )]
    InvalidDevice {
        /// The string given.
        spec: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The device names a backend that this build does not include.
    #[error(
        "device `{spec}` needs the `{feature}` backend, which this build of tilpass does not include (rebuild with `--features {feature}`)"
    )]
    BackendNotCompiled {
        /// The device string.
        spec: String,
        /// The cargo feature that enables the backend.
        feature: &'static str,
    },
    /// A configuration value is invalid.
    #[error("{context}: {message}")]
    InvalidConfig {
        /// Which config (file or struct) was being read.
        context: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Bad input that no other variant describes (a missing or conflicting option of a
    /// command, ...); the message says what was wrong and what is expected.
    #[error("{0}")]
    InvalidInput(String),
    /// An error from another tilpass crate.
    #[error("{0}")]
    Component(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    /// A full disk or quota becomes [`Error::DiskFull`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::DiskFull { path: path.into() }
            }
            _ => Error::Io {
                path: path.into(),
                source,
            },
        }
    }

    /// An [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Wraps a serde_json error with the path of the file being read.
    pub fn json(path: impl Into<PathBuf>, source: &serde_json::Error) -> Self {
        Error::Json {
            path: path.into(),
            message: source.to_string(),
        }
    }
}
