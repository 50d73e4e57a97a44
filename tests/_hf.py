"""Builders for the HF tokenizer.json variants the parity tests use."""

from __future__ import annotations

import json

HF_VARIANTS = [
    "llama3",
    "llama3-bos",
    "llama3-nfc",
    "gpt2",
    "gpt2-bos",
    "gpt2-prefix-space",
    "gpt2-nfc",
    "qwen3",
]
# Variants whose normalizer is NFC, as Qwen2/2.5/3's tokenizer.json files have.
NFC_VARIANTS = ["llama3-nfc", "gpt2-nfc", "qwen3"]


def qwen3_json() -> str:
    """Qwen3's tokenizer as a tokenizer.json (NFC, Qwen2's Split regex, byte-level BPE, its
    26 added tokens), from the vocabulary quicktok-v1 bundles; the merges are every split of
    every token (transformers' tiktoken converter)."""
    import quicktok

    from tokenmill._builtin_encodings import QWEN2_PAT_STR
    from tokenmill.bench import quicktok_qwen3_vocabulary
    from tokenmill.train import merges_from_ranks, tokenizer_json

    ranks, specials = quicktok_qwen3_vocabulary(quicktok)
    by_id = sorted(ranks, key=ranks.__getitem__)
    assert [ranks[t] for t in by_id] == list(range(len(by_id)))
    return with_nfc(tokenizer_json(by_id, merges_from_ranks(ranks), QWEN2_PAT_STR, specials))


def with_nfc(tokenizer_json: str, as_sequence: bool = False) -> str:
    """The same tokenizer with an NFC normalizer (alone, or as a one-step Sequence)."""
    d = json.loads(tokenizer_json)
    nfc = {"type": "NFC"}
    d["normalizer"] = {"type": "Sequence", "normalizers": [nfc]} if as_sequence else nfc
    return json.dumps(d)


def llama3_with_bos(llama3_json: str) -> str:
    """The Llama-3 file with the post-processor Meta ships upstream: ByteLevel then a
    TemplateProcessing that prepends ``<|begin_of_text|>``."""
    d = json.loads(llama3_json)
    bos = "<|begin_of_text|>"
    bos_id = next(t["id"] for t in d["added_tokens"] if t["content"] == bos)
    d["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {
                "type": "ByteLevel",
                "add_prefix_space": True,
                "trim_offsets": False,
                "use_regex": True,
            },
            {
                "type": "TemplateProcessing",
                "single": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                ],
                "pair": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": bos, "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
            },
        ],
    }
    return json.dumps(d, ensure_ascii=False)


TRAINED_SPECIALS = ["<|endoftext|>", "<|pad|>", "<s>"]
TRAINED_ADDED = ["<custom_tag>", "[[wiki]]", " tokenmill"]


def train_base(texts: list[str]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        min_frequency=2,
        special_tokens=list(TRAINED_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TRAINED_ADDED])
    return tok.to_str()


def trained_variants(base_json: str) -> dict[str, str]:
    """GPT-2-style variants of one trained byte-level BPE model."""
    from tokenizers import Tokenizer, pre_tokenizers, processors

    out = {"gpt2": base_json}

    tok = Tokenizer.from_str(base_json)
    bos_id = tok.token_to_id("<s>")
    assert bos_id is not None
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos_id)]
    )
    out["gpt2-bos"] = tok.to_str()

    tok = Tokenizer.from_str(base_json)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    out["gpt2-prefix-space"] = tok.to_str()
    out["gpt2-nfc"] = with_nfc(base_json, as_sequence=True)
    return out
