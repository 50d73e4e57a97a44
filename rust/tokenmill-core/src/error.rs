//! Typed errors. Every failure a user can cause is one of these; the Python binding maps each
//! variant to a specific exception class, so nothing reaches Python as a panic.

use crate::Rank;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A tokenizer file (or in-memory description) is malformed. `source_name` names the file or
    /// argument, `message` the problem and, where there is one, the line.
    #[error("{source_name}: {message}")]
    InvalidFile {
        source_name: String,
        message: String,
    },

    /// The vocabulary itself is inconsistent (duplicate ranks, missing single bytes, ...).
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),

    /// A pre-tokenizer pattern does not compile.
    #[error("invalid pattern {pattern:?}: {message}")]
    InvalidPattern { pattern: String, message: String },

    /// The regex engine gave up on an input (e.g. its backtracking limit).
    #[error("pattern matching failed: {0}")]
    RegexRuntime(String),

    /// Text contains a special token that the caller did not allow (tiktoken semantics).
    #[error(
        "Encountered text corresponding to disallowed special token {token:?}.\n\
         If you want this text to be encoded as a special token, pass it to `allowed_special`, \
         e.g. `allowed_special={{{token:?}, ...}}`.\n\
         If you want this text to be encoded as normal text, disable the check for this token \
         by passing `disallowed_special=(enc.special_tokens_set - {{{token:?}}})`.\n\
         To disable this check for all special tokens, pass `disallowed_special=()`.\n"
    )]
    DisallowedSpecial { token: String },

    /// A token id that the vocabulary does not have (decode).
    #[error("Invalid token for decoding: {0}")]
    UnknownTokenId(Rank),

    /// A byte string / token string that is not a single token.
    #[error("not a single token: {0:?}")]
    UnknownToken(String),

    /// A feature of a tokenizer file that tokenmill cannot honour exactly.
    #[error("unsupported tokenizer feature: {0}")]
    Unsupported(String),

    /// A caller-supplied argument is out of range or inconsistent.
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn file(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            source_name: source_name.into(),
            message: message.into(),
        }
    }
}
