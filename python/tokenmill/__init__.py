"""tokenmill: exact, fast byte-level BPE.

`import tokenmill as tiktoken` works for code written against tiktoken; `tokenmill.Tokenizer`
reads Hugging Face `tokenizer.json` files of byte-level BPE models.
"""

from __future__ import annotations

from tokenmill import load
from tokenmill._builtin_encodings import PATTERNS
from tokenmill._core import (
    DisallowedSpecialTokenError,
    InvalidFileError,
    InvalidPatternError,
    InvalidVocabError,
    PatternMatchError,
    Pretokenizer,
    TokenmillError,
    UnknownTokenError,
    UnsupportedFeatureError,
)
from tokenmill._core import __version__ as __version__
from tokenmill.core import Encoding
from tokenmill.hf import EncodingResult, Tokenizer
from tokenmill.model import encoding_for_model, encoding_name_for_model
from tokenmill.registry import get_encoding, list_encoding_names
from tokenmill.train import train_bpe

__all__ = [
    "PATTERNS",
    "DisallowedSpecialTokenError",
    "Encoding",
    "EncodingResult",
    "InvalidFileError",
    "InvalidPatternError",
    "InvalidVocabError",
    "PatternMatchError",
    "Pretokenizer",
    "Tokenizer",
    "TokenmillError",
    "UnknownTokenError",
    "UnsupportedFeatureError",
    "encoding_for_model",
    "encoding_name_for_model",
    "get_encoding",
    "list_encoding_names",
    "load",
    "train_bpe",
]
