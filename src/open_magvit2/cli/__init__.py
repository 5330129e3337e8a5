"""The ``open-magvit2`` command line: a thin layer over the library. Each module in ``_GROUPS`` registers its
subcommands; :func:`main` is the one error boundary for all of them.

The boundary turns what a user can cause (bad arguments and files: ``ValueError``, ``TypeError``, ``OSError``
such as a missing file, a full disk or an unwritable folder; a missing extra: ``ImportError``; device memory) into
one line on stderr and exit status 2 (130 when interrupted), and removes the output folders the failed command
created while they are still empty. Set ``OPEN_MAGVIT2_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

import torch

from open_magvit2.cli import demo, evaluate, export, generate, serve, tokenizer, train, video
from open_magvit2.cli.common import begin_command, remove_created_outputs

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


USER_ERRORS = (ValueError, TypeError, OSError, ImportError, torch.cuda.OutOfMemoryError)
_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EACCES: "choose a location you can write to",
    errno.EPERM: "choose a location you can write to",
    errno.EROFS: "the file system is read-only; write elsewhere",
}


def describe(e: BaseException) -> str:
    """One line for a user error: the message, or for a system error the file, the reason and what to do."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "out of device memory; lower --batch-size (or pass --tile for large videos), or use --device cpu"
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
        hint = _HINTS.get(e.errno or 0)
        text += f"; {hint}" if hint else ""
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    begin_command()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        remove_created_outputs()
        print(f"open-magvit2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        remove_created_outputs()
        if os.environ.get("OPEN_MAGVIT2_DEBUG"):
            raise
        print(f"open-magvit2 {args.command}: error: {describe(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
