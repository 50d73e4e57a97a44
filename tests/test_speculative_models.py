"""Greedy speculative decoding on the trained benchmark models (code-a: Llama, code-b: GPT-2)
is token-for-token identical to `model.generate(do_sample=False)` on held-out prompts.

The models run in float64: the tree forward and the sequential forward then agree to ~1e-12,
and both argmaxes are taken over the same float32-cast logits (as `generate` does), so no
near-tie can flip; equality is asserted without exceptions. Skipped when a model is not built
(`tokenmill models build code-a code-b`); slow (`pytest -m slow`).
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenmill import speculative as sp  # noqa: E402
from tokenmill.models import ModelNotBuiltError, heldout_texts, load  # noqa: E402

pytestmark = pytest.mark.slow


def _load(name: str) -> tuple[Any, Any]:
    try:
        return load(name, dtype=torch.float64)
    except ModelNotBuiltError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name", ["code-a", "code-b"])
def test_greedy_identical_on_trained_models(name: str, tmp_path: Any, monkeypatch: Any) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv(sp._budget.CACHE_ENV, str(tmp_path))  # not the user's cache
    model, tok = _load(name)
    texts = [t for _, t in heldout_texts() if len(t) > 3000][:6]
    prompts: list[list[int]] = []
    for t in texts:
        ids = tok.encode_ids(t)
        prompts.append(ids[:100])  # a file's start
        prompts.append(ids[300:380])  # the middle of a file
    assert len(prompts) == 12
    drafter = sp.Drafter(sp._model.inspect_model(model, 256).vocab_size)
    total_steps = total_new = 0
    for i, p in enumerate(prompts):
        ids = torch.tensor([p])
        ref = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=64,
            min_new_tokens=64,
            do_sample=False,
            pad_token_id=0,
        )
        budget: int | str = "auto" if i % 2 else 24
        r = sp.generate(model, p, max_new_tokens=64, drafter=drafter, tree_budget=budget)
        assert torch.equal(r.sequences, ref), (name, i)
        total_steps += r.stats.steps
        total_new += r.stats.new_tokens
    # The trained models are predictable enough for drafts to pay.
    assert total_new / total_steps > 1.5
