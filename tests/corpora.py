"""Test corpora: real text that is already on the machine (see ``tokenmill._corpora``).

* ``code``: CPython standard library ``.py`` files;
* ``prose``: the Rust book HTML from the Rust toolchain's ``share/doc`` (kept as HTML);
* ``multilingual``: gettext catalogues under ``/usr/share/locale`` through ``msgunfmt``.

The default test run uses the ``small`` slice; ``pytest -m sweep`` uses ``full``.  Corpora are
cached under ``$TOKENMILL_TEST_CACHE`` (default ``<repo>/.cache/test-corpora``).  A missing
source fails the test run with a message naming what to install.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from tokenmill._corpora import (
    CACHE_ENV,
    CORPUS_NAMES,
    CorpusUnavailable,
    load_corpus,
)

__all__ = [
    "CORPUS_NAMES",
    "REPO",
    "SWEEP_SLICE",
    "CorpusUnavailable",
    "cache_dir",
    "corpus",
    "corpus_bytes",
]

REPO = Path(__file__).resolve().parent.parent

#: Slice used by `pytest -m sweep`: "sweep" (~12 MB of whole documents per corpus) unless
#: TOKENMILL_SWEEP_SLICE names another (e.g. "full": every file of every source).
SWEEP_SLICE = os.environ.get("TOKENMILL_SWEEP_SLICE", "sweep")


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / ".cache" / "test-corpora"


@functools.cache
def _corpus(name: str, slice_name: str) -> tuple[str, ...]:
    return tuple(load_corpus(name, slice_name, cache_dir=cache_dir()))


def corpus(name: str, slice_name: str = "small") -> list[str]:
    """Documents of corpus ``name`` (``code``, ``prose`` or ``multilingual``)."""
    return list(_corpus(name, slice_name))


def corpus_bytes(name: str, slice_name: str = "small") -> int:
    return sum(len(d.encode("utf-8")) for d in _corpus(name, slice_name))
