//! tokenmill-core: exact byte-level BPE, pure Rust.
//!
//! The crate is organised by concept:
//! - [`pretokenize`]: splitting text into pieces with the regexes of the tiktoken/HF family,
//!   through exact hand-written scanners for the known patterns and a general regex engine
//!   for everything else;
//! - [`bpe`]: the merge loop itself, on token ids with a pair table, near-linear worst case;
//! - [`encoding`]: a tiktoken-style encoding (pattern + ranks + special tokens);
//! - [`hf`]: Hugging Face `tokenizer.json` files (byte-level BPE models);
//! - [`train`]: BPE training;
//! - [`bytelm`]: exact next-byte probabilities from token-level language models;
//! - [`speculative`]: n-gram drafters, draft trees and lossless tree verification.
//!
//! Nothing here knows about Python; `tokenmill-py` is a thin binding over these types.

pub mod bpe;
pub mod bytelm;
pub mod bytes_unicode;
pub mod encoding;
pub mod error;
pub mod hf;
mod normalize;
pub mod pretokenize;
mod simd;
pub mod speculative;
mod str_table;
pub mod tiktoken_file;
mod token_table;
pub mod train;

pub use encoding::Encoding;
pub use error::{Error, Result};
pub use hf::HfTokenizer;

/// Token id type, as in tiktoken (`Rank`) and HF tokenizers (`u32`).
pub type Rank = u32;
