"""What differs between the transformers versions tokenmill drives (4.45 onwards).

The KV cache is a `transformers.DynamicCache()` made by tokenmill itself (plain full-attention
layers, sliding windows being folded into the masks): it is cut back by narrowing each layer's
tensors, not with `cache.crop`, whose argument changed meaning within transformers 5.x and whose
per-layer wrappers cost more than the views (once per byte in `tokenmill.bytelm`).

transformers 5.25 renamed the forward's KV-cache argument from `past_key_values` to `cache`: the
old name still works there but raises a `FutureWarning` on every call (removal announced for
5.40), and the new name is an unexpected keyword before 5.25. So the name is read off the
model's own `forward` signature, once per model class.
"""

from __future__ import annotations

import inspect
from typing import Any

_CACHE_KWARG: dict[type, str] = {}


def cache_kwarg(model: Any) -> str:
    """The keyword under which `model`'s forward takes its KV cache."""
    cls = type(model)
    name = _CACHE_KWARG.get(cls)
    if name is None:
        try:
            params = inspect.signature(cls.forward).parameters
        except (AttributeError, TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        name = _CACHE_KWARG[cls] = "cache" if "cache" in params else "past_key_values"
    return name


def truncate_cache(cache: Any, length: int) -> None:
    """Keeps the first `length` positions of every layer of `cache` (views, no copy)."""
    for layer in cache.layers:
        if layer.keys is not None:
            layer.keys = layer.keys.narrow(2, 0, length)
            layer.values = layer.values.narrow(2, 0, length)
