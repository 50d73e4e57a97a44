"""Speculative decoding (tokenmill.speculative) against real references: transformers' own
`generate`, naive per-path recomputation, and exact enumeration of the sampling distribution.

Models are tiny random ones (tokenmill.models.tiny) in float64, so that the tree forward and
the sequential forward agree to ~1e-15 and no argmax can flip between them; greedy decoding is
then asserted equal token for token, without exceptions.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
stats = pytest.importorskip("scipy.stats")

from tokenmill import speculative as sp  # noqa: E402
from tokenmill._core import Speculator  # noqa: E402
from tokenmill._transformers import cache_kwarg  # noqa: E402
from tokenmill.models import tiny_causal_lm  # noqa: E402
from tokenmill.speculative._model import compact_cache, inspect_model, tree_mask  # noqa: E402

ARCHS = ("llama", "qwen2", "mistral", "gpt2")


@pytest.fixture(autouse=True)
def _one_thread(tmp_path: Any, monkeypatch: Any) -> Any:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    # Cost curves measured by the tests are saved here, not in the user's cache.
    monkeypatch.setenv(sp._budget.CACHE_ENV, str(tmp_path / "speculative-cache"))
    yield
    torch.set_num_threads(old)


def _model(arch: str, vocab: int = 64, **kw: Any) -> Any:
    return tiny_causal_lm(vocab, arch, dtype=torch.float64, **kw)


def _reference(model: Any, prompt: Any, n: int, **kw: Any) -> Any:
    # An explicit all-ones attention mask: without it `generate` masks prompt tokens equal to
    # the pad id.
    return model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=n,
        pad_token_id=0,
        **kw,
    )


def _random_tree(rng: np.random.Generator, n: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(0, vocab, n)
    parents = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n)])
    return tokens, parents


def _ancestors(parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(parents)
    anc = np.zeros((n, n), dtype=bool)
    depths = np.zeros(n, dtype=np.int64)
    for i in range(n):
        j = i
        while j >= 0:
            anc[i, j] = True
            j = parents[j]
        depths[i] = anc[i].sum() - 1
    return anc, depths


def _path(parents: np.ndarray, i: int) -> list[int]:
    out = []
    while i >= 0:
        out.append(i)
        i = parents[i]
    return out[::-1]


@pytest.mark.parametrize(
    ("arch", "window", "attn"),
    [
        ("llama", None, "sdpa"),
        ("qwen2", None, "sdpa"),
        ("mistral", None, "sdpa"),
        ("mistral", 6, "sdpa"),
        ("gpt2", None, "sdpa"),
        ("llama", None, "eager"),
        ("gpt2", None, "eager"),
    ],
)
def test_tree_forward_and_cache_compaction_match_naive_recomputation(
    arch: str, window: int | None, attn: str
) -> None:
    """One forward over a random tree gives, at every node, the logits of running the model on
    prefix + root-to-node path; after compacting the cache to one path, the next forward gives
    the logits of prefix + path + next token. (Llama's eager attention takes its softmax in
    float32 even for a float64 model, hence the looser tolerance there.)"""
    model = _model(arch, sliding_window=window, attn_implementation=attn)
    tol = 1e-5 if (arch, attn) == ("llama", "eager") else 1e-9
    rng = np.random.default_rng(0)
    for _ in range(6):
        prefix = torch.from_numpy(rng.integers(0, 64, int(rng.integers(1, 12))))[None]
        tokens, parents = _random_tree(rng, int(rng.integers(1, 14)), 64)
        anc, depths = _ancestors(parents)
        plen = prefix.shape[1]
        total = plen + len(tokens) + 1
        info = inspect_model(model, total)
        assert (info.window is not None) == (window is not None and total > window)
        cache = transformers.DynamicCache()
        cache_kw = {cache_kwarg(model): cache}
        with torch.inference_mode():
            model(input_ids=prefix, **cache_kw, use_cache=True)
            out = model(
                input_ids=torch.from_numpy(tokens)[None],
                position_ids=torch.from_numpy(plen + depths)[None],
                attention_mask=tree_mask(anc, depths, plen, info),
                **cache_kw,
                use_cache=True,
            ).logits[0]
            for i in range(len(tokens)):
                seq = torch.cat([prefix[0], torch.from_numpy(tokens[_path(parents, i)])])
                naive = model(seq[None]).logits[0, -1]
                torch.testing.assert_close(out[i], naive, rtol=tol, atol=tol)
            # Keep the path to the deepest-last node.
            leaf = len(tokens) - 1
            nodes = _path(parents, leaf)
            compact_cache(cache, plen, nodes)
            assert cache.get_seq_length() == plen + len(nodes)
            nxt = torch.tensor([[int(rng.integers(0, 64))]])
            after = model(
                input_ids=nxt,
                position_ids=torch.tensor([[plen + len(nodes)]]),
                attention_mask=tree_mask(
                    np.ones((1, 1), dtype=bool),
                    np.zeros(1, dtype=np.int64),
                    plen + len(nodes),
                    info,
                ),
                **cache_kw,
                use_cache=True,
            ).logits[0, -1]
            seq = torch.cat([prefix[0], torch.from_numpy(tokens[nodes]), nxt[0]])
            torch.testing.assert_close(after, model(seq[None]).logits[0, -1], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_rust_built_inputs_equal_the_python_construction(dtype: str) -> None:
    """The ids, positions and additive mask Rust builds for a step (the CPU path) equal the
    torch construction (`tree_mask`, used on GPUs and checked against naive recomputation
    above), bit for bit, for random trees, prefix lengths and sliding windows; the drafting
    variant returns the tree `draft` builds."""
    torch_dtype = getattr(torch, dtype)
    rng = np.random.default_rng(5)
    s = Speculator(64, [("recycling", 1.0)])
    fill = float(torch.finfo(torch_dtype).min)
    for _ in range(60):
        _, parents = _random_tree(rng, int(rng.integers(1, 20)), 64)
        tokens = rng.permutation(64)[: len(parents)]  # siblings must be distinct
        anc, depths = _ancestors(parents)
        plen = int(rng.integers(0, 30))
        window = [None, 1, 2, 3, 5, 40][int(rng.integers(0, 6))]
        info = sp._model.ModelInfo(64, torch_dtype, torch.device("cpu"), window)
        s.set_tree(tokens, parents)
        ids, pos, mask, expected = s.tree_inputs(
            prefix_len=plen, window=window, fill=fill, float64=dtype == "float64"
        )
        assert ids.shape == pos.shape == (1, len(tokens))
        np.testing.assert_array_equal(ids[0], tokens)
        np.testing.assert_array_equal(pos[0], plen + depths)
        assert expected == len(tokens) - 1  # `set_tree` scores every draft 1
        if len(tokens) == 1 and window is None:
            assert mask is None
            continue
        got = torch.from_numpy(mask).to(torch_dtype)
        assert got.dtype == torch_dtype
        assert torch.equal(got, tree_mask(anc, depths, plen, info)), (tokens, parents, window)
    with pytest.raises(ValueError, match="window"):
        s.tree_inputs(prefix_len=3, window=0, fill=-1.0)
    d = Speculator(64, [("lookup", 1.0), ("trigram", 1.0)])
    d.start(np.array([1, 2, 3, 1, 2, 4, 1, 2, 3, 1, 2], dtype=np.int64))
    tokens, _, depths, anc, scores = d.draft(12)
    ids, pos, mask, expected = d.draft_inputs(12, fill=-1.0)  # 10 cached prompt tokens
    np.testing.assert_array_equal(ids[0], tokens)
    np.testing.assert_array_equal(pos[0], 10 + depths)
    np.testing.assert_array_equal(mask[0, 0, :, 10:] == 0, anc)
    assert expected == pytest.approx(float(scores[1:].sum(dtype=np.float64)))
    with pytest.raises(ValueError, match="costs"):
        d.draft_inputs(12, np.array([1.0, -1.0]), fill=-1.0)


@pytest.mark.parametrize(
    "nodes",
    [[0], [0, 1], [0, 1, 2, 3, 4, 5], [0, 2], [0, 1, 3], [0, 3, 4, 5], [0, 1, 2, 5], []],
)
def test_cache_compaction_equals_a_naive_gather(nodes: list[int]) -> None:
    """Compaction keeps the prefix and the accepted nodes in path order, in every layer: checked
    against a naive gather of the original tensors for plain steps, whole trees (nothing to
    do), accepted prefixes of the node order, paths that leave it, and dropping the tree."""
    g = torch.Generator().manual_seed(len(nodes))
    for n in {max(nodes, default=0) + 1, 6} if nodes else {6}:
        cache = transformers.DynamicCache()
        plen = 7
        originals = []
        for layer in range(3):
            k = torch.randn(1, 2, plen + n, 4, generator=g)
            v = torch.randn(1, 2, plen + n, 4, generator=g)
            cache.update(k.clone(), v.clone(), layer)
            originals.append((k, v))
        compact_cache(cache, plen, nodes)
        keep = list(range(plen)) + [plen + i for i in nodes]
        assert cache.get_seq_length() == len(keep)
        for layer, (k, v) in zip(cache.layers, originals, strict=True):
            assert torch.equal(layer.keys, k[:, :, keep])
            assert torch.equal(layer.values, v[:, :, keep])


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_is_identical_to_generate(arch: str) -> None:
    """Token for token equal to `model.generate(do_sample=False)` over many prompts, every
    drafter and several budgets (prompts are drawn with repetition so that drafts hit)."""
    model = _model(arch, sliding_window=8 if arch == "mistral" else None)
    rng = np.random.default_rng(1)
    budgets: list[int | str] = [0, 1, 6, 24]
    drafters = ["recycling", "lookup", "trigram", "all"]
    hits = 0
    for trial in range(6):
        base = rng.integers(0, 64, 6)
        prompt = torch.from_numpy(np.concatenate([base, base, rng.integers(0, 64, 3)]))[None]
        prompt = prompt[:, : int(rng.integers(1, prompt.shape[1] + 1))]
        ref = _reference(model, prompt, 30, min_new_tokens=30, do_sample=False)
        for drafter, budget in itertools.product(drafters, budgets):
            r = sp.generate(model, prompt, max_new_tokens=30, drafter=drafter, tree_budget=budget)
            assert torch.equal(r.sequences, ref), (trial, drafter, budget)
            assert r.stats.new_tokens == 30
            hits += sum(a > 1 for a in r.stats.accepted)
    assert hits > 0  # drafts were accepted, so verification paths beyond the root ran


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("max_dead", [0.0, 0.5, 100.0])
def test_dead_cache_slots_keep_greedy_exact(arch: str, max_dead: float, monkeypatch: Any) -> None:
    """Rejected drafts left in the KV cache (masked out by position and liveness, a sliding
    window included) until they exceed `max_dead` of it: gathered away after every step that
    leaves any (0), now and then (0.5), or never (100). Output stays `model.generate`'s; the
    layout Rust tracks matches the cache's length."""
    monkeypatch.setattr(sp, "_MAX_DEAD", max_dead)
    model = _model(arch, sliding_window=6 if arch == "mistral" else None)
    rng = np.random.default_rng(2)
    dead_steps = 0
    gathers: list[int] = []
    real_gather = sp.gather_cache

    def counting(cache: Any, slots: Any) -> None:
        gathers.append(len(slots))
        real_gather(cache, slots)

    monkeypatch.setattr(sp, "gather_cache", counting)
    for trial in range(4):
        base = rng.integers(0, 64, 5)
        prompt = torch.from_numpy(np.concatenate([base, base, base[:2]]))[None]
        ref = _reference(model, prompt, 40, min_new_tokens=40, do_sample=False)
        d = sp.Drafter(64, "all")
        r = sp.generate(model, prompt, max_new_tokens=40, drafter=d, tree_budget=10)
        assert torch.equal(r.sequences, ref), trial
        dead_steps += sum(
            t - a - 1 for t, a in zip(r.stats.tree_sizes, r.stats.drafts_accepted, strict=True)
        )
    assert dead_steps > 0  # some drafts were rejected, so dead slots existed
    assert (len(gathers) > 0) == (max_dead < 1)


def test_speculator_settle_rejects_what_is_not_a_root_path() -> None:
    s = Speculator(16, [("lookup", 1.0)])
    s.start(np.array([1, 2, 1, 2, 1], dtype=np.int64))
    with pytest.raises(ValueError, match="draft"):
        s.settle([0], 0.5)
    s.set_tree(np.array([1, 2, 3], dtype=np.int64), np.array([-1, 0, 0], dtype=np.int64))
    for bad in ([], [1], [0, 1, 2], [0, 7]):
        with pytest.raises(ValueError, match="path"):
            s.settle(bad, 0.5)
    ids, pos, mask, _ = s.tree_inputs(prefix_len=4, fill=-1.0)
    # 4 prompt slots; then node 2 is rejected: 1 dead slot of 7, under half.
    assert s.settle([0, 1], 0.5) is None
    ids, pos, mask, _ = s.draft_inputs(0, fill=-1.0)
    np.testing.assert_array_equal(pos, [[6]])
    np.testing.assert_array_equal(mask, [[[[0, 0, 0, 0, 0, 0, -1, 0]]]])  # dead slot masked
    # The same tree again, node 1 rejected: 2 dead of 10, over a tenth: the live slots.
    s.set_tree(np.array([1, 2, 3], dtype=np.int64), np.array([-1, 0, 0], dtype=np.int64))
    live = s.settle([0, 2], 0.1)
    np.testing.assert_array_equal(live, [0, 1, 2, 3, 4, 5, 7, 9])
    ids, pos, mask, _ = s.draft_inputs(0, fill=-1.0)
    np.testing.assert_array_equal(pos, [[8]])
    assert mask is None and ids.shape == (1, 1)


def test_static_tree_and_auto_budget_are_exact() -> None:
    model = _model("llama")
    prompt = torch.tensor([[3, 4, 5, 3, 4, 5, 3, 4]])
    ref = _reference(model, prompt, 25, min_new_tokens=25, do_sample=False)
    static = sp.Drafter(64, "recycling", static_tree=True)
    for drafter in (static, "all"):
        for budget in (16, "auto"):
            r = sp.generate(model, prompt, max_new_tokens=25, drafter=drafter, tree_budget=budget)
            assert torch.equal(r.sequences, ref)


def test_eos_and_streamer() -> None:
    model = _model("qwen2")
    prompt = torch.tensor([[1, 2, 3, 1, 2, 3]])
    ref = _reference(model, prompt, 20, do_sample=False)
    eos = int(ref[0, 6 + 4])  # the 5th new token
    ref_eos = _reference(model, prompt, 20, do_sample=False, eos_token_id=eos)

    class Collect:
        def __init__(self) -> None:
            self.chunks: list[list[int]] = []
            self.ended = False

        def put(self, value: Any) -> None:
            self.chunks.append([int(x) for x in value.reshape(-1).tolist()])

        def end(self) -> None:
            self.ended = True

    s = Collect()
    r = sp.generate(model, prompt, max_new_tokens=20, eos_token_id=eos, streamer=s, tree_budget=8)
    assert torch.equal(r.sequences, ref_eos)
    assert r.tokens[-1] == eos
    assert s.chunks[0] == prompt[0].tolist()
    assert [t for c in s.chunks[1:] for t in c] == r.tokens
    assert s.ended


def _exact_distribution(
    model: Any, prompt: list[int], length: int, warpers: list[Any]
) -> dict[tuple[int, ...], float]:
    """P(continuation) by enumeration: products of the processed next-token distributions."""
    out: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(length):
        nxt: dict[tuple[int, ...], float] = {}
        for cont, p in out.items():
            with torch.inference_mode():
                logits = model(torch.tensor([prompt + list(cont)])).logits[0, -1].float()
            scores = logits[None]
            for w in warpers:
                scores = w(None, scores)
            probs = torch.softmax(scores[0], -1).double()
            for tok in range(probs.shape[0]):
                if probs[tok] > 0:
                    nxt[(*cont, tok)] = p * float(probs[tok])
        out = nxt
    return out


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k"),
    [
        (1.0, 1.0, 0),
        (1.0, 0.9, 0),
        pytest.param(1.5, 0.8, 0, marks=pytest.mark.slow),
        pytest.param(1.3, 1.0, 3, marks=pytest.mark.slow),
    ],
)
def test_sampling_is_lossless(temperature: float, top_p: float, top_k: int) -> None:
    """The empirical distribution of 2-token continuations matches the exact one (enumerated
    from the model with transformers' own warpers): chi-square test at significance 1e-3 over
    2000 seeded runs, cells with expected count < 5 pooled. The drafter persists across runs,
    so that drafts are both accepted and rejected (both asserted). `init_std=0.2` keeps the
    distributions spread, so that top-p truncates some tokens but leaves 16-36 cells."""
    vocab, length, runs = 6, 2, 2000
    model = tiny_causal_lm(vocab, "llama", dtype=torch.float64, init_std=0.2, seed=3)
    prompt = [1, 2, 3, 1, 2]
    warpers = sp._warpers(True, temperature, top_k, top_p)
    exact = _exact_distribution(model, prompt, length, warpers)
    drafter = sp.Drafter(vocab, "all", k=3)
    gen = torch.Generator().manual_seed(1234)
    counts: dict[tuple[int, ...], int] = {}
    accepted_drafts = tried = rejected_all = 0
    for _ in range(runs):
        r = sp.generate(
            model,
            prompt,
            max_new_tokens=length,
            drafter=drafter,
            tree_budget=6,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            generator=gen,
        )
        key = tuple(r.tokens)
        assert key in exact, f"sampled {key}, which has probability 0"
        counts[key] = counts.get(key, 0) + 1
        accepted_drafts += sum(r.stats.drafts_accepted)
        tried += sum(t > 1 for t in r.stats.tree_sizes)
        rejected_all += sum(
            t > 1 and a == 0
            for t, a in zip(r.stats.tree_sizes, r.stats.drafts_accepted, strict=True)
        )
    assert tried >= runs  # trees were verified, not plain steps
    assert accepted_drafts > 0 and rejected_all > 0  # drafts were accepted and rejected
    keys = sorted(exact, key=lambda k: -exact[k])
    obs, exp = [], []
    pool_o = pool_e = 0.0
    for k in keys:
        e = exact[k] * runs
        if e >= 5:
            obs.append(counts.get(k, 0))
            exp.append(e)
        else:
            pool_o += counts.get(k, 0)
            pool_e += e
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    chi2 = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True))
    p_value = float(stats.chi2.sf(chi2, len(obs) - 1))
    assert p_value > 1e-3, (chi2, len(obs), p_value)


def test_sampling_with_a_seed_is_reproducible() -> None:
    model = _model("gpt2")
    kw: dict[str, Any] = {"max_new_tokens": 15, "do_sample": True, "tree_budget": 6}
    # The drafts decide how the uniforms are consumed, so a seed fixes the output together with
    # the drafter's state (fresh drafters here), not alone.
    a = sp.generate(model, [1, 2, 3], seed=5, drafter=sp.Drafter(64), **kw)
    b = sp.generate(model, [1, 2, 3], seed=5, drafter=sp.Drafter(64), **kw)
    c = sp.generate(model, [1, 2, 3], seed=6, drafter=sp.Drafter(64), **kw)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_adjacency_persists_and_saves(tmp_path: Any) -> None:
    model = _model("llama")
    prompt = torch.tensor([[5, 6, 7, 5, 6]])
    d = sp.Drafter(64, "recycling", k=4)
    ids0, _ = d._spec.adjacency()
    assert (ids0 == -1).all()
    sp.generate(model, prompt, max_new_tokens=20, drafter=d, tree_budget=8)
    ids1, probs1 = d._spec.adjacency()
    assert (ids1[5] != -1).all()  # the prompt's root token's row was learnt
    # Rows hold the model's top-k after the token (at its last occurrence in a tree).
    assert ((probs1[:, :-1] >= probs1[:, 1:]) | (ids1[:, 1:] == -1)).all()
    d.save(tmp_path / "adj.npz")
    e = sp.Drafter(64, "recycling", k=4)
    e.load(tmp_path / "adj.npz")
    ids2, probs2 = e._spec.adjacency()
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_array_equal(probs1, probs2)
    # A warm drafter accepts more than a cold one on the same text.
    cold = sp.generate(
        model, prompt, max_new_tokens=20, drafter=sp.Drafter(64, "recycling", k=4), tree_budget=8
    )
    warm = sp.generate(model, prompt, max_new_tokens=20, drafter=e, tree_budget=8)
    assert warm.tokens == cold.tokens
    assert warm.stats.steps <= cold.stats.steps
    with pytest.raises(ValueError, match="adjacency"):
        sp.Drafter(32, "recycling", k=4).load(tmp_path / "adj.npz")


def test_budget_follows_the_cost_curve() -> None:
    model = _model("llama")
    prompt = torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6]])
    steep = np.arange(1, 65, dtype=np.float64) * 10.0  # n tokens cost n forwards: never pays
    flat = np.ones(64)
    r = sp.generate(model, prompt, max_new_tokens=20, tree_budget="auto", cost_curve=steep)
    assert set(r.stats.tree_sizes) == {1}
    r2 = sp.generate(model, prompt, max_new_tokens=20, tree_budget="auto", cost_curve=flat)
    assert max(r2.stats.tree_sizes) > 1
    assert r.tokens == r2.tokens
    curve = sp.measure_cost_curve(model, inspect_model(model, 256), max_nodes=16, repeats=1)
    assert curve.shape == (16,) and (np.diff(curve) >= 0).all() and curve[0] > 0


def test_refuses_what_it_cannot_drive() -> None:
    model = _model("llama")
    with pytest.raises(ValueError, match="batch size 1"):
        sp.generate(model, torch.zeros((2, 3), dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        sp.generate(model, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="vocabulary"):
        sp.generate(model, [64], max_new_tokens=2)
    with pytest.raises(ValueError, match="unknown drafter"):
        sp.generate(model, [1], max_new_tokens=2, drafter="medusa")
    with pytest.raises(ValueError, match="tree_budget"):
        sp.generate(model, [1], max_new_tokens=2, tree_budget=-1)
    with pytest.raises(ValueError, match="temperature"):
        sp.generate(model, [1], max_new_tokens=2, do_sample=True, temperature=0.0)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(sp.UnsupportedModelError, match="flash_attention_2"):
        sp.generate(model, [1], max_new_tokens=2)
    model.config._attn_implementation = "sdpa"
    model.train()
    with pytest.raises(sp.UnsupportedModelError, match="eval"):
        sp.generate(model, [1], max_new_tokens=2)
    model.eval()
    cfg = transformers.GPTNeoXConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    other = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with pytest.raises(sp.UnsupportedModelError, match="gpt_neox"):
        sp.generate(other, [1], max_new_tokens=2)
    with pytest.raises(sp.UnsupportedModelError, match="causal LM"):
        sp.generate(object(), [1], max_new_tokens=2)


def test_speculator_binding_rejects_bad_arrays() -> None:
    s = Speculator(16, [("lookup", 1.0)])
    with pytest.raises(ValueError, match="start"):
        s.draft(4)
    s.start(np.array([1, 2, 1], dtype=np.int64))
    tokens, parents, _, mask, scores = s.draft(4)
    assert tokens[0] == 1 and parents[0] == -1 and mask.shape == (len(tokens),) * 2
    with pytest.raises(ValueError, match="argmax"):
        s.verify_greedy(np.zeros(len(tokens) + 1, dtype=np.int64))
    with pytest.raises(ValueError, match="columns"):
        s.verify_sample(np.ones((len(tokens), 3), dtype=np.float32), np.zeros(9))
    with pytest.raises(ValueError, match="not a valid id"):
        s.accept([-1])
    with pytest.raises(ValueError, match="vocabulary"):
        s.accept([16])
    assert math.isfinite(float(scores.sum()))


def test_importing_speculative_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, tokenmill.speculative; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cost_curve_is_measured_once_per_model() -> None:
    model = _model("gpt2")
    info = inspect_model(model, 256)
    a = sp.measure_cost_curve(model, info, max_nodes=8, repeats=1)
    b = sp.measure_cost_curve(model, info, max_nodes=8, repeats=1)
    assert a is b


def test_cost_curve_is_saved_reused_and_remeasured_when_corrupt(monkeypatch: Any) -> None:
    """A later process (here: a fresh model object of the same configuration) reads the
    saved curve instead of measuring; a corrupt or mismatched file is ignored with a warning,
    measured again and overwritten."""
    budget = sp._budget
    model = _model("llama")
    info = inspect_model(model, 256)
    a = sp.measure_cost_curve(model, info, max_nodes=8, repeats=1)
    files = list(budget.cache_dir().glob("cost-llama-*.json"))
    assert len(files) == 1
    measured: list[int] = []
    real = budget._measure

    def counting(*args: Any, **kw: Any) -> Any:
        measured.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(budget, "_measure", counting)
    # Same configuration, new object (nothing in memory): read from disk.
    b = sp.measure_cost_curve(_model("llama"), info, max_nodes=8, repeats=1)
    np.testing.assert_array_equal(a, b)
    assert measured == []
    # Another configuration gets its own file.
    other = _model("llama", vocab=32)
    sp.measure_cost_curve(other, inspect_model(other, 256), max_nodes=8, repeats=1)
    assert measured == [1] and len(list(budget.cache_dir().glob("cost-llama-*.json"))) == 2
    for corrupt in ("{not json", '{"key": null, "costs": [1]}'):
        files[0].write_text(corrupt)
        with pytest.warns(UserWarning, match="ignoring the saved cost curve"):
            c = sp.measure_cost_curve(_model("llama"), info, max_nodes=8, repeats=1)
        assert c.shape == (8,) and (c > 0).all()
        assert budget._load(files[0], budget._disk_key(model, info, 8, 128), 8) is not None
    assert measured == [1, 1, 1]
    # A curve whose values are not a valid cost curve is rejected too.
    data = json.loads(files[0].read_text())
    data["costs"][3] = -1.0
    files[0].write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="non-decreasing"):
        sp.measure_cost_curve(_model("llama"), info, max_nodes=8, repeats=1)
    # Turned off, nothing is read or written.
    files[0].unlink()
    sp.measure_cost_curve(_model("llama"), info, max_nodes=8, repeats=1, persist=False)
    assert not files[0].exists()


def test_logits_paths_equal_torch_reductions(monkeypatch: Any) -> None:
    """On the CPU, Rust reads the logits in place for the argmax and Token Recycling's top-k;
    the result equals torch's argmax (ties and NaN included) and the torch path's top-k (ids
    equal, probabilities to float32 precision)."""
    rng = np.random.default_rng(4)
    s = Speculator(16, [("lookup", 1.0), ("recycling", 1.0)], k=3)
    # Token 2 at two nodes: only the last one's row is recycled.
    tokens = np.array([1, 2, 3, 5, 4, 2], dtype=np.int64)
    s.set_tree(tokens, np.array([-1, 0, 1, 0, 3, 4], dtype=np.int64))
    for _ in range(200):
        logits = rng.integers(0, 4, (6, 16)).astype(np.float32)  # ties everywhere
        if rng.random() < 0.2:
            logits[rng.integers(0, 6), rng.integers(0, 16)] = np.nan
        argmax = torch.from_numpy(logits).argmax(-1).numpy()
        assert s.verify_greedy_logits(logits) == s.verify_greedy(argmax)
        # Non-contiguous input is accepted (copied).
        wide = np.repeat(logits, 2, axis=1)[:, ::2]
        assert s.verify_greedy_logits(wide) == s.verify_greedy(argmax)
    with pytest.raises(ValueError, match="logits"):
        s.verify_greedy_logits(np.zeros((5, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="parent"):
        s.set_tree(tokens, np.array([-1, 0, 5, 0, 3, 4], dtype=np.int64))
    # End to end: the same decoding through both paths gives the same output and adjacency.
    model = _model("llama")
    prompt = torch.tensor([[5, 6, 7, 5, 6, 9, 5, 6, 7]])
    d_rust = sp.Drafter(64, ("recycling", "lookup"), k=4)
    d_torch = sp.Drafter(64, ("recycling", "lookup"), k=4)
    r = sp.generate(model, prompt, max_new_tokens=30, drafter=d_rust, tree_budget=12)
    monkeypatch.setattr(sp, "_TORCH_REDUCTIONS", True)
    t = sp.generate(model, prompt, max_new_tokens=30, drafter=d_torch, tree_budget=12)
    assert r.tokens == t.tokens and r.stats.tree_sizes == t.stats.tree_sizes
    ids_r, probs_r = d_rust._spec.adjacency()
    ids_t, probs_t = d_torch._spec.adjacency()
    np.testing.assert_array_equal(ids_r, ids_t)
    np.testing.assert_allclose(probs_r, probs_t, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_greedy_steps_equal_the_separate_calls(arch: str, monkeypatch: Any) -> None:
    """On the CPU a greedy step is one Rust call (`Speculator.step_greedy`); the same decodings
    through the separate calls give the same tokens, trees, accepted drafts, adjacency matrix
    and context, over every drafter, fixed and automatic budgets (a cost curve that makes the
    size choice and the calibration matter), EOS, dead cache slots and learned positions."""
    pos_limit = {"max_positions": 40} if arch == "gpt2" else {}
    model = _model(arch, sliding_window=6 if arch == "mistral" else None, **pos_limit)
    rng = np.random.default_rng(6)
    curve = [1.0 + 0.08 * n for n in range(sp.AUTO_MAX_NODES)]
    monkeypatch.setattr(sp, "_MAX_DEAD", 0.3)
    drafted = stopped = 0
    for trial in range(6):
        base = rng.integers(0, 64, 5)
        prompt = torch.from_numpy(np.concatenate([base, base, base[:3]]))[None]
        # Odd trials stop at EOS: a token greedy decoding produces a few steps in.
        ref = _reference(model, prompt, 27, do_sample=False)
        eos = int(ref[0, prompt.shape[1] + 4 + trial]) if trial % 2 else None
        for drafter, budget in itertools.product(("recycling", "lookup", "all"), (0, 7, "auto")):
            runs = []
            for fused in (True, False):
                monkeypatch.setattr(sp, "_FUSED", fused)
                d = sp.Drafter(64, drafter, k=4)
                r = sp.generate(
                    model,
                    prompt,
                    max_new_tokens=27,
                    drafter=d,
                    tree_budget=budget,
                    cost_curve=curve,
                    eos_token_id=eos,
                )
                runs.append((r, d))
            (f, df), (s, ds) = runs
            assert f.tokens == s.tokens, (trial, drafter, budget)
            assert f.stats.tree_sizes == s.stats.tree_sizes
            assert f.stats.drafts_accepted == s.stats.drafts_accepted
            assert df._spec.context == ds._spec.context
            for a, b in zip(df._spec.adjacency(), ds._spec.adjacency(), strict=True):
                np.testing.assert_array_equal(a, b)
            drafted += sum(n > 1 for n in f.stats.tree_sizes)
            stopped += eos is not None and len(f.tokens) < 27
    assert drafted > 50 and stopped > 0


def test_fused_step_binding_rejects_misuse() -> None:
    s = Speculator(16, [("recycling", 1.0)])
    with pytest.raises(ValueError, match="begin"):
        s.step_greedy(np.zeros((1, 16), dtype=np.float32), 4)
    prompt = np.array([1, 2, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="costs"):
        s.begin(prompt, budget=4, costs=np.zeros(3), max_dead=0.25, fill=-1.0)
    with pytest.raises(ValueError, match="window"):
        s.begin(prompt, budget=4, max_dead=0.25, window=0, fill=-1.0)
    with pytest.raises(ValueError, match="vocabulary"):
        s.begin(np.array([1, 16], dtype=np.int64), budget=4, max_dead=0.25, fill=-1.0)
    ids, pos, mask, _ = s.begin(prompt, budget=0, eos=[-5, 2**40, 7], max_dead=0.25, fill=-1.0)
    np.testing.assert_array_equal(ids, [[3]])
    np.testing.assert_array_equal(pos, [[2]])
    assert mask is None
    with pytest.raises(ValueError, match="logits"):
        s.step_greedy(np.zeros((2, 16), dtype=np.float32), 4)
    # Tensors are read in place: only contiguous float32 ones on the CPU.
    for bad, why in [
        (np.zeros((1, 16), dtype=np.float64), "float32"),
        (torch.zeros(1, 16, dtype=torch.float64), "float64"),
        (torch.zeros(1, 32)[:, ::2], "contiguous"),
        (torch.zeros(1, 16, device="meta"), "CPU"),
        ([0.0] * 16, "list"),
    ]:
        with pytest.raises(ValueError, match=why):
            s.step_greedy(bad, 4)
    logits = np.zeros((1, 16), dtype=np.float32)
    logits[0, 7] = 1.0  # an EOS id ends the generation
    tokens, drafts, done, live, inputs, _, _ = s.step_greedy(logits, 4)
    assert (tokens, drafts, done, live, inputs) == ([7], 0, True, None, None)
