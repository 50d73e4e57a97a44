//! The covering tree of a byte prefix `x`.
//!
//! Every valid cover of `x` (and of `x` followed by one more byte) is the canonical trunk
//! `canonical(x[..sigma])` followed by a path through the window `x[sigma..]` and one last token
//! that starts in the window: tokens never straddle the stable point, since every extension has
//! a piece boundary there. The tree's nodes are the valid paths of whole tokens inside the
//! window that can still be extended by a token reaching past the end of `x`, plus their
//! ancestors; their number stays small because canonical encodings of different extensions
//! share all but their last few tokens.

use crate::error::Result;
use crate::Rank;

use super::marginal::Check;
use super::softmax::Row;
use super::ByteLm;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The stable point: `x[..sigma]` is encoded as `trunk` in every extension.
    pub sigma: usize,
    pub trunk: Vec<Rank>,
    /// Paths of tokens after the trunk, parents before children; `nodes[0]` is the empty path
    /// (the trunk's tip).
    pub nodes: Vec<Vec<Rank>>,
    /// Index in `nodes` of the parent of each node (`usize::MAX` for the root).
    pub parents: Vec<usize>,
    /// Byte length of each node's path.
    pub ends: Vec<usize>,
}

impl Tree {
    /// Log-probability of each node's path: `trunk_logp` at the root, then each node's parent's
    /// plus the parent's row at the node's last token (`rows[i]`: log P(t | node i)).
    pub fn path_logps(&self, trunk_logp: f64, rows: &[Row<'_>]) -> Vec<f64> {
        let mut out = vec![trunk_logp; self.nodes.len()];
        for i in 1..self.nodes.len() {
            let p = self.parents[i];
            let last = *self.nodes[i].last().expect("only the root is empty") as usize;
            out[i] = out[p] + rows.get(p).and_then(|r| r.log_p(last)).unwrap_or(f64::NAN);
        }
        out
    }

    /// The model inputs of one forward over `chain` (trunk tokens not yet in the cache, after
    /// `past` cached ones) and the tree's nodes (each node's last token, parents first): the
    /// token ids, position ids (cache length plus depth) and the attention mask over the
    /// `past + n` positions (row-major, `n x (past + n)`), `attend` where a new token may
    /// attend (the cache, the chain before it, and its own ancestors) and `blocked` elsewhere:
    /// booleans, or the additive mask a model takes as it is. The root is the chain's end (or
    /// the cache's).
    pub fn batch<T: Copy>(
        &self,
        chain: &[Rank],
        past: usize,
        attend: T,
        blocked: T,
    ) -> (Vec<Rank>, Vec<usize>, Vec<T>) {
        let c = chain.len();
        let n = c + self.nodes.len() - 1;
        let width = past + n;
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut mask = vec![blocked; n * width];
        for (j, &t) in chain.iter().enumerate() {
            ids.push(t);
            positions.push(past + j);
            mask[j * width..j * width + past + j + 1].fill(attend);
        }
        // Node i (i >= 1) is new token c + i - 1, at depth c + (its depth in the tree).
        let mut depth = vec![0usize; self.nodes.len()];
        for i in 1..self.nodes.len() {
            let j = c + i - 1;
            let p = self.parents[i];
            depth[i] = depth[p] + 1;
            ids.push(*self.nodes[i].last().expect("only the root is empty"));
            positions.push(past + c + depth[i] - 1);
            let row = j * width;
            mask[row..row + past + c].fill(attend);
            mask[row + past + j] = attend;
            let mut a = p;
            while a > 0 {
                mask[row + past + c + a - 1] = attend;
                a = self.parents[a];
            }
        }
        (ids, positions, mask)
    }
}

impl ByteLm {
    pub fn tree(&self, x: &[u8]) -> Result<Tree> {
        let (sigma, trunk) = self.stable(x)?;
        let window = &x[sigma..];
        let mut tree = Tree {
            sigma,
            trunk,
            nodes: vec![Vec::new()],
            parents: vec![usize::MAX],
            ends: vec![0],
        };
        let mut path = Vec::new();
        let mut check = Check::new(self, window);
        self.grow(window, 0, &mut path, 0, &mut tree, &mut check)?;
        Ok(tree)
    }

    /// Adds the valid descendants of the node `at` (path `path`, ending at `pos`) that matter
    /// for covers; returns whether any did.
    ///
    /// Validity goes through the marginalisation's checks ([`Check`]): a candidate is a
    /// valid node followed by one token, which is what they decide (with the pair test, the
    /// cached cut analyses and the nodes' tables), and the plain test on every candidate
    /// path ran all the probes for each invalid one.
    fn grow(
        &self,
        window: &[u8],
        pos: usize,
        path: &mut Vec<Rank>,
        at: usize,
        tree: &mut Tree,
        check: &mut Check<'_>,
    ) -> Result<bool> {
        let bpe = self.enc.bpe();
        let max_len = self.vocab.max_len();
        let mut any = false;
        for len in 1..=max_len.min(window.len() - pos) {
            let Some(id) = bpe.token_id(&window[pos..pos + len]) else {
                continue;
            };
            check.enter(path, pos)?;
            let valid = check.valid(id, &window[pos..pos + len])?;
            path.push(id);
            if valid {
                let end = pos + len;
                let index = tree.nodes.len();
                tree.nodes.push(path.clone());
                tree.parents.push(at);
                tree.ends.push(end);
                // A node is useful if a token starting at its end can reach past the window.
                let useful = window.len() - end < max_len;
                let below = self.grow(window, end, path, index, tree, check)?;
                if useful || below {
                    any = true;
                } else {
                    tree.nodes.truncate(index);
                    tree.parents.truncate(index);
                    tree.ends.truncate(index);
                }
            }
            path.pop();
        }
        Ok(any)
    }
}
