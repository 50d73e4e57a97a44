"""Small causal language models for tests and benchmarks (issue #5).

- `tiny_causal_lm` / `tiny_tokenizer`: random models and small tokenizers in seconds, for unit
  tests of mechanics;
- `build`, `load`, `list_models` (and `tokenmill models build|list`): small models trained on
  CPython's standard library by versioned recipes, cached on disk.

torch and transformers are imported only when a model is made or loaded.
"""

from tokenmill.models.tiny import ARCHITECTURES, tiny_causal_lm, tiny_tokenizer

__all__ = ["ARCHITECTURES", "tiny_causal_lm", "tiny_tokenizer"]
