"""Small causal language models for tests and benchmarks.

- `tiny_causal_lm` / `tiny_tokenizer`: random models and small tokenizers in seconds, for unit
  tests of mechanics (masks, caches, exactness against brute force);
- `build`, `load`, `model_dir`, `list_models` (and `tokenmill models build|list`): small models
  trained on CPython's standard library by the versioned recipes in `RECIPES`, cached on disk;
  `heldout_texts()` gives the files they never saw, for evaluation prompts.

torch and transformers are imported only when a model is made or loaded.
"""

from tokenmill.models.recipes import RECIPES, Recipe
from tokenmill.models.tiny import ARCHITECTURES, hf_config, tiny_causal_lm, tiny_tokenizer
from tokenmill.models.trainer import (
    ModelNotBuiltError,
    build,
    build_one,
    cache_dir,
    heldout_texts,
    list_models,
    load,
    metadata,
    model_dir,
    split_files,
)

__all__ = [
    "ARCHITECTURES",
    "RECIPES",
    "ModelNotBuiltError",
    "Recipe",
    "build",
    "build_one",
    "cache_dir",
    "heldout_texts",
    "hf_config",
    "list_models",
    "load",
    "metadata",
    "model_dir",
    "split_files",
    "tiny_causal_lm",
    "tiny_tokenizer",
]
