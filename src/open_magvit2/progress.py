"""The one progress bar of the package: tqdm on stderr, for the CLI and the library pipelines alike."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], total: int | None, desc: str, *, enabled: bool = True, unit: str = "it"
) -> Iterable[T]:
    """``items`` wrapped in a tqdm bar on stderr; ``items`` themselves when disabled or there is at most one step
    (so a one-image run prints no bar). ``total`` None means unknown (a bar without an end)."""
    if not enabled or (total is not None and total <= 1):
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True)
