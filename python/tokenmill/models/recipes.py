"""Versioned recipes of the benchmark models.

A recipe fixes everything that decides the trained weights: data split, tokenizer, architecture,
optimiser and step count. Its key (a hash of all of it, plus the library versions that change
numerics) names the cache directory, so editing a recipe retrains instead of silently reusing a
model trained by another one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Bumped when the training code changes in a way the fields below do not capture.
TRAINER_VERSION = 1

EOT = "<|endoftext|>"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    # tokenizer
    pattern: str  # a name in tokenmill.PATTERNS
    vocab_size: int  # including the one special token, EOT
    # architecture (transformers model_type)
    arch: str  # "llama" | "gpt2" | "qwen2"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    context: int
    # optimisation
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float = 0.1
    seed: int = 0
    # data: held out when sha256(relative path) mod heldout_mod == 0
    heldout_mod: int = 20
    max_file_bytes: int = 300_000
    eval_tokens: int = 200_000
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """12 hex digits naming this exact recipe (the description does not count)."""
        d = self.to_dict()
        d.pop("description")
        d["trainer_version"] = TRAINER_VERSION
        blob = json.dumps(d, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:12]

    def with_budget(self, steps: int, **changes: Any) -> Recipe:
        """The same recipe with fewer steps (and optionally smaller sizes): for the end-to-end
        test. It gets a different key, so it never shadows the real model."""
        return dataclasses.replace(self, steps=steps, **changes)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="code-a",
            description="Llama architecture, GPT-2 pre-tokenizer pattern, 4k vocabulary",
            pattern="gpt2-hf",
            vocab_size=4096,
            arch="llama",
            hidden_size=256,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=688,
            context=256,
            steps=600,
            batch_size=16,
            lr=2e-3,
            warmup=60,
        ),
        Recipe(
            name="code-b",
            description="GPT-2 architecture, Llama-3 pre-tokenizer pattern, 8k vocabulary",
            pattern="llama3",
            vocab_size=8192,
            arch="gpt2",
            hidden_size=256,
            num_layers=4,
            num_heads=4,
            num_kv_heads=4,
            intermediate_size=768,
            context=256,
            steps=500,
            batch_size=16,
            lr=2e-3,
            warmup=60,
        ),
    )
}
