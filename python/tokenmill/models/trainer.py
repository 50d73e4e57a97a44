"""Training, caching and loading the benchmark models.

The data is CPython's standard library (`.py` files of the interpreter running this), split by
file: a file is held out when the SHA-256 of its path relative to the stdlib root is 0 modulo
`recipe.heldout_mod`. The split therefore depends on nothing but the path, so it is the same
on every machine with the same Python version, and evaluation prompts come from files the
models never saw.

Training is deterministic for a given recipe, torch version and thread count (fixed seeds,
fixed step count, batches drawn from a seeded generator). A time budget would be easier to
state but would make the weights depend on the machine's speed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenmill.models.recipes import EOT, RECIPES, Recipe
from tokenmill.models.tiny import hf_config

if TYPE_CHECKING:
    from tokenmill.hf import Tokenizer
    from tokenmill.train import TrainedEncoding

CACHE_ENV = "TOKENMILL_MODELS_DIR"
META_FILE = "tokenmill_model.json"


class ModelNotBuiltError(FileNotFoundError):
    """A benchmark model is not in the cache; the message names the command that builds it."""


def cache_dir() -> Path:
    """``$TOKENMILL_MODELS_DIR``, else ``$XDG_CACHE_HOME/tokenmill/models`` (``~/.cache/...``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "tokenmill" / "models"


def _recipe(name_or_recipe: str | Recipe) -> Recipe:
    if isinstance(name_or_recipe, Recipe):
        return name_or_recipe
    try:
        return RECIPES[name_or_recipe]
    except KeyError:
        raise KeyError(
            f"unknown model {name_or_recipe!r}; known: {', '.join(sorted(RECIPES))}"
        ) from None


def model_dir(name: str | Recipe, *, root: Path | None = None) -> Path:
    """The directory of a built model (config.json, model.safetensors, tokenizer.json).
    Raises ModelNotBuiltError when its current recipe has not been built."""
    recipe = _recipe(name)
    path = (root or cache_dir()) / f"{recipe.name}-{recipe.key()}"
    if not (path / META_FILE).is_file():
        raise ModelNotBuiltError(
            f"model {recipe.name!r} (recipe {recipe.key()}) is not built in {path.parent}; "
            f"run `tokenmill models build {recipe.name}` (about 15 minutes on 2 CPU cores)"
        )
    return path


def load(
    name: str | Recipe, *, dtype: Any = None, root: Path | None = None
) -> tuple[Any, Tokenizer]:
    """(model, tokenizer) of a built model: a transformers causal LM in eval mode and a
    `tokenmill.Tokenizer`."""
    import transformers

    from tokenmill.hf import Tokenizer

    path = model_dir(name, root=root)
    kwargs = {} if dtype is None else {"dtype": dtype}
    model: Any = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.eval()
    return model, Tokenizer.from_file(path / "tokenizer.json")


def metadata(name: str | Recipe, *, root: Path | None = None) -> dict[str, Any]:
    """What was saved with the model: its recipe, key, held-out metrics and versions."""
    meta: dict[str, Any] = json.loads((model_dir(name, root=root) / META_FILE).read_text())
    return meta


def list_models(root: Path | None = None) -> list[dict[str, Any]]:
    """Every model in the cache, current or left over from an older recipe."""
    base = root or cache_dir()
    out = []
    for meta_path in sorted(base.glob(f"*/{META_FILE}")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        recipe = RECIPES.get(meta.get("name", ""))
        meta["current"] = recipe is not None and recipe.key() == meta.get("key")
        meta["path"] = str(meta_path.parent)
        out.append(meta)
    return out


# ------------------------------------------------------------------------------------ data


def split_files(
    recipe: Recipe | None = None,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, held-out) lists of (path relative to the stdlib, text), in the project's
    deterministic file order. Files that are not UTF-8 or larger than `max_file_bytes`
    (generated tables, test data) are left out of both."""
    import hashlib

    from tokenmill._corpora import _code_source

    r = recipe or RECIPES["code-a"]
    src = _code_source()
    train: list[tuple[str, str]] = []
    heldout: list[tuple[str, str]] = []
    for path in src.files:
        rel = path.relative_to(src.root).as_posix()
        try:
            if path.stat().st_size > r.max_file_bytes:
                continue
        except OSError:
            continue
        text = src.reader(path)
        if text is None:
            continue
        digest = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big")
        (heldout if digest % r.heldout_mod == 0 else train).append((rel, text))
    return train, heldout


def heldout_texts(recipe: Recipe | str | None = None) -> list[tuple[str, str]]:
    """(relative path, text) of the held-out files: evaluation prompts come from these."""
    return split_files(None if recipe is None else _recipe(recipe))[1]


def token_stream(encode: Any, texts: Sequence[str], eot_id: int) -> np.ndarray:
    """Documents as one int32 stream, each preceded by EOT (GPT-2's convention: EOT both ends
    a document and starts the next, so the model learns what a file's start looks like)."""
    parts: list[np.ndarray] = []
    for ids in encode(list(texts)):
        parts.append(np.array([eot_id], dtype=np.int32))
        parts.append(np.asarray(ids, dtype=np.int32))
    parts.append(np.array([eot_id], dtype=np.int32))
    return np.concatenate(parts)


def token_lengths(enc: Any, eot_id: int) -> np.ndarray:
    """Bytes of text each token id stands for (EOT: none), the denominator of bits per byte."""
    return np.array(
        [0 if i == eot_id else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)],
        dtype=np.int64,
    )


# -------------------------------------------------------------------------------- training


def _train_tokenizer(recipe: Recipe, texts: Sequence[str]) -> TrainedEncoding:
    from tokenmill.train import train_bpe

    return train_bpe(
        list(texts),
        recipe.vocab_size,
        pattern=recipe.pattern,
        special_tokens=[EOT],
        show_progress=False,
        name=recipe.name,
    )


def _make_model(recipe: Recipe, eot_id: int) -> Any:
    import torch
    import transformers

    cfg = hf_config(
        recipe.arch,
        recipe.vocab_size,
        hidden_size=recipe.hidden_size,
        num_layers=recipe.num_layers,
        num_heads=recipe.num_heads,
        num_kv_heads=recipe.num_kv_heads,
        intermediate_size=recipe.intermediate_size,
        max_positions=max(1024, recipe.context),
        bos_token_id=eot_id,
        eos_token_id=eot_id,
    )
    if recipe.arch != "gpt2":
        # Small models gain from sharing the embedding with the output layer (fewer
        # parameters for the same quality); GPT-2 ties them already.
        cfg.tie_word_embeddings = True
    torch.manual_seed(recipe.seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)  # type: ignore[no-untyped-call]
    return model


def evaluate(
    model: Any, stream: np.ndarray, token_bytes: np.ndarray, context: int, max_tokens: int
) -> dict[str, float]:
    """Held-out loss over non-overlapping windows of `context` tokens at the start of
    `stream`: nats per predicted token and bits per byte (total bits over the UTF-8 bytes of
    the predicted tokens; EOT counts zero bytes but its loss counts)."""
    import torch

    n = min(len(stream), max_tokens + 1)
    total_nll = 0.0
    total_tokens = 0
    total_bytes = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, n - 1, context):
            window = torch.from_numpy(stream[start : min(start + context + 1, n)].astype(np.int64))
            if len(window) < 2:
                break
            logits = model(window[None, :-1]).logits[0].double()
            targets = window[1:]
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            total_nll += float(nll)
            total_tokens += len(targets)
            total_bytes += int(token_bytes[targets.numpy()].sum())
    model.train(was_training)
    return {
        "loss": total_nll / total_tokens,
        "bits_per_byte": total_nll / math.log(2) / total_bytes,
        "tokens": float(total_tokens),
        "bytes": float(total_bytes),
    }


def _lr(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    # Cosine to a tenth of the peak: the last steps still learn something.
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


def build_one(
    recipe: Recipe | str,
    *,
    root: Path | None = None,
    force: bool = False,
    show_progress: bool = True,
    log: Any = print,
) -> Path:
    """Trains one model by its recipe (unless it is cached) and returns its directory.

    The directory appears atomically: it is written under a temporary name and renamed, so an
    interrupted build leaves nothing that `model_dir` would take for a model."""
    import torch

    import tokenmill

    r = _recipe(recipe)
    base = root or cache_dir()
    final = base / f"{r.name}-{r.key()}"
    if (final / META_FILE).is_file() and not force:
        log(f"{r.name}: cached at {final}")
        return final

    t0 = time.perf_counter()
    train_files, heldout_files = split_files(r)
    train_texts = [t for _, t in train_files]
    log(
        f"{r.name}: {len(train_files)} training files "
        f"({sum(len(t.encode('utf-8')) for t in train_texts) / 1e6:.1f} MB), "
        f"{len(heldout_files)} held out; training a {r.vocab_size}-token tokenizer"
    )
    enc = _train_tokenizer(r, train_texts)
    eot_id = enc.encode_single_token(EOT)
    token_bytes = token_lengths(enc, eot_id)

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return enc.encode_ordinary_batch(texts)

    train_stream = token_stream(encode_batch, train_texts, eot_id)
    heldout_stream = token_stream(encode_batch, [t for _, t in heldout_files], eot_id)
    log(
        f"{r.name}: {len(train_stream) / 1e6:.2f}M training tokens, "
        f"{len(heldout_stream) / 1e6:.2f}M held-out tokens "
        f"({time.perf_counter() - t0:.0f} s so far)"
    )

    model = _make_model(r, eot_id)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": r.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=r.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(r.seed)
    data = torch.from_numpy(train_stream.astype(np.int64))
    offsets = torch.arange(r.context)
    bar = _progress(r.steps, r.name, show_progress)
    t_train = time.perf_counter()
    model.train()
    loss_ema = float("nan")
    try:
        for step in range(r.steps):
            for group in opt.param_groups:
                group["lr"] = _lr(step, r)
            starts = torch.randint(0, len(data) - r.context - 1, (r.batch_size,), generator=gen)
            batch = data[starts[:, None] + offsets[None, :]]
            # transformers shifts the labels inside: each window predicts context - 1 tokens.
            out = model(batch, labels=batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss = float(out.loss.detach())
            loss_ema = loss if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * loss
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_ema:.3f}")
            elif step % max(1, r.steps // 10) == 0:
                log(f"{r.name}: step {step}/{r.steps} loss {loss_ema:.3f}")
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - t_train
    metrics = evaluate(model, heldout_stream, token_bytes, r.context, r.eval_tokens)
    log(
        f"{r.name}: {n_params / 1e6:.2f}M parameters, {r.steps} steps in {train_seconds:.0f} s; "
        f"held-out loss {metrics['loss']:.4f} nats/token, "
        f"{metrics['bits_per_byte']:.4f} bits/byte"
    )

    meta = {
        "name": r.name,
        "key": r.key(),
        "recipe": r.to_dict(),
        "parameters": n_params,
        "train_tokens_available": len(train_stream),
        "train_tokens_seen": r.steps * r.batch_size * r.context,
        "heldout": metrics,
        "train_seconds": train_seconds,
        "build_seconds": time.perf_counter() - t0,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "tokenmill": tokenmill.__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "python": sys.version.split()[0],
        },
    }
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{r.name}-", dir=base))
    try:
        model.eval()
        model.save_pretrained(tmp)
        enc.save_tokenizer_json(tmp / "tokenizer.json")
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": EOT,
                    "eos_token": EOT,
                    "model_max_length": max(1024, r.context),
                },
                indent=2,
            )
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build(
    names: Iterable[str] | None = None,
    *,
    root: Path | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> list[Path]:
    """Builds the named models (default: all recipes); cached ones are reused."""
    return [
        build_one(n, root=root, force=force, show_progress=show_progress)
        for n in (list(names) if names else sorted(RECIPES))
    ]
