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

use std::sync::OnceLock;

use crate::bpe::Bpe;
use crate::Rank;

/// A token's merges on its own bytes.
#[derive(Debug)]
pub(super) struct History {
    /// The loop on the token's bytes gives the token itself.
    reaches: bool,
    /// The first and last symbols before any merge (the token's first and last bytes).
    first: Rank,
    last: Rank,
    /// Every merge in order: its key, and the new first symbol or new last symbol when the
    /// merge changes it (a merge of the only two symbols changes both).
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    key: u64,
    first: Option<Rank>,
    last: Option<Rank>,
}

/// Merge histories by token id, computed on first use.
#[derive(Debug)]
pub(super) struct Histories {
    slots: Vec<OnceLock<History>>,
}

impl Histories {
    pub(super) fn new(n_slots: usize) -> Self {
        Histories {
            slots: (0..n_slots).map(|_| OnceLock::new()).collect(),
        }
    }

    fn get<'a>(&'a self, bpe: &Bpe, id: Rank, bytes: &[u8]) -> Option<&'a History> {
        let slot = self.slots.get(id as usize)?;
        Some(slot.get_or_init(|| history(bpe, id, bytes)))
    }

    /// Does the merge loop on `bytes(a) + bytes(b)` give `[a, b]`? `None` when an id has no
    /// slot (the caller falls back to the loop).
    pub(super) fn canonical_pair(
        &self,
        bpe: &Bpe,
        (a, a_bytes): (Rank, &[u8]),
        (b, b_bytes): (Rank, &[u8]),
    ) -> Option<bool> {
        let ha = self.get(bpe, a, a_bytes)?;
        let hb = self.get(bpe, b, b_bytes)?;
        if !ha.reaches || !hb.reaches {
            return Some(false);
        }
        let (mut x, mut y) = (ha.last, hb.first);
        let (mut i, mut j) = (0, 0);
        let mut cross = bpe.pair_priority(x, y);
        loop {
            let ka = ha.steps.get(i).map_or(u64::MAX, |s| s.key);
            let kb = hb.steps.get(j).map_or(u64::MAX, |s| s.key);
            if let Some(c) = cross {
                if c < ka && c <= kb {
                    return Some(false);
                }
            }
            if i == ha.steps.len() && j == hb.steps.len() {
                return Some(true);
            }
            // The next merge: A's on ties (it is further left); `ka == kb == MAX` with steps
            // left cannot happen, since a real key is below `u64::MAX` (`NO_MERGE`).
            if j == hb.steps.len() || (i < ha.steps.len() && ka <= kb) {
                if let Some(l) = ha.steps[i].last {
                    x = l;
                    cross = bpe.pair_priority(x, y);
                }
                i += 1;
            } else {
                if let Some(f) = hb.steps[j].first {
                    y = f;
                    cross = bpe.pair_priority(x, y);
                }
                j += 1;
            }
        }
    }
}

/// The merge loop on `bytes` alone (lowest key first, leftmost on ties: `bpe.rs`'s rule),
/// recorded. Tokens are short, so the plain quadratic scan is enough.
fn history(bpe: &Bpe, id: Rank, bytes: &[u8]) -> History {
    let byte_token = |b: u8| {
        bpe.token_id(&[b])
            .expect("ByteLm checked every byte has a token")
    };
    let mut syms: Vec<Rank> = bytes.iter().map(|&b| byte_token(b)).collect();
    let (first, last) = (syms[0], syms[syms.len() - 1]);
    let mut steps = Vec::new();
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
            first: (k == 0).then_some(merged),
            last: (k + 2 == n).then_some(merged),
        });
        syms[k] = merged;
        syms.remove(k + 1);
    }
    History {
        reaches: syms == [id],
        first,
        last,
        steps,
    }
}
