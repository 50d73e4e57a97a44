"""Functions run in spawned worker processes (must be importable by module name)."""

from __future__ import annotations

import pickle
from typing import Any


def encode_with_pickled(payload: bytes, texts: list[str]) -> list[list[int]]:
    enc = pickle.loads(payload)
    return [enc.encode(t, allowed_special="all") for t in texts]


def hf_encode_with_pickled(payload: bytes, texts: list[str]) -> list[tuple[Any, ...]]:
    tok = pickle.loads(payload)
    out = []
    for t in texts:
        e = tok.encode(t)
        out.append((list(e.ids), list(e.tokens), [tuple(o) for o in e.offsets]))
    return out
