//! The canonical-pair test from the merge priorities, without re-encoding.
//!
//! `a b` is a canonical pair when the merge loop on `bytes(a) + bytes(b)` gives `[a, b]`
//! back (see [`super::fast`]). The loop merges the adjacent pair with the lowest key
//! (`bpe.rs`: priority, then merged id), leftmost on ties. Call the bytes of `a` region A and
//! those of `b` region B. As long as no pair across the boundary merges, each region evolves
//! exactly as the loop on its bytes alone (its pairs are its own), and the loop's next step is
//! the smaller of the two regions' next steps (A's on ties, being further left) or the cross
//! pair: the region's last symbol of A and first symbol of B. The cross pair merges at the
//! first moment its key `c` is below A's next key and at most B's next key (it is left of
//! every pair of B and right of every pair of A). A merged cross pair leaves a symbol that
//! spans the boundary for good, so the result cannot be `[a, b]`; with no cross merge the
//! result is A's alone followed by B's alone. So `a b` is canonical exactly when the loop on
//! `bytes(a)` alone gives `[a]`, on `bytes(b)` alone gives `[b]`, and replaying the two
//! sequences of merges interleaved by key never lets the cross pair win.
//!
//! Each token's own merge sequence is computed once (the keys of its merges, and which of them
//! change its first or last symbol); a pair test is then a walk over the two sequences with
//! one pair-table lookup per change of the cross pair, instead of a merge loop on the
//! concatenated bytes. No assumption on the priorities is made (they need not grow along a
//! token's merges, as HF merge lists may have it), so this is the merge loop's own answer;
//! `tests::canonical_pairs_from_priorities_equal_the_merge_loop` compares the two on every
//! pair of toy vocabularies with tiktoken ranks and with shuffled HF merge lists.

use crate::bpe::Bpe;
use crate::Rank;

/// A token's merges on its own bytes: `steps[start..start + len]` of [`Histories`].
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The loop on the token's bytes gives the token itself (false for a slot without bytes).
    reaches: bool,
    /// The slot has bytes (else the caller falls back to the loop, which reports the id).
    known: bool,
    /// The first and last symbols before any merge (the token's first and last bytes).
    first: Rank,
    last: Rank,
    start: u32,
    len: u32,
}

/// One merge: its key, and the new first symbol or new last symbol when the merge changes it
/// ([`NONE`] otherwise; a merge of the only two symbols changes both).
#[derive(Debug, Clone, Copy)]
struct Step {
    key: u64,
    first: Rank,
    last: Rank,
}

const NONE: Rank = Rank::MAX;

/// Every token's merge history, built once for the whole vocabulary into two flat arrays.
///
/// Performance: a cold node meets up to the whole vocabulary right after the model's forward
/// has evicted the caches, so the pair test's cost is mostly memory latency. Per-token heap
/// allocations behind lazily initialised slots cost a pointer chase to a random line per
/// token; here a token's header is one small record in id order and its steps are contiguous
/// (16 bytes each), so a walk touches two or three lines. Building all of them takes a few
/// milliseconds at construction, the time of a handful of cold nodes.
#[derive(Debug)]
pub(super) struct Histories {
    heads: Vec<Head>,
    steps: Vec<Step>,
}

impl Histories {
    pub(super) fn new(bpe: &Bpe) -> Self {
        let mut heads = Vec::with_capacity(bpe.n_slots());
        let mut steps = Vec::new();
        for id in 0..bpe.n_slots() as Rank {
            let start = steps.len() as u32;
            let head = match bpe.token_bytes(id) {
                Some(bytes) => {
                    let (reaches, first, last) = history(bpe, id, bytes, &mut steps);
                    Head {
                        reaches,
                        known: true,
                        first,
                        last,
                        start,
                        len: steps.len() as u32 - start,
                    }
                }
                None => Head {
                    reaches: false,
                    known: false,
                    first: NONE,
                    last: NONE,
                    start,
                    len: 0,
                },
            };
            heads.push(head);
        }
        Histories { heads, steps }
    }

    fn get(&self, id: Rank) -> Option<(&Head, &[Step])> {
        let h = self.heads.get(id as usize).filter(|h| h.known)?;
        Some((h, &self.steps[h.start as usize..(h.start + h.len) as usize]))
    }

    /// Does the merge loop on `bytes(a) + bytes(b)` give `[a, b]`? `None` when an id has no
    /// bytes (the caller falls back to the loop, which reports it).
    pub(super) fn canonical_pair(&self, bpe: &Bpe, a: Rank, b: Rank) -> Option<bool> {
        let (ha, sa) = self.get(a)?;
        let (hb, sb) = self.get(b)?;
        if !ha.reaches || !hb.reaches {
            return Some(false);
        }
        let (mut x, mut y) = (ha.last, hb.first);
        let (mut i, mut j) = (0, 0);
        let mut cross = bpe.pair_priority(x, y);
        loop {
            let ka = sa.get(i).map_or(u64::MAX, |s| s.key);
            let kb = sb.get(j).map_or(u64::MAX, |s| s.key);
            if let Some(c) = cross {
                if c < ka && c <= kb {
                    return Some(false);
                }
            }
            if i == sa.len() && j == sb.len() {
                return Some(true);
            }
            // The next merge: A's on ties (it is further left); `ka == kb == MAX` with steps
            // left cannot happen, since a real key is below `u64::MAX` (`NO_MERGE`).
            if j == sb.len() || (i < sa.len() && ka <= kb) {
                if sa[i].last != NONE {
                    x = sa[i].last;
                    cross = bpe.pair_priority(x, y);
                }
                i += 1;
            } else {
                if sb[j].first != NONE {
                    y = sb[j].first;
                    cross = bpe.pair_priority(x, y);
                }
                j += 1;
            }
        }
    }
}

/// The merge loop on `bytes` alone (lowest key first, leftmost on ties: `bpe.rs`'s rule),
/// its steps appended to `steps`; returns (reaches `id`, first byte's token, last byte's
/// token). Tokens are short, so the plain quadratic scan is enough.
fn history(bpe: &Bpe, id: Rank, bytes: &[u8], steps: &mut Vec<Step>) -> (bool, Rank, Rank) {
    let byte_token = |b: u8| {
        bpe.token_id(&[b])
            .expect("ByteLm checked every byte has a token")
    };
    let mut syms: Vec<Rank> = bytes.iter().map(|&b| byte_token(b)).collect();
    let (first, last) = (syms[0], syms[syms.len() - 1]);
    loop {
        let mut best: Option<(u64, usize)> = None;
        for k in 0..syms.len().saturating_sub(1) {
            if let Some(key) = bpe.pair_priority(syms[k], syms[k + 1]) {
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, k));
                }
            }
        }
        let Some((key, k)) = best else {
            break;
        };
        let merged = key as u32 as Rank;
        let n = syms.len();
        steps.push(Step {
            key,
            first: if k == 0 { merged } else { NONE },
            last: if k + 2 == n { merged } else { NONE },
        });
        syms[k] = merged;
        syms.remove(k + 1);
    }
    (syms == [id], first, last)
}
