"""The batch stream every trainer reads: an endless, resumable iterator over the epochs of one data source.

A source (an image folder, WebDataset shards, a video folder) says how many batch *positions* each epoch has on
this rank and builds a DataLoader that yields them in order, from any position on. :class:`BatchStream` walks
the epochs, counts the positions it has handed out, and keeps the bad-sample counters; its
:meth:`~BatchStream.state_dict` (epoch, position, counters: plain ints, strings and lists) is all a checkpoint
needs, because every order and every random choice is recomputed from (seed, epoch, sample) (``sampler.py``).

Bad samples (a file that does not decode) are decided in the DataLoader workers but counted here, in the main
process: each batch carries the keys it lost in ``"bad"``, so the counters survive worker processes and land in
the state dict. A batch that lost samples is smaller; a batch that lost all of them is skipped (its position still
counts, so a resumed run skips it too). Above ``max_bad_fraction`` of the samples seen (checked once
``min_samples`` were seen, and at every epoch end) the stream raises ``ValueError`` naming some of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from open_magvit2.data.sampler import batches_per_rank, rank_batches

log = logging.getLogger("open_magvit2.data")

MAX_BAD_FRACTION = 0.01  # issue 8 item 6: above 1% bad samples the run stops
MIN_SAMPLES = 100  # ... judged once this many were seen (and at every epoch end)
MAX_EXAMPLES = 5  # bad keys kept for the error message


@dataclass(frozen=True)
class Sample:
    """One decoded sample or the reason it could not be decoded (``pixels`` None, ``error`` set).

    ``pixels``: float32 (3, S, S) or (3, T, S, S) in [−1, 1]. ``position``: the batch position in its epoch.
    """

    key: str
    label: int
    position: int
    pixels: Tensor | None = None
    error: str | None = None


def describe(err: BaseException) -> str:
    """The reason a sample is bad, in one line (``Sample.error``, the warnings and the error above the limit)."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Samples of one batch position → {"pixels", "label", "key", "bad", "position", "slots"} (runs in workers)."""
    good = [s for s in samples if s.error is None]
    return {
        "pixels": torch.stack([s.pixels for s in good]) if good else None,  # type: ignore[misc]
        "label": torch.tensor([s.label for s in good], dtype=torch.int64),
        "key": [s.key for s in good],
        "bad": [[s.key, s.error] for s in samples if s.error is not None],
        "position": samples[0].position,
        "slots": len(samples),
    }


def skipped(position: int) -> dict[str, Any]:
    """A placeholder for a position a resumed epoch already consumed (WebDataset lanes; no decoding)."""
    return {"position": position, "skipped": True}


def identity(x: Any) -> Any:
    return x


def make_loader(
    dataset: Dataset[Any] | IterableDataset[Any],
    *,
    num_workers: int,
    pin_memory: bool,
    batch_sampler: Iterable[list[Any]] | None = None,
    collate_fn: Callable[[Any], Any] = collate,
) -> DataLoader[Any]:
    """One epoch's DataLoader. Workers are not persistent: each epoch (or resume) starts them afresh.

    It gets its own ``generator``: a DataLoader without one draws its workers' base seed from the global torch
    RNG at every ``iter()``, which would shift the trainer's RNG stream at each epoch start and each resume.
    """
    return DataLoader(
        dataset,
        generator=torch.Generator().manual_seed(0),  # the workers' seeds; nothing here draws from them
        batch_size=None if batch_sampler is None else 1,
        batch_sampler=batch_sampler,  # type: ignore[arg-type]
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
    )


class Source(Protocol):
    """What :class:`BatchStream` needs from a data source."""

    field: str  # "image" or "video": the batch key of the pixels
    num_samples: int
    class_names: tuple[str, ...] | None

    def batches_in_epoch(self, epoch: int) -> int: ...  # batch positions on this rank
    def samples_in_epoch(self, epoch: int) -> int: ...  # samples kept over all ranks
    def loader(self, epoch: int, start: int, *, num_workers: int, pin_memory: bool) -> Iterable[dict[str, Any]]: ...
    def fingerprint(self) -> dict[str, Any]: ...  # what a resumed run must share


class BatchStream:
    """Endless iterator of training batches; ``state_dict``/``load_state_dict`` resume it exactly.

    Each batch: ``{"image": float32 (B, 3, S, S) | "video": float32 (B, 3, T, S, S), in [−1, 1]; "label": int64
    (B,); "key": list[str]}``. B is the batch size unless samples were bad. Close the stream (or use it as a
    context manager) to stop its DataLoader workers.
    """

    def __init__(
        self,
        source: Source,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        max_bad_fraction: float = MAX_BAD_FRACTION,
        min_samples: int = MIN_SAMPLES,
    ) -> None:
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.source, self.num_workers, self.pin_memory = source, num_workers, pin_memory
        self.max_bad_fraction, self.min_samples = max_bad_fraction, min_samples
        self._epoch, self._position, self._seen, self._bad = 0, 0, 0, 0
        self._examples: list[str] = []
        self._gen: Iterator[dict[str, Any]] | None = None

    # ---- what the training loop reads ---------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch of the last batch handed out (0-based); it moves on when the next epoch's first batch does."""
        return self._epoch

    @property
    def batches_per_epoch(self) -> int:
        """Batch positions per epoch on this rank (the same on every rank); WebDataset: of the current epoch."""
        return self.source.batches_in_epoch(self._epoch)

    @property
    def samples_per_epoch(self) -> int:
        """Samples per epoch over all ranks after drop-last; WebDataset: of the current epoch."""
        return self.source.samples_in_epoch(self._epoch)

    @property
    def num_samples(self) -> int:
        """Samples in the source (before drop-last)."""
        return self.source.num_samples

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """``class_names[label]`` for folder sources (write them to ``classes.json``); None for shards."""
        return self.source.class_names

    @property
    def bad_samples(self) -> int:
        return self._bad

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._gen is None:
            self._gen = self._batches()
        try:
            return next(self._gen)
        except BaseException:  # e.g. too many bad samples: a later next() restarts here, never stops the loop
            self.close()
            raise

    # ---- resume ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain values: where the stream is, its bad-sample counters, and the settings a resume must share.

        Epoch and position are the same on every rank (unless a whole batch of one rank was bad); the counters
        are this rank's.
        """
        return {
            "epoch": self._epoch,
            "position": self._position,  # batch positions consumed in this epoch (skipped empty ones included)
            "samples_seen": self._seen,
            "bad_samples": self._bad,
            "bad_examples": list(self._examples),
            **self.source.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was taken: the next batch is the one an uninterrupted run would yield next."""
        for key, value in self.source.fingerprint().items():
            if key in state and state[key] != value:
                raise ValueError(
                    f"the saved data stream has {key}={state[key]!r} but this one has {value!r}; "
                    "resume with the same data, batch size, world size, seed and settings"
                )
        self.close()
        self._epoch, self._position = int(state["epoch"]), int(state["position"])
        self._seen, self._bad = int(state["samples_seen"]), int(state["bad_samples"])
        self._examples = [str(k) for k in state["bad_examples"]]

    def close(self) -> None:
        """Stop the DataLoader workers; the next ``next()`` restarts from the current position."""
        if self._gen is not None:
            self._gen.close()  # type: ignore[attr-defined]
            self._gen = None

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_gen", None) is not None:
            self.close()

    # ---- the loop --------------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[dict[str, Any]]:
        field = self.source.field
        while True:
            n = self.source.batches_in_epoch(self._epoch)
            if self._position < n:
                items = iter(
                    self.source.loader(
                        self._epoch, self._position, num_workers=self.num_workers, pin_memory=self.pin_memory
                    )
                )
                try:
                    for item in items:
                        if item.get("skipped"):
                            continue
                        assert item["position"] == self._position, "data loader yielded batches out of order"
                        self._position += 1
                        self._count(item["slots"], item["bad"])
                        if item["pixels"] is not None:
                            yield {field: item["pixels"], "label": item["label"], "key": item["key"]}
                finally:
                    del items  # shuts the workers down now, not at garbage collection
                assert self._position == n, f"the data loader stopped at position {self._position} of {n}"
            self._check(end_of_epoch=True)
            self._epoch, self._position = self._epoch + 1, 0

    def _count(self, slots: int, bad: list[list[str]]) -> None:
        self._seen += slots
        for key, reason in bad:
            self._bad += 1
            if len(self._examples) < MAX_EXAMPLES:
                self._examples.append(key)
            log.warning("skipped bad sample %s: %s (%d of %d samples bad so far)", key, reason, self._bad, self._seen)
        self._check(end_of_epoch=False)

    def _check(self, *, end_of_epoch: bool) -> None:
        if (end_of_epoch or self._seen >= self.min_samples) and self._bad > self.max_bad_fraction * self._seen:
            raise ValueError(
                f"{self._bad} of {self._seen} samples could not be read (more than {self.max_bad_fraction:.0%}), "
                f"e.g. {', '.join(self._examples)}; fix or remove these files"
            )


class Requests:
    """The batch sampler of one epoch from position ``start``: lists of ``(epoch, index, position)``, made lazily."""

    def __init__(self, batches: np.ndarray, epoch: int, start: int) -> None:
        self.batches, self.epoch, self.start = batches, epoch, start

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for p in range(self.start, len(self.batches)):
            yield [(self.epoch, i, p) for i in self.batches[p].tolist()]


class IndexedSource:
    """A source of ``num_samples`` indexable samples (a folder), split over ranks by :func:`rank_batches`.

    ``dataset[(epoch, index, position)]`` decodes sample ``index`` for batch ``position`` of ``epoch`` into a
    :class:`Sample`, drawing its randomness from ``sample_rng(seed, AUGMENT, epoch, index)``.
    """

    def __init__(
        self,
        dataset: Dataset[Sample],
        *,
        field: str,
        num_samples: int,
        class_names: tuple[str, ...] | None,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        if batches_per_rank(num_samples, batch_size=batch_size, world_size=world_size) == 0:
            raise ValueError(
                f"{num_samples} samples make no batch of {batch_size} on each of {world_size} ranks; "
                "lower batch_size or add data"
            )
        self.dataset, self.field, self.num_samples, self.class_names = dataset, field, num_samples, class_names
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed

    def batches_in_epoch(self, epoch: int) -> int:
        return batches_per_rank(self.num_samples, batch_size=self.batch_size, world_size=self.world_size)

    def samples_in_epoch(self, epoch: int) -> int:
        return self.batches_in_epoch(epoch) * self.world_size * self.batch_size

    def loader(self, epoch: int, start: int, *, num_workers: int, pin_memory: bool) -> Iterable[dict[str, Any]]:
        batches = rank_batches(
            self.num_samples,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.batch_size,
        )
        requests = Requests(batches, epoch, start)
        return make_loader(self.dataset, batch_sampler=requests, num_workers=num_workers, pin_memory=pin_memory)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
        }
