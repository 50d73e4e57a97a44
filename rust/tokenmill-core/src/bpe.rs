//! Byte-pair encoding of one pre-tokenized piece.
//!
//! # One merge rule for tiktoken and Hugging Face
//! Both libraries repeatedly merge the adjacent pair with the lowest priority, leftmost first
//! on ties. They differ only in what the priority is:
//! - tiktoken: the rank of the merged bytes (which is also the merged token's id);
//! - Hugging Face: the index of the pair in the `merges` list.
//!
//! So both are compiled into one pair table `(left id, right id) -> (priority, merged id)` and
//! one merge loop serves both. For tiktoken the table is derived from the ranks: tiktoken's
//! byte-slice lookups find every split of a token into two tokens, but only one split of each
//! token can ever be selected, and only that one is entered ([`Bpe::merged_pairs`]).
//!
//! # Worst case
//! tiktoken rescans all pairs after every merge: O(n^2) for an n-byte piece, and the regexes
//! happily produce a one-megabyte piece from a megabyte of letters or spaces. Short pieces (the
//! overwhelming majority) still use that scan because it is the fastest thing for a few bytes;
//! pieces longer than [`SMALL_PIECE`] switch to a binary heap over a linked list of symbols with
//! lazy invalidation: O(n log n).
//!
//! # Long runs
//! Even O(n log n) is slow on a megabyte of one letter, space or emoji: every level of
//! merging (`a a` -> `aa`, `aa aa` -> `aaaa`, ...) pushes and pops the whole piece through the
//! heap, and the heap's accesses miss the cache. Such pieces are periodic, and their encoding
//! is periodic too, which [`Bpe::merge_periodic`] exploits without giving up exactness. It rests
//! on one property of any merge rule whose priority depends only on the two symbols merged
//! (tiktoken's ranks and HF's merge list both are): if `A` encodes to `x_0..x_i` and `B`
//! encodes to `x_i..x_n` (the same token `x_i`, on the same bytes, ends one and starts the
//! other), then the text they span together encodes to `x_0..x_n`. (A merge across a boundary
//! of `x` would, at its moment, be the lowest-priority pair inside `A`'s or `B`'s region,
//! whose merges follow their own runs in order, so that run would have merged it too.) The
//! same argument as github/rust-gems `bpe`'s "Corollary III". So: encode one chunk `C` of whole
//! periods, check that its last token followed by its first is itself an encoding, and `C^k`
//! encodes to the chunk's tokens `k` times; the rest of the piece is encoded on its own and
//! joined the same way. Any failed check falls back to the heap.
//!
//! Long pieces that are not periodic (a megabyte of random letters) use the same property
//! differently ([`Bpe::merge_chunked`]): overlapping chunks are merged separately (each heap
//! fits in cache) and joined at a token the two encodings share inside the overlap. Prefixes
//! and suffixes of an encoding are encodings of their own bytes, so the join is exact.
//!
//! # Memo of merged pieces
//! In multilingual text many pieces are words of several tokens (Cyrillic, Greek, CJK on
//! cl100k), and the same words come back again and again. Merging one costs dozens of lookups
//! in a pair table far larger than the cache; a per-thread memo of merge results, consulted with
//! the hash already computed for the whole-piece lookup, turns a repeat into one probe. It is
//! per thread so that encoding never takes a lock, keyed by the vocabulary's identity, bounded
//! (cleared when full, which is cheaper than any eviction order), and only for short pieces.
//!
//! # Whole-piece lookup
//! tiktoken looks the whole piece up in the vocabulary before merging (HF: `ignore_merges`).
//! That is both a semantic rule (it can differ from what the merges produce) and the main fast
//! path, since most pieces of ordinary text are single tokens. The vocabulary is therefore
//! not a general hash map but [`crate::token_table`], whose slots hold each token's first
//! eight bytes: most lookups are one cache miss and an integer compare. Two things were tried and
//! measured slower on every corpus: prefetching the slots of 32 pieces at a time before
//! looking them up (out-of-order execution already overlaps a miss with the next piece's
//! scan), and a first probe in a small L2-sized table of the 8192 lowest ids (two thirds of
//! the pieces of code and prose; the extra probe cost more than the misses it saved).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashTable;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::token_table::{Key, TokenTable};
use crate::Rank;

/// Pieces up to this many bytes use the quadratic scan; longer ones use the heap.
const SMALL_PIECE: usize = 96;

/// Pieces at least this long are looked at for a short period ([`Bpe::merge_periodic`]).
const PERIODIC_MIN: usize = 4096;
/// Longest period (in bytes) looked for: four-byte characters repeated up to four at a time.
const MAX_PERIOD: usize = 16;
/// Chunk lengths tried, in periods: one chunk must end on a token boundary that the next chunk
/// can start from, which a length with many divisors (840 = lcm(1..8)) usually does.
const CHUNK_PERIODS: [usize; 3] = [840, 1024, 1155];

/// Pieces up to this many bytes are remembered by the per-thread memo.
const MEMO_MAX_PIECE: usize = 48;
/// The memo is cleared when its byte arena reaches this size (about 5 MiB per thread in all).
const MEMO_MAX_BYTES: usize = 1 << 20;
/// Bits of the memo's first-sighting filter (128 KiB).
const MEMO_SEEN_BITS: usize = 1 << 20;

/// Block size of decode's copies, and the padding at the end of the vocabulary's bytes.
const DECODE_PAD: usize = 16;

/// Pieces at least this long that are not periodic are merged in overlapping chunks
/// ([`Bpe::merge_chunked`]) of this many bytes, overlapping by `CHUNK_OVERLAP`.
const CHUNKED_MIN: usize = 8192;
const CHUNK: usize = 4096;
const CHUNK_OVERLAP: usize = 512;

/// No merge for this pair.
const NO_MERGE: u64 = u64::MAX;

/// What to do with a byte that has no token of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingByte {
    /// tiktoken: an error if the byte survives merging (tiktoken itself panics there).
    Error,
    /// Hugging Face BPE without `unk_token`: the byte is silently dropped before merging.
    Drop,
    /// Hugging Face BPE with `unk_token`: the byte becomes the unknown token
    /// (`fuse`: consecutive unknown bytes become one).
    Unk { id: Rank, fuse: bool },
}

/// A vocabulary of byte strings plus the pair table that drives merging.
#[derive(Debug, Clone)]
pub struct Bpe {
    /// Concatenated bytes of all tokens, indexed through `offsets`.
    bytes: Vec<u8>,
    /// `offsets[id]..offsets[id + 1]` are the bytes of `id`; an empty range means no such id
    /// (tokens are never empty). `bytes` ends with [`DECODE_PAD`] spare bytes.
    offsets: Vec<u32>,
    /// Bytes -> id, keyed by the bytes in `bytes` (no allocation per token).
    encoder: TokenTable,
    /// The token of each single byte; for missing bytes a pseudo-id `>= offsets.len() - 1`.
    byte_tokens: [Rank; 256],
    complete_bytes: bool,
    pairs: FxHashMap<u64, u64>,
    /// `pair()` of the tokens of bytes `a` and `b` at `a << 8 | b`, when every byte has a
    /// token (else empty). A merge starts by looking up every adjacent byte pair of its
    /// piece; in `pairs` each is a probe into several MiB at random, here text's few
    /// distinct byte pairs share a few dozen cache lines (512 KiB in all, mostly untouched).
    byte_pairs: Vec<u64>,
    ignore_merges: bool,
    missing: MissingByte,
    /// Key of this vocabulary in the per-thread memo.
    memo_owner: u64,
}

/// Gives every vocabulary its own memo key (clones share it: they merge identically).
static NEXT_MEMO_OWNER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Merge results of recent multi-token pieces, in two arenas (see "Memo of merged pieces").
#[derive(Default)]
struct PieceMemo {
    owner: u64,
    table: HashTable<MemoEntry>,
    bytes: Vec<u8>,
    ids: Vec<Rank>,
    /// One bit per hash bucket: pieces seen once since the bits were last cleared. A piece
    /// is remembered on its second sighting, so text whose pieces never repeat (random
    /// base64) pays a bit test instead of an insertion; that insertion had made such text 1.7x
    /// slower.
    seen: Vec<u64>,
    seen_set: usize,
}

#[derive(Clone, Copy)]
struct MemoEntry {
    hash: u64,
    bytes_at: u32,
    ids_at: u32,
    bytes_len: u16,
    ids_len: u16,
}

impl PieceMemo {
    fn get(&self, owner: u64, hash: u64, piece: &[u8]) -> Option<&[Rank]> {
        if self.owner != owner {
            return None;
        }
        let e = self.table.find(hash, |e| {
            e.hash == hash && &self.bytes[e.bytes_at as usize..][..e.bytes_len as usize] == piece
        })?;
        Some(&self.ids[e.ids_at as usize..][..e.ids_len as usize])
    }

    /// Remembers `piece -> ids` if the piece was seen before (see `seen`).
    fn insert(&mut self, owner: u64, hash: u64, piece: &[u8], ids: &[Rank]) {
        if self.owner != owner || self.seen.is_empty() {
            self.owner = owner;
            self.table.clear();
            self.bytes.clear();
            self.ids.clear();
            self.seen.clear();
            self.seen.resize(MEMO_SEEN_BITS / 64, 0);
            self.seen_set = 0;
        }
        let bit = (hash >> 20) as usize % MEMO_SEEN_BITS;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if self.seen[word] & mask == 0 {
            self.seen[word] |= mask;
            self.seen_set += 1;
            // Cleared at a quarter full, so a new piece looks seen at most one time in four.
            if self.seen_set > MEMO_SEEN_BITS / 4 {
                self.seen.fill(0);
                self.seen_set = 0;
            }
            return;
        }
        if self.bytes.len() + piece.len() > MEMO_MAX_BYTES {
            self.table.clear();
            self.bytes.clear();
            self.ids.clear();
        }
        let e = MemoEntry {
            hash,
            bytes_at: self.bytes.len() as u32,
            ids_at: self.ids.len() as u32,
            bytes_len: piece.len() as u16,
            ids_len: ids.len() as u16,
        };
        self.bytes.extend_from_slice(piece);
        self.ids.extend_from_slice(ids);
        self.table.insert_unique(hash, e, |e| e.hash);
    }
}

thread_local! {
    static MEMO: std::cell::RefCell<PieceMemo> = std::cell::RefCell::default();
}

/// A token together with the byte span of the piece it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub id: Rank,
    pub start: u32,
    pub end: u32,
}

/// The merge loop is written once for bare ids (the fast path) and for spans (offsets).
trait Symbol: Copy {
    fn id(self) -> Rank;
    fn merge(self, right: Self, id: Rank) -> Self;
    /// The same symbol `by` bytes further into the piece.
    fn shifted(self, by: u32) -> Self;
}

impl Symbol for Rank {
    #[inline(always)]
    fn id(self) -> Rank {
        self
    }
    #[inline(always)]
    fn merge(self, _right: Self, id: Rank) -> Self {
        id
    }
    #[inline(always)]
    fn shifted(self, _by: u32) -> Self {
        self
    }
}

impl Symbol for Span {
    #[inline(always)]
    fn id(self) -> Rank {
        self.id
    }
    #[inline(always)]
    fn merge(self, right: Self, id: Rank) -> Self {
        Span {
            id,
            start: self.start,
            end: right.end,
        }
    }
    #[inline(always)]
    fn shifted(self, by: u32) -> Self {
        Span {
            id: self.id,
            start: self.start + by,
            end: self.end + by,
        }
    }
}

#[inline(always)]
fn pair_key(left: Rank, right: Rank) -> u64 {
    ((left as u64) << 32) | right as u64
}

impl Bpe {
    fn with_vocab(
        mut vocab: Vec<(Vec<u8>, Rank)>,
        ignore_merges: bool,
        missing: MissingByte,
    ) -> Result<Self> {
        vocab.sort_unstable_by_key(|(_, r)| *r);
        let n_slots = vocab.last().map_or(0, |(_, r)| *r as usize + 1);
        // Ids index dense tables (offsets, decode), so a vocabulary whose ids are mostly gaps
        // would allocate gigabytes for a few tokens; no real vocabulary is anywhere near this.
        if n_slots > (u32::MAX as usize) - 512 || n_slots > 4 * vocab.len() + (1 << 20) {
            return Err(Error::InvalidVocab(format!(
                "token id {} is too large for a vocabulary of {} tokens (ids are stored densely)",
                n_slots - 1,
                vocab.len()
            )));
        }
        for w in vocab.windows(2) {
            if w[0].1 == w[1].1 {
                return Err(Error::InvalidVocab(format!(
                    "duplicate rank {} for {:?} and {:?}",
                    w[0].1,
                    String::from_utf8_lossy(&w[0].0),
                    String::from_utf8_lossy(&w[1].0)
                )));
            }
        }
        let mut bytes = Vec::with_capacity(vocab.iter().map(|(b, _)| b.len()).sum());
        let mut offsets = Vec::with_capacity(n_slots + 1);
        offsets.push(0u32);
        for (token, rank) in &vocab {
            if token.is_empty() {
                return Err(Error::InvalidVocab(format!("token {rank} has no bytes")));
            }
            while offsets.len() <= *rank as usize {
                offsets.push(bytes.len() as u32);
            }
            bytes.extend_from_slice(token);
            let end = u32::try_from(bytes.len())
                .map_err(|_| Error::InvalidVocab("vocabulary bytes exceed 4 GiB".into()))?;
            offsets.push(end);
        }
        drop(vocab);
        bytes.extend_from_slice(&[0; DECODE_PAD]);
        let mut encoder = TokenTable::with_capacity(n_slots);
        {
            let at =
                |i: Rank| &bytes[offsets[i as usize] as usize..offsets[i as usize + 1] as usize];
            for id in
                (0..n_slots as Rank).filter(|&i| offsets[i as usize] < offsets[i as usize + 1])
            {
                if let Err(prev) = encoder.insert(at(id), id, at) {
                    return Err(Error::InvalidVocab(format!(
                        "duplicate token {:?} with ranks {prev} and {id}",
                        String::from_utf8_lossy(at(id)),
                    )));
                }
            }
        }
        let mut bpe = Bpe {
            bytes,
            offsets,
            encoder,
            byte_tokens: [0; 256],
            complete_bytes: true,
            pairs: FxHashMap::default(),
            byte_pairs: Vec::new(),
            ignore_merges,
            missing,
            memo_owner: NEXT_MEMO_OWNER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        for b in 0..256usize {
            bpe.byte_tokens[b] = match bpe.token_id(&[b as u8]) {
                Some(id) => id,
                None => {
                    bpe.complete_bytes = false;
                    (n_slots + b) as Rank
                }
            };
        }
        Ok(bpe)
    }

    /// tiktoken semantics: `ranks` maps byte strings to ranks, which are also the token ids;
    /// the pair with the lowest-ranked concatenation merges first; whole pieces found in the
    /// vocabulary are taken as they are.
    pub fn from_ranks(ranks: Vec<(Vec<u8>, Rank)>) -> Result<Self> {
        let mut bpe = Self::with_vocab(ranks, true, MissingByte::Error)?;
        let pairs = bpe.merged_pairs();
        bpe.set_pairs(pairs);
        Ok(bpe)
    }

    /// tiktoken's pair table: for each token, the one split of it that a merge can form.
    ///
    /// tiktoken merges any adjacent pair whose concatenation is a token, so every split of a
    /// token into two tokens is a candidate (233k pairs for cl100k's 100k tokens). But when a
    /// merge forms token `t` anywhere in any text, the merges inside `t`'s bytes were exactly
    /// those of merging `t`'s bytes on their own: each was the lowest pair of the whole piece
    /// at its moment, so also the lowest among the pairs inside, and nothing crossed `t`'s
    /// edges before `t` existed. So `t` is always formed by the last merge of its own bytes,
    /// and any other split of `t` is never selected where it occurs; leaving it out of the
    /// table changes no selection. With one pair per token the table is a quarter of the size
    /// (cl100k: 2.1 MiB instead of 8.5). Encoding speed did not measurably change (random
    /// base64, whose merges probe the table at random, included).
    ///
    /// Built shortest tokens first: merging `t`'s bytes only ever forms shorter tokens, whose
    /// pairs are in the table already, until two symbols are left that together are `t`
    /// (then that is its pair) or no pair applies (then no merge ever forms `t`, and only the
    /// whole-piece lookup yields it). This is one merge per token, cheaper than looking up
    /// every split of every token.
    fn merged_pairs(&mut self) -> FxHashMap<u64, u64> {
        let mut by_length: Vec<Rank> = (0..self.n_slots() as Rank)
            .filter(|&id| self.token_bytes(id).is_some_and(|t| t.len() >= 2))
            .collect();
        by_length.sort_by_key(|&id| self.token_bytes_unchecked(id).len());
        self.pairs = FxHashMap::with_capacity_and_hasher(by_length.len(), Default::default());
        let mut syms: Vec<Rank> = Vec::new();
        for rank in by_length {
            syms.clear();
            let token = self.token_bytes_unchecked(rank);
            syms.extend(token.iter().map(|&b| self.byte_tokens[b as usize]));
            self.merge_tail(&mut syms, 0);
            if let [l, r] = syms[..] {
                self.pairs
                    .insert(pair_key(l, r), ((rank as u64) << 32) | rank as u64);
            }
        }
        std::mem::take(&mut self.pairs)
    }

    /// Hugging Face semantics from ids already resolved by the caller:
    /// `merges[i] = (left, right, merged)` has priority `i`. Merges naming ids outside `vocab`
    /// (tokens that are not byte strings) can never apply and are left out.
    pub fn from_merge_ids(
        vocab: Vec<(Vec<u8>, Rank)>,
        merges: &[(Rank, Rank, Rank)],
        ignore_merges: bool,
        missing: MissingByte,
    ) -> Result<Self> {
        let mut bpe = Self::with_vocab(vocab, ignore_merges, missing)?;
        let mut pairs = FxHashMap::with_capacity_and_hasher(merges.len(), Default::default());
        for (i, &(l, r, m)) in merges.iter().enumerate() {
            if [l, r, m].iter().all(|&id| bpe.token_bytes(id).is_some()) {
                pairs.insert(pair_key(l, r), ((i as u64) << 32) | m as u64);
            }
        }
        bpe.set_pairs(pairs);
        Ok(bpe)
    }

    fn set_pairs(&mut self, pairs: FxHashMap<u64, u64>) {
        self.pairs = pairs;
        self.byte_pairs.clear();
        if self.complete_bytes {
            self.byte_pairs = (0..1usize << 16)
                .map(|ab| self.pair(self.byte_tokens[ab >> 8], self.byte_tokens[ab & 0xff]))
                .collect();
        }
    }

    /// Number of id slots (one past the largest id).
    pub fn n_slots(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn len(&self) -> usize {
        self.encoder.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encoder.len() == 0
    }

    pub fn ignore_merges(&self) -> bool {
        self.ignore_merges
    }

    /// The bytes of token `id`, if the vocabulary has it.
    #[inline]
    pub fn token_bytes(&self, id: Rank) -> Option<&[u8]> {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&start), Some(&end)) if start < end => {
                Some(&self.bytes[start as usize..end as usize])
            }
            _ => None,
        }
    }

    /// Appends the bytes of `ids` to `out` up to the first id that is not in the vocabulary,
    /// and returns that id's index.
    ///
    /// Decode is a stream of tiny copies (a token is four bytes on average), where calling
    /// `memcpy` for each costs more than the copy. Tokens of up to [`DECODE_PAD`] bytes are
    /// copied as one fixed-size block into spare capacity, and only their real length is kept;
    /// the padding at the end of `bytes` makes the over-read safe.
    pub fn decode_append(&self, ids: &[Rank], out: &mut Vec<u8>) -> Option<usize> {
        for (k, &id) in ids.iter().enumerate() {
            let i = id as usize;
            let (start, end) = match (self.offsets.get(i), self.offsets.get(i + 1)) {
                (Some(&start), Some(&end)) if start < end => (start as usize, end as usize),
                _ => return Some(k),
            };
            let len = end - start;
            if len <= DECODE_PAD {
                out.reserve(DECODE_PAD);
                // SAFETY: `start + DECODE_PAD <= self.bytes.len()` because `bytes` ends with
                // `DECODE_PAD` padding bytes after the last token; `reserve` leaves room for
                // `DECODE_PAD` bytes after `out.len()`, of which the first `len` are written
                // with token bytes before the length covers them.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.bytes.as_ptr().add(start),
                        out.as_mut_ptr().add(out.len()),
                        DECODE_PAD,
                    );
                    out.set_len(out.len() + len);
                }
            } else {
                out.extend_from_slice(&self.bytes[start..end]);
            }
        }
        None
    }

    #[inline(always)]
    fn token_bytes_unchecked(&self, id: Rank) -> &[u8] {
        let i = id as usize;
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    #[inline]
    pub fn token_id(&self, bytes: &[u8]) -> Option<Rank> {
        self.token_id_keyed(bytes, Key::of(bytes))
    }

    #[inline(always)]
    fn token_id_keyed(&self, bytes: &[u8], key: Key) -> Option<Rank> {
        self.encoder
            .get(bytes, key, |id| self.token_bytes_unchecked(id))
    }

    /// All (bytes, id) pairs, in id order.
    pub fn vocab(&self) -> impl Iterator<Item = (&[u8], Rank)> + '_ {
        (0..self.n_slots() as Rank).filter_map(|id| self.token_bytes(id).map(|b| (b, id)))
    }

    /// The merge loop's key for the adjacent pair `left right`, `(priority << 32) | merged id`
    /// (lower merges first, leftmost on ties), or `None` when the pair never merges. Read-only
    /// access to the pair table for `bytelm`'s canonical-pair test.
    pub fn pair_priority(&self, left: Rank, right: Rank) -> Option<u64> {
        match self.pair(left, right) {
            NO_MERGE => None,
            key => Some(key),
        }
    }

    #[inline(always)]
    fn pair(&self, left: Rank, right: Rank) -> u64 {
        match self.pairs.get(&pair_key(left, right)) {
            Some(&v) => v,
            None => NO_MERGE,
        }
    }

    /// Encodes one piece, appending token ids to `out`.
    #[inline]
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<Rank>) -> Result<()> {
        self.encode_piece_with(piece, out, self.ignore_merges)
    }

    /// Merges only, never taking the whole piece from the vocabulary (tiktoken's
    /// `byte_pair_encode`, which `encode_with_unstable` uses).
    pub fn merge_without_lookup(&self, piece: &[u8], out: &mut Vec<Rank>) -> Result<()> {
        self.encode_piece_with(piece, out, false)
    }

    fn encode_piece_with(
        &self,
        piece: &[u8],
        out: &mut Vec<Rank>,
        whole_lookup: bool,
    ) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        if piece.len() == 1 && self.complete_bytes {
            out.push(self.byte_tokens[piece[0] as usize]);
            return Ok(());
        }
        let key = Key::of(piece);
        let hash = key.hash;
        if whole_lookup {
            if let Some(id) = self.token_id_keyed(piece, key) {
                out.push(id);
                return Ok(());
            }
        }
        if !self.complete_bytes {
            let mut spans = Vec::new();
            self.encode_piece_spans_with(piece, &mut spans, whole_lookup)?;
            out.extend(spans.iter().map(|s| s.id));
            return Ok(());
        }
        // The memo holds merge results only, which do not depend on `whole_lookup`.
        let memo = piece.len() <= MEMO_MAX_PIECE;
        if memo {
            let hit = MEMO.with_borrow(|m| {
                m.get(self.memo_owner, hash, piece)
                    .map(|ids| out.extend_from_slice(ids))
                    .is_some()
            });
            if hit {
                return Ok(());
            }
        }
        let start = out.len();
        out.extend(piece.iter().map(|&b| self.byte_tokens[b as usize]));
        self.merge_tail_with(out, start, Some(piece));
        if memo {
            MEMO.with_borrow_mut(|m| m.insert(self.memo_owner, hash, piece, &out[start..]));
        }
        Ok(())
    }

    /// Encodes one piece, appending tokens with the byte spans (relative to `piece`) they cover.
    pub fn encode_piece_spans(&self, piece: &[u8], out: &mut Vec<Span>) -> Result<()> {
        self.encode_piece_spans_with(piece, out, self.ignore_merges)
    }

    fn encode_piece_spans_with(
        &self,
        piece: &[u8],
        out: &mut Vec<Span>,
        whole_lookup: bool,
    ) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        if whole_lookup {
            if let Some(id) = self.token_id(piece) {
                out.push(Span {
                    id,
                    start: 0,
                    end: piece.len() as u32,
                });
                return Ok(());
            }
        }
        let start = out.len();
        let n_slots = self.n_slots() as Rank;
        for (i, &b) in piece.iter().enumerate() {
            let id = self.byte_tokens[b as usize];
            let span = Span {
                id,
                start: i as u32,
                end: i as u32 + 1,
            };
            if id < n_slots {
                out.push(span);
                continue;
            }
            match self.missing {
                // Kept as a pseudo-token: a later merge may still absorb it.
                MissingByte::Error => out.push(span),
                MissingByte::Drop => {}
                MissingByte::Unk { id, fuse } => {
                    if fuse {
                        if let Some(last) = out[start..].last_mut() {
                            if last.id == id && last.end == span.start {
                                last.end = span.end;
                                continue;
                            }
                        }
                    }
                    out.push(Span { id, ..span });
                }
            }
        }
        // With every byte a token, `out[start..]` holds one symbol per byte of `piece`.
        self.merge_tail_with(out, start, self.complete_bytes.then_some(piece));
        if let Some(bad) = out[start..].iter().find(|s| s.id >= n_slots) {
            let byte = piece[bad.start as usize];
            out.truncate(start);
            return Err(Error::InvalidVocab(format!(
                "byte 0x{byte:02x} has no token in this vocabulary and no merge covers it"
            )));
        }
        Ok(())
    }

    /// Runs the merges over `syms[start..]` in place.
    fn merge_tail<S: Symbol>(&self, syms: &mut Vec<S>, start: usize) {
        self.merge_tail_with(syms, start, None)
    }

    /// `merge_tail`, where `bytes`, if given, are the bytes whose single-byte tokens are
    /// `syms[start..]`, one symbol per byte.
    fn merge_tail_with<S: Symbol>(&self, syms: &mut Vec<S>, start: usize, bytes: Option<&[u8]>) {
        let n = syms.len() - start;
        if n < 2 {
            return;
        }
        // Most pieces are short: a 16-entry priority array is 128 bytes to initialise where
        // the full one is 768, which was 2% of encoding random base64.
        if n <= 16 {
            self.merge_small::<S, 16>(syms, start, bytes);
        } else if n <= SMALL_PIECE {
            self.merge_small::<S, SMALL_PIECE>(syms, start, bytes);
        } else {
            let merged = self
                .merge_periodic(&syms[start..])
                .or_else(|| self.merge_chunked(&syms[start..], CHUNK, CHUNK_OVERLAP))
                .unwrap_or_else(|| self.merge_large(&syms[start..]));
            syms.truncate(start);
            syms.extend(merged);
        }
    }

    /// Encodes a long piece as overlapping chunks stitched at a shared token, or returns `None`
    /// where that does not apply. Chunk `k + 1` starts `overlap` bytes before chunk `k` ends;
    /// where the two encodings have a token in common (same id on the same bytes), the first
    /// encoding up to that token and the second from it on are both encodings of their own
    /// bytes, so together they are the encoding of the whole (see "Long runs" above). Each
    /// chunk's heap stays in cache, which the megabyte-long heap did not; when an overlap has no
    /// token in common, the whole piece falls back to the heap.
    /// `syms` are single bytes, so symbol and byte positions agree.
    fn merge_chunked<S: Symbol>(&self, syms: &[S], chunk: usize, overlap: usize) -> Option<Vec<S>> {
        let n = syms.len();
        if n < CHUNKED_MIN || !self.complete_bytes || overlap >= chunk {
            return None;
        }
        let token_len = |s: &S| {
            let id = s.id() as usize;
            (self.offsets[id + 1] - self.offsets[id]) as usize
        };
        let mut end = chunk.min(n);
        let mut out = self.merge_large(&syms[..end]);
        while end < n {
            let start = end - overlap;
            let stop = (end + chunk - overlap).min(n);
            let next = self.merge_large(&syms[start..stop]);
            // Start positions of the tokens that start inside the overlap, ascending: `out`'s
            // (found backwards from `end`) and `next`'s (forwards from `start`).
            let mut tail = Vec::new();
            let mut at = end;
            for (i, t) in out.iter().enumerate().rev() {
                at -= token_len(t);
                if at < start {
                    break;
                }
                tail.push((at, i));
            }
            tail.reverse();
            let mut head = Vec::new();
            let mut at = start;
            for (j, t) in next.iter().enumerate() {
                if at >= end {
                    break;
                }
                head.push((at, j));
                at += token_len(t);
            }
            // The first token the two have in common: same start, same id (so same bytes).
            let (mut a, mut b) = (0, 0);
            let mut sync = None;
            while a < tail.len() && b < head.len() {
                let ((pa, i), (pb, j)) = (tail[a], head[b]);
                if pa < pb {
                    a += 1;
                } else if pb < pa {
                    b += 1;
                } else if out[i].id() == next[j].id() {
                    sync = Some((i, j));
                    break;
                } else {
                    a += 1;
                    b += 1;
                }
            }
            let (i, j) = sync?;
            out.truncate(i + 1);
            out.extend_from_slice(&next[j + 1..]);
            end = stop;
        }
        Some(out)
    }

    /// Whether `left right` is the encoding of its own bytes (merges only).
    fn is_encoding_pair(&self, left: Rank, right: Rank) -> bool {
        let (Some(a), Some(b)) = (self.token_bytes(left), self.token_bytes(right)) else {
            return false;
        };
        let mut syms: Vec<Rank> = a
            .iter()
            .chain(b)
            .map(|&byte| self.byte_tokens[byte as usize])
            .collect();
        self.merge_tail(&mut syms, 0);
        syms == [left, right]
    }

    /// Encodes a piece that starts with a long run of a short period in time linear in the run,
    /// or returns `None` where that does not apply (see "Long runs" above for why it is exact).
    /// `syms` are single bytes; each symbol is one byte, so symbol and byte positions agree.
    fn merge_periodic<S: Symbol>(&self, syms: &[S]) -> Option<Vec<S>> {
        self.merge_periodic_with(syms, &CHUNK_PERIODS)
    }

    fn merge_periodic_with<S: Symbol>(
        &self,
        syms: &[S],
        chunk_periods: &[usize],
    ) -> Option<Vec<S>> {
        let n = syms.len();
        if n < PERIODIC_MIN || !self.complete_bytes {
            return None;
        }
        // The period whose run from the start is longest; `run` bytes repeat with period `p`.
        let (mut p, mut run) = (0, 0);
        for q in 1..=MAX_PERIOD.min(n - 1) {
            let len = (q..n)
                .find(|&i| syms[i].id() != syms[i - q].id())
                .unwrap_or(n);
            if len > run {
                (p, run) = (q, len);
            }
            if len == n {
                break;
            }
        }
        for &periods in chunk_periods {
            let c = periods * p;
            // At least three chunks of run, so that there is something to save.
            if run < 3 * c {
                continue;
            }
            let chunk = self.merge_large(&syms[..c]);
            let (first, last) = (chunk[0].id(), chunk[chunk.len() - 1].id());
            if !self.is_encoding_pair(last, first) {
                continue;
            }
            // The last whole chunk goes with the rest, which need not repeat at all.
            let k = run / c - 1;
            let rest = self.merge_large(&syms[k * c..]);
            if !self.is_encoding_pair(last, rest[0].id()) {
                continue;
            }
            let mut out = Vec::with_capacity(k * chunk.len() + rest.len());
            for j in 0..k {
                let by = (j * c) as u32;
                out.extend(chunk.iter().map(|s| s.shifted(by)));
            }
            out.extend(rest);
            return Some(out);
        }
        None
    }

    /// Quadratic scan; fastest for the short pieces of ordinary text.
    fn merge_small<S: Symbol, const N: usize>(
        &self,
        syms: &mut Vec<S>,
        start: usize,
        bytes: Option<&[u8]>,
    ) {
        let mut prio = [NO_MERGE; N];
        let mut n = syms.len() - start;
        let s = &mut syms[start..];
        match bytes {
            Some(b) if !self.byte_pairs.is_empty() => {
                debug_assert_eq!(b.len(), n);
                for (p, w) in prio.iter_mut().zip(b.windows(2)) {
                    *p = self.byte_pairs[(w[0] as usize) << 8 | w[1] as usize];
                }
            }
            _ => {
                for i in 0..n - 1 {
                    prio[i] = self.pair(s[i].id(), s[i + 1].id());
                }
            }
        }
        while n > 1 {
            let mut best = NO_MERGE;
            let mut at = 0;
            for (i, &p) in prio[..n - 1].iter().enumerate() {
                if p < best {
                    best = p;
                    at = i;
                }
            }
            if best == NO_MERGE {
                break;
            }
            s[at] = s[at].merge(s[at + 1], best as Rank);
            s.copy_within(at + 2..n, at + 1);
            prio.copy_within(at + 1..n - 1, at);
            n -= 1;
            if at + 1 < n {
                prio[at] = self.pair(s[at].id(), s[at + 1].id());
            }
            if at > 0 {
                prio[at - 1] = self.pair(s[at - 1].id(), s[at].id());
            }
        }
        syms.truncate(start + n);
    }

    /// Heap over a linked list: O(n log n) for pieces of any length.
    fn merge_large<S: Symbol>(&self, input: &[S]) -> Vec<S> {
        const NONE: u32 = u32::MAX;
        // One record per symbol (array of structs): a merge touches a symbol and its
        // neighbours, so keeping links and liveness next to the symbol saves cache misses on
        // megabyte-long pieces.
        #[derive(Clone, Copy)]
        struct Node<S> {
            sym: S,
            prev: u32,
            next: u32,
        }
        let n = input.len();
        let mut nodes: Vec<Node<S>> = input
            .iter()
            .enumerate()
            .map(|(i, &sym)| Node {
                sym,
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
            })
            .collect();
        // A dead node points to itself.
        let dead = |nodes: &[Node<S>], i: usize| nodes[i].prev == i as u32;
        // Min-heap of `priority << 32 | position`: lowest priority first, leftmost on ties. One
        // u64 per entry keeps the heap small; the merged id is looked up again when popped, which
        // is also the staleness check (same position and priority means the same pair).
        let key = |p: u64, pos: usize| Reverse((p & !0xffff_ffff) | pos as u64);
        let initial: Vec<Reverse<u64>> = (0..n - 1)
            .filter_map(|i| {
                let p = self.pair(nodes[i].sym.id(), nodes[i + 1].sym.id());
                (p != NO_MERGE).then(|| key(p, i))
            })
            .collect();
        let mut heap = BinaryHeap::from(initial);
        while let Some(Reverse(k)) = heap.pop() {
            let i = (k & 0xffff_ffff) as usize;
            if dead(&nodes, i) || nodes[i].next == NONE {
                continue;
            }
            let j = nodes[i].next as usize;
            let p = self.pair(nodes[i].sym.id(), nodes[j].sym.id());
            // Stale entry: one side has merged since it was pushed.
            if p == NO_MERGE || (p >> 32) != (k >> 32) {
                continue;
            }
            nodes[i].sym = nodes[i].sym.merge(nodes[j].sym, p as Rank);
            let after = nodes[j].next;
            nodes[i].next = after;
            nodes[j].prev = j as u32;
            if after != NONE {
                nodes[after as usize].prev = i as u32;
            }
            let h = nodes[i].prev;
            if h != NONE {
                let q = self.pair(nodes[h as usize].sym.id(), nodes[i].sym.id());
                if q != NO_MERGE {
                    heap.push(key(q, h as usize));
                }
            }
            if after != NONE {
                let q = self.pair(nodes[i].sym.id(), nodes[after as usize].sym.id());
                if q != NO_MERGE {
                    heap.push(key(q, i));
                }
            }
        }
        let mut out = Vec::with_capacity(n / 2);
        let mut i = 0u32;
        while i != NONE {
            out.push(nodes[i as usize].sym);
            i = nodes[i as usize].next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Bpe {
        // a b c d, ab (4), bc (5), abc (6), cd (7), abcd (8)
        let mut v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
        for (i, t) in ["ab", "bc", "abc", "cd", "abcd", "aa", "aaaa"]
            .iter()
            .enumerate()
        {
            v.push((t.as_bytes().to_vec(), 256 + i as Rank));
        }
        Bpe::from_ranks(v).unwrap()
    }

    /// Reference: tiktoken's algorithm, literally (rescans byte slices after each merge).
    fn reference(bpe: &Bpe, piece: &[u8]) -> Vec<Rank> {
        if let Some(id) = bpe.token_id(piece) {
            return vec![id];
        }
        reference_merges(bpe, piece)
    }

    /// The same without the whole-piece lookup (tiktoken's `byte_pair_encode`).
    fn reference_merges(bpe: &Bpe, piece: &[u8]) -> Vec<Rank> {
        let mut parts: Vec<std::ops::Range<usize>> = (0..piece.len()).map(|i| i..i + 1).collect();
        loop {
            let mut best: Option<(Rank, usize)> = None;
            for i in 0..parts.len().saturating_sub(1) {
                if let Some(r) = bpe.token_id(&piece[parts[i].start..parts[i + 1].end]) {
                    if best.is_none_or(|(b, _)| r < b) {
                        best = Some((r, i));
                    }
                }
            }
            match best {
                Some((_, i)) => {
                    parts[i] = parts[i].start..parts[i + 1].end;
                    parts.remove(i + 1);
                }
                None => break,
            }
        }
        parts
            .iter()
            .map(|p| bpe.token_id(&piece[p.clone()]).unwrap())
            .collect()
    }

    #[test]
    fn small_and_large_paths_agree_with_reference() {
        let bpe = toy();
        let mut rng_state = 12345u64;
        for len in [2usize, 3, 5, 17, 95, 96, 97, 200, 1000] {
            for _ in 0..50 {
                let piece: Vec<u8> = (0..len)
                    .map(|_| {
                        rng_state = rng_state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        b"abcd"[(rng_state >> 33) as usize % 4]
                    })
                    .collect();
                let mut out = Vec::new();
                bpe.encode_piece(&piece, &mut out).unwrap();
                assert_eq!(
                    out,
                    reference(&bpe, &piece),
                    "piece {:?}",
                    String::from_utf8_lossy(&piece)
                );
                let mut spans = Vec::new();
                bpe.encode_piece_spans(&piece, &mut spans).unwrap();
                assert_eq!(spans.iter().map(|s| s.id).collect::<Vec<_>>(), out);
                let rebuilt: Vec<u8> = spans
                    .iter()
                    .flat_map(|s| piece[s.start as usize..s.end as usize].to_vec())
                    .collect();
                assert_eq!(rebuilt, piece);
            }
        }
    }

    /// Only one split of each token is kept in the pair table (`merged_pairs`); on random
    /// vocabularies whose ranks ignore the order tokens could be built in (tokens ranked
    /// before their parts, several splits per token), merging must still be tiktoken's.
    #[test]
    fn pruned_pair_table_merges_like_tiktoken() {
        let mut state = 99u64;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        let mut pruned = 0;
        for _ in 0..40 {
            let mut tokens: Vec<Vec<u8>> = Vec::new();
            while tokens.len() < 60 {
                let t: Vec<u8> = (0..2 + next(5)).map(|_| b"abc"[next(3)]).collect();
                if !tokens.contains(&t) {
                    tokens.push(t);
                }
            }
            let mut ranks: Vec<Rank> = (256..256 + tokens.len() as Rank).collect();
            for i in (1..ranks.len()).rev() {
                ranks.swap(i, next(i + 1));
            }
            let mut v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
            v.extend(tokens.into_iter().zip(ranks));
            let bpe = Bpe::from_ranks(v.clone()).unwrap();
            let all_splits: usize = v
                .iter()
                .map(|(t, _)| {
                    (1..t.len())
                        .filter(|&k| {
                            bpe.token_id(&t[..k]).is_some() && bpe.token_id(&t[k..]).is_some()
                        })
                        .count()
                })
                .sum();
            pruned += all_splits - bpe.pairs.len();
            for _ in 0..300 {
                let piece: Vec<u8> = (0..1 + next(24)).map(|_| b"abc"[next(3)]).collect();
                let mut out = Vec::new();
                bpe.encode_piece(&piece, &mut out).unwrap();
                assert_eq!(
                    out,
                    reference(&bpe, &piece),
                    "{:?}",
                    String::from_utf8_lossy(&piece)
                );
                out.clear();
                bpe.merge_without_lookup(&piece, &mut out).unwrap();
                assert_eq!(out, reference_merges(&bpe, &piece));
            }
        }
        assert!(
            pruned > 100,
            "the vocabularies should have splits to drop ({pruned})"
        );
    }

    #[test]
    fn long_run_is_merged_leftmost_first() {
        let bpe = toy();
        let piece = vec![b'a'; 3_001];
        let mut out = Vec::new();
        bpe.encode_piece(&piece, &mut out).unwrap();
        assert_eq!(out, reference(&bpe, &piece[..]));
        assert_eq!(out.len(), 751);
    }

    /// A seeded generator of numbers below `m`, for reproducible random inputs.
    fn lcg(mut state: u64) -> impl FnMut(usize) -> usize {
        move |m| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % m
        }
    }

    /// Long periodic pieces (the run-length shortcut) against the heap on random vocabularies
    /// whose tokens are built from the same few letters, so runs merge in many ways.
    #[test]
    fn periodic_runs_agree_with_heap() {
        let mut rand = lcg(99);
        let (mut taken, mut odd_taken, mut tried) = (0, 0, 0);
        for _ in 0..30 {
            let mut v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
            let mut seen = std::collections::HashSet::new();
            while v.len() < 256 + 60 {
                let len = 2 + rand(11);
                let t: Vec<u8> = (0..len).map(|_| b"abc"[rand(3)]).collect();
                if seen.insert(t.clone()) {
                    let r = v.len() as Rank;
                    v.push((t, r));
                }
            }
            let bpe = Bpe::from_ranks(v).unwrap();
            for _ in 0..10 {
                let unit: Vec<u8> = (0..1 + rand(5)).map(|_| b"abc"[rand(3)]).collect();
                let reps = PERIODIC_MIN / unit.len() + rand(20_000) / unit.len();
                let mut piece: Vec<u8> = unit
                    .iter()
                    .cycle()
                    .take(reps * unit.len())
                    .copied()
                    .collect();
                piece.extend((0..rand(300)).map(|_| b"abcd"[rand(4)]));
                let syms: Vec<Rank> = piece.iter().map(|&b| b as Rank).collect();
                let heap = bpe.merge_large(&syms);
                tried += 1;
                if let Some(fast) = bpe.merge_periodic(&syms) {
                    taken += 1;
                    assert_eq!(fast, heap, "unit {:?}, {} bytes", unit, piece.len());
                }
                // Odd chunk lengths, where chunks often do not end on a token boundary the next
                // chunk can start from: the joins must be checked, not assumed.
                let odd = [1 + rand(40), 41 + rand(300)];
                if let Some(fast) = bpe.merge_periodic_with(&syms, &odd) {
                    odd_taken += 1;
                    assert_eq!(fast, heap, "unit {:?}, chunks {:?}", unit, odd);
                }
                let mut out = Vec::new();
                bpe.encode_piece(&piece, &mut out).unwrap();
                assert_eq!(out, heap);
                let mut spans = Vec::new();
                bpe.encode_piece_spans(&piece, &mut spans).unwrap();
                assert_eq!(spans.iter().map(|s| s.id).collect::<Vec<_>>(), heap);
                let mut at = 0;
                for s in &spans {
                    assert_eq!(s.start, at);
                    assert_eq!(
                        bpe.token_bytes(s.id).unwrap(),
                        &piece[s.start as usize..s.end as usize]
                    );
                    at = s.end;
                }
                assert_eq!(at as usize, piece.len());
            }
        }
        // The shortcut must actually run, or this test compares the heap with itself.
        assert!(taken * 2 > tried, "shortcut taken {taken} of {tried} times");
        assert!(
            odd_taken * 4 > tried,
            "odd chunks taken {odd_taken} of {tried} times"
        );
    }

    /// Long pieces stitched from overlapping chunks against the heap over the whole piece, with
    /// chunk and overlap sizes from tiny (stitches everywhere, often no shared token) to the
    /// real ones, on random vocabularies over few letters (many ways to merge).
    #[test]
    fn chunked_pieces_agree_with_heap() {
        let mut rand = lcg(5);
        let (mut taken, mut tried) = (0, 0);
        for round in 0..24 {
            let letters: &[u8] = if round % 2 == 0 { b"abc" } else { b"abcdefgh" };
            let mut v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
            let mut seen = std::collections::HashSet::new();
            while v.len() < 256 + 150 {
                let len = 2 + rand(if round % 3 == 0 { 30 } else { 6 });
                let t: Vec<u8> = (0..len).map(|_| letters[rand(letters.len())]).collect();
                if seen.insert(t.clone()) {
                    let r = v.len() as Rank;
                    v.push((t, r));
                }
            }
            let bpe = Bpe::from_ranks(v).unwrap();
            for _ in 0..4 {
                let n = CHUNKED_MIN + rand(12_000);
                let piece: Vec<u8> = (0..n).map(|_| letters[rand(letters.len())]).collect();
                let syms: Vec<Rank> = piece.iter().map(|&b| b as Rank).collect();
                let heap = bpe.merge_large(&syms);
                for (chunk, overlap) in [
                    (CHUNK, CHUNK_OVERLAP),
                    (40 + rand(200), 2 + rand(30)),
                    (300 + rand(900), 16 + rand(100)),
                ] {
                    tried += 1;
                    if let Some(fast) = bpe.merge_chunked(&syms, chunk, overlap) {
                        taken += 1;
                        assert_eq!(fast, heap, "chunk {chunk}, overlap {overlap}, {n} bytes");
                    }
                }
                let spans: Vec<Span> = (0..n as u32)
                    .map(|i| Span {
                        id: piece[i as usize] as Rank,
                        start: i,
                        end: i + 1,
                    })
                    .collect();
                let fast = bpe.merge_chunked(&spans, 100, 20);
                if let Some(fast) = fast {
                    assert_eq!(fast, bpe.merge_large(&spans));
                }
            }
        }
        // The stitching must actually run, or this compares the heap with itself.
        assert!(
            taken * 2 > tried,
            "chunked path taken {taken} of {tried} times"
        );
    }

    /// The per-thread memo must never answer for another vocabulary, nor for merges-only
    /// encoding with a whole-piece result, and must survive being cleared when full.
    #[test]
    fn memo_is_per_vocabulary_and_bounded() {
        let a = toy();
        let mut v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
        for (i, t) in ["cd", "bc", "ab", "bcd", "abcd", "xyz"].iter().enumerate() {
            v.push((t.as_bytes().to_vec(), 256 + i as Rank));
        }
        let b = Bpe::from_ranks(v).unwrap();
        let mut state = 7u64;
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        // Enough distinct pieces to fill and clear the memo several times over.
        while pieces.iter().map(Vec::len).sum::<usize>() < 2 * MEMO_MAX_BYTES {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 2 + (state >> 40) as usize % (MEMO_MAX_PIECE - 1);
            pieces.push(
                (0..len)
                    .map(|i| b"abcd"[((state >> (i % 29)) & 3) as usize])
                    .collect(),
            );
        }
        let check = |bpe: &Bpe, i: usize, piece: &[u8]| {
            let mut out = Vec::new();
            bpe.encode_piece(piece, &mut out).unwrap();
            // The merge loop without the memo (the reference itself is too slow for all).
            let mut direct: Vec<Rank> = piece.iter().map(|&c| c as Rank).collect();
            bpe.merge_tail(&mut direct, 0);
            if let Some(id) = bpe.token_id(piece) {
                direct = vec![id];
            }
            assert_eq!(out, direct, "piece {i}");
            if i < 300 {
                assert_eq!(out, reference(bpe, piece), "piece {i}");
            }
        };
        // One vocabulary, each piece three times in a row (remembered at the second sighting,
        // a hit at the third); the pieces fill the memo twice over, so it is cleared on the way.
        let mut largest = 0;
        for (i, piece) in pieces.iter().enumerate() {
            for _ in 0..3 {
                check(&a, i, piece);
            }
            largest = largest.max(MEMO.with_borrow(|m| m.bytes.len()));
        }
        assert!(
            largest + MEMO_MAX_PIECE > MEMO_MAX_BYTES,
            "memo never filled: {largest}"
        );
        assert!(MEMO.with_borrow(|m| m.owner == a.memo_owner && !m.table.is_empty()));
        // Vocabularies interleaved: the memo must never answer for the other one.
        for (i, piece) in pieces.iter().enumerate().take(3000) {
            for bpe in [&a, &a, &b, &b, &b, &a, &a, &a, &b] {
                check(bpe, i, piece);
            }
        }
        // "xyz" is a token of `b` that no merge reaches: merges alone give three tokens.
        let xyz = b.token_id(b"xyz").unwrap();
        for _ in 0..2 {
            let mut merged = Vec::new();
            b.merge_without_lookup(b"xyz", &mut merged).unwrap();
            assert_eq!(merged, vec![b'x' as Rank, b'y' as Rank, b'z' as Rank]);
            let mut whole = Vec::new();
            b.encode_piece(b"xyz", &mut whole).unwrap();
            assert_eq!(whole, vec![xyz]);
        }
    }

    #[test]
    fn decode_append_copies_exact_lengths_and_stops_at_unknown_ids() {
        // Tokens of every length from 1 to 40 bytes (the block copy covers up to 16), with a
        // gap in the ids, and the longest token last so the copy reads into the padding.
        let mut v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
        for len in 2..=40u32 {
            let t: Vec<u8> = (0..len)
                .map(|i| b'a' + ((i * 7 + len) % 26) as u8)
                .collect();
            v.push((t, 256 + 2 * len));
        }
        let bpe = Bpe::from_ranks(v).unwrap();
        let ids: Vec<Rank> = (0..bpe.n_slots() as Rank)
            .filter(|&id| bpe.token_bytes(id).is_some())
            .collect();
        let mut state = 3u64;
        for n in [0usize, 1, 2, 15, 16, 17, 200] {
            let mut seq: Vec<Rank> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ids[(state >> 33) as usize % ids.len()]
                })
                .collect();
            seq.push(*ids.last().unwrap());
            let expected: Vec<u8> = seq
                .iter()
                .flat_map(|&id| bpe.token_bytes(id).unwrap().to_vec())
                .collect();
            let mut out = b"prefix".to_vec();
            assert_eq!(bpe.decode_append(&seq, &mut out), None);
            assert_eq!(&out[6..], &expected[..]);
            // An id in the gap and one past the end stop the copy right there.
            for bad in [257, bpe.n_slots() as Rank, Rank::MAX] {
                let mut with_bad = seq.clone();
                with_bad.insert(n / 2, bad);
                let mut out = Vec::new();
                assert_eq!(bpe.decode_append(&with_bad, &mut out), Some(n / 2));
                let before: usize = seq[..n / 2]
                    .iter()
                    .map(|&id| bpe.token_bytes(id).unwrap().len())
                    .sum();
                assert_eq!(out, expected[..before]);
            }
        }
    }

    #[test]
    fn duplicate_ranks_and_tokens_are_errors() {
        let e = Bpe::from_ranks(vec![(b"a".to_vec(), 0), (b"b".to_vec(), 0)]).unwrap_err();
        assert!(e.to_string().contains("duplicate rank 0"), "{e}");
        let e = Bpe::from_ranks(vec![(b"a".to_vec(), 0), (b"a".to_vec(), 1)]).unwrap_err();
        assert!(e.to_string().contains("duplicate token"), "{e}");
    }

    #[test]
    fn missing_bytes_follow_policy() {
        let bpe = Bpe::from_ranks(vec![
            (b"a".to_vec(), 0),
            (b"b".to_vec(), 1),
            (b"xb".to_vec(), 2),
        ])
        .unwrap();
        let mut out = Vec::new();
        bpe.encode_piece(b"axb", &mut out).unwrap();
        assert_eq!(out, vec![0, 2]);
        assert!(bpe.encode_piece(b"ax", &mut out).is_err());
        let merges = vec![(0, 1, 2)];
        let vocab = vec![(b"a".to_vec(), 0), (b"b".to_vec(), 1), (b"ab".to_vec(), 2)];
        let hf = Bpe::from_merge_ids(vocab.clone(), &merges, false, MissingByte::Drop).unwrap();
        let mut spans = Vec::new();
        hf.encode_piece_spans(b"axb", &mut spans).unwrap();
        assert_eq!(
            spans,
            vec![Span {
                id: 2,
                start: 0,
                end: 3
            }]
        );
        let unk = Bpe::from_merge_ids(
            vocab,
            &merges,
            false,
            MissingByte::Unk { id: 1, fuse: true },
        )
        .unwrap();
        spans.clear();
        unk.encode_piece_spans(b"axx", &mut spans).unwrap();
        assert_eq!(
            spans,
            vec![Span {
                id: 2,
                start: 0,
                end: 3
            }]
        );
    }
}
