"""`Tokenizer`: a drop-in for `tokenizers.Tokenizer` on byte-level BPE `tokenizer.json` files.

Ids, tokens and offsets are those `tokenizers` produces, also through an NFC normalizer (Qwen's
files). A file feature that tokenmill cannot reproduce exactly (Unigram/WordPiece models, other
normalizers, ...) raises NotImplementedError naming it, at load time, instead of giving
different ids later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tokenmill import _core
from tokenmill.core import Encoding

__all__ = ["EncodingResult", "Tokenizer"]

EncodingResult = _core.EncodingResult

_DEFAULT_THREADS = min(8, os.cpu_count() or 1)


class Tokenizer:
    """A Hugging Face byte-level BPE tokenizer (from `tokenizer.json`)."""

    def __init__(self, json_str: str, *, source_name: str = "<string>") -> None:
        self._source_name = source_name
        self._core = _core.HfTokenizer.from_str(json_str, source_name)
        # Kept as UTF-8 bytes for `to_str`/`save`/pickling: a `str` of a GPT-2-style
        # vocabulary holds two bytes per character (and a cached UTF-8 copy once Rust has
        # read it), three times the file's size.
        self._json = json_str.encode("utf-8")

    @classmethod
    def _from_utf8(cls, raw: bytes, source_name: str) -> Tokenizer:
        tok = cls.__new__(cls)
        tok._source_name = source_name
        tok._core = _core.HfTokenizer.from_utf8(raw, source_name)
        tok._json = raw
        return tok

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Loads a `tokenizer.json` file; malformed files raise ValueError naming the file."""
        path = os.fspath(path)
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return cls._from_utf8(raw, path)
        except _core.UnsupportedFeatureError as e:
            # The Rust side names the feature; say which file asked for it.
            raise _core.UnsupportedFeatureError(f"{path}: {e}") from None

    @classmethod
    def from_str(cls, json_str: str) -> Tokenizer:
        return cls(json_str)

    def to_str(self) -> str:
        """The tokenizer.json this tokenizer was loaded from."""
        return self._json.decode("utf-8")

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:
            f.write(self._json)

    def __repr__(self) -> str:
        return f"<tokenmill.Tokenizer from {self._source_name}>"

    def __reduce__(self) -> tuple[object, tuple[bytes, dict[str, str]]]:
        return (_rebuild, (self._json, {"source_name": self._source_name}))

    # ------------------------------------------------------------------ encoding

    def encode(self, sequence: str, add_special_tokens: bool = True) -> _core.EncodingResult:
        """Encodes one text: `.ids`, `.tokens`, `.offsets` (characters), `.attention_mask`."""
        try:
            return self._core.encode(sequence, add_special_tokens)
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    def encode_batch(
        self, inputs: Sequence[str], add_special_tokens: bool = True
    ) -> list[_core.EncodingResult]:
        """Encodes many texts on several threads (GIL released)."""
        try:
            return self._core.encode_batch(list(inputs), add_special_tokens, _DEFAULT_THREADS)
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    def encode_ids(self, sequence: str, add_special_tokens: bool = True) -> list[int]:
        """Only the ids (faster: no token strings or offsets are built)."""
        try:
            return self._core.encode_ids(sequence, add_special_tokens)
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    def encode_ids_batch(
        self, inputs: Sequence[str], add_special_tokens: bool = True, *, num_threads: int = 0
    ) -> list[list[int]]:
        try:
            return self._core.encode_ids_batch(
                list(inputs), add_special_tokens, num_threads or _DEFAULT_THREADS
            )
        except UnicodeEncodeError as e:
            raise _not_utf8(e) from None

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Decodes ids to text (unknown ids are skipped, as in `tokenizers`)."""
        return self._core.decode(list(ids), skip_special_tokens)

    def decode_batch(
        self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True
    ) -> list[str]:
        return self._core.decode_batch(
            [list(s) for s in sequences], skip_special_tokens, _DEFAULT_THREADS
        )

    # ------------------------------------------------------------------ vocabulary

    def token_to_id(self, token: str) -> int | None:
        return self._core.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        return self._core.id_to_token(id)

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]:
        return self._core.get_vocab(with_added_tokens)

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return self._core.get_vocab_size(with_added_tokens)

    def to_encoding(self, name: str = "tokenizer") -> Encoding:
        """The same tokenizer as a tiktoken-style `Encoding` (added tokens become special
        tokens), where the file's pipeline allows it; NotImplementedError otherwise."""
        return Encoding._from_core(name, self._core.to_core_bpe())


def _not_utf8(e: UnicodeEncodeError) -> TypeError:
    # `tokenizers` raises TypeError for str that is not valid Unicode (lone surrogates);
    # drop-in code may catch exactly that.
    return TypeError(f"text is not valid Unicode and cannot be encoded as UTF-8: {e}")


def _rebuild(json: str | bytes, kwargs: dict[str, str]) -> Tokenizer:
    # Pickles made before the JSON was kept as bytes hold a str.
    if isinstance(json, str):
        return Tokenizer(json, **kwargs)
    return Tokenizer._from_utf8(json, kwargs.get("source_name", "<string>"))
