"""Tiny random-initialised causal LMs and small trained tokenizers, for unit tests.

They take seconds to make and predict nothing useful: tests that need a model's *mechanics*
(cache handling, masks, exactness against brute force) use these; anything that measures
prediction quality or draft acceptance uses the trained models (`tokenmill models build`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenmill.hf import Tokenizer

ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2")


def hf_config(
    arch: str,
    vocab_size: int,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    sliding_window: int | None = None,
) -> Any:
    """A transformers config of one of `ARCHITECTURES`; shared by the random factory and the
    trained recipes so that both make the same kind of model."""
    import transformers

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
    }
    inner = intermediate_size if intermediate_size is not None else 2 * hidden_size
    if arch == "gpt2":
        return transformers.GPT2Config(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=inner,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    # Grouped-query attention by default, as the real models of these families use.
    kv_heads = num_kv_heads if num_kv_heads is not None else max(1, num_heads // 2)
    llama_like: dict[str, Any] = {
        "hidden_size": hidden_size,
        "intermediate_size": inner,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": False,
        **common,
    }
    if arch == "llama":
        return transformers.LlamaConfig(**llama_like)
    if arch == "qwen2":
        return transformers.Qwen2Config(
            **llama_like,
            use_sliding_window=sliding_window is not None,
            sliding_window=sliding_window,
        )
    if arch == "mistral":
        return transformers.MistralConfig(**llama_like, sliding_window=sliding_window)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def tiny_causal_lm(
    vocab_size: int,
    arch: str = "llama",
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
    dtype: Any = None,
    attn_implementation: str = "sdpa",
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    sliding_window: int | None = None,
    init_std: float = 0.5,
) -> Any:
    """A randomly initialised Hugging Face causal LM (`arch` in llama, qwen2, mistral, gpt2),
    in eval mode, deterministic in `seed`. `init_std` is larger than the usual 0.02 so that
    next-token distributions are far from uniform (sharper distributions catch more bugs).
    `dtype`: a torch dtype (default float32); float64 is useful for exact comparisons."""
    import torch
    import transformers

    cfg = hf_config(
        arch,
        vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        max_positions=max_positions,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        sliding_window=sliding_window,
    )
    cfg.initializer_range = init_std
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        cfg, attn_implementation=attn_implementation
    )
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    return model


@functools.lru_cache(maxsize=16)
def _tiny_tokenizer_json(
    vocab_size: int, pattern: str, special_tokens: tuple[str, ...], n_bytes: int
) -> str:
    from tokenmill._corpora import _code_source
    from tokenmill.train import train_bpe

    src = _code_source()
    texts: list[str] = []
    total = 0
    for path in src.files:
        text = src.reader(path)
        if text is None:
            continue
        texts.append(text)
        total += len(text)
        if total >= n_bytes:
            break
    enc = train_bpe(
        texts,
        vocab_size,
        pattern=pattern,
        special_tokens=special_tokens,
        show_progress=False,
        name=f"tiny-{pattern}-{vocab_size}",
    )
    return enc.to_tokenizer_json()


def tiny_tokenizer(
    vocab_size: int = 512,
    pattern: str = "gpt2-hf",
    *,
    special_tokens: Sequence[str] = ("<|endoftext|>",),
    n_bytes: int = 300_000,
) -> Tokenizer:
    """A byte-level BPE tokenizer trained in about a second on the first `n_bytes` of CPython's
    standard library (in the project's deterministic file order). `pattern` names a
    pre-tokenizer regex of `tokenmill.PATTERNS` (e.g. "gpt2-hf", "llama3"). Special tokens take
    the last ids."""
    from tokenmill.hf import Tokenizer

    return Tokenizer.from_str(
        _tiny_tokenizer_json(vocab_size, pattern, tuple(special_tokens), n_bytes)
    )
