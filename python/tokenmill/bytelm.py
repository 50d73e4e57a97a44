"""Exact byte-level language models from BPE language models.

`ByteLM(model, tokenizer)` turns a causal LM over BPE tokens into a model over bytes: for any
byte prefix (cut anywhere, even inside a token or a UTF-8 character) it gives the exact
distribution of the next byte, 256 bytes plus end of text, implied by the token-level model.
The tokenizer side (canonical encodings, the covering tree, the marginalisation into 257 bins)
runs in Rust (`tokenmill._core.ByteLmCore`); this module runs the model on the tree's nodes.

Semantics.
- The text distribution is the token model's: sample tokens until end of text, concatenate
  their bytes. Canonical semantics: only token sequences the tokenizer can produce (prefixes of
  the canonical encoding of some text) count; the model's mass on other sequences is *leaked*.
  Next-byte distributions are normalised over the canonical mass and the leak of the last step
  is reported in `last_leaked` (1 - kept / P(prefix)). With a model that never puts mass on
  non-canonical sequences the byte-level model is exactly the token-level one.
- Bytes that are not valid UTF-8 are pre-tokenized as U+FFFD would be (a symbol), so every
  byte string, including a prompt cut inside a character, has a canonical encoding.
- Special-token text inside a prompt is ordinary text (never the special token).
- Sampling (`generate`): `temperature` and `top_p` transform each next-token distribution of the
  model *before* marginalising; bytes are then sampled exactly from the transformed token-level
  process. `temperature=0` is greedy at the byte level (the most probable next byte under the
  untransformed model).

Model calls. Every byte costs one forward: the nodes of the covering tree that are not yet in
the KV cache go through the model together, with a tree attention mask (each node sees the
cached trunk and its own ancestors) and position ids equal to depths. The cache keeps the
canonical trunk and is cropped back to it after each step, so tokens that stay in the trunk are
never recomputed; the short branches after the stable point are recomputed each step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np

from tokenmill import _core
from tokenmill._transformers import cache_kwarg, truncate_cache

if TYPE_CHECKING:
    import numpy.typing as npt

    from tokenmill.core import Encoding
    from tokenmill.hf import Tokenizer

__all__ = ["ByteEnsemble", "ByteLM", "Completion", "TokenModel"]

EOS = 256
"""Index of the end-of-text bin in next-byte distributions."""


class TokenModel(Protocol):
    """Any token-level model: `logprobs(context)` returns log P(next token | context) for the
    whole vocabulary (float64, length `vocab_size`). `context` starts with the BOS token."""

    vocab_size: int

    def logprobs(self, context: Sequence[int]) -> npt.NDArray[np.float64]: ...


def _encoding_of(tokenizer: Tokenizer | Encoding) -> Encoding:
    from tokenmill.core import Encoding

    if isinstance(tokenizer, Encoding):
        return tokenizer
    try:
        return tokenizer.to_encoding()
    except NotImplementedError as e:
        raise _core.UnsupportedFeatureError(
            f"ByteLM needs a plain byte-level BPE tokenizer (one regex split, ByteLevel, no "
            f"normalizer or prefix space) to compute exact byte probabilities: {e}"
        ) from e


def _transform(logits: Any, temperature: float, top_p: float) -> npt.NDArray[np.float64]:
    """log-softmax in float64 of `logits` (rows), with temperature and nucleus applied."""
    import torch

    x = logits.to(torch.float64)
    if temperature != 1.0:
        x = x / temperature
    lp = torch.log_softmax(x, dim=-1)
    if top_p < 1.0:
        sorted_lp, order = torch.sort(lp, dim=-1, descending=True)
        cum = torch.cumsum(sorted_lp.exp(), dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop_sorted = (cum - sorted_lp.exp()) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        lp = torch.log_softmax(lp.masked_fill(drop, float("-inf")), dim=-1)
    out: npt.NDArray[np.float64] = lp.numpy()
    return out


class _Row(NamedTuple):
    """One next-token row: float64 log-probabilities (`norm` None), or the model's logits as
    they came with their normaliser (max, log_sum): log P(t) = (logit - max) - log_sum."""

    values: npt.NDArray[Any]
    norm: tuple[float, float] | None

    def log_p(self, t: int) -> float:
        v = float(self.values[t])
        return v if self.norm is None else (v - self.norm[0]) - self.norm[1]

    def log_probs(self) -> npt.NDArray[np.float64]:
        if self.norm is None:
            return self.values
        return (self.values.astype(np.float64) - self.norm[0]) - self.norm[1]

    @staticmethod
    def at(rows: npt.NDArray[Any], norms: npt.NDArray[np.float64] | None, j: int) -> _Row:
        """Row `j` of one forward's rows and norms."""
        norm = None if norms is None else (float(norms[j, 0]), float(norms[j, 1]))
        return _Row(rows[j], norm)


class _Rows(NamedTuple):
    """A tree's model outputs: node `i`'s next-token row is `rows[first_row + i]` (with
    `norms[first_row + i]`, see `_Row`), or `tip` where `first_row + i < 0`; `trunk_lp` is the
    log-probability of the trunk (the root's path). Path log-probabilities of the other nodes
    follow from the rows (in Rust)."""

    trunk_lp: float
    rows: npt.NDArray[Any]
    first_row: int
    tip: _Row | None
    norms: npt.NDArray[np.float64] | None = None

    def row_kwargs(self) -> dict[str, Any]:
        """The rows as `ByteLmCore.marginalize_rows` and `covers_rows` take them."""
        tip = self.tip
        return {
            "rows": self.rows,
            "first_row": self.first_row,
            "tip": None if tip is None else tip.values,
            "norms": self.norms,
            "tip_norm": None if tip is None else tip.norm,
        }


class _Runner:
    """Evaluates covering trees with a model: next-token rows and path log-probabilities."""

    forwards: int = 0
    forward_seconds: float = 0.0

    def evaluate(self, tree: Any) -> _Rows:
        raise NotImplementedError

    def reset(self) -> None:
        pass


class _CallableRunner(_Runner):
    """A `TokenModel` (tests, n-gram tables): one call per node, memoised."""

    def __init__(self, model: TokenModel, bos: int, temperature: float, top_p: float) -> None:
        self._model = model
        self._bos = bos
        self._memo: dict[tuple[int, ...], npt.NDArray[np.float64]] = {}
        self._t = temperature
        self._p = top_p

    def _row(self, ctx: tuple[int, ...]) -> npt.NDArray[np.float64]:
        row = self._memo.get(ctx)
        if row is None:
            raw = np.asarray(self._model.logprobs(ctx), dtype=np.float64)
            self.forwards += 1
            if self._t == 1.0 and self._p >= 1.0:
                row = raw
            else:
                import torch

                row = _transform(torch.from_numpy(raw), self._t, self._p)
            self._memo[ctx] = row
        return row

    def evaluate(self, tree: Any) -> _Rows:
        trunk = tree.trunk
        base = (self._bos, *trunk)
        trunk_lp = 0.0
        for i, t in enumerate(trunk):
            trunk_lp += float(self._row(base[: i + 1])[t])
        rows = np.stack([self._row(base + tuple(n)) for n in tree.nodes])
        return _Rows(trunk_lp, rows, 0, None)


class _HFRunner(_Runner):
    """A Hugging Face causal LM with a kept, cropped DynamicCache and tree attention."""

    def __init__(self, model: Any, bos: int, temperature: float, top_p: float) -> None:
        import torch

        self._model = model
        self._bos = bos
        self._t = temperature
        self._p = top_p
        param = next(model.parameters())
        self._dtype = param.dtype
        self._device = param.device
        self._min = torch.finfo(param.dtype).min
        self._mask_dtype = np.float64 if param.dtype == torch.float64 else np.float32
        self._cache_kw = cache_kwarg(model)
        self.reset()

    def reset(self) -> None:
        self._cache: Any = None
        self._ids: list[int] = []  # tokens in the cache, BOS first
        self._cum: list[float] = []  # log P(ids[1..=i] | BOS), per cached position
        self._tip: _Row | None = None  # next-token row after ids
        self._rerun_cum = 0.0

    def _forward(
        self,
        ids: npt.NDArray[np.int64],
        positions: npt.NDArray[np.int64],
        mask: npt.NDArray[np.floating[Any]],
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64] | None]:
        """One forward of the new tokens `ids` (1, n) after the cache, at `positions` (1, n),
        under the additive `mask` (1, 1, n, past + n), float64 for a float64 model, else
        float32 (built by `CoveringTree.batch`). Returns the next-token rows and their norms
        (see `_Row`): at temperature 1 without nucleus, the logits where the model left them
        and their normalisers (no float64 copy of every row, megabytes per byte on a large
        vocabulary); else float64 log-probabilities and None."""
        import time

        import torch
        import transformers

        t0 = time.perf_counter()
        attn = torch.from_numpy(mask)
        if attn.dtype != self._dtype:
            # float16 / bfloat16: the float32 mask holds 0 and this dtype's minimum, exactly.
            attn = attn.to(self._dtype)
        if self._cache is None:
            self._cache = transformers.DynamicCache()
        cpu = self._device.type == "cpu"

        def on_device(t: Any) -> Any:
            return t if cpu else t.to(self._device)  # `.to` costs a dispatch even when a no-op

        # `torch.no_grad()` as a context manager is four Python calls around two C ones, 25-30
        # us per forward on the benchmark models (the code runs cold after a forward); set
        # the mode directly, and not at all when the caller has already disabled gradients.
        grad = torch.is_grad_enabled()
        if grad:
            torch.set_grad_enabled(False)
        try:
            out = self._model(
                input_ids=on_device(torch.from_numpy(ids)),
                attention_mask=on_device(attn),
                position_ids=on_device(torch.from_numpy(positions)),
                **{self._cache_kw: self._cache},
                use_cache=True,
            )
        finally:
            if grad:
                torch.set_grad_enabled(True)
        logits = out.logits
        norms = None
        if self._p < 1.0:
            rows = _transform(logits[0].cpu(), self._t, self._p)
        else:
            if logits.dtype not in (torch.float32, torch.float64):
                logits = logits.float()  # exact
            # Row 0 taken in numpy: torch's indexing and a no-op `.cpu()` are dispatches too.
            rows = (logits if cpu else logits.cpu()).numpy()[0]
            if self._t == 1.0:
                norms = _core.row_norms(rows)
            else:
                rows = _core.log_softmax(rows, self._t)
        self.forward_seconds += time.perf_counter() - t0
        self.forwards += 1
        return rows, norms

    def _chain(self, tokens: Sequence[int]) -> _Row:
        """One forward of `tokens` as a causal chain after the cache; returns the row after
        the last one."""
        past, n = len(self._ids), len(tokens)
        mask = np.full((1, 1, n, past + n), self._min, dtype=self._mask_dtype)
        mask[0, 0][np.tril(np.ones((n, past + n), dtype=bool), k=past)] = 0.0
        positions = np.arange(past, past + n, dtype=np.int64)[None]
        rows, norms = self._forward(np.asarray(tokens, dtype=np.int64)[None], positions, mask)
        return _Row.at(rows, norms, n - 1)

    def _sync_trunk(self, want: list[int]) -> int:
        """Crops the cache to its longest prefix shared with `want` (keeping at least one token
        whose row is known) and returns how many tokens of `want` are cached."""
        n = len(self._ids)
        if want[:n] == self._ids:
            # The usual case, the trunk grew or stayed: one comparison in C (the loop below is
            # Python bytecode per cached token, a millisecond per byte at a 10k-token trunk).
            return n
        keep = 0
        limit = min(n, len(want))
        while keep < limit and self._ids[keep] == want[keep]:
            keep += 1
        if keep < n:
            # The tip row of a shorter prefix is not stored: re-run its last token.
            keep = max(keep - 1, 0)
            if keep == 0:
                self.reset()
            else:
                truncate_cache(self._cache, keep)
                # The re-run token's path log-probability is known: keep it for `evaluate`.
                self._rerun_cum = self._cum[keep]
                del self._ids[keep:]
                del self._cum[keep:]
                self._tip = None
        return keep

    def evaluate(self, tree: Any) -> _Rows:
        want = [self._bos, *tree.trunk]
        keep = self._sync_trunk(want)
        chain = want[keep:]
        n_nodes = len(tree)
        if self._tip is None and not chain:
            raise AssertionError("cache tip lost without a chain to recompute it")
        if not chain and n_nodes == 1:
            assert self._tip is not None
            return _Rows(self._cum[-1], self._tip.values[None], 0, None, self._tip_norms())
        ids, positions, mask = tree.batch(
            chain, len(self._ids), fill=self._min, float64=self._mask_dtype is np.float64
        )
        rows_new, norms = self._forward(ids, positions, mask)
        # Extend the trunk bookkeeping with the chain, then crop the branches off the cache.
        tip = None
        if chain:
            prev = self._tip
            cum = self._cum[-1] if self._cum else 0.0
            for j, t in enumerate(chain):
                if prev is not None:
                    cum += prev.log_p(t)
                elif j == 0 and self._ids:
                    cum = self._rerun_cum  # the token re-run after a crop (`_sync_trunk`)
                elif j > 0:
                    raise AssertionError("missing row")
                self._ids.append(t)
                self._cum.append(cum)
                prev = _Row.at(rows_new, norms, j)
            self._tip = prev
        else:
            tip = self._tip
        if n_nodes > 1:
            truncate_cache(self._cache, len(self._ids))
        # Node 0 is the tip (the chain's last row, or kept from an earlier forward); node i
        # is new token len(chain) + i - 1.
        return _Rows(self._cum[-1], rows_new, len(chain) - 1, tip, norms)

    def _tip_norms(self) -> npt.NDArray[np.float64] | None:
        """The tip's norm as a (1, 2) array, for a tip standing alone as the rows."""
        assert self._tip is not None
        norm = self._tip.norm
        return None if norm is None else np.array([norm])


class _Marginal(NamedTuple):
    """`ByteLM`'s last query: the prefix, its 257 log masses, log P(prefix), and the log of the
    masses' total (the normaliser of the next-byte distribution; `-inf` when all are 0)."""

    prefix: bytes
    bins: npt.NDArray[np.float64]
    log_px: float
    log_z: float


@dataclasses.dataclass
class Completion:
    """What `ByteLM.complete` returns."""

    text: bytes
    """The continuation after the prompt (bytes; decode with `.decode("utf-8", "replace")`)."""
    tokens: list[int]
    """Token ids after the trunk: the sampled cover of the prompt's end, then decoded tokens."""
    forwards: int
    """Model forwards used, prompt included."""


class _ByteModel:
    """Byte-level sampling and scoring on top of `next_byte_logprobs`."""

    def next_byte_logprobs(self, prefix: bytes | str) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def logprob(self, text: bytes | str, *, prefix: bytes | str = b"", eos: bool = False) -> float:
        """Exact log P(text | prefix) in nats (`eos`: text then end of text)."""
        text_b = text.encode() if isinstance(text, str) else bytes(text)
        prefix_b = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        total = 0.0
        for k in range(len(text_b)):
            total += float(self.next_byte_logprobs(prefix_b + text_b[:k])[text_b[k]])
        if eos:
            total += float(self.next_byte_logprobs(prefix_b + text_b)[EOS])
        return total

    def generate(
        self,
        prompt: bytes | str = b"",
        max_bytes: int = 64,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Iterable[bytes | str] = (),
        seed: int | None = None,
    ) -> str:
        """Samples bytes after `prompt` until end of text, a `stop` string (not included) or
        `max_bytes`; a character cut by `max_bytes` is completed, so the text is whole UTF-8
        where the model's bytes are. Invalid sequences decode as U+FFFD."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if temperature < 0 or not (0.0 < top_p <= 1.0):
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        prompt_b = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        stops = [s.encode() if isinstance(s, str) else bytes(s) for s in stop]
        rng = np.random.default_rng(seed)
        out = bytearray()
        with self._sampling(temperature, top_p):
            while True:
                if len(out) >= max_bytes and _utf8_complete(out):
                    break
                lp = self.next_byte_logprobs(prompt_b + bytes(out))
                if temperature == 0:
                    b = int(np.argmax(lp))
                else:
                    p = np.exp(lp - lp.max())
                    b = int(rng.choice(257, p=p / p.sum()))
                if b == EOS:
                    break
                out.append(b)
                hit = next((s for s in stops if s and out.endswith(s)), None)
                if hit is not None:
                    del out[len(out) - len(hit) :]
                    break
        return bytes(out).decode("utf-8", "replace")

    def _sampling(self, temperature: float, top_p: float) -> Any:
        import contextlib

        return contextlib.nullcontext()


def _utf8_complete(b: bytearray) -> bool:
    """False when `b` ends inside a UTF-8 sequence that more bytes could still complete."""
    for back in range(1, min(4, len(b)) + 1):
        c = b[-back]
        if c & 0xC0 == 0x80:
            continue
        need = 2 if 0xC0 <= c < 0xE0 else 3 if 0xE0 <= c < 0xF0 else 4 if 0xF0 <= c < 0xF8 else 1
        return back >= need
    return True


class ByteLM(_ByteModel):
    """A byte-level view of a token-level causal LM (see the module notes)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer | Encoding,
        *,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
    ) -> None:
        """`model`: a Hugging Face causal LM (or a `TokenModel`); `tokenizer`: a
        `tokenmill.Tokenizer` or `tokenmill.Encoding` of a byte-level BPE. Tokenizers whose
        byte probabilities cannot be computed exactly (other pipelines, unknown pre-tokenizer
        patterns, missing byte tokens) raise `UnsupportedFeatureError`. BOS defaults to the
        model's `bos_token_id`, else its end-of-text token (GPT-2 style)."""
        enc = _encoding_of(tokenizer)
        self.encoding = enc
        self.core = _core.ByteLmCore(enc._core_bpe)
        cfg = getattr(model, "config", None)
        eos = eos_token_id
        if eos is None and cfg is not None:
            eos = cfg.eos_token_id
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        bos = bos_token_id
        if bos is None and cfg is not None:
            bos = cfg.bos_token_id
        if bos is None:
            bos = eos
        if bos is None:
            raise ValueError(
                "ByteLM needs a start-of-text token: pass bos_token_id (or eos_token_id) or "
                "use a model whose config has one"
            )
        self.bos_token_id: int = int(bos)
        self.eos_token_id: int | None = None if eos is None else int(eos)
        self.model = model
        self.last_leaked = 0.0
        self._is_hf = hasattr(model, "forward") and cfg is not None
        self._runner = self._make_runner(1.0, 1.0)
        self._last: _Marginal | None = None

    def _make_runner(self, temperature: float, top_p: float) -> _Runner:
        t = 1.0 if temperature == 0 else temperature
        if self._is_hf:
            return _HFRunner(self.model, self.bos_token_id, t, top_p)
        return _CallableRunner(self.model, self.bos_token_id, t, top_p)

    @property
    def forwards(self) -> int:
        """Model forwards so far (one per next-byte query that needed the model)."""
        return self._runner.forwards

    @property
    def forward_seconds(self) -> float:
        return self._runner.forward_seconds

    def _marginal(self, x: bytes) -> tuple[_Marginal, npt.NDArray[np.float64] | None]:
        """The masses of `x` and, when computed now (not the last query's), the normalised
        bins (a fresh array from Rust)."""
        if self._last is not None and self._last.prefix == x:
            return self._last, None
        tree = self.core.tree(x)
        r = self._runner.evaluate(tree)
        bins, log_px, normalised, log_z = self.core.marginalize_rows(
            x, tree, r.trunk_lp, eos=self.eos_token_id, **r.row_kwargs()
        )
        self._last = _Marginal(x, bins, log_px, log_z)
        return self._last, normalised

    def masses(self, prefix: bytes | str) -> tuple[npt.NDArray[np.float64], float]:
        """Unnormalised: (log P(prefix b) for the 257 bins, log P(prefix)), canonical covers
        only. `next_byte_logprobs` is these bins normalised."""
        x = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        m, _ = self._marginal(x)
        return m.bins, m.log_px

    def next_byte_logprobs(self, prefix: bytes | str) -> npt.NDArray[np.float64]:
        """log P(next byte | prefix) for bytes 0..255 and end of text (index 256)."""
        x = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        m, out = self._marginal(x)
        if m.log_z == -math.inf:
            raise ValueError(
                "the model gives this prefix no canonical continuation (probability 0)"
            )
        self.last_leaked = max(0.0, 1.0 - math.exp(m.log_z - m.log_px))
        if out is None:
            # A repeated query: a fresh array, since the caller may change the one returned.
            out = m.bins - m.log_z
        return out

    def _sampling(self, temperature: float, top_p: float) -> Any:
        import contextlib

        @contextlib.contextmanager
        def swap() -> Any:
            saved, saved_last = self._runner, self._last
            self._runner, self._last = self._make_runner(temperature, top_p), None
            try:
                yield
            finally:
                spent = self._runner
                self._runner, self._last = saved, saved_last
                self._runner.forwards += spent.forwards
                self._runner.forward_seconds += spent.forward_seconds

        if temperature in (0, 1.0) and top_p >= 1.0:
            return contextlib.nullcontext()
        return swap()

    def complete(
        self,
        prompt: bytes | str,
        max_new_tokens: int = 32,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Iterable[bytes | str] = (),
        seed: int | None = None,
    ) -> Completion:
        """Prompt-boundary completion: samples a cover of the prompt's end exactly (one tree
        forward), then decodes tokens as usual from the KV cache (one forward per token).
        Exact under canonical semantics for the first token; later tokens are the model's
        own (unconstrained) choices. `temperature=0`: the most probable cover, then greedy."""
        if not self._is_hf:
            raise TypeError("complete() needs a Hugging Face model (KV-cache hand-over)")
        x = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        stops = [s.encode() if isinstance(s, str) else bytes(s) for s in stop]
        rng = np.random.default_rng(seed)
        runner = self._make_runner(temperature, top_p)
        assert isinstance(runner, _HFRunner)

        def pick(logw: npt.NDArray[np.float64]) -> int:
            if temperature == 0:
                return int(np.argmax(logw))
            p = np.exp(logw - logw.max())
            return int(rng.choice(len(p), p=p / p.sum()))

        tree = self.core.tree(x)
        r = runner.evaluate(tree)
        generated: list[int] = []
        if x:
            covers = self.core.covers_rows(x, tree, r.trunk_lp, **r.row_kwargs())
            if not covers:
                raise ValueError("the model gives this prompt no canonical cover")
            k = pick(np.array([c[2] for c in covers]))
            node, tok, _ = covers[k]
            generated = [*tree.nodes[node], tok]
            tail = generated
        else:
            tail = []
        # Hand-over: the cache holds the trunk; feed the chosen cover path as a chain.
        row = None if runner._tip is None else runner._tip.log_probs()
        if tail:
            row = runner._chain(tail).log_probs()
            runner._ids.extend(tail)
        assert row is not None
        text = bytearray()
        for t in generated:
            text += self.core.token_bytes(t)
        del text[: len(x) - tree.sigma]
        for i in range(max_new_tokens):
            if i > 0:  # no forward after the last token, as in plain generation
                row = runner._chain([generated[-1]]).log_probs()
                runner._ids.append(generated[-1])
            t = pick(row)
            if t == self.eos_token_id:
                break
            generated.append(t)
            try:
                text += self.core.token_bytes(t)
            except KeyError:  # a special token other than end of text
                break
            hit = next((s for s in stops if s and s in text), None)
            if hit is not None:
                del text[text.index(hit) :]
                break
        self._runner.forwards += runner.forwards
        self._runner.forward_seconds += runner.forward_seconds
        return Completion(bytes(text), generated, runner.forwards)


class ByteEnsemble(_ByteModel):
    """Byte-level ensemble of models with different tokenizers: one 257-way distribution per
    byte, `mixture` (weighted average of probabilities) or `product` (weighted geometric mean,
    renormalised)."""

    def __init__(
        self,
        models: Sequence[_ByteModel],
        mode: Literal["mixture", "product"] = "mixture",
        weights: Sequence[float] | None = None,
    ) -> None:
        if not models:
            raise ValueError("ByteEnsemble needs at least one model")
        if mode not in ("mixture", "product"):
            raise ValueError(f"mode must be 'mixture' or 'product', not {mode!r}")
        w = np.full(len(models), 1.0 / len(models)) if weights is None else np.asarray(weights)
        if w.shape != (len(models),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights: one non-negative weight per model, not all zero")
        self.models = list(models)
        self.mode = mode
        self.weights = w / w.sum() if mode == "mixture" else w

    def next_byte_logprobs(self, prefix: bytes | str) -> npt.NDArray[np.float64]:
        lps = np.stack([m.next_byte_logprobs(prefix) for m in self.models])
        keep = self.weights > 0
        lps, w = lps[keep], self.weights[keep]
        if self.mode == "mixture":
            comb = lps + np.log(w)[:, None]
            top = comb.max(axis=0)
            safe = np.where(np.isfinite(top), top, 0.0)
            with np.errstate(divide="ignore"):
                out = safe + np.log(np.exp(comb - safe).sum(axis=0))
        else:
            out = (lps * w[:, None]).sum(axis=0)
        top = float(out.max())
        result: npt.NDArray[np.float64] = out - (top + math.log(float(np.exp(out - top).sum())))
        return result

    def _sampling(self, temperature: float, top_p: float) -> Any:
        import contextlib

        stack = contextlib.ExitStack()
        for m in self.models:
            stack.enter_context(m._sampling(temperature, top_p))
        return stack
