"""The corpora the parity tests rely on are real, varied, deterministic, and fail loudly."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

import corpora
from tokenmill import _corpora


def _scripts(docs: list[str]) -> set[str]:
    out = set()
    for d in docs:
        for ch in set(d):
            if ch.isalpha():
                try:
                    out.add(unicodedata.name(ch).split()[0])
                except ValueError:
                    pass
    return out


def test_small_slices_are_substantial(small_corpora: dict[str, list[str]]) -> None:
    for name, docs in small_corpora.items():
        size = sum(len(d.encode("utf-8")) for d in docs)
        assert len(docs) >= 10, name
        assert 100_000 <= size <= 400_000, (name, size)
        assert all(isinstance(d, str) and d for d in docs), name
    assert any("def " in d for d in small_corpora["code"])
    assert sum(d.count("<") for d in small_corpora["prose"]) > 1000  # HTML kept as is
    assert any("  " in d for d in small_corpora["prose"])
    scripts = _scripts(small_corpora["multilingual"])
    assert len(scripts) >= 20, sorted(scripts)
    for s in ("LATIN", "CYRILLIC", "CJK", "ARABIC"):
        assert s in scripts, (s, sorted(scripts))


def test_deterministic_and_cached(tmp_path: Path) -> None:
    a = _corpora.load_corpus("prose", "small", cache_dir=tmp_path / "a")
    b = _corpora.load_corpus("prose", "small", cache_dir=tmp_path / "b")
    assert a == b
    files = list((tmp_path / "a").glob("prose-small-*.json"))
    assert len(files) == 1
    # Reading back from the cache gives the same documents.
    assert _corpora.load_corpus("prose", "small", cache_dir=tmp_path / "a") == a
    # The repository cache (or $TOKENMILL_TEST_CACHE) gives the same selection too.
    assert corpora.corpus("prose", "small") == a


def test_missing_msgunfmt_names_gettext(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_corpora.shutil, "which", lambda _name: None)
    with pytest.raises(_corpora.CorpusUnavailable, match="gettext"):
        _corpora.load_corpus("multilingual", "small", cache_dir=tmp_path)


def test_missing_rust_docs_names_component(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_corpora, "_rust_sysroot", lambda: tmp_path / "no-sysroot")
    with pytest.raises(_corpora.CorpusUnavailable, match="rust-docs"):
        _corpora.load_corpus("prose", "small", cache_dir=tmp_path)


def test_missing_stdlib_is_loud(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(
        _corpora.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path / "nowhere")}
    )
    with pytest.raises(_corpora.CorpusUnavailable, match="standard library"):
        _corpora.load_corpus("code", "small", cache_dir=tmp_path)


def test_po_parsing() -> None:
    po = (
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        'msgid "Hello"\nmsgstr "Hallo"\n\n'
        'msgid "a\\tb"\nmsgstr ""\n"line one\\n"\n"line \\"two\\""\n\n'
        'msgid "one"\nmsgid_plural "many"\nmsgstr[0] "eins"\nmsgstr[1] "viele"\n'
    )
    assert _corpora._po_translations(po) == 'Hallo\nline one\nline "two"\neins\nviele'
