"""Exactness of tokenmill.bytelm against brute-force enumeration of tokenizations.

The reference enumerates every token sequence covering a byte string, keeps those that are a
prefix of the tokenizer's own encoding of some extension (tried over all extensions of up to two
characters from the toy alphabet), and sums the model's probabilities of what is left. Nothing
here shares code with the Rust covering tree or the tree-masked forward.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import tokenmill
from tokenmill.bytelm import EOS, ByteEnsemble, ByteLM

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TOY_TEXT = (
    "ab ab  abab's a.b ab'll 12 123\n\n  ab.. ba ab\n ab ab's b'a  a\n\n\n"
    "ba ab. ab, 1234 ab'll ab'sab a  b\n  \n ab abb aab"
) * 3
# The toy text's characters, plus one neutral character per pre-tokenizer class (no merge
# touches them): a letter, a digit, whitespace and a symbol.
ALPHABET = sorted(set(TOY_TEXT)) + ["\U00020000", "\U0001d7ce", "\u3000", "\U0001f600"]
N_MERGES = 40


@functools.lru_cache(maxsize=4)
def toy_tokenizer(pattern: str) -> tokenmill.Tokenizer:
    enc = tokenmill.train_bpe(
        [TOY_TEXT],
        256 + N_MERGES + 1,
        pattern=pattern,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    return enc.to_tokenizer()


class NGram:
    """A random bigram table over tokens: log P(next | context) depends on the last token."""

    def __init__(self, vocab_size: int, seed: int, mask: Any = None) -> None:
        rng = np.random.default_rng(seed)
        table = rng.normal(0.0, 2.5, size=(vocab_size, vocab_size))
        self.table = table - np.logaddexp.reduce(table, axis=1, keepdims=True)
        self.vocab_size = vocab_size
        self.mask = mask

    def logprobs(self, context: Sequence[int]) -> np.ndarray:
        row = self.table[context[-1]].copy()
        if self.mask is not None:
            row = self.mask(context, row)
        return row


class FullForward:
    """A Hugging Face model run without cache on the whole context: the reference for the
    tree-masked, cached forward of ByteLM."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vocab_size = model.config.vocab_size

    @functools.lru_cache(maxsize=100_000)  # noqa: B019 (test helper, lives for the test)
    def _row(self, context: tuple[int, ...]) -> np.ndarray:
        with torch.no_grad():
            logits = self.model(torch.tensor([context])).logits[0, -1]
        return torch.log_softmax(logits.to(torch.float64), -1).numpy()

    def logprobs(self, context: Sequence[int]) -> np.ndarray:
        return self._row(tuple(context))


class BruteForce:
    """P(x b) by enumerating all tokenizations, canonical ones only."""

    def __init__(self, tok: tokenmill.Tokenizer, model: Any, bos: int, eos: int) -> None:
        self.enc = tok.to_encoding()
        self.model = model
        self.bos = bos
        self.eos = eos
        self.vocab = {i: b for b, i in self.enc._mergeable_ranks.items()}
        self.extensions = [
            "".join(e) for n in range(3) for e in itertools.product(ALPHABET, repeat=n)
        ]

    def covers(self, x: bytes) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []

        def rec(pos: int, path: tuple[int, ...]) -> None:
            for tid, tb in self.vocab.items():
                if pos + len(tb) < len(x):
                    if x.startswith(tb, pos):
                        rec(pos + len(tb), (*path, tid))
                elif tb.startswith(x[pos:]):
                    out.append((*path, tid))

        if x:
            rec(0, ())
        return out

    @functools.lru_cache(maxsize=None)  # noqa: B019
    def valid(self, t: tuple[int, ...]) -> bool:
        y = b"".join(self.vocab[i] for i in t).decode()
        return any(
            tuple(self.enc.encode_ordinary(y + e)[: len(t)]) == t for e in self.extensions
        )

    def logp(self, t: Sequence[int]) -> float:
        ctx = [self.bos]
        total = 0.0
        for i in t:
            total += float(self.model.logprobs(ctx)[i])
            ctx.append(i)
        return total

    def mass(self, x: bytes) -> float:
        return sum(math.exp(self.logp(t)) for t in self.covers(x) if self.valid(t))

    def eos_mass(self, x: bytes) -> float:
        t = self.enc.encode_ordinary(x.decode())
        return math.exp(self.logp(t) + float(self.model.logprobs([self.bos, *t])[self.eos]))


PATTERNS = ["gpt2-hf", "llama3"]
STRINGS = ["ab a", "ab's", "a  ", "a.", "12", "ab\n ", " \n", "b'l", "ab..", "1234", "'"]
PROBE_BYTES = sorted({ord(c) for c in TOY_TEXT} | {ord("q"), ord("{")})


def check_against_brute_force(lm: ByteLM, ref: BruteForce, x: bytes) -> None:
    bins, log_px = lm.masses(x)
    if x:
        assert math.exp(log_px) == pytest.approx(ref.mass(x), rel=1e-9, abs=1e-300)
    for b in PROBE_BYTES:
        want = ref.mass(x + bytes([b]))
        assert math.exp(bins[b]) == pytest.approx(want, rel=1e-9, abs=1e-300), (x, chr(b))
    assert math.exp(bins[EOS]) == pytest.approx(ref.eos_mass(x), rel=1e-9)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_ngram_matches_brute_force(pattern: str) -> None:
    tok = toy_tokenizer(pattern)
    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None
    model = NGram(tok.get_vocab_size(), seed=1)
    lm = ByteLM(model, tok, bos_token_id=eos, eos_token_id=eos)
    ref = BruteForce(tok, model, eos, eos)
    for s in ["", *STRINGS]:
        x = s.encode()
        for k in range(len(x) + 1):
            check_against_brute_force(lm, ref, x[:k])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_tiny_transformer_matches_brute_force(pattern: str) -> None:
    from tokenmill.models import tiny_causal_lm

    tok = toy_tokenizer(pattern)
    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None
    model = tiny_causal_lm(tok.get_vocab_size(), "llama", dtype=torch.float64, eos_token_id=eos)
    lm = ByteLM(model, tok, bos_token_id=eos)
    ref = BruteForce(tok, FullForward(model), eos, eos)
    for s in ["ab a", "a  ", "ab's"]:
        x = s.encode()
        for k in range(len(x) + 1):
            check_against_brute_force(lm, ref, x[:k])
