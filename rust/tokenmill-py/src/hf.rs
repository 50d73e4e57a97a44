//! `HfTokenizer`: Hugging Face `tokenizer.json` byte-level BPE, and its per-text result.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyDict;
use tokenmill_core::hf::HfEncoding;
use tokenmill_core::{HfTokenizer as CoreTokenizer, Rank};

use crate::encoding::CoreBpe;
use crate::run;

#[pyclass(module = "tokenmill._core", frozen, name = "HfTokenizer")]
pub struct HfTokenizer {
    inner: Arc<CoreTokenizer>,
}

/// What `tokenizers.Encoding` reports for one text.
#[pyclass(module = "tokenmill._core", frozen, name = "EncodingResult")]
pub struct EncodingResult {
    inner: HfEncoding,
    // Token strings are looked up when asked for, not built for every encode.
    tokenizer: Arc<CoreTokenizer>,
}

#[pymethods]
impl EncodingResult {
    #[getter]
    fn ids(&self) -> Vec<Rank> {
        self.inner.ids.clone()
    }
    #[getter]
    fn tokens(&self) -> Vec<&str> {
        self.tokenizer.tokens(&self.inner)
    }
    #[getter]
    fn offsets(&self) -> Vec<(usize, usize)> {
        self.inner.offsets.clone()
    }
    #[getter]
    fn attention_mask(&self) -> Vec<u32> {
        self.inner.attention_mask.clone()
    }
    #[getter]
    fn type_ids(&self) -> Vec<u32> {
        self.inner.type_ids.clone()
    }
    #[getter]
    fn special_tokens_mask(&self) -> Vec<u32> {
        self.inner.special_tokens_mask.clone()
    }
    fn __len__(&self) -> usize {
        self.inner.ids.len()
    }
    fn __repr__(&self) -> String {
        format!(
            "Encoding(num_tokens={}, attributes=[ids, type_ids, tokens, offsets, attention_mask, special_tokens_mask])",
            self.inner.ids.len()
        )
    }
}

#[pymethods]
impl HfTokenizer {
    #[staticmethod]
    fn from_str(py: Python<'_>, json: &str, source_name: &str) -> PyResult<Self> {
        let inner = run(py, || CoreTokenizer::from_json(json, source_name))?;
        Ok(HfTokenizer {
            inner: Arc::new(inner),
        })
    }

    /// From the file's UTF-8 bytes as read: the Python side keeps the bytes (for `to_str`),
    /// not a `str`, which for a GPT-2-style vocabulary (`Ġ` and friends) takes two bytes per
    /// character plus a cached UTF-8 copy: 27 MiB instead of 9 for Llama-3's file.
    #[staticmethod]
    fn from_utf8(py: Python<'_>, json: &[u8], source_name: &str) -> PyResult<Self> {
        let inner = run(py, || {
            let text = std::str::from_utf8(json).map_err(|e| {
                tokenmill_core::Error::file(source_name, format!("not UTF-8 ({e})"))
            })?;
            CoreTokenizer::from_json(text, source_name)
        })?;
        Ok(HfTokenizer {
            inner: Arc::new(inner),
        })
    }

    #[pyo3(signature = (text, add_special_tokens=true))]
    fn encode(
        &self,
        py: Python<'_>,
        text: &str,
        add_special_tokens: bool,
    ) -> PyResult<EncodingResult> {
        let inner = run(py, || self.inner.encode(text, add_special_tokens))?;
        Ok(EncodingResult {
            inner,
            tokenizer: self.inner.clone(),
        })
    }

    /// Ids only (no token strings or offsets): the fast path.
    #[pyo3(signature = (text, add_special_tokens=true))]
    fn encode_ids(
        &self,
        py: Python<'_>,
        text: &str,
        add_special_tokens: bool,
    ) -> PyResult<Vec<Rank>> {
        run(py, || self.inner.encode_ids(text, add_special_tokens))
    }

    #[pyo3(signature = (texts, add_special_tokens, num_threads))]
    fn encode_batch(
        &self,
        py: Python<'_>,
        texts: Vec<PyBackedStr>,
        add_special_tokens: bool,
        num_threads: usize,
    ) -> PyResult<Vec<EncodingResult>> {
        let refs: Vec<&str> = texts.iter().map(|t| &**t).collect();
        let out = run(py, || {
            self.inner
                .encode_batch(&refs, add_special_tokens, num_threads)
        })?;
        Ok(out
            .into_iter()
            .map(|inner| EncodingResult {
                inner,
                tokenizer: self.inner.clone(),
            })
            .collect())
    }

    #[pyo3(signature = (texts, add_special_tokens, num_threads))]
    fn encode_ids_batch(
        &self,
        py: Python<'_>,
        texts: Vec<PyBackedStr>,
        add_special_tokens: bool,
        num_threads: usize,
    ) -> PyResult<Vec<Vec<Rank>>> {
        run(py, || {
            tokenmill_core::encoding::par_map(&texts, num_threads, |t| {
                self.inner.encode_ids(t, add_special_tokens)
            })
            .into_iter()
            .collect()
        })
    }

    #[pyo3(signature = (ids, skip_special_tokens=true))]
    fn decode(
        &self,
        py: Python<'_>,
        ids: Vec<Rank>,
        skip_special_tokens: bool,
    ) -> PyResult<String> {
        run(py, || Ok(self.inner.decode(&ids, skip_special_tokens)))
    }

    #[pyo3(signature = (batch, skip_special_tokens, num_threads))]
    fn decode_batch(
        &self,
        py: Python<'_>,
        batch: Vec<Vec<Rank>>,
        skip_special_tokens: bool,
        num_threads: usize,
    ) -> PyResult<Vec<String>> {
        run(py, || {
            Ok(tokenmill_core::encoding::par_map(
                &batch,
                num_threads,
                |ids| self.inner.decode(ids, skip_special_tokens),
            ))
        })
    }

    fn token_to_id(&self, token: &str) -> Option<Rank> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: Rank) -> Option<&str> {
        self.inner.id_to_token(id)
    }

    #[pyo3(signature = (with_added_tokens=true))]
    fn get_vocab<'py>(
        &self,
        py: Python<'py>,
        with_added_tokens: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (s, id) in self.inner.vocab(with_added_tokens) {
            d.set_item(s, id)?;
        }
        Ok(d)
    }

    #[pyo3(signature = (with_added_tokens=true))]
    fn get_vocab_size(&self, with_added_tokens: bool) -> usize {
        self.inner.vocab_size(with_added_tokens)
    }

    /// (content, id, special) of every added token, in file order.
    fn added_tokens(&self) -> Vec<(String, Rank, bool)> {
        self.inner
            .added_tokens()
            .map(|(c, i, s)| (c.to_string(), i, s))
            .collect()
    }

    fn to_core_bpe(&self, py: Python<'_>) -> PyResult<CoreBpe> {
        let inner = run(py, || self.inner.to_encoding())?;
        Ok(CoreBpe::wrap(py, inner))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HfTokenizer>()?;
    m.add_class::<EncodingResult>()
}
