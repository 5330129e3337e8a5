"""Files in and out: atomic writes, input lists from files/folders/globs, and output checks made before any work.

Every checkpoint, state file, report, image and token file goes through :func:`atomic_write`, so an interrupted or
failed write (a full disk, a kill) never leaves a half-written file under the final name; folders written as a
whole (exports, the demo build's data) go through :func:`atomic_write_dir`.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

_GLOB_MAGIC = ("*", "?", "[")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash or an exception mid-write never leaves a half-written ``path``; the temporary file is removed.
    Parent folders are created. The file gets the usual permissions (``0o666`` less the umask), not the
    ``0o600`` of a temporary file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_dir(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on an empty temporary folder beside ``path``, then rename it to ``path``, which must not
    exist or be an empty folder: a crash or an exception mid-write never leaves a half-written ``path``, and the
    temporary folder is removed (one left by a killed writer, ``.<name>.partial``, is cleared first). Parent
    folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
        if path.is_dir():
            path.rmdir()  # empty, or this raises and nothing is replaced
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """``np.save`` through :func:`atomic_write` (a file object: ``np.save`` would append ``.npy`` to a path)."""

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, save)


def read_npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the ``.npy`` whose bytes ``f`` is at the start of; ``f`` is left at the
    data. Reads nothing else, so it serves streaming readers of arrays larger than memory."""
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy format version {version}")
    return read(f)


# ---- inputs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    """One input: ``path`` to read, and ``name``, the relative POSIX path that names its outputs (relative to the
    folder or glob root it was found under; the bare file name for a file given by itself)."""

    path: Path
    name: str

    @property
    def stem(self) -> str:
        """``name`` without its suffix: ``sub/cat.jpg`` → ``sub/cat`` (outputs are ``<stem>_recon.png`` etc.)."""
        return Path(self.name).with_suffix("").as_posix()


def _visible(rel: Path) -> bool:
    return not any(part.startswith(".") for part in rel.parts)


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: ``data/**/x*.png`` → ``data``."""
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if any(c in part for c in _GLOB_MAGIC):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def find_files(
    specs: Sequence[str | os.PathLike[str]], suffixes: Sequence[str], what: str, *, unique_stems: bool = True
) -> list[InputFile]:
    """Expand files, folders (recursively) and globs (``**`` recurses; quote them so the shell does not expand
    them) into a list of :class:`InputFile`.

    A folder or glob contributes its files with one of ``suffixes`` (any case), hidden files and folders skipped,
    sorted by relative path; a file named by itself is taken whatever its suffix. A path given twice counts once.
    Raises ``FileNotFoundError`` for a name that is neither, ``ValueError`` when nothing is found or (with
    ``unique_stems``) when two inputs would name the same outputs (``a/x.png`` and ``b/x.jpg`` both give ``x``).
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    suffixes = tuple(s.lower() for s in suffixes)
    found: list[InputFile] = []
    for spec in specs:
        text = os.fspath(spec)
        p = Path(text).expanduser()
        if p.is_file():
            found.append(InputFile(p, p.name))
            continue
        if p.is_dir():
            root, candidates = p, p.rglob("*")
        elif any(c in text for c in _GLOB_MAGIC):
            pattern = os.path.expanduser(text)
            root, candidates = _glob_root(pattern), (Path(m) for m in glob.glob(pattern, recursive=True))
        else:
            raise FileNotFoundError(f"{text}: no such {what} file or folder (nor a glob that matches files)")
        batch = sorted(
            (InputFile(c, c.relative_to(root).as_posix()) for c in candidates
             if c.is_file() and c.suffix.lower() in suffixes and _visible(c.relative_to(root))),
            key=lambda f: f.name,
        )
        if not batch:
            raise ValueError(f"no {what} files ({', '.join(suffixes)}) found in {text}")
        found += batch
    return _dedupe(found, unique_stems)


def _dedupe(files: list[InputFile], unique_stems: bool) -> list[InputFile]:
    seen_paths: set[Path] = set()
    by_stem: dict[str, InputFile] = {}
    out = []
    for f in files:
        real = f.path.resolve()
        if real in seen_paths:
            continue
        seen_paths.add(real)
        if unique_stems and f.stem in by_stem:
            raise ValueError(
                f"{by_stem[f.stem].path} and {f.path} would write outputs of the same name ({f.stem}); pass the "
                "folder that holds both (outputs then keep its sub-folders) or rename one"
            )
        by_stem[f.stem] = f
        out.append(f)
    return out


# ---- outputs -----------------------------------------------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_location(path: Path, what: str) -> None:
    base = _nearest_existing(path.parent if path.parent != path else path)
    if not base.is_dir():
        raise NotADirectoryError(f"{what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: {base} is not writable; choose another location")


def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Fail now, before any work, if ``path`` cannot become a folder we can write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{what} {path} is an existing file; name a folder")
    _check_writable_location(path / "x", what)
    return path


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """Fail now, before any work, if ``path`` cannot be written as a file (a folder there, an unwritable parent)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is an existing folder; name a file")
    _check_writable_location(path, what)
    return path
