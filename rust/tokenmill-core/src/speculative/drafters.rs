//! Draft sources. Each proposes candidate next tokens after a history (the context followed by
//! a path in the draft tree), best first, with a score in `[0, 1]` that estimates how likely
//! the target model is to agree. Scores multiply along a path, so the tree builder can rank
//! nodes from different drafters against each other (EAGLE-2's global ranking).

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::Rank;

/// The one drafter interface: candidate next tokens after `h`, best first, scores in `[0, 1]`.
pub trait Propose {
    fn propose(&self, h: &History<'_>, out: &mut Vec<(Rank, f32)>);
}

/// Marks an empty slot of the adjacency matrix.
pub const EMPTY: Rank = Rank::MAX;

/// The context followed by a draft path, seen as one sequence without concatenating.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    pub context: &'a [Rank],
    pub path: &'a [Rank],
}

impl History<'_> {
    pub fn len(&self) -> usize {
        self.context.len() + self.path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token `back` places before the end (`back = 0`: the last token).
    pub fn from_end(&self, back: usize) -> Option<Rank> {
        if back < self.path.len() {
            Some(self.path[self.path.len() - 1 - back])
        } else {
            let b = back - self.path.len();
            (b < self.context.len()).then(|| self.context[self.context.len() - 1 - b])
        }
    }
}

/// Token Recycling's adjacency matrix: for every token, the top-k next tokens (and their
/// probabilities) that the target model produced the last time that token was in a draft tree.
/// `vocab * k` ids plus as many probabilities: 2.5 MB for a 32k vocabulary at k = 8 (ids alone,
/// as in the paper, 1 MB).
#[derive(Debug, Clone, PartialEq)]
pub struct Adjacency {
    vocab: usize,
    k: usize,
    ids: Vec<Rank>,
    probs: Vec<f32>,
}

impl Adjacency {
    pub fn new(vocab: usize, k: usize) -> Result<Self> {
        if vocab == 0 || k == 0 {
            return Err(Error::InvalidArgument(format!(
                "adjacency matrix needs vocab_size > 0 and k > 0 (got {vocab} and {k})"
            )));
        }
        Ok(Adjacency {
            vocab,
            k,
            ids: vec![EMPTY; vocab * k],
            probs: vec![0.0; vocab * k],
        })
    }

    /// From saved arrays (`ids`, `probs`: `vocab * k`, row-major).
    pub fn from_parts(vocab: usize, k: usize, ids: Vec<Rank>, probs: Vec<f32>) -> Result<Self> {
        let mut adj = Adjacency::new(vocab, k)?;
        if ids.len() != vocab * k || probs.len() != vocab * k {
            return Err(Error::InvalidArgument(format!(
                "adjacency arrays must hold vocab_size * k = {} entries (got {} ids, {} probs)",
                vocab * k,
                ids.len(),
                probs.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t != EMPTY && t as usize >= vocab) {
            return Err(Error::InvalidArgument(format!(
                "adjacency holds token id {bad}, outside the vocabulary of {vocab}"
            )));
        }
        if probs.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(Error::InvalidArgument(
                "adjacency probabilities must lie in [0, 1]".into(),
            ));
        }
        adj.ids = ids;
        adj.probs = probs;
        Ok(adj)
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn ids(&self) -> &[Rank] {
        &self.ids
    }

    pub fn probs(&self) -> &[f32] {
        &self.probs
    }

    /// Candidates after `token`, best first; empty slots are skipped.
    pub fn row(&self, token: Rank) -> impl Iterator<Item = (Rank, f32)> + '_ {
        let r = token as usize * self.k;
        let (ids, probs) = if (token as usize) < self.vocab {
            (&self.ids[r..r + self.k], &self.probs[r..r + self.k])
        } else {
            (&[][..], &[][..])
        };
        ids.iter()
            .zip(probs)
            .filter(|(&t, _)| t != EMPTY)
            .map(|(&t, &p)| (t, p))
    }

    /// Overwrites the row of `token` with the target's top candidates (best first). Fewer
    /// than `k` candidates leave the remaining slots empty; more are cut.
    pub fn set_row(&mut self, token: Rank, ids: &[Rank], probs: &[f32]) -> Result<()> {
        if token as usize >= self.vocab {
            return Err(Error::InvalidArgument(format!(
                "token id {token} is outside the vocabulary of {}",
                self.vocab
            )));
        }
        let r = token as usize * self.k;
        for j in 0..self.k {
            let (t, p) = match (ids.get(j), probs.get(j)) {
                (Some(&t), Some(&p)) => (t, p),
                _ => (EMPTY, 0.0),
            };
            if t != EMPTY && t as usize >= self.vocab {
                return Err(Error::InvalidArgument(format!(
                    "candidate token id {t} is outside the vocabulary of {}",
                    self.vocab
                )));
            }
            self.ids[r + j] = t;
            self.probs[r + j] = if p.is_finite() {
                p.clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        Ok(())
    }
}

impl Propose for Adjacency {
    fn propose(&self, h: &History<'_>, out: &mut Vec<(Rank, f32)>) {
        if let Some(last) = h.from_end(0) {
            out.extend(self.row(last));
        }
    }
}

fn ngram_key(h: &History<'_>, n: usize) -> u64 {
    // FNV-style mixing of the last n tokens (oldest first); collisions are checked by the caller.
    let mut x: u64 = 0xcbf2_9ce4_8422_2325 ^ n as u64;
    for back in (0..n).rev() {
        let t = h.from_end(back).unwrap_or(EMPTY);
        x = (x ^ u64::from(t)).wrapping_mul(0x0000_0100_0000_01b3);
        x ^= x >> 29;
    }
    x
}

/// Prompt lookup / n-gram retrieval over the context: the continuations of the longest suffix
/// of the history (up to `max_n` tokens) that occurred before, counted over its most recent
/// occurrences. Several distinct continuations become several branches (Lookahead's
/// multi-branch retrieval); following a branch extends the suffix match by itself.
#[derive(Debug, Clone)]
pub struct SuffixIndex {
    min_n: usize,
    max_n: usize,
    /// Most recent occurrences consulted per lookup.
    max_occurrences: usize,
    tokens: Vec<Rank>,
    /// `maps[n - min_n]`: key of an n-gram -> end positions (index of its last token).
    maps: Vec<FxHashMap<u64, Vec<u32>>>,
}

impl SuffixIndex {
    pub fn new(min_n: usize, max_n: usize) -> Result<Self> {
        if min_n == 0 || max_n < min_n || max_n > 64 {
            return Err(Error::InvalidArgument(format!(
                "n-gram sizes need 1 <= min_n <= max_n <= 64 (got {min_n}, {max_n})"
            )));
        }
        Ok(SuffixIndex {
            min_n,
            max_n,
            max_occurrences: 32,
            tokens: Vec::new(),
            maps: (min_n..=max_n).map(|_| FxHashMap::default()).collect(),
        })
    }

    pub fn clear(&mut self) {
        self.tokens.clear();
        self.maps.iter_mut().for_each(FxHashMap::clear);
    }

    pub fn tokens(&self) -> &[Rank] {
        &self.tokens
    }

    /// Appends tokens without indexing them, for a session that never proposes from this index
    /// (no lookup drafter) but keeps the context here: indexing cost 8 hash-map insertions per
    /// token, about 150 us for a 128-token prompt and a few us per step. `propose` must not be
    /// called on an index extended this way.
    pub fn extend_unindexed(&mut self, new: &[Rank]) {
        self.tokens.extend_from_slice(new);
    }

    pub fn extend(&mut self, new: &[Rank]) {
        for &t in new {
            self.tokens.push(t);
            let end = self.tokens.len() - 1;
            let h = History {
                context: &self.tokens,
                path: &[],
            };
            for n in self.min_n..=self.max_n.min(self.tokens.len()) {
                let key = ngram_key(&h, n);
                self.maps[n - self.min_n]
                    .entry(key)
                    .or_default()
                    .push(end as u32);
            }
        }
    }

    fn matches_at(&self, h: &History<'_>, n: usize, end: usize) -> bool {
        (0..n).all(|back| end >= back && h.from_end(back) == Some(self.tokens[end - back]))
    }
}

impl Propose for SuffixIndex {
    /// Proposes the continuations of the longest matching suffix of `h` (whose context must be
    /// this index's tokens). Score: the share of the consulted occurrences continuing that way.
    fn propose(&self, h: &History<'_>, out: &mut Vec<(Rank, f32)>) {
        let longest = self.max_n.min(h.len().saturating_sub(1));
        for n in (self.min_n..=longest).rev() {
            let Some(ends) = self.maps[n - self.min_n].get(&ngram_key(h, n)) else {
                continue;
            };
            let mut counts: Vec<(Rank, u32)> = Vec::new();
            let mut total = 0u32;
            // The history's own suffix, when it lies wholly in the context, is indexed too but
            // has no continuation yet: `end + 1 < len` skips it.
            for &end in ends.iter().rev() {
                let end = end as usize;
                if end + 1 >= self.tokens.len() || !self.matches_at(h, n, end) {
                    continue;
                }
                let next = self.tokens[end + 1];
                match counts.iter_mut().find(|(t, _)| *t == next) {
                    Some(c) => c.1 += 1,
                    None => counts.push((next, 1)),
                }
                total += 1;
                if total as usize >= self.max_occurrences {
                    break;
                }
            }
            if total == 0 {
                continue;
            }
            // Most frequent first; among equals, the most recent occurrence (first seen) first.
            counts.sort_by_key(|&(_, c)| std::cmp::Reverse(c));
            out.extend(
                counts
                    .into_iter()
                    .map(|(t, c)| (t, c as f32 / total as f32)),
            );
            return;
        }
    }
}

/// ADED-style tri-gram table: counts of the token following each pair of tokens, learnt from
/// everything decoded so far (it persists across calls), proposing the most frequent ones.
/// When a pair was never seen it falls back to the bigram of the last token.
#[derive(Debug, Clone, Default)]
pub struct Trigram {
    tri: FxHashMap<(Rank, Rank), Vec<(Rank, u32)>>,
    bi: FxHashMap<Rank, Vec<(Rank, u32)>>,
    /// Candidates kept per entry (the least frequent beyond it are forgotten).
    width: usize,
}

fn bump(list: &mut Vec<(Rank, u32)>, next: Rank, width: usize) {
    match list.iter().position(|&(t, _)| t == next) {
        Some(i) => {
            list[i].1 += 1;
            // Keep the list sorted by count, most frequent first (one bubble step suffices).
            let mut i = i;
            while i > 0 && list[i - 1].1 < list[i].1 {
                list.swap(i - 1, i);
                i -= 1;
            }
        }
        None if list.len() < width => list.push((next, 1)),
        // Full: the newcomer replaces the last (least frequent) entry, so that a table warmed
        // on other text still adapts.
        None => {
            if let Some(last) = list.last_mut() {
                *last = (next, 1);
            }
        }
    }
}

impl Trigram {
    pub fn new(width: usize) -> Result<Self> {
        if width == 0 {
            return Err(Error::InvalidArgument("tri-gram width must be > 0".into()));
        }
        Ok(Trigram {
            width,
            ..Default::default()
        })
    }

    /// Counts the transitions ending at each of `new`, given the tokens before them.
    pub fn observe(&mut self, before: &[Rank], new: &[Rank]) {
        let mut a = before.len().checked_sub(2).map(|i| before[i]);
        let mut b = before.last().copied();
        for &c in new {
            if let Some(bb) = b {
                bump(self.bi.entry(bb).or_default(), c, self.width);
                if let Some(aa) = a {
                    bump(self.tri.entry((aa, bb)).or_default(), c, self.width);
                }
            }
            a = b;
            b = Some(c);
        }
    }
}

impl Propose for Trigram {
    fn propose(&self, h: &History<'_>, out: &mut Vec<(Rank, f32)>) {
        let (Some(b), a) = (h.from_end(0), h.from_end(1)) else {
            return;
        };
        let list = a
            .and_then(|a| self.tri.get(&(a, b)))
            .or_else(|| self.bi.get(&b));
        if let Some(list) = list {
            let total: u32 = list.iter().map(|&(_, c)| c).sum();
            out.extend(
                list.iter()
                    .map(|&(t, c)| (t, c as f32 / total.max(1) as f32)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist<'a>(c: &'a [Rank], p: &'a [Rank]) -> History<'a> {
        History {
            context: c,
            path: p,
        }
    }

    #[test]
    fn history_reads_across_the_join() {
        let h = hist(&[1, 2, 3], &[4, 5]);
        let back: Vec<_> = (0..6).map(|b| h.from_end(b)).collect();
        assert_eq!(
            back,
            vec![Some(5), Some(4), Some(3), Some(2), Some(1), None]
        );
    }

    #[test]
    fn adjacency_rows_overwrite_and_skip_empty() {
        let mut a = Adjacency::new(10, 3).unwrap();
        assert_eq!(a.row(4).count(), 0);
        a.set_row(4, &[7, 2], &[0.5, 0.25]).unwrap();
        assert_eq!(a.row(4).collect::<Vec<_>>(), vec![(7, 0.5), (2, 0.25)]);
        a.set_row(4, &[1, 2, 3], &[0.9, 0.05, 0.01]).unwrap();
        assert_eq!(a.row(4).map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(a.set_row(10, &[1], &[0.1]).is_err());
        assert!(a.set_row(3, &[10], &[0.1]).is_err());
        assert!(Adjacency::from_parts(10, 3, vec![0; 29], vec![0.0; 30]).is_err());
        let b = Adjacency::from_parts(10, 3, a.ids().to_vec(), a.probs().to_vec()).unwrap();
        assert_eq!(a, b);
    }

    /// Brute force: the continuations of the longest earlier occurrence of the suffix.
    fn naive_suffix(ctx: &[Rank], path: &[Rank], min_n: usize, max_n: usize) -> Vec<Rank> {
        let all: Vec<Rank> = ctx.iter().chain(path).copied().collect();
        for n in (min_n..=max_n.min(all.len().saturating_sub(1))).rev() {
            let suffix = &all[all.len() - n..];
            let mut next = Vec::new();
            for end in (n - 1..ctx.len().saturating_sub(1)).rev() {
                if &ctx[end + 1 - n..=end] == suffix && !next.contains(&ctx[end + 1]) {
                    next.push(ctx[end + 1]);
                }
            }
            if !next.is_empty() {
                return next;
            }
        }
        Vec::new()
    }

    #[test]
    fn suffix_index_matches_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let len = rng.random_range(0..60);
            let ctx: Vec<Rank> = (0..len).map(|_| rng.random_range(0..4)).collect();
            let plen = rng.random_range(0..4);
            let path: Vec<Rank> = (0..plen).map(|_| rng.random_range(0..4)).collect();
            let mut idx = SuffixIndex::new(1, 5).unwrap();
            // Built in two pieces, as decoding extends it.
            let cut = len / 2;
            idx.extend(&ctx[..cut]);
            idx.extend(&ctx[cut..]);
            let mut out = Vec::new();
            idx.propose(&hist(&ctx, &path), &mut out);
            let mut got: Vec<Rank> = out.iter().map(|x| x.0).collect();
            let mut want = naive_suffix(&ctx, &path, 1, 5);
            // Only the set is compared; the order is by frequency. (Few occurrences here, so
            // the 32-occurrence cap does not bite... unless the context is long.)
            if len <= 32 {
                got.sort();
                want.sort();
                assert_eq!(got, want, "ctx {ctx:?} path {path:?}");
            }
            let total: f32 = out.iter().map(|x| x.1).sum();
            assert!(out.is_empty() || (total - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn trigram_counts_and_falls_back_to_bigram() {
        let mut t = Trigram::new(4).unwrap();
        t.observe(&[], &[1, 2, 3, 1, 2, 3, 1, 2, 4]);
        let mut out = Vec::new();
        t.propose(&hist(&[9, 1, 2], &[]), &mut out);
        assert_eq!(out, vec![(3, 2.0 / 3.0), (4, 1.0 / 3.0)]);
        out.clear();
        // (9, 2) unseen: bigram of 2.
        t.propose(&hist(&[9], &[2]), &mut out);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4]);
        out.clear();
        t.propose(&hist(&[], &[]), &mut out);
        assert!(out.is_empty());
    }
}
