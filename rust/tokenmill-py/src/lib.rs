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

/// What one item of a batch produced: ids, a core error, or a caught panic.
type BatchOutcome = std::thread::Result<tokenmill_core::Result<Vec<tokenmill_core::Rank>>>;

/// Batch counterpart of [`run`]: maps `f` over `items` on `threads` threads and returns a
/// Python list of the lists `convert` makes of each result.
///
/// Making the int objects needs the GIL and is a large share of a batch, so converting after
/// the parallel part would leave the other threads idle for it. Instead the calling thread
/// converts finished items in order while the others go on encoding, and whenever the next
/// item is not ready it encodes unclaimed items itself with the GIL released. After an error
/// no item beyond it is started; the first error in item order is raised.
pub(crate) fn run_batch<'py, T, F, C>(
    py: Python<'py>,
    items: &[T],
    threads: usize,
    f: F,
    mut convert: C,
) -> PyResult<Bound<'py, pyo3::types::PyList>>
where
    T: Sync,
    F: Fn(&T) -> tokenmill_core::Result<Vec<tokenmill_core::Rank>> + Sync,
    C: FnMut(Vec<tokenmill_core::Rank>) -> PyResult<Bound<'py, pyo3::types::PyList>>,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex, MutexGuard};

    // A panic while holding one of these locks is already caught and reported; the data
    // itself (an Option being set or taken) stays consistent.
    fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    let n = items.len();
    let threads = threads.clamp(1, n.max(1));
    let slots: Vec<Mutex<Option<BatchOutcome>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // Items at or past `limit` are not started (an error was found there, or we gave up).
    let limit = AtomicUsize::new(n);
    let done = (Mutex::new(()), Condvar::new());

    let claim = || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        (i < limit.load(Ordering::Relaxed)).then_some(i)
    };
    let work = |i: usize| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&items[i])));
        if !matches!(r, Ok(Ok(_))) {
            limit.fetch_min(i + 1, Ordering::Relaxed);
        }
        *lock(&slots[i]) = Some(r);
        let _g = lock(&done.0);
        done.1.notify_all();
    };

    let list = pyo3::types::PyList::empty(py);
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| {
                while let Some(i) = claim() {
                    work(i);
                }
            });
        }
        let result = (|| {
            for slot in &slots {
                let ready = || lock(slot).is_some();
                if !ready() {
                    py.detach(|| {
                        while !ready() {
                            // Every earlier item is finished and this one is claimed or
                            // claimable, so this loop ends.
                            if let Some(j) = claim() {
                                work(j);
                                continue;
                            }
                            let g = lock(&done.0);
                            if !ready() {
                                drop(done.1.wait(g));
                            }
                        }
                    });
                }
                let outcome = lock(slot).take().expect("checked ready above");
                match outcome {
                    Ok(Ok(ids)) => list.append(convert(ids)?)?,
                    Ok(Err(e)) => return Err(errors::to_py(e)),
                    Err(panic) => return Err(errors::internal(panic)),
                }
            }
            Ok(())
        })();
        if result.is_err() {
            limit.store(0, Ordering::Relaxed);
        }
        result
    })?;
    Ok(list)
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
