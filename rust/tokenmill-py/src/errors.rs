//! The one mapping from core errors to Python exceptions. Each class subclasses the builtin a
//! tiktoken / tokenizers user already catches (ValueError, KeyError, NotImplementedError).

use pyo3::create_exception;
use pyo3::exceptions::{PyKeyError, PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokenmill_core::Error;

create_exception!(
    tokenmill,
    TokenmillError,
    PyValueError,
    "Base class of tokenmill's ValueErrors."
);
create_exception!(
    tokenmill,
    InvalidFileError,
    TokenmillError,
    "A tokenizer file is malformed."
);
create_exception!(
    tokenmill,
    InvalidVocabError,
    TokenmillError,
    "A vocabulary is inconsistent."
);
create_exception!(
    tokenmill,
    InvalidPatternError,
    TokenmillError,
    "A pre-tokenizer pattern does not compile."
);
create_exception!(
    tokenmill,
    PatternMatchError,
    TokenmillError,
    "The regex engine gave up on an input."
);
create_exception!(
    tokenmill,
    DisallowedSpecialTokenError,
    TokenmillError,
    "Text contains a special token that was not allowed."
);
create_exception!(
    tokenmill,
    UnknownTokenError,
    PyKeyError,
    "A token id or token that the vocabulary does not have."
);
create_exception!(
    tokenmill,
    UnsupportedFeatureError,
    PyNotImplementedError,
    "A tokenizer feature that tokenmill cannot reproduce exactly."
);

pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidFile { .. } => InvalidFileError::new_err(msg),
        Error::InvalidVocab(_) => InvalidVocabError::new_err(msg),
        Error::InvalidPattern { .. } => InvalidPatternError::new_err(msg),
        Error::RegexRuntime(_) => PatternMatchError::new_err(msg),
        Error::DisallowedSpecial { .. } => DisallowedSpecialTokenError::new_err(msg),
        Error::UnknownTokenId(_) | Error::UnknownToken(_) => UnknownTokenError::new_err(msg),
        Error::Unsupported(_) => UnsupportedFeatureError::new_err(msg),
        Error::InvalidArgument(_) => TokenmillError::new_err(msg),
    }
}

pub(crate) fn internal(panic: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    PyRuntimeError::new_err(format!("tokenmill internal error (please report): {what}"))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TokenmillError", py.get_type::<TokenmillError>())?;
    m.add("InvalidFileError", py.get_type::<InvalidFileError>())?;
    m.add("InvalidVocabError", py.get_type::<InvalidVocabError>())?;
    m.add("InvalidPatternError", py.get_type::<InvalidPatternError>())?;
    m.add("PatternMatchError", py.get_type::<PatternMatchError>())?;
    m.add(
        "DisallowedSpecialTokenError",
        py.get_type::<DisallowedSpecialTokenError>(),
    )?;
    m.add("UnknownTokenError", py.get_type::<UnknownTokenError>())?;
    m.add(
        "UnsupportedFeatureError",
        py.get_type::<UnsupportedFeatureError>(),
    )?;
    Ok(())
}
