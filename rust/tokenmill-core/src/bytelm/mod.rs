//! Exact byte-level language models from BPE language models (issue #6).
//!
//! A token-level model defines a distribution over texts: sample tokens until end-of-text and
//! concatenate their bytes. The probability that a text starts with the bytes `x` is then the
//! sum, over the *cover encodings* of `x` (token sequences whose bytes without the last token
//! are a strict prefix of `x` and whose full bytes start with `x`), of the model's probability
//! of the sequence (the byte-token representation lemma of Phan et al., 2410.09303). Next-byte
//! probabilities are ratios of such sums. Under *canonical semantics* only sequences that the
//! tokenizer can produce count: prefixes of the canonical encoding of some text; the mass the
//! model puts on other sequences is reported as leaked, not redistributed silently.
//!
//! The pieces, one file per concept:
//! - [`vocab`]: the vocabulary sorted by bytes, so that the tokens starting with a given byte
//!   string are one contiguous range;
//! - [`canon`]: canonical encoding of arbitrary bytes (invalid UTF-8 included), the *stable
//!   point* before which every extension of the text is tokenized the same way, and the test
//!   "is this token sequence a prefix of the canonical encoding of some extension";
//! - [`pairs`]: the canonical-pair test from the merge priorities;
//! - [`fast`]: a per-node pre-tokenizer check that reject most
//!   invalid (node, token) pairs without trying extensions;
//! - [`tree`]: the covering tree: the canonical trunk up to the stable point plus every valid
//!   token path through the short window after it (the paths shared by all covers);
//! - [`marginal`]: next-token distributions at the tree's nodes folded into 257 bins (256 bytes
//!   and end of text) by range masses over the sorted vocabulary;
//! - [`fold`]: the vectorised inner loop of a node that meets the whole vocabulary;
//! - [`softmax`]: the model's logits rows as log-probabilities.
//!
//! The model itself is not here: the Python layer runs it on the tree's nodes (one batched
//! forward with a tree attention mask) and hands the log-probabilities back.

mod canon;
mod fast;
mod fold;
mod marginal;
mod pairs;
mod softmax;
#[cfg(test)]
mod tests;
mod tree;
mod vocab;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use rustc_hash::FxHashMap;

use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::pretokenize::KNOWN_PATTERNS;
use crate::Rank;

pub use marginal::Marginal;
pub use softmax::{log_softmax_rows, row_norms, Logit, Norm, Row, Values};
pub use tree::Tree;
pub use vocab::SortedVocab;

/// Completion keys by the bytes of a cut character, see [`fast::completion_keys`].
type CompletionCache = FxHashMap<Vec<u8>, std::sync::Arc<Vec<Vec<u8>>>>;

/// Rules after a node by (node path, lookahead key), see [`fast`].
type CutCache = FxHashMap<(Vec<Rank>, Vec<u8>), fast::Rule>;

/// A tokenizer prepared for byte-level inference.
#[derive(Debug)]
pub struct ByteLm {
    enc: Encoding,
    vocab: SortedVocab,
    /// Extensions tried when a token sequence is not itself a canonical encoding (see
    /// [`ByteLm::is_valid`]).
    probes: Vec<Vec<u8>>,
    /// Validity of short window paths, which repeat from one byte to the next.
    valid_cache: Mutex<FxHashMap<Vec<Rank>, bool>>,
    /// Each token's lookahead key, interned, see [`fast::TokenKeys`].
    token_keys: fast::TokenKeys,
    /// Each token's merges on its own bytes, for the canonical-pair test ([`pairs`]).
    histories: pairs::Histories,
    /// What the pre-tokenizer's cut after a node says about the tokens with one lookahead key,
    /// keyed by (node path, key), see [`fast`].
    cut_cache: Mutex<CutCache>,
    /// `is_valid(&[id])` by token id (0: not computed yet, 1: invalid, 2: valid): asked for
    /// every token of the vocabulary at the root of every tree, so a table, not a hash map.
    start_valid: Vec<AtomicU8>,
    /// Validity of (node path + token) by token id, per node path, see `marginal::Check`.
    node_states: Mutex<FxHashMap<Vec<Rank>, Vec<u8>>>,
    /// [`fast::completion_keys`] by the bytes of the cut character.
    completion_cache: Mutex<CompletionCache>,
    /// Each token's first byte by token id (0 for a slot without bytes), for [`fold`].
    first_byte: Vec<u8>,
}

impl ByteLm {
    /// Refuses what it cannot handle exactly: a pre-tokenizer pattern without an exact
    /// scanner (the stable-point rule of [`canon`] is established for those patterns only) and
    /// vocabularies missing some single byte (not every byte string would be encodable).
    pub fn new(enc: Encoding) -> Result<Self> {
        if !KNOWN_PATTERNS.contains(&enc.pattern()) {
            return Err(Error::Unsupported(format!(
                "byte-level inference needs one of the known pre-tokenizer patterns (GPT-2, \
                 cl100k, Llama-3, Qwen2, o200k); this tokenizer uses {:?}",
                enc.pattern()
            )));
        }
        let bpe = enc.bpe();
        if let Some(b) = (0..=255u8).find(|&b| bpe.token_id(&[b]).is_none()) {
            return Err(Error::Unsupported(format!(
                "byte-level inference needs a token for every single byte; byte 0x{b:02x} has none"
            )));
        }
        let vocab = SortedVocab::new(bpe);
        let start_valid = (0..bpe.n_slots()).map(|_| AtomicU8::new(0)).collect();
        let histories = pairs::Histories::new(bpe);
        let token_keys = fast::TokenKeys::new(bpe);
        let first_byte = (0..bpe.n_slots())
            .map(|id| bpe.token_bytes(id as Rank).map_or(0, |b| b[0]))
            .collect();
        Ok(ByteLm {
            enc,
            vocab,
            probes: canon::probes(),
            valid_cache: Mutex::new(FxHashMap::default()),
            histories,
            token_keys,
            cut_cache: Mutex::new(FxHashMap::default()),
            start_valid,
            node_states: Mutex::new(FxHashMap::default()),
            completion_cache: Mutex::new(FxHashMap::default()),
            first_byte,
        })
    }

    /// `is_valid(&[id])`, memoised in a table.
    pub fn is_valid_at_start(&self, id: Rank) -> Result<bool> {
        let Some(slot) = self.start_valid.get(id as usize) else {
            return self.is_valid(&[id]);
        };
        match slot.load(Ordering::Relaxed) {
            1 => Ok(false),
            2 => Ok(true),
            _ => {
                let v = self.is_valid_uncached(&[id])?;
                slot.store(1 + v as u8, Ordering::Relaxed);
                Ok(v)
            }
        }
    }

    pub fn encoding(&self) -> &Encoding {
        &self.enc
    }

    pub fn vocab(&self) -> &SortedVocab {
        &self.vocab
    }

    /// Bytes of an ordinary token.
    pub fn token_bytes(&self, id: Rank) -> Result<&[u8]> {
        self.enc
            .bpe()
            .token_bytes(id)
            .ok_or(Error::UnknownTokenId(id))
    }

    fn path_bytes(&self, path: &[Rank]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in path {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }
}
