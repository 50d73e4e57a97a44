//! Bindings of `tokenmill_core::bytelm`: the tokenizer side of byte-level inference. The model
//! runs in Python (`tokenmill.bytelm`), which hands next-token log-probabilities back here.

use std::sync::Arc;

use numpy::ndarray::{Array2, Dimension, Ix1, Ix2};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokenmill_core::bytelm::{
    log_softmax_rows, row_norms as core_row_norms, ByteLm, Norm, Row, Tree, Values,
};
use tokenmill_core::{Error, Rank};

use crate::encoding::CoreBpe;
use crate::{ids_array, mask_array, run, shape_error};

#[pyclass(module = "tokenmill._core", frozen, name = "ByteLmCore")]
pub struct ByteLmCore {
    inner: Arc<ByteLm>,
}

/// (token ids, position ids, additive mask) of one forward, see `CoveringTree::batch`.
type ForwardInputs<'py> = (
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyUntypedArray>,
);

/// The covering tree of one byte prefix.
#[pyclass(module = "tokenmill._core", frozen, name = "CoveringTree")]
pub struct CoveringTree {
    inner: Tree,
}

#[pymethods]
impl CoveringTree {
    #[getter]
    fn sigma(&self) -> usize {
        self.inner.sigma
    }
    #[getter]
    fn trunk(&self) -> Vec<Rank> {
        self.inner.trunk.clone()
    }
    #[getter]
    fn nodes(&self) -> Vec<Vec<Rank>> {
        self.inner.nodes.clone()
    }
    #[getter]
    fn parents(&self) -> Vec<i64> {
        self.inner
            .parents
            .iter()
            .map(|&p| if p == usize::MAX { -1 } else { p as i64 })
            .collect()
    }
    #[getter]
    fn ends(&self) -> Vec<usize> {
        self.inner.ends.clone()
    }
    fn __len__(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Model inputs of one forward over `chain` (uncached trunk tokens after `past` cached
    /// ones) and the nodes: (token ids (1, n), position ids (1, n), the additive attention
    /// mask (1, 1, n, past + n): 0 where a token may attend, `fill` elsewhere; float64 if
    /// `float64`, else float32). The arrays own the buffers Rust wrote (no copy), which
    /// `torch.from_numpy` then shares.
    #[pyo3(signature = (chain, past, *, fill, float64=false))]
    fn batch<'py>(
        &self,
        py: Python<'py>,
        chain: Vec<Rank>,
        past: usize,
        fill: f64,
        float64: bool,
    ) -> PyResult<ForwardInputs<'py>> {
        let tree = &self.inner;
        let n = chain.len() + tree.nodes.len() - 1;
        let shape = (1, 1, n, past + n);
        let (ids, positions, mask) = if float64 {
            let (ids, positions, m) = tree.batch(&chain, past, 0.0, fill);
            (ids, positions, mask_array(py, shape, m)?)
        } else {
            let (ids, positions, m) = tree.batch(&chain, past, 0.0f32, fill as f32);
            (ids, positions, mask_array(py, shape, m)?)
        };
        let ids = ids.into_iter().map(i64::from).collect();
        let positions = positions.into_iter().map(|p| p as i64).collect();
        Ok((ids_array(py, ids)?, ids_array(py, positions)?, mask))
    }
}

fn bad(what: String) -> PyErr {
    crate::errors::to_py(Error::InvalidArgument(what))
}

/// A float32 or float64 numpy array of model outputs, borrowed read-only.
enum Floats<'py, D: Dimension> {
    F32(PyReadonlyArray<'py, f32, D>),
    F64(PyReadonlyArray<'py, f64, D>),
}

impl<'py, D: Dimension> Floats<'py, D> {
    fn extract(a: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(x) = a.extract::<PyReadonlyArray<'py, f32, D>>() {
            return Ok(Floats::F32(x));
        }
        if let Ok(x) = a.extract::<PyReadonlyArray<'py, f64, D>>() {
            return Ok(Floats::F64(x));
        }
        let dims = D::NDIM.map_or(String::new(), |n| format!("{n}-d "));
        Err(bad(format!(
            "{what} must be a {dims}float32 or float64 numpy array, got {}",
            a.repr()?
        )))
    }

    fn shape(&self) -> &[usize] {
        match self {
            Floats::F32(a) => a.shape(),
            Floats::F64(a) => a.shape(),
        }
    }

    /// The values in place (C order).
    fn values(&self, what: &str) -> PyResult<Values<'_>> {
        let contiguous = |_| bad(format!("{what} must be a C-contiguous array"));
        Ok(match self {
            Floats::F32(a) => Values::F32(a.as_slice().map_err(contiguous)?),
            Floats::F64(a) => Values::F64(a.as_slice().map_err(contiguous)?),
        })
    }
}

/// `log_softmax(logits / temperature)` of each row of a float32 or float64 (n, vocab) array,
/// in float64: the model's next-token log-probabilities, computed in Rust (see the core's
/// `bytelm::softmax`).
#[pyfunction]
#[pyo3(signature = (logits, temperature=1.0))]
fn log_softmax<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    temperature: f64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(bad(format!(
            "temperature must be a positive finite number, got {temperature}"
        )));
    }
    let a = Floats::<Ix2>::extract(logits, "logits")?;
    let (n, cols) = (a.shape()[0], a.shape()[1]);
    let values = a.values("logits")?;
    let out = run(py, || {
        let mut out = vec![0.0; n * cols];
        match values {
            Values::F32(z) => log_softmax_rows(z, cols, temperature, &mut out),
            Values::F64(z) => log_softmax_rows(z, cols, temperature, &mut out),
        }
        Ok(out)
    })?;
    Ok(Array2::from_shape_vec((n, cols), out)
        .map_err(shape_error)?
        .into_pyarray(py))
}

/// The normaliser of each row of a float32 or float64 (n, vocab) logits array, as an (n, 2)
/// float64 array of (max, log_sum): log P(t) = (logit - max) - log_sum, what `log_softmax`
/// writes out, for `marginalize_rows` to apply to the logits in place.
#[pyfunction]
fn row_norms<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let a = Floats::<Ix2>::extract(logits, "logits")?;
    let (n, cols) = (a.shape()[0], a.shape()[1]);
    if cols == 0 && n > 0 {
        return Err(bad("logits rows must not be empty (no vocabulary)".into()));
    }
    let values = a.values("logits")?;
    let norms = run(py, || {
        Ok(match values {
            Values::F32(z) => core_row_norms(z, cols),
            Values::F64(z) => core_row_norms(z, cols),
        })
    })?;
    let flat = norms.iter().flat_map(|m| [m.max, m.log_sum]).collect();
    Ok(Array2::from_shape_vec((n, 2), flat)
        .map_err(shape_error)?
        .into_pyarray(py))
}

#[pymethods]
impl ByteLmCore {
    #[new]
    fn new(py: Python<'_>, encoding: &CoreBpe) -> PyResult<Self> {
        let enc = encoding.inner.clone();
        let inner = run(py, || ByteLm::new(enc))?;
        Ok(ByteLmCore {
            inner: Arc::new(inner),
        })
    }

    #[getter]
    fn max_token_len(&self) -> usize {
        self.inner.vocab().max_len()
    }

    fn canonical(&self, py: Python<'_>, data: &[u8]) -> PyResult<Vec<Rank>> {
        let lm = &self.inner;
        run(py, || lm.canonical(data))
    }

    fn stable_point(&self, py: Python<'_>, data: &[u8]) -> PyResult<usize> {
        let lm = &self.inner;
        run(py, || lm.stable_point(data))
    }

    /// Is `path` a prefix of the canonical encoding of some byte string?
    fn is_valid(&self, py: Python<'_>, path: Vec<Rank>) -> PyResult<bool> {
        let lm = &self.inner;
        run(py, || lm.is_valid(&path))
    }

    fn token_bytes<'py>(&self, py: Python<'py>, id: Rank) -> PyResult<Bound<'py, PyBytes>> {
        let b = self.inner.token_bytes(id).map_err(crate::errors::to_py)?;
        Ok(PyBytes::new(py, b))
    }

    fn tree(&self, py: Python<'_>, data: &[u8]) -> PyResult<CoveringTree> {
        let lm = &self.inner;
        let inner = run(py, || lm.tree(data))?;
        Ok(CoveringTree { inner })
    }

    /// Test hook: (pairs compared, pairs the plain test finds invalid, disagreements) between
    /// the validity shortcuts and the plain test over the (node, token) pairs that
    /// marginalising `data` meets (only the tokens without a lookahead key, which end inside
    /// a character, if `keyless_only`).
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (data, keyless_only=false))]
    fn shortcut_disagreements(
        &self,
        py: Python<'_>,
        data: &[u8],
        keyless_only: bool,
    ) -> PyResult<(usize, usize, Vec<(Vec<Rank>, Rank, bool, bool)>)> {
        let lm = &self.inner;
        run(py, || lm.shortcut_disagreements(data, keyless_only))
    }

    /// Returns (log masses of the 257 bins, log P(prefix)); see `Marginal` in the core.
    #[pyo3(signature = (data, tree, node_logp, next_logp, eos))]
    fn marginalize<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        tree: &CoveringTree,
        node_logp: PyReadonlyArray1<'py, f64>,
        next_logp: PyReadonlyArray2<'py, f64>,
        eos: Option<Rank>,
    ) -> PyResult<(Bound<'py, PyArray1<f64>>, f64)> {
        let (node_logp, next, n_cols) = log_prob_slices(&node_logp, &next_logp)?;
        let lm = &self.inner;
        let tree = &tree.inner;
        let m = run(py, || {
            lm.marginalize(data, tree, node_logp, next, n_cols, eos)
        })?;
        Ok((PyArray1::from_vec(py, m.log_bins), m.log_prefix))
    }

    /// `marginalize` from one forward's rows: node `i`'s next-token row is
    /// `rows[first_row + i]`, or `tip` where `first_row + i < 0`; path log-probabilities
    /// follow from `trunk_logp` (the root's) and the rows. Rows are float64 log-probabilities,
    /// or float32/float64 logits with their `norms` (`row_norms`; `tip_norm` for the tip),
    /// read in place. Returns (bins, log P(prefix), the bins normalised, the log of their
    /// total): the normalisation here saves the caller four numpy calls per byte.
    #[pyo3(signature = (data, tree, trunk_logp, rows, first_row, tip, eos, *, norms=None, tip_norm=None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn marginalize_rows<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        tree: &CoveringTree,
        trunk_logp: f64,
        rows: &Bound<'py, PyAny>,
        first_row: i64,
        tip: Option<&Bound<'py, PyAny>>,
        eos: Option<Rank>,
        norms: Option<PyReadonlyArray2<'py, f64>>,
        tip_norm: Option<(f64, f64)>,
    ) -> PyResult<(
        Bound<'py, PyArray1<f64>>,
        f64,
        Bound<'py, PyArray1<f64>>,
        f64,
    )> {
        let (rows, tip) = (Floats::extract(rows, "rows")?, tip_floats(tip)?);
        let slices = node_rows(&tree.inner, &rows, norms, first_row, tip.as_ref(), tip_norm)?;
        let lm = &self.inner;
        let tree = &tree.inner;
        let (m, log_total) = run(py, || {
            let node_logp = tree.path_logps(trunk_logp, &slices);
            let m = lm.marginalize_rows(data, tree, &node_logp, &slices, eos)?;
            let log_total = m.log_total();
            Ok((m, log_total))
        })?;
        let normalised = m.log_bins.iter().map(|&b| b - log_total).collect();
        Ok((
            PyArray1::from_vec(py, m.log_bins),
            m.log_prefix,
            PyArray1::from_vec(py, normalised),
            log_total,
        ))
    }

    /// `covers` from one forward's rows, as in `marginalize_rows`.
    #[pyo3(signature = (data, tree, trunk_logp, rows, first_row, tip, *, norms=None, tip_norm=None))]
    #[allow(clippy::too_many_arguments)]
    fn covers_rows<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        tree: &CoveringTree,
        trunk_logp: f64,
        rows: &Bound<'py, PyAny>,
        first_row: i64,
        tip: Option<&Bound<'py, PyAny>>,
        norms: Option<PyReadonlyArray2<'py, f64>>,
        tip_norm: Option<(f64, f64)>,
    ) -> PyResult<Vec<(usize, Rank, f64)>> {
        let (rows, tip) = (Floats::extract(rows, "rows")?, tip_floats(tip)?);
        let slices = node_rows(&tree.inner, &rows, norms, first_row, tip.as_ref(), tip_norm)?;
        let lm = &self.inner;
        let tree = &tree.inner;
        run(py, || {
            let node_logp = tree.path_logps(trunk_logp, &slices);
            lm.covers_rows(data, tree, &node_logp, &slices)
        })
    }

    /// The valid covers of `data`: (node index, last token, log weight) triples.
    #[pyo3(signature = (data, tree, node_logp, next_logp))]
    fn covers<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        tree: &CoveringTree,
        node_logp: PyReadonlyArray1<'py, f64>,
        next_logp: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Vec<(usize, Rank, f64)>> {
        let (node_logp, next, n_cols) = log_prob_slices(&node_logp, &next_logp)?;
        let lm = &self.inner;
        let tree = &tree.inner;
        run(py, || lm.covers(data, tree, node_logp, next, n_cols))
    }
}

/// The model's log-probabilities as flat slices (node paths; rows of next-token log-probs)
/// and the row length. Both must be C-contiguous: the core reads them in place.
fn log_prob_slices<'a>(
    node_logp: &'a PyReadonlyArray1<'_, f64>,
    next_logp: &'a PyReadonlyArray2<'_, f64>,
) -> PyResult<(&'a [f64], &'a [f64], usize)> {
    let contiguous = |name: &str| {
        crate::errors::to_py(Error::InvalidArgument(format!(
            "{name} must be a C-contiguous float64 array"
        )))
    };
    let nodes = node_logp.as_slice().map_err(|_| contiguous("node_logp"))?;
    let next = next_logp.as_slice().map_err(|_| contiguous("next_logp"))?;
    Ok((nodes, next, next_logp.shape()[1]))
}

fn tip_floats<'py>(tip: Option<&Bound<'py, PyAny>>) -> PyResult<Option<Floats<'py, Ix1>>> {
    tip.map(|t| Floats::extract(t, "tip")).transpose()
}

/// One [`Row`] per node of `tree`: `rows[first_row + i]`, or `tip` where negative, with their
/// norms (none: the values are log-probabilities).
fn node_rows<'a>(
    tree: &Tree,
    rows: &'a Floats<'_, Ix2>,
    norms: Option<PyReadonlyArray2<'_, f64>>,
    first_row: i64,
    tip: Option<&'a Floats<'_, Ix1>>,
    tip_norm: Option<(f64, f64)>,
) -> PyResult<Vec<Row<'a>>> {
    let (n_rows, n_cols) = (rows.shape()[0], rows.shape()[1]);
    let norms: Vec<Norm> = match &norms {
        None => vec![Norm::NONE; n_rows],
        Some(a) => {
            let flat = a
                .as_slice()
                .ok()
                .filter(|_| a.shape() == [n_rows, 2])
                .ok_or_else(|| {
                    bad(format!(
                        "norms must be a C-contiguous ({n_rows}, 2) float64 array"
                    ))
                })?;
            flat.chunks_exact(2)
                .map(|m| Norm {
                    max: m[0],
                    log_sum: m[1],
                })
                .collect()
        }
    };
    let values = rows.values("rows")?;
    let tip = match tip {
        Some(t) => Some(Row {
            values: t.values("tip")?,
            norm: tip_norm.map_or(Norm::NONE, |(max, log_sum)| Norm { max, log_sum }),
        }),
        None => None,
    };
    let row = |r: usize| Row {
        values: match values {
            Values::F32(v) => Values::F32(&v[r * n_cols..(r + 1) * n_cols]),
            Values::F64(v) => Values::F64(&v[r * n_cols..(r + 1) * n_cols]),
        },
        norm: norms[r],
    };
    (0..tree.nodes.len() as i64)
        .map(|i| match (usize::try_from(first_row + i), tip) {
            (Ok(r), _) if r < n_rows => Ok(row(r)),
            (Err(_), Some(t)) => Ok(t),
            _ => Err(bad(
                "first_row points outside rows (or to a missing tip)".into()
            )),
        })
        .collect()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ByteLmCore>()?;
    m.add_class::<CoveringTree>()?;
    m.add_function(wrap_pyfunction!(log_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(row_norms, m)?)
}
