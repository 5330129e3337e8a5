"""The ``open-magvit2`` command line: a thin layer over the library. Each module in ``_GROUPS`` registers its
subcommands; :func:`main` is the one error boundary for all of them.

The boundary turns what a user can cause (``errors.USER_ERRORS``: bad arguments and files, a missing extra, an
input too large for the memory) into one line on stderr (``errors.describe_error``, as in the web app) and exit
status 2 (130 when interrupted), and removes the output folders the failed command created while they are still
empty. Set ``OPEN_MAGVIT2_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from open_magvit2.cli import demo, evaluate, export, generate, serve, tokenizer, train, video
from open_magvit2.cli.common import begin_command, remove_created_outputs
from open_magvit2.cpu_memory import keep_freed_memory_if_requested
from open_magvit2.errors import USER_ERRORS, describe_error

_GROUPS = (demo, tokenizer, video, generate, evaluate, train, export, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="open-magvit2",
        description="Open-MAGVIT2 tokenizers and generators: reconstruct, tokenize, generate, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        group.register(sub)
    return parser


OUT_OF_MEMORY = "out of memory; lower --batch-size or --size (or pass --tile for large videos), or use --device cpu " \
    "when the GPU is too small"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    begin_command()
    try:
        keep_freed_memory_if_requested()  # OPEN_MAGVIT2_CPU_MEMORY=keep (cpu_memory.py)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        remove_created_outputs()
        print(f"open-magvit2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        remove_created_outputs()
        if os.environ.get("OPEN_MAGVIT2_DEBUG"):
            raise
        message = describe_error(e, out_of_memory=OUT_OF_MEMORY)
        print(f"open-magvit2 {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
