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
        self.suffix.extend(prompt);
        self.trigram.observe(&[], prompt);
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
        self.trigram.observe(self.suffix.tokens(), tokens);
        self.suffix.extend(tokens);
        Ok(())
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
        let (tree, v) = self.logits_rows(logits)?;
        let mut nodes = vec![0];
        let mut cur = 0;
        loop {
            let best = logits::argmax(&logits[cur * v..(cur + 1) * v]) as Rank;
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
            rows.push((t, ids.clone(), probs.clone()));
        }
        for (t, ids, probs) in rows {
            self.adjacency.set_row(t, &ids, &probs)?;
        }
        Ok(())
    }

    pub fn verify_sample(&self, probs: &[f32], uniforms: &[f64]) -> Result<Verified> {
        verify::verify_sample(self.current()?, probs, self.vocab, uniforms)
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
