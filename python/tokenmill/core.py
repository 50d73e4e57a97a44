"""`Encoding`: a drop-in for `tiktoken.Encoding`.

The Rust core (`tokenmill._core.CoreBPE`) does the work with the GIL released; this class keeps
tiktoken's policy: argument defaults, the special-token checks, lone-surrogate handling,
pickling by registered name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tokenmill import _core

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Encoding"]

_Specials = Literal["all"] | AbstractSet[str]
_Disallowed = Literal["all"] | Collection[str]


def _fix_surrogates(text: str) -> str:
    # What tiktoken does with lone surrogates, which UTF-8 cannot carry: they become U+FFFD.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


_R = TypeVar("_R")


def _on_text(call: Callable[[str], _R], text: str) -> _R:
    """`call(text)`, retried with lone surrogates replaced if the text cannot be UTF-8 (the
    check costs nothing on valid text: the Rust side raises UnicodeEncodeError)."""
    try:
        return call(text)
    except UnicodeEncodeError:
        return call(_fix_surrogates(text))


def _on_texts(call: Callable[[list[str]], _R], texts: list[str]) -> _R:
    """`_on_text` for a batch: every text is fixed when any one needs it."""
    try:
        return call(texts)
    except UnicodeEncodeError:
        return call([_fix_surrogates(t) for t in texts])


class Encoding:
    def __init__(
        self,
        name: str,
        *,
        pat_str: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int],
        explicit_n_vocab: int | None = None,
    ) -> None:
        """Creates an encoding, with the same arguments as `tiktoken.Encoding`.

        Malformed vocabularies (duplicate ranks, special ids colliding with ordinary ones) and
        invalid patterns raise ValueError subclasses naming the problem.
        """
        self.name = name
        self._pat_str = pat_str
        self._special_tokens = dict(special_tokens)
        core = _core.CoreBPE(mergeable_ranks, self._special_tokens, pat_str)
        # The ranks are not kept: the core holds the vocabulary, and a dict of 100k bytes
        # objects would be half of what a loaded cl100k keeps in memory (10 of 21 MiB);
        # `_mergeable_ranks` rebuilds an equal dict when asked.
        self._init_core(core, explicit_n_vocab, len(mergeable_ranks))

    @classmethod
    def _from_core(
        cls,
        name: str,
        core: _core.CoreBPE,
        *,
        explicit_n_vocab: int | None = None,
    ) -> Encoding:
        """An encoding around an already-built core (fast loading paths)."""
        self = cls.__new__(cls)
        self.name = name
        self._pat_str = core.pattern
        self._special_tokens = core.special_tokens()
        self._init_core(core, explicit_n_vocab, None)
        return self

    def _init_core(
        self,
        core: _core.CoreBPE,
        explicit_n_vocab: int | None,
        n_ordinary: int | None,
    ) -> None:
        self._core_bpe = core
        self._ranks_cache: dict[bytes, int] | None = None
        self.max_token_value = core.n_vocab - 1
        if explicit_n_vocab is not None:
            if n_ordinary is not None and (
                n_ordinary + len(self._special_tokens) != explicit_n_vocab
            ):
                raise ValueError(
                    f"explicit_n_vocab={explicit_n_vocab} but the encoding has "
                    f"{n_ordinary} ordinary and {len(self._special_tokens)} special tokens"
                )
            if self.max_token_value != explicit_n_vocab - 1:
                raise ValueError(
                    f"explicit_n_vocab={explicit_n_vocab} but the largest token id is "
                    f"{self.max_token_value}"
                )

    @property
    def _mergeable_ranks(self) -> dict[bytes, int]:
        if self._ranks_cache is None:
            self._ranks_cache = self._core_bpe.mergeable_ranks()
        return self._ranks_cache

    def __repr__(self) -> str:
        return f"<Encoding {self.name!r}>"

    # ------------------------------------------------------------------ encoding

    def encode_ordinary(self, text: str) -> list[int]:
        """Encodes a string, treating special-token text as ordinary text."""
        return _on_text(self._core_bpe.encode_ordinary, text)

    def encode(
        self,
        text: str,
        *,
        allowed_special: _Specials = set(),  # noqa: B006 (tiktoken's signature)
        disallowed_special: _Disallowed = "all",
    ) -> list[int]:
        """Encodes a string. Text matching a special token raises ValueError unless the token is
        in `allowed_special` (encoded as the special token) or not in `disallowed_special`
        (encoded as ordinary text); by default every special token is disallowed."""
        return _on_text(
            lambda t: self._core_bpe.encode(t, allowed_special, disallowed_special), text
        )

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: _Specials = set(),  # noqa: B006
        disallowed_special: _Disallowed = "all",
    ) -> npt.NDArray[np.uint32]:
        """Like `encode`, returning a numpy uint32 array that owns the Rust buffer (no copy)."""
        return _on_text(
            lambda t: self._core_bpe.encode_to_numpy(t, allowed_special, disallowed_special), text
        )

    def encode_ordinary_batch(self, text: list[str], *, num_threads: int = 8) -> list[list[int]]:
        """Encodes many strings on `num_threads` threads, all in Rust, GIL released."""
        return _on_texts(lambda ts: self._core_bpe.encode_ordinary_batch(ts, num_threads), text)

    def encode_batch(
        self,
        text: list[str],
        *,
        num_threads: int = 8,
        allowed_special: _Specials = set(),  # noqa: B006
        disallowed_special: _Disallowed = "all",
    ) -> list[list[int]]:
        """Encodes many strings on `num_threads` threads; special tokens as in `encode`."""
        return _on_texts(
            lambda ts: self._core_bpe.encode_batch(
                ts, allowed_special, disallowed_special, num_threads
            ),
            text,
        )

    def encode_ordinary_batch_to_numpy(
        self, text: list[str], *, num_threads: int = 8
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        """`encode_ordinary_batch` as one flat uint32 array of ids plus int64 offsets: document
        `i` is `ids[offsets[i]:offsets[i + 1]]`. No Python object per token, the GIL released
        throughout, and the arrays own Rust's buffers (no copy)."""
        return _on_texts(
            lambda ts: self._core_bpe.encode_ordinary_batch_to_numpy(ts, num_threads), text
        )

    def encode_batch_to_numpy(
        self,
        text: list[str],
        *,
        num_threads: int = 8,
        allowed_special: _Specials = set(),  # noqa: B006
        disallowed_special: _Disallowed = "all",
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        """`encode_batch` as a flat array plus offsets, like `encode_ordinary_batch_to_numpy`."""
        return _on_texts(
            lambda ts: self._core_bpe.encode_batch_to_numpy(
                ts, allowed_special, disallowed_special, num_threads
            ),
            text,
        )

    def encode_with_unstable(
        self,
        text: str,
        *,
        allowed_special: _Specials = set(),  # noqa: B006
        disallowed_special: _Disallowed = "all",
    ) -> tuple[list[int], list[list[int]]]:
        """The stable tokens of `text` and every sequence its unstable tail may become once more
        text follows (completions sorted; tiktoken returns them in hash order)."""
        return _on_text(
            lambda t: self._core_bpe.encode_with_unstable(t, allowed_special, disallowed_special),
            text,
        )

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of a single token (ordinary or special); KeyError if it is not one token."""
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        try:
            return self._core_bpe.encode_single_token(text_or_bytes)
        except KeyError:
            raise KeyError(text_or_bytes) from None

    def _encode_single_piece(self, text_or_bytes: str | bytes) -> list[int]:
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        return self._core_bpe.encode_single_piece(text_or_bytes)

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """The bytes of a token sequence; an unknown id raises KeyError."""
        return self._core_bpe.decode_bytes(tokens)

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """Decodes tokens to text; invalid UTF-8 is handled by `errors` (as `bytes.decode`)."""
        text = self._core_bpe.decode_utf8(tokens)
        if isinstance(text, bytes):
            return text.decode("utf-8", errors=errors)
        return text

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token; KeyError if the id is unknown."""
        try:
            return self._core_bpe.decode_single_token_bytes(token)
        except KeyError:
            raise KeyError(str(token)) from None

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        """The bytes of each token."""
        try:
            return self._core_bpe.decode_tokens_bytes(tokens)
        except (KeyError, OverflowError, TypeError):
            # tiktoken looks tokens up one by one, so the first bad one decides the exception.
            return [self.decode_single_token_bytes(t) for t in tokens]

    def decode_with_offsets(self, tokens: Sequence[int]) -> tuple[str, list[int]]:
        """Decodes tokens and returns the character offset at which each token starts (a token
        that starts inside a character gets that character's offset). Strict UTF-8."""
        token_bytes = self.decode_tokens_bytes(tokens)
        text_len = 0
        offsets = []
        for token in token_bytes:
            offsets.append(max(0, text_len - (0x80 <= token[0] < 0xC0)))
            text_len += sum(1 for c in token if not 0x80 <= c < 0xC0)
        text = b"".join(token_bytes).decode("utf-8", errors="strict")
        return text, offsets

    def decode_batch(
        self, batch: Sequence[Sequence[int]], *, errors: str = "replace", num_threads: int = 8
    ) -> list[str]:
        """Decodes many token sequences."""
        return [self.decode(tokens, errors=errors) for tokens in batch]

    def decode_bytes_batch(
        self, batch: Sequence[Sequence[int]], *, num_threads: int = 8
    ) -> list[bytes]:
        return [self.decode_bytes(tokens) for tokens in batch]

    # ------------------------------------------------------------------ introspection

    def token_byte_values(self) -> list[bytes]:
        """Every ordinary token's bytes, sorted."""
        return self._core_bpe.token_byte_values()

    @property
    def eot_token(self) -> int:
        return self._special_tokens["<|endoftext|>"]

    @functools.cached_property
    def special_tokens_set(self) -> set[str]:
        return set(self._special_tokens.keys())

    def is_special_token(self, token: int) -> bool:
        if not isinstance(token, int):
            raise TypeError(f"token must be an int, not {type(token).__name__}")
        return token in self._special_token_ids

    @functools.cached_property
    def _special_token_ids(self) -> frozenset[int]:
        return frozenset(self._special_tokens.values())

    @property
    def n_vocab(self) -> int:
        """One more than the largest token id."""
        return self.max_token_value + 1

    @property
    def is_fast(self) -> bool:
        """True when the pattern runs on a hand-written exact scanner, not the regex engine."""
        return self._core_bpe.is_fast

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> object:
        from tokenmill import registry

        # Registered encodings pickle by name, as in tiktoken.
        if self is registry.ENCODINGS.get(self.name):
            return self.name
        return {
            "name": self.name,
            "pat_str": self._pat_str,
            "mergeable_ranks": self._mergeable_ranks,
            "special_tokens": self._special_tokens,
        }

    def __setstate__(self, value: object) -> None:
        from tokenmill import registry

        if isinstance(value, str):
            self.__dict__ = registry.get_encoding(value).__dict__
            return
        if not isinstance(value, dict):
            raise TypeError("invalid pickled Encoding state")
        state: dict[str, Any] = value
        self.__init__(**state)  # type: ignore[misc]
