"""What a user can get wrong, and the one line that says so: shared by the command line's error boundary
(``cli/__init__.py``) and the web app (``web/app.py``), so a bad input reads the same everywhere.

A user error is what bad arguments and files cause (``ValueError``, ``TypeError``, ``OSError`` such as a missing
file, a full disk or an unwritable folder), a missing extra (``ImportError``), or an input too large for the
machine (``MemoryError``, a device out of memory). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

import torch

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    OSError,
    ImportError,
    MemoryError,
    torch.cuda.OutOfMemoryError,
)
_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EACCES: "choose a location you can write to",
    errno.EPERM: "choose a location you can write to",
    errno.EROFS: "the file system is read-only; write elsewhere",
}


def describe_error(e: BaseException, *, out_of_memory: str = "out of memory",
                   paths: Mapping[str, str] | None = None) -> str:
    """One line for a user error: the message, or for a system error the file, the reason and what to do.

    ``out_of_memory``: the line for ``MemoryError`` and a device out of memory (each front end says what its user
    can change). ``paths``: text to replace in the message (the web app's temporary upload paths → file names).
    """
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        text = out_of_memory
    elif isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
        hint = _HINTS.get(e.errno or 0)
        text += f"; {hint}" if hint else ""
    else:
        text = str(e) or type(e).__name__
    for path, name in (paths or {}).items():
        text = text.replace(str(path), name)
    return " ".join(text.split())
