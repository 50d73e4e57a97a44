//! Folding next-token distributions at the tree's nodes into 257 next-byte bins.
//!
//! For a node with path `n` ending at byte `p` of `x`, every token `t` whose bytes start with
//! `x[p..]` and go further gives a cover of `x` extended by the byte of `t` at `|x| - p`; those
//! tokens are one range of the sorted vocabulary. A token ending exactly at `|x|` is a node of
//! its own (its children carry the next byte). End of text has exactly one route: the
//! canonical encoding of `x` followed by the end-of-text token.

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::Rank;

use super::canon::incomplete_tail;
use super::fast::{apostrophe_near, class_key, decided_by_key, Rule, NO_KEY};
use super::fold::fold_valid;
use super::softmax::{Logit, Row, Values};
use super::{ByteLm, Tree};

/// One node's validity table by token id (0 not known yet, 1 invalid, 2 valid), with what its
/// checks need.
struct NodeState {
    path: Vec<Rank>,
    /// The node's bytes (relative to its own start, a piece boundary of every extension).
    bytes: Vec<u8>,
    /// Where its tokens end in `bytes`.
    ends: Vec<usize>,
    /// `bytes` ends inside a character.
    cut_char: bool,
    /// [`apostrophe_near`] of `bytes`: the letters of the contractions keep their own keys
    /// (see [`class_key`]).
    apostrophe: bool,
    /// Rules by lookahead key (its [`class_key`]), in front of [`ByteLm`]'s cache by (path,
    /// key); the last one looked up is kept apart, since tokens come in sorted order and share
    /// keys in runs.
    rules: FxHashMap<Vec<u8>, Local>,
    last: Option<(Vec<u8>, Local)>,
    /// The same by interned key ([`super::fast::TokenKeys`]), for the tokens' own keys: a
    /// table over the interned keys, since a node that meets the whole vocabulary looks one up
    /// per token, in token-id order, where keys do not come in runs. Empty until first used.
    rules_by_id: Vec<Option<Local>>,
    /// See [`Check::plain_witness`]: computed on first use.
    canon: Option<Option<Canon>>,
    states: Vec<u8>,
}

/// A node whose tokens are the canonical encoding of its bytes in a particular way: the pieces
/// of its bytes (at the end of text) start at `starts`, its tokens before the last piece are
/// their encodings, and its tokens in the last piece are what the merges alone make of it.
struct Canon {
    starts: Vec<usize>,
}

/// Validity of (node path + one token), with the shortcuts of [`super::fast`], remembered per
/// node path across calls: the same node meets the same tokens again at the next bytes (a
/// narrower range each time) and in later windows with the same text after their stable
/// point (each indented line), so a warm check is one array read.
///
/// A node whose tokens before some piece start `a` are fixed for every continuation of a
/// token's lookahead key (the anchor of [`super::fast::Cut`]) hands the token over to the node
/// of its tokens after `a`: pre-tokenization after a piece start that every continuation has
/// does not look back, so `path + t` is valid exactly when `path[..j]` encodes the pieces
/// before `a` and `path[j..] + t` is valid on its own. Those shorter nodes are shared by many
/// longer ones (every node that ends with the same piece), so their tables warm up quickly.
/// A [`Rule`] with the node it hands tokens over to resolved to its index in [`Check`].
#[derive(Clone, Copy)]
enum Local {
    Invalid,
    To(usize),
    Joined(usize),
    Open,
}

pub(super) struct Check<'a> {
    lm: &'a ByteLm,
    window: &'a [u8],
    /// Tables taken out of [`ByteLm`]'s `node_states` (so that no lock is held while
    /// checking), put back when the check is dropped.
    nodes: Vec<NodeState>,
    index: FxHashMap<Vec<Rank>, usize>,
    current: usize,
    buf: Vec<u8>,
    pieces: Vec<(usize, usize)>,
    key: Vec<u8>,
}

impl Drop for Check<'_> {
    fn drop(&mut self) {
        let Ok(mut cache) = self.lm.node_states.lock() else {
            return;
        };
        for node in self.nodes.drain(..) {
            // Bounded memory: about 64 MiB of states whatever the vocabulary size.
            let cap = ((64usize << 20) / node.states.len().max(1)).max(64);
            if cache.len() >= cap {
                cache.clear();
            }
            cache.insert(node.path, node.states);
        }
    }
}

impl<'a> Check<'a> {
    pub(super) fn new(lm: &'a ByteLm, window: &'a [u8]) -> Self {
        Check {
            lm,
            window,
            nodes: Vec::new(),
            index: FxHashMap::default(),
            current: usize::MAX,
            buf: Vec::new(),
            pieces: Vec::new(),
            key: Vec::new(),
        }
    }

    /// The index of the node `path` (whose bytes are `bytes`), its table loaded.
    fn node(&mut self, path: &[Rank], bytes: &[u8]) -> Result<usize> {
        if let Some(&i) = self.index.get(path) {
            return Ok(i);
        }
        let mut ends = Vec::with_capacity(path.len());
        let mut at = 0;
        for &id in path {
            at += self.lm.token_bytes(id)?.len();
            ends.push(at);
        }
        let n_slots = self.lm.enc.bpe().n_slots();
        let states = self
            .lm
            .node_states
            .lock()
            .ok()
            .and_then(|mut cache| cache.remove(path))
            .unwrap_or_else(|| vec![0; n_slots]);
        let i = self.nodes.len();
        self.nodes.push(NodeState {
            path: path.to_vec(),
            bytes: bytes.to_vec(),
            ends,
            cut_char: incomplete_tail(bytes) > 0,
            apostrophe: apostrophe_near(bytes),
            rules: FxHashMap::default(),
            last: None,
            rules_by_id: Vec::new(),
            canon: None,
            states,
        });
        self.index.insert(path.to_vec(), i);
        Ok(i)
    }

    pub(super) fn enter(&mut self, path: &[Rank], end: usize) -> Result<()> {
        let window = self.window;
        self.current = self.node(path, &window[..end])?;
        Ok(())
    }

    /// For a node that meets the whole vocabulary: decides, one lookahead key at a time, the
    /// unknown tokens whose key alone settles them (the key's rule is *invalid*, or hands them
    /// to a shorter node that knows them), exactly as [`Check::valid`] would one by one. The
    /// per-token pass then meets only the rest; on a fresh node most tokens are settled here,
    /// in loops without the per-token dispatch (whose branches follow the keys of tokens in id
    /// order, which do not come in runs).
    pub(super) fn settle_by_key(&mut self) -> Result<()> {
        let n = self.current;
        if self.nodes[n].path.is_empty() {
            return Ok(());
        }
        let lm = self.lm;
        let keys = &lm.token_keys;
        let groups = if self.nodes[n].apostrophe {
            &keys.with_near
        } else {
            &keys.with_class
        };
        let cut_char = self.nodes[n].cut_char;
        // After a node that ends inside a character, a stray byte may complete it: no key.
        let keyed = |id: Rank| !(cut_char && keys.of[id as usize].stray);
        for (key, ids) in groups.iter().enumerate() {
            let states = &self.nodes[n].states;
            if !ids.iter().any(|&id| states[id as usize] == 0 && keyed(id)) {
                continue;
            }
            match self.rule_by_id(n, key as u32)? {
                Local::Invalid => {
                    let states = &mut self.nodes[n].states;
                    for &id in ids {
                        if states[id as usize] == 0 && keyed(id) {
                            states[id as usize] = 1;
                        }
                    }
                }
                Local::To(m) => {
                    for &id in ids {
                        let id = id as usize;
                        let known = self.nodes[m].states[id];
                        if known != 0 && self.nodes[n].states[id] == 0 && keyed(id as Rank) {
                            self.nodes[n].states[id] = known;
                        }
                    }
                }
                Local::Joined(_) | Local::Open => {}
            }
        }
        Ok(())
    }

    /// Is the validity of the current node's path followed by `id` in its table?
    pub(super) fn known(&self, id: Rank) -> bool {
        self.nodes[self.current]
            .states
            .get(id as usize)
            .is_some_and(|&s| s != 0)
    }

    /// The current node's table by token id (0 not known, 1 invalid, 2 valid).
    pub(super) fn states(&self) -> &[u8] {
        &self.nodes[self.current].states
    }

    /// Is the current node's path followed by `id` (whose bytes are `bytes`) valid?
    pub(super) fn valid(&mut self, id: Rank, bytes: &[u8]) -> Result<bool> {
        self.valid_in(self.current, id, bytes)
    }

    fn valid_in(&mut self, n: usize, id: Rank, bytes: &[u8]) -> Result<bool> {
        match self.nodes[n].states.get(id as usize) {
            Some(1) => Ok(false),
            Some(2) => Ok(true),
            Some(_) => {
                let v = self.check(n, id, bytes)?;
                self.nodes[n].states[id as usize] = 1 + v as u8;
                Ok(v)
            }
            None => self.check(n, id, bytes),
        }
    }

    fn check(&mut self, n: usize, id: Rank, bytes: &[u8]) -> Result<bool> {
        // The root's tokens start at a piece boundary of every extension.
        if self.nodes[n].path.is_empty() {
            return self.lm.is_valid_at_start(id);
        }
        let ids = self.lm.token_keys.of.get(id as usize).copied();
        let node = &self.nodes[n];
        // A key made of a stray byte may complete a character cut at the end of the node.
        let key = ids
            .filter(|k| k.class != NO_KEY && !(node.cut_char && k.stray))
            .map(|k| if node.apostrophe { k.near } else { k.class });
        if let Some(key) = key {
            match self.rule_by_id(n, key)? {
                Local::Invalid => return Ok(false),
                Local::To(m) => return self.valid_in(m, id, bytes),
                Local::Joined(i) => {
                    let last = *self.nodes[n].path.last().expect("not the root");
                    if !self.lm.is_canonical_pair(last, id)? {
                        return Ok(false);
                    }
                    if let Some(v) = self.joined(n, bytes)? {
                        return Ok(v);
                    }
                    // Whitespace nodes whose tokens are not the merges of their bytes (`  `
                    // as two spaces) meet whitespace tokens that the plain test finds invalid
                    // only after all its probes.
                    if !self.merges_keep(n, i, id, bytes)? {
                        return Ok(false);
                    }
                }
                Local::Open => {}
            }
        } else if !self.nodes[n].cut_char {
            // A token that ends inside its first character, or inside the one after its
            // leading whitespace run: whatever completes it (a character of some class, or
            // nothing valid), its key is one of these.
            let keys = self.lm.completion_keys(bytes);
            let mut all_invalid = !keys.is_empty();
            // The node the keys hand their tokens over to, and whether they all do, to it.
            let (mut to, mut one_node) = (None, true);
            for key in keys.iter() {
                let rule = self.rule(n, key)?;
                all_invalid &= matches!(rule, Local::Invalid);
                match rule {
                    Local::To(m) if to.is_none_or(|t| t == m) => to = Some(m),
                    _ => one_node = false,
                }
            }
            if all_invalid {
                return Ok(false);
            }
            // Every way to complete the character starts a piece at the same anchor: as for a
            // whole key, the token is valid there exactly when it is valid after the shorter
            // node, whose table many nodes share (after indentation: the start of a text).
            if let (Some(m), true) = (to, one_node) {
                return self.valid_in(m, id, bytes);
            }
            // Nearly always valid, through the plainest witness: the end of text.
            if self.canonical_at_end(n, id, bytes)? {
                return Ok(true);
            }
        }
        let node = &mut self.nodes[n];
        node.path.push(id);
        let v = self.lm.is_valid(&node.path);
        node.path.pop();
        v
    }

    /// For a token that continues the node's last piece and makes a canonical pair with its
    /// last token: invalid when a piece boundary inside the token is certain (every
    /// continuation has it, see [`decided_by_key`]); valid when the node and the token are the
    /// canonical encoding of their bytes, read off the pieces alone (the node's last piece
    /// grows by the token, and a run of pairwise canonical tokens is an encoding, see
    /// [`crate::bpe`]'s notes); `None` when neither is shown (the plain test decides).
    fn joined(&mut self, n: usize, bytes: &[u8]) -> Result<Option<bool>> {
        let lm = self.lm;
        self.with_pieces(n, bytes, |node, buf, pieces| {
            let at = node.bytes.len();
            let inside = |q: usize| q > at && q < buf.len();
            if pieces
                .iter()
                .any(|&(q, _)| inside(q) && decided_by_key(&buf[..q], &buf[q..]))
            {
                return Ok(Some(false));
            }
            if node.canon.is_none() {
                node.canon = Some(lm.canon_of(&node.path, &node.bytes, &node.ends)?);
            }
            let Some(Some(canon)) = &node.canon else {
                return Ok(None);
            };
            let ls = *canon.starts.last().expect("a node has bytes");
            let same_pieces = pieces.len() == canon.starts.len()
                && pieces.iter().zip(&canon.starts).all(|(&(a, _), &b)| a == b)
                && pieces.last().is_some_and(|&(_, b)| b == buf.len());
            let bpe = lm.enc.bpe();
            let whole = bpe.ignore_merges() && bpe.token_id(&buf[ls..]).is_some();
            Ok((same_pieces && !whole).then_some(true))
        })
    }

    /// Is the node's path followed by `id` the canonical encoding of their bytes (the end of
    /// text as the witness of validity)? The plain test finds the same witness first, but
    /// stores every answer by path in a shared map; this runs for every token that ends inside
    /// its first character at every fresh node that meets the whole vocabulary, whose table
    /// keeps the answer anyway. `false` says nothing.
    pub(super) fn canonical_at_end(&mut self, n: usize, id: Rank, bytes: &[u8]) -> Result<bool> {
        let bpe = self.lm.enc.bpe();
        self.with_pieces(n, bytes, |node, buf, pieces| {
            let mut tokens = Vec::with_capacity(node.path.len() + 2);
            for &(a, b) in pieces {
                bpe.encode_piece(&buf[a..b], &mut tokens)?;
                if tokens.len() > node.path.len() + 1 {
                    return Ok(false);
                }
            }
            Ok(tokens.len() == node.path.len() + 1
                && tokens[..node.path.len()] == node.path[..]
                && tokens[node.path.len()] == id)
        })
    }

    /// `f(node, bytes of node n + bytes, their pre-tokenizer pieces)`, in the check's reused
    /// buffers (these run once per token at a fresh node).
    fn with_pieces<T>(
        &mut self,
        n: usize,
        bytes: &[u8],
        f: impl FnOnce(&mut NodeState, &[u8], &[(usize, usize)]) -> Result<T>,
    ) -> Result<T> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut pieces = std::mem::take(&mut self.pieces);
        let node = &mut self.nodes[n];
        buf.clear();
        buf.extend_from_slice(&node.bytes);
        buf.extend_from_slice(bytes);
        pieces.clear();
        let out = self
            .lm
            .pieces(&buf, &mut pieces)
            .and_then(|()| f(node, &buf, &pieces));
        self.buf = buf;
        self.pieces = pieces;
        out
    }

    /// Do the merges of the bytes of the node's tokens from `i` on and `id` give those tokens
    /// back? They must when the tokens lie in one piece ([`Rule::Joined`]); a single token
    /// passes (the pair test covers two).
    fn merges_keep(&mut self, n: usize, i: usize, id: Rank, bytes: &[u8]) -> Result<bool> {
        let node = &self.nodes[n];
        if node.path.len() - i < 2 {
            return Ok(true);
        }
        let from = if i == 0 { 0 } else { node.ends[i - 1] };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&node.bytes[from..]);
        buf.extend_from_slice(bytes);
        let mut merged = Vec::with_capacity(node.path.len() - i + 1);
        let out = self.lm.enc.bpe().merge_without_lookup(&buf, &mut merged);
        self.buf = buf;
        out?;
        Ok(merged.len() == node.path.len() - i + 1
            && merged[..merged.len() - 1] == node.path[i..]
            && merged[merged.len() - 1] == id)
    }

    /// The node's [`Rule`] for tokens with lookahead key `key`, resolved (the completions of
    /// a lone lead byte; a token's own key goes by [`Check::rule_by_id`]). Keys of one class
    /// share it ([`class_key`]).
    fn rule(&mut self, n: usize, key: &[u8]) -> Result<Local> {
        let mut class = std::mem::take(&mut self.key);
        class_key(self.nodes[n].apostrophe, key, &mut class);
        let out = self.class_rule(n, &class);
        self.key = class;
        out
    }

    /// The node's rule for a token's own key, interned (`key`: the key as
    /// [`Check::rule`] would look it up, its class key or itself).
    fn rule_by_id(&mut self, n: usize, key: u32) -> Result<Local> {
        if let Some(&Some(local)) = self.nodes[n].rules_by_id.get(key as usize) {
            return Ok(local);
        }
        let lm = self.lm;
        let local = self.resolve(n, &lm.token_keys.keys[key as usize])?;
        let table = &mut self.nodes[n].rules_by_id;
        if table.is_empty() {
            table.resize(lm.token_keys.keys.len(), None);
        }
        table[key as usize] = Some(local);
        Ok(local)
    }

    /// The node's [`Rule`] for class key `key`, from [`ByteLm`]'s cache, resolved.
    fn resolve(&mut self, n: usize, key: &[u8]) -> Result<Local> {
        let node = &self.nodes[n];
        Ok(
            match self.lm.rule(&node.path, &node.bytes, key, &node.ends)? {
                Rule::Invalid => Local::Invalid,
                Rule::Joined(i) => Local::Joined(i),
                Rule::Open => Local::Open,
                Rule::After(j) => {
                    let path = node.path[j..].to_vec();
                    let tail = node.bytes[node.ends[j - 1]..].to_vec();
                    Local::To(self.node(&path, &tail)?)
                }
            },
        )
    }

    fn class_rule(&mut self, n: usize, key: &[u8]) -> Result<Local> {
        let node = &self.nodes[n];
        if let Some((k, rule)) = &node.last {
            if k[..] == *key {
                return Ok(*rule);
            }
        }
        let local = match node.rules.get(key) {
            Some(&local) => local,
            None => {
                let local = self.resolve(n, key)?;
                self.nodes[n].rules.insert(key.to_vec(), local);
                local
            }
        };
        let last = &mut self.nodes[n].last;
        match last {
            Some((k, rule)) => {
                k.clear();
                k.extend_from_slice(key);
                *rule = local;
            }
            None => *last = Some((key.to_vec(), local)),
        }
        Ok(local)
    }
}

impl ByteLm {
    /// A test hook: every (node, token) pair that marginalising `x` meets, checked with the
    /// shortcuts (and the caches as they are, [`Check::settle_by_key`] included) and with the
    /// plain extension-probe test. Returns how many pairs were compared, how many of them the
    /// plain test finds invalid, and those where the two disagree, as (node path, token,
    /// shortcut, plain). `keyless_only`: only the tokens without a lookahead key (those that
    /// end inside a character, their first or the one after a leading whitespace run, decided
    /// through the completions of that character), which keeps the plain test affordable on
    /// large vocabularies.
    #[allow(clippy::type_complexity)]
    pub fn shortcut_disagreements(
        &self,
        x: &[u8],
        keyless_only: bool,
    ) -> Result<(usize, usize, Vec<(Vec<Rank>, Rank, bool, bool)>)> {
        let tree = self.tree(x)?;
        let window = &x[tree.sigma..];
        let mut check = Check::new(self, window);
        let (mut pairs, mut invalid) = (0, 0);
        let mut out = Vec::new();
        for (node, &end) in tree.nodes.iter().zip(&tree.ends) {
            check.enter(node, end)?;
            if end == window.len() {
                // As `marginalize_rows` does for a node that meets the whole vocabulary.
                check.settle_by_key()?;
            }
            for j in self.vocab.prefix_range(&window[end..]) {
                let id = self.vocab.id(j);
                let keyless = self
                    .token_keys
                    .of
                    .get(id as usize)
                    .is_none_or(|k| k.class == NO_KEY);
                if keyless_only && !keyless {
                    continue;
                }
                let fast = check.valid(id, self.vocab.bytes(j))?;
                let plain = self.is_valid_uncached(&[&node[..], &[id]].concat())?;
                pairs += 1;
                invalid += usize::from(!plain);
                if fast != plain {
                    out.push((node.clone(), id, fast, plain));
                }
            }
        }
        Ok((pairs, invalid, out))
    }

    /// [`Canon`] of a node (tokens `path` ending at `ends` in `bytes`), if its tokens are
    /// made that way.
    fn canon_of(&self, path: &[Rank], bytes: &[u8], ends: &[usize]) -> Result<Option<Canon>> {
        let mut pieces = Vec::new();
        self.pieces(bytes, &mut pieces)?;
        let Some(&(ls, _)) = pieces.last() else {
            return Ok(None);
        };
        let mut head = Vec::new();
        for &(a, b) in &pieces[..pieces.len() - 1] {
            self.enc.bpe().encode_piece(&bytes[a..b], &mut head)?;
        }
        let k = head.len();
        if k >= path.len() || path[..k] != head[..] || (k > 0 && ends[k - 1] != ls) {
            return Ok(None);
        }
        let mut last = Vec::new();
        self.enc
            .bpe()
            .merge_without_lookup(&bytes[ls..], &mut last)?;
        if last[..] != path[k..] {
            return Ok(None);
        }
        Ok(Some(Canon {
            starts: pieces.iter().map(|&(a, _)| a).collect(),
        }))
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

impl Marginal {
    /// The log of the total of the bins (the canonical mass of the next step), `-inf` when
    /// every bin is empty: what the next-byte distribution is normalised by.
    pub fn log_total(&self) -> f64 {
        let top = self
            .log_bins
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if top == f64::NEG_INFINITY {
            return top;
        }
        let sum: f64 = self.log_bins.iter().map(|&b| (b - top).exp()).sum();
        top + sum.ln()
    }
}

/// The model's outputs must cover every node of the tree: one path log-probability and one
/// row of next-token log-probabilities each, all rows of one length. Returns the node count.
fn check_shapes(what: &str, tree: &Tree, node_logp: &[f64], rows: &[Row<'_>]) -> Result<usize> {
    let n = tree.nodes.len();
    let n_cols = rows.first().map_or(0, |r| r.len());
    if node_logp.len() != n || rows.len() != n || rows.iter().any(|r| r.len() != n_cols) {
        return Err(Error::InvalidArgument(format!(
            "{what}: {n} nodes need {n} path log-probabilities and {n} rows of next-token \
             log-probabilities of one length"
        )));
    }
    Ok(n)
}

/// `next_logp` (`n_cols` log-probabilities per row) as rows.
fn row_slices(next_logp: &[f64], n_cols: usize) -> Vec<Row<'_>> {
    if n_cols == 0 {
        return Vec::new();
    }
    next_logp.chunks(n_cols).map(Row::log_probs).collect()
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
        self.marginalize_rows(x, tree, node_logp, &row_slices(next_logp, n_cols), eos)
    }

    /// [`ByteLm::marginalize`] with one [`Row`] per node (`rows[i]`: log P(t | node i)),
    /// which may point into different arrays.
    pub fn marginalize_rows(
        &self,
        x: &[u8],
        tree: &Tree,
        node_logp: &[f64],
        rows: &[Row<'_>],
        eos: Option<Rank>,
    ) -> Result<Marginal> {
        let n = check_shapes("marginalize", tree, node_logp, rows)?;
        let n_cols = rows.first().map_or(0, |r| r.len());
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
                let row = rows[i];
                let rest = &window[tree.ends[i]..];
                check.enter(&tree.nodes[i], tree.ends[i])?;
                if rest.is_empty() {
                    // Every token, each into the bin of its first byte. In id order, not the
                    // sorted vocabulary's: the row (fresh from the model, not in cache), the
                    // node's table and the token keys are then read in sequence; a node ending
                    // at the end of `x` meets the whole vocabulary. First the unknown tokens
                    // that their key settles, then the rest of the unknown ones one by one,
                    // then one vectorised pass over the table ([`super::fold`]); a token with
                    // no table slot has no bytes either.
                    check.settle_by_key()?;
                    match row.values {
                        Values::F32(v) => self.decide_unknown(&mut check, v)?,
                        Values::F64(v) => self.decide_unknown(&mut check, v)?,
                    }
                    fold_valid(row, check.states(), &self.first_byte, base, &mut bins);
                } else {
                    for j in self.vocab.prefix_range(rest) {
                        let id = self.vocab.id(j);
                        let Some(lp) = row.log_p(id as usize) else {
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
                        total += w;
                    }
                }
                if let Some(e) = eos {
                    if tree.nodes[i] == canonical_window {
                        let lp = row
                            .log_p(e as usize)
                            .expect("checked against the row length");
                        bins[256] += (base + lp).exp();
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

    /// Decides, in token id order, the tokens of a node that meets the whole vocabulary that
    /// its table does not know yet (`values`: the node's row; a token the model rules out, a
    /// value of -inf, is never looked at; a token with no table slot has no bytes either).
    fn decide_unknown<T: Logit>(&self, check: &mut Check<'_>, values: &[T]) -> Result<()> {
        let bpe = self.enc.bpe();
        for (id, &v) in values.iter().enumerate() {
            let id = id as Rank;
            if v.widen() == f64::NEG_INFINITY || check.known(id) {
                continue;
            }
            if let Some(bytes) = bpe.token_bytes(id) {
                check.valid(id, bytes)?;
            }
        }
        Ok(())
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
        self.covers_rows(x, tree, node_logp, &row_slices(next_logp, n_cols))
    }

    /// [`ByteLm::covers`] with one [`Row`] per node.
    pub fn covers_rows(
        &self,
        x: &[u8],
        tree: &Tree,
        node_logp: &[f64],
        rows: &[Row<'_>],
    ) -> Result<Vec<(usize, Rank, f64)>> {
        let n = check_shapes("covers", tree, node_logp, rows)?;
        let window = &x[tree.sigma..];
        let mut out = Vec::new();
        let mut check = Check::new(self, window);
        for i in 0..n {
            let rest = &window[tree.ends[i]..];
            if rest.is_empty() || !node_logp[i].is_finite() {
                continue;
            }
            let row = rows[i];
            check.enter(&tree.nodes[i], tree.ends[i])?;
            for j in self.vocab.prefix_range(rest) {
                let id = self.vocab.id(j);
                let Some(lp) = row.log_p(id as usize) else {
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
