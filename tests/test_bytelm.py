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
from tokenmill import _core
from tokenmill.bytelm import EOS, ByteEnsemble, ByteLM

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TOY_TEXT = (
    "ab ab  abab's a.b ab'll 12 123\n\n  ab.. ba ab\n ab ab's b'a  a\n\n\n"
    "ba ab. ab, 1234 ab'll ab'sab a  b\n  \n ab abb aab"
) * 3
# The toy text's characters, plus one neutral character per pre-tokenizer class (no merge
# touches them): a letter, a digit, whitespace and a symbol.
ALPHABET = [*sorted(set(TOY_TEXT)), "\U00020000", "\U0001d7ce", "\u3000", "\U0001f600"]
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

    @functools.cache  # noqa: B019
    def valid(self, t: tuple[int, ...]) -> bool:
        y = b"".join(self.vocab[i] for i in t).decode()
        return any(tuple(self.enc.encode_ordinary(y + e)[: len(t)]) == t for e in self.extensions)

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


def _ngram_and_brute_force(pattern: str, seed: int) -> tuple[ByteLM, BruteForce]:
    """A byte-level LM over a random bigram table on the toy tokenizer, and its brute-force
    reference (end of text doubling as beginning of text)."""
    tok = toy_tokenizer(pattern)
    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None
    model = NGram(tok.get_vocab_size(), seed=seed)
    return ByteLM(model, tok, bos_token_id=eos, eos_token_id=eos), BruteForce(tok, model, eos, eos)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_ngram_matches_brute_force(pattern: str) -> None:
    lm, ref = _ngram_and_brute_force(pattern, seed=1)
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


# --------------------------------------------------------------------------- real tokenizers

CODE = b"def f(self, x):\n    return self.x  # \xc3\xa9t\xc3\xa9\n\n\nclass A:\n\tpass\n"


@functools.lru_cache(maxsize=4)
def small_setup(pattern: str, arch: str = "llama") -> tuple[tokenmill.Tokenizer, Any, int]:
    from tokenmill.models import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer(512, pattern)
    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None
    model = tiny_causal_lm(tok.get_vocab_size(), arch, dtype=torch.float64, eos_token_id=eos)
    return tok, model, eos


@pytest.mark.parametrize(("pattern", "arch"), [("gpt2-hf", "llama"), ("llama3", "gpt2")])
def test_distributions_sum_to_one_and_cached_forward_is_exact(pattern: str, arch: str) -> None:
    # The tree-masked forward with a kept, cropped cache against full forwards without cache.
    tok, model, eos = small_setup(pattern, arch)
    lm = ByteLM(model, tok)
    ref = ByteLM(FullForward(model), tok, bos_token_id=eos, eos_token_id=eos)
    x = CODE[:40]
    for k in range(len(x) + 1):
        got = lm.next_byte_logprobs(x[:k])
        assert np.exp(got).sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(got, ref.next_byte_logprobs(x[:k]), rtol=1e-9, atol=1e-9)
        assert 0.0 <= lm.last_leaked < 1.0
    assert lm.forwards <= len(x) + 1  # at most one forward per byte


def test_forwards_run_without_gradients_and_leave_the_mode_as_found() -> None:
    # The runner switches gradients off around each forward itself (no context manager), and
    # not at all when the caller already has.
    tok, model, _ = small_setup("gpt2-hf")
    seen: list[bool] = []
    hook = model.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    try:
        with_grad = ByteLM(model, tok).next_byte_logprobs(CODE[:12])
        assert torch.is_grad_enabled()
        with torch.no_grad():
            without = ByteLM(model, tok).next_byte_logprobs(CODE[:12])
            assert not torch.is_grad_enabled()
        assert torch.is_grad_enabled()
    finally:
        hook.remove()
    assert len(seen) >= 2 and not any(seen)
    np.testing.assert_array_equal(with_grad, without)


@pytest.mark.parametrize(("dtype", "arch"), [("float32", "llama"), ("bfloat16", "gpt2")])
def test_low_precision_models_match_full_forwards(dtype: str, arch: str) -> None:
    # float32 logits reach the Rust normalisers in place; bfloat16 ones are widened first; both
    # models take the tree mask built in float32 (converted for bfloat16). Batched, cached
    # forwards differ from full ones by the dtype's rounding, hence the tolerances.
    from tokenmill.models import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer(512, "gpt2-hf")
    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None
    model = tiny_causal_lm(
        tok.get_vocab_size(), arch, dtype=getattr(torch, dtype), eos_token_id=eos
    )
    lm = ByteLM(model, tok)
    ref = ByteLM(FullForward(model), tok, bos_token_id=eos, eos_token_id=eos)
    tol = 1e-4 if dtype == "float32" else 0.15
    x = CODE[:30]
    for k in range(len(x) + 1):
        got = lm.next_byte_logprobs(x[:k])
        assert np.exp(got).sum() == pytest.approx(1.0, abs=1e-12)
        want = ref.next_byte_logprobs(x[:k])
        np.testing.assert_allclose(np.exp(got), np.exp(want), rtol=0, atol=tol)


def test_log_softmax_equals_torch() -> None:
    from tokenmill.models import tiny_causal_lm

    model = tiny_causal_lm(700, "llama", dtype=torch.float32, init_std=1.0)
    with torch.no_grad():
        logits = model(torch.tensor([[5, 17, 300, 2, 699, 40, 41]])).logits[0]
    z = logits.clone()
    z[1, 3] = -math.inf
    z[2, :] = -math.inf  # all -inf: NaN, as torch
    z[3, 9] = math.nan
    z[4, 100] = math.inf
    z[5, 7] = 5000.0  # every other term underflows
    for x in (z, z.double()):
        for t in (1.0, 0.7, 3.0):
            got = _core.log_softmax(x.numpy(), t)
            want = torch.log_softmax(x.double() / t, -1).numpy()
            assert got.dtype == np.float64 and got.shape == want.shape
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    assert np.isnan(_core.log_softmax(z.numpy())[2:5]).all()
    # The normalisers alone, which `marginalize_rows` applies to the logits in place: the
    # same formula, so the same bits.
    for x in (z.numpy(), z.double().numpy()):
        norms = _core.row_norms(x)
        assert norms.shape == (x.shape[0], 2)
        with np.errstate(invalid="ignore"):  # the NaN rows
            applied = (x.astype(np.float64) - norms[:, :1]) - norms[:, 1:]
        np.testing.assert_array_equal(applied, _core.log_softmax(x))
    for bad, what in [
        (np.zeros((2, 3), dtype=np.int32), "float32 or float64"),
        (z.numpy()[0], "2-d"),
        (z.numpy()[:, ::2], "C-contiguous"),
    ]:
        with pytest.raises(ValueError, match=what):
            _core.log_softmax(bad)
    for t in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            _core.log_softmax(z.numpy(), t)
    with pytest.raises(ValueError, match="empty"):
        _core.row_norms(np.zeros((3, 0), dtype=np.float32))
    assert _core.row_norms(np.zeros((0, 5), dtype=np.float32)).shape == (0, 2)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_chain_rule_is_the_same_for_every_split(pattern: str) -> None:
    tok, model, _ = small_setup(pattern, "gpt2")
    x = CODE[:24]
    whole = ByteLM(model, tok).logprob(x, eos=True)
    for k in [0, 3, 7, 12, 13, 24]:
        lm = ByteLM(model, tok)  # fresh cache for every split
        split = lm.logprob(x[:k]) + lm.logprob(x[k:], prefix=x[:k], eos=True)
        assert split == pytest.approx(whole, rel=1e-10)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_masked_model_gives_canonical_token_probability(pattern: str) -> None:
    # A model that puts no mass on non-canonical continuations: the byte-level probability of
    # a text followed by end of text is the token probability of its canonical encoding.
    tok = toy_tokenizer(pattern)
    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None
    n_vocab = tok.get_vocab_size()
    holder: dict[str, ByteLM] = {}

    def mask(context: Sequence[int], row: np.ndarray) -> np.ndarray:
        core = holder["lm"].core
        path = list(context[1:])
        out = np.full_like(row, -np.inf)
        for t in range(n_vocab):
            if t == eos:
                if core.canonical(b"".join(core.token_bytes(i) for i in path)) == path:
                    out[t] = row[t]
            elif core.is_valid([*path, t]):
                out[t] = row[t]
        return out - np.logaddexp.reduce(out)

    model = NGram(n_vocab, seed=3, mask=mask)
    holder["lm"] = lm = ByteLM(model, tok, bos_token_id=eos, eos_token_id=eos)
    for s in ["ab a", "a  b", "ab's 12", "ab..\n"]:
        x = s.encode()
        got = lm.logprob(x, eos=True)
        assert lm.last_leaked == pytest.approx(0.0, abs=1e-12)
        t = tok.to_encoding().encode_ordinary(s)
        ctx = [eos]
        want = 0.0
        for i in [*t, eos]:
            want += float(model.logprobs(ctx)[i])
            ctx.append(i)
        assert got == pytest.approx(want, rel=1e-10)


# --------------------------------------------------------------------------- bad input


def test_refuses_tokenizers_it_cannot_handle_exactly() -> None:
    ranks = {bytes([b]): b for b in range(256)}
    enc = tokenmill.Encoding("odd", pat_str=r"\w+|\W", mergeable_ranks=ranks, special_tokens={})
    with pytest.raises(tokenmill.UnsupportedFeatureError, match="pre-tokenizer pattern"):
        ByteLM(NGram(256, 0), enc, bos_token_id=0)
    partial = {bytes([b]): b for b in range(255)}
    enc = tokenmill.Encoding(
        "partial", pat_str=tokenmill.PATTERNS["gpt2-hf"], mergeable_ranks=partial, special_tokens={}
    )
    with pytest.raises(tokenmill.UnsupportedFeatureError, match="0xff"):
        ByteLM(NGram(256, 0), enc, bos_token_id=0)


def test_refuses_pipelines_without_exact_encoding() -> None:
    import json

    data = json.loads(toy_tokenizer("gpt2-hf").to_str())
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}
    tok = tokenmill.Tokenizer.from_str(json.dumps(data))
    with pytest.raises(tokenmill.UnsupportedFeatureError, match="plain byte-level BPE"):
        ByteLM(NGram(300, 0), tok, bos_token_id=0)


def test_needs_a_start_token() -> None:
    with pytest.raises(ValueError, match="start-of-text"):
        ByteLM(NGram(300, 0), toy_tokenizer("gpt2-hf"))


def test_invalid_utf8_and_empty_prompts() -> None:
    tok, model, _ = small_setup("gpt2-hf")
    lm = ByteLM(model, tok)
    for prompt in [b"", b"\xff\xfe", b"caf\xc3", b"x\x80y"]:
        lp = lm.next_byte_logprobs(prompt)
        assert np.isfinite(lp).any()
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-12)
    # A cut inside a two-byte character: the continuation bytes get almost all the mass
    # only if the model likes them, but every byte stays possible under byte semantics.
    assert lm.logprob(b"\xc3\xa9", prefix=b"caf") < 0


# --------------------------------------------------------------------------- sampling


def test_generate_is_seeded_greedy_is_argmax_and_utf8_stays_whole() -> None:
    tok, model, _ = small_setup("llama3")
    lm = ByteLM(model, tok)
    a = lm.generate(b"def ", 12, seed=5)
    assert a == lm.generate(b"def ", 12, seed=5)
    greedy = lm.generate(b"x = ", 6, temperature=0)
    prefix = b"x = "
    out = b""
    for _ in range(6):
        b = int(np.argmax(lm.next_byte_logprobs(prefix + out)))
        if b == EOS:
            break
        out += bytes([b])
    if _valid(out):  # else generate completes the cut character past max_bytes
        assert greedy == out.decode()
    for seed in range(3):
        text = lm.generate(b"", 5, seed=seed, temperature=1.5, top_p=0.9)
        text.encode("utf-8")  # a str, never a cut character
    stopped = lm.generate(b"def ", 40, seed=1, stop=["e"])
    assert "e" not in stopped


def _valid(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_complete_hands_the_cache_over_like_transformers_generate() -> None:
    tok, model, eos = small_setup("gpt2-hf")
    lm = ByteLM(model, tok)
    prompt = b"    return sel"
    c = lm.complete(prompt, 8, temperature=0)
    trunk = lm.core.tree(prompt).trunk
    cover_len = _cover_length(lm, prompt, c.tokens)
    ids = torch.tensor([[eos, *trunk, *c.tokens[:cover_len]]])
    with torch.no_grad():
        ref = model.generate(
            ids, max_new_tokens=len(c.tokens) - cover_len, do_sample=False, eos_token_id=None
        )
    assert ref[0, ids.shape[1] :].tolist() == c.tokens[cover_len:]
    # Plain generation of n tokens costs n forwards (prefill, then one per token but the last);
    # prompt-boundary mode one more (the covering tree, then the chosen cover as a chain).
    assert c.forwards == len(c.tokens) - cover_len + 1
    assert len(c.text) > 0


def _cover_length(lm: ByteLM, prompt: bytes, tokens: Sequence[int]) -> int:
    tree = lm.core.tree(prompt)
    n = 0
    covered = 0
    while covered < len(prompt) - tree.sigma:
        covered += len(lm.core.token_bytes(tokens[n]))
        n += 1
    return n


def test_ensemble_mixture_and_product() -> None:
    tok_a, model_a, _ = small_setup("gpt2-hf")
    tok_b, model_b, _ = small_setup("llama3", "gpt2")
    a, b = ByteLM(model_a, tok_a), ByteLM(model_b, tok_b)
    x = b"for i in ra"
    pa, pb = np.exp(a.next_byte_logprobs(x)), np.exp(b.next_byte_logprobs(x))
    mix = ByteEnsemble([a, b], "mixture", [0.25, 0.75])
    np.testing.assert_allclose(np.exp(mix.next_byte_logprobs(x)), 0.25 * pa + 0.75 * pb)
    prod = ByteEnsemble([a, b], "product")
    want = np.sqrt(pa * pb)
    np.testing.assert_allclose(np.exp(prod.next_byte_logprobs(x)), want / want.sum())
    same = ByteEnsemble([a, a], "mixture")
    np.testing.assert_allclose(same.next_byte_logprobs(x), a.next_byte_logprobs(x))
    assert isinstance(mix.generate(x, 4, seed=0), str)
    with pytest.raises(ValueError):
        ByteEnsemble([a, b], "median")  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_random_strings_match_brute_force(pattern: str) -> None:
    import random

    rng = random.Random(pattern)
    chars = sorted(set(TOY_TEXT))
    lm, ref = _ngram_and_brute_force(pattern, seed=7)
    for _ in range(100):
        x = "".join(rng.choice(chars) for _ in range(rng.randint(1, 7))).encode()
        check_against_brute_force(lm, ref, x)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_warm_caches_give_the_same_masses_as_cold_ones(pattern: str) -> None:
    # The Rust side keeps cut analyses and (node, token) validity across bytes and texts; a
    # fresh ByteLM per query starts with none. On held-out code cut at random places (inside
    # characters too), both must give the very same masses.
    import random

    from tokenmill.models import heldout_texts

    tok, _, eos = small_setup(pattern)
    model = NGram(tok.get_vocab_size(), seed=3)
    warm = ByteLM(model, tok, bos_token_id=eos, eos_token_id=eos)
    rng = random.Random(pattern)
    texts = [t.encode() for _, t in heldout_texts()]
    for _ in range(4):
        text = rng.choice(texts)
        start = rng.randrange(len(text))
        chunk = text[start : start + 50]
        for k in range(len(chunk) + 1):
            cold = ByteLM(model, tok, bos_token_id=eos, eos_token_id=eos)
            got, log_px = warm.masses(chunk[:k])
            want, want_px = cold.masses(chunk[:k])
            np.testing.assert_array_equal(got, want)
            assert log_px == want_px


@pytest.mark.parametrize("pattern", PATTERNS)
def test_validity_shortcuts_equal_the_plain_test_on_held_out_code(pattern: str) -> None:
    # Every (node, token) pair that marginalising a prefix meets, decided by the shortcuts
    # (handing tokens over to the node after an anchor, the joined-piece and completion-key
    # tests, the caches as successive prefixes leave them) and by the plain extension-probe
    # test, on held-out code cut at every byte (inside characters too).
    import random

    from tokenmill.models import heldout_texts

    tok, _, _ = small_setup(pattern)
    core = _core.ByteLmCore(tok.to_encoding()._core_bpe)
    rng = random.Random(pattern)
    texts = [t.encode() for _, t in heldout_texts()]
    chunks = [CODE]
    for _ in range(6):
        text = rng.choice(texts)
        start = rng.randrange(len(text))
        chunks.append(text[start : start + 40])
    pairs = 0
    for chunk in chunks:
        for k in range(len(chunk) + 1):
            n, _, disagreements = core.shortcut_disagreements(chunk[:k])
            pairs += n
            assert disagreements == [], (chunk[:k], disagreements[:5])
    assert pairs > 50_000


def test_validity_inside_a_character_on_the_llama3_vocabulary(llama3_json_path: Any) -> None:
    # Llama-3's vocabulary holds thousands of tokens that end inside a character (pieces of
    # CJK and other multi-byte characters, alone or after a space). After whitespace (the
    # indentation of held-out code) most are invalid, and every completion of the character
    # hands the token over to the same shorter node: the shortcut must agree with the plain
    # test there, where it says no as well as where it says yes.
    import random

    from tokenmill.models import heldout_texts

    tok = tokenmill.Tokenizer.from_file(str(llama3_json_path))
    core = _core.ByteLmCore(tok.to_encoding()._core_bpe)
    rng = random.Random(3)
    texts = [t.encode() for _, t in heldout_texts() if "\n        " in t]
    prefixes = []
    for text in rng.sample(texts, 3):
        ends = [i + 1 for i in range(1, len(text)) if text[i] == 32 and text[i - 1] in b" \n"]
        prefixes += [text[max(0, e - 30) : e] for e in rng.sample(ends, 2)]
    pairs = invalid = 0
    for prefix in prefixes:
        n, no, disagreements = core.shortcut_disagreements(prefix, keyless_only=True)
        assert disagreements == [], (prefix, disagreements[:5])
        pairs, invalid = pairs + n, invalid + no
    assert pairs > 5_000
    assert 1_000 < invalid < pairs - 100, (invalid, pairs)


def test_importing_bytelm_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, tokenmill.bytelm; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
