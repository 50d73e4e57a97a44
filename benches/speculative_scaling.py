"""tokenmill's per-step work between two forwards against the forward of a 135M-parameter model.

The benchmark models (4-5M parameters) have 4-8 ms forwards, so 1% of a step is 40-80 us:
a handful of cold calls. This measures the same loop on a model shaped like SmolLM-135M
(llama, 30 layers, hidden 576, vocabulary 49152; the size at which the issue measured the CPU
cost curve) with random weights: timing only, since random weights accept almost no drafts.
The budget is fixed, so every step verifies a full tree (Token Recycling's matrix is full
after the first steps: every tree token's row gets k candidates), and the vocabulary is 6 to
12 times the benchmark models', so Token Recycling's top-k rows cost as much more.

    python benches/speculative_scaling.py [--budgets 3 15 63] [--new 24]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))


def smollm_shaped_llama(vocab_size: int, **config: Any) -> Any:
    """A llama of SmolLM-135M's shape (30 layers, hidden 576) with random weights (seed 0) and
    `vocab_size` tokens; `config` adds to its configuration (special-token ids)."""
    import torch
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        **config,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def main() -> None:
    import numpy as np
    import torch

    from tokenmill import speculative as sp

    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=int, nargs="+", default=[3, 15, 63])
    ap.add_argument("--new", type=int, default=24)
    ap.add_argument("--prompts", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = smollm_shaped_llama(49152)
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    # Repetitive prompts, so that prompt lookup and the tri-gram table propose drafts too.
    prompts = []
    for _ in range(args.prompts + 1):
        motif = rng.integers(0, cfg.vocab_size, 16).tolist()
        prompts.append((motif * 8)[:128])
    print(f"random llama, {params / 1e6:.0f}M parameters, vocabulary {cfg.vocab_size}, 1 thread")
    print("| drafter | budget | tree nodes | forward (ms) | outside the forward (us) | share |")
    print("|---|---|---|---|---|---|")
    for drafter in ("recycling", "all"):
        for budget in args.budgets:
            d = sp.Drafter(cfg.vocab_size, drafter)
            sp.generate(model, prompts[0], max_new_tokens=args.new, drafter=d, tree_budget=budget)
            fwd = out = 0.0
            steps = nodes = 0
            for p in prompts[1:]:
                r = sp.generate(model, p, max_new_tokens=args.new, drafter=d, tree_budget=budget)
                s = r.stats
                fwd += s.forward
                out += s.drafting + s.verification + s.cache
                steps += s.steps
                nodes += sum(s.tree_sizes)
            print(
                f"| {drafter} | {budget} | {nodes / steps:.1f} | {fwd / steps * 1e3:.1f} | "
                f"{out / steps * 1e6:.0f} | {100 * out / fwd:.2f}% |",
                flush=True,
            )


if __name__ == "__main__":
    main()
