"""`tokenmill models build|list`."""

from __future__ import annotations

import argparse

from tokenmill.models.recipes import RECIPES
from tokenmill.models.trainer import build, cache_dir, list_models


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tokenmill models",
        description="Small causal LMs trained on CPython's standard library, cached in "
        f"{cache_dir()} (set $TOKENMILL_MODELS_DIR to move it).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="train the named models (default: all) unless cached")
    b.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(sorted(RECIPES))}")
    b.add_argument("--force", action="store_true", help="retrain even if cached")
    b.add_argument("--no-progress", action="store_true", help="log lines instead of a bar")
    sub.add_parser("list", help="show cached models with their held-out bits per byte")
    args = parser.parse_args(argv)

    if args.action == "build":
        unknown = [n for n in args.names if n not in RECIPES]
        if unknown:
            parser.error(
                f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(RECIPES))}"
            )
        for path in build(args.names or None, force=args.force, show_progress=not args.no_progress):
            print(path)
        return 0

    rows = list_models()
    if not rows:
        print(f"no models in {cache_dir()}; run `tokenmill models build`")
        return 0
    print(f"{'name':8} {'recipe':12} {'params':>7} {'bits/byte':>9} {'loss':>7}  status")
    for m in rows:
        status = "current" if m["current"] else "stale (recipe changed)"
        print(
            f"{m['name']:8} {m['key']:12} {m['parameters'] / 1e6:6.2f}M "
            f"{m['heldout']['bits_per_byte']:9.4f} {m['heldout']['loss']:7.4f}  {status}"
        )
    return 0
