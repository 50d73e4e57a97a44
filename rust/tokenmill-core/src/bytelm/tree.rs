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

impl ByteLm {
    pub fn tree(&self, x: &[u8]) -> Result<Tree> {
        let sigma = self.stable_point(x)?;
        let trunk = self.stable_head(x, sigma)?;
        let window = &x[sigma..];
        let mut tree = Tree {
            sigma,
            trunk,
            nodes: vec![Vec::new()],
            parents: vec![usize::MAX],
            ends: vec![0],
        };
        let mut path = Vec::new();
        self.grow(window, 0, &mut path, 0, &mut tree)?;
        Ok(tree)
    }

    /// Adds the valid descendants of the node `at` (path `path`, ending at `pos`) that matter
    /// for covers; returns whether any did.
    fn grow(
        &self,
        window: &[u8],
        pos: usize,
        path: &mut Vec<Rank>,
        at: usize,
        tree: &mut Tree,
    ) -> Result<bool> {
        let bpe = self.enc.bpe();
        let max_len = self.vocab.max_len();
        let mut any = false;
        for len in 1..=max_len.min(window.len() - pos) {
            let Some(id) = bpe.token_id(&window[pos..pos + len]) else {
                continue;
            };
            path.push(id);
            if self.is_valid(path)? {
                let end = pos + len;
                let index = tree.nodes.len();
                tree.nodes.push(path.clone());
                tree.parents.push(at);
                tree.ends.push(end);
                // A node is useful if a token starting at its end can reach past the window.
                let useful = window.len() - end < max_len;
                let below = self.grow(window, end, path, index, tree)?;
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
