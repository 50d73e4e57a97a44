//! The pre-tokenizer on its own: useful to see how a pattern splits text.

use pyo3::prelude::*;
use tokenmill_core::pretokenize::Pretokenizer as CorePretokenizer;

use crate::run;

/// A compiled pre-tokenizer pattern (exact tiktoken / fancy-regex semantics).
#[pyclass(module = "tokenmill._core", frozen)]
pub struct Pretokenizer {
    inner: CorePretokenizer,
}

#[pymethods]
impl Pretokenizer {
    #[new]
    fn new(py: Python<'_>, pattern: &str) -> PyResult<Self> {
        let pattern = pattern.to_string();
        let inner = run(py, move || CorePretokenizer::new(&pattern))?;
        Ok(Pretokenizer { inner })
    }

    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pattern()
    }

    /// True when a hand-written scanner (not the general regex engine) runs this pattern.
    #[getter]
    fn is_fast(&self) -> bool {
        self.inner.is_fast()
    }

    /// Byte offsets (start, end) in the UTF-8 encoding of `text` of every piece.
    fn find_byte_spans(&self, py: Python<'_>, text: &str) -> PyResult<Vec<(usize, usize)>> {
        let inner = &self.inner;
        run(py, || {
            let mut out = Vec::new();
            inner.for_each_match(text, |s, e| out.push((s, e)))?;
            Ok(out)
        })
    }

    /// The pieces of `text`, as strings.
    fn split(&self, py: Python<'_>, text: &str) -> PyResult<Vec<String>> {
        Ok(self
            .find_byte_spans(py, text)?
            .into_iter()
            .map(|(s, e)| text[s..e].to_string())
            .collect())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pretokenizer>()
}
