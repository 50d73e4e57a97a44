//! Byte-level BPE training.
//!
//! # Pipeline
//! 1. [`WordCounter`] pre-tokenizes text with a [`Pretokenizer`] and counts distinct pieces
//!    ("words"), on several scoped threads. Memory is bounded by the number of distinct pieces:
//!    files are streamed in blocks, and a caller feeding strings feeds them in batches.
//! 2. [`train`] turns the counts into symbol sequences and runs the merges incrementally: pair
//!    counts live in a hash map together with the list of words each pair occurs in, the best
//!    pair comes from a max-heap with lazy invalidation, and a merge rewrites only the words on
//!    its pair's list, adjusting the counts of the pairs it destroys and creates. Nothing is
//!    ever recounted.
//!
//! # Tie-breaking (determinism)
//! The pair merged next is the one with the highest count; among equal counts, the one whose
//! (left, right) is smallest in *Hugging Face order*: a single byte ranks by the code point of
//! the character that stands for it in byte-level vocabularies ([`crate::bytes_unicode`]:
//! printable Latin-1 bytes first, in byte order, then the 68 others), and every byte ranks below
//! every merged token, which rank in order of creation. That is exactly the order of the token
//! ids `tokenizers`' `BpeTrainer` assigns (special tokens, then the alphabet sorted by
//! character, then merges), and its heap breaks ties by smallest pair of ids. So with the same
//! words and settings the merges are the same, in the same order. The rule depends on nothing
//! but counts and bytes: not on thread count, input order or hash order.
//!
//! # Picky BPE
//! With [`TrainConfig::picky_threshold`] = `Some(t)` (Chizhov et al., 2024, "BPE Gets Picky"),
//! after merging `(a, b)` the trainer computes, for each of `a` and `b` that is not a single
//! byte, its *intersection over self*: the share of its occurrences that the merge just
//! consumed, `IoS(a) = f(a, b) / f(a)` (both counted before the merge; for `a == b` the pair
//! consumes two occurrences of `a` each time). If `IoS >= t` the token is removed: every
//! remaining occurrence is split back into the present tokens it was made of, its pairs are
//! updated the same incremental way, and its vocabulary slot is free again. A later merge may
//! re-create it. Training stops when the number of *present* tokens reaches the target.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::pretokenize::Pretokenizer;
use crate::Rank;

/// Texts and file blocks are cut into units of about this size, so that threads share the
/// work even when it is one long document.
const UNIT: usize = 1 << 20;
/// Files are read this much at a time.
const BLOCK: usize = 8 << 20;

// ------------------------------------------------------------------------------- control

/// Shared between a running training and whoever watches it (another thread): cancellation
/// and progress counters. Every loop checks `is_cancelled` at least once per unit of text and
/// once per merge, so cancelling takes effect within milliseconds.
#[derive(Debug, Default)]
pub struct Control {
    cancel: AtomicBool,
    bytes: AtomicU64,
    merges: AtomicU64,
}

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Bytes of text pre-tokenized so far.
    pub fn bytes_counted(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Merges done so far by the running [`train`].
    pub fn merges_done(&self) -> u64 {
        self.merges.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(cancelled())
        } else {
            Ok(())
        }
    }
}

/// The error a cancelled operation returns.
pub fn cancelled() -> Error {
    Error::InvalidArgument("training was cancelled".into())
}

/// True for the error [`cancelled`] makes.
pub fn is_cancelled_error(e: &Error) -> bool {
    *e == cancelled()
}

// ------------------------------------------------------------------------------- counting

/// True for a visible ASCII character (no whitespace, no control).
#[inline]
fn is_graphic(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// True when text may be cut at byte `i` (between `b[i - 1]` and `b[i]`) without changing the
/// pieces of any known pattern: `b[i - 1]` is a newline between two visible ASCII characters.
/// Every alternative of the GPT-2, cl100k, o200k, Llama-3 and Qwen2 patterns ends at such a
/// newline (none can continue across a newline into a visible character, and the whitespace
/// run is the newline alone, so `\s+$`-style alternatives see the same run either way).
#[inline]
fn cuttable(b: &[u8], i: usize) -> bool {
    i >= 2 && i < b.len() && b[i - 1] == b'\n' && is_graphic(b[i - 2]) && is_graphic(b[i])
}

/// The cut point nearest below `target` (down to `target / 2`), else the first above it.
fn find_cut(b: &[u8], target: usize) -> Option<usize> {
    let target = target.min(b.len());
    (target / 2..=target)
        .rev()
        .find(|&i| cuttable(b, i))
        .or_else(|| (target + 1..b.len()).find(|&i| cuttable(b, i)))
}

/// Splits `text` into units of about [`UNIT`] bytes at cut points.
fn split_units<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let b = text.as_bytes();
    let mut start = 0;
    while b.len() - start > UNIT + UNIT / 2 {
        match find_cut(&b[start..], UNIT) {
            Some(c) => {
                out.push(&text[start..start + c]);
                start += c;
            }
            None => break,
        }
    }
    if start < b.len() {
        out.push(&text[start..]);
    }
}

/// Counts the distinct pre-tokenizer pieces of a corpus.
#[derive(Debug)]
pub struct WordCounter {
    pretok: Pretokenizer,
    specials: Option<AhoCorasick>,
    counts: FxHashMap<Box<[u8]>, u64>,
    bytes: u64,
}

type LocalCounts<'a> = FxHashMap<&'a [u8], u64>;

impl WordCounter {
    /// `specials` are cut out of the text before pre-tokenization and not counted (they are
    /// document separators, not text to learn merges from).
    pub fn new(pattern: &str, specials: &[String]) -> Result<Self> {
        let pretok = Pretokenizer::new(pattern)?;
        let specials: Vec<&String> = specials.iter().filter(|s| !s.is_empty()).collect();
        let specials = if specials.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(specials)
                    .map_err(|e| Error::InvalidArgument(format!("special tokens: {e}")))?,
            )
        };
        Ok(WordCounter {
            pretok,
            specials,
            counts: FxHashMap::default(),
            bytes: 0,
        })
    }

    pub fn pattern(&self) -> &str {
        self.pretok.pattern()
    }

    /// Number of distinct pieces so far.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// Bytes of text counted so far.
    pub fn total_bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds a single piece `count` times (for callers that count elsewhere).
    pub fn add_word(&mut self, word: &[u8], count: u64) {
        if word.is_empty() || count == 0 {
            return;
        }
        match self.counts.get_mut(word) {
            Some(c) => *c += count,
            None => {
                self.counts.insert(word.into(), count);
            }
        }
    }

    /// Counts the pieces of every text. Each text is one document: with a known pattern, long
    /// documents are cut at points where cutting changes no piece and counted in parallel;
    /// with any other pattern each document is pre-tokenized whole.
    pub fn add_texts(&mut self, texts: &[&str], threads: usize, ctl: &Control) -> Result<()> {
        let mut units = Vec::with_capacity(texts.len());
        for t in texts {
            if self.pretok.is_fast() {
                split_units(t, &mut units);
            } else if !t.is_empty() {
                units.push(*t);
            }
        }
        let locals = self.count_units(&units, threads, ctl)?;
        self.absorb(locals);
        self.bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
        Ok(())
    }

    /// Counts the pieces of a UTF-8 file, streamed in blocks of [`BLOCK`] bytes that are cut
    /// at newlines between two visible ASCII characters (see [`cuttable`]). Invalid UTF-8 is
    /// an error naming the file and byte offset.
    pub fn add_file(&mut self, path: &Path, threads: usize, ctl: &Control) -> Result<()> {
        let name = path.display().to_string();
        let io = |e: std::io::Error| Error::file(&name, e.to_string());
        let mut f = File::open(path).map_err(io)?;
        let mut buf: Vec<u8> = Vec::new();
        let mut offset = 0u64;
        loop {
            ctl.check()?;
            let old = buf.len();
            buf.resize(old + BLOCK, 0);
            let mut n = 0;
            while old + n < buf.len() {
                match f.read(&mut buf[old + n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io(e)),
                }
            }
            buf.truncate(old + n);
            let eof = old + n < old + BLOCK;
            let cut = if eof {
                buf.len()
            } else {
                // The last cut point of the buffer; without one, read on.
                match (old.max(2)..buf.len()).rev().find(|&i| cuttable(&buf, i)) {
                    Some(c) => c,
                    None => continue,
                }
            };
            let text = std::str::from_utf8(&buf[..cut]).map_err(|e| {
                Error::file(
                    &name,
                    format!(
                        "not valid UTF-8 (invalid byte at offset {})",
                        offset + e.valid_up_to() as u64
                    ),
                )
            })?;
            let mut units = Vec::new();
            split_units(text, &mut units);
            let locals = self.count_units(&units, threads, ctl)?;
            self.absorb(locals);
            self.bytes += cut as u64;
            buf.drain(..cut);
            offset += cut as u64;
            if eof {
                return Ok(());
            }
        }
    }

    fn count_units<'a>(
        &self,
        units: &[&'a str],
        threads: usize,
        ctl: &Control,
    ) -> Result<Vec<LocalCounts<'a>>> {
        let threads = threads.clamp(1, units.len().max(1));
        let next = AtomicUsize::new(0);
        let work = || -> Result<LocalCounts<'a>> {
            let mut map = LocalCounts::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= units.len() {
                    return Ok(map);
                }
                ctl.check()?;
                self.count_unit(units[i], &mut map)?;
                ctl.bytes
                    .fetch_add(units[i].len() as u64, Ordering::Relaxed);
            }
        };
        if threads == 1 {
            return Ok(vec![work()?]);
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    fn count_unit<'a>(&self, unit: &'a str, map: &mut LocalCounts<'a>) -> Result<()> {
        let mut seg = 0;
        if let Some(ac) = &self.specials {
            for m in ac.find_iter(unit) {
                self.count_segment(&unit[seg..m.start()], map)?;
                seg = m.end();
            }
        }
        self.count_segment(&unit[seg..], map)
    }

    fn count_segment<'a>(&self, seg: &'a str, map: &mut LocalCounts<'a>) -> Result<()> {
        let b = seg.as_bytes();
        self.pretok.for_each_match(seg, |s, e| {
            *map.entry(&b[s..e]).or_insert(0) += 1;
        })
    }

    fn absorb(&mut self, locals: Vec<LocalCounts<'_>>) {
        for local in locals {
            self.counts.reserve(local.len() / 4);
            for (k, v) in local {
                match self.counts.get_mut(k) {
                    Some(c) => *c += v,
                    None => {
                        self.counts.insert(k.into(), v);
                    }
                }
            }
        }
    }

    /// The counts, in no particular order (training does not depend on it).
    pub fn into_counts(self) -> impl Iterator<Item = (Box<[u8]>, u64)> {
        self.counts.into_iter()
    }
}

// ------------------------------------------------------------------------------- ordering

/// `HF_ORDER[b]`: the position of byte `b` in Hugging Face's byte-level alphabet sorted by
/// character (the order of the ids `BpeTrainer` gives the alphabet).
fn hf_order() -> &'static ([u32; 256], [u8; 256]) {
    static ORDER: std::sync::OnceLock<([u32; 256], [u8; 256])> = std::sync::OnceLock::new();
    ORDER.get_or_init(|| {
        let mut bytes: Vec<u8> = (0..=255u8).collect();
        bytes.sort_by_key(|&b| crate::bytes_unicode::byte_to_char(b) as u32);
        let mut order = [0u32; 256];
        let mut inverse = [0u8; 256];
        for (pos, &b) in bytes.iter().enumerate() {
            order[b as usize] = pos as u32;
            inverse[pos] = b;
        }
        (order, inverse)
    })
}

#[inline]
fn pair_key(l: Rank, r: Rank) -> u64 {
    ((l as u64) << 32) | r as u64
}

#[inline]
fn split_key(k: u64) -> (Rank, Rank) {
    ((k >> 32) as Rank, k as Rank)
}

/// Tie-break key of a pair: smaller is merged first among equal counts.
#[inline]
fn order_key(key: u64) -> u64 {
    let (order, _) = hf_order();
    let o = |id: Rank| -> u64 {
        if id < 256 {
            order[id as usize] as u64
        } else {
            id as u64
        }
    };
    let (l, r) = split_key(key);
    (o(l) << 32) | o(r)
}

#[inline]
fn key_from_order(okey: u64) -> u64 {
    let (_, inverse) = hf_order();
    let i = |o: u64| -> u64 {
        if o < 256 {
            inverse[o as usize] as u64
        } else {
            o
        }
    };
    (i(okey >> 32) << 32) | i(okey & 0xffff_ffff)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeapItem {
    count: u64,
    okey: u64,
}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| other.okey.cmp(&self.okey))
    }
}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

// ------------------------------------------------------------------------------- merge state

#[derive(Debug, Default)]
struct PairStat {
    count: i64,
    /// Words the pair occurs (or occurred) in; a superset, without adjacent repeats.
    words: Vec<u32>,
    /// Step at which the pair last gained occurrences.
    stamp: u32,
}

/// Words as symbol sequences plus the pair index: the incremental core shared by training and
/// by [`replay_merges`].
struct State {
    syms: Vec<Rank>,
    /// Word `w` owns `syms[start[w]..start[w + 1]]` and uses the first `len[w]` of them.
    start: Vec<u32>,
    len: Vec<u32>,
    count: Vec<u64>,
    visited: Vec<u32>,
    pairs: FxHashMap<u64, PairStat>,
    heap: BinaryHeap<HeapItem>,
    tok_len: Vec<u32>,
    max_len: u32,
    touched: Vec<u64>,
    /// Picky BPE only: words each token was created or re-inserted in (a superset).
    tok_words: Option<Vec<Vec<u32>>>,
}

impl State {
    fn new(
        words: impl Iterator<Item = (Box<[u8]>, u64)>,
        max_len: u32,
        track_tokens: bool,
        ctl: &Control,
    ) -> Result<Self> {
        let mut st = State {
            syms: Vec::new(),
            start: vec![0],
            len: Vec::new(),
            count: Vec::new(),
            visited: Vec::new(),
            pairs: FxHashMap::default(),
            heap: BinaryHeap::new(),
            tok_len: vec![1; 256],
            max_len,
            touched: Vec::new(),
            tok_words: track_tokens.then(|| vec![Vec::new(); 256]),
        };
        for (i, (word, count)) in words.enumerate() {
            // Single bytes have no pairs and take no part in merging.
            if word.len() < 2 {
                continue;
            }
            if i % 65536 == 0 {
                ctl.check()?;
            }
            st.syms.extend(word.iter().map(|&b| b as Rank));
            let end = u32::try_from(st.syms.len()).map_err(|_| {
                Error::InvalidArgument("too much distinct text to train on (over 4 GiB)".into())
            })?;
            st.start.push(end);
            st.len.push(word.len() as u32);
            st.count.push(count);
        }
        st.visited = vec![0; st.len.len()];
        for w in 0..st.len.len() {
            let s = st.start[w] as usize;
            let c = st.count[w] as i64;
            for i in s..s + st.len[w] as usize - 1 {
                let (l, r) = (st.syms[i], st.syms[i + 1]);
                Self::inc(
                    &mut st.pairs,
                    &mut st.touched,
                    &st.tok_len,
                    max_len,
                    l,
                    r,
                    w,
                    c,
                    0,
                );
            }
        }
        st.flush_touched();
        Ok(st)
    }

    fn n_words(&self) -> usize {
        self.len.len()
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn inc(
        pairs: &mut FxHashMap<u64, PairStat>,
        touched: &mut Vec<u64>,
        tok_len: &[u32],
        max_len: u32,
        l: Rank,
        r: Rank,
        w: usize,
        c: i64,
        stamp: u32,
    ) {
        if tok_len[l as usize] + tok_len[r as usize] > max_len {
            return;
        }
        let key = pair_key(l, r);
        let e = pairs.entry(key).or_insert_with(|| PairStat {
            count: 0,
            words: Vec::new(),
            stamp: u32::MAX,
        });
        e.count += c;
        if e.words.last() != Some(&(w as u32)) {
            e.words.push(w as u32);
        }
        if e.stamp != stamp {
            e.stamp = stamp;
            touched.push(key);
        }
    }

    #[inline]
    fn dec(pairs: &mut FxHashMap<u64, PairStat>, l: Rank, r: Rank, c: i64) {
        if let Some(e) = pairs.get_mut(&pair_key(l, r)) {
            e.count -= c;
        }
    }

    /// Pushes every pair that gained occurrences onto the heap; drops pairs left with none.
    fn flush_touched(&mut self) {
        for key in self.touched.drain(..) {
            if let Some(e) = self.pairs.get(&key) {
                if e.count > 0 {
                    self.heap.push(HeapItem {
                        count: e.count as u64,
                        okey: order_key(key),
                    });
                }
            }
        }
    }

    /// The current count of a pair (0 if it has none).
    fn pair_count(&self, key: u64) -> u64 {
        self.pairs.get(&key).map_or(0, |e| e.count.max(0) as u64)
    }

    /// Pops heap entries until the top one is current; returns it without popping.
    fn peek_valid(&mut self) -> Option<HeapItem> {
        while let Some(&top) = self.heap.peek() {
            let key = key_from_order(top.okey);
            let c = self.pair_count(key);
            if c == top.count {
                return Some(top);
            }
            self.heap.pop();
            if c > 0 && c < top.count {
                self.heap.push(HeapItem { count: c, ..top });
            }
        }
        None
    }

    /// The best pair: highest count, then smallest in HF order. Not removed.
    fn best(&mut self) -> Option<(u64, u64)> {
        self.peek_valid()
            .map(|top| (key_from_order(top.okey), top.count))
    }

    /// The `k` best pairs other than `exclude`, best first (the heap is left as it was).
    fn top_k(&mut self, k: usize, exclude: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(k);
        let mut held = Vec::new();
        while out.len() < k {
            let Some(top) = self.peek_valid() else { break };
            self.heap.pop();
            held.push(top);
            let key = key_from_order(top.okey);
            if key != exclude && !out.iter().any(|&(k2, _)| k2 == key) {
                out.push((key, top.count));
            }
        }
        self.heap.extend(held);
        out
    }

    /// Replaces every occurrence of `(a, b)` by `x` (left to right, non-overlapping) and
    /// updates the pairs around each occurrence. Returns the number of occurrences merged,
    /// weighted by word counts.
    fn merge(&mut self, a: Rank, b: Rank, x: Rank, stamp: u32) -> u64 {
        while self.tok_len.len() <= x as usize {
            self.tok_len.push(0);
        }
        if self.tok_len[x as usize] == 0 {
            self.tok_len[x as usize] = self.tok_len[a as usize] + self.tok_len[b as usize];
        }
        if let Some(tw) = &mut self.tok_words {
            while tw.len() <= x as usize {
                tw.push(Vec::new());
            }
        }
        let Some(stat) = self.pairs.remove(&pair_key(a, b)) else {
            return 0;
        };
        let State {
            syms,
            start,
            len,
            count,
            visited,
            pairs,
            tok_len,
            max_len,
            touched,
            tok_words,
            ..
        } = self;
        let mut total = 0u64;
        for &w in &stat.words {
            let w = w as usize;
            if visited[w] == stamp {
                continue;
            }
            visited[w] = stamp;
            let s0 = start[w] as usize;
            let l = len[w] as usize;
            let word = &mut syms[s0..s0 + l];
            if !word.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            let c = count[w] as i64;
            let (mut r, mut wr, mut n) = (0usize, 0usize, 0u64);
            while r < l {
                if r + 1 < l && word[r] == a && word[r + 1] == b {
                    if wr > 0 {
                        let p = word[wr - 1];
                        Self::dec(pairs, p, a, c);
                        Self::inc(pairs, touched, tok_len, *max_len, p, x, w, c, stamp);
                    }
                    if r + 2 < l {
                        let nx = word[r + 2];
                        Self::dec(pairs, b, nx, c);
                        Self::inc(pairs, touched, tok_len, *max_len, x, nx, w, c, stamp);
                    }
                    word[wr] = x;
                    wr += 1;
                    r += 2;
                    n += 1;
                } else {
                    word[wr] = word[r];
                    wr += 1;
                    r += 1;
                }
            }
            len[w] = wr as u32;
            total += n * c as u64;
            if let Some(tw) = tok_words {
                tw[x as usize].push(w as u32);
            }
        }
        self.flush_touched();
        total
    }

    /// Picky BPE: replaces every occurrence of token `t` by `parts`, updating pairs. Returns
    /// the number of occurrences split, weighted.
    fn split_token(&mut self, t: Rank, parts: &[Rank], stamp: u32) -> u64 {
        let Some(tw) = self.tok_words.as_mut() else {
            return 0;
        };
        let words = std::mem::take(&mut tw[t as usize]);
        let mut total = 0u64;
        let mut old_pairs: Vec<u64> = Vec::new();
        let mut new_pairs: Vec<u64> = Vec::new();
        let mut buf: Vec<Rank> = Vec::new();
        for &w in &words {
            let w = w as usize;
            if self.visited[w] == stamp {
                continue;
            }
            self.visited[w] = stamp;
            let s0 = self.start[w] as usize;
            let l = self.len[w] as usize;
            let word = &self.syms[s0..s0 + l];
            let n = word.iter().filter(|&&s| s == t).count() as u64;
            if n == 0 {
                continue;
            }
            old_pairs.clear();
            old_pairs.extend(word.windows(2).map(|p| pair_key(p[0], p[1])));
            buf.clear();
            for &s in word {
                if s == t {
                    buf.extend_from_slice(parts);
                } else {
                    buf.push(s);
                }
            }
            new_pairs.clear();
            new_pairs.extend(buf.windows(2).map(|p| pair_key(p[0], p[1])));
            self.syms[s0..s0 + buf.len()].copy_from_slice(&buf);
            self.len[w] = buf.len() as u32;
            let c = self.count[w] as i64;
            total += n * c as u64;
            old_pairs.sort_unstable();
            new_pairs.sort_unstable();
            // Apply the difference of the two multisets of pairs.
            let (mut i, mut j) = (0, 0);
            while i < old_pairs.len() || j < new_pairs.len() {
                let take_old =
                    j >= new_pairs.len() || (i < old_pairs.len() && old_pairs[i] < new_pairs[j]);
                let take_new =
                    i >= old_pairs.len() || (j < new_pairs.len() && new_pairs[j] < old_pairs[i]);
                if take_old {
                    let (l, r) = split_key(old_pairs[i]);
                    Self::dec(&mut self.pairs, l, r, c);
                    i += 1;
                } else if take_new {
                    let (l, r) = split_key(new_pairs[j]);
                    Self::inc(
                        &mut self.pairs,
                        &mut self.touched,
                        &self.tok_len,
                        self.max_len,
                        l,
                        r,
                        w,
                        c,
                        stamp,
                    );
                    j += 1;
                } else {
                    i += 1;
                    j += 1;
                }
            }
            if let Some(tw) = self.tok_words.as_mut() {
                for &p in parts {
                    if tw[p as usize].last() != Some(&(w as u32)) {
                        tw[p as usize].push(w as u32);
                    }
                }
            }
        }
        // Pairs that lost all occurrences are dropped lazily; those that gained go on the heap.
        self.flush_touched();
        total
    }
}

// ------------------------------------------------------------------------------- training

/// Settings of [`train`].
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Ordinary tokens wanted: the 256 single bytes plus merged tokens (special tokens are not
    /// counted here).
    pub n_tokens: usize,
    /// Stop when the best pair occurs fewer times than this.
    pub min_frequency: u64,
    /// No token longer than this many bytes is created.
    pub max_token_length: Option<usize>,
    /// Picky BPE's IoS threshold in (0, 1); `None` for plain BPE.
    pub picky_threshold: Option<f64>,
}

/// One step of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `(left, right) -> id`, with the pair's count when it was chosen.
    Merge {
        left: Rank,
        right: Rank,
        id: Rank,
        count: u64,
    },
    /// Picky BPE removed token `id`.
    Remove { id: Rank },
}

/// What [`train`] produces. Ids here are *training* ids: bytes are `0..256` by value, merged
/// tokens `256..` in order of first creation.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The bytes of every token ever created, by training id.
    pub tokens: Vec<Vec<u8>>,
    /// Whether each token is in the final vocabulary.
    pub present: Vec<bool>,
    /// Every merge and removal, in order.
    pub events: Vec<Event>,
    /// Distinct words (of two or more bytes) trained on.
    pub n_words: usize,
}

impl Trained {
    /// The final vocabulary as tiktoken ranks: bytes `0..256` by value, then the present
    /// merged tokens in order of the merge that last inserted them. Without Picky BPE the
    /// rank is the training id itself.
    pub fn ranks(&self) -> Vec<(Vec<u8>, Rank)> {
        self.final_order()
            .iter()
            .enumerate()
            .map(|(rank, &id)| (self.tokens[id as usize].clone(), rank as Rank))
            .collect()
    }

    /// Training ids of the final vocabulary, in rank order.
    fn final_order(&self) -> Vec<Rank> {
        // A token ranks by the merge that (re)inserted it: a second merge producing a token
        // that is present (two paths to one string) does not move it.
        let mut last = vec![0usize; self.tokens.len()];
        let mut live = vec![false; self.tokens.len()];
        live[..256].fill(true);
        for (step, e) in self.events.iter().enumerate() {
            match *e {
                Event::Merge { id, .. } if !live[id as usize] => {
                    live[id as usize] = true;
                    last[id as usize] = step + 1;
                }
                Event::Merge { .. } => {}
                Event::Remove { id } => live[id as usize] = false,
            }
        }
        let mut order: Vec<Rank> = (0..self.tokens.len() as Rank)
            .filter(|&id| self.present[id as usize])
            .collect();
        order.sort_by_key(|&id| {
            (
                id >= 256,
                if id < 256 {
                    id as usize
                } else {
                    last[id as usize]
                },
            )
        });
        order
    }

    /// The merge list for a `tokenizer.json`, as pairs of final ranks, in priority order.
    ///
    /// Plain BPE: the training merges, in order (a pair merged twice keeps its first place).
    /// Picky BPE: removals cannot be written in that format, so the list is derived from the
    /// final vocabulary: for each merged token in rank order, every split of it into two
    /// present tokens (left to right). Encoding with it then agrees with encoding by ranks.
    pub fn merges(&self) -> Vec<(Rank, Rank)> {
        let order = self.final_order();
        let mut rank_of = vec![Rank::MAX; self.tokens.len()];
        for (r, &id) in order.iter().enumerate() {
            rank_of[id as usize] = r as Rank;
        }
        let picky = self
            .events
            .iter()
            .any(|e| matches!(e, Event::Remove { .. }));
        let mut seen = rustc_hash::FxHashSet::default();
        let mut out = Vec::new();
        if !picky {
            for e in &self.events {
                if let Event::Merge { left, right, .. } = *e {
                    let p = (rank_of[left as usize], rank_of[right as usize]);
                    if seen.insert(p) {
                        out.push(p);
                    }
                }
            }
            return out;
        }
        let by_bytes: FxHashMap<&[u8], Rank> = order
            .iter()
            .map(|&id| (self.tokens[id as usize].as_slice(), rank_of[id as usize]))
            .collect();
        for &id in order.iter().filter(|&&id| id >= 256) {
            let t = &self.tokens[id as usize];
            for split in 1..t.len() {
                if let (Some(&l), Some(&r)) = (by_bytes.get(&t[..split]), by_bytes.get(&t[split..]))
                {
                    if seen.insert((l, r)) {
                        out.push((l, r));
                    }
                }
            }
        }
        out
    }

    /// Bytes of the tokens Picky BPE removed and that stayed removed, in removal order.
    pub fn removed(&self) -> Vec<Vec<u8>> {
        let mut seen = rustc_hash::FxHashSet::default();
        self.events
            .iter()
            .filter_map(|e| match *e {
                Event::Remove { id } if !self.present[id as usize] && seen.insert(id) => {
                    Some(self.tokens[id as usize].clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// Learns merges from word counts. See the module documentation for the algorithm and the
/// tie-breaking rule.
pub fn train(
    words: impl Iterator<Item = (Box<[u8]>, u64)>,
    cfg: &TrainConfig,
    ctl: &Control,
) -> Result<Trained> {
    if cfg.n_tokens < 256 {
        return Err(Error::InvalidArgument(format!(
            "the vocabulary must have room for the 256 single bytes (asked for {} ordinary tokens)",
            cfg.n_tokens
        )));
    }
    if let Some(t) = cfg.picky_threshold {
        if !(t > 0.0 && t < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "picky_threshold must be in (0, 1), got {t}"
            )));
        }
    }
    let max_len = match cfg.max_token_length {
        None => u32::MAX,
        Some(m) if m >= 2 => m.min(u32::MAX as usize) as u32,
        Some(m) => {
            return Err(Error::InvalidArgument(format!(
                "max_token_length must be at least 2, got {m}"
            )))
        }
    };
    let picky = cfg.picky_threshold;
    let mut st = State::new(words, max_len, picky.is_some(), ctl)?;
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut present = vec![true; 256];
    let mut parts: Vec<(Rank, Rank)> = vec![(0, 0); 256];
    let mut freq: Vec<i64> = vec![0; 256];
    let mut by_bytes: FxHashMap<Vec<u8>, Rank> = FxHashMap::default();
    let mut n_present = 256usize;
    let mut events = Vec::new();
    let mut stamp = 0u32;
    while n_present < cfg.n_tokens {
        ctl.check()?;
        let Some((key, count)) = st.best() else { break };
        if count < cfg.min_frequency.max(1) {
            break;
        }
        let (a, b) = split_key(key);
        let mut bytes = tokens[a as usize].clone();
        bytes.extend_from_slice(&tokens[b as usize]);
        let x = match by_bytes.get(&bytes) {
            Some(&id) => {
                if !present[id as usize] {
                    present[id as usize] = true;
                    n_present += 1;
                }
                id
            }
            None => {
                let id = tokens.len() as Rank;
                by_bytes.insert(bytes.clone(), id);
                tokens.push(bytes);
                present.push(true);
                parts.push((a, b));
                freq.push(0);
                n_present += 1;
                id
            }
        };
        parts[x as usize] = (a, b);
        stamp += 1;
        let n = st.merge(a, b, x, stamp) as i64;
        events.push(Event::Merge {
            left: a,
            right: b,
            id: x,
            count,
        });
        ctl.merges.fetch_add(1, Ordering::Relaxed);
        let Some(threshold) = picky else { continue };
        freq[x as usize] += n;
        // Occurrences of `a` (and of `b`) the merge consumed.
        let used = if a == b { 2 * n } else { n };
        freq[a as usize] -= used;
        if a != b {
            freq[b as usize] -= used;
        }
        let candidates = if a == b { vec![a] } else { vec![a, b] };
        for t in candidates {
            if t < 256 || !present[t as usize] {
                continue;
            }
            let before = freq[t as usize] + used;
            if before <= 0 || (used as f64) / (before as f64) < threshold {
                continue;
            }
            // Remove t: split it into the present tokens it was built from.
            let mut split = Vec::new();
            let mut stack = vec![t];
            while let Some(s) = stack.pop() {
                if s < 256 || (present[s as usize] && s != t) {
                    split.push(s);
                } else {
                    let (l, r) = parts[s as usize];
                    stack.push(r);
                    stack.push(l);
                }
            }
            present[t as usize] = false;
            n_present -= 1;
            stamp += 1;
            st.split_token(t, &split, stamp);
            let f = freq[t as usize];
            for &p in &split {
                freq[p as usize] += f;
            }
            freq[t as usize] = 0;
            events.push(Event::Remove { id: t });
        }
    }
    Ok(Trained {
        tokens,
        present,
        events,
        n_words: st.n_words(),
    })
}

// ------------------------------------------------------------------------------- replay

/// One step of [`replay_merges`]: the counts, in every category, of the merge made at this
/// step and of the strongest competing pairs.
#[derive(Debug, Clone, Default)]
pub struct ReplayStep {
    /// `merge_counts[i]`: occurrences of this step's merge in category `i`.
    pub merge_counts: Vec<u64>,
    /// Competing pairs (the `k` most frequent in any one category, other than the merge):
    /// `(pair key, counts per category)`. The key identifies the pair across steps.
    pub candidates: Vec<(u64, Vec<u64>)>,
}

/// For data-mixture inference (Hayase et al., 2024): applies a given ordered merge list to the
/// words of each category and reports, before each merge, the pair counts the linear program
/// needs. `merges` are byte strings `(left, right)`; every left and right must be a single
/// byte or the result of an earlier merge.
pub fn replay_merges(
    categories: Vec<Vec<(Box<[u8]>, u64)>>,
    merges: &[(Vec<u8>, Vec<u8>)],
    top_k: usize,
    ctl: &Control,
) -> Result<Vec<ReplayStep>> {
    let mut ids: FxHashMap<Vec<u8>, Rank> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
    let mut next = 256 as Rank;
    let mut plan = Vec::with_capacity(merges.len());
    for (i, (l, r)) in merges.iter().enumerate() {
        let id = |t: &Vec<u8>| {
            ids.get(t).copied().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "merge {i} uses {:?}, which no earlier merge produced",
                    String::from_utf8_lossy(t)
                ))
            })
        };
        let (a, b) = (id(l)?, id(r)?);
        let mut m = l.clone();
        m.extend_from_slice(r);
        let x = *ids.entry(m).or_insert_with(|| {
            next += 1;
            next - 1
        });
        plan.push((a, b, x));
    }
    let mut states = categories
        .into_iter()
        .map(|words| State::new(words.into_iter(), u32::MAX, false, ctl))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(plan.len());
    for (step, &(a, b, x)) in plan.iter().enumerate() {
        ctl.check()?;
        let key = pair_key(a, b);
        let mut step_out = ReplayStep {
            merge_counts: states.iter().map(|s| s.pair_count(key)).collect(),
            candidates: Vec::new(),
        };
        let mut keys: Vec<u64> = Vec::new();
        for s in states.iter_mut() {
            for (k, _) in s.top_k(top_k, key) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys.sort_unstable();
        step_out.candidates = keys
            .into_iter()
            .map(|k| (k, states.iter().map(|s| s.pair_count(k)).collect()))
            .collect();
        out.push(step_out);
        for s in states.iter_mut() {
            s.merge(a, b, x, step as u32 + 1);
        }
        ctl.merges.fetch_add(1, Ordering::Relaxed);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[(&str, u64)]) -> Vec<(Box<[u8]>, u64)> {
        list.iter()
            .map(|(w, c)| (w.as_bytes().to_vec().into_boxed_slice(), *c))
            .collect()
    }

    fn merged_strings(t: &Trained) -> Vec<String> {
        t.events
            .iter()
            .filter_map(|e| match *e {
                Event::Merge { id, .. } => {
                    Some(String::from_utf8_lossy(&t.tokens[id as usize]).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    fn cfg(n: usize) -> TrainConfig {
        TrainConfig {
            n_tokens: n,
            min_frequency: 0,
            max_token_length: None,
            picky_threshold: None,
        }
    }

    /// Reference: recount every pair after every merge.
    fn naive(list: &[(&str, u64)], n_merges: usize) -> Vec<String> {
        let (order, _) = hf_order();
        let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ws: Vec<(Vec<u32>, u64)> = list
            .iter()
            .map(|(w, c)| (w.bytes().map(|b| b as u32).collect(), *c))
            .collect();
        let ord = |id: u32| if id < 256 { order[id as usize] } else { id };
        let mut out = Vec::new();
        for _ in 0..n_merges {
            let mut counts: FxHashMap<(u32, u32), u64> = FxHashMap::default();
            for (w, c) in &ws {
                for p in w.windows(2) {
                    *counts.entry((p[0], p[1])).or_insert(0) += c;
                }
            }
            let Some((&(a, b), _)) = counts.iter().max_by(|x, y| {
                x.1.cmp(y.1)
                    .then((ord(y.0 .0), ord(y.0 .1)).cmp(&(ord(x.0 .0), ord(x.0 .1))))
            }) else {
                break;
            };
            let mut bytes = toks[a as usize].clone();
            bytes.extend_from_slice(&toks[b as usize]);
            let x = toks.len() as u32;
            out.push(String::from_utf8_lossy(&bytes).into_owned());
            toks.push(bytes);
            for (w, _) in ws.iter_mut() {
                let mut o = Vec::new();
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                        o.push(x);
                        i += 2;
                    } else {
                        o.push(w[i]);
                        i += 1;
                    }
                }
                *w = o;
            }
        }
        out
    }

    #[test]
    fn incremental_matches_naive_recount() {
        let list = [
            ("hello", 5),
            (" hello", 7),
            (" world", 3),
            ("aaaaaa", 4),
            ("abababab", 2),
            (" help", 6),
            ("lol", 1),
            ("  ", 9),
            ("    ", 3),
        ];
        let t = train(words(&list).into_iter(), &cfg(256 + 30), &Control::new()).unwrap();
        let got = merged_strings(&t);
        assert_eq!(got, naive(&list, got.len()));
        assert!(got.len() >= 20);
    }

    #[test]
    fn ties_follow_hf_alphabet_order() {
        // 'a' (0x61) ranks before ' ' (0x20 maps to U+0120) in HF order.
        let t = train(
            words(&[(" x", 1), ("ay", 1)]).into_iter(),
            &cfg(257),
            &Control::new(),
        )
        .unwrap();
        assert_eq!(merged_strings(&t), vec!["ay"]);
    }

    #[test]
    fn max_token_length_and_min_frequency() {
        let list = [("abcdefgh", 10), ("xy", 1)];
        let mut c = cfg(300);
        c.max_token_length = Some(3);
        let t = train(words(&list).into_iter(), &c, &Control::new()).unwrap();
        assert!(t.tokens.iter().all(|b| b.len() <= 3));
        c.max_token_length = None;
        c.min_frequency = 2;
        let t = train(words(&list).into_iter(), &c, &Control::new()).unwrap();
        assert!(!merged_strings(&t).contains(&"xy".to_string()));
    }

    #[test]
    fn picky_removes_intermediate_tokens() {
        // "ould" only ever occurs inside " would", " could", " should".
        let list = [
            (" would", 50),
            (" could", 40),
            (" should", 30),
            (" old", 3),
            (" hold", 2),
        ];
        let mut c = cfg(256 + 12);
        c.picky_threshold = Some(0.9);
        let t = train(words(&list).into_iter(), &c, &Control::new()).unwrap();
        assert!(t.events.iter().any(|e| matches!(e, Event::Remove { .. })));
        let ranks = t.ranks();
        assert!(ranks.len() <= 256 + 12);
        let strings: Vec<String> = ranks[256..]
            .iter()
            .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(strings.contains(&" would".to_string()), "{strings:?}");
        assert!(!strings.contains(&"ould".to_string()), "{strings:?}");
        for removed in t.removed() {
            assert!(!ranks.iter().any(|(b, _)| *b == removed));
        }
        // Every merge names present tokens whose concatenation is present.
        let by_rank: FxHashMap<Rank, &Vec<u8>> = ranks.iter().map(|(b, r)| (*r, b)).collect();
        for (l, r) in t.merges() {
            let mut m = by_rank[&l].clone();
            m.extend_from_slice(by_rank[&r]);
            assert!(ranks.iter().any(|(b, _)| *b == m));
        }
    }

    #[test]
    fn cancel_stops_training() {
        let ctl = Control::new();
        ctl.cancel();
        let e = train(words(&[("abc", 1)]).into_iter(), &cfg(300), &ctl).unwrap_err();
        assert!(is_cancelled_error(&e));
    }

    #[test]
    fn cuts_do_not_change_pieces() {
        use crate::pretokenize::KNOWN_PATTERNS;
        let text = "x = 1\nif y:\n  z\nHello  \nworld's\n\nFoo.\nbar\r\n\nBaz\n\u{3000}\nq\n";
        let text = text.repeat(40_000);
        for pat in KNOWN_PATTERNS {
            let mut whole = WordCounter::new(pat, &[]).unwrap();
            whole.count_segment_whole(&text);
            let mut cut = WordCounter::new(pat, &[]).unwrap();
            cut.add_texts(&[&text], 2, &Control::new()).unwrap();
            assert_eq!(whole.counts, cut.counts, "{pat}");
        }
    }

    #[test]
    fn files_are_streamed_and_checked() {
        let dir = std::env::temp_dir().join(format!("tm-train-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        let text = "Hello world\nsome text\n".repeat(600_000);
        std::fs::write(&good, &text).unwrap();
        let mut a = WordCounter::new(crate::pretokenize::GPT2_PATTERN, &[]).unwrap();
        a.add_file(&good, 2, &Control::new()).unwrap();
        let mut b = WordCounter::new(crate::pretokenize::GPT2_PATTERN, &[]).unwrap();
        b.count_segment_whole(&text);
        assert_eq!(a.counts, b.counts);
        assert_eq!(a.total_bytes(), text.len() as u64);
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, b"abc\xffdef").unwrap();
        let e = a.add_file(&bad, 1, &Control::new()).unwrap_err();
        assert!(e.to_string().contains("offset 3"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    impl WordCounter {
        fn count_segment_whole(&mut self, text: &str) {
            let mut map = LocalCounts::default();
            self.count_segment(text, &mut map).unwrap();
            let owned: Vec<(Vec<u8>, u64)> =
                map.into_iter().map(|(k, v)| (k.to_vec(), v)).collect();
            for (k, v) in owned {
                self.add_word(&k, v);
            }
        }
    }

    #[test]
    fn replay_reports_merge_and_competitor_counts() {
        let cats = vec![words(&[("abab", 3), ("cd", 1)]), words(&[("cdcd", 2)])];
        let merges = vec![
            (b"a".to_vec(), b"b".to_vec()),
            (b"c".to_vec(), b"d".to_vec()),
        ];
        let steps = replay_merges(cats, &merges, 5, &Control::new()).unwrap();
        assert_eq!(steps[0].merge_counts, vec![6, 0]);
        let cd = pair_key(b'c' as Rank, b'd' as Rank);
        let c = steps[0].candidates.iter().find(|(k, _)| *k == cd).unwrap();
        assert_eq!(c.1, vec![1, 4]);
        assert_eq!(steps[1].merge_counts, vec![1, 4]);
    }
}
