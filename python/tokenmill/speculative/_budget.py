"""The forward cost curve: seconds for one forward over n tree tokens, n = 1..max_nodes.

On a GPU a forward over 64 tokens costs about as much as over one (memory-bound); on a CPU it
grows quickly (compute-bound), so the tree size that pays differs by orders of magnitude between
devices. The curve is measured once per model, device, dtype and thread count (as EAGLE-2
measures its budget) and cached in memory for the model's lifetime.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import numpy as np

from tokenmill.speculative._model import ModelInfo, compact_cache, tree_mask

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], np.ndarray]] = (
    weakref.WeakKeyDictionary()
)

#: Tree sizes at which the curve is measured; in between it is interpolated linearly.
_POINTS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 128)


def _key(info: ModelInfo, max_nodes: int, prefix_len: int) -> tuple[Any, ...]:
    import torch

    return (str(info.device), str(info.dtype), torch.get_num_threads(), max_nodes, prefix_len)


def measure_cost_curve(
    model: Any,
    info: ModelInfo,
    *,
    max_nodes: int = 64,
    prefix_len: int = 128,
    repeats: int = 5,
) -> np.ndarray:
    """`costs[n - 1]`: median seconds of a forward over an n-node chain after `prefix_len`
    cached tokens plus the verification work on its logits, for n = 1..max_nodes (cached per
    model, device, dtype, threads)."""
    import torch
    import transformers

    per_model = _CACHE.setdefault(model, {})
    key = _key(info, max_nodes, prefix_len)
    if key in per_model:
        return per_model[key]
    max_pos = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    if max_pos is not None:
        prefix_len = max(1, min(prefix_len, int(max_pos) - max_nodes))
    points = [p for p in _POINTS if p < max_nodes] + [max_nodes]
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, info.vocab_size, (1, prefix_len), generator=gen).to(info.device)
    cache = transformers.DynamicCache()
    times: list[float] = []
    with torch.inference_mode():
        model(input_ids=prefix, past_key_values=cache, use_cache=True)
        for n in points:
            depths = np.arange(n)
            ancestors = np.tril(np.ones((n, n), dtype=bool))
            mask = None if n == 1 else tree_mask(ancestors, depths, prefix_len, info)
            ids = torch.randint(0, info.vocab_size, (1, n), generator=gen).to(info.device)
            pos = torch.from_numpy(prefix_len + depths)[None].to(info.device)
            samples = []
            for r in range(repeats + 1):
                if info.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                logits = (
                    model(
                        input_ids=ids,
                        position_ids=pos,
                        attention_mask=mask,
                        past_key_values=cache,
                        use_cache=True,
                    )
                    .logits[0]
                    .float()
                )
                # The per-node work of verification grows with n too (argmax, Token
                # Recycling's top-k and normaliser over the vocabulary): part of the cost.
                logits.argmax(-1)
                torch.topk(logits, 8, dim=-1)
                torch.logsumexp(logits, -1)
                if info.device.type == "cuda":
                    torch.cuda.synchronize()
                if r > 0:  # the first run warms caches and allocators up
                    samples.append(time.perf_counter() - t0)
                compact_cache(cache, prefix_len, [])
            times.append(float(np.median(samples)))
    # Costs cannot decrease with n; measurement noise can make them look so.
    curve = np.interp(np.arange(1, max_nodes + 1), points, np.maximum.accumulate(times))
    per_model[key] = curve
    return curve
