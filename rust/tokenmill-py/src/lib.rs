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

/// A shape error building forward inputs (a bug if it happens: the lengths come from Rust).
pub(crate) fn shape_error(e: numpy::ndarray::ShapeError) -> PyErr {
    errors::to_py(tokenmill_core::Error::InvalidArgument(format!(
        "forward inputs: {e}"
    )))
}

/// Token or position ids as a (1, n) array whose buffer is `v` (no copy; `torch.from_numpy`
/// then shares it).
pub(crate) fn ids_array(py: Python<'_>, v: Vec<i64>) -> PyResult<Bound<'_, numpy::PyArray2<i64>>> {
    use numpy::IntoPyArray;
    let n = v.len();
    Ok(numpy::ndarray::Array2::from_shape_vec((1, n), v)
        .map_err(shape_error)?
        .into_pyarray(py))
}

/// An attention mask buffer as a (1, 1, n, keys) array of either float type, without a copy.
pub(crate) fn mask_array<T: numpy::Element>(
    py: Python<'_>,
    shape: (usize, usize, usize, usize),
    m: Vec<T>,
) -> PyResult<Bound<'_, numpy::PyUntypedArray>> {
    use numpy::IntoPyArray;
    let a = numpy::ndarray::Array4::from_shape_vec(shape, m).map_err(shape_error)?;
    Ok(a.into_pyarray(py)
        .into_any()
        .cast_into::<numpy::PyUntypedArray>()?)
}

/// What one item of a batch produced: ids, a core error, or a caught panic.
type BatchOutcome = std::thread::Result<tokenmill_core::Result<Vec<tokenmill_core::Rank>>>;

/// Batch counterpart of [`run`]: maps `f` over `items` on `threads` threads and returns a
/// Python list of the lists `convert` makes of the results, in item order; the first error
/// in item order is raised, and no item after it is started.
///
/// Building the Python lists needs the GIL and is about a sixth of the work even with one
/// shared int per id, so it is not left to the end: `threads` workers encode without the GIL
/// and hand each finished item over, while the calling thread holds the GIL only to turn
/// finished items into lists, in whatever order they finish, and sleeps without it otherwise.
/// (A first version had the calling thread encode too whenever the next item in order was
/// not ready; head-of-line waits made two-thread speed vary between 0.8x and 1.9x.)
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
    use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

    /// Finished items not yet converted, and how many workers are still running.
    struct Handover {
        done: Vec<(usize, BatchOutcome)>,
        live: usize,
    }
    // A panic while holding the lock is already caught and reported; the queue stays valid.
    fn lock(m: &Mutex<Handover>) -> MutexGuard<'_, Handover> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    let n = items.len();
    let threads = threads.clamp(1, n.max(1));
    let next = AtomicUsize::new(0);
    // Items at or past `limit` are not started (an error was found before them).
    let limit = AtomicUsize::new(n);
    let handover = (
        Mutex::new(Handover {
            done: Vec::new(),
            live: threads,
        }),
        Condvar::new(),
    );
    let mut lists: Vec<Option<Bound<'py, pyo3::types::PyList>>> = (0..n).map(|_| None).collect();
    let mut first_error: Option<(usize, PyErr)> = None;

    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= limit.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&items[i])));
                    if !matches!(r, Ok(Ok(_))) {
                        limit.fetch_min(i + 1, Ordering::Relaxed);
                    }
                    lock(&handover.0).done.push((i, r));
                    handover.1.notify_one();
                }
                lock(&handover.0).live -= 1;
                handover.1.notify_one();
            });
        }
        loop {
            let (finished, live) = py.detach(|| {
                let mut h = lock(&handover.0);
                while h.done.is_empty() && h.live > 0 {
                    h = handover.1.wait(h).unwrap_or_else(PoisonError::into_inner);
                }
                (std::mem::take(&mut h.done), h.live)
            });
            for (i, r) in finished {
                if first_error.as_ref().is_some_and(|(e, _)| *e < i) {
                    continue;
                }
                let converted = match r {
                    Ok(Ok(ids)) => convert(ids),
                    Ok(Err(e)) => Err(errors::to_py(e)),
                    Err(panic) => Err(errors::internal(panic)),
                };
                match converted {
                    Ok(list) => lists[i] = Some(list),
                    Err(e) => {
                        limit.fetch_min(i + 1, Ordering::Relaxed);
                        first_error = Some((i, e));
                    }
                }
            }
            if live == 0 && lock(&handover.0).done.is_empty() {
                break;
            }
        }
    });
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    let list = pyo3::types::PyList::empty(py);
    for item in lists {
        list.append(item.expect("every item is converted when there is no error"))?;
    }
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
