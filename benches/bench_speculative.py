"""Speculative decoding benchmark: tokenmill.speculative vs plain `model.generate` and HF prompt
lookup decoding, on the trained benchmark models (code-a, code-b) and held-out prompts.

Tasks (prompts from held-out CPython stdlib files the models never trained on):
- code: completion of a file after `--prompt-tokens` tokens cut at a line start;
- edit: a repetitive rewrite: a function, a comment, then the function's first line again
  (the continuation largely copies the prompt);
- text: docstrings/comments: the first part of a long docstring, continued.

Every method decodes greedily; tokenmill's output is checked token for token against
`model.generate`'s. Mean accepted tokens per forward is hardware-independent; wall-clock ratios
are measured in one run, methods interleaved per prompt.

    python benches/bench_speculative.py [--models code-a code-b] [--prompts 8] [--new 96]
        [--threads 1] [--warm model|task] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

DRAFTERS = ("recycling", "lookup", "trigram", "all")


def _prompts(tok: Any, task: str, n: int, prompt_tokens: int, seed: int = 0) -> list[list[int]]:
    import random

    from tokenmill.models import heldout_texts

    rng = random.Random(seed)
    files = [t for _, t in heldout_texts()]
    rng.shuffle(files)
    out: list[list[int]] = []
    for text in files:
        if len(out) >= n:
            break
        if task == "code":
            ids = tok.encode_ids(text)
            if len(ids) < prompt_tokens + 200:
                continue
            # Cut at a line start somewhere past the first prompt_tokens tokens.
            start = rng.randrange(0, len(ids) - prompt_tokens - 150)
            prefix = tok.decode(ids[: start + prompt_tokens])
            cut = prefix.rfind("\n")
            ids = tok.encode_ids(prefix[: cut + 1])
            out.append(ids[-prompt_tokens:])
        elif task == "edit":
            funcs = re.findall(r"\n(    def [^\n]+\n(?:(?:        [^\n]*)?\n){4,30})", text)
            funcs = [f for f in funcs if 60 <= len(tok.encode_ids(f)) <= prompt_tokens - 30]
            if not funcs:
                continue
            f = rng.choice(funcs)
            first = f.split("\n", 1)[0]
            prompt = f + "\n    # Same as above, with clearer names.\n" + first + "\n"
            out.append(tok.encode_ids(prompt)[-prompt_tokens:])
        elif task == "text":
            docs = re.findall(r'"""(.{300,}?)"""', text, flags=re.S)
            if not docs:
                continue
            d = rng.choice(docs)
            ids = tok.encode_ids('"""' + d)
            out.append(ids[: min(len(ids) // 2, prompt_tokens)])
        else:
            raise ValueError(task)
    return out


def _time(f: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tokenmill import speculative as sp
    from tokenmill.models import load

    model, tok = load(name)
    info = sp._model.inspect_model(model, 256)
    curve = sp.measure_cost_curve(model, info, max_nodes=sp.AUTO_MAX_NODES)
    res: dict[str, Any] = {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "cost_curve": {n: curve[n - 1] / curve[0] for n in (1, 2, 4, 8, 16, 32, 64)},
        "forward_1_ms": curve[0] * 1e3,
        "tasks": {},
    }
    # tm_budget0: tokenmill's loop without drafts (its overhead); tm_all63: the combined drafter
    # with a fixed 63-draft tree, the acceptance a GPU (flat cost curve) would see.
    methods = ["plain", "hf_lookup", "tm_budget0"] + [f"tm_{d}" for d in DRAFTERS] + ["tm_all63"]

    def fresh() -> dict[str, Any]:
        drafters = {d: sp.Drafter(info.vocab_size, d) for d in DRAFTERS}
        drafters["all63"] = sp.Drafter(info.vocab_size, "all")
        return drafters

    # The persistent state (Token Recycling's matrix, the tri-gram table) is kept as a
    # long-running server keeps it: with --warm model (default) across the three tasks of a
    # model, as Token Recycling's paper keeps its matrix across all of Spec-Bench; with
    # --warm task, fresh drafters per task (the first runs' setting). Lookup keeps no state.
    drafters = fresh()
    for task in ("code", "edit", "text"):
        prompts = _prompts(tok, task, args.prompts, args.prompt_tokens)
        if args.warm == "task":
            drafters = fresh()
        # Warm-up: one prompt of the task, not measured (the measured prompts then keep
        # training the drafters, as they would in use).
        for drafter in drafters.values():
            sp.generate(model, prompts[0], max_new_tokens=args.new, drafter=drafter)
        acc: dict[str, dict[str, float]] = {
            m: {"time": 0.0, "tokens": 0, "steps": 0, "mismatch": 0} for m in methods
        }
        breakdown = {
            d: {"drafting": 0.0, "forward": 0.0, "verification": 0.0, "cache": 0.0, "rust": 0.0}
            for d in DRAFTERS
        }
        for p in prompts[1:]:
            ids = torch.tensor([p])
            mask = torch.ones_like(ids)
            kw: dict[str, Any] = {
                "attention_mask": mask,
                "max_new_tokens": args.new,
                "min_new_tokens": args.new,
                "do_sample": False,
                "pad_token_id": 0,
            }
            with torch.inference_mode():
                ref, t = _time(lambda: model.generate(ids, **kw))  # noqa: B023
                acc["plain"]["time"] += t
                acc["plain"]["tokens"] += ref.shape[1] - ids.shape[1]
                acc["plain"]["steps"] += ref.shape[1] - ids.shape[1]
                out, t = _time(
                    lambda: model.generate(ids, prompt_lookup_num_tokens=10, **kw)  # noqa: B023
                )
                acc["hf_lookup"]["time"] += t
                acc["hf_lookup"]["tokens"] += out.shape[1] - ids.shape[1]
                acc["hf_lookup"]["mismatch"] += int(not torch.equal(out, ref))
            for m in methods[2:]:
                d = m[3:]
                budget: int | str = {"budget0": 0, "all63": 63}.get(d, "auto")
                r, t = _time(
                    lambda: sp.generate(
                        model,
                        p,  # noqa: B023
                        max_new_tokens=args.new,
                        drafter=drafters.get(d, "all"),  # noqa: B023
                        tree_budget=budget,  # noqa: B023
                    )
                )
                acc[m]["time"] += t
                acc[m]["tokens"] += len(r.tokens)
                acc[m]["steps"] += r.stats.steps
                acc[m]["mismatch"] += int(not torch.equal(r.sequences, ref))
                if d in breakdown:
                    for k in breakdown[d]:
                        breakdown[d][k] += getattr(r.stats, k)
        plain = acc["plain"]["time"]
        hf = acc["hf_lookup"]["time"]
        rows = {}
        for m in methods:
            a = acc[m]
            rows[m] = {
                "tokens_per_forward": a["tokens"] / a["steps"] if a["steps"] else None,
                "speedup_vs_plain": plain / a["time"],
                "speedup_vs_hf_lookup": hf / a["time"],
                "tokens_per_s": a["tokens"] / a["time"],
                "mismatches": a["mismatch"],
            }
        for d in DRAFTERS:
            steps = acc[f"tm_{d}"]["steps"]
            rows[f"tm_{d}"]["per_step_ms"] = {k: v / steps * 1e3 for k, v in breakdown[d].items()}
        res["tasks"][task] = {"prompts": len(prompts) - 1, "methods": rows}
        print(name, task, json.dumps(rows, indent=None, default=float), flush=True)
    return res


LABELS = {
    "plain": "`model.generate` (greedy)",
    "hf_lookup": "HF prompt lookup (`prompt_lookup_num_tokens=10`)",
    "tm_budget0": "tokenmill, no drafts (loop overhead)",
    "tm_recycling": "tokenmill recycling, auto",
    "tm_lookup": "tokenmill lookup, auto",
    "tm_trigram": "tokenmill trigram, auto",
    "tm_all": "tokenmill combined, auto",
    "tm_all63": "tokenmill combined, 63 drafts fixed",
}


def markdown(out: dict[str, Any]) -> str:
    """The results as the tables of docs/speculative.md."""
    lines = []
    for m in out["models"]:
        curve = ", ".join(f"{n}: {v:.2f}x" for n, v in m["cost_curve"].items())
        lines += [
            f"### {m['model']} ({m['params'] / 1e6:.1f}M parameters)",
            "",
            f"Forward cost curve (n tree tokens vs 1, incl. verification work; 1 token = "
            f"{m['forward_1_ms']:.2f} ms): {curve}.",
            "",
            "| method | code: tok/fwd | x plain | x HF lookup | edit: tok/fwd | x plain "
            "| x HF lookup | text: tok/fwd | x plain | x HF lookup |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        tasks = m["tasks"]
        for meth, label in LABELS.items():
            cells = []
            for t in ("code", "edit", "text"):
                r = tasks[t]["methods"][meth]
                tpf = r["tokens_per_forward"]
                cells += [
                    "-" if tpf is None else f"{tpf:.2f}",
                    f"{r['speedup_vs_plain']:.2f}",
                    f"{r['speedup_vs_hf_lookup']:.2f}",
                ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Per-step time (ms, code task): drafting / forward / verification / cache / "
            "of which inside Rust; then everything outside the forward as a share of it:",
            "",
        ]
        for d in DRAFTERS:
            b = tasks["code"]["methods"][f"tm_{d}"]["per_step_ms"]
            outside = b["drafting"] + b["verification"] + b["cache"]
            lines.append(
                f"- {d}: {b['drafting']:.3f} / {b['forward']:.2f} / {b['verification']:.3f} / "
                f"{b['cache']:.3f} / {b['rust']:.3f}; outside the forward {outside:.3f} ms = "
                f"{100 * outside / b['forward']:.1f}%"
            )
        mism = sum(r["mismatches"] for t in tasks.values() for r in t["methods"].values())
        lines += ["", f"Outputs differing from `model.generate`: {mism}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["code-a", "code-b"])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--warm",
        choices=("model", "task"),
        default="model",
        help="keep the drafters' learnt state across a model's tasks, or start fresh per task",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path, help="also write the tables as markdown here")
    args = ap.parse_args()
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    out = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "warm": args.warm,
        "new_tokens": args.new,
        "prompt_tokens": args.prompt_tokens,
        "models": [bench_model(m, args) for m in args.models],
    }
    text = json.dumps(out, indent=1, default=float)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    if args.markdown:
        args.markdown.write_text(markdown(out))


if __name__ == "__main__":
    main()
