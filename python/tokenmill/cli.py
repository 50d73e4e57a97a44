"""The `tokenmill` command."""

from __future__ import annotations

import argparse
import sys


def _train(argv: list[str]) -> int:
    from pathlib import Path

    from tokenmill._builtin_encodings import PATTERNS
    from tokenmill.train import train_bpe

    p = argparse.ArgumentParser(
        prog="tokenmill train",
        description="Train a byte-level BPE vocabulary on UTF-8 text files and write it as "
        "<name>.tiktoken (tiktoken), tokenizer.json (HF tokenizers / transformers) and "
        "tokenmill.json (pattern and special tokens) into --out.",
    )
    p.add_argument("files", nargs="+", type=Path, help="UTF-8 text files (streamed)")
    p.add_argument("--vocab-size", type=int, required=True, help="tokens in all, specials included")
    p.add_argument(
        "--pattern",
        default="gpt2-hf",
        help=f"pre-tokenizer: one of {', '.join(PATTERNS)} (default gpt2-hf), or a regex",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--special", action="append", default=[], help="a special token (repeatable)")
    p.add_argument("--min-frequency", type=int, default=0)
    p.add_argument("--max-token-length", type=int, default=None)
    p.add_argument(
        "--picky", type=float, default=None, metavar="T", help="Picky BPE with IoS threshold T"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--name", default="trained", help="encoding name (file name of .tiktoken)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    for f in args.files:
        if not f.is_file():
            p.error(f"{f}: no such file")
    named = args.pattern in PATTERNS
    try:
        enc = train_bpe(
            args.files,
            args.vocab_size,
            pattern=args.pattern if named else None,
            pat_str=None if named else args.pattern,
            special_tokens=args.special,
            min_frequency=args.min_frequency,
            max_token_length=args.max_token_length,
            picky_threshold=args.picky,
            show_progress=not args.no_progress,
            num_threads=args.threads,
            name=args.name,
        )
    except ValueError as e:
        print(f"tokenmill train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokenmill train: interrupted; nothing was written", file=sys.stderr)
        return 130
    paths = enc.save(args.out)
    s = enc.stats
    print(
        f"trained {enc.n_vocab} tokens ({len(enc.merges)} merges) on {int(s['bytes'])} bytes, "
        f"{int(s['distinct_pretokens'])} distinct pre-tokens, in "
        f"{s['count_seconds'] + s['merge_seconds']:.1f} s"
    )
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenmill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "bench",
        help="compare tokenmill with tiktoken and HF tokenizers on this machine",
        add_help=False,
    )
    sub.add_parser("train", help="train a byte-level BPE vocabulary on files", add_help=False)
    sub.add_parser(
        "models",
        help="build or list the small benchmark language models (needs torch)",
        add_help=False,
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from tokenmill import bench

        return bench.main(rest)
    if args.command == "train":
        return _train(rest)
    if args.command == "models":
        from tokenmill.models import cli as models_cli

        return models_cli.main(rest)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
