"""What differs between the transformers versions tokenmill drives (4.45 onwards).

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
