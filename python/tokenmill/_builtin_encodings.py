"""The public OpenAI encodings, as tiktoken defines them (names, patterns, special tokens,
file locations and hashes). Their files are read from tiktoken's cache or a local copy; see
`tokenmill.load` for how to supply them offline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenmill.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

R50K_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
LLAMA3_PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
GPT2_HF_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: Named patterns, for training and for users building encodings.
PATTERNS: dict[str, str] = {
    "gpt2": R50K_PAT_STR,
    "r50k": R50K_PAT_STR,
    "gpt2-hf": GPT2_HF_PAT_STR,
    "cl100k": CL100K_PAT_STR,
    "o200k": O200K_PAT_STR,
    "llama3": LLAMA3_PAT_STR,
    "qwen2": QWEN2_PAT_STR,
}

_BLOB = "https://openaipublic.blob.core.windows.net"


def gpt2() -> dict[str, Any]:
    mergeable_ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=f"{_BLOB}/gpt-2/encodings/main/vocab.bpe",
        encoder_json_file=f"{_BLOB}/gpt-2/encodings/main/encoder.json",
        vocab_bpe_hash="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        encoder_json_hash="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    )
    return {
        "name": "gpt2",
        "explicit_n_vocab": 50257,
        "pat_str": R50K_PAT_STR,
        "mergeable_ranks": mergeable_ranks,
        "special_tokens": {ENDOFTEXT: 50256},
    }


def r50k_base() -> dict[str, Any]:
    return {
        "name": "r50k_base",
        "explicit_n_vocab": 50257,
        "pat_str": R50K_PAT_STR,
        "mergeable_ranks": load_tiktoken_bpe(
            f"{_BLOB}/encodings/r50k_base.tiktoken",
            expected_hash="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        ),
        "special_tokens": {ENDOFTEXT: 50256},
    }


def _p50k_ranks() -> dict[bytes, int]:
    return load_tiktoken_bpe(
        f"{_BLOB}/encodings/p50k_base.tiktoken",
        expected_hash="94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    )


def p50k_base() -> dict[str, Any]:
    return {
        "name": "p50k_base",
        "explicit_n_vocab": 50281,
        "pat_str": R50K_PAT_STR,
        "mergeable_ranks": _p50k_ranks(),
        "special_tokens": {ENDOFTEXT: 50256},
    }


def p50k_edit() -> dict[str, Any]:
    return {
        "name": "p50k_edit",
        "pat_str": R50K_PAT_STR,
        "mergeable_ranks": _p50k_ranks(),
        "special_tokens": {
            ENDOFTEXT: 50256,
            FIM_PREFIX: 50281,
            FIM_MIDDLE: 50282,
            FIM_SUFFIX: 50283,
        },
    }


def cl100k_base() -> dict[str, Any]:
    return {
        "name": "cl100k_base",
        "pat_str": CL100K_PAT_STR,
        "mergeable_ranks": load_tiktoken_bpe(
            f"{_BLOB}/encodings/cl100k_base.tiktoken",
            expected_hash="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        ),
        "special_tokens": {
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    }


O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def o200k_base_spec(mergeable_ranks: dict[bytes, int]) -> dict[str, Any]:
    """o200k_base's constructor arguments around ranks obtained elsewhere."""
    return {
        "name": "o200k_base",
        "pat_str": O200K_PAT_STR,
        "mergeable_ranks": mergeable_ranks,
        "special_tokens": {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    }


def o200k_base() -> dict[str, Any]:
    return o200k_base_spec(
        load_tiktoken_bpe(f"{_BLOB}/encodings/o200k_base.tiktoken", expected_hash=O200K_BASE_SHA256)
    )


def o200k_harmony() -> dict[str, Any]:
    base = o200k_base()
    special_tokens = {
        **base["special_tokens"],
        "<|startoftext|>": 199998,
        "<|endoftext|>": 199999,
        "<|reserved_200000|>": 200000,
        "<|reserved_200001|>": 200001,
        "<|return|>": 200002,
        "<|constrain|>": 200003,
        "<|reserved_200004|>": 200004,
        "<|channel|>": 200005,
        "<|start|>": 200006,
        "<|end|>": 200007,
        "<|message|>": 200008,
        "<|reserved_200009|>": 200009,
        "<|reserved_200010|>": 200010,
        "<|reserved_200011|>": 200011,
        "<|call|>": 200012,
    } | {f"<|reserved_{i}|>": i for i in range(200013, 201088)}
    return {**base, "name": "o200k_harmony", "special_tokens": special_tokens}


ENCODING_CONSTRUCTORS: dict[str, Callable[[], dict[str, Any]]] = {
    "gpt2": gpt2,
    "r50k_base": r50k_base,
    "p50k_base": p50k_base,
    "p50k_edit": p50k_edit,
    "cl100k_base": cl100k_base,
    "o200k_base": o200k_base,
    "o200k_harmony": o200k_harmony,
}
