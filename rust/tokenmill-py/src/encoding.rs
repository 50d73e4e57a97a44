//! `CoreBPE`: the tiktoken-style encoding. The Python class `tokenmill.Encoding` wraps it and
//! holds the policy (argument defaults, surrogate handling, pickling).

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString};
use tokenmill_core::encoding::{par_map, SpecialFilter};
use tokenmill_core::{tiktoken_file, Encoding, Rank};

use crate::{run, run_batch};

#[pyclass(module = "tokenmill._core", frozen, name = "CoreBPE")]
pub struct CoreBpe {
    pub(crate) inner: Encoding,
    /// One Python int per ordinary id (see `ids_to_list`).
    ints: Box<[Py<PyAny>]>,
}

impl CoreBpe {
    pub(crate) fn wrap(py: Python<'_>, inner: Encoding) -> Self {
        // Made up front in id order, which is roughly frequency order for BPE vocabularies,
        // so the ints of common tokens sit together in memory (fewer cache misses on the
        // reference counts). Ordinary ids only: special ids may be anywhere in u32 (tiktoken
        // allows it), and their ints are made when returned.
        let ints = (0..inner.bpe().n_slots() as Rank)
            .map(|id| {
                id.into_pyobject(py)
                    .expect("infallible")
                    .into_any()
                    .unbind()
            })
            .collect();
        CoreBpe { inner, ints }
    }

    /// The ids as a Python list.
    ///
    /// Making one int object per token was about a third of `encode` on code and prose (the
    /// allocation, and in a batch the cache misses of millions of fresh objects). Ids are a
    /// small closed set, so each id's int is made once and shared: a list item costs an
    /// increment of a reference count. Ints are immutable, so sharing them is invisible.
    pub(crate) fn ids_to_list<'py>(
        &self,
        py: Python<'py>,
        ids: &[Rank],
    ) -> PyResult<Bound<'py, PyList>> {
        use pyo3::ffi;
        let len = ffi::Py_ssize_t::try_from(ids.len())
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("too many tokens"))?;
        // SAFETY: the GIL is held; `PyList_New` returns a new list (or NULL with an error set)
        // whose `len` slots are each filled exactly once below with a new (owned) reference,
        // which `PyList_SET_ITEM` steals, before the list is handed to Python.
        unsafe {
            let list = ffi::PyList_New(len);
            if list.is_null() {
                return Err(PyErr::fetch(py));
            }
            for (i, &id) in ids.iter().enumerate() {
                let item = match self.ints.get(id as usize) {
                    Some(int) => int.clone_ref(py).into_ptr(),
                    None => id.into_pyobject(py).expect("infallible").into_ptr(),
                };
                ffi::PyList_SET_ITEM(list, i as ffi::Py_ssize_t, item);
            }
            Ok(Bound::from_owned_ptr(py, list).cast_into_unchecked())
        }
    }
}

fn extract_ranks(ranks: &Bound<'_, PyDict>) -> PyResult<Vec<(Vec<u8>, Rank)>> {
    let mut out = Vec::with_capacity(ranks.len());
    for (k, v) in ranks.iter() {
        let k = k.cast::<PyBytes>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err("mergeable_ranks keys must be bytes")
        })?;
        out.push((k.as_bytes().to_vec(), v.extract::<Rank>()?));
    }
    Ok(out)
}

fn extract_specials(specials: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Rank)>> {
    specials
        .iter()
        .map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<Rank>()?)))
        .collect()
}

/// Token ids from a list (fast path), a uint32 numpy array (no per-element conversion) or any
/// sequence of ints. Negative or too large ids raise OverflowError, as in tiktoken.
fn extract_ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Rank>> {
    if let Ok(list) = obj.cast::<PyList>() {
        return extract_list_ids(list);
    }
    if let Ok(arr) = obj.cast::<PyArray1<Rank>>() {
        return Ok(arr.readonly().as_array().iter().copied().collect());
    }
    obj.extract::<Vec<Rank>>()
}

/// Reading the ints of a list is most of the cost of decoding. Exact `int`s are read through
/// borrowed pointers with one C call each (no reference counting, no type dispatch); anything
/// else (bools, int subclasses, out-of-range values, non-ints) takes the general conversion,
/// so errors are the ones tiktoken users see. The length is re-read every step because the
/// general conversion can run Python code (`__index__`) that changes the list.
fn extract_list_ids(list: &Bound<'_, PyList>) -> PyResult<Vec<Rank>> {
    use pyo3::ffi;
    let ptr = list.as_ptr();
    let mut out = Vec::with_capacity(list.len());
    let mut i: ffi::Py_ssize_t = 0;
    // SAFETY (all blocks below): the GIL is held, `ptr` is a list, and `i` is checked against
    // the current length just before the borrowed item is read.
    while i < unsafe { ffi::PyList_GET_SIZE(ptr) } {
        let item = unsafe { ffi::PyList_GET_ITEM(ptr, i) };
        if unsafe { ffi::PyLong_CheckExact(item) } != 0 {
            if let Ok(id) = Rank::try_from(unsafe { ffi::PyLong_AsLong(item) }) {
                out.push(id);
                i += 1;
                continue;
            }
            // Out of range, or overflow (error set): the general path raises the right error.
            unsafe { ffi::PyErr_Clear() };
        }
        out.push(list.get_item(i as usize)?.extract::<Rank>()?);
        i += 1;
    }
    Ok(out)
}

/// `"all"` or `True` -> All; `None`/`False`/empty -> Nothing; otherwise a collection of names.
fn special_filter(enc: &Encoding, obj: &Bound<'_, PyAny>) -> PyResult<SpecialFilter> {
    if obj.is_none() {
        return Ok(SpecialFilter::Nothing);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(if b.is_true() {
            SpecialFilter::All
        } else {
            SpecialFilter::Nothing
        });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        if s.to_str()? == "all" {
            return Ok(SpecialFilter::All);
        }
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "special-token sets must be \"all\" or a collection of strings",
        ));
    }
    let mut names = Vec::new();
    for item in obj.try_iter()? {
        names.push(item?.extract::<String>()?);
    }
    if names.is_empty() {
        return Ok(SpecialFilter::Nothing);
    }
    Ok(enc.specials().filter(names.iter().map(String::as_str)))
}

/// tiktoken's defaults: `disallowed="all"` means every special token not allowed.
fn filters(
    enc: &Encoding,
    allowed: &Bound<'_, PyAny>,
    disallowed: &Bound<'_, PyAny>,
) -> PyResult<(SpecialFilter, SpecialFilter)> {
    let allowed = special_filter(enc, allowed)?;
    let disallowed = match special_filter(enc, disallowed)? {
        SpecialFilter::All => match &allowed {
            SpecialFilter::All => SpecialFilter::Nothing,
            SpecialFilter::Nothing => SpecialFilter::All,
            SpecialFilter::Only(v) => SpecialFilter::Only(v.iter().map(|b| !b).collect()),
        },
        other => other,
    };
    Ok((allowed, disallowed))
}

type FlatBatch<'py> = (Bound<'py, PyArray1<Rank>>, Bound<'py, PyArray1<i64>>);

fn flat_batch<'py>(
    py: Python<'py>,
    texts: &[PyBackedStr],
    threads: usize,
    f: impl Fn(&str) -> tokenmill_core::Result<Vec<Rank>> + Sync,
) -> PyResult<FlatBatch<'py>> {
    let (ids, offsets) = run(py, || {
        let docs = par_map(texts, threads, |t| f(t));
        let mut offsets = Vec::with_capacity(docs.len() + 1);
        offsets.push(0i64);
        let mut total = 0usize;
        for doc in &docs {
            total += doc.as_ref().map_or(0, Vec::len);
            offsets.push(total as i64);
        }
        let mut ids = Vec::with_capacity(total);
        for doc in docs {
            ids.extend_from_slice(&doc?);
        }
        Ok((ids, offsets))
    })?;
    Ok((PyArray1::from_vec(py, ids), PyArray1::from_vec(py, offsets)))
}

#[pymethods]
impl CoreBpe {
    #[new]
    fn new(
        py: Python<'_>,
        mergeable_ranks: &Bound<'_, PyDict>,
        special_tokens: &Bound<'_, PyDict>,
        pattern: &str,
    ) -> PyResult<Self> {
        let ranks = extract_ranks(mergeable_ranks)?;
        let specials = extract_specials(special_tokens)?;
        let pattern = pattern.to_string();
        let inner = run(py, move || Encoding::new(&pattern, ranks, specials))?;
        Ok(CoreBpe::wrap(py, inner))
    }

    /// Builds an encoding straight from the bytes of a `.tiktoken` file (parsed in Rust).
    #[staticmethod]
    fn from_tiktoken_bytes(
        py: Python<'_>,
        contents: &[u8],
        source_name: &str,
        special_tokens: &Bound<'_, PyDict>,
        pattern: &str,
    ) -> PyResult<Self> {
        let specials = extract_specials(special_tokens)?;
        let inner = run(py, || {
            let ranks = tiktoken_file::parse(contents, source_name)?;
            Encoding::new(pattern, ranks, specials)
        })?;
        Ok(CoreBpe::wrap(py, inner))
    }

    /// Parses a `.tiktoken` file's bytes into a {token bytes: rank} dict.
    #[staticmethod]
    fn parse_tiktoken_bytes<'py>(
        py: Python<'py>,
        contents: &[u8],
        source_name: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ranks = run(py, || tiktoken_file::parse(contents, source_name))?;
        let d = PyDict::new(py);
        for (b, r) in ranks {
            d.set_item(PyBytes::new(py, &b), r)?;
        }
        Ok(d)
    }

    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pattern()
    }

    #[getter]
    fn is_fast(&self) -> bool {
        self.inner.pretokenizer().is_fast()
    }

    #[getter]
    fn n_vocab(&self) -> usize {
        self.inner.n_vocab()
    }

    fn mergeable_ranks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (b, r) in self.inner.bpe().vocab() {
            d.set_item(PyBytes::new(py, b), r)?;
        }
        Ok(d)
    }

    fn special_tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, id) in self.inner.specials().iter() {
            d.set_item(name, id)?;
        }
        Ok(d)
    }

    // ------------------------------------------------------------------ encoding

    fn encode_ordinary<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyList>> {
        let ids = run(py, || self.inner.encode_ordinary(text))?;
        self.ids_to_list(py, &ids)
    }

    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        allowed_special: &Bound<'py, PyAny>,
        disallowed_special: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let (allowed, disallowed) = filters(&self.inner, allowed_special, disallowed_special)?;
        let ids = run(py, || self.inner.encode(text, &allowed, &disallowed))?;
        self.ids_to_list(py, &ids)
    }

    /// Like `encode`, but hands the ids to numpy without a copy.
    fn encode_to_numpy<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        allowed_special: &Bound<'py, PyAny>,
        disallowed_special: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<Rank>>> {
        let (allowed, disallowed) = filters(&self.inner, allowed_special, disallowed_special)?;
        let ids = run(py, || self.inner.encode(text, &allowed, &disallowed))?;
        Ok(PyArray1::from_vec(py, ids))
    }

    #[pyo3(signature = (texts, num_threads))]
    fn encode_ordinary_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        run_batch(
            py,
            &texts,
            num_threads,
            |t| self.inner.encode_ordinary(t),
            |ids| self.ids_to_list(py, &ids),
        )
    }

    #[pyo3(signature = (texts, allowed_special, disallowed_special, num_threads))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        allowed_special: &Bound<'py, PyAny>,
        disallowed_special: &Bound<'py, PyAny>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let (allowed, disallowed) = filters(&self.inner, allowed_special, disallowed_special)?;
        run_batch(
            py,
            &texts,
            num_threads,
            |t| self.inner.encode(t, &allowed, &disallowed),
            |ids| self.ids_to_list(py, &ids),
        )
    }

    /// `encode_ordinary_batch` as one flat uint32 array plus offsets (document `i` is
    /// `ids[offsets[i]:offsets[i + 1]]`), built entirely without the GIL and handed to numpy
    /// without a copy: no Python object per token at all.
    #[pyo3(signature = (texts, num_threads))]
    fn encode_ordinary_batch_to_numpy<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        num_threads: usize,
    ) -> PyResult<FlatBatch<'py>> {
        flat_batch(py, &texts, num_threads, |t| self.inner.encode_ordinary(t))
    }

    /// `encode_batch` as one flat uint32 array plus offsets (see above).
    #[pyo3(signature = (texts, allowed_special, disallowed_special, num_threads))]
    fn encode_batch_to_numpy<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        allowed_special: &Bound<'py, PyAny>,
        disallowed_special: &Bound<'py, PyAny>,
        num_threads: usize,
    ) -> PyResult<FlatBatch<'py>> {
        let (allowed, disallowed) = filters(&self.inner, allowed_special, disallowed_special)?;
        flat_batch(py, &texts, num_threads, |t| {
            self.inner.encode(t, &allowed, &disallowed)
        })
    }

    fn encode_with_unstable(
        &self,
        py: Python<'_>,
        text: &str,
        allowed_special: &Bound<'_, PyAny>,
        disallowed_special: &Bound<'_, PyAny>,
    ) -> PyResult<(Vec<Rank>, Vec<Vec<Rank>>)> {
        let (allowed, disallowed) = filters(&self.inner, allowed_special, disallowed_special)?;
        run(py, || {
            self.inner.check_disallowed(text, &disallowed)?;
            self.inner.encode_with_unstable(text, &allowed)
        })
    }

    fn encode_single_token(&self, piece: &[u8]) -> PyResult<Rank> {
        self.inner
            .encode_single_token(piece)
            .map_err(crate::errors::to_py)
    }

    fn encode_single_piece(&self, py: Python<'_>, piece: &[u8]) -> PyResult<Vec<Rank>> {
        run(py, || self.inner.encode_single_piece(piece))
    }

    // ------------------------------------------------------------------ decoding

    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let tokens = extract_ids(tokens)?;
        let bytes = run(py, || self.inner.decode_bytes(&tokens))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The decoded text as `str` when the bytes are valid UTF-8 (one copy, no Python-side
    /// decode); otherwise the bytes, for Python to decode with the caller's `errors`.
    fn decode_utf8<'py>(
        &self,
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let tokens = extract_ids(tokens)?;
        let bytes = run(py, || self.inner.decode_bytes(&tokens))?;
        // CPython validates while it builds the str, so validating in Rust first would read
        // the text twice; a failed strict decode (rare) falls back to the bytes.
        // SAFETY: the GIL is held and the pointer and length are those of a live buffer.
        let text = unsafe {
            pyo3::ffi::PyUnicode_DecodeUTF8(
                bytes.as_ptr().cast(),
                bytes.len() as pyo3::ffi::Py_ssize_t,
                c"strict".as_ptr(),
            )
        };
        if !text.is_null() {
            // SAFETY: a new reference returned by the call above.
            return Ok(unsafe { Bound::from_owned_ptr(py, text) });
        }
        drop(PyErr::take(py));
        Ok(PyBytes::new(py, &bytes).into_any())
    }

    fn decode_single_token_bytes<'py>(
        &self,
        py: Python<'py>,
        token: Rank,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let b = self
            .inner
            .token_bytes(token)
            .map_err(crate::errors::to_py)?;
        Ok(PyBytes::new(py, b))
    }

    fn decode_tokens_bytes<'py>(
        &self,
        py: Python<'py>,
        tokens: Vec<Rank>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        tokens
            .iter()
            .map(|&t| {
                Ok(PyBytes::new(
                    py,
                    self.inner.token_bytes(t).map_err(crate::errors::to_py)?,
                ))
            })
            .collect()
    }

    fn token_byte_values<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .token_byte_values()
            .into_iter()
            .map(|b| PyBytes::new(py, b))
            .collect()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CoreBpe>()
}
