"""Data-mixture inference from a BPE merge list (Hayase, Liu, Choi, Oh & Smith, 2024, "Data
Mixture Inference: What do BPE Tokenizers Reveal about their Training Data?").

A BPE tokenizer's ordered merge list is a trace of its training data: merge `t` was the most
frequent pair after applying merges `1..t-1`. Given sample text for each of `n` categories,
let `c[t, i, p]` be the frequency of pair `p` (occurrences per byte of sample) in category `i`
after the first `t - 1` merges. If the tokenizer was trained on a mixture with byte
proportions `alpha`, then at every step the mixed frequency of the chosen merge `m_t` is at
least that of any other pair:

    sum_i alpha_i (c[t, i, m_t] - c[t, i, p]) >= 0     for all t, p.

Samples are not the training data, so the constraints are relaxed with non-negative slacks,
one per step (`v_t`) and one per pair (`u_p`, a pair over-represented in the samples), and
the linear program minimises the total relaxation:

    minimise  sum_t v_t + sum_p u_p
    s.t.      sum_i alpha_i (c[t, i, m_t] - c[t, i, p]) + v_t + u_p >= 0
              alpha >= 0,  sum_i alpha_i = 1,  v >= 0,  u >= 0.

The pair counts come from replaying the merges on each category's words in Rust
(`tokenmill._core.replay_merges`); the competing pairs `p` at each step are the `top_k` most
frequent pairs of every category (the pairs that can be violated). The LP is solved with
SciPy's HiGHS (`scipy.optimize.linprog`); SciPy is an optional dependency
(`pip install tokenmill[train]`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenmill import _core

__all__ = ["MixtureEstimate", "infer_mixture", "merges_from_ranks", "merges_from_tokenizer_json"]


@dataclass
class MixtureEstimate:
    """The inferred proportions (summing to 1, in the order of the categories given) and
    diagnostics of the linear program."""

    proportions: dict[str, float]
    n_merges: int
    n_constraints: int
    objective: float
    extra: dict[str, Any] = field(default_factory=dict)


def merges_from_tokenizer_json(path_or_json: str | os.PathLike[str]) -> list[tuple[bytes, bytes]]:
    """The ordered merge list of a byte-level BPE `tokenizer.json` (a path or its contents)."""
    import json

    from tokenmill.train import _BYTE_CHARS

    s = os.fspath(path_or_json)
    if not s.lstrip().startswith("{"):
        with open(s, encoding="utf-8") as f:
            s = f.read()
    model = json.loads(s)["model"]
    dec = {c: b for b, c in enumerate(_BYTE_CHARS)}

    def to_bytes(tok: str) -> bytes:
        return bytes(dec[c] for c in tok)

    out = []
    for m in model["merges"]:
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        out.append((to_bytes(left), to_bytes(right)))
    return out


def merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The ordered merge list implied by tiktoken-style ranks: for each multi-byte token in rank
    order, the two tokens that BPE with only the lower ranks reduces its bytes to."""
    items = sorted(ranks.items(), key=lambda kv: kv[1])
    out: list[tuple[bytes, bytes]] = []
    for tok, rank in items:
        if len(tok) < 2:
            continue
        parts = [tok[i : i + 1] for i in range(len(tok))]
        while len(parts) > 2:
            best, at = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
    return out


def _merge_list(merges: Any) -> list[tuple[bytes, bytes]]:
    from tokenmill.core import Encoding
    from tokenmill.train import TrainedEncoding

    if isinstance(merges, TrainedEncoding):
        return merges.merges
    if isinstance(merges, Encoding):
        return merges_from_ranks(merges._mergeable_ranks)
    if isinstance(merges, (str, os.PathLike)):
        return merges_from_tokenizer_json(merges)
    return [(bytes(a), bytes(b)) for a, b in merges]


def infer_mixture(
    merges: Any,
    samples: Mapping[str, Sequence[str]],
    *,
    pat_str: str | None = None,
    pattern: str | None = None,
    n_merges: int | None = 1000,
    top_k: int = 30,
    num_threads: int | None = None,
) -> MixtureEstimate:
    """Estimates the proportions (by bytes) of the categories in `samples` in the data the
    tokenizer with `merges` was trained on.

    `merges`: a `TrainedEncoding`, any tiktoken-style `Encoding` (merges are recovered from the
    ranks), a `tokenizer.json` path or string, or a list of `(left, right)` byte pairs.
    `samples`: `{category: texts}`, ideally text not used to train the tokenizer. The pattern
    (`pat_str` or a `pattern` name; by default the encoding's own, else `"gpt2-hf"`) must be
    the tokenizer's pre-tokenizer. `n_merges`: how many leading merges give constraints.
    """
    try:
        import numpy as np
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "data-mixture inference needs SciPy: pip install 'tokenmill[train]'"
        ) from e
    from tokenmill.core import Encoding
    from tokenmill.train import _default_threads, _resolve_pattern

    if not samples:
        raise ValueError("samples must name at least one category")
    if pat_str is None and pattern is None and isinstance(merges, Encoding):
        pat = merges._pat_str
    else:
        pat = _resolve_pattern(pat_str, pattern)
    merge_list = _merge_list(merges)
    if n_merges is not None:
        merge_list = merge_list[:n_merges]
    if not merge_list:
        raise ValueError("the tokenizer has no merges")
    names = list(samples)
    texts = [list(samples[n]) for n in names]
    sizes = np.array([sum(len(t.encode("utf-8", "replace")) for t in ts) for ts in texts], float)
    if (sizes == 0).any():
        empty = [n for n, s in zip(names, sizes, strict=True) if s == 0]
        raise ValueError(f"no sample text for {', '.join(empty)}")
    merge_counts, cand_step, cand_key, cand_counts = _core.replay_merges(
        pat,
        texts,
        merge_list,
        top_k,
        num_threads or _default_threads(),
    )
    n = len(names)
    T = len(merge_list)
    m = np.asarray(merge_counts, float) / sizes  # (T, n)
    c = np.asarray(cand_counts, float).reshape(-1, n) / sizes  # (J, n)
    step = np.asarray(cand_step, np.int64)
    keys = np.asarray(cand_key, np.uint64)
    uniq, pair_idx = np.unique(keys, return_inverse=True)
    J, P = len(step), len(uniq)
    # Scale so that typical coefficients are near 1 (per-byte frequencies are tiny).
    scale = 1.0 / max(float(m.max()), 1e-12)
    diff = (m[step] - c) * scale  # (J, n)
    # Variables: alpha (n), v (T), u (P).  Rows: -diff . alpha - v_t - u_p <= 0.
    rows = np.repeat(np.arange(J), n + 2)
    cols = np.concatenate(
        [np.tile(np.arange(n), (J, 1)), (n + step)[:, None], (n + T + pair_idx)[:, None]],
        axis=1,
    ).ravel()
    vals = np.concatenate([-diff, -np.ones((J, 1)), -np.ones((J, 1))], axis=1).ravel()
    a_ub = coo_matrix((vals, (rows, cols)), shape=(J, n + T + P)).tocsr()
    b_ub = np.zeros(J)
    a_eq = np.zeros((1, n + T + P))
    a_eq[0, :n] = 1.0
    cost = np.concatenate([np.zeros(n), np.ones(T + P)])
    res = linprog(
        cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0], bounds=(0, None), method="highs"
    )
    if res.status != 0:
        raise RuntimeError(f"the mixture LP did not solve: {res.message}")
    alpha = np.clip(res.x[:n], 0, None)
    alpha = alpha / alpha.sum()
    return MixtureEstimate(
        proportions={name: float(a) for name, a in zip(names, alpha, strict=True)},
        n_merges=T,
        n_constraints=J,
        objective=float(res.fun),
        extra={"sample_bytes": {name: int(s) for name, s in zip(names, sizes, strict=True)}},
    )


# ----------------------------------------------------------------------------------------
# Preparing experiments: training text and samples from the same distribution


def split_documents(docs: Sequence[str], piece_chars: int = 2048) -> list[str]:
    """Cuts documents at line ends into pieces of about `piece_chars` characters."""
    out = []
    for d in docs:
        cur: list[str] = []
        n = 0
        for line in d.splitlines(keepends=True):
            cur.append(line)
            n += len(line)
            if n >= piece_chars:
                out.append("".join(cur))
                cur, n = [], 0
        if cur:
            out.append("".join(cur))
    return out


def take_bytes(pieces: Sequence[str], budget: int) -> list[str]:
    """The leading pieces whose UTF-8 size fits in `budget` bytes."""
    out, used = [], 0
    for p in pieces:
        b = len(p.encode())
        if used + b > budget:
            break
        out.append(p)
        used += b
    return out


def training_and_sample_pools(docs: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Two disjoint pools of ~2 KB pieces from the same documents, shuffled, so that text
    a tokenizer is trained on and the samples used to infer its mixture share a distribution
    (whole documents split between the two give 10-20 point errors on catalogues of different
    languages)."""
    pieces = split_documents(docs)
    random.Random(seed).shuffle(pieces)
    return pieces[0::2], pieces[1::2]
