"""Training-free speculative decoding for Hugging Face causal LMs (batch size 1).

Each step drafts a tree of guesses from cheap statistics kept in Rust (Token Recycling's
adjacency matrix, prompt lookup over the context, a tri-gram table), verifies the whole tree in
one forward pass with a tree attention mask, keeps the longest path the model agrees with plus
one token of its own, and compacts the KV cache to that path. Greedy output equals
`model.generate(do_sample=False)` token for token; sampled output is distributed exactly as
ordinary sampling with the same temperature / top-k / top-p.

Batch > 1 is not implemented; docs/speculative.md lays out what it would take (sessions split
from the learnt drafter state, trees padded to a common size chosen jointly, per-row positions
and masks; the dead-slot cache layout already absorbs ragged acceptance, so only the occasional
gather becomes a padded per-row `torch.gather`).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenmill._core import Speculator
from tokenmill._transformers import cache_kwarg
from tokenmill.speculative._budget import measure_cost_curve
from tokenmill.speculative._model import (
    SUPPORTED_MODEL_TYPES,
    ModelInfo,
    UnsupportedModelError,
    compact_cache,
    gather_cache,
    inspect_model,
    tree_mask,
)

__all__ = [
    "DRAFTERS",
    "SUPPORTED_MODEL_TYPES",
    "Drafter",
    "GenerateResult",
    "Stats",
    "UnsupportedModelError",
    "generate",
    "measure_cost_curve",
]

DRAFTERS = ("recycling", "lookup", "trigram")
#: Take the argmax and Token Recycling's top-k with torch ops even on the CPU (the path used on
#: GPUs); for tests that compare both paths.
_TORCH_REDUCTIONS = False
#: Largest tree the automatic budget considers.
AUTO_MAX_NODES = 64
#: On the CPU, rejected drafts stay in the KV cache (masked out) until they exceed this
#: fraction of it. Cutting them out every step took one to four tensor operations per layer
#: (2-10 us each on the CPU, i.e. up to 1-2% of a small model's forward), while a few dead keys
#: cost the attention almost nothing; one gather then drops them all.
_MAX_DEAD = 0.25
#: On the CPU, a greedy step is one Rust call (`Speculator.step_greedy`: verification, Token
#: Recycling's update, calibration, EOS cut, cache layout, next draft and its inputs) instead of
#: five with Python between them: code between two forwards runs with cold caches, so each
#: call and line costs several times what it costs in a loop. False takes the separate calls
#: (the path sampling and GPUs use), for tests comparing both.
_FUSED = True


class Drafter:
    """Draft sources for one model's vocabulary. The adjacency matrix and the tri-gram table
    persist across `generate` calls (warm start); `save`/`load` keep the adjacency matrix.

    `kinds`: any of "recycling", "lookup", "trigram" (or "all"); `weights` scale a drafter's
    scores when the trees of several are merged. `static_tree=True` uses Token Recycling's
    static template (recycling alone) instead of the dynamic score-ranked tree."""

    def __init__(
        self,
        vocab_size: int,
        kinds: str | tuple[str, ...] | list[str] = "all",
        *,
        k: int = 8,
        max_ngram: int = 8,
        max_depth: int = 12,
        max_children: int = 8,
        weights: dict[str, float] | None = None,
        static_tree: bool = False,
    ) -> None:
        names = DRAFTERS if kinds == "all" else (kinds,) if isinstance(kinds, str) else kinds
        names = tuple(dict.fromkeys(names))
        if not names or any(n not in DRAFTERS for n in names):
            raise ValueError(
                f"unknown drafter(s) {kinds!r}; expected a combination of {', '.join(DRAFTERS)} "
                "or 'all'"
            )
        w = weights or {}
        self.kinds = names
        self.k = k
        self._spec = Speculator(
            vocab_size,
            [(n, float(w.get(n, 1.0))) for n in names],
            k=k,
            max_ngram=max_ngram,
            max_depth=max_depth,
            max_children=max_children,
            static_tree=static_tree,
        )

    @property
    def vocab_size(self) -> int:
        return self._spec.vocab_size

    def save(self, path: str | Path) -> None:
        """Saves the adjacency matrix (`.npz`: ids with -1 for empty slots, probabilities)."""
        ids, probs = self._spec.adjacency()
        with open(path, "wb") as f:
            np.savez_compressed(f, ids=ids, probs=probs)

    def load(self, path: str | Path) -> None:
        """Loads an adjacency matrix saved by `save` (same vocabulary size and k)."""
        with np.load(path) as z:
            self._spec.set_adjacency(
                np.ascontiguousarray(z["ids"], dtype=np.int64),
                np.ascontiguousarray(z["probs"], dtype=np.float32),
            )


@dataclass
class Stats:
    """Per-call statistics. Times in seconds; `drafting` and `verification` include the Python
    glue around the Rust calls, `rust` is the time spent inside them alone."""

    steps: int = 0
    #: New tokens per step (accepted drafts + the model's own token).
    accepted: list[int] = field(default_factory=list)
    #: Drafts the target accepted per step (before cutting at EOS / max_new_tokens).
    drafts_accepted: list[int] = field(default_factory=list)
    #: Tree nodes per step (1: a plain decoding step).
    tree_sizes: list[int] = field(default_factory=list)
    prefill: float = 0.0
    drafting: float = 0.0
    forward: float = 0.0
    verification: float = 0.0
    cache: float = 0.0
    rust: float = 0.0
    total: float = 0.0

    @property
    def new_tokens(self) -> int:
        return sum(self.accepted)

    @property
    def mean_accepted(self) -> float:
        """Mean new tokens per forward (verification step), excluding the prefill."""
        return self.new_tokens / self.steps if self.steps else 0.0


@dataclass
class GenerateResult:
    #: Prompt followed by the new tokens, shape (1, len), like `model.generate`.
    sequences: Any
    #: The new tokens alone.
    tokens: list[int]
    stats: Stats


_DRAFTERS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Drafter]] = (
    weakref.WeakKeyDictionary()
)


def _as_tensors(torch: Any, inputs: tuple[Any, ...], mask_dtype: Any) -> tuple[Any, Any, Any]:
    """Torch views of a forward's inputs as Rust built them (ids, positions, mask or None),
    the mask cast to `mask_dtype` unless that is None."""
    ids_a, pos_a, mask_a = inputs[:3]
    mask = None if mask_a is None else torch.from_numpy(mask_a)
    if mask_dtype is not None and mask is not None:
        mask = mask.to(mask_dtype)
    return torch.from_numpy(ids_a), torch.from_numpy(pos_a), mask


def _drafter_for(
    model: Any, spec: str | tuple[str, ...] | list[str] | Drafter, vocab: int
) -> Drafter:
    if isinstance(spec, Drafter):
        if spec.vocab_size != vocab:
            raise ValueError(
                f"the drafter has a vocabulary of {spec.vocab_size}, the model {vocab}"
            )
        return spec
    names = spec if isinstance(spec, str) else tuple(spec)
    if names == "combined":
        names = "all"
    per_model = _DRAFTERS.setdefault(model, {})
    key = (names, vocab)
    if key not in per_model:
        per_model[key] = Drafter(vocab, names)
    return per_model[key]


def _warpers(do_sample: bool, temperature: float, top_k: int, top_p: float) -> list[Any]:
    """transformers' own logits warpers, in `generate`'s order, so that the processed
    distribution is exactly the one `model.generate(do_sample=True)` samples from."""
    if not do_sample:
        return []
    import transformers

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    out: list[Any] = []
    if temperature != 1.0:
        out.append(transformers.TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(transformers.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        out.append(transformers.TopPLogitsWarper(top_p))
    return out


def generate(
    model: Any,
    input_ids: Any,
    *,
    max_new_tokens: int,
    drafter: str | tuple[str, ...] | list[str] | Drafter = "all",
    tree_budget: str | int = "auto",
    do_sample: bool = False,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    eos_token_id: int | list[int] | None = None,
    streamer: Any = None,
    generator: Any = None,
    seed: int | None = None,
    cost_curve: Any = None,
) -> GenerateResult:
    """Speculative decoding of up to `max_new_tokens` tokens after `input_ids` (a (1, L) tensor
    or a list of ids).

    `drafter`: "recycling", "lookup", "trigram", a tuple of them, "all" / "combined", or a
    `Drafter` (whose state persists). Named drafters persist per model too.
    `tree_budget`: drafts per step; "auto" measures the forward cost curve once and picks, every
    step, the tree size with the best expected tokens per second (1 node = plain decoding);
    an int fixes the budget (0: plain decoding through the same loop).
    Sampling (`do_sample=True`) uses `generator` (a `torch.Generator` on the CPU), else one
    seeded with `seed`, else torch's global generator. `temperature`, `top_k`, `top_p` left
    unset are taken as `model.generate` takes them: from the model's generation config, else
    transformers' defaults (1.0, 50, 1.0); `top_k=0` and `top_p=1` disable them.
    The output is distributed exactly as ordinary sampling, but which sample a seed gives also
    depends on the drafts (they decide how the random draws are used), hence on the drafter's
    state: pass a fresh `Drafter` to reproduce a sample.
    `cost_curve`: precomputed `costs[n - 1]` seconds (overrides the measurement).
    """
    import torch
    import transformers

    t_start = time.perf_counter()
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise ValueError(
                f"batch size 1 only: input_ids must have shape (1, L), got {tuple(input_ids.shape)}"
            )
        prompt = [int(x) for x in input_ids[0].tolist()]
    else:
        prompt = [int(x) for x in input_ids]
    if not prompt:
        raise ValueError("input_ids is empty")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if isinstance(tree_budget, str):
        if tree_budget != "auto":
            raise ValueError(f"tree_budget must be 'auto' or an int >= 0, got {tree_budget!r}")
    elif tree_budget < 0:
        raise ValueError(f"tree_budget must be 'auto' or an int >= 0, got {tree_budget}")
    budget = AUTO_MAX_NODES - 1 if tree_budget == "auto" else int(tree_budget)
    info: ModelInfo = inspect_model(model, len(prompt) + max_new_tokens + budget + 1)
    if max(prompt) >= info.vocab_size or min(prompt) < 0:
        raise ValueError(f"input_ids hold ids outside the model's vocabulary of {info.vocab_size}")
    eos = (
        set()
        if eos_token_id is None
        else {eos_token_id}
        if isinstance(eos_token_id, int)
        else set(eos_token_id)
    )
    # Unset sampling parameters come from the model's generation config, else transformers'
    # defaults (top_k=50!), as in `model.generate`.
    gc = getattr(model, "generation_config", None)

    def _default(value: Any, name: str, fallback: Any) -> Any:
        if value is not None:
            return value
        from_config = getattr(gc, name, None)
        return fallback if from_config is None else from_config

    warpers = _warpers(
        do_sample,
        float(_default(temperature, "temperature", 1.0)),
        int(_default(top_k, "top_k", 50)),
        float(_default(top_p, "top_p", 1.0)),
    )
    if do_sample and generator is None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None

    max_pos = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    if model.config.model_type == "gpt2" and max_pos and len(prompt) + max_new_tokens > max_pos:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's {max_pos} learned positions"
        )
    d = _drafter_for(model, drafter, info.vocab_size)
    spec = d._spec
    recycling = "recycling" in d.kinds
    costs = None
    if tree_budget == "auto":
        costs = (
            np.asarray(cost_curve, dtype=np.float64)
            if cost_curve is not None
            else measure_cost_curve(model, info, max_nodes=AUTO_MAX_NODES)
        )
    stats = Stats()
    device = info.device
    host = device.type == "cpu" and not _TORCH_REDUCTIONS
    # On the CPU, Rust builds the forward's inputs (ids, positions, additive mask over the
    # cache's live slots) into arrays torch wraps without a copy. float16/bfloat16 masks are built in float32 with the dtype's
    # own minimum (exactly representable) and converted. On a GPU the mask is built there from
    # the small ancestor matrix instead (a (n, prefix + n) mask crossing the bus every step
    # would grow with the context).
    mask_fill = float(torch.finfo(info.dtype).min)
    mask_f64 = info.dtype == torch.float64
    mask_cast = info.dtype not in (torch.float32, torch.float64)
    prompt_t = torch.tensor([prompt], dtype=torch.long)
    if streamer is not None:
        streamer.put(prompt_t)
    new: list[int] = []
    gain = 1.0
    with torch.inference_mode():
        cache = transformers.DynamicCache()
        cache_kw = {cache_kwarg(model): cache}
        t0 = time.perf_counter()
        if len(prompt) > 1:
            model(input_ids=prompt_t[:, :-1].to(device), **cache_kw, use_cache=True)
        prefix_len = len(prompt) - 1
        done = max_new_tokens == 0
        fused = host and not do_sample and _FUSED and not done
        if not fused:
            spec.start(np.asarray(prompt, dtype=np.int64))
        stats.prefill = time.perf_counter() - t0
        if fused:
            logits_f32 = info.dtype == torch.float32
            t0 = time.perf_counter()
            inputs: Any = spec.begin(
                np.asarray(prompt, dtype=np.int64),
                budget=budget,
                costs=costs,
                max_pos=max_pos or None,
                eos=sorted(e for e in eos if 0 <= e < info.vocab_size),
                max_dead=_MAX_DEAD,
                window=info.window,
                fill=mask_fill,
                float64=mask_f64,
            )
            t1 = time.perf_counter()
            stats.drafting += t1 - t0
            stats.rust += t1 - t0
        step_log: list[tuple[Any, ...]] = []
        while fused and not done:
            t0 = time.perf_counter()
            n = inputs[0].shape[1]
            ids, pos, attn = _as_tensors(torch, inputs, info.dtype if mask_cast else None)
            t2 = time.perf_counter()
            out = model(
                input_ids=ids,
                position_ids=pos,
                attention_mask=attn,
                **cache_kw,
                use_cache=True,
            )
            t3 = time.perf_counter()
            # float32 as in `model.generate` (see below); Rust reads the logits in place, from
            # the tensor as the model returns it (1, n, vocab): each torch call here costs 5-10
            # us, `numpy()` 15-25.
            lg = out.logits
            rows = lg if logits_f32 else lg.float()
            t4 = time.perf_counter()
            step_tokens, drafts, done, live, inputs, _, t_draft = spec.step_greedy(
                rows, max_new_tokens - len(new)
            )
            t5 = time.perf_counter()
            if live is not None:
                gather_cache(cache, torch.from_numpy(live))
            new.extend(step_tokens)
            if streamer is not None:
                streamer.put(torch.tensor(step_tokens, dtype=torch.long))
            t8 = time.perf_counter()
            # Timestamps only; summed after the loop (attribute updates cost here too).
            step_log.append((len(step_tokens), n, drafts, t0, t2, t3, t4, t5, t8, t_draft))
        for k, n, drafts, t0, t2, t3, t4, t5, t8, t_draft in step_log:
            stats.steps += 1
            stats.accepted.append(k)
            stats.tree_sizes.append(n)
            stats.drafts_accepted.append(drafts)
            stats.drafting += (t2 - t0) + t_draft
            stats.forward += t3 - t2
            stats.verification += (t5 - t3) - t_draft
            stats.rust += t5 - t4
            stats.cache += t8 - t5
        while not done:
            t0 = time.perf_counter()
            # Tree positions stay within the trained positions (learned ones cannot go beyond).
            step_budget = budget if not max_pos else min(budget, max(0, max_pos - 1 - prefix_len))
            mask: Any
            if host:
                drafted = spec.draft_inputs(
                    step_budget,
                    costs,
                    gain,
                    window=info.window,
                    fill=mask_fill,
                    float64=mask_f64,
                )
                t1 = time.perf_counter()
                n, expected = drafted[0].shape[1], drafted[3]
                ids, pos, mask = _as_tensors(torch, drafted, info.dtype if mask_cast else None)
            else:
                tokens, _parents, depths, ancestors, scores = spec.draft(step_budget, costs, gain)
                t1 = time.perf_counter()
                n = len(tokens)
                expected = float(scores[1:].sum(dtype=np.float64))
                ids = torch.from_numpy(tokens)[None].to(device)
                pos = torch.from_numpy(prefix_len + depths)[None].to(device)
                mask = (
                    None
                    if n == 1 and info.window is None
                    else tree_mask(ancestors, depths, prefix_len, info)
                )
            t2 = time.perf_counter()
            out = model(
                input_ids=ids,
                position_ids=pos,
                attention_mask=mask,
                **cache_kw,
                use_cache=True,
            )
            t3 = time.perf_counter()
            # float32 as in `model.generate`, so that argmax ties break the same way (a no-op
            # for a float32 model).
            logits = out.logits[0].float()
            # On the CPU, Rust reads the logits in place (`numpy()` shares the tensor's memory):
            # the argmax only at the nodes the greedy walk reaches and Token Recycling's top-k
            # once per distinct tree token, in one pass each instead of three torch reductions
            # over every node's row. On a GPU the reductions stay there and only their small
            # results cross.
            rows = logits.numpy() if host else None
            t_rows = time.perf_counter()
            if do_sample:
                scores_t = logits
                for w in warpers:
                    scores_t = w(None, scores_t)
                probs = torch.softmax(scores_t, dim=-1).cpu().numpy()
                uniforms = torch.rand(n + 1, generator=generator, dtype=torch.float64).numpy()
                t4 = time.perf_counter()
                nodes, step_tokens = spec.verify_sample(probs, uniforms)
            elif rows is not None:
                t4 = t_rows
                nodes, step_tokens = spec.verify_greedy_logits(rows)
            else:
                argmax = logits.argmax(dim=-1).cpu().numpy()
                t4 = time.perf_counter()
                nodes, step_tokens = spec.verify_greedy(argmax)
            t5 = time.perf_counter()
            if recycling and rows is not None:
                t6 = t5
                spec.recycle_logits(rows)
                t7 = time.perf_counter()
            elif recycling:
                top = torch.topk(logits, d.k, dim=-1)
                top_p_ = torch.exp(top.values - torch.logsumexp(logits, -1, keepdim=True))
                t6 = time.perf_counter()
                spec.update_adjacency(top.indices.cpu().numpy(), top_p_.cpu().numpy())
                t7 = time.perf_counter()
            else:
                t6 = t7 = t5
            if n > 1:
                # Calibrate the scores: accepted drafts over expected drafts, smoothed.
                if expected > 0:
                    ratio = (len(nodes) - 1) / expected
                    gain = min(2.0, max(0.05, 0.9 * gain + 0.1 * ratio))
            else:
                # Plain steps give no evidence; drift back so that drafting is retried.
                gain += (1.0 - gain) * 0.02
            # Truncate at EOS and at the token budget.
            remaining = max_new_tokens - len(new)
            step_tokens = step_tokens[:remaining]
            for i, tok in enumerate(step_tokens):
                if tok in eos:
                    step_tokens = step_tokens[: i + 1]
                    done = True
                    break
            if len(new) + len(step_tokens) >= max_new_tokens:
                done = True
            if host:
                # Rejected drafts stay in the cache, masked out (Rust keeps the layout), until
                # they are a sizeable part of it; then one gather per tensor drops them all.
                live = spec.settle(nodes, _MAX_DEAD)
                if live is not None:
                    gather_cache(cache, torch.from_numpy(live))
            else:
                compact_cache(cache, prefix_len, nodes)
            prefix_len += len(nodes)
            spec.accept(step_tokens)
            new.extend(step_tokens)
            if streamer is not None:
                streamer.put(torch.tensor(step_tokens, dtype=torch.long))
            t8 = time.perf_counter()
            stats.steps += 1
            stats.accepted.append(len(step_tokens))
            stats.tree_sizes.append(n)
            stats.drafts_accepted.append(len(nodes) - 1)
            stats.drafting += t2 - t0
            stats.forward += t3 - t2
            stats.verification += (t5 - t3) + (t7 - t5)
            stats.rust += (t1 - t0) + (t5 - t4) + (t7 - t6)
            stats.cache += t8 - t7
    if streamer is not None:
        streamer.end()
    stats.total = time.perf_counter() - t_start
    sequences = torch.tensor([prompt + new], dtype=torch.long)
    return GenerateResult(sequences=sequences, tokens=new, stats=stats)
