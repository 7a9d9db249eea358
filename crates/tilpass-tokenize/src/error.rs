//! Errors of `tilpass-tokenize`.

use std::path::PathBuf;

/// Errors of `tilpass-tokenize`; each names the file, template or example concerned.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer directory lacks the files needed to build a tokenizer.
    #[error("{dir}: no tokenizer found (looked for {looked_for})")]
    MissingTokenizer {
        /// The directory.
        dir: PathBuf,
        /// The file names tried.
        looked_for: String,
    },
    /// The `tokenizers` library rejected a file or an input.
    #[error("{context}: {message}")]
    Tokenizer {
        /// The file or operation.
        context: String,
        /// The library's message.
        message: String,
    },
    /// A JSON configuration file is malformed.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's description.
        message: String,
    },
    /// A chat template failed to compile or render.
    #[error("chat template `{name}`: {message}")]
    Template {
        /// Template name (`default`, `tool_use`, a file path, ...).
        name: String,
        /// What went wrong, with the template line when known.
        message: String,
    },
    /// Rendering a template went past one of its [`crate::chat_template::TemplateLimits`].
    #[error(
        "chat template `{name}`: {message} (limit `{limit}`; raise it in TemplateLimits only for \
         a template you trust)"
    )]
    TemplateLimit {
        /// Template name.
        name: String,
        /// The limit: `fuel` or `max_output_bytes`.
        limit: String,
        /// What went past it, with the template line when known.
        message: String,
    },
    /// The template itself called `raise_exception(...)`.
    #[error("chat template `{name}` rejected the conversation: {message}")]
    TemplateRaised {
        /// Template name.
        name: String,
        /// The template's message.
        message: String,
    },
    /// The tokenizer has no chat template and none was given.
    #[error(
        "{context}: the tokenizer has no chat template; pass one (e.g. --chat-template chatml) or use a built-in (`chatml`, `norsk`)"
    )]
    NoChatTemplate {
        /// The tokenizer directory.
        context: String,
    },
    /// A requested named template does not exist.
    #[error("no chat template named `{name}`; available: {available}")]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// The names the tokenizer has.
        available: String,
    },
    /// An example has no token to learn from after masking and truncation.
    #[error("example {index}: no supervised token ({reason})")]
    NoSupervisedTokens {
        /// Index of the example in its dataset.
        index: usize,
        /// Why, e.g. "the conversation has no assistant turn".
        reason: String,
    },
    /// An example is longer than allowed and the policy says to fail.
    #[error(
        "example {index}: {len} tokens exceed max_length {max_length} (truncation policy `error`)"
    )]
    TooLong {
        /// Index of the example.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max_length: usize,
    },
    /// A record of the wrong kind for the operation.
    #[error("example {index}: {message}")]
    UnsupportedRecord {
        /// Index of the example.
        index: usize,
        /// What was expected.
        message: String,
    },
    /// A row cannot go into a padded batch (a field of the wrong length, too many packed
    /// documents).
    #[error("batch row {row}: {message}")]
    BatchRow {
        /// Index of the row in the batch.
        row: usize,
        /// What is wrong, with the expected and found sizes.
        message: String,
    },
    /// Invalid option or argument.
    #[error("{0}")]
    Invalid(String),
    /// A file is not UTF-8 (naming its line), or an option implies more memory than allowed
    /// ([`tilpass_core::Error::TooLarge`]).
    #[error(transparent)]
    Core(#[from] tilpass_core::Error),
}

impl From<TokenizeError> for tilpass_core::Error {
    fn from(e: TokenizeError) -> Self {
        match e {
            TokenizeError::Core(c) => c,
            other => tilpass_core::Error::Component(Box::new(other)),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TokenizeError> = std::result::Result<T, E>;

pub(crate) fn tk_err(
    context: impl Into<String>,
) -> impl FnOnce(tokenizers::Error) -> TokenizeError {
    let context = context.into();
    move |e| TokenizeError::Tokenizer {
        context,
        message: e.to_string(),
    }
}
