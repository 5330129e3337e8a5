"""``open-magvit2 export``: a training checkpoint → a ``save_pretrained`` directory that ``from_pretrained`` loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from open_magvit2.checkpoints.hub import save_pretrained_dir
from open_magvit2.train.checkpoint import META_NAME, STATE_NAME, list_checkpoints, read_state_file


def find_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """A checkpoint directory as is; a run directory → its newest complete checkpoint."""
    path = Path(run_or_checkpoint).expanduser()
    if (path / META_NAME).is_file():
        return path
    found = list_checkpoints(path / "checkpoints")
    if not found:
        raise FileNotFoundError(f"{path}: no complete checkpoint (neither a run directory with checkpoints/step_* "
                                "nor a checkpoint directory)")
    return found[-1]


def _tokenizer_weights(state: dict[str, Any], weights: str, where: Path) -> dict:
    if weights == "ema":
        if state.get("ema") is None:
            raise ValueError(f"{where} has no EMA weights (run.ema_decay was null); export with --weights raw")
        return state["ema"]
    return state["model"]


def export_tokenizer(state: dict[str, Any], out: Path, weights: str, where: Path) -> Path:
    meta = {"source": str(where), "step": state["step"], "weights": weights}
    return save_pretrained_dir(out, state["model_type"], state["tokenizer_config"],
                               _tokenizer_weights(state, weights, where), metadata=meta)


def _exporters() -> dict[str, Callable[[dict[str, Any], Path, str, Path], Path]]:
    from open_magvit2.train.generator import export_generator  # the generator trainer registers its own format

    return {"tokenizer": export_tokenizer, "generator": export_generator}


def export_run(run_or_checkpoint: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write the weights of a run's newest checkpoint (or of the given checkpoint) as a save_pretrained directory.

    ``weights``: ``ema`` (the EMA weights; what the official evaluations use) or ``raw`` (the trained weights).
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"--weights must be ema or raw, got {weights!r}")
    ckpt = find_checkpoint(run_or_checkpoint)
    state = read_state_file(ckpt / STATE_NAME)
    exporter = _exporters().get(state.get("kind"))
    if exporter is None:
        raise ValueError(f"{ckpt}: unknown checkpoint kind {state.get('kind')!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not empty; choose a new output directory")
    return exporter(state, out, weights, ckpt)
