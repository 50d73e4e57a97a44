//! Bindings of `tokenmill_core::speculative`: one `Speculator` per decoding session (kept by
//! `tokenmill.speculative`, which drives the model). Arrays cross as numpy: ids as int64 (what
//! torch's argmax/topk give), probabilities as float32, uniforms as float64.

use std::sync::Mutex;

use numpy::ndarray::Array2;
use numpy::{
    PyArray1, PyArray2, PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods, ToPyArray,
};
use pyo3::prelude::*;
use tokenmill_core::speculative::{self as core, DrafterKind, Verified};
use tokenmill_core::{Error, Rank};

use crate::errors;
use crate::{ids_array, mask_array};

fn ids_from_i64(a: impl IntoIterator<Item = i64>, what: &str) -> PyResult<Vec<Rank>> {
    a.into_iter()
        .map(|x| {
            Rank::try_from(x).map_err(|_| {
                errors::to_py(Error::InvalidArgument(format!(
                    "{what}: token id {x} is not a valid id"
                )))
            })
        })
        .collect()
}

type Tree<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<bool>>,
    Bound<'py, PyArray1<f32>>,
);

type AdjacencyArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// A forward's inputs: input ids (1, n), position ids (1, n), the additive mask
/// (1, 1, n, prefix_len + n) in float32 or float64 (None when plain causal attention serves),
/// and the sum of the drafts' scores (the expected number of accepted drafts).
type ForwardInputs<'py> = (
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<i64>>,
    Option<Bound<'py, PyUntypedArray>>,
    f64,
);

enum Mask {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A forward's inputs in Rust: ids, position ids, mask, expected accepted drafts.
type InputParts = (Vec<i64>, Vec<i64>, Option<Mask>, f64);

/// What `forward_inputs` computes without the GIL: ids, positions, the mask buffer, the drafts'
/// expected acceptance. No mask for a lone root without a window: one query at the end of the
/// sequence is what plain causal attention computes.
/// After a cache of `prefix_len` live slots, or of `slots` (see `Speculator::settle`).
fn inputs_of(
    tree: &core::DraftTree,
    prefix: Result<&[u32], usize>,
    window: Option<usize>,
    fill: f64,
    float64: bool,
) -> InputParts {
    let (live, dead) = match prefix {
        Ok(slots) => {
            let live = slots
                .iter()
                .filter(|&&p| p != core::tree::DEAD_SLOT)
                .count();
            (live, slots.len() - live)
        }
        Err(prefix_len) => (prefix_len, 0),
    };
    let ids = tree.tokens.iter().map(|&x| i64::from(x)).collect();
    let pos = tree
        .depths
        .iter()
        .map(|&d| (live + d as usize) as i64)
        .collect();
    fn build<T: Copy>(
        tree: &core::DraftTree,
        prefix: Result<&[u32], usize>,
        window: Option<usize>,
        blocked: T,
        zero: T,
    ) -> Vec<T> {
        let mut m = Vec::new();
        match prefix {
            Ok(slots) => tree.additive_mask_slots(slots, window, zero, blocked, &mut m),
            Err(len) => tree.additive_mask(len, window, zero, blocked, &mut m),
        }
        m
    }
    let mask = if tree.len() == 1 && window.is_none() && dead == 0 {
        None
    } else if float64 {
        Some(Mask::F64(build(tree, prefix, window, fill, 0.0)))
    } else {
        Some(Mask::F32(build(tree, prefix, window, fill as f32, 0.0)))
    };
    let expected = tree.expected_tokens(tree.len()) - 1.0;
    (ids, pos, mask, expected)
}

fn inputs_to_py<'py>(
    py: Python<'py>,
    (ids, pos, mask, expected): InputParts,
    prefix_len: usize,
) -> PyResult<ForwardInputs<'py>> {
    // `prefix_len`: cache slots, live or dead (the mask's key columns before the tree's).
    let n = ids.len();
    let shape = (1, 1, n, prefix_len + n);
    let mask = match mask {
        None => None,
        Some(Mask::F32(m)) => Some(mask_array(py, shape, m)?),
        Some(Mask::F64(m)) => Some(mask_array(py, shape, m)?),
    };
    Ok((ids_array(py, ids)?, ids_array(py, pos)?, mask, expected))
}

fn verified(v: &Verified, tree: &core::DraftTree) -> (Vec<usize>, Vec<Rank>) {
    (v.nodes.clone(), v.new_tokens(tree))
}

/// Runs `f` on a numpy array's buffer without copying it (torch hands its logits over through
/// `Tensor.numpy()`, which shares memory). Unlike `crate::run`, the GIL stays held: released,
/// another Python thread could write the tensor while Rust reads it. The work is a fraction of
/// a millisecond, so holding it costs nothing. Panics become `RuntimeError`s, as in `run`.
fn on_buffer<T, D, R>(
    a: &PyReadonlyArray<'_, T, D>,
    f: impl FnOnce(&[T]) -> tokenmill_core::Result<R>,
) -> PyResult<R>
where
    T: numpy::Element + Clone,
    D: numpy::ndarray::Dimension,
{
    let view = a.as_array();
    let owned;
    let data = match view.as_slice() {
        Some(s) => s,
        None => {
            // Not C-contiguous (a strided view): one copy.
            owned = view.iter().cloned().collect::<Vec<T>>();
            &owned
        }
    };
    catch(|| f(data))
}

/// Runs `f` with the GIL held, its panics and errors as Python exceptions.
fn catch<R>(f: impl FnOnce() -> tokenmill_core::Result<R>) -> PyResult<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(errors::to_py),
        Err(panic) => Err(errors::internal(panic)),
    }
}

fn bad_logits(what: String) -> PyErr {
    errors::to_py(Error::InvalidArgument(format!(
        "logits must be a float32 numpy array or a contiguous float32 CPU torch tensor: {what}"
    )))
}

/// Runs `f` on the values of `logits`, a float32 numpy array (as `on_buffer`) or torch tensor,
/// read in place. A tensor is read through its own accessors (`data_ptr`, `numel` and the
/// checks that make them safe to use: CPU, float32, contiguous); the float32 dtype object is
/// recognised by name once, then by identity.
fn on_logits<R>(
    logits: &Bound<'_, PyAny>,
    f: impl FnOnce(&[f32]) -> tokenmill_core::Result<R>,
) -> PyResult<R> {
    use pyo3::intern;
    use std::sync::OnceLock;
    static FLOAT32: OnceLock<Py<PyAny>> = OnceLock::new();
    if let Ok(a) = logits.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        return on_buffer(&a, f);
    }
    let py = logits.py();
    if !logits.hasattr(intern!(py, "data_ptr"))? {
        return Err(bad_logits(format!("got {}", logits.get_type().name()?)));
    }
    if !logits.getattr(intern!(py, "is_cpu"))?.extract::<bool>()? {
        return Err(bad_logits("the tensor is not on the CPU".into()));
    }
    let dtype = logits.getattr(intern!(py, "dtype"))?;
    if !FLOAT32.get().is_some_and(|d| d.bind(py).is(&dtype)) {
        let name = dtype.str()?.to_string();
        if name != "torch.float32" {
            return Err(bad_logits(format!("the tensor's dtype is {name}")));
        }
        let _ = FLOAT32.set(dtype.unbind());
    }
    if !logits
        .call_method0(intern!(py, "is_contiguous"))?
        .extract::<bool>()?
    {
        return Err(bad_logits("the tensor is not contiguous".into()));
    }
    let len: usize = logits.call_method0(intern!(py, "numel"))?.extract()?;
    let ptr = logits
        .call_method0(intern!(py, "data_ptr"))?
        .extract::<usize>()? as *const f32;
    let values = if len == 0 {
        &[][..]
    } else {
        if ptr.is_null() || ptr.align_offset(std::mem::align_of::<f32>()) != 0 {
            return Err(bad_logits("the tensor's data is not aligned".into()));
        }
        // SAFETY: a contiguous float32 CPU tensor's `data_ptr` addresses its `numel` values,
        // which stay alive while `logits` is borrowed; with the GIL held no Python code can
        // write to them during `f`.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    };
    catch(|| f(values))
}

fn check_window(window: Option<usize>) -> PyResult<()> {
    if window == Some(0) {
        return Err(errors::to_py(Error::InvalidArgument(
            "a sliding window must be at least 1".into(),
        )));
    }
    Ok(())
}

/// The forward inputs of the session's current tree in its cache layout (as `inputs_of`),
/// and the cache length.
fn session_inputs(
    s: &core::Speculator,
    window: Option<usize>,
    fill: f64,
    float64: bool,
) -> tokenmill_core::Result<(InputParts, usize)> {
    let t = s
        .tree()
        .ok_or_else(|| Error::InvalidArgument("no draft tree: call draft() first".into()))?;
    Ok((
        inputs_of(t, Ok(s.slots()), window, fill, float64),
        s.slots().len(),
    ))
}

/// How the fused steps build a forward's mask (`Speculator.begin`).
#[derive(Debug, Clone, Copy)]
struct MaskOpts {
    window: Option<usize>,
    fill: f64,
    float64: bool,
}

/// (new tokens, drafts accepted, done, live slots to gather to or None, the next forward's
/// inputs or None when done, seconds verifying, seconds drafting).
type StepResult<'py> = (
    Vec<Rank>,
    usize,
    bool,
    Option<Bound<'py, PyArray1<i64>>>,
    Option<ForwardInputs<'py>>,
    f64,
    f64,
);

/// Drafting and verification state of one decoding session (plus the adjacency matrix and
/// tri-gram table, which persist across sessions).
#[pyclass(module = "tokenmill._core", frozen)]
pub struct Speculator {
    inner: Mutex<core::Speculator>,
    /// Mask settings of the session `begin` started (None before).
    mask: Mutex<Option<MaskOpts>>,
}

impl Speculator {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, core::Speculator>> {
        self.inner.try_lock().map_err(|_| {
            pyo3::exceptions::PyRuntimeError::new_err("this speculator is busy in another thread")
        })
    }
}

#[pymethods]
impl Speculator {
    #[new]
    #[pyo3(signature = (vocab_size, drafters, k=8, max_ngram=8, max_depth=12, max_children=8, static_tree=false))]
    fn new(
        vocab_size: usize,
        drafters: Vec<(String, f32)>,
        k: usize,
        max_ngram: usize,
        max_depth: u32,
        max_children: usize,
        static_tree: bool,
    ) -> PyResult<Self> {
        let kinds = drafters
            .iter()
            .map(|(name, w)| Ok((DrafterKind::parse(name)?, *w)))
            .collect::<tokenmill_core::Result<Vec<_>>>()
            .map_err(errors::to_py)?;
        let inner = core::Speculator::new(
            vocab_size,
            &kinds,
            k,
            max_ngram,
            max_depth,
            max_children,
            static_tree,
        )
        .map_err(errors::to_py)?;
        Ok(Speculator {
            inner: Mutex::new(inner),
            mask: Mutex::new(None),
        })
    }

    #[getter]
    fn vocab_size(&self) -> PyResult<usize> {
        Ok(self.lock()?.vocab())
    }

    /// Prompt and generated tokens so far.
    #[getter]
    fn context(&self) -> PyResult<Vec<Rank>> {
        Ok(self.lock()?.context().to_vec())
    }

    fn start(&self, py: Python<'_>, prompt: PyReadonlyArray1<'_, i64>) -> PyResult<()> {
        let prompt = ids_from_i64(prompt.as_array().iter().copied(), "prompt")?;
        let mut guard = self.lock()?;
        let s = &mut *guard;
        crate::run(py, || s.start(&prompt))
    }

    fn accept(&self, py: Python<'_>, tokens: Vec<i64>) -> PyResult<()> {
        let tokens = ids_from_i64(tokens, "accept")?;
        let mut guard = self.lock()?;
        let s = &mut *guard;
        crate::run(py, || s.accept(&tokens))
    }

    /// Builds the step's tree: (tokens, parents (root: -1), depths, ancestor mask n x n,
    /// scores). With `costs`, cut to the size with the best expected tokens per time.
    #[pyo3(signature = (budget, costs=None, gain=1.0))]
    fn draft<'py>(
        &self,
        py: Python<'py>,
        budget: usize,
        costs: Option<PyReadonlyArray1<'py, f64>>,
        gain: f64,
    ) -> PyResult<Tree<'py>> {
        let costs: Option<Vec<f64>> = costs.map(|c| c.as_array().to_vec());
        let mut guard = self.lock()?;
        let s = &mut *guard;
        let (tokens, parents, depths, mask, scores) = crate::run(py, || {
            let t = s.draft(budget, costs.as_deref(), gain)?;
            let n = t.len();
            let tokens: Vec<i64> = t.tokens.iter().map(|&x| i64::from(x)).collect();
            let parents: Vec<i64> = t
                .parents
                .iter()
                .map(|&p| {
                    if p == core::tree::NO_PARENT {
                        -1
                    } else {
                        p as i64
                    }
                })
                .collect();
            let depths: Vec<i64> = t.depths.iter().map(|&d| i64::from(d)).collect();
            let mask = Array2::from_shape_vec((n, n), t.ancestor_mask())
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            Ok((tokens, parents, depths, mask, t.scores.clone()))
        })?;
        Ok((
            PyArray1::from_vec(py, tokens),
            PyArray1::from_vec(py, parents),
            PyArray1::from_vec(py, depths),
            mask.to_pyarray(py),
            PyArray1::from_vec(py, scores),
        ))
    }

    /// Drafts this step's tree (as `draft`) and returns what its forward after the session's
    /// cache (see `settle`; `start` counts the prompt but its last token) takes: (input ids
    /// (1, n), position ids (1, n): the live cache length plus the depth, the additive mask
    /// (1, 1, n, cache slots + n) holding 0 where a node may attend and `fill` elsewhere,
    /// float64 if `float64` else float32 (None when plain causal attention serves: a lone root,
    /// no window, no dead slots), the sum of the drafts' scores).
    #[pyo3(signature = (budget, costs=None, gain=1.0, *, window=None, fill, float64=false))]
    #[allow(clippy::too_many_arguments)]
    fn draft_inputs<'py>(
        &self,
        py: Python<'py>,
        budget: usize,
        costs: Option<PyReadonlyArray1<'py, f64>>,
        gain: f64,
        window: Option<usize>,
        fill: f64,
        float64: bool,
    ) -> PyResult<ForwardInputs<'py>> {
        check_window(window)?;
        let costs: Option<Vec<f64>> = costs.map(|c| c.as_array().to_vec());
        let mut guard = self.lock()?;
        let s = &mut *guard;
        let (parts, slots) = crate::run(py, || {
            s.draft(budget, costs.as_deref(), gain)?;
            session_inputs(s, window, fill, float64)
        })?;
        inputs_to_py(py, parts, slots)
    }

    /// Starts a session of fused greedy steps on `prompt` (as `start`) and drafts its first
    /// tree: returns that forward's inputs (as `draft_inputs`). The settings hold for the
    /// session: `budget` drafts per step at most, `costs` (forward cost curve, as in `draft`),
    /// `max_pos` (learned positions: trees stay below), `eos` (ids that end the generation),
    /// `max_dead` (as in `settle`), and the mask's `window`, `fill` and `float64`.
    #[pyo3(signature = (prompt, *, budget, costs=None, max_pos=None, eos=Vec::new(), max_dead, window=None, fill, float64=false))]
    #[allow(clippy::too_many_arguments)]
    fn begin<'py>(
        &self,
        py: Python<'py>,
        prompt: PyReadonlyArray1<'py, i64>,
        budget: usize,
        costs: Option<PyReadonlyArray1<'py, f64>>,
        max_pos: Option<usize>,
        eos: Vec<i64>,
        max_dead: f64,
        window: Option<usize>,
        fill: f64,
        float64: bool,
    ) -> PyResult<ForwardInputs<'py>> {
        check_window(window)?;
        let prompt = ids_from_i64(prompt.as_array().iter().copied(), "prompt")?;
        // An id no token can have never ends the generation.
        let eos = eos
            .into_iter()
            .filter_map(|x| Rank::try_from(x).ok())
            .collect();
        let config = core::StepConfig {
            budget,
            max_pos,
            costs: costs.map(|c| c.as_array().to_vec()),
            eos,
            max_dead,
        };
        let opts = MaskOpts {
            window,
            fill,
            float64,
        };
        let mut guard = self.lock()?;
        let s = &mut *guard;
        let (parts, slots) = crate::run(py, || {
            s.begin(&prompt, config)?;
            session_inputs(s, window, fill, float64)
        })?;
        *self.mask.lock().unwrap_or_else(|e| e.into_inner()) = Some(opts);
        inputs_to_py(py, parts, slots)
    }

    /// One fused greedy step of the session `begin` started, after the current tree's forward:
    /// `logits` (float32, n x vocab or the model's own 1 x n x vocab, so that no indexing is
    /// needed in Python; read in place) -> verification, Token Recycling's update,
    /// the score calibration, the cut at EOS and at `remaining` new tokens, `settle`, `accept`
    /// and, unless the generation is over, the next tree. Returns (new tokens, drafts
    /// accepted, done, live slots to gather every layer to or None, the next forward's inputs
    /// or None when done, seconds verifying, seconds drafting).
    ///
    /// `logits`: a float32 numpy array or a contiguous float32 CPU torch tensor (the model's
    /// output as it is: `Tensor.numpy()` costs 15-25 us between two forwards, the tensor's own
    /// accessors a third of that).
    fn step_greedy<'py>(
        &self,
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
        remaining: usize,
    ) -> PyResult<StepResult<'py>> {
        let opts = (*self.mask.lock().unwrap_or_else(|e| e.into_inner())).ok_or_else(|| {
            errors::to_py(Error::InvalidArgument(
                "no session: call begin() first".into(),
            ))
        })?;
        let mut guard = self.lock()?;
        let s = &mut *guard;
        let (step, next) = on_logits(logits, |l| {
            let step = s.step_greedy(l, remaining)?;
            let next = if step.done {
                None
            } else {
                Some(session_inputs(s, opts.window, opts.fill, opts.float64)?)
            };
            Ok((step, next))
        })?;
        let next = match next {
            Some((parts, slots)) => Some(inputs_to_py(py, parts, slots)?),
            None => None,
        };
        let live = step
            .live
            .map(|v| PyArray1::from_vec(py, v.into_iter().map(|k| k as i64).collect()));
        Ok((
            step.tokens,
            step.drafts_accepted,
            step.done,
            live,
            next,
            step.verify_secs,
            step.draft_secs,
        ))
    }

    /// Records the forward of the current tree in the session's cache layout, `nodes` (the
    /// accepted path) kept and the rest left in the cache but masked out; returns None, or,
    /// once dead slots exceed the fraction `max_dead` of the cache, the live slots (int64) to
    /// gather every layer to.
    fn settle<'py>(
        &self,
        py: Python<'py>,
        nodes: Vec<usize>,
        max_dead: f64,
    ) -> PyResult<Option<Bound<'py, PyArray1<i64>>>> {
        let live = self
            .lock()?
            .settle(&nodes, max_dead)
            .map_err(errors::to_py)?;
        Ok(live.map(|v| PyArray1::from_vec(py, v.into_iter().map(|k| k as i64).collect())))
    }

    /// `draft_inputs` for the current tree (set by `set_tree` or the last draft).
    #[pyo3(signature = (*, prefix_len, window=None, fill, float64=false))]
    fn tree_inputs<'py>(
        &self,
        py: Python<'py>,
        prefix_len: usize,
        window: Option<usize>,
        fill: f64,
        float64: bool,
    ) -> PyResult<ForwardInputs<'py>> {
        check_window(window)?;
        let guard = self.lock()?;
        let tree = guard.tree().ok_or_else(|| {
            errors::to_py(Error::InvalidArgument(
                "no draft tree: call draft() first".into(),
            ))
        })?;
        let parts = inputs_of(tree, Err(prefix_len), window, fill, float64);
        inputs_to_py(py, parts, prefix_len)
    }

    /// Sets the current tree from `tokens` and `parents` (root first, its parent ignored; every
    /// parent before its children; siblings distinct) instead of drafting it.
    fn set_tree(
        &self,
        tokens: PyReadonlyArray1<'_, i64>,
        parents: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let tokens = ids_from_i64(tokens.as_array().iter().copied(), "set_tree")?;
        let parents = parents.as_array().to_vec();
        let tree = core::DraftTree::from_parents(&tokens, &parents).map_err(errors::to_py)?;
        self.lock()?.set_tree(tree).map_err(errors::to_py)
    }

    /// Token Recycling's update: the rows of the tree's tokens become the target's top-k
    /// (`ids`, `probs`: n x width) at their nodes.
    fn update_adjacency(
        &self,
        py: Python<'_>,
        ids: PyReadonlyArray2<'_, i64>,
        probs: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<()> {
        let width = ids.shape()[1];
        let ids = ids_from_i64(ids.as_array().iter().copied(), "update_adjacency")?;
        let probs: Vec<f32> = probs.as_array().iter().copied().collect();
        let mut guard = self.lock()?;
        let s = &mut *guard;
        crate::run(py, || s.update_adjacency(&ids, &probs, width))
    }

    /// (accepted node indices from the root, new tokens = accepted drafts + bonus).
    fn verify_greedy(
        &self,
        py: Python<'_>,
        argmax: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<(Vec<usize>, Vec<Rank>)> {
        let argmax = ids_from_i64(argmax.as_array().iter().copied(), "verify_greedy")?;
        let guard = self.lock()?;
        let s = &*guard;
        crate::run(py, || {
            let v = s.verify_greedy(&argmax)?;
            Ok(verified(&v, s.tree().expect("verified a tree")))
        })
    }

    /// Greedy verification from the target's float32 logits (n x vocab, e.g. `tensor.numpy()`,
    /// read in place): (accepted node indices from the root, new tokens). The argmax follows
    /// torch's rule (first maximum; a NaN counts as the largest) at the nodes the walk reaches.
    fn verify_greedy_logits(
        &self,
        logits: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<(Vec<usize>, Vec<Rank>)> {
        let guard = self.lock()?;
        let s = &*guard;
        on_buffer(&logits, |l| {
            let v = s.verify_greedy_logits(l)?;
            let tree = s.tree().ok_or_else(|| {
                Error::InvalidArgument("no draft tree: call draft() first".into())
            })?;
            Ok(verified(&v, tree))
        })
    }

    /// Token Recycling's update from the target's raw float32 logits (n x vocab, read in
    /// place): every tree token's row becomes the top-k (with softmax probabilities) at its
    /// last node.
    fn recycle_logits(&self, logits: PyReadonlyArray2<'_, f32>) -> PyResult<()> {
        let mut guard = self.lock()?;
        let s = &mut *guard;
        on_buffer(&logits, |l| s.recycle_logits(l))
    }

    /// Lossless sampling verification; `probs`: n x vocab processed target distributions,
    /// `uniforms`: at least n + 1 draws from U[0, 1).
    fn verify_sample(
        &self,
        probs: PyReadonlyArray2<'_, f32>,
        uniforms: PyReadonlyArray1<'_, f64>,
    ) -> PyResult<(Vec<usize>, Vec<Rank>)> {
        let guard = self.lock()?;
        let s = &*guard;
        if probs.shape()[1] != s.vocab() {
            return Err(errors::to_py(Error::InvalidArgument(format!(
                "probabilities have {} columns, the vocabulary has {} tokens",
                probs.shape()[1],
                s.vocab()
            ))));
        }
        let uniforms = uniforms.as_array().to_vec();
        // The probabilities are read in place (n x vocab floats; copying them cost more than
        // the verification itself).
        on_buffer(&probs, |p| {
            let v = s.verify_sample(p, &uniforms)?;
            Ok(verified(&v, s.tree().expect("verified a tree")))
        })
    }

    /// The adjacency matrix: (ids vocab x k, -1 for empty slots; probs vocab x k).
    fn adjacency<'py>(&self, py: Python<'py>) -> PyResult<AdjacencyArrays<'py>> {
        let s = self.lock()?;
        let a = s.adjacency();
        let ids: Vec<i64> = a
            .ids()
            .iter()
            .map(|&t| {
                if t == core::drafters::EMPTY {
                    -1
                } else {
                    i64::from(t)
                }
            })
            .collect();
        let shape = (a.vocab(), a.k());
        let ids = Array2::from_shape_vec(shape, ids).expect("vocab x k");
        let probs = Array2::from_shape_vec(shape, a.probs().to_vec()).expect("vocab x k");
        Ok((ids.to_pyarray(py), probs.to_pyarray(py)))
    }

    fn set_adjacency(
        &self,
        ids: PyReadonlyArray2<'_, i64>,
        probs: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<()> {
        let (vocab, k) = (ids.shape()[0], ids.shape()[1]);
        let ids = ids
            .as_array()
            .iter()
            .map(|&x| {
                if x == -1 {
                    Ok(core::drafters::EMPTY)
                } else {
                    ids_from_i64([x], "set_adjacency").map(|v| v[0])
                }
            })
            .collect::<PyResult<Vec<Rank>>>()?;
        let probs: Vec<f32> = probs.as_array().iter().copied().collect();
        let adj = core::Adjacency::from_parts(vocab, k, ids, probs).map_err(errors::to_py)?;
        self.lock()?.set_adjacency(adj).map_err(errors::to_py)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Speculator>()?;
    Ok(())
}
