//! BPE training: `BpeTrainer` (count, then train) and `replay_merges` (data-mixture
//! inference). `tokenmill.train` and `tokenmill.mixture` hold the policy.
//!
//! Long operations run the core on a worker thread while the calling thread, GIL released,
//! wakes every 50 ms to re-attach, run Python's signal handlers (so Ctrl-C raises
//! `KeyboardInterrupt` promptly) and call the optional progress callback. An exception from
//! either cancels the core through its [`Control`] and is re-raised once the worker stopped.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyBytes;
use tokenmill_core::train::{
    self as core, is_cancelled_error, Control, Event, TrainConfig, Trained, WordCounter,
};
use tokenmill_core::Rank;

use crate::errors;

/// Runs `work` on a worker thread, polling signals and `progress(bytes, merges)` meanwhile.
fn run_polled<T: Send>(
    py: Python<'_>,
    ctl: &Control,
    progress: Option<&Py<PyAny>>,
    work: impl FnOnce() -> tokenmill_core::Result<T> + Send,
) -> PyResult<T> {
    let (result, py_err) = py.detach(|| {
        std::thread::scope(|s| {
            let worker = s.spawn(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
            let mut py_err: Option<PyErr> = None;
            while !worker.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                if py_err.is_some() {
                    continue;
                }
                Python::attach(|py| {
                    let r = py.check_signals().and_then(|()| match progress {
                        Some(cb) => cb
                            .call1(py, (ctl.bytes_counted(), ctl.merges_done()))
                            .map(drop),
                        None => Ok(()),
                    });
                    if let Err(e) = r {
                        ctl.cancel();
                        py_err = Some(e);
                    }
                });
            }
            let result = worker
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (result, py_err)
        })
    });
    if let Some(e) = py_err {
        return Err(e);
    }
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if is_cancelled_error(&e) => {
            // Cancelled from outside (`cancel()`): surface it as an interrupt.
            Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(
                "training was cancelled",
            ))
        }
        Ok(Err(e)) => Err(errors::to_py(e)),
        Err(panic) => Err(errors::internal(panic)),
    }
}

/// Counts pre-tokenized words, then learns merges from them (once). Frozen with a lock inside,
/// so that `cancel` works from another thread while `feed_files` or `train` runs.
#[pyclass(module = "tokenmill._core", frozen)]
pub struct BpeTrainer {
    counter: Mutex<Option<WordCounter>>,
    ctl: Control,
}

fn busy() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("this trainer is busy in another thread")
}

fn trained_already() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("this trainer has already trained")
}

#[pymethods]
impl BpeTrainer {
    #[new]
    fn new(py: Python<'_>, pattern: &str, special_tokens: Vec<String>) -> PyResult<Self> {
        let counter = crate::run(py, || WordCounter::new(pattern, &special_tokens))?;
        Ok(BpeTrainer {
            counter: Mutex::new(Some(counter)),
            ctl: Control::new(),
        })
    }

    /// Counts the words of `texts` (each one document) on `num_threads` threads.
    fn feed(&self, py: Python<'_>, texts: Vec<PyBackedStr>, num_threads: usize) -> PyResult<()> {
        let texts: Vec<&str> = texts.iter().map(|t| &**t).collect();
        let ctl = &self.ctl;
        let mut guard = self.counter.try_lock().map_err(|_| busy())?;
        let counter = guard.as_mut().ok_or_else(trained_already)?;
        run_polled(py, ctl, None, || {
            counter.add_texts(&texts, num_threads, ctl)
        })
    }

    /// Counts the words of UTF-8 files, streamed.
    #[pyo3(signature = (paths, num_threads, progress=None))]
    fn feed_files(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        num_threads: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let ctl = &self.ctl;
        let mut guard = self.counter.try_lock().map_err(|_| busy())?;
        let counter = guard.as_mut().ok_or_else(trained_already)?;
        run_polled(py, ctl, progress.as_ref(), || {
            for p in &paths {
                counter.add_file(p, num_threads, ctl)?;
            }
            Ok(())
        })
    }

    /// Distinct words counted so far.
    #[getter]
    fn n_words(&self) -> usize {
        self.counter
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(WordCounter::distinct))
            .unwrap_or(0)
    }

    /// Bytes of text counted so far (while counting runs: the bytes done by the running call).
    #[getter]
    fn n_bytes(&self) -> u64 {
        self.counter
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(WordCounter::total_bytes))
            .unwrap_or_else(|| self.ctl.bytes_counted())
    }

    /// Stops a running `feed_files`/`train` from another thread (it raises KeyboardInterrupt).
    fn cancel(&self) {
        self.ctl.cancel();
    }

    /// Learns merges until there are `n_tokens` ordinary tokens. Consumes the counts.
    #[pyo3(signature = (n_tokens, min_frequency, max_token_length=None, picky_threshold=None, progress=None))]
    fn train(
        &self,
        py: Python<'_>,
        n_tokens: usize,
        min_frequency: u64,
        max_token_length: Option<usize>,
        picky_threshold: Option<f64>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<TrainOutput> {
        let counter = self
            .counter
            .try_lock()
            .map_err(|_| busy())?
            .take()
            .ok_or_else(trained_already)?;
        if counter.distinct() == 0 {
            return Err(errors::to_py(tokenmill_core::Error::InvalidArgument(
                "the training corpus is empty: no text to learn merges from".into(),
            )));
        }
        let ctl = &self.ctl;
        let cfg = TrainConfig {
            n_tokens,
            min_frequency,
            max_token_length,
            picky_threshold,
        };
        let trained = run_polled(py, ctl, progress.as_ref(), || {
            core::train(counter.into_counts(), &cfg, ctl)
        })?;
        Ok(TrainOutput { inner: trained })
    }
}

/// The result of `BpeTrainer.train`.
#[pyclass(module = "tokenmill._core", frozen)]
pub struct TrainOutput {
    inner: Trained,
}

#[pymethods]
impl TrainOutput {
    /// Token bytes by rank: the 256 bytes, then merged tokens.
    fn ranks<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .ranks()
            .iter()
            .map(|(b, _)| PyBytes::new(py, b))
            .collect()
    }

    /// The merge list for tokenizer.json, as pairs of ranks, in priority order.
    fn merges(&self) -> Vec<(Rank, Rank)> {
        self.inner.merges()
    }

    /// The count each merge had when chosen, in training order.
    fn merge_counts(&self) -> Vec<u64> {
        self.inner
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Merge { count, .. } => Some(*count),
                Event::Remove { .. } => None,
            })
            .collect()
    }

    /// Tokens Picky BPE removed (and did not re-create).
    fn removed<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .removed()
            .iter()
            .map(|b| PyBytes::new(py, b))
            .collect()
    }

    /// Number of removal events (Picky BPE).
    #[getter]
    fn n_removals(&self) -> usize {
        self.inner
            .events
            .iter()
            .filter(|e| matches!(e, Event::Remove { .. }))
            .count()
    }

    /// Distinct words with at least two bytes that training saw.
    #[getter]
    fn n_words(&self) -> usize {
        self.inner.n_words
    }
}

type ReplayResult = (Vec<Vec<u64>>, Vec<usize>, Vec<u64>, Vec<Vec<u64>>);

/// Data-mixture inference support: for each category, counts the words of its texts with
/// `pattern`, replays `merges` on them, and returns, per step, the merge's count in each
/// category and the counts of competing pairs (the `top_k` most frequent of each category):
/// `(merge_counts[t][i], cand_step[j], cand_key[j], cand_counts[j][i])`.
#[pyfunction]
#[pyo3(signature = (pattern, categories, merges, top_k, num_threads, progress=None))]
fn replay_merges(
    py: Python<'_>,
    pattern: &str,
    categories: Vec<Vec<PyBackedStr>>,
    merges: Vec<(Vec<u8>, Vec<u8>)>,
    top_k: usize,
    num_threads: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<ReplayResult> {
    let ctl = Control::new();
    let steps = run_polled(py, &ctl, progress.as_ref(), || {
        let mut cats = Vec::with_capacity(categories.len());
        for texts in &categories {
            let mut wc = WordCounter::new(pattern, &[])?;
            let texts: Vec<&str> = texts.iter().map(|t| &**t).collect();
            wc.add_texts(&texts, num_threads, &ctl)?;
            cats.push(wc.into_counts().collect::<Vec<_>>());
        }
        core::replay_merges(cats, &merges, top_k, &ctl)
    })?;
    let mut merge_counts = Vec::with_capacity(steps.len());
    let (mut cand_step, mut cand_key, mut cand_counts) = (Vec::new(), Vec::new(), Vec::new());
    for (t, s) in steps.into_iter().enumerate() {
        merge_counts.push(s.merge_counts);
        for (k, c) in s.candidates {
            cand_step.push(t);
            cand_key.push(k);
            cand_counts.push(c);
        }
    }
    Ok((merge_counts, cand_step, cand_key, cand_counts))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BpeTrainer>()?;
    m.add_class::<TrainOutput>()?;
    m.add_function(wrap_pyfunction!(replay_merges, m)?)?;
    Ok(())
}
