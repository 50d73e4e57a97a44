"""Byte-level LM benchmarks on the trained benchmark models (code-a, code-b) and held-out code.

1. Prompt boundary: held-out code cut at random byte positions, stratified (mid-token, token
   boundary, mid-identifier, after whitespace); naive token conditioning vs token healing vs
   tokenmill exact, on next-byte log-loss and accuracy, and on exact match of the greedy
   completion to the end of the line.
2. Ensembles: bits per byte of code-a, code-b, their mixture and product.
3. Cost: forwards per byte, tokenmill CPU share, bytes per second.

    python benches/bench_bytelm.py [--cuts 20] [--bpb-bytes 300] [--bpb-files 3] [--context 400]

Prints Markdown tables; numbers in docs/bytelm.md come from this script.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

LN2 = math.log(2)
KINDS = ("mid-token", "token boundary", "mid-identifier", "after whitespace")


def first_byte_dist(
    logp: np.ndarray, token_bytes: dict[int, bytes], eos: int, skip: bytes = b""
) -> np.ndarray:
    """Next-byte distribution from a next-token one by the first byte after `skip` of each
    token whose bytes start with `skip` (token healing's constraint; naive: skip = b"")."""
    out = np.zeros(257)
    for t, b in token_bytes.items():
        if t >= logp.shape[0] or not b.startswith(skip) or len(b) <= len(skip):
            continue
        out[b[len(skip)]] += math.exp(logp[t])
    if not skip and eos < logp.shape[0]:
        out[256] += math.exp(logp[eos])
    return out


class Baselines:
    """Naive token conditioning and token healing, for one model."""

    def __init__(self, model: Any, tok: Any, bos: int, eos: int) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.enc = tok.to_encoding()
        self.bos, self.eos = bos, eos
        self.token_bytes = {i: b for b, i in self.enc._mergeable_ranks.items()}

    def _logp(self, ids: list[int]) -> np.ndarray:
        with self.torch.no_grad():
            logits = self.model(self.torch.tensor([[self.bos, *ids]])).logits[0, -1]
        return self.torch.log_softmax(logits.double(), -1).numpy()

    def naive(self, prompt: bytes) -> np.ndarray:
        ids = self.enc.encode_ordinary(prompt.decode("utf-8", "replace"))
        d = first_byte_dist(self._logp(ids), self.token_bytes, self.eos)
        return d / d.sum()

    def healing(self, prompt: bytes) -> np.ndarray:
        ids = self.enc.encode_ordinary(prompt.decode("utf-8", "replace"))
        if not ids:
            return self.naive(prompt)
        back = self.token_bytes[ids[-1]]
        lp = self._logp(ids[:-1])
        d = first_byte_dist(lp, self.token_bytes, self.eos, back)
        # The backed-off token itself: its own next-token distribution carries the byte.
        d += math.exp(lp[ids[-1]]) * first_byte_dist(self._logp(ids), self.token_bytes, self.eos)
        return d / d.sum()

    def greedy_line(self, prompt: bytes, heal: bool, max_new: int) -> bytes:
        ids = self.enc.encode_ordinary(prompt.decode("utf-8", "replace"))
        out = b""
        if heal and ids:
            back = self.token_bytes[ids.pop()]
            lp = self._logp(ids)
            ok = [t for t, b in self.token_bytes.items() if b.startswith(back)]
            t = max(ok, key=lambda t: lp[t])
            ids.append(t)
            out = self.token_bytes[t][len(back) :]
        for _ in range(max_new):
            if b"\n" in out:
                break
            t = int(np.argmax(self._logp(ids)))
            if t == self.eos or t not in self.token_bytes:
                break
            ids.append(t)
            out += self.token_bytes[t]
        return out.split(b"\n")[0]


def cut_points(text: bytes, enc: Any, rng: random.Random, per_kind: int) -> dict[str, list[int]]:
    ids = enc.encode_ordinary(text.decode())
    bounds = set()
    pos = 0
    for t in ids:
        pos += len(enc.decode_single_token_bytes(t))
        bounds.add(pos)
    ident = re.compile(rb"[A-Za-z0-9_]")
    kinds: dict[str, list[int]] = {k: [] for k in KINDS}
    for c in range(8, len(text) - 1):
        if (text[c] & 0xC0) == 0x80:
            continue
        if c in bounds:
            kinds["token boundary"].append(c)
        else:
            kinds["mid-token"].append(c)
        if ident.match(text[c - 1 : c]) and ident.match(text[c : c + 1]):
            kinds["mid-identifier"].append(c)
        if text[c - 1 : c] in (b" ", b"\n", b"\t"):
            kinds["after whitespace"].append(c)
    return {k: rng.sample(v, min(per_kind, len(v))) for k, v in kinds.items()}


def load(name: str, tiny: bool) -> tuple[Any, Any]:
    if not tiny:
        from tokenmill.models import load as load_model

        return load_model(name)
    # Smoke-testing this script only: random models, numbers mean nothing.
    from tokenmill.models import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer(1024, "gpt2-hf" if name == "code-a" else "llama3")
    eos = tok.token_to_id("<|endoftext|>")
    arch = "llama" if name == "code-a" else "gpt2"
    return tiny_causal_lm(tok.get_vocab_size(), arch, eos_token_id=eos), tok


def bench_boundary(name: str, args: argparse.Namespace) -> list[str]:
    from tokenmill.bytelm import ByteLM
    from tokenmill.models import heldout_texts

    model, tok = load(name, args.tiny)
    eos = tok.token_to_id("<|endoftext|>")
    lm = ByteLM(model, tok)
    base = Baselines(model, tok, lm.bos_token_id, eos)
    rng = random.Random(args.seed)
    files = [t.encode() for _, t in heldout_texts() if len(t) > 2000]
    rng.shuffle(files)
    stats: dict[tuple[str, str], list[tuple[float, bool, bool]]] = {}
    per_kind = max(1, args.cuts // len(files[: args.files]))
    for text in files[: args.files]:
        cuts = cut_points(text[: args.context * 4], base.enc, rng, per_kind)
        for kind, positions in cuts.items():
            for c in positions:
                prompt = text[max(0, c - args.context) : c]
                truth = text[c]
                line = text[c:].split(b"\n")[0]
                fresh = ByteLM(model, tok)
                dists = {
                    "naive": base.naive(prompt),
                    "token healing": base.healing(prompt),
                    "tokenmill exact": np.exp(fresh.next_byte_logprobs(prompt)),
                }
                lines = {
                    "naive": base.greedy_line(prompt, False, args.max_new),
                    "token healing": base.greedy_line(prompt, True, args.max_new),
                    "tokenmill exact": fresh.complete(
                        prompt, args.max_new, temperature=0, stop=[b"\n"]
                    ).text.split(b"\n")[0],
                }
                for method, d in dists.items():
                    p = max(float(d[truth]), 1e-300)
                    stats.setdefault((kind, method), []).append(
                        (-math.log(p) / LN2, int(np.argmax(d)) == truth, lines[method] == line)
                    )
    rows = [
        f"| {kind} | {method} | {len(v)} | {np.mean([s[0] for s in v]):.3f} | "
        f"{100 * np.mean([s[1] for s in v]):.0f}% | {100 * np.mean([s[2] for s in v]):.0f}% |"
        for (kind, method), v in stats.items()
    ]
    head = [
        f"#### {name}",
        "",
        "| cut | method | n | next-byte log-loss (bits) | next-byte accuracy | greedy line exact |",
        "|---|---|---|---|---|---|",
    ]
    return head + rows + [""]


def bench_bpb(args: argparse.Namespace) -> list[str]:
    from tokenmill.bytelm import EOS, ByteLM
    from tokenmill.models import heldout_texts

    lms = {}
    for name in args.bpb_models.split(","):
        model, tok = load(name, args.tiny)
        lms[name] = ByteLM(model, tok)
    rng = random.Random(args.seed + 1)
    files = [t.encode() for _, t in heldout_texts() if len(t) > 2000]
    rng.shuffle(files)
    dists: dict[str, list[np.ndarray]] = {n: [] for n in lms}
    truth: list[int] = []
    cost: dict[str, list[float]] = {n: [0.0, 0.0, 0.0, 0.0] for n in lms}
    for text in files[: args.bpb_files]:
        start = rng.randrange(0, len(text) - args.bpb_bytes)
        chunk = text[start : start + args.bpb_bytes]
        # Start at a line start so that both models see a natural prefix.
        chunk = chunk[chunk.index(b"\n") + 1 :] if b"\n" in chunk else chunk
        for name, lm in lms.items():
            f0, s0 = lm.forwards, lm.forward_seconds
            t0 = time.perf_counter()
            for k in range(len(chunk)):
                dists[name].append(lm.next_byte_logprobs(chunk[:k]))
            cost[name][0] += time.perf_counter() - t0
            cost[name][1] += lm.forward_seconds - s0
            cost[name][2] += lm.forwards - f0
            cost[name][3] += len(chunk)
        truth.extend(chunk)
    assert EOS == 256
    t = np.array(truth)
    lp = {n: np.stack(v)[np.arange(len(t)), t] for n, v in dists.items()}
    res: dict[str, float] = {n: -lp[n].mean() / LN2 for n in lms}
    if len(lms) == 2:
        a, b = (np.stack(dists[n]) for n in lms)
        w = 0.5
        mix = np.logaddexp(a + math.log(w), b + math.log(1 - w))
        res[f"mixture (w={w})"] = -mix[np.arange(len(t)), t].mean() / LN2
        prod = w * a + (1 - w) * b
        prod = prod - np.logaddexp.reduce(prod, axis=1, keepdims=True)
        res[f"product (w={w})"] = -prod[np.arange(len(t)), t].mean() / LN2
    out = [
        f"{len(t)} bytes from {args.bpb_files} held-out files.",
        "",
        "| model | bits per byte |",
        "|---|---|",
    ]
    out += [f"| {k} | {v:.4f} |" for k, v in res.items()]
    out += [
        "",
        "| model | forwards per byte | tokenmill + Python share of time | bytes per second |",
        "|---|---|---|---|",
    ]
    for n, (total, fwd, forwards, nbytes) in cost.items():
        out.append(
            f"| {n} | {forwards / nbytes:.2f} | {100 * (total - fwd) / total:.0f}% | "
            f"{nbytes / total:.1f} |"
        )
    return [*out, ""]


def main() -> None:
    import torch
    import transformers

    ap = argparse.ArgumentParser()
    ap.add_argument("--cuts", type=int, default=24, help="cuts per kind and model")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--context", type=int, default=400, help="prompt bytes before the cut")
    ap.add_argument("--max-new", type=int, default=24)
    ap.add_argument("--bpb-bytes", type=int, default=300)
    ap.add_argument("--bpb-files", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-boundary", action="store_true")
    ap.add_argument("--skip-bpb", action="store_true")
    ap.add_argument("--bpb-models", default="code-a,code-b")
    ap.add_argument("--models", default="code-a,code-b", help="models for the boundary benchmark")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="random tiny models (smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({args.threads} thread), transformers {transformers.__version__}, "
        f"python {platform.python_version()}\n"
    )
    if not args.skip_boundary:
        for name in args.models.split(","):
            print("\n".join(bench_boundary(name, args)), flush=True)
    if not args.skip_bpb:
        print("\n".join(bench_bpb(args)))


if __name__ == "__main__":
    main()
