"""``open-magvit2 export``: a run (its newest intact checkpoint) or a run checkpoint → a ``save_pretrained``
directory that ``from_pretrained`` loads.

Which weights: the run's own result by default (its EMA weights when the recipe keeps them, else the trained
ones), or ``ema`` / ``raw`` as asked (``ema`` from a run without EMA is an error). A checkpoint that cannot be read
or whose weights are not finite is never exported: for a run directory the next older intact one is taken, saying
so. The folder is written under a temporary name and renamed into place, and proven loadable before that.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import Tensor

from open_magvit2.checkpoints.hub import CONFIG_NAME, load_pretrained_dir, save_pretrained_dir
from open_magvit2.fileio import atomic_write_dir, check_output_dir
from open_magvit2.generator.api import CLASSES_NAME
from open_magvit2.generator.model import config_from_dict
from open_magvit2.generator.video import generator_class
from open_magvit2.tokenizer import TokenizerConfig
from open_magvit2.train.checkpoint import META_NAME, Loaded, Weights, list_checkpoints, read_meta, run_weights
from open_magvit2.train.rundir import TOKENIZER_DIR


def _export_tokenizer(sd: dict[str, Tensor], loaded: Loaded, out: Path, meta: dict[str, Any]) -> Path:
    s = loaded.state
    return save_pretrained_dir(out, s["model_type"], s["tokenizer_config"], sd, metadata=meta)


def _export_generator(sd: dict[str, Tensor], loaded: Loaded, out: Path, meta: dict[str, Any]) -> Path:
    """The transformer with the tokenizer that made its tokens (``RUN_DIR/tokenizer/``), so that ``generate``
    and ``sample_images`` (``sample_videos``) work on the exported folder: an :class:`ImageGenerator`, or a
    :class:`VideoGenerator` when the run trained on clips (its config has ``frames``)."""
    s = loaded.state
    config = config_from_dict(s["generator_config"])
    cls = generator_class(config)
    full = {f"transformer.{k}": v for k, v in sd.items()}
    tok_config = None
    if s.get("tokenizer") is not None:
        tok_dir = loaded.path.parent.parent / TOKENIZER_DIR
        if not (tok_dir / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{tok_dir}: the run's tokenizer copy is missing; it is needed to decode samples")
        _, tcfg, tsd = load_pretrained_dir(tok_dir)
        tok_config = TokenizerConfig.from_dict(tcfg)
        full.update({f"tokenizer.{k}": v for k, v in tsd.items()})
    model = cls.from_weights(config, tok_config, full)  # strict: proves the folder will load
    doc = {"generator": config.to_dict(), "tokenizer": None if tok_config is None else tok_config.to_dict()}
    save_pretrained_dir(out, model.model_type, doc, model.state_dict(), metadata=meta)
    classes = loaded.path.parent.parent / CLASSES_NAME  # the class names go along: generate names its folders
    if classes.is_file():
        shutil.copyfile(classes, out / CLASSES_NAME)
    return out


EXPORTERS = {"tokenizer": _export_tokenizer, "generator": _export_generator}


def export_run(run_or_checkpoint: str | Path, out: str | Path, weights: Weights | None = None) -> Path:
    """Write the weights of a run's newest intact checkpoint (or of the given checkpoint) as a save_pretrained
    directory; returns ``out``. ``weights``: None (the run's own result), ``"ema"`` or ``"raw"``."""
    out = Path(out)
    check_output_dir(out, "output folder")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose a new output directory")
    src = Path(run_or_checkpoint).expanduser()
    kind = _kind(src)
    sd, which, loaded = run_weights(src, kind, weights)
    meta = {"source": str(loaded.path), "step": loaded.state["step"], "weights": which}
    parent = out.absolute().parent
    made = [p for p in (parent, *parent.parents) if not p.exists()]
    try:
        atomic_write_dir(out, lambda tmp: EXPORTERS[kind](sd, loaded, tmp, meta))
    except BaseException:
        for p in made:  # the folders this export created, innermost first
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    return out


def _kind(path: Path) -> str:
    """"tokenizer" or "generator", from the newest checkpoint's metadata (every checkpoint of a run agrees)."""
    found = [path] if (path / META_NAME).is_file() else list_checkpoints(path / "checkpoints")
    if not found:
        raise FileNotFoundError(f"{path}: no complete checkpoint (neither a run directory with checkpoints/step_* "
                                "nor a checkpoint directory)")
    kind = read_meta(found[-1]).get("kind")
    if kind not in EXPORTERS:
        raise ValueError(f"{found[-1]}: unknown checkpoint kind {kind!r}")
    return kind
