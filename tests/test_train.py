"""BPE training (`tokenmill.train_bpe`), saving, Picky BPE and data-mixture inference.

References: HF `tokenizers`' `BpeTrainer` trained on the same text with the same settings
(merges must be identical: tokenmill breaks ties the way it does), `tiktoken` loading the
`.tiktoken` file, `tokenizers` and `transformers` loading the `tokenizer.json`.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import corpora
import tokenmill
from _helpers import expect_raises
from tokenmill import _core
from tokenmill.train import TrainedEncoding, bytes_to_unicode_str, train_bpe

# ----------------------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def train_texts() -> list[str]:
    """~600 KB: the small slices of code, prose (HTML) and multilingual catalogues."""
    return [d for n in corpora.CORPUS_NAMES for d in corpora.corpus(n, "small")]


@pytest.fixture(scope="module")
def random_words() -> list[str]:
    """~3 MB of random lowercase words: hundreds of thousands of distinct pre-tokens, so that
    training to a large vocabulary takes long enough to be interrupted."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    docs = []
    for _ in range(300):
        words = ("".join(rng.choices(letters, k=rng.randint(3, 12))) for _ in range(1200))
        docs.append(" ".join(words) + "\n")
    return docs


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    """Documents of the quick slices that the small slices do not start with."""
    out = []
    for n in corpora.CORPUS_NAMES:
        docs = corpora.corpus(n, "quick")
        out.extend(docs[-6:])
    out.append("12345678 9  \n\n  x  1.5e10 it's I'M   \t\n<|endoftext|> tail")
    return out


def hf_train(
    texts: Sequence[str],
    vocab_size: int,
    *,
    specials: Sequence[str] = (),
    min_frequency: int = 0,
    max_token_length: int | None = None,
) -> Any:
    """HF BpeTrainer with the settings `train_bpe(pattern="gpt2-hf")` corresponds to."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=max_token_length,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def hf_merges(tok: Any) -> list[tuple[str, str]]:
    return [tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]]


def tm_merges(enc: TrainedEncoding) -> list[tuple[str, str]]:
    return [(bytes_to_unicode_str(a), bytes_to_unicode_str(b)) for a, b in enc.merges]


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"first difference at merge {i}: tokenmill {x!r}, HF {y!r}"
    return f"lengths differ: tokenmill {len(a)}, HF {len(b)}"


# ----------------------------------------------------------------------------------------
# Parity with HF BpeTrainer


@pytest.mark.parametrize(
    "settings",
    [
        {"vocab_size": 2000},
        {"vocab_size": 1500, "specials": ["<|endoftext|>", "<pad>"], "min_frequency": 5},
        {"vocab_size": 1800, "max_token_length": 6},
    ],
    ids=["plain", "specials-minfreq", "maxlen"],
)
def test_merges_identical_to_hf(train_texts: list[str], settings: dict[str, Any]) -> None:
    specials = settings.get("specials", [])
    max_len = settings.get("max_token_length")
    enc = train_bpe(
        train_texts,
        settings["vocab_size"],
        pattern="gpt2-hf",
        special_tokens=specials,
        min_frequency=settings.get("min_frequency", 0),
        max_token_length=max_len,
        show_progress=False,
    )
    # HF counts a new pair only if it is *shorter* than max_token_length (and characters,
    # which are bytes here): its L + 1 is tokenmill's L.
    hf = hf_train(
        train_texts,
        settings["vocab_size"],
        specials=specials,
        min_frequency=settings.get("min_frequency", 0),
        max_token_length=None if max_len is None else max_len + 1,
    )
    ours, theirs = tm_merges(enc), hf_merges(hf)
    assert ours == theirs, first_difference(ours, theirs)
    assert len(ours) > 1000
    hf_vocab = {s for s in hf.get_vocab() if s not in specials}
    assert {bytes_to_unicode_str(t) for t in enc._mergeable_ranks} == hf_vocab
    assert enc.n_vocab == settings["vocab_size"]
    assert set(enc.special_tokens_set) == set(specials)
    if max_len is not None:
        assert max(len(t) for t in enc._mergeable_ranks) <= max_len


def test_deterministic_across_threads_and_input_order(train_texts: list[str]) -> None:
    runs = []
    for threads, order in [(1, 1), (2, 1), (2, -1)]:
        texts = train_texts[::order]
        enc = train_bpe(texts, 1500, pattern="cl100k", num_threads=threads, show_progress=False)
        runs.append((enc.merges, enc._mergeable_ranks, enc.merge_counts))
    assert runs[0] == runs[1] == runs[2]


def test_files_are_streamed_like_texts(tmp_path: Path, train_texts: list[str]) -> None:
    files = []
    for i, text in enumerate(train_texts[:40]):
        p = tmp_path / f"doc{i}.txt"
        p.write_text(text, encoding="utf-8")
        files.append(p)
    from_texts = train_bpe(train_texts[:40], 1200, pattern="o200k", show_progress=False)
    from_files = train_bpe(files, 1200, pattern="o200k", show_progress=False)
    assert from_files.merges == from_texts.merges
    mixed = train_bpe([*train_texts[:20], *files[20:]], 1200, pattern="o200k", show_progress=False)
    assert mixed.merges == from_texts.merges
    assert from_files.stats["bytes"] == sum(len(t.encode()) for t in train_texts[:40])


# ----------------------------------------------------------------------------------------
# Saving and loading in the reference libraries


@pytest.fixture(scope="module", params=["gpt2-hf", "cl100k", "o200k", "gpt2"])
def trained(request: pytest.FixtureRequest, train_texts: list[str]) -> TrainedEncoding:
    return train_bpe(
        train_texts,
        2500,
        pattern=request.param,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        show_progress=False,
    )


def test_tiktoken_file_loads_in_tiktoken(
    tmp_path: Path, trained: TrainedEncoding, held_out: list[str]
) -> None:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = tmp_path / "t.tiktoken"
    trained.save_tiktoken(path)
    ranks = load_tiktoken_bpe(str(path))
    assert ranks == trained._mergeable_ranks
    assert tokenmill.load.load_tiktoken_bpe(str(path)) == ranks
    tt = tiktoken.Encoding(
        "trained",
        pat_str=trained.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(trained._special_tokens),
    )
    for text in held_out:
        ids = trained.encode(text, allowed_special="all")
        assert tt.encode(text, allowed_special="all") == ids
        assert trained.decode(ids) == text


def test_tokenizer_json_loads_in_hf_and_tokenmill(
    tmp_path: Path, trained: TrainedEncoding, held_out: list[str]
) -> None:
    from tokenizers import Tokenizer

    path = tmp_path / "tokenizer.json"
    trained.save_tokenizer_json(path)
    hf = Tokenizer.from_file(str(path))
    tm = tokenmill.Tokenizer.from_file(path)
    for text in held_out:
        a, b = hf.encode(text), tm.encode(text)
        assert a.ids == b.ids
        assert a.offsets == b.offsets
        # The tokenizer.json (merge priorities) and the encoding (tiktoken ranks) agree.
        assert b.ids == trained.encode(text, allowed_special="all")
        assert hf.decode(a.ids, skip_special_tokens=False) == text
    eot = trained.encode_single_token("<|endoftext|>")
    assert hf.token_to_id("<|endoftext|>") == eot == tm.token_to_id("<|endoftext|>")


def test_tokenizer_json_loads_in_transformers(
    tmp_path: Path, train_texts: list[str], held_out: list[str]
) -> None:
    import transformers

    enc = train_bpe(
        train_texts, 1500, pattern="cl100k", special_tokens=["<|endoftext|>"], show_progress=False
    )
    path = tmp_path / "tokenizer.json"
    enc.save_tokenizer_json(path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for text in held_out:
        assert fast(text)["input_ids"] == enc.encode(text, allowed_special="all")


def test_save_directory_and_pickle(tmp_path: Path, train_texts: list[str]) -> None:
    enc = train_bpe(train_texts[:30], 600, special_tokens=["<|endoftext|>"], show_progress=False)
    paths = enc.save(tmp_path / "out")
    config = json.loads(Path(paths["config"]).read_text())
    assert config["pat_str"] == enc.pat_str
    assert config["special_tokens"] == {"<|endoftext|>": 600 - 1}
    assert sorted(os.listdir(tmp_path / "out")) == [
        "tokenizer.json",
        "tokenmill.json",
        "trained.tiktoken",
    ]
    again = pickle.loads(pickle.dumps(enc))
    assert isinstance(again, TrainedEncoding)
    assert again.merges == enc.merges
    assert again.encode("hello world") == enc.encode("hello world")


def test_cli_train(tmp_path: Path, train_texts: list[str]) -> None:
    from tokenizers import Tokenizer

    from tokenmill.cli import main

    files = []
    for i, text in enumerate(train_texts[:25]):
        p = tmp_path / f"{i}.txt"
        p.write_text(text, encoding="utf-8")
        files.append(str(p))
    out = tmp_path / "out"
    args = ["--vocab-size", "700", "--pattern", "cl100k", "--out", str(out), "--no-progress"]
    rc = main(["train", *args, "--special", "<|endoftext|>", *files])
    assert rc == 0
    hf = Tokenizer.from_file(str(out / "tokenizer.json"))
    ranks = tokenmill.load.load_tiktoken_bpe(str(out / "trained.tiktoken"))
    assert len(ranks) == 699
    enc = tokenmill.Encoding(
        "x", pat_str=tokenmill.PATTERNS["cl100k"], mergeable_ranks=ranks, special_tokens={}
    )
    text = train_texts[30]
    assert hf.encode(text).ids == enc.encode_ordinary(text)


# ----------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_value_error(tmp_path: Path) -> None:
    cases: dict[str, Any] = {
        "empty iterator": lambda: train_bpe([], 300, show_progress=False),
        "only empty strings": lambda: train_bpe(["", ""], 300, show_progress=False),
        "only specials": lambda: train_bpe(
            ["<s><s>"], 300, special_tokens=["<s>"], show_progress=False
        ),
        "vocab below 256": lambda: train_bpe(["abc"], 255, show_progress=False),
        "vocab below 256 + specials": lambda: train_bpe(
            ["abc"], 257, special_tokens=["<a>", "<b>"], show_progress=False
        ),
        "invalid pattern": lambda: train_bpe(["abc"], 300, pat_str="(", show_progress=False),
        "unknown pattern name": lambda: train_bpe(["abc"], 300, pattern="nope"),
        "negative min_frequency": lambda: train_bpe(["abc"], 300, min_frequency=-1),
        "max_token_length 1": lambda: train_bpe(["abc"], 300, max_token_length=1),
        "picky threshold 1.5": lambda: train_bpe(["abc"], 300, picky_threshold=1.5),
        "zero threads": lambda: train_bpe(["abc"], 300, num_threads=0),
        "duplicate specials": lambda: train_bpe(["abc"], 300, special_tokens=["<a>", "<a>"]),
    }
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    cases["non-UTF-8 file"] = lambda: train_bpe([bad], 300, show_progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    cases["empty file"] = lambda: train_bpe([empty], 300, show_progress=False)
    for what, fn in cases.items():
        e = expect_raises(ValueError, fn, what=what)
        assert str(e), what
    e = expect_raises(ValueError, lambda: train_bpe([bad], 300, show_progress=False))
    assert "latin1.txt" in str(e) and "UTF-8" in str(e) and "offset 3" in str(e)
    e = expect_raises(ValueError, lambda: train_bpe([], 300, show_progress=False))
    assert "empty" in str(e)
    expect_raises(TypeError, lambda: train_bpe("a text, not a list", 300))  # type: ignore[arg-type]
    expect_raises(TypeError, lambda: train_bpe([b"bytes"], 300))  # type: ignore[list-item]
    expect_raises(OSError, lambda: train_bpe([tmp_path / "missing.txt"], 300))


def test_lone_surrogates_are_replaced() -> None:
    enc = train_bpe(["ab\ud800ab ab ab"], 260, show_progress=False)
    assert enc.n_vocab == 260


# ----------------------------------------------------------------------------------------
# Interruption


def test_interrupt_stops_promptly_and_cli_writes_nothing(
    tmp_path: Path, random_words: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def hook(done_bytes: int, done_merges: int) -> None:
        calls.append(done_merges)
        if done_merges > 0:
            raise KeyboardInterrupt

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        train_bpe(random_words, 1_000_000, show_progress=False, _progress_hook=hook)
    assert time.perf_counter() - start < 30
    assert calls and calls[-1] > 0

    # The CLI: an interrupt during training leaves no output directory or file behind.
    import tokenmill.train as train_mod
    from tokenmill.cli import main

    f = tmp_path / "in.txt"
    f.write_text("".join(random_words), encoding="utf-8")

    def interrupt(self: Any, done: int) -> None:
        if self._phase == "merging" and done > 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod._Progress, "update", interrupt)
    monkeypatch.setattr(train_mod._Progress, "__init__", _enabled_progress_init)
    out = tmp_path / "out"
    rc = main(["train", "--vocab-size", "1000000", "--out", str(out), str(f)])
    assert rc == 130
    assert not out.exists()


def _enabled_progress_init(self: Any, enabled: bool) -> None:
    self.enabled = True
    self._bar = None
    self._phase = ""
    self._last_print = 0.0
    self._total, self._unit = None, ""


def test_cancel_from_another_thread(random_words: list[str]) -> None:
    trainer = _core.BpeTrainer(tokenmill.PATTERNS["cl100k"], [])
    trainer.feed(random_words, 2)
    timer = threading.Timer(0.2, trainer.cancel)
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        trainer.train(10_000_000, 0)
    timer.join()
    assert time.perf_counter() - start < 10


def test_interrupted_save_leaves_no_file(
    tmp_path: Path, train_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = train_bpe(train_texts[:20], 400, show_progress=False)
    target = tmp_path / "tokenizer.json"

    def boom(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        enc.save_tokenizer_json(target)
    with pytest.raises(KeyboardInterrupt):
        enc.save_tiktoken(tmp_path / "t.tiktoken")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        enc.save_tokenizer_json(target)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["tokenizer.json"]


# ----------------------------------------------------------------------------------------
# Picky BPE


def bytes_per_token(enc: Any, texts: Sequence[str]) -> float:
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
    return n_bytes / n_tokens


def test_picky_bpe(tmp_path: Path, train_texts: list[str], held_out: list[str]) -> None:
    from tokenizers import Tokenizer

    vanilla = train_bpe(train_texts, 2000, show_progress=False)
    picky = train_bpe(train_texts, 2000, picky_threshold=0.9, show_progress=False)
    assert picky.n_vocab == 2000
    assert picky.stats["removals"] > 0
    assert picky.removed_tokens
    vocab = set(picky._mergeable_ranks)
    assert not vocab & set(picky.removed_tokens)
    # Every merge of the exported list joins two tokens into a third.
    for a, b in picky.merges:
        assert a in vocab and b in vocab and a + b in vocab
    # Compression stays close to plain BPE (the paper: "does not compromise compression").
    ratio = bytes_per_token(picky, held_out) / bytes_per_token(vanilla, held_out)
    assert ratio > 0.97, ratio
    # Both files load in the reference libraries and agree with the encoding.
    picky.save_tokenizer_json(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tm = tokenmill.Tokenizer.from_file(tmp_path / "tokenizer.json")
    for text in held_out:
        assert hf.encode(text).ids == tm.encode(text).ids


# ----------------------------------------------------------------------------------------
# Data-mixture inference


def mixture_experiment(
    slice_name: str, train_bytes: int, sample_bytes: int, vocab: int, n_merges: int
) -> list[tuple[tuple[float, ...], dict[str, float]]]:
    """Trains tokenizers on known byte mixtures of the three corpora and infers them back from
    disjoint samples of the same corpora (documents cut into ~2 KB pieces and shuffled, so
    that training text and samples come from the same distribution)."""
    from tokenmill.mixture import infer_mixture, take_bytes, training_and_sample_pools

    pools = {
        n: training_and_sample_pools(corpora.corpus(n, slice_name)) for n in corpora.CORPUS_NAMES
    }
    samples = {n: take_bytes(s, sample_bytes) for n, (_, s) in pools.items()}
    results = []
    for mix in [(0.5, 0.3, 0.2), (0.2, 0.2, 0.6), (0.1, 0.7, 0.2)]:
        texts: list[str] = []
        for (_, (pool, _)), share in zip(pools.items(), mix, strict=True):
            texts += take_bytes(pool, int(train_bytes * share))
        enc = train_bpe(texts, vocab, show_progress=False)
        est = infer_mixture(enc, samples, n_merges=n_merges)
        results.append((mix, est.proportions))
    return results


def test_mixture_inference_recovers_proportions() -> None:
    for mix, got in mixture_experiment("quick", 500_000, 200_000, 1000, 300):
        errors = [abs(a - got[n]) for a, n in zip(mix, corpora.CORPUS_NAMES, strict=True)]
        assert abs(sum(got.values()) - 1) < 1e-9
        assert max(errors) < 0.15, (mix, got)


def test_mixture_merges_from_ranks_match_training(train_texts: list[str]) -> None:
    from tokenmill.mixture import merges_from_ranks, merges_from_tokenizer_json

    enc = train_bpe(train_texts, 1200, show_progress=False)
    assert merges_from_ranks(enc._mergeable_ranks) == enc.merges
    assert merges_from_tokenizer_json(enc.to_tokenizer_json()) == enc.merges


# ----------------------------------------------------------------------------------------
# Heavier: `pytest -m sweep`


@pytest.mark.sweep
def test_sweep_merges_identical_to_hf_large() -> None:
    texts = [d for n in corpora.CORPUS_NAMES for d in corpora.corpus(n, corpora.SWEEP_SLICE)]
    enc = train_bpe(texts, 8000, pattern="gpt2-hf", num_threads=2, show_progress=False)
    hf = hf_train(texts, 8000)
    ours, theirs = tm_merges(enc), hf_merges(hf)
    assert ours == theirs, first_difference(ours, theirs)


@pytest.mark.sweep
def test_sweep_mixture_inference() -> None:
    for mix, got in mixture_experiment(corpora.SWEEP_SLICE, 3_000_000, 1_000_000, 3000, 1000):
        errors = [abs(a - got[n]) for a, n in zip(mix, corpora.CORPUS_NAMES, strict=True)]
        assert max(errors) < 0.05, (mix, got)
