"""Training byte-level BPE vocabularies.

`train_bpe` learns a vocabulary from strings or files and returns a `TrainedEncoding`: a
`tokenmill.Encoding` (tiktoken semantics) that also knows its ordered merge list and can be saved
as a `.tiktoken` file (for tiktoken) or a `tokenizer.json` (for HF `tokenizers` and
`transformers.PreTrainedTokenizerFast`).

The work is done in Rust (`tokenmill._core.BpeTrainer`): pre-tokens are counted in parallel,
files are streamed (memory grows with the number of *distinct* pre-tokens, not with the corpus),
and merges are applied incrementally with a priority queue.

Determinism and Hugging Face parity: the next merge is the pair with the highest count; ties
go to the pair that is smallest in Hugging Face's id order (bytes ordered by the character that
stands for them in byte-level vocabularies, then merged tokens in order of creation). That is
the rule `tokenizers`' `BpeTrainer` applies, so with the same pre-tokens the merges are
identical, on any number of threads. See `docs/training.md`.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenmill import _core
from tokenmill._builtin_encodings import GPT2_HF_PAT_STR, PATTERNS
from tokenmill.core import Encoding

__all__ = [
    "TrainedEncoding",
    "bytes_to_unicode_str",
    "merges_from_ranks",
    "save_tiktoken",
    "save_tokenizer_json",
    "train_bpe",
]

_BATCH_BYTES = 8 << 20
_BATCH_ITEMS = 4096


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ---------------------------------------------------------------------------------- bytes


def _byte_chars() -> list[str]:
    """GPT-2's byte -> character table used by byte-level vocabularies."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: list[str] = [""] * 256
    n = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


_BYTE_CHARS = _byte_chars()


def bytes_to_unicode_str(token: bytes) -> str:
    """A token's bytes as written in a byte-level `tokenizer.json` (e.g. b" a" -> "Ġa")."""
    return "".join(_BYTE_CHARS[b] for b in token)


# ---------------------------------------------------------------------------------- files


def _atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes `data` to a temporary file next to `path`, then renames it into place, so that
    `path` is either untouched or complete, even if interrupted."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_tiktoken(enc: Encoding, path: str | os.PathLike[str]) -> None:
    """Writes the ordinary tokens of `enc` as a `.tiktoken` file (`base64 rank` per line),
    atomically. tiktoken loads it with `tiktoken.load.load_tiktoken_bpe`; the pattern and
    special tokens are not part of the format (pass them to `tiktoken.Encoding`)."""
    ranks = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
    data = b"".join(
        base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for tok, rank in ranks
    )
    _atomic_write(path, data)


def _pre_tokenizer_json(pat_str: str) -> dict[str, Any]:
    if pat_str == GPT2_HF_PAT_STR:
        # Exactly what `ByteLevel(use_regex=True)` splits with.
        return {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        }
    return {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": _hf_regex(pat_str)},
                "behavior": "Isolated",
                "invert": False,
            },
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": False,
            },
        ],
    }


def _hf_regex(pat_str: str) -> str:
    """The spelling of `pat_str` to write for `tokenizers`, whose Oniguruma engine (Ruby
    syntax) reads `{m,n}+` as "one or more of `{m,n}`" rather than as a possessive interval.
    tiktoken's cl100k/o200k patterns are written with their equivalent non-possessive
    spellings (the Llama-3 form of cl100k); other patterns are written as they are."""
    from tokenmill._builtin_encodings import CL100K_PAT_STR, LLAMA3_PAT_STR

    if pat_str == CL100K_PAT_STR:
        return LLAMA3_PAT_STR
    return pat_str


def merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[int, int]]:
    """Merges (pairs of ids, in priority order) for tiktoken-style `ranks`: every split of
    every token into two tokens, ordered by the merged token's rank, then by the parts' ranks
    (what transformers' tiktoken converter writes)."""
    merges: list[tuple[int, int, int]] = []
    for token, rank in ranks.items():
        merges.extend(
            sorted(
                (rank, ranks[token[:i]], ranks[token[i:]])
                for i in range(1, len(token))
                if token[:i] in ranks and token[i:] in ranks
            )
        )
    merges.sort(key=lambda m: m[0])
    return [(a, b) for _, a, b in merges]


def tokenizer_json(
    ranks: Sequence[bytes],
    merges: Sequence[tuple[int, int]],
    pat_str: str,
    special_tokens: dict[str, int],
) -> str:
    """A byte-level BPE `tokenizer.json`: `ranks[i]` has id `i`, `merges` are pairs of ids
    in priority order, special tokens are added tokens."""
    strs = [bytes_to_unicode_str(t) for t in ranks]
    doc: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s, i in sorted(special_tokens.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer_json(pat_str),
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": False,
            "use_regex": True,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {s: i for i, s in enumerate(strs)},
            "merges": [[strs[a], strs[b]] for a, b in merges],
        },
    }
    return json.dumps(doc, ensure_ascii=False, indent=None)


def save_tokenizer_json(enc: TrainedEncoding, path: str | os.PathLike[str]) -> None:
    """Writes `enc` as a Hugging Face `tokenizer.json`, atomically. It loads in
    `tokenizers.Tokenizer.from_file`, `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`
    and `tokenmill.Tokenizer.from_file`, and gives the same ids in all three."""
    _atomic_write(path, enc.to_tokenizer_json().encode("utf-8"))


# ---------------------------------------------------------------------------------- result


class TrainedEncoding(Encoding):
    """An `Encoding` produced by `train_bpe`: ordinary tokens have ids `0..n` (the 256 bytes
    by value, then merged tokens in training order), special tokens follow.

    Extra attributes: `merges` (ordered `(left, right)` byte pairs, as in `tokenizer.json`),
    `merge_counts` (each merge's pair count when chosen), `removed_tokens` (Picky BPE),
    `stats` (sizes and timings)."""

    def __init__(
        self,
        name: str,
        *,
        pat_str: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int],
        explicit_n_vocab: int | None = None,
        merge_ids: Sequence[tuple[int, int]] = (),
        merge_counts: Sequence[int] = (),
        removed_tokens: Sequence[bytes] = (),
        stats: dict[str, float] | None = None,
    ) -> None:
        super().__init__(
            name,
            pat_str=pat_str,
            mergeable_ranks=mergeable_ranks,
            special_tokens=special_tokens,
            explicit_n_vocab=explicit_n_vocab,
        )
        self._merge_ids = [(int(a), int(b)) for a, b in merge_ids]
        self.merge_counts: list[int] = list(merge_counts)
        self.removed_tokens: list[bytes] = list(removed_tokens)
        self.stats: dict[str, float] = dict(stats or {})

    @property
    def pat_str(self) -> str:
        return self._pat_str

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merge list in priority order, as byte strings."""
        by_rank = self._ranks_list()
        return [(by_rank[a], by_rank[b]) for a, b in self._merge_ids]

    def _ranks_list(self) -> list[bytes]:
        out = [b""] * len(self._mergeable_ranks)
        for tok, rank in self._mergeable_ranks.items():
            out[rank] = tok
        return out

    def to_tokenizer_json(self) -> str:
        """This vocabulary as a Hugging Face byte-level BPE `tokenizer.json` string."""
        return tokenizer_json(
            self._ranks_list(), self._merge_ids, self._pat_str, dict(self._special_tokens)
        )

    def to_tokenizer(self) -> Any:
        """This vocabulary as a `tokenmill.Tokenizer` (the `tokenizer.json` semantics)."""
        from tokenmill.hf import Tokenizer

        return Tokenizer(self.to_tokenizer_json(), source_name=f"<trained {self.name}>")

    def save_tiktoken(self, path: str | os.PathLike[str]) -> None:
        save_tiktoken(self, path)

    def save_tokenizer_json(self, path: str | os.PathLike[str]) -> None:
        save_tokenizer_json(self, path)

    def save(self, directory: str | os.PathLike[str]) -> dict[str, str]:
        """Writes `<name>.tiktoken`, `tokenizer.json` and `tokenmill.json` (pattern and special
        tokens, which the `.tiktoken` format lacks) into `directory`; returns their paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {
            "tiktoken": str(d / f"{self.name}.tiktoken"),
            "tokenizer_json": str(d / "tokenizer.json"),
            "config": str(d / "tokenmill.json"),
        }
        self.save_tiktoken(paths["tiktoken"])
        self.save_tokenizer_json(paths["tokenizer_json"])
        config = {
            "name": self.name,
            "pat_str": self._pat_str,
            "special_tokens": self._special_tokens,
            "mergeable_ranks_file": os.path.basename(paths["tiktoken"]),
            "n_vocab": self.n_vocab,
            "stats": self.stats,
        }
        _atomic_write(paths["config"], json.dumps(config, indent=2).encode("utf-8"))
        return paths

    def __getstate__(self) -> object:
        state = super().__getstate__()
        if isinstance(state, dict):
            state = {
                **state,
                "merge_ids": self._merge_ids,
                "merge_counts": self.merge_counts,
                "removed_tokens": self.removed_tokens,
                "stats": self.stats,
            }
        return state


# ---------------------------------------------------------------------------------- progress


class _Progress:
    """A progress bar (tqdm when installed, else a plain line) on a TTY; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._phase = ""
        self._last_print = 0.0

    def phase(self, name: str, total: int | None, unit: str) -> None:
        self.close()
        self._phase = name
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
            self._total, self._unit = total, unit
            return
        scale = unit == "B"
        self._bar = tqdm(
            total=total,
            desc=name,
            unit=unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
            dynamic_ncols=True,
            leave=True,
        )

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(max(0, done - self._bar.n))
            return
        now = time.monotonic()
        if now - self._last_print >= 0.5:
            self._last_print = now
            total = f"/{self._total}" if self._total else ""
            print(f"\r{self._phase}: {done}{total} {self._unit}", end="", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._phase:
            print(file=sys.stderr)
        self._phase = ""


# ---------------------------------------------------------------------------------- training


def _resolve_pattern(pat_str: str | None, pattern: str | None) -> str:
    if pat_str is not None and pattern is not None:
        raise ValueError("pass either pat_str (a regex) or pattern (a name), not both")
    if pat_str is not None:
        if not isinstance(pat_str, str):
            raise TypeError("pat_str must be a string")
        return pat_str
    name = pattern if pattern is not None else "gpt2-hf"
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern name {name!r}; expected one of {', '.join(PATTERNS)}")
    return PATTERNS[name]


def _fix_surrogates(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _inputs(texts_or_files: Any) -> Iterator[str | Path]:
    if isinstance(texts_or_files, (str, bytes)):
        raise TypeError(
            "train_bpe takes an iterable of texts (str) and/or files (pathlib.Path), "
            "not a single string; wrap a text in a list, or a path in pathlib.Path"
        )
    if isinstance(texts_or_files, os.PathLike):
        yield Path(os.fspath(texts_or_files))
        return
    for item in texts_or_files:
        if isinstance(item, str):
            yield item
        elif isinstance(item, os.PathLike):
            yield Path(os.fspath(item))
        else:
            raise TypeError(
                f"training inputs must be str (a text) or os.PathLike (a file), "
                f"not {type(item).__name__}"
            )


def train_bpe(
    texts_or_files: Iterable[str | os.PathLike[str]] | os.PathLike[str],
    vocab_size: int,
    *,
    pat_str: str | None = None,
    pattern: str | None = None,
    special_tokens: Sequence[str] = (),
    min_frequency: int = 0,
    max_token_length: int | None = None,
    picky_threshold: float | None = None,
    show_progress: bool = True,
    num_threads: int | None = None,
    name: str = "trained",
    _progress_hook: Callable[[int, int], object] | None = None,
) -> TrainedEncoding:
    """Learns a byte-level BPE vocabulary of `vocab_size` tokens (256 bytes + merges + special
    tokens).

    `texts_or_files`: an iterable of `str` (each one document) and/or `pathlib.Path` (UTF-8
    files, streamed), or one path. Pre-tokenization uses `pat_str` (a regex) or `pattern`
    (a name from `tokenmill.PATTERNS`; default `"gpt2-hf"`, the regex of Hugging Face's
    ByteLevel pre-tokenizer). Special tokens get the ids after the ordinary tokens; their text
    is cut out of the training data.

    `min_frequency`: stop when the best pair occurs fewer times. `max_token_length`: no token
    longer than this many bytes. `picky_threshold`: enables Picky BPE (Chizhov et al. 2024)
    with that IoS threshold in (0, 1), e.g. 0.9. `num_threads`: threads counting pre-tokens
    (default: up to 8). `show_progress`: a progress bar on stderr when it is a terminal.

    Invalid settings, an empty corpus, non-UTF-8 files and invalid patterns raise ValueError;
    KeyboardInterrupt stops training within about 50 ms.
    """
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError("vocab_size must be an int")
    specials = list(special_tokens)
    if any(not isinstance(s, str) or not s for s in specials):
        raise ValueError("special tokens must be non-empty strings")
    if len(set(specials)) != len(specials):
        raise ValueError("special tokens must be distinct")
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level vocabulary needs the 256 "
            f"single bytes plus {len(specials)} special token(s), so at least "
            f"{256 + len(specials)}"
        )
    if min_frequency < 0:
        raise ValueError("min_frequency must be >= 0")
    if max_token_length is not None and max_token_length < 2:
        raise ValueError("max_token_length must be at least 2 (or None for no limit)")
    if picky_threshold is not None and not 0.0 < picky_threshold < 1.0:
        raise ValueError("picky_threshold must be in (0, 1), e.g. 0.9 (or None for plain BPE)")
    threads = _default_threads() if num_threads is None else num_threads
    if threads < 1:
        raise ValueError("num_threads must be >= 1")
    pat = _resolve_pattern(pat_str, pattern)

    trainer = _core.BpeTrainer(pat, specials)
    progress = _Progress(show_progress)
    t0 = time.perf_counter()
    try:
        progress.phase("counting", None, "B")
        batch: list[str] = []
        batch_bytes = 0

        def flush() -> None:
            nonlocal batch, batch_bytes
            if not batch:
                return
            try:
                trainer.feed(batch, threads)
            except UnicodeEncodeError:
                trainer.feed([_fix_surrogates(t) for t in batch], threads)
            batch, batch_bytes = [], 0
            progress.update(trainer.n_bytes)
            if _progress_hook is not None:
                _progress_hook(trainer.n_bytes, 0)

        for item in _inputs(texts_or_files):
            if isinstance(item, Path):
                flush()
                if not item.is_file():
                    raise FileNotFoundError(2, "no such file", str(item))
                trainer.feed_files(
                    [str(item)],
                    threads,
                    _chain(lambda b, m: progress.update(b), _progress_hook),
                )
                progress.update(trainer.n_bytes)
                continue
            batch.append(item)
            batch_bytes += len(item)
            if batch_bytes >= _BATCH_BYTES or len(batch) >= _BATCH_ITEMS:
                flush()
        flush()
        n_bytes, n_distinct = trainer.n_bytes, trainer.n_words
        t1 = time.perf_counter()
        n_merges = vocab_size - len(specials) - 256
        progress.phase("merging", n_merges, "merges")
        out = trainer.train(
            vocab_size - len(specials),
            min_frequency,
            max_token_length,
            picky_threshold,
            _chain(lambda b, m: progress.update(m), _progress_hook),
        )
        progress.update(n_merges)
    finally:
        progress.close()
    t2 = time.perf_counter()

    ranks = out.ranks()
    mergeable = {tok: i for i, tok in enumerate(ranks)}
    special_ids = {s: len(ranks) + i for i, s in enumerate(specials)}
    return TrainedEncoding(
        name,
        pat_str=pat,
        mergeable_ranks=mergeable,
        special_tokens=special_ids,
        merge_ids=out.merges(),
        merge_counts=out.merge_counts(),
        removed_tokens=out.removed(),
        stats={
            "bytes": float(n_bytes),
            "distinct_pretokens": float(n_distinct),
            "count_seconds": t1 - t0,
            "merge_seconds": t2 - t1,
            "removals": float(out.n_removals),
        },
    )


def _chain(
    a: Callable[[int, int], object], b: Callable[[int, int], object] | None
) -> Callable[[int, int], None]:
    def both(x: int, y: int) -> None:
        a(x, y)
        if b is not None:
            b(x, y)

    return both
