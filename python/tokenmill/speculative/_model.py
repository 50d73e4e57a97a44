"""What tokenmill needs from a Hugging Face causal LM to verify a draft tree in one forward, and
the checks that refuse a model it cannot drive exactly.

Measured with transformers 5.x (and checked by tests/test_speculative_model.py for every family
claimed here): a 4D attention mask is passed to the attention kernels unchecked, so it must be
*additive* in the model's dtype (0 = attend, dtype min = masked) for both sdpa and eager (a 0/1
float mask, or a boolean mask under eager, silently gives wrong logits), and `position_ids` must
be given explicitly (depth-based positions; the default would number the tree's nodes 0..n-1).
flash_attention_2 takes no custom mask at all. Sliding-window attention is folded into the mask,
which is why the cache must keep every position (a plain `DynamicCache()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenmill._transformers import truncate_cache

#: Model families whose tree forward is checked against naive recomputation by the test-suite.
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral", "gpt2")
SUPPORTED_ATTENTION = ("sdpa", "eager")


class UnsupportedModelError(ValueError):
    """A model that tokenmill's speculative decoding cannot drive exactly."""


@dataclass(frozen=True)
class ModelInfo:
    vocab_size: int
    dtype: Any
    device: Any
    #: Sliding window folded into the mask (None: full attention).
    window: int | None


def inspect_model(model: Any, max_length: int) -> ModelInfo:
    """Checks that `model` can be driven with tree masks for sequences up to `max_length`."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(model, "forward"):
        raise UnsupportedModelError(
            f"expected a Hugging Face causal LM (a PreTrainedModel), got {type(model).__name__}"
        )
    model_type = getattr(cfg, "model_type", None)
    if getattr(cfg, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{model_type} is an encoder-decoder model; only decoder-only causal LMs are supported"
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; tree verification is checked for "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} only (other families may need different masks, "
            "position ids or cache layouts)"
        )
    attn = getattr(cfg, "_attn_implementation", None) or "eager"
    if attn not in SUPPORTED_ATTENTION:
        raise UnsupportedModelError(
            f"attn_implementation={attn!r} cannot take a tree attention mask; load the model "
            "with attn_implementation='sdpa' (or 'eager') for speculative decoding"
        )
    if getattr(model, "training", False):
        raise UnsupportedModelError(
            "the model is in training mode (dropout would change the logits); call model.eval()"
        )
    window = None
    if model_type in ("mistral", "qwen2"):
        window = getattr(cfg, "sliding_window", None)
        if model_type == "qwen2" and not getattr(cfg, "use_sliding_window", False):
            window = None
        layer_types = getattr(cfg, "layer_types", None)
        if window is not None and layer_types is not None:
            kinds = set(layer_types)
            if kinds == {"full_attention"}:
                window = None
            elif kinds != {"sliding_attention"} and max_length > window:
                raise UnsupportedModelError(
                    "this model mixes sliding-window and full-attention layers and the sequence "
                    f"({max_length} tokens) exceeds the window ({window}): one tree mask cannot "
                    "serve both kinds of layer"
                )
        if window is not None and max_length <= window:
            window = None  # never reached: plain causal attention
    vocab = model.get_output_embeddings().weight.shape[0]
    param = next(model.parameters())
    return ModelInfo(vocab_size=int(vocab), dtype=param.dtype, device=param.device, window=window)


def tree_mask(ancestors: np.ndarray, depths: np.ndarray, prefix_len: int, info: ModelInfo) -> Any:
    """The additive 4D mask `(1, 1, n, prefix_len + n)` of a tree forward: every node sees the
    whole prefix (within the sliding window, if any) and its own ancestors in the tree."""
    import torch

    n = ancestors.shape[0]
    mask = torch.zeros((1, 1, n, prefix_len + n), dtype=info.dtype, device=info.device)
    if info.window is None:
        # Every node sees the whole prefix: only the n x n tree block needs filling.
        blocked = torch.from_numpy(~ancestors).to(info.device)
        mask[0, 0, :, prefix_len:].masked_fill_(blocked, torch.finfo(info.dtype).min)
        return mask
    allowed = np.ones((n, prefix_len + n), dtype=bool)
    allowed[:, prefix_len:] = ancestors
    # Query position q (= prefix_len + depth) sees key position k iff k > q - window; the tree's
    # own keys are ancestors, at most `depth` positions back, so only prefix columns and deep
    # trees with a window smaller than the depth need it.
    q = prefix_len + depths[:, None]
    kpos = np.arange(prefix_len)[None, :]
    allowed[:, :prefix_len] &= kpos > q - info.window
    tree_pos = prefix_len + depths[None, :]
    allowed[:, prefix_len:] &= tree_pos > q - info.window
    blocked = torch.from_numpy(~allowed).to(info.device)
    mask[0, 0].masked_fill_(blocked, torch.finfo(info.dtype).min)
    return mask


def compact_cache(cache: Any, prefix_len: int, nodes: list[int]) -> None:
    """Keeps the prefix and the accepted tree nodes (in path order) in every layer of `cache`,
    dropping the rejected branches."""
    import torch

    keep = len(nodes)
    end = prefix_len + keep
    # Accepted nodes already in place: a path's nodes come in increasing order (parents precede
    # children), so the first `run` of them sit right after the prefix where they belong.
    run = 0
    while run < keep and nodes[run] == run:
        run += 1
    layers = cache.layers
    if run == keep and layers and layers[0].keys.shape[2] == end:
        # Nothing to move or drop (a plain step, or a tree accepted whole): each per-layer
        # operation below is a dispatch of microseconds, and the plain step is the common one.
        return
    if run < keep:
        # Only the accepted nodes out of place move: gather them (a few positions) and write
        # them right after the in-place ones, rather than gathering the whole prefix into a new
        # tensor every step. In place is safe: every forward leaves each layer a fresh tensor
        # (`torch.cat` of the old cache and the new keys), which nothing else refers to; the
        # gather on the right is materialised before the write.
        src = torch.tensor(
            [prefix_len + i for i in nodes[run:]], dtype=torch.long, device=layers[0].keys.device
        )
        start = prefix_len + run
        for layer in layers:
            layer.keys[:, :, start:end] = layer.keys.index_select(2, src)
            layer.values[:, :, start:end] = layer.values.index_select(2, src)
    # Then a view of the first `end` positions.
    truncate_cache(cache, end)


def gather_cache(cache: Any, slots: Any) -> None:
    """Keeps the cache positions `slots` (a 1D int64 tensor, in order) in every layer: one
    gather per tensor."""
    slots = slots.to(cache.layers[0].keys.device)
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(2, slots)
        layer.values = layer.values.index_select(2, slots)
