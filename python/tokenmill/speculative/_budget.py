"""The forward cost curve: seconds for one forward over n tree tokens, n = 1..max_nodes.

On a GPU a forward over 64 tokens costs about as much as over one (memory-bound); on a CPU it
grows quickly (compute-bound), so the tree size that pays differs by orders of magnitude between
devices. The curve is measured once per model configuration, device, dtype and thread count (as
EAGLE-2 measures its budget), kept in memory for the model's lifetime and saved on disk
(`cache_dir()`), so that later processes skip the measurement (about a second on a small model,
much more on a large one on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from tokenmill._transformers import cache_kwarg
from tokenmill.speculative._model import ModelInfo, compact_cache, tree_mask

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], np.ndarray]] = (
    weakref.WeakKeyDictionary()
)

#: Tree sizes at which the curve is measured; in between it is interpolated linearly. Every
#: size up to 16: on the CPU the cost of small sizes is not smooth (with MKL on this project's
#: AMD machine a matrix product over 3 rows cost more than over 4, over 5-7 more than over 8),
#: and small trees are where Token Recycling's budget lands.
_POINTS = (*range(1, 17), 20, 24, 32, 40, 48, 56, 64, 80, 96, 128)

#: Version of what a saved curve measures; bumped when the measurement changes (2, 3: the
#: verification work is the Rust pass over the logits on the CPU; the least time of rounds;
#: 4: every size up to 16, and the cost of n is that of the cheapest size >= n).
_FORMAT = 4

#: Environment variable naming the directory of saved cost curves.
CACHE_ENV = "TOKENMILL_SPECULATIVE_DIR"


def cache_dir() -> Path:
    """``$TOKENMILL_SPECULATIVE_DIR``, else ``$XDG_CACHE_HOME/tokenmill/speculative``
    (``~/.cache/...``): where measured cost curves are saved."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tokenmill" / "speculative"


def _key(info: ModelInfo, max_nodes: int, prefix_len: int) -> tuple[Any, ...]:
    import torch

    return (str(info.device), str(info.dtype), torch.get_num_threads(), max_nodes, prefix_len)


def _cpu_name() -> str:
    """The CPU model (a home directory shared by different machines must not share curves);
    `platform.processor()` is empty on Linux, so /proc/cpuinfo is read there."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _disk_key(model: Any, info: ModelInfo, max_nodes: int, prefix_len: int) -> dict[str, Any]:
    """Everything the curve depends on: the architecture (the config, not the weights: cost does
    not depend on their values), attention kernel, device and its model, dtype, threads and
    the library versions (per-layer overhead in transformers is much of a small model's
    forward)."""
    import torch
    import transformers

    cfg = model.config.to_dict()
    # Paths and names do not change the cost; leaving them out lets a copied model reuse it.
    for k in ("_name_or_path", "name_or_path", "_commit_hash"):
        cfg.pop(k, None)
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    config_hash = hashlib.sha256(blob).hexdigest()[:16]
    device = info.device
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = _cpu_name()
    return {
        "format": _FORMAT,
        "model_type": model.config.model_type,
        "config": config_hash,
        "attn": getattr(model.config, "_attn_implementation", None),
        "device": str(device),
        "device_name": device_name,
        "dtype": str(info.dtype),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "max_nodes": max_nodes,
        "prefix_len": prefix_len,
    }


def _path_for(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"cost-{key['model_type']}-{digest}.json"


def _load(path: Path, key: dict[str, Any], max_nodes: int) -> np.ndarray | None:
    """The saved curve, or None when there is none; a file that does not hold a valid curve for
    this key is ignored with a warning (it is then measured again and overwritten)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        warnings.warn(
            f"cannot read the saved cost curve {path} ({e}); measuring it again",
            stacklevel=3,
        )
        return None
    try:
        data = json.loads(text)
        if data.get("key") != key:
            raise ValueError("it was saved for another model, device or version")
        curve = np.asarray(data["costs"], dtype=np.float64)
        if curve.shape != (max_nodes,):
            raise ValueError(f"it holds {curve.size} costs, expected {max_nodes}")
        if not (np.isfinite(curve).all() and (curve > 0).all() and (np.diff(curve) >= 0).all()):
            raise ValueError("its costs are not positive, finite and non-decreasing")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        warnings.warn(
            f"ignoring the saved cost curve {path}: {e}; measuring it again",
            stacklevel=3,
        )
        return None
    return curve


def _save(path: Path, key: dict[str, Any], curve: np.ndarray) -> None:
    """Writes atomically (a temporary file renamed over the target), so that a concurrent
    reader never sees half a file; a cache that cannot be written only costs a re-measurement
    next time, so failures are a warning."""
    data = {"key": key, "costs": [float(c) for c in curve], "measured_at": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"cannot save the cost curve to {path}: {e}", stacklevel=3)
        tmp.unlink(missing_ok=True)


def measure_cost_curve(
    model: Any,
    info: ModelInfo,
    *,
    max_nodes: int = 64,
    prefix_len: int = 128,
    repeats: int = 5,
    persist: bool = True,
) -> np.ndarray:
    """`costs[n - 1]`: seconds (the least of `repeats` rounds) of a forward over an n-node
    chain after `prefix_len` cached tokens plus the verification work on its logits, for
    n = 1..max_nodes, or of a larger such forward when that is cheaper. Cached per
    model, device, dtype and threads in memory and, with `persist`, on disk under `cache_dir()`
    (keyed by the model's configuration, device, dtype, threads and library versions)."""
    per_model = _CACHE.setdefault(model, {})
    key = _key(info, max_nodes, prefix_len)
    if key in per_model:
        return per_model[key]
    path = None
    if persist:
        disk_key = _disk_key(model, info, max_nodes, prefix_len)
        path = _path_for(disk_key)
        curve = _load(path, disk_key, max_nodes)
        if curve is not None:
            per_model[key] = curve
            return curve
    curve = _measure(model, info, max_nodes=max_nodes, prefix_len=prefix_len, repeats=repeats)
    if path is not None:
        _save(path, disk_key, curve)
    per_model[key] = curve
    return curve


def _measure(
    model: Any, info: ModelInfo, *, max_nodes: int, prefix_len: int, repeats: int
) -> np.ndarray:
    import torch
    import transformers

    from tokenmill._core import Speculator
    from tokenmill.speculative import _TORCH_REDUCTIONS

    max_pos = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    if max_pos is not None:
        prefix_len = max(1, min(prefix_len, int(max_pos) - max_nodes))
    points = [p for p in _POINTS if p < max_nodes] + [max_nodes]
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, info.vocab_size, (1, prefix_len), generator=gen).to(info.device)
    host = info.device.type == "cpu" and not _TORCH_REDUCTIONS
    # The verification work of a step grows with n too (on the CPU: Token Recycling's top-k
    # over each distinct tree token's row, the argmax at the visited nodes), so it is part of
    # the cost; a speculator holding the measured chain does exactly that work.
    spec = Speculator(info.vocab_size, [("recycling", 1.0)])
    inputs = []
    for n in points:
        depths = np.arange(n)
        ancestors = np.tril(np.ones((n, n), dtype=bool))
        mask = None if n == 1 else tree_mask(ancestors, depths, prefix_len, info)
        ids = torch.randint(0, info.vocab_size, (1, n), generator=gen).to(info.device)
        pos = torch.from_numpy(prefix_len + depths)[None].to(info.device)
        inputs.append((n, ids, pos, mask))
    cache = transformers.DynamicCache()
    cache_kw = {cache_kwarg(model): cache}
    samples: list[list[float]] = [[] for _ in points]
    with torch.inference_mode():
        model(input_ids=prefix, **cache_kw, use_cache=True)
        # Rounds over all sizes rather than all repeats of one size after another, and the
        # minimum per size: on a machine shared with other work a burst of load then slows one
        # sample of each size instead of every sample of a few sizes, which would bend the
        # curve (and a bent curve is saved on disk for later processes).
        for r in range(repeats + 1):
            for i, (n, ids, pos, mask) in enumerate(inputs):
                spec.set_tree(ids[0].cpu().numpy(), np.arange(-1, n - 1, dtype=np.int64))
                if info.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                logits = (
                    model(
                        input_ids=ids,
                        position_ids=pos,
                        attention_mask=mask,
                        **cache_kw,
                        use_cache=True,
                    )
                    .logits[0]
                    .float()
                )
                if host:
                    rows = logits.numpy()
                    spec.verify_greedy_logits(rows)
                    spec.recycle_logits(rows)
                else:
                    logits.argmax(-1).cpu()
                    top = torch.topk(logits, 8, dim=-1)
                    torch.exp(top.values - torch.logsumexp(logits, -1, keepdim=True)).cpu()
                if info.device.type == "cuda":
                    torch.cuda.synchronize()
                if r > 0:  # the first round warms caches and allocators up
                    samples[i].append(time.perf_counter() - t0)
                compact_cache(cache, prefix_len, [])
    times = np.array([min(s) for s in samples])
    # The cost of n nodes is that of the cheapest forward over at least n: when a larger
    # forward is cheaper (the matrix kernels' blocking, or noise), the budget grows the tree to
    # it, since drafts at equal cost only add expected tokens. (A tree whose drafters run out
    # of candidates before that size pays the dearer smaller forward; Token Recycling's matrix
    # offers k candidates per node, so its trees do not.) This keeps the curve non-decreasing.
    cheapest = np.minimum.accumulate(times[::-1])[::-1]
    return np.interp(np.arange(1, max_nodes + 1), points, cheapest)
