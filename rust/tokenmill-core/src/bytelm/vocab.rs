//! The ordinary vocabulary sorted by bytes: the tokens that start with a given byte string form
//! one contiguous range, found by two binary searches.

use crate::bpe::Bpe;
use crate::Rank;

#[derive(Debug, Clone)]
pub struct SortedVocab {
    /// Token ids in lexicographic order of their bytes.
    ids: Vec<Rank>,
    /// Bytes of `ids[i]`, copied here so that range searches touch one array.
    bytes: Vec<Box<[u8]>>,
    max_len: usize,
}

impl SortedVocab {
    pub fn new(bpe: &Bpe) -> Self {
        let mut pairs: Vec<(&[u8], Rank)> = bpe.vocab().collect();
        pairs.sort_unstable();
        let max_len = pairs.iter().map(|(b, _)| b.len()).max().unwrap_or(0);
        SortedVocab {
            ids: pairs.iter().map(|&(_, id)| id).collect(),
            bytes: pairs.iter().map(|&(b, _)| b.into()).collect(),
            max_len,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    #[inline]
    pub fn id(&self, i: usize) -> Rank {
        self.ids[i]
    }

    #[inline]
    pub fn bytes(&self, i: usize) -> &[u8] {
        &self.bytes[i]
    }

    /// Positions `lo..hi` of the tokens whose bytes start with `prefix` (all tokens for "").
    pub fn prefix_range(&self, prefix: &[u8]) -> std::ops::Range<usize> {
        let lo = self.bytes.partition_point(|b| &b[..] < prefix);
        let hi = lo
            + self.bytes[lo..]
                .partition_point(|b| b.len() >= prefix.len() && &b[..prefix.len()] == prefix);
        lo..hi
    }
}
