//! Python bindings of `tokenmill-core`, built by maturin into `tokenmill._core`.
//!
//! Every binding does the same three things: extract arguments while holding the GIL, run the
//! core inside [`run`] (GIL released, panics caught), and map the typed core error to a specific
//! Python exception in [`errors`]. Policy (file loading, registries, special-token defaults)
//! lives in the Python package, not here.

use pyo3::prelude::*;

mod bytelm;
mod encoding;
mod errors;
mod hf;
mod pretokenize;
mod speculative;
mod train;

/// Runs `f` without the GIL. A panic inside the core is a bug, but it must not reach Python as
/// `PanicException` (a `BaseException` that `except Exception` does not catch): it becomes a
/// `RuntimeError` naming it as one.
pub(crate) fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> tokenmill_core::Result<T> + Send,
    T: Send,
{
    let result = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    match result {
        Ok(r) => r.map_err(errors::to_py),
        Err(panic) => Err(errors::internal(panic)),
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    bytelm::register(m)?;
    encoding::register(m)?;
    hf::register(m)?;
    pretokenize::register(m)?;
    speculative::register(m)?;
    train::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
