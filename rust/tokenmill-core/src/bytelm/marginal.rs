//! Folding next-token distributions at the tree's nodes into 257 next-byte bins.
//!
//! For a node with path `n` ending at byte `p` of `x`, every token `t` whose bytes start with
//! `x[p..]` and go further gives a cover of `x` extended by the byte of `t` at `|x| - p`; those
//! tokens are one range of the sorted vocabulary. A token ending exactly at `|x|` is a node of
//! its own (its children carry the next byte). End of text has exactly one route: the
//! canonical encoding of `x` followed by the end-of-text token.

use crate::error::{Error, Result};
use crate::Rank;

use super::fast::{lookahead_key, CutMemo};
use super::{ByteLm, Tree};

/// Validity of (node path + one token), with the shortcuts of [`super::fast`], remembered per
/// node path across calls: the same node meets the same tokens again at the next bytes (a
/// narrower range each time) and in later windows with the same text after their stable
/// point (each indented line), so a warm check is one array read.
pub(super) struct Check<'a> {
    lm: &'a ByteLm,
    window: &'a [u8],
    path: Vec<Rank>,
    end: usize,
    /// Where the node's tokens end, relative to the window.
    ends: Vec<usize>,
    cuts: CutMemo,
    /// The current node's results by token id: 0 not known yet, 1 invalid, 2 valid. Taken
    /// out of [`ByteLm`]'s `node_states` on `enter` and put back on leaving, so that no lock is
    /// held while checking.
    states: Vec<u8>,
}

impl Drop for Check<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl<'a> Check<'a> {
    pub(super) fn new(lm: &'a ByteLm, window: &'a [u8]) -> Self {
        Check {
            lm,
            window,
            path: Vec::new(),
            end: 0,
            ends: Vec::new(),
            cuts: CutMemo::default(),
            states: Vec::new(),
        }
    }

    fn leave(&mut self) {
        if self.states.is_empty() {
            return;
        }
        let states = std::mem::take(&mut self.states);
        // Bounded memory: about 64 MiB of states whatever the vocabulary size.
        let cap = ((64usize << 20) / states.len().max(1)).max(64);
        if let Ok(mut cache) = self.lm.node_states.lock() {
            if cache.len() >= cap {
                cache.clear();
            }
            cache.insert(self.path.clone(), states);
        }
    }

    pub(super) fn enter(&mut self, path: &[Rank], end: usize) -> Result<()> {
        self.leave();
        self.path.clear();
        self.path.extend_from_slice(path);
        self.end = end;
        self.ends.clear();
        let mut at = 0;
        for &id in path {
            at += self.lm.token_bytes(id)?.len();
            self.ends.push(at);
        }
        self.cuts.clear();
        let n_slots = self.lm.enc.bpe().n_slots();
        self.states = self
            .lm
            .node_states
            .lock()
            .ok()
            .and_then(|mut cache| cache.remove(path))
            .unwrap_or_else(|| vec![0; n_slots]);
        Ok(())
    }

    /// [`Check::check`], remembered for the current node.
    pub(super) fn valid(&mut self, id: Rank, bytes: &[u8]) -> Result<bool> {
        match self.states.get(id as usize) {
            Some(1) => Ok(false),
            Some(2) => Ok(true),
            Some(_) => {
                let v = self.check(id, bytes)?;
                self.states[id as usize] = 1 + v as u8;
                Ok(v)
            }
            None => self.check(id, bytes),
        }
    }

    fn check(&mut self, id: Rank, bytes: &[u8]) -> Result<bool> {
        // The root's tokens start at the stable point, a boundary of every extension.
        if self.path.is_empty() {
            return self.lm.is_valid_at_start(id);
        }
        if let (Some(&last), Some(key)) = (self.path.last(), lookahead_key(bytes)) {
            let cut = self.cuts.get(
                self.lm,
                &self.path,
                &self.window[..self.end],
                key,
                &self.ends,
            )?;
            if let Some(head) = &cut.head_tokens {
                return Ok(*head == self.path && self.lm.is_valid_at_start(id)?);
            }
            let (possible, joined) = (cut.possible, cut.joined);
            if !(possible || joined && self.lm.is_canonical_pair(last, id)?) {
                return Ok(false);
            }
        }
        self.path.push(id);
        let v = self.lm.is_valid(&self.path);
        self.path.pop();
        v
    }
}

#[derive(Debug, Clone)]
pub struct Marginal {
    /// Natural-log masses P(x b) for b in 0..256, then P(x, end of text) at 256 (not normalized:
    /// their sum is P(x) minus what leaked to non-canonical token sequences).
    pub log_bins: Vec<f64>,
    /// log P(x): the total of the valid covers of `x` (0 for the empty prefix).
    pub log_prefix: f64,
}

/// The model's outputs must cover every node of the tree: one path log-probability and one
/// row of `n_cols` next-token log-probabilities each. Returns the node count.
fn check_shapes(
    what: &str,
    tree: &Tree,
    node_logp: &[f64],
    next_logp: &[f64],
    n_cols: usize,
) -> Result<usize> {
    let n = tree.nodes.len();
    if node_logp.len() != n || next_logp.len() != n * n_cols {
        return Err(Error::InvalidArgument(format!(
            "{what}: {n} nodes need {n} path log-probabilities and a {n} x {n_cols} \
             array of next-token log-probabilities"
        )));
    }
    Ok(n)
}

impl ByteLm {
    /// `node_logp[i]`: log-probability of the whole path of node `i` (trunk included);
    /// `next_logp[i * n_cols + t]`: log P(token t | node i). `eos`: the end-of-text token.
    pub fn marginalize(
        &self,
        x: &[u8],
        tree: &Tree,
        node_logp: &[f64],
        next_logp: &[f64],
        n_cols: usize,
        eos: Option<Rank>,
    ) -> Result<Marginal> {
        let n = check_shapes("marginalize", tree, node_logp, next_logp, n_cols)?;
        if let Some(e) = eos {
            if e as usize >= n_cols {
                return Err(Error::InvalidArgument(format!(
                    "end-of-text id {e} is outside the model's {n_cols} logits"
                )));
            }
        }
        let window = &x[tree.sigma..];
        let canonical_window = self.canonical(window)?;
        let shift = node_logp
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        let mut bins = vec![0.0f64; 257];
        let mut total = 0.0f64;
        if shift.is_finite() {
            let mut check = Check::new(self, window);
            for i in 0..n {
                let base = node_logp[i] - shift;
                if !base.is_finite() {
                    continue;
                }
                let row = &next_logp[i * n_cols..(i + 1) * n_cols];
                let rest = &window[tree.ends[i]..];
                check.enter(&tree.nodes[i], tree.ends[i])?;
                for j in self.vocab.prefix_range(rest) {
                    let id = self.vocab.id(j);
                    let Some(&lp) = row.get(id as usize) else {
                        continue;
                    };
                    if lp == f64::NEG_INFINITY || !check.valid(id, self.vocab.bytes(j))? {
                        continue;
                    }
                    let bytes = self.vocab.bytes(j);
                    let w = (base + lp).exp();
                    if bytes.len() == rest.len() {
                        // Ends exactly at |x|: a cover of x, and a node of its own whose
                        // children carry the next byte.
                        total += w;
                        continue;
                    }
                    bins[bytes[rest.len()] as usize] += w;
                    if !rest.is_empty() {
                        total += w;
                    }
                }
                if let Some(e) = eos {
                    if tree.nodes[i] == canonical_window {
                        bins[256] += (base + row[e as usize]).exp();
                    }
                }
            }
        }
        let log_bins = bins.iter().map(|&b| b.ln() + shift).collect();
        let log_prefix = if x.is_empty() {
            0.0
        } else {
            total.ln() + shift
        };
        Ok(Marginal {
            log_bins,
            log_prefix,
        })
    }

    /// The valid covers of `x` (empty for the empty prefix) as (node index, last token,
    /// log-probability of node path + token): what prompt-boundary completion samples from.
    pub fn covers(
        &self,
        x: &[u8],
        tree: &Tree,
        node_logp: &[f64],
        next_logp: &[f64],
        n_cols: usize,
    ) -> Result<Vec<(usize, Rank, f64)>> {
        let n = check_shapes("covers", tree, node_logp, next_logp, n_cols)?;
        let window = &x[tree.sigma..];
        let mut out = Vec::new();
        let mut check = Check::new(self, window);
        for i in 0..n {
            let rest = &window[tree.ends[i]..];
            if rest.is_empty() || !node_logp[i].is_finite() {
                continue;
            }
            let row = &next_logp[i * n_cols..(i + 1) * n_cols];
            check.enter(&tree.nodes[i], tree.ends[i])?;
            for j in self.vocab.prefix_range(rest) {
                let id = self.vocab.id(j);
                let Some(&lp) = row.get(id as usize) else {
                    continue;
                };
                if lp != f64::NEG_INFINITY && check.valid(id, self.vocab.bytes(j))? {
                    out.push((i, id, node_logp[i] + lp));
                }
            }
        }
        Ok(out)
    }
}
