"""Pre-tokenizer chains beyond the Llama-3 file: DeepSeek-style `Sequence`s of `Split`s,
`Digits`, every `Split` behavior, `invert`, literal `String` patterns and the Oniguruma reading
of `{1,3}+`. Each variant keeps the Llama-3 vocabulary and merges and swaps the pre-tokenizer,
and tokenmill must agree with HF `tokenizers` on ids, tokens and offsets."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tokenizers
from tests import corpora
from tests._helpers import assert_same_encodings

import tokenmill

BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": False,
}


def _split(
    pattern: str, behavior: str = "Isolated", invert: bool = False, literal: bool = False
) -> dict[str, Any]:
    return {
        "type": "Split",
        "pattern": {"String" if literal else "Regex": pattern},
        "behavior": behavior,
        "invert": invert,
    }


# DeepSeek-V3's chain: digits, then CJK runs, then a GPT-4-like regex, then ByteLevel.
DEEPSEEK = [
    _split(r"\p{N}{1,3}"),
    _split(r"[一-龥぀-ゟ゠-ヿ]+"),  # noqa: RUF001 (the katakana range is the point)
    _split(
        r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
    BYTE_LEVEL,
]

CHAINS: dict[str, list[dict[str, Any]]] = {
    "deepseek": DEEPSEEK,
    "digits+gpt2": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
    "removed-spaces": [_split(" ", "Removed", literal=True), BYTE_LEVEL],
    "merged-with-previous": [_split(r"\s+", "MergedWithPrevious"), BYTE_LEVEL],
    "merged-with-next": [_split(r"[.,;:]", "MergedWithNext"), BYTE_LEVEL],
    "contiguous": [_split(r"\p{P}", "Contiguous"), BYTE_LEVEL],
    "inverted": [_split(r"\p{L}+", "Isolated", invert=True), BYTE_LEVEL],
    # tiktoken's cl100k spelling: Oniguruma reads `{1,3}+` as a repeated interval.
    "onig-repeated-interval": [
        _split(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        BYTE_LEVEL,
    ],
}


@pytest.fixture(scope="module")
def chain_pairs(llama3_json: str) -> dict[str, tuple[Any, Any]]:
    base = json.loads(llama3_json)
    out = {}
    for name, steps in CHAINS.items():
        d = dict(base)
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps}
        s = json.dumps(d)
        out[name] = (tokenizers.Tokenizer.from_str(s), tokenmill.Tokenizer.from_str(s))
    return out


@pytest.mark.parametrize("corpus", ["code", "prose", "multilingual"])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_chain_matches_hf(chain: str, corpus: str, chain_pairs: dict[str, tuple[Any, Any]]) -> None:
    ref, got = chain_pairs[chain]
    docs = corpora.corpus(corpus, "small")[:40]
    assert_same_encodings(
        f"{chain}/{corpus}", docs, [ref.encode(d) for d in docs], [got.encode(d) for d in docs]
    )


def test_chains_really_split_differently(chain_pairs: dict[str, tuple[Any, Any]]) -> None:
    # Guards against a fixture that silently kept the original pre-tokenizer.
    text = "x = 12345 + foo.bar;  日本語テキスト\n"
    ids = {name: tuple(pair[0].encode(text).ids) for name, pair in chain_pairs.items()}
    assert len(set(ids.values())) >= 5, ids
