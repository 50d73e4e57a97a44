//! One decoding session's drafting state: the context, the three drafters and the tree of the
//! current step. The adjacency matrix and the tri-gram table outlive a session (`start` keeps
//! them: warm start); the suffix index is rebuilt from each prompt.

use crate::error::{Error, Result};
use crate::Rank;

use super::drafters::{Adjacency, Propose, SuffixIndex, Trigram};
use super::logits;
use super::tree::{
    build_dynamic, build_static, default_template, DraftTree, TreeLimits, DEAD_SLOT,
};
use super::verify::{self, Verified};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrafterKind {
    /// Token Recycling's adjacency matrix.
    Recycling,
    /// Prompt lookup / n-gram retrieval over the context.
    Lookup,
    /// ADED-style tri-gram table.
    Trigram,
}

impl DrafterKind {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "recycling" => Ok(DrafterKind::Recycling),
            "lookup" => Ok(DrafterKind::Lookup),
            "trigram" => Ok(DrafterKind::Trigram),
            _ => Err(Error::InvalidArgument(format!(
                "unknown drafter {name:?}; expected \"recycling\", \"lookup\" or \"trigram\""
            ))),
        }
    }
}

/// A token's new adjacency row: (token, the node it was read at, ids, probabilities).
type RecycledRow = (Rank, usize, Vec<Rank>, Vec<f32>);

/// What a session's greedy steps need besides the logits (`Speculator::begin`), fixed for the
/// whole generation.
#[derive(Debug, Clone, Default)]
pub struct StepConfig {
    /// Drafts per step at most.
    pub budget: usize,
    /// Learned positions of the model, if limited: trees stop at position `max_pos - 1`.
    pub max_pos: Option<usize>,
    /// `costs[n - 1]`: time of a forward over n tokens (None: keep the whole budget).
    pub costs: Option<Vec<f64>>,
    /// Tokens that end the generation (kept in the output).
    pub eos: Vec<Rank>,
    /// Dead cache slots tolerated, as a fraction of the cache (see `settle`).
    pub max_dead: f64,
}

/// What one fused greedy step (`Speculator::step_greedy`) produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// New tokens: accepted drafts and the target's own, cut at EOS and at the token budget.
    pub tokens: Vec<Rank>,
    /// Drafts the target accepted (before the cut).
    pub drafts_accepted: usize,
    /// The generation is over (EOS or the token budget reached); no next tree was drafted.
    pub done: bool,
    /// Live cache slots to gather every layer to (see `settle`), or None.
    pub live: Option<Vec<usize>>,
    /// Seconds spent verifying (argmax walk and Token Recycling's update) and drafting the
    /// next tree, for the caller's time breakdown.
    pub verify_secs: f64,
    pub draft_secs: f64,
}

/// The score calibration between steps (accepted over expected drafts, smoothed; plain steps
/// drift back to 1 so that drafting is retried), exactly as `tokenmill.speculative`'s loop
/// computes it in Python (same f64 operations in the same order).
pub fn calibrate(gain: f64, tree_len: usize, drafts_accepted: usize, expected: f64) -> f64 {
    if tree_len > 1 {
        if expected > 0.0 {
            let ratio = drafts_accepted as f64 / expected;
            let g = 0.9 * gain + 0.1 * ratio;
            // Python's `min(2.0, max(0.05, g))`: a NaN (never produced here) would give 0.05.
            let g = if g > 0.05 { g } else { 0.05 };
            if g < 2.0 {
                g
            } else {
                2.0
            }
        } else {
            gain
        }
    } else {
        gain + (1.0 - gain) * 0.02
    }
}

#[derive(Debug, Clone)]
pub struct Speculator {
    vocab: usize,
    drafters: Vec<(DrafterKind, f32)>,
    limits: TreeLimits,
    /// Token Recycling's static template instead of the dynamic tree (recycling alone).
    static_tree: bool,
    adjacency: Adjacency,
    suffix: SuffixIndex,
    trigram: Trigram,
    tree: Option<DraftTree>,
    /// The target's KV cache as the session leaves it: the position of the token in each slot,
    /// `DEAD_SLOT` for rejected drafts left in place (see `settle`).
    slots: Vec<u32>,
    dead: usize,
    /// Session settings of the fused greedy steps (`begin`).
    config: StepConfig,
    /// Score calibration of the fused steps (see `calibrate`).
    gain: f64,
    /// Drafts the current tree expects the target to accept (sum of the drafts' scores).
    expected: f64,
}

impl Speculator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vocab: usize,
        drafters: &[(DrafterKind, f32)],
        k: usize,
        max_ngram: usize,
        max_depth: u32,
        max_children: usize,
        static_tree: bool,
    ) -> Result<Self> {
        if drafters.is_empty() {
            return Err(Error::InvalidArgument(
                "at least one drafter is needed".into(),
            ));
        }
        if let Some((_, w)) = drafters.iter().find(|(_, w)| !(w.is_finite() && *w > 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "drafter weights must be positive, got {w}"
            )));
        }
        if static_tree && drafters.iter().any(|(d, _)| *d != DrafterKind::Recycling) {
            return Err(Error::InvalidArgument(
                "the static tree template drafts from the adjacency matrix only: use the \
                 \"recycling\" drafter alone with it"
                    .into(),
            ));
        }
        if max_depth == 0 || max_children == 0 {
            return Err(Error::InvalidArgument(
                "max_depth and max_children must be positive".into(),
            ));
        }
        Ok(Speculator {
            vocab,
            drafters: drafters.to_vec(),
            limits: TreeLimits {
                budget: 0,
                max_depth,
                max_children,
            },
            static_tree,
            adjacency: Adjacency::new(vocab, k)?,
            suffix: SuffixIndex::new(1, max_ngram)?,
            trigram: Trigram::new(k)?,
            tree: None,
            slots: Vec::new(),
            dead: 0,
            config: StepConfig::default(),
            gain: 1.0,
            expected: 0.0,
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn adjacency(&self) -> &Adjacency {
        &self.adjacency
    }

    pub fn set_adjacency(&mut self, adj: Adjacency) -> Result<()> {
        if adj.vocab() != self.vocab || adj.k() != self.adjacency.k() {
            return Err(Error::InvalidArgument(format!(
                "adjacency matrix is {} x {}, this speculator needs {} x {}",
                adj.vocab(),
                adj.k(),
                self.vocab,
                self.adjacency.k()
            )));
        }
        self.adjacency = adj;
        Ok(())
    }

    pub fn context(&self) -> &[Rank] {
        self.suffix.tokens()
    }

    pub fn tree(&self) -> Option<&DraftTree> {
        self.tree.as_ref()
    }

    fn check_tokens(&self, tokens: &[Rank]) -> Result<()> {
        match tokens.iter().find(|&&t| t as usize >= self.vocab) {
            Some(t) => Err(Error::InvalidArgument(format!(
                "token id {t} is outside the vocabulary of {}",
                self.vocab
            ))),
            None => Ok(()),
        }
    }

    /// Starts a session on `prompt` (its last token is the first root).
    pub fn start(&mut self, prompt: &[Rank]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        self.check_tokens(prompt)?;
        self.suffix.clear();
        self.extend_context(prompt);
        self.tree = None;
        // The prefill caches every prompt token but the last (the first root).
        self.slots = (0..prompt.len() as u32 - 1).collect();
        self.dead = 0;
        Ok(())
    }

    /// The cache layout: `slots()[k]` is the position of the token in cache slot `k`, or
    /// `DEAD_SLOT`.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Whether the cache holds rejected drafts (then every forward needs a mask).
    pub fn has_dead_slots(&self) -> bool {
        self.dead > 0
    }

    /// Records the current tree's forward: its nodes were appended to the cache, and `nodes` (a
    /// path from the root, as verification returns it) were accepted. Their slots take the
    /// next positions; the others stay in the cache, dead (masked out of every later forward)
    /// instead of being cut out of every layer every step, which cost more than the forward's
    /// attention over a few extra keys. Once dead slots exceed `max_dead` (a fraction of the
    /// cache), returns the live slots, in order, to gather every layer's cache to; the layout
    /// is then compact again.
    pub fn settle(&mut self, nodes: &[usize], max_dead: f64) -> Result<Option<Vec<usize>>> {
        let tree = self.current()?;
        let is_path = nodes.first() == Some(&0)
            && nodes.len() <= tree.len()
            && nodes.iter().all(|&i| i < tree.len())
            && nodes.windows(2).all(|w| tree.parents[w[1]] == w[0]);
        if !is_path {
            return Err(Error::InvalidArgument(format!(
                "accepted nodes {nodes:?} are not a path from the root of the current tree"
            )));
        }
        let n = tree.len();
        let base = (self.slots.len() - self.dead) as u32;
        let start = self.slots.len();
        self.slots.resize(start + n, DEAD_SLOT);
        // A path's nodes come in increasing order, and each is one deeper than the last.
        for (i, &node) in nodes.iter().enumerate() {
            self.slots[start + node] = base + i as u32;
        }
        self.dead += n - nodes.len();
        if self.dead == 0 || (self.dead as f64) <= max_dead * self.slots.len() as f64 {
            return Ok(None);
        }
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&k| self.slots[k] != DEAD_SLOT)
            .collect();
        self.slots = (0..live.len() as u32).collect();
        self.dead = 0;
        Ok(Some(live))
    }

    /// Appends the tokens a step produced.
    pub fn accept(&mut self, tokens: &[Rank]) -> Result<()> {
        self.check_tokens(tokens)?;
        self.extend_context(tokens);
        Ok(())
    }

    fn uses(&self, kind: DrafterKind) -> bool {
        self.drafters.iter().any(|&(d, _)| d == kind)
    }

    /// Appends to the context; the suffix index and the tri-gram table learn from it only if
    /// their drafter is in use (their state is never read otherwise).
    fn extend_context(&mut self, tokens: &[Rank]) {
        if self.uses(DrafterKind::Trigram) {
            self.trigram.observe(self.suffix.tokens(), tokens);
        }
        if self.uses(DrafterKind::Lookup) {
            self.suffix.extend(tokens);
        } else {
            self.suffix.extend_unindexed(tokens);
        }
    }

    /// Builds this step's tree with up to `budget` drafts; with `costs` (`costs[n - 1]`: time
    /// of a forward over n tokens), cut to the size with the best expected tokens per time.
    pub fn draft(&mut self, budget: usize, costs: Option<&[f64]>, gain: f64) -> Result<&DraftTree> {
        let ctx = self.suffix.tokens();
        let Some(&root) = ctx.last() else {
            return Err(Error::InvalidArgument(
                "no context: call start(prompt) first".into(),
            ));
        };
        if let Some(costs) = costs {
            if costs.is_empty() || costs.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
                return Err(Error::InvalidArgument(
                    "forward costs must be positive and finite".into(),
                ));
            }
        }
        // The early stop's bound holds for a non-negative gain (the calibration keeps it so).
        let sized = costs.filter(|_| gain.is_finite() && gain >= 0.0);
        let mut tree = if budget == 0 {
            DraftTree::new(root)
        } else if self.static_tree {
            let tpl = default_template(budget, self.adjacency.k(), self.limits.max_depth);
            build_static(&self.adjacency, root, &tpl)
        } else {
            let sources: Vec<(&dyn Propose, f32)> = self
                .drafters
                .iter()
                .map(|&(d, w)| {
                    let s: &dyn Propose = match d {
                        DrafterKind::Recycling => &self.adjacency,
                        DrafterKind::Lookup => &self.suffix,
                        DrafterKind::Trigram => &self.trigram,
                    };
                    (s, w)
                })
                .collect();
            let limits = TreeLimits {
                budget,
                ..self.limits
            };
            build_dynamic(ctx, &sources, limits, sized.map(|c| (c, gain)))?
        };
        if let Some(costs) = costs {
            let n = tree.best_size(costs, gain);
            tree.truncate(n);
        }
        Ok(self.tree.insert(tree))
    }

    /// Makes `tree` the current step's tree (instead of drafting one): for measuring the
    /// verification work on a given shape, and for tests.
    pub fn set_tree(&mut self, tree: DraftTree) -> Result<()> {
        self.check_tokens(&tree.tokens)?;
        self.tree = Some(tree);
        Ok(())
    }

    fn current(&self) -> Result<&DraftTree> {
        self.tree
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("no draft tree: call draft() first".into()))
    }

    /// Overwrites the adjacency rows of every token in the current tree with the target's top
    /// candidates at that node (`ids`, `probs`: row-major `n x width`).
    pub fn update_adjacency(&mut self, ids: &[Rank], probs: &[f32], width: usize) -> Result<()> {
        let tree = self
            .tree
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("no draft tree: call draft() first".into()))?;
        let n = tree.len();
        if width == 0 || ids.len() != n * width || probs.len() != n * width {
            return Err(Error::InvalidArgument(format!(
                "top-k arrays must be (tree nodes = {n}) x width, got {} ids and {} probs \
                 with width {width}",
                ids.len(),
                probs.len()
            )));
        }
        for i in 0..n {
            let r = i * width..(i + 1) * width;
            self.adjacency
                .set_row(tree.tokens[i], &ids[r.clone()], &probs[r])?;
        }
        Ok(())
    }

    pub fn verify_greedy(&self, argmax: &[Rank]) -> Result<Verified> {
        verify::verify_greedy(self.current()?, argmax)
    }

    /// Checks that `logits` is `(tree nodes) x vocab`, row-major.
    fn logits_rows(&self, logits: &[f32]) -> Result<(&DraftTree, usize)> {
        let tree = self.current()?;
        let n = tree.len();
        if logits.len() != n * self.vocab {
            return Err(Error::InvalidArgument(format!(
                "logits must be (tree nodes = {n}) x (vocab = {}), got {} values",
                self.vocab,
                logits.len()
            )));
        }
        Ok((tree, self.vocab))
    }

    /// Greedy verification straight from the target's float32 logits (`n x vocab`): the
    /// argmax (torch's rule) is taken only at the nodes the walk reaches.
    pub fn verify_greedy_logits(&self, logits: &[f32]) -> Result<Verified> {
        self.walk_greedy(logits, |_| None)
    }

    /// The greedy walk, taking a node's argmax from `known` when it has it.
    fn walk_greedy(
        &self,
        logits: &[f32],
        known: impl Fn(usize) -> Option<Rank>,
    ) -> Result<Verified> {
        let (tree, v) = self.logits_rows(logits)?;
        let mut nodes = vec![0];
        let mut cur = 0;
        loop {
            let best = match known(cur) {
                Some(t) => t,
                None => logits::argmax(&logits[cur * v..(cur + 1) * v]) as Rank,
            };
            match tree.child_with(cur, best) {
                Some(next) => {
                    nodes.push(next);
                    cur = next;
                }
                None => return Ok(Verified { nodes, bonus: best }),
            }
        }
    }

    /// Token Recycling's update straight from the target's logits (`n x vocab`, before any
    /// sampling warpers): the row of every token in the tree becomes the top-k at its node.
    /// Only the last node holding a token is read, since its row overwrites the others' (the
    /// result equals `update_adjacency` over all nodes in order).
    pub fn recycle_logits(&mut self, logits: &[f32]) -> Result<()> {
        let rows = self.recycled_rows(logits)?;
        self.set_rows(rows)
    }

    fn set_rows(&mut self, rows: Vec<RecycledRow>) -> Result<()> {
        for (t, _, ids, probs) in rows {
            self.adjacency.set_row(t, &ids, &probs)?;
        }
        Ok(())
    }

    /// Token Recycling's new rows (see `recycle_logits`), not yet written.
    fn recycled_rows(&self, logits: &[f32]) -> Result<Vec<RecycledRow>> {
        let (tree, v) = self.logits_rows(logits)?;
        let k = self.adjacency.k();
        // Last node of each distinct token, in node order.
        let mut last: Vec<(Rank, usize)> = tree
            .tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i))
            .collect();
        last.sort_unstable_by_key(|&(t, i)| (t, std::cmp::Reverse(i)));
        last.dedup_by_key(|&mut (t, _)| t);
        let (mut ids, mut probs) = (Vec::with_capacity(k), Vec::with_capacity(k));
        let mut rows = Vec::with_capacity(last.len());
        for &(t, i) in &last {
            logits::top_k_probs(&logits[i * v..(i + 1) * v], k, &mut ids, &mut probs);
            rows.push((t, i, ids.clone(), probs.clone()));
        }
        Ok(rows)
    }

    pub fn verify_sample(&self, probs: &[f32], uniforms: &[f64]) -> Result<Verified> {
        verify::verify_sample(self.current()?, probs, self.vocab, uniforms)
    }

    /// Starts a session on `prompt` (as `start`) for fused greedy steps, and drafts the first
    /// step's tree. Every call between two forwards costs several times what it costs in a
    /// loop (the forward evicts the caches the call's code and data sit in), so a greedy step
    /// is one call, `step_greedy`, instead of five.
    pub fn begin(&mut self, prompt: &[Rank], config: StepConfig) -> Result<&DraftTree> {
        if let Some(costs) = &config.costs {
            if costs.is_empty() || costs.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
                return Err(Error::InvalidArgument(
                    "forward costs must be positive and finite".into(),
                ));
            }
        }
        if config.max_dead.is_nan() || config.max_dead < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "max_dead must be >= 0, got {}",
                config.max_dead
            )));
        }
        self.start(prompt)?;
        self.config = config;
        self.gain = 1.0;
        self.draft_next()
    }

    /// The calibration gain of the fused steps.
    pub fn gain(&self) -> f64 {
        self.gain
    }

    /// Drafts the next tree within the session's budget; trees stay within the learned
    /// positions, if the model has a limit.
    fn draft_next(&mut self) -> Result<&DraftTree> {
        let live = self.slots.len() - self.dead;
        let budget = match self.config.max_pos {
            Some(m) if m > 0 => self.config.budget.min((m - 1).saturating_sub(live)),
            _ => self.config.budget,
        };
        let costs = self.config.costs.take();
        let expected = self
            .draft(budget, costs.as_deref(), self.gain)
            .map(|t| t.expected_tokens(t.len()) - 1.0);
        self.config.costs = costs;
        self.expected = expected?;
        self.current()
    }

    /// One greedy step after the current tree's forward, fused: verification from the logits
    /// (`n x vocab` float32), Token Recycling's update (if recycling drafts), the calibration,
    /// the cut at EOS and at `remaining` tokens, `settle`, `accept`, and unless the generation
    /// is over the next tree. The same work, in the same order, as the separate calls
    /// `tokenmill.speculative` makes on other paths.
    pub fn step_greedy(&mut self, logits: &[f32], remaining: usize) -> Result<Step> {
        let t0 = std::time::Instant::now();
        let v = if self.uses(DrafterKind::Recycling) {
            // Token Recycling's top k first: at a node whose row it reads, the argmax is its
            // best candidate (the first index of the maximum, as `argmax`; a row with a NaN or
            // no finite maximum has no candidates and gets its own argmax), so the walk reads
            // those rows once instead of twice.
            let rows = self.recycled_rows(logits)?;
            let n = self.current()?.len();
            let mut top = vec![None; n];
            for (_, i, ids, _) in &rows {
                top[*i] = ids.first().copied();
            }
            let v = self.walk_greedy(logits, |i| top[i])?;
            self.set_rows(rows)?;
            v
        } else {
            self.verify_greedy_logits(logits)?
        };
        let tree = self.current()?;
        let n = tree.len();
        let mut tokens = v.new_tokens(tree);
        let verify_secs = t0.elapsed().as_secs_f64();
        let drafts_accepted = v.nodes.len() - 1;
        self.gain = calibrate(self.gain, n, drafts_accepted, self.expected);
        tokens.truncate(remaining);
        let mut done = false;
        if let Some(i) = tokens.iter().position(|t| self.config.eos.contains(t)) {
            tokens.truncate(i + 1);
            done = true;
        }
        if tokens.len() >= remaining {
            done = true;
        }
        let live = self.settle(&v.nodes, self.config.max_dead)?;
        self.accept(&tokens)?;
        let t1 = std::time::Instant::now();
        if !done {
            self.draft_next()?;
        }
        Ok(Step {
            tokens,
            drafts_accepted,
            done,
            live,
            verify_secs,
            draft_secs: t1.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_learns_from_the_target() {
        let all = [
            (DrafterKind::Recycling, 1.0),
            (DrafterKind::Lookup, 1.0),
            (DrafterKind::Trigram, 1.0),
        ];
        let mut s = Speculator::new(16, &all, 4, 4, 8, 4, false).unwrap();
        assert!(s.draft(4, None, 1.0).is_err());
        s.start(&[1, 2, 3, 1, 2]).unwrap();
        let t = s.draft(4, None, 1.0).unwrap().clone();
        // Lookup proposes 3 after "1 2", then 1 after "1 2 3".
        assert_eq!(t.tokens[..3], [2, 3, 1]);
        // The target says 7 after every node.
        let n = t.len();
        let ids: Vec<Rank> = (0..n).flat_map(|_| [7, 8]).collect();
        let probs: Vec<f32> = (0..n).flat_map(|_| [0.9, 0.05]).collect();
        s.update_adjacency(&ids, &probs, 2).unwrap();
        let v = s.verify_greedy(&vec![7; n]).unwrap();
        assert_eq!(v.nodes, vec![0]);
        s.accept(&v.new_tokens(&t)).unwrap();
        assert_eq!(s.context(), &[1, 2, 3, 1, 2, 7]);
        // No drafter has seen anything after 7.
        assert_eq!(s.draft(2, None, 1.0).unwrap().tokens, vec![7]);
        // After 2, the adjacency (7: 0.9) outranks lookup and tri-gram (3 and 7: 0.5 each);
        // 3 becomes a second branch once the 2-7 chain (0.9, 0.9, 0.81, ...) hits max_depth.
        s.accept(&[2]).unwrap();
        let t = s.draft(9, None, 1.0).unwrap();
        let first = t.children[0][0];
        assert_eq!((t.tokens[first], t.scores[first]), (7, 0.9));
        let second: Vec<_> = t.children[0][1..].iter().map(|&c| t.tokens[c]).collect();
        assert!(second.contains(&3), "{t:?}");
        assert!(s.accept(&[16]).is_err());
        assert!(s.update_adjacency(&[1], &[0.5], 1).is_err());
        // Costs that make drafts unprofitable cut the tree to its root.
        let t = s.draft(2, Some(&[1.0, 10.0, 20.0]), 1.0).unwrap();
        assert_eq!(t.len(), 1);
    }

    /// The logits paths give what the array paths give with an argmax and top-k computed
    /// naively (repeated tokens in the tree included).
    #[test]
    fn logits_paths_match_the_array_paths() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let all = [
            (DrafterKind::Recycling, 1.0),
            (DrafterKind::Lookup, 1.0),
            (DrafterKind::Trigram, 1.0),
        ];
        let vocab = 12;
        let mut a = Speculator::new(vocab, &all, 3, 4, 6, 3, false).unwrap();
        let prompt: Vec<Rank> = (0..40).map(|_| rng.random_range(0..4)).collect();
        a.start(&prompt).unwrap();
        let mut b = a.clone();
        for _ in 0..30 {
            let n = a.draft(16, None, 1.0).unwrap().len();
            assert_eq!(b.draft(16, None, 1.0).unwrap().len(), n);
            // Coarse logits: ties are common.
            let logits: Vec<f32> = (0..n * vocab)
                .map(|_| rng.random_range(0..5) as f32)
                .collect();
            let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
            let argmax: Vec<Rank> = rows.iter().map(|r| logits::argmax(r) as Rank).collect();
            let va = a.verify_greedy_logits(&logits).unwrap();
            assert_eq!(va, b.verify_greedy(&argmax).unwrap());
            let (mut ids, mut probs) = (Vec::new(), Vec::new());
            let (mut all_ids, mut all_probs) = (Vec::new(), Vec::new());
            for r in &rows {
                logits::top_k_probs(r, 3, &mut ids, &mut probs);
                all_ids.extend(&ids);
                all_probs.extend(&probs);
            }
            a.recycle_logits(&logits).unwrap();
            b.update_adjacency(&all_ids, &all_probs, 3).unwrap();
            assert_eq!(a.adjacency(), b.adjacency());
            let new = va.new_tokens(a.tree().unwrap());
            a.accept(&new).unwrap();
            b.accept(&new).unwrap();
        }
        assert!(a.verify_greedy_logits(&[0.0; 5]).is_err());
        assert!(a.recycle_logits(&[0.0; 5]).is_err());
    }

    /// Settling keeps the accepted nodes at consecutive positions, the rest dead, and the
    /// gather it asks for keeps exactly the live slots; a naive replay of the cache (a list of
    /// what each slot holds) agrees after every step.
    #[test]
    fn settle_tracks_the_cache_layout() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let rec = [(DrafterKind::Recycling, 1.0)];
        let mut s = Speculator::new(50, &rec, 4, 4, 8, 4, false).unwrap();
        let prompt = [3, 4, 5, 6];
        s.start(&prompt).unwrap();
        // What each slot holds: (position, live).
        let mut naive: Vec<(u32, bool)> = (0..3).map(|p| (p, true)).collect();
        let mut gathers = 0;
        for step in 0..300 {
            let n = rng.random_range(1..10);
            let mut t = DraftTree::new(7);
            while t.len() < n {
                let p = rng.random_range(0..t.len());
                t.push(p, rng.random_range(0..50), 1.0);
            }
            // A random root path.
            let mut nodes = vec![0];
            while let Some(&c) = t.children[*nodes.last().unwrap()].first() {
                if rng.random_bool(0.3) {
                    break;
                }
                nodes.push(c);
            }
            s.set_tree(t.clone()).unwrap();
            let live_before = naive.iter().filter(|x| x.1).count() as u32;
            let start = naive.len();
            naive.extend((0..n).map(|_| (0, false)));
            for (i, &node) in nodes.iter().enumerate() {
                naive[start + node] = (live_before + i as u32, true);
            }
            let max_dead = if step % 50 < 25 { 0.3 } else { 0.0 };
            match s.settle(&nodes, max_dead).unwrap() {
                Some(live) => {
                    gathers += 1;
                    let want: Vec<usize> = (0..naive.len()).filter(|&k| naive[k].1).collect();
                    assert_eq!(live, want);
                    naive = live.iter().map(|&k| naive[k]).collect();
                }
                None => assert!(max_dead > 0.0 || naive.iter().all(|x| x.1)),
            }
            let want: Vec<u32> = naive
                .iter()
                .map(|&(p, l)| if l { p } else { DEAD_SLOT })
                .collect();
            assert_eq!(s.slots(), &want[..]);
            // Live positions are 0, 1, 2, ... in slot order.
            let live: Vec<u32> = want.into_iter().filter(|&p| p != DEAD_SLOT).collect();
            assert_eq!(live, (0..live.len() as u32).collect::<Vec<_>>());
        }
        assert!(gathers > 20, "{gathers}");
        let t = DraftTree::from_parents(&[1, 2, 3], &[-1, 0, 0]).unwrap();
        s.set_tree(t).unwrap();
        assert!(s.settle(&[0, 2, 1], 0.5).is_err());
        assert!(s.settle(&[1], 0.5).is_err());
        assert!(s.settle(&[], 0.5).is_err());
        assert!(s.settle(&[0, 9], 0.5).is_err());
    }

    /// The fused greedy step equals the separate calls the Python loop makes (verification,
    /// recycling, the calibration as written in Python, the cut at EOS and the token budget,
    /// settle, accept, the next draft within the position limit): same tokens, trees, cache
    /// layouts, gathers, adjacency matrix and gain, step after step, for every drafter mix.
    #[test]
    fn fused_steps_equal_the_separate_calls() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        let mixes: [&[(DrafterKind, f32)]; 4] = [
            &[(DrafterKind::Recycling, 1.0)],
            &[(DrafterKind::Lookup, 1.0)],
            &[(DrafterKind::Trigram, 1.0), (DrafterKind::Lookup, 0.5)],
            &[
                (DrafterKind::Recycling, 1.0),
                (DrafterKind::Lookup, 1.0),
                (DrafterKind::Trigram, 1.0),
            ],
        ];
        let vocab = 10;
        let mut drafted_steps = 0;
        for (case, drafters) in mixes.iter().cycle().take(16).enumerate() {
            let mut a = Speculator::new(vocab, drafters, 3, 4, 6, 3, false).unwrap();
            let prompt: Vec<Rank> = (0..30).map(|_| rng.random_range(0..4)).collect();
            let budget = [0, 1, 5, 12][case % 4];
            let costs: Option<Vec<f64>> =
                (case % 3 != 0).then(|| (1..=16).map(|n| 1.0 + 0.05 * n as f64).collect());
            let max_pos = (case % 5 == 1).then_some(prompt.len() + 20);
            let eos: Vec<Rank> = if case % 2 == 0 { vec![9] } else { vec![] };
            let max_dead = [0.0, 0.3, 100.0][case % 3];
            let max_new = 60;
            let mut b = a.clone();
            let config = StepConfig {
                budget,
                max_pos,
                costs: costs.clone(),
                eos: eos.clone(),
                max_dead,
            };
            let first = a.begin(&prompt, config).unwrap().clone();
            // The separate calls, as `tokenmill.speculative.generate` makes them.
            b.start(&prompt).unwrap();
            let mut gain = 1.0f64;
            let mut prefix_len = prompt.len() - 1;
            let mut new = 0;
            let step_budget = |prefix_len: usize| match max_pos {
                Some(m) => budget.min((m as i64 - 1 - prefix_len as i64).max(0) as usize),
                None => budget,
            };
            let mut tree = b
                .draft(step_budget(prefix_len), costs.as_deref(), gain)
                .unwrap()
                .clone();
            assert_eq!(tree, first);
            loop {
                let expected = tree.expected_tokens(tree.len()) - 1.0;
                // Logits that often agree with the first draft child; coarse, so ties occur.
                let n = tree.len();
                let mut logits: Vec<f32> = (0..n * vocab)
                    .map(|_| rng.random_range(0..6) as f32)
                    .collect();
                for i in 0..n {
                    if let Some(&c) = tree.children[i].first() {
                        if rng.random_bool(0.7) {
                            logits[i * vocab + tree.tokens[c] as usize] = 9.0;
                        }
                    }
                    // Rows whose argmax Token Recycling's top k cannot give.
                    if rng.random_bool(0.05) {
                        let j = rng.random_range(0..vocab);
                        logits[i * vocab + j] = [f32::NAN, f32::INFINITY][rng.random_range(0..2)];
                    }
                }
                let step = a.step_greedy(&logits, max_new - new).unwrap();
                let v = b.verify_greedy_logits(&logits).unwrap();
                if drafters.iter().any(|d| d.0 == DrafterKind::Recycling) {
                    b.recycle_logits(&logits).unwrap();
                }
                if n > 1 {
                    if expected > 0.0 {
                        let ratio = (v.nodes.len() - 1) as f64 / expected;
                        gain = (0.9 * gain + 0.1 * ratio).clamp(0.05, 2.0);
                    }
                } else {
                    gain += (1.0 - gain) * 0.02;
                }
                let mut tokens = v.new_tokens(&tree);
                tokens.truncate(max_new - new);
                let mut done = false;
                if let Some(i) = tokens.iter().position(|t| eos.contains(t)) {
                    tokens.truncate(i + 1);
                    done = true;
                }
                if new + tokens.len() >= max_new {
                    done = true;
                }
                let live = b.settle(&v.nodes, max_dead).unwrap();
                prefix_len += v.nodes.len();
                b.accept(&tokens).unwrap();
                new += tokens.len();
                assert_eq!(step.tokens, tokens);
                assert_eq!(step.drafts_accepted, v.nodes.len() - 1);
                assert_eq!(step.done, done);
                assert_eq!(step.live, live);
                assert_eq!(a.gain().to_bits(), gain.to_bits());
                assert_eq!(a.slots(), b.slots());
                assert_eq!(a.context(), b.context());
                assert_eq!(a.adjacency(), b.adjacency());
                drafted_steps += usize::from(n > 1);
                if done {
                    break;
                }
                tree = b
                    .draft(step_budget(prefix_len), costs.as_deref(), gain)
                    .unwrap()
                    .clone();
                assert_eq!(a.tree(), Some(&tree));
            }
        }
        assert!(drafted_steps > 100, "{drafted_steps}");
        let rec = [(DrafterKind::Recycling, 1.0)];
        let mut s = Speculator::new(vocab, &rec, 3, 4, 6, 3, false).unwrap();
        let bad = |costs: Vec<f64>| StepConfig {
            costs: Some(costs),
            ..StepConfig::default()
        };
        assert!(s.begin(&[1, 2], bad(vec![])).is_err());
        assert!(s.begin(&[1, 2], bad(vec![1.0, f64::NAN])).is_err());
        let neg = StepConfig {
            max_dead: -1.0,
            ..StepConfig::default()
        };
        assert!(s.begin(&[1, 2], neg).is_err());
        assert!(s.begin(&[], StepConfig::default()).is_err());
        s.begin(&[1, 2], StepConfig::default()).unwrap();
        assert!(s.step_greedy(&[0.0; 3], 5).is_err());
    }

    #[test]
    fn bad_configurations_are_errors() {
        let rec = [(DrafterKind::Recycling, 1.0)];
        assert!(Speculator::new(16, &[], 4, 4, 8, 4, false).is_err());
        assert!(Speculator::new(16, &[(DrafterKind::Lookup, 0.0)], 4, 4, 8, 4, false).is_err());
        assert!(Speculator::new(16, &[(DrafterKind::Lookup, 1.0)], 4, 4, 8, 4, true).is_err());
        assert!(Speculator::new(0, &rec, 4, 4, 8, 4, false).is_err());
        assert!(Speculator::new(16, &rec, 4, 0, 8, 4, false).is_err());
        assert!(DrafterKind::parse("medusa").is_err());
        let mut s = Speculator::new(16, &rec, 4, 4, 8, 4, true).unwrap();
        assert!(s.start(&[]).is_err());
        s.start(&[3]).unwrap();
        assert_eq!(s.draft(8, None, 1.0).unwrap().len(), 1);
    }
}
