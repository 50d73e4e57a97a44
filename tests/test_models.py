"""The benchmark models (tokenmill.models): recipes, data split, the random factory, the cached
trained models, and (slow) an end-to-end build with a reduced budget."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tokenizers  # noqa: E402

import tokenmill  # noqa: E402
from tokenmill import models  # noqa: E402
from tokenmill.models import trainer as build_mod  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return models.split_files()


def test_split_is_by_file_deterministic_and_disjoint(
    split: tuple[list[tuple[str, str]], list[tuple[str, str]]],
) -> None:
    train, heldout = split
    train_paths = {p for p, _ in train}
    held_paths = {p for p, _ in heldout}
    assert not train_paths & held_paths
    assert len(train_paths) == len(train) and len(held_paths) == len(heldout)
    # About 1 in heldout_mod files, by a hash of the path: far from 0 and from everything.
    frac = len(heldout) / (len(train) + len(heldout))
    assert 0.02 < frac < 0.10, frac
    assert [p for p, _ in models.heldout_texts()] == [p for p, _ in heldout]
    # A different modulus moves files: the split really depends on the recipe's setting.
    other = dataclasses.replace(models.RECIPES["code-a"], heldout_mod=7)
    assert {p for p, _ in models.heldout_texts(other)} != held_paths


def test_recipe_key_covers_every_training_field() -> None:
    r = models.RECIPES["code-a"]
    assert r.key() == dataclasses.replace(r).key()
    assert r.key() == dataclasses.replace(r, description="anything").key()
    for change in (
        {"steps": r.steps + 1},
        {"lr": r.lr * 2},
        {"pattern": "llama3"},
        {"vocab_size": r.vocab_size + 1},
        {"seed": 1},
        {"heldout_mod": 7},
        {"arch": "qwen2"},
    ):
        assert dataclasses.replace(r, **change).key() != r.key(), change
    assert len({rec.key() for rec in models.RECIPES.values()}) == len(models.RECIPES)


def test_recipes_match_the_issue() -> None:
    a, b = models.RECIPES["code-a"], models.RECIPES["code-b"]
    assert (a.arch, a.pattern, a.vocab_size) == ("llama", "gpt2-hf", 4096)
    assert (b.arch, b.pattern, b.vocab_size) == ("gpt2", "llama3", 8192)


def test_unbuilt_model_names_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(models.ModelNotBuiltError, match="tokenmill models build code-a"):
        models.model_dir("code-a", root=tmp_path)
    with pytest.raises(KeyError, match="known: code-a, code-b"):
        models.model_dir("code-z", root=tmp_path)
    assert models.list_models(tmp_path) == []


@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_tiny_models_round_trip_through_save_pretrained(arch: str, tmp_path: Path) -> None:
    m = models.tiny_causal_lm(300, arch, seed=3, eos_token_id=299)
    again = models.tiny_causal_lm(300, arch, seed=3, eos_token_id=299)
    other = models.tiny_causal_lm(300, arch, seed=4, eos_token_id=299)
    ids = torch.tensor([[5, 17, 200, 3, 3, 299]])
    with torch.no_grad():
        logits = m(ids).logits
        assert torch.equal(logits, again(ids).logits)
        assert not torch.allclose(logits, other(ids).logits)
        m.save_pretrained(tmp_path)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert type(loaded) is type(m)
        assert torch.equal(loaded(ids).logits, logits)
    # Sharp enough to be useful in tests: far from the uniform distribution.
    probs = torch.softmax(logits[0, -1].double(), -1)
    entropy = float(-(probs * probs.log()).sum())
    assert entropy < 0.9 * math.log(300)


def test_tiny_tokenizer_matches_hf_tokenizers(
    split: tuple[list[tuple[str, str]], list[tuple[str, str]]],
) -> None:
    for pattern in ("gpt2-hf", "llama3"):
        tok = models.tiny_tokenizer(400, pattern)
        assert tok.get_vocab_size() == 400
        ref = tokenizers.Tokenizer.from_str(tok.to_str())
        for _, text in split[1][:20]:
            assert tok.encode_ids(text) == ref.encode(text).ids


# ----------------------------------------------------------------------- the trained models
# `make setup` builds them (`tokenmill models build`); they are cached across runs.


@pytest.fixture(scope="module", params=sorted(models.RECIPES))
def trained(request: pytest.FixtureRequest) -> tuple[str, Path]:
    name = request.param
    return name, models.model_dir(name)


def test_trained_model_is_standard_hf_format(
    trained: tuple[str, Path], split: tuple[list[tuple[str, str]], list[tuple[str, str]]]
) -> None:
    name, path = trained
    recipe = models.RECIPES[name]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenmill_model.json"):
        assert (path / f).is_file(), f
    model, tok = models.load(name)
    assert model.config.model_type == recipe.arch
    assert model.config.vocab_size == recipe.vocab_size == tok.get_vocab_size()
    eot = tok.token_to_id("<|endoftext|>")
    assert model.config.eos_token_id == eot
    # transformers' own tokenizer loading reads the same file to the same ids.
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    for _, text in split[1][:10]:
        assert hf_tok(text)["input_ids"] == tok.encode_ids(text)
    assert hf_tok.eos_token_id == eot


def test_trained_model_metrics_reproduce_and_beat_chance(
    trained: tuple[str, Path], split: tuple[list[tuple[str, str]], list[tuple[str, str]]]
) -> None:
    name, path = trained
    recipe = models.RECIPES[name]
    meta = json.loads((path / "tokenmill_model.json").read_text())
    assert meta["key"] == recipe.key()
    model, tok = models.load(name)
    eot = tok.token_to_id("<|endoftext|>")
    assert eot is not None
    stream = build_mod.token_stream(tok.encode_ids_batch, [t for _, t in split[1]], eot)
    token_bytes = build_mod.token_lengths(tok.to_encoding(), eot)
    # The first 2 windows of what the build evaluated: the saved number is from this data.
    small = build_mod.evaluate(model, stream, token_bytes, recipe.context, 2 * recipe.context)
    assert small["loss"] < 0.5 * math.log(recipe.vocab_size)
    # Trained, not random: under 2.5 bits per byte of held-out code (uniform bytes would be 8).
    assert meta["heldout"]["bits_per_byte"] < 2.5
    assert abs(small["bits_per_byte"] - meta["heldout"]["bits_per_byte"]) < 0.5


def test_models_list_cli_shows_the_trained_models(trained: tuple[str, Path]) -> None:
    name, _ = trained
    out = subprocess.run(
        [sys.executable, "-m", "tokenmill.cli", "models", "list"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
    assert models.RECIPES[name].key() in line and "current" in line


# ---------------------------------------------------------------------------- end to end


def _small(name: str) -> models.Recipe:
    return models.RECIPES[name].with_budget(
        40,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=128,
        context=64,
        batch_size=8,
        lr=3e-3,
        warmup=5,
        eval_tokens=4096,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(models.RECIPES))
def test_build_end_to_end_with_reduced_budget(name: str, tmp_path: Path) -> None:
    recipe = _small(name)
    assert recipe.key() != models.RECIPES[name].key()
    path = models.build_one(recipe, root=tmp_path, show_progress=False, log=lambda *_: None)
    assert path == models.model_dir(recipe, root=tmp_path)
    meta = models.metadata(recipe, root=tmp_path)
    model, tok = models.load(recipe, root=tmp_path)

    # Training helped: the untrained model (same seed, same init) is worse on held-out data.
    eot = tok.token_to_id("<|endoftext|>")
    assert eot is not None
    init = build_mod._make_model(recipe, eot)
    _, heldout = models.split_files(recipe)
    stream = build_mod.token_stream(tok.encode_ids_batch, [t for _, t in heldout], eot)
    token_bytes = build_mod.token_lengths(tok.to_encoding(), eot)
    before = build_mod.evaluate(init, stream, token_bytes, recipe.context, recipe.eval_tokens)
    after = build_mod.evaluate(model, stream, token_bytes, recipe.context, recipe.eval_tokens)
    assert after["loss"] < before["loss"] - 0.5
    assert after["bits_per_byte"] == pytest.approx(meta["heldout"]["bits_per_byte"], rel=1e-6)

    # Cached: a second build does not retrain. Forced: retrains to the same weights.
    weights = (path / "model.safetensors").read_bytes()
    assert models.build_one(recipe, root=tmp_path, log=lambda *_: None) == path
    models.build_one(recipe, root=tmp_path, force=True, show_progress=False, log=lambda *_: None)
    assert (path / "model.safetensors").read_bytes() == weights

    # A changed recipe is a different model: it is not found until built.
    with pytest.raises(models.ModelNotBuiltError):
        models.model_dir(dataclasses.replace(recipe, seed=1), root=tmp_path)
    listed = models.list_models(tmp_path)
    assert [(m["name"], m["key"]) for m in listed] == [(name, recipe.key())]


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise KeyboardInterrupt

    # Interrupted while writing: the weights are already in the temporary directory.
    monkeypatch.setattr(tokenmill.train.TrainedEncoding, "save_tokenizer_json", boom)
    recipe = _small("code-a").with_budget(1)
    with pytest.raises(KeyboardInterrupt):
        models.build_one(recipe, root=tmp_path, show_progress=False, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []
