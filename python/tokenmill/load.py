"""Loading BPE files: tiktoken's `load` module, offline first.

Files named by URL are looked up in tiktoken's cache (`TIKTOKEN_CACHE_DIR`, `DATA_GYM_CACHE_DIR`
or `<tmp>/data-gym-cache`, keyed by the SHA-1 of the URL) so that a cache filled by tiktoken works
unchanged. Only when the file is in no cache is a download attempted; if that fails, one error
names the file and says how to supply it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import uuid

from tokenmill._core import CoreBPE

__all__ = [
    "FileUnavailableError",
    "check_hash",
    "data_gym_to_mergeable_bpe_ranks",
    "dump_tiktoken_bpe",
    "load_tiktoken_bpe",
    "read_file",
    "read_file_cached",
]


class FileUnavailableError(OSError):
    """A tokenizer file is not on this machine and could not be downloaded."""


def _cache_dir() -> str:
    for var in ("TOKENMILL_CACHE_DIR", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _cache_path(blobpath: str) -> str:
    return os.path.join(_cache_dir(), hashlib.sha1(blobpath.encode()).hexdigest())


def read_file(blobpath: str) -> bytes:
    """Reads a local path, or downloads an http(s) URL (10 s timeout)."""
    if "://" not in blobpath:
        with open(blobpath, "rb", buffering=0) as f:
            return f.read()
    if not blobpath.startswith(("http://", "https://")):
        raise FileUnavailableError(f"cannot read {blobpath!r}: only local paths and http(s) URLs")
    import urllib.request

    try:
        with urllib.request.urlopen(blobpath, timeout=10) as resp:
            data: bytes = resp.read()
            return data
    except OSError as e:
        raise FileUnavailableError(
            f"{blobpath} is not cached on this machine and could not be downloaded ({e}).\n"
            f"Supply it by placing the file at {_cache_path(blobpath)} (the cache directory is "
            "$TOKENMILL_CACHE_DIR, $TIKTOKEN_CACHE_DIR or $DATA_GYM_CACHE_DIR), or build the "
            "encoding from a local copy with tokenmill.Encoding(..., "
            "mergeable_ranks=tokenmill.load.load_tiktoken_bpe('/path/to/file'))."
        ) from e


def check_hash(data: bytes, expected_hash: str) -> bool:
    return hashlib.sha256(data).hexdigest() == expected_hash


def read_file_cached(blobpath: str, expected_hash: str | None = None) -> bytes:
    """Like tiktoken's: local paths are read directly; URLs go through the cache."""
    if "://" not in blobpath:
        data = read_file(blobpath)
        if expected_hash is not None and not check_hash(data, expected_hash):
            raise ValueError(
                f"{blobpath}: contents do not match the expected SHA-256 {expected_hash}"
            )
        return data
    cache_dir = _cache_dir()
    if cache_dir == "":
        return read_file(blobpath)
    cache_path = _cache_path(blobpath)
    if os.path.exists(cache_path):
        with open(cache_path, "rb", buffering=0) as f:
            data = f.read()
        if expected_hash is None or check_hash(data, expected_hash):
            return data
    data = read_file(blobpath)
    if expected_hash is not None and not check_hash(data, expected_hash):
        raise ValueError(
            f"Hash mismatch for data downloaded from {blobpath} (expected {expected_hash}). "
            "This may indicate a corrupted download."
        )
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache_path}.{uuid.uuid4()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, cache_path)
    except OSError:
        pass
    return data


def load_tiktoken_bpe(tiktoken_bpe_file: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Reads a `.tiktoken` file into {token bytes: rank}. Malformed files raise ValueError
    naming the file and line (parsed in Rust)."""
    contents = read_file_cached(tiktoken_bpe_file, expected_hash)
    return CoreBPE.parse_tiktoken_bytes(contents, tiktoken_bpe_file)


def dump_tiktoken_bpe(bpe_ranks: dict[bytes, int], tiktoken_bpe_file: str) -> None:
    """Writes {token bytes: rank} as a `.tiktoken` file (readable by tiktoken)."""
    tmp = f"{tiktoken_bpe_file}.{uuid.uuid4()}.tmp"
    with open(tmp, "wb") as f:
        for token, rank in sorted(bpe_ranks.items(), key=lambda x: x[1]):
            f.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    os.replace(tmp, tiktoken_bpe_file)


def data_gym_to_mergeable_bpe_ranks(
    vocab_bpe_file: str,
    encoder_json_file: str,
    vocab_bpe_hash: str | None = None,
    encoder_json_hash: str | None = None,
) -> dict[bytes, int]:
    """GPT-2's original `vocab.bpe` + `encoder.json` to {token bytes: rank}, as tiktoken does."""
    rank_to_intbyte = [b for b in range(2**8) if chr(b).isprintable() and chr(b) != " "]
    data_gym_byte_to_byte = {chr(b): b for b in rank_to_intbyte}
    n = 0
    for b in range(2**8):
        if b not in rank_to_intbyte:
            rank_to_intbyte.append(b)
            data_gym_byte_to_byte[chr(2**8 + n)] = b
            n += 1
    if len(rank_to_intbyte) != 2**8:
        raise AssertionError("byte table is not a permutation")

    vocab_bpe_contents = read_file_cached(vocab_bpe_file, vocab_bpe_hash).decode()
    bpe_merges = [tuple(line.split()) for line in vocab_bpe_contents.split("\n")[1:-1]]

    def decode_data_gym(value: str) -> bytes:
        return bytes(data_gym_byte_to_byte[b] for b in value)

    bpe_ranks = {bytes([b]): i for i, b in enumerate(rank_to_intbyte)}
    n = len(bpe_ranks)
    for first, second in bpe_merges:
        bpe_ranks[decode_data_gym(first) + decode_data_gym(second)] = n
        n += 1

    encoder_json = json.loads(read_file_cached(encoder_json_file, encoder_json_hash))
    encoder_json_loaded = {decode_data_gym(k): v for k, v in encoder_json.items()}
    encoder_json_loaded.pop(b"<|endoftext|>", None)
    encoder_json_loaded.pop(b"<|startoftext|>", None)
    if bpe_ranks != encoder_json_loaded:
        raise ValueError(f"{vocab_bpe_file} and {encoder_json_file} disagree")
    return bpe_ranks
