"""The ``open-magvit2`` command line: a thin layer over the library. Each module registers its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from open_magvit2.cli import evaluate, generate, tokenizer, train, video

_GROUPS = (tokenizer, video, generate, evaluate, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="open-magvit2",
        description="Open-MAGVIT2 tokenizers and generators: reconstruct, tokenize, generate, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as e:  # user errors: one clear line, no traceback
        print(f"open-magvit2 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
