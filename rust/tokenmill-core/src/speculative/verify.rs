//! Tree verification: which drafts the target model accepts, and the token it adds.
//!
//! Greedy: from the root, move to the child whose token is the target's argmax at the current
//! node while there is one; the argmax at the last accepted node is the bonus token. Every
//! accepted token is exactly what greedy decoding would have produced.
//!
//! Sampling: the drafts are deterministic (their proposal is a point mass), so multi-draft
//! speculative sampling reduces to: at the current node with target distribution `p`, try the
//! distinct children in draft order, accepting child `x` with probability `p(x)` (renormalised
//! over what is left); on rejection set `p(x) = 0` and renormalise; when all are rejected,
//! sample from what is left. The token chosen at each node is then distributed exactly as `p`
//! (SpecInfer's multi-step speculative sampling, EAGLE's evaluate_posterior): for a child `x`,
//! P(x) = P(reach x untouched) * p(x) / m, where m is the mass left when it is tried, and
//! P(reach x untouched) = m, since every rejection of `y` happens with probability
//! (m_y - p(y)) / m_y.

use crate::error::{Error, Result};
use crate::Rank;

use super::tree::DraftTree;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Accepted nodes from the root (always node 0) down the accepted path.
    pub nodes: Vec<usize>,
    /// The target's own token after the last accepted node.
    pub bonus: Rank,
}

impl Verified {
    /// The new tokens of this step: accepted drafts then the bonus token.
    pub fn new_tokens(&self, tree: &DraftTree) -> Vec<Rank> {
        self.nodes[1..]
            .iter()
            .map(|&n| tree.tokens[n])
            .chain(std::iter::once(self.bonus))
            .collect()
    }
}

/// `argmax[i]`: the target's most likely token after node `i`.
pub fn verify_greedy(tree: &DraftTree, argmax: &[Rank]) -> Result<Verified> {
    if argmax.len() != tree.len() {
        return Err(Error::InvalidArgument(format!(
            "need one argmax per tree node ({} nodes, got {})",
            tree.len(),
            argmax.len()
        )));
    }
    let mut nodes = vec![0];
    let mut cur = 0;
    while let Some(next) = tree.child_with(cur, argmax[cur]) {
        nodes.push(next);
        cur = next;
    }
    Ok(Verified {
        nodes,
        bonus: argmax[cur],
    })
}

/// Inverse-CDF draw from unnormalised weights with total `total`.
fn draw(p: &[f64], total: f64, u: f64) -> usize {
    let target = u * total;
    let mut acc = 0.0;
    let mut last_positive = 0;
    for (i, &w) in p.iter().enumerate() {
        if w > 0.0 {
            acc += w;
            last_positive = i;
            if target < acc {
                return i;
            }
        }
    }
    // Rounding can leave `target` a hair above the sum.
    last_positive
}

/// `probs`: row-major `n x vocab`, the target's processed next-token distribution at each node
/// (after temperature / top-k / top-p; rows need not be normalised). `uniforms`: at least
/// `n + 1` draws from U[0, 1) (every node is tried at most once, plus one final draw), taken
/// from the caller so that its random generator decides the outcome.
pub fn verify_sample(
    tree: &DraftTree,
    probs: &[f32],
    vocab: usize,
    uniforms: &[f64],
) -> Result<Verified> {
    let n = tree.len();
    if vocab == 0 || probs.len() != n * vocab {
        return Err(Error::InvalidArgument(format!(
            "probabilities must be (tree nodes = {n}) x (vocab = {vocab}), got {} values",
            probs.len()
        )));
    }
    if uniforms.len() < n + 1 {
        return Err(Error::InvalidArgument(format!(
            "need at least {} uniforms for a tree of {n} nodes, got {}",
            n + 1,
            uniforms.len()
        )));
    }
    if let Some(&t) = tree.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!(
            "tree token {t} is outside the vocabulary of {vocab}"
        )));
    }
    let mut us = uniforms.iter().copied();
    let mut nodes = vec![0];
    let mut cur = 0;
    let mut p: Vec<f64> = Vec::with_capacity(vocab);
    'descend: loop {
        p.clear();
        p.extend(probs[cur * vocab..(cur + 1) * vocab].iter().map(|&x| {
            if x.is_finite() && x > 0.0 {
                f64::from(x)
            } else {
                0.0
            }
        }));
        let mut total: f64 = p.iter().sum();
        if total <= 0.0 {
            return Err(Error::InvalidArgument(format!(
                "the target distribution at tree node {cur} has no positive probability"
            )));
        }
        for &child in &tree.children[cur] {
            let x = tree.tokens[child] as usize;
            let u = us.next().unwrap_or(0.0);
            if u * total < p[x] {
                nodes.push(child);
                cur = child;
                continue 'descend;
            }
            total -= p[x];
            p[x] = 0.0;
            if total <= 0.0 {
                // Only reachable through rounding: the rejected drafts held all the mass.
                total = p.iter().sum();
            }
        }
        let u = us.next().unwrap_or(0.0);
        let bonus = draw(&p, total, u) as Rank;
        return Ok(Verified { nodes, bonus });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn chain_tree() -> DraftTree {
        // root 0 -> {1: tok 3, 2: tok 4}; 1 -> {3: tok 5}; 3 -> {4: tok 6}
        DraftTree::from_parents(&[9, 3, 4, 5, 6], &[-1, 0, 0, 1, 3]).unwrap()
    }

    #[test]
    fn greedy_takes_the_longest_agreeing_path() {
        let t = chain_tree();
        let v = verify_greedy(&t, &[3, 5, 0, 7, 1]).unwrap();
        assert_eq!(v.nodes, vec![0, 1, 3]);
        assert_eq!(v.bonus, 7);
        assert_eq!(v.new_tokens(&t), vec![3, 5, 7]);
        let v = verify_greedy(&t, &[4, 5, 8, 6, 2]).unwrap();
        assert_eq!((v.nodes, v.bonus), (vec![0, 2], 8));
        let v = verify_greedy(&t, &[3, 5, 0, 6, 2]).unwrap();
        assert_eq!((v.nodes, v.bonus), (vec![0, 1, 3, 4], 2));
        assert!(verify_greedy(&t, &[1, 2]).is_err());
    }

    /// Brute-force greedy decoding along a "model" given by a table: the tokens greedy decoding
    /// produces equal those of verification for random trees.
    #[test]
    fn greedy_equals_sequential_decoding() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..500 {
            // A deterministic model: next token = f(last token).
            let f: Vec<Rank> = (0..6).map(|_| rng.random_range(0..6)).collect();
            let mut t = DraftTree::new(rng.random_range(0..6));
            for _ in 0..rng.random_range(0..12) {
                let p = rng.random_range(0..t.len());
                t.push(p, rng.random_range(0..6), 1.0);
            }
            let argmax: Vec<Rank> = t.tokens.iter().map(|&x| f[x as usize]).collect();
            let v = verify_greedy(&t, &argmax).unwrap();
            let got = v.new_tokens(&t);
            let mut want = Vec::new();
            let mut last = t.tokens[0];
            for _ in 0..got.len() {
                last = f[last as usize];
                want.push(last);
            }
            assert_eq!(got, want);
        }
    }

    /// The first new token of a step is distributed as the root's distribution (and the second,
    /// given the first, as the child's), whatever the drafts: exact enumeration over a fine
    /// grid of uniforms would be costly, so this is a chi-square test at significance 1e-4
    /// over 200k seeded draws, on a tree whose drafts are partly right and partly wrong.
    #[test]
    fn sampling_reproduces_the_target_distribution() {
        let vocab = 5;
        // root -> children tokens 2, 0, 4 (draft order); node of 2 -> child 1.
        let t = DraftTree::from_parents(&[1, 2, 0, 4, 1], &[-1, 0, 0, 0, 1]).unwrap();
        let rows: [[f32; 5]; 5] = [
            [0.1, 0.05, 0.5, 0.15, 0.2],
            [0.3, 0.3, 0.0, 0.2, 0.2],
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [0.0, 0.0, 0.0, 1.0, 0.0],
            [0.25, 0.25, 0.25, 0.0, 0.25],
        ];
        let probs: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let draws = 200_000;
        let mut first = [0u64; 5];
        let mut second_after_2 = [0u64; 5];
        let mut n_after_2 = 0u64;
        for _ in 0..draws {
            let us: Vec<f64> = (0..t.len() + 1).map(|_| rng.random::<f64>()).collect();
            let v = verify_sample(&t, &probs, vocab, &us).unwrap();
            let toks = v.new_tokens(&t);
            first[toks[0] as usize] += 1;
            if toks[0] == 2 {
                n_after_2 += 1;
                second_after_2[toks[1] as usize] += 1;
            }
        }
        let chi2 = |counts: &[u64], row: &[f32], total: u64| -> (f64, usize) {
            let mut s = 0.0;
            let mut df = 0;
            for (c, &p) in counts.iter().zip(row) {
                if p == 0.0 {
                    assert_eq!(*c, 0, "a zero-probability token was produced");
                    continue;
                }
                let e = f64::from(p) * total as f64;
                s += (*c as f64 - e).powi(2) / e;
                df += 1;
            }
            (s, df - 1)
        };
        // Critical values of chi-square at p = 1e-4: df 4 -> 23.51, df 3 -> 21.11.
        let (s, df) = chi2(&first, &rows[0], draws);
        assert_eq!(df, 4);
        assert!(s < 23.51, "first token: chi2 {s}");
        let (s, df) = chi2(&second_after_2, &rows[1], n_after_2);
        assert_eq!(df, 3);
        assert!(s < 21.11, "second token: chi2 {s}");
    }

    #[test]
    fn sampling_rejects_bad_input() {
        let t = chain_tree();
        assert!(verify_sample(&t, &[0.1; 10], 5, &[0.5; 6]).is_err());
        assert!(verify_sample(&t, &[0.1; 50], 10, &[0.5; 5]).is_err());
        assert!(verify_sample(&t, &[0.0; 50], 10, &[0.5; 6]).is_err());
        // Tokens outside a too-small vocabulary.
        assert!(verify_sample(&t, &[0.1; 25], 5, &[0.5; 6]).is_err());
    }
}
