"""Real-world text corpora built from files that are already on the machine.

Used by the test-suite (``tests/corpora.py``) and by ``tokenmill bench``.  Nothing is
downloaded: the three corpora come from

* ``code``: the CPython standard library's ``.py`` files (``sysconfig`` ``stdlib`` path);
* ``prose``: the Rust book's HTML pages under the Rust toolchain's ``share/doc``
  (``rustc --print sysroot``), kept as HTML on purpose (whitespace runs and markup);
* ``multilingual``: gettext catalogues ``/usr/share/locale/*/LC_MESSAGES/*.mo`` turned back
  into text with ``msgunfmt`` (the translated strings of dozens of languages and scripts).

Every selection is deterministic for a given machine: files are ordered by a hash of their
path relative to the source root, and a slice takes files in that order until its byte budget
is spent.  Built corpora are cached as JSON under :func:`default_cache_dir` (or the directory
named by ``TOKENMILL_TEST_CACHE``); the cache key covers the source files' paths, sizes and
modification times, so a changed machine rebuilds instead of reading stale text.

A missing source is an error (:class:`CorpusUnavailable`) whose message names what to
install; nothing is silently skipped.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "CORPUS_NAMES",
    "SLICES",
    "CorpusUnavailable",
    "SliceSpec",
    "default_cache_dir",
    "load_corpora",
    "load_corpus",
    "slice_spec",
]

CORPUS_NAMES: tuple[str, ...] = ("code", "prose", "multilingual")

CACHE_ENV = "TOKENMILL_TEST_CACHE"
_CACHE_FORMAT = 2


class CorpusUnavailable(RuntimeError):
    """A corpus source is missing on this machine; the message says what to install."""


@dataclass(frozen=True)
class SliceSpec:
    """How much of a corpus to take.

    ``budget_bytes``: stop adding documents once this many UTF-8 bytes are taken (``None``:
    take everything).  ``max_doc_bytes``: documents longer than this are cut at a line
    boundary (``None``: keep whole).
    """

    budget_bytes: int | None
    max_doc_bytes: int | None


SLICES: dict[str, SliceSpec] = {
    # The default test run: small and quick.
    "small": SliceSpec(budget_bytes=192 * 1024, max_doc_bytes=12 * 1024),
    # `tokenmill bench --quick`.
    "quick": SliceSpec(budget_bytes=512 * 1024, max_doc_bytes=None),
    # `tokenmill bench`.
    "bench": SliceSpec(budget_bytes=3 * 1024 * 1024, max_doc_bytes=None),
    # `pytest -m sweep` (default): ~12 MB of whole documents per corpus.
    "sweep": SliceSpec(budget_bytes=12 * 1024 * 1024, max_doc_bytes=None),
    # Every file of every source (`TOKENMILL_SWEEP_SLICE=full pytest -m sweep`).
    "full": SliceSpec(budget_bytes=None, max_doc_bytes=None),
}


# Per-corpus adjustments: the small multilingual slice takes short pieces of many catalogues
# so that it still spans dozens of languages and scripts.
_OVERRIDES: dict[tuple[str, str], SliceSpec] = {
    ("multilingual", "small"): SliceSpec(budget_bytes=192 * 1024, max_doc_bytes=3 * 1024),
    ("multilingual", "quick"): SliceSpec(budget_bytes=512 * 1024, max_doc_bytes=16 * 1024),
    ("multilingual", "bench"): SliceSpec(budget_bytes=3 * 1024 * 1024, max_doc_bytes=64 * 1024),
}


def slice_spec(corpus: str, slice_name: str) -> SliceSpec:
    """The :class:`SliceSpec` used for ``corpus`` in slice ``slice_name``."""
    return _OVERRIDES.get((corpus, slice_name), SLICES[slice_name])


def default_cache_dir() -> Path:
    """``$TOKENMILL_TEST_CACHE``, else ``<repo>/.cache/test-corpora`` when running from a
    source checkout, else ``$XDG_CACHE_HOME/tokenmill/corpora`` (``~/.cache/...``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    # python/tokenmill/_corpora.py -> repository root is two levels above python/.
    repo = here.parent.parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "python" / "tokenmill").is_dir():
        return repo / ".cache" / "test-corpora"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "tokenmill" / "corpora"


# --------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class _Source:
    name: str
    root: Path
    files: list[Path]  # absolute paths, deterministic order
    reader: Callable[[Path], str | None]


def _order_key(root: Path) -> Callable[[Path], tuple[str, str]]:
    def key(p: Path) -> tuple[str, str]:
        rel = p.relative_to(root).as_posix()
        return (hashlib.sha256(rel.encode("utf-8")).hexdigest(), rel)

    return key


def _read_utf8(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Normalise nothing: CRLF, BOMs, tabs and odd whitespace are all part of the point.
    return text if text else None


def _code_source() -> _Source:
    stdlib = sysconfig.get_paths().get("stdlib")
    if not stdlib or not Path(stdlib).is_dir():
        raise CorpusUnavailable(
            f"code corpus: the CPython standard library directory ({stdlib!r}) is missing; "
            "install the full Python distribution (Debian: libpython3-stdlib / python3-full)"
        )
    root = Path(stdlib)
    files = [
        p
        for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "dist-packages" not in p.parts and p.is_file()
    ]
    if len(files) < 100:
        raise CorpusUnavailable(
            f"code corpus: only {len(files)} .py files under {root}; the standard library looks "
            "stripped — install the full Python distribution (Debian: libpython3-stdlib)"
        )
    files.sort(key=_order_key(root))
    return _Source("code", root, files, _read_utf8)


def _rust_sysroot() -> Path:
    rustc = shutil.which("rustc")
    candidates: list[Path] = []
    if rustc is not None:
        try:
            out = subprocess.run(
                [rustc, "--print", "sysroot"],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    for c in candidates:
        if c.is_dir():
            return c
    raise CorpusUnavailable(
        "prose corpus: `rustc --print sysroot` failed; install a Rust toolchain with its "
        "documentation (rustup: `rustup component add rust-docs`)"
    )


def _prose_source() -> _Source:
    sysroot = _rust_sysroot()
    root = sysroot / "share" / "doc" / "rust" / "html" / "book"
    files = sorted(root.glob("*.html")) if root.is_dir() else []
    if len(files) < 20:
        raise CorpusUnavailable(
            f"prose corpus: the Rust book HTML is missing under {root}; install the Rust "
            "documentation component (`rustup component add rust-docs`)"
        )
    files.sort(key=_order_key(root))
    return _Source("prose", root, files, _read_utf8)


_PO_LINE = re.compile(r'^(msgid|msgid_plural|msgstr(?:\[\d+\])?|msgctxt)\s+"(.*)"\s*$')
_PO_CONT = re.compile(r'^"(.*)"\s*$')
_PO_ESCAPE = re.compile(r'\\(["\\abfnrtv?\']|[0-7]{1,3}|x[0-9a-fA-F]{1,2})')
_PO_SIMPLE = {
    '"': '"',
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "?": "?",
    "'": "'",
}
_CHARSET = re.compile(rb"charset=([A-Za-z0-9_.:-]+)")


def _po_unescape(s: str) -> str:
    def sub(m: re.Match[str]) -> str:
        e = m.group(1)
        if e in _PO_SIMPLE:
            return _PO_SIMPLE[e]
        if e[0] == "x":
            return chr(int(e[1:], 16))
        return chr(int(e, 8))

    return _PO_ESCAPE.sub(sub, s)


def _po_translations(po: str) -> str:
    """The translated strings (``msgstr`` / ``msgstr[n]``) of a PO file, in file order, one
    entry per line group; the header entry (``msgid ""``) is left out."""
    entries: list[dict[str, list[str]]] = []
    entry: dict[str, list[str]] = {}
    kw: str | None = None
    for line in po.splitlines():
        m = _PO_LINE.match(line)
        if m:
            kw = m.group(1)
            if kw in ("msgid", "msgctxt") and any(k.startswith("msgstr") for k in entry):
                entries.append(entry)
                entry = {}
            entry.setdefault(kw, []).append(_po_unescape(m.group(2)))
            continue
        c = _PO_CONT.match(line)
        if c and kw is not None:
            entry[kw].append(_po_unescape(c.group(1)))
            continue
        kw = None
    if entry:
        entries.append(entry)
    out: list[str] = []
    for e in entries:
        if not "".join(e.get("msgid", [])):
            continue  # header
        for k in sorted(e):
            if k.startswith("msgstr"):
                text = "".join(e[k])
                if text:
                    out.append(text)
    return "\n".join(out)


_MSGUNFMT_MISSING = (
    "multilingual corpus: `msgunfmt` not found; install the gettext package "
    "(Debian/Ubuntu: `apt-get install gettext`)"
)


def _read_mo(path: Path) -> str | None:
    exe = shutil.which("msgunfmt")
    if exe is None:
        raise CorpusUnavailable(_MSGUNFMT_MISSING)
    try:
        proc = subprocess.run(
            [exe, "--no-wrap", str(path)],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or not proc.stdout:
        return None
    raw = proc.stdout
    m = _CHARSET.search(raw[:4096])
    charset = m.group(1).decode("ascii") if m else "utf-8"
    try:
        po = raw.decode(charset)
    except (LookupError, UnicodeDecodeError):
        try:
            po = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = _po_translations(po)
    return text if text.strip() else None


def _multilingual_source() -> _Source:
    if shutil.which("msgunfmt") is None:
        raise CorpusUnavailable(_MSGUNFMT_MISSING)
    root = Path("/usr/share/locale")
    files = sorted(p for p in root.glob("*/LC_MESSAGES/*.mo") if p.is_file())
    langs = {p.parent.parent.name for p in files}
    if len(langs) < 20:
        raise CorpusUnavailable(
            f"multilingual corpus: only {len(langs)} locales with .mo catalogues under {root}; "
            "install translated packages, e.g. `apt-get install iso-codes gettext` "
            "(iso-codes alone ships catalogues for ~150 languages)"
        )
    # Interleave languages so every slice covers as many scripts as its budget allows: order
    # by (rank of the file within its language, hash of its path).
    key = _order_key(root)
    by_lang: dict[str, list[Path]] = {}
    for p in files:
        by_lang.setdefault(p.parent.parent.name, []).append(p)
    ranked: list[tuple[int, tuple[str, str], Path]] = []
    for paths in by_lang.values():
        paths.sort(key=key)
        for i, p in enumerate(paths):
            ranked.append((i, key(p), p))
    ranked.sort()
    return _Source("multilingual", root, [p for _, _, p in ranked], _read_mo)


_SOURCES: dict[str, Callable[[], _Source]] = {
    "code": _code_source,
    "prose": _prose_source,
    "multilingual": _multilingual_source,
}


# --------------------------------------------------------------------------------------
# Building and caching


def _fingerprint(src: _Source, spec: SliceSpec) -> str:
    h = hashlib.sha256()
    h.update(f"{_CACHE_FORMAT}|{src.name}|{src.root}|{spec}".encode())
    for p in src.files:
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _cut(text: str, limit: int | None) -> str:
    """At most ``limit`` UTF-8 bytes of ``text``: the window around its middle, cut at line
    boundaries (the head of a Rust book page is the same navigation in every file)."""
    if limit is None:
        return text
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    start = (len(data) - limit) // 2
    nl = data.find(b"\n", start, start + limit // 2)
    if nl >= 0:
        start = nl + 1
    end = data.rfind(b"\n", start, start + limit)
    if end <= start:
        end = start + limit
    return data[start:end].decode("utf-8", errors="ignore")


def _take(src: _Source, spec: SliceSpec) -> list[str]:
    docs: list[str] = []
    used = 0
    budget = spec.budget_bytes
    files: Iterable[Path] = src.files
    # msgunfmt is a subprocess per file: read in parallel, in order, in small windows so a
    # small budget does not convert every catalogue on the machine.
    window = 32 if src.name == "multilingual" else 1
    file_list = list(files)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        for start in range(0, len(file_list), window):
            chunk = file_list[start : start + window]
            texts = list(ex.map(src.reader, chunk)) if window > 1 else [src.reader(chunk[0])]
            for text in texts:
                if text is None:
                    continue
                text = _cut(text, spec.max_doc_bytes)
                if not text:
                    continue
                size = len(text.encode("utf-8"))
                if budget is not None and used + size > budget:
                    # Keep filling with smaller documents, but stop once nearly full.
                    if used >= budget * 0.95:
                        return docs
                    continue
                docs.append(text)
                used += size
            if budget is not None and used >= budget * 0.95:
                break
    return docs


def load_corpus(
    name: str,
    slice_name: str = "small",
    *,
    cache_dir: Path | str | None = None,
) -> list[str]:
    """The documents of corpus ``name`` (one of :data:`CORPUS_NAMES`) for slice
    ``slice_name`` (one of :data:`SLICES`), built on first use and cached."""
    if name not in _SOURCES:
        raise ValueError(f"unknown corpus {name!r}; expected one of {', '.join(CORPUS_NAMES)}")
    if slice_name not in SLICES:
        raise ValueError(f"unknown slice {slice_name!r}; expected one of {', '.join(SLICES)}")
    spec = slice_spec(name, slice_name)
    src = _SOURCES[name]()
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cdir / f"{name}-{slice_name}-{_fingerprint(src, spec)}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cached = None
        if isinstance(cached, list) and cached and all(isinstance(d, str) for d in cached):
            return cached
    docs = _take(src, spec)
    if not docs:
        raise CorpusUnavailable(f"{name} corpus: no readable documents under {src.root}")
    cdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    # ensure_ascii keeps lone surrogates (none expected) and any odd code point writable.
    tmp.write_text(json.dumps(docs, ensure_ascii=True), encoding="utf-8")
    os.replace(tmp, path)
    return docs


def load_corpora(
    slice_name: str = "small",
    *,
    names: Iterable[str] = CORPUS_NAMES,
    cache_dir: Path | str | None = None,
) -> dict[str, list[str]]:
    """``{name: documents}`` for each corpus in ``names``."""
    return {n: load_corpus(n, slice_name, cache_dir=cache_dir) for n in names}


if __name__ == "__main__":  # pragma: no cover - manual inspection helper
    sl = sys.argv[1] if len(sys.argv) > 1 else "small"
    for n, d in load_corpora(sl).items():
        print(n, len(d), "docs", sum(len(x.encode("utf-8")) for x in d), "bytes")
