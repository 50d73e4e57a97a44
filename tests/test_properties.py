"""Property tests (hypothesis): tokenmill agrees with tiktoken / HF tokenizers on arbitrary
text — emoji and ZWJ sequences, combining marks, CJK, control characters, whitespace runs,
contractions, digits, lone surrogates — and on arbitrary bytes and id lists."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from _helpers import (
    SPECIALS,
    describe_encoding_mismatch,
    describe_id_mismatch,
    no_panic,
    same_outcome,
)

PIECES = [
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "\t",
    "\x0b",
    "\x0c",
    "\u00a0",
    "\u2009",
    "\u3000",
    "\u2028",
    "\u0085",
    "'s",
    "'S",
    "'ll",
    "'LL",
    "'Re",
    "'ve",
    "'m",
    "'d",
    "'t",
    "'",
    "😀",
    "👍🏽",
    "👨\u200d👩\u200d👧",
    "🇯🇵",
    "e\u0301",
    "\u0301",
    "\u0308\u0301",
    "a\u20dd",
    "日本語",
    "中文字符",
    "한국어",
    "ひらがな",
    "カタカナ",
    "ไทย",
    "हिन्दी",
    "العربية",
    "עברית",
    "١٢٣",
    "123",
    "1234567",
    "3.14",
    "0x1F",
    "Hello",
    " world",
    "WORLD",
    "İ",
    "ß",
    "ﬁ",
    "\x00",
    "\x01",
    "\x1b[0m",
    "\x7f",
    "\ufeff",
    "\u200d",
    "\u200b",
    "\ufffd",
    "\U0010ffff",
    "<|",
    "|>",
    "<|endoftext",
    "endoftext|>",
    "def f(x):\n    return x",
    "</div>",
    "&amp;",
]
WHITESPACE = " \t\n\r\u00a0\u3000\x0b\x0c\u2028\u0085"

_piece = st.one_of(
    st.text(max_size=12),
    st.sampled_from(PIECES),
    st.text(alphabet=WHITESPACE, min_size=1, max_size=64),
    st.text(alphabet="aA1 ", min_size=1, max_size=64),
)
texts = st.lists(_piece, max_size=24).map("".join)
surrogate_texts = st.lists(
    st.one_of(_piece, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
    min_size=1,
    max_size=16,
).map("".join)
special_texts = st.lists(st.one_of(_piece, st.sampled_from(SPECIALS)), max_size=16).map("".join)
allowed_sets = st.one_of(
    st.just("all"),
    st.sets(st.sampled_from([*SPECIALS, "<|not_a_special|>"])),
)
disallowed_sets = st.one_of(
    st.just("all"),
    st.just(()),
    st.sets(st.sampled_from(SPECIALS)),
)


def _ids_msg(label: str, text: str, exp: list[int], got: Any, tt: Any) -> str:
    return describe_id_mismatch(label, 0, text, exp, got, tt.decode_single_token_bytes)


# ----------------------------------------------------------------------------------------
# Encoding parity with tiktoken


@given(texts)
@example("")
@example(" " * 300 + "x")
@example("\n \n\n  \t\r\n" * 20)
@example("I'M'S'LL're've")
def test_encode_ordinary_matches_tiktoken(tm_cl100k_registry: Any, tt_cl100k: Any, s: str) -> None:
    exp = tt_cl100k.encode_ordinary(s)
    got = no_panic(lambda: tm_cl100k_registry.encode_ordinary(s))
    assert got == exp, _ids_msg("encode_ordinary", s, exp, got, tt_cl100k)
    got2 = no_panic(lambda: tm_cl100k_registry.encode(s, disallowed_special=()))
    assert got2 == tt_cl100k.encode(s, disallowed_special=())


@given(surrogate_texts)
@example("\ud800")
@example("a\udfffb")
@example("\ud83d\ude00")  # a surrogate *pair* in a str: tiktoken joins it into one emoji
@example("\ude00\ud83d")
def test_lone_surrogates_match_tiktoken(tm_cl100k_registry: Any, tt_cl100k: Any, s: str) -> None:
    """tiktoken re-encodes text with surrogates via UTF-16 surrogatepass and errors='replace'
    (pairs become their character, lone ones U+FFFD); tokenmill must give the same ids."""
    for what, f in [
        ("encode_ordinary", lambda e: e.encode_ordinary(s)),
        ("encode", lambda e: e.encode(s)),
        ("encode(disallowed_special=())", lambda e: e.encode(s, disallowed_special=())),
        ("encode_ordinary_batch", lambda e: e.encode_ordinary_batch([s, s])),
        ("encode_batch", lambda e: e.encode_batch([s])),
    ]:
        same_outcome(
            lambda f=f: f(tt_cl100k), lambda f=f: f(tm_cl100k_registry), what=f"{what}({s!r})"
        )


@given(special_texts, allowed_sets, disallowed_sets)
@example("<|endoftext|>", {"<|endoftext|>"}, {"<|endoftext|>"})
@example("a<|endoftext|>b", set(), ())
@example("<|fim_prefix|><|fim_suffix|>", {"<|not_a_special|>"}, "all")
def test_special_tokens_match_tiktoken(
    tm_cl100k_registry: Any, tt_cl100k: Any, s: str, allowed: Any, disallowed: Any
) -> None:
    same_outcome(
        lambda: tt_cl100k.encode(s, allowed_special=allowed, disallowed_special=disallowed),
        lambda: tm_cl100k_registry.encode(
            s, allowed_special=allowed, disallowed_special=disallowed
        ),
        what=f"encode({s!r}, allowed_special={allowed!r}, disallowed_special={disallowed!r})",
    )
    same_outcome(
        lambda: tt_cl100k.encode_batch(
            [s, "x"], allowed_special=allowed, disallowed_special=disallowed
        ),
        lambda: tm_cl100k_registry.encode_batch(
            [s, "x"], allowed_special=allowed, disallowed_special=disallowed
        ),
        what=f"encode_batch([{s!r}], allowed_special={allowed!r}, "
        f"disallowed_special={disallowed!r})",
    )
    same_outcome(
        lambda: tt_cl100k.encode_to_numpy(
            s, allowed_special=allowed, disallowed_special=disallowed
        ).tolist(),
        lambda: tm_cl100k_registry.encode_to_numpy(
            s, allowed_special=allowed, disallowed_special=disallowed
        ).tolist(),
        what=f"encode_to_numpy({s!r}, allowed_special={allowed!r}, "
        f"disallowed_special={disallowed!r})",
    )


@given(
    st.lists(st.one_of(texts, st.sampled_from(SPECIALS)), max_size=10).map("".join),
    st.integers(min_value=0, max_value=10**6),
)
def test_encode_with_unstable_matches(
    tm_cl100k_registry: Any, tt_cl100k: Any, s: str, cut: int
) -> None:
    p = s[: cut % (len(s) + 1)]
    same_outcome(
        lambda: _norm_unstable(tt_cl100k.encode_with_unstable(p, allowed_special="all")),
        lambda: _norm_unstable(tm_cl100k_registry.encode_with_unstable(p, allowed_special="all")),
        what=f"encode_with_unstable({p!r})",
    )


def _norm_unstable(r: Any) -> Any:
    stable, comps = r
    return list(stable), sorted(tuple(c) for c in comps)


# ----------------------------------------------------------------------------------------
# Round trips


@given(texts)
def test_round_trip(tm_cl100k_registry: Any, s: str) -> None:
    ids = no_panic(lambda: tm_cl100k_registry.encode_ordinary(s))
    assert tm_cl100k_registry.decode(ids) == s
    assert tm_cl100k_registry.decode_bytes(ids) == s.encode("utf-8")
    assert b"".join(tm_cl100k_registry.decode_tokens_bytes(ids)) == s.encode("utf-8")
    text, offsets = tm_cl100k_registry.decode_with_offsets(ids)
    assert text == s and len(offsets) == len(ids)


@given(special_texts)
def test_round_trip_with_specials(tm_cl100k_registry: Any, s: str) -> None:
    ids = no_panic(lambda: tm_cl100k_registry.encode(s, allowed_special="all"))
    assert tm_cl100k_registry.decode(ids) == s


# ----------------------------------------------------------------------------------------
# Bytes and ids


@given(st.binary(max_size=300))
@example(b"\xff\xfe\x80")
@example(b"\xe2\x82")  # truncated 3-byte sequence
@example(b"\xed\xa0\x80")  # UTF-8 encoded surrogate
def test_random_bytes_through_decode(tm_cl100k_registry: Any, tt_cl100k: Any, b: bytes) -> None:
    ids_bpe = tt_cl100k._encode_bytes(b)
    ids_single = [tt_cl100k.encode_single_token(bytes([x])) for x in b]
    for ids in (ids_bpe, ids_single):
        assert tm_cl100k_registry.decode_bytes(ids) == b
        assert tm_cl100k_registry.decode_tokens_bytes(ids) == tt_cl100k.decode_tokens_bytes(ids)
        for errors in ("replace", "ignore", "strict", "backslashreplace", "surrogateescape"):
            same_outcome(
                lambda e=errors, ids=ids: tt_cl100k.decode(ids, errors=e),
                lambda e=errors, ids=ids: tm_cl100k_registry.decode(ids, errors=e),
                what=f"decode({ids}, errors={errors!r}) for bytes {b!r}",
            )
        same_outcome(
            lambda ids=ids: tt_cl100k.decode_with_offsets(ids),
            lambda ids=ids: tm_cl100k_registry.decode_with_offsets(ids),
            what=f"decode_with_offsets({ids})",
        )
    # Encoding the bytes' lossy text must match too.
    t = b.decode("utf-8", errors="replace")
    assert tm_cl100k_registry.encode_ordinary(t) == tt_cl100k.encode_ordinary(t)


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=100255),
            st.sampled_from([100257, 100258, 100259, 100260, 100276]),
        ),
        max_size=60,
    )
)
def test_random_ids_decode(tm_cl100k_registry: Any, tt_cl100k: Any, ids: list[int]) -> None:
    assert tm_cl100k_registry.decode_bytes(ids) == tt_cl100k.decode_bytes(ids)
    assert tm_cl100k_registry.decode(ids) == tt_cl100k.decode(ids)
    assert tm_cl100k_registry.decode_batch([ids, ids[::-1]]) == tt_cl100k.decode_batch(
        [ids, ids[::-1]]
    )
    same_outcome(
        lambda: tt_cl100k.decode_with_offsets(ids),
        lambda: tm_cl100k_registry.decode_with_offsets(ids),
        what=f"decode_with_offsets({ids})",
    )


@given(
    st.lists(st.integers(min_value=0, max_value=100276), max_size=4),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.integers(min_value=0, max_value=4),
)
def test_arbitrary_int_ids_decode(
    tm_cl100k_registry: Any, tt_cl100k: Any, valid: list[int], odd: int, pos: int
) -> None:
    """One arbitrary int (maybe out of range, negative or huge) among valid ids."""
    ids = [*valid[:pos], odd, *valid[pos:]]
    """Out-of-range / negative / huge ids: same outcome (value or exception type)."""
    for what, f in [
        ("decode", lambda e: e.decode(ids)),
        ("decode_bytes", lambda e: e.decode_bytes(ids)),
        ("decode_single_token_bytes", lambda e: e.decode_single_token_bytes(ids[0])),
        ("decode_tokens_bytes", lambda e: e.decode_tokens_bytes(ids)),
    ]:
        same_outcome(
            lambda f=f: f(tt_cl100k), lambda f=f: f(tm_cl100k_registry), what=f"{what}({ids})"
        )


# ----------------------------------------------------------------------------------------
# HF Llama-3


@given(st.one_of(texts, surrogate_texts))
@example("")
@example("  hello")
@example("<|begin_of_text|>x<|eot_id|>")
@example("a\ud800b")
def test_llama3_matches_hf(hf_pairs: dict[str, tuple[Any, Any]], s: str) -> None:
    ref, lazy = hf_pairs["llama3"]
    got = lazy.get()
    rk = same_outcome(
        lambda: _fields(ref.encode(s)),
        lambda: _fields(got.encode(s)),
        what=f"Tokenizer.encode({s!r}) fields",
    )
    if isinstance(rk, BaseException):
        return
    r = ref.encode(s)
    g = got.encode(s)
    msg = describe_encoding_mismatch("llama3 encode", 0, s, r, g)
    assert msg is None, msg
    for skip in (True, False):
        assert got.decode(r.ids, skip_special_tokens=skip) == ref.decode(
            r.ids, skip_special_tokens=skip
        )


def _fields(e: Any) -> tuple[list[int], list[str], list[tuple[int, int]], list[int]]:
    return list(e.ids), list(e.tokens), [tuple(o) for o in e.offsets], list(e.attention_mask)


_ADDED = ["<|endoftext|>", "<|pad|>", "<s>", "<custom_tag>", "[[wiki]]", " tokenmill"]


@given(
    st.sampled_from(["gpt2", "gpt2-bos", "gpt2-prefix-space", "llama3-bos"]),
    st.lists(st.one_of(_piece, st.sampled_from(_ADDED)), max_size=16).map("".join),
    st.booleans(),
)
@example("gpt2", "a<custom_tag>b", True)
@example("gpt2-prefix-space", " tokenmill tokenmill", False)
def test_trained_tokenizers_match_hf(
    hf_pairs: dict[str, tuple[Any, Any]], variant: str, s: str, add: bool
) -> None:
    ref, lazy = hf_pairs[variant]
    got = lazy.get()
    r = ref.encode(s, add_special_tokens=add)
    g = no_panic(lambda: got.encode(s, add_special_tokens=add))
    msg = describe_encoding_mismatch(f"{variant} encode(add_special_tokens={add})", 0, s, r, g)
    assert msg is None, msg
    for skip in (True, False):
        assert got.decode(r.ids, skip_special_tokens=skip) == ref.decode(
            r.ids, skip_special_tokens=skip
        )
