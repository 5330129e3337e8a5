"""Training recipes: YAML files validated against the dataclasses that own them, plus ``--set key=value``.

A recipe names a preset and a few overrides (no class paths)::

    model: imagenet_128_L            # a tokenizer (or generator) preset
    loss: {lecam_weight: 0.01}
    optim: {lr: 1.0e-4}
    run: {precision: bf16, epochs: 350}

Every key is checked against the dataclass fields, recursively: a typo is an error that names the dotted key and
the keys that exist. ``--set optim.lr=3e-4`` overrides one value (parsed as YAML, so ``[1, 2]``, ``null`` and
``true`` work). The sections shared by both trainers (:class:`OptimConfig`, :class:`ScheduleConfig`,
:class:`RunConfig`) live here; each trainer's top-level config lives in its own module.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("constant", "drops", "cosine", "warmup_linear")


@dataclass(frozen=True)
class OptimConfig:
    """Adam(W). Tokenizers (docs/design.md O-21): Adam (0.5, 0.9), lr 1e-4, no decay. Generators
    (docs/design.md O-37): AdamW (0.9, 0.95), lr 3e-4, decay 0.05 on tensors with ndim ≥ 2."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay_norms: bool = False  # official AR bug (docs/design.md O-38): decay on every tensor; off = ndim ≥ 2 only
    disc_lr: float | None = None  # tokenizer discriminator; None = lr
    grad_clip: float | None = None  # max global grad norm; None = no clipping
    grad_accum: int = 1  # micro-batches per optimiser step

    def __post_init__(self) -> None:
        for name in ("lr", "disc_lr"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"optim.{name} must be a finite number > 0, got {v}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate factor as a function of the optimiser step (see :mod:`open_magvit2.train.optim`).

    * ``constant``; ``drops``: ×``drop_factor`` after each of ``drop_epochs`` / ``drop_steps`` (docs/design.md
      O-21: 128_L, 256_L, pretrain 262144);
    * ``cosine``: linear warm-up from ``warmup_start`` over ``warmup_steps`` (or ``warmup_epochs``), then cosine to
      the floor ``final`` at the last step (pretrain 16384, video);
    * ``warmup_linear``: the AR schedule of docs/design.md O-37: warm-up, constant for the first 5% after it, then
      linear to ``final``.
    """

    kind: str = "constant"
    drop_epochs: tuple[int, ...] = ()
    drop_steps: tuple[int, ...] = ()
    drop_factor: float = 0.1
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0
    final: float = 0.01
    constant_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule.kind must be one of {SCHEDULES}, got {self.kind!r}")
        if self.warmup_steps < 0 or self.warmup_epochs < 0:
            raise ValueError("schedule.warmup_steps and warmup_epochs must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Length, precision, EMA, logging and checkpoint cadence; shared by both trainers."""

    epochs: float | None = None  # training length in epochs ...
    max_steps: int | None = None  # ... or optimiser steps (wins when both are set)
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + GradScaler)
    ema_decay: float | None = 0.999  # None = no EMA
    seed: int = 0
    log_every: int = 10
    save_every: int = 1000
    keep_last: int = 3
    sample_every: int = 500  # reconstruction / sample grid PNG; 0 = never
    max_nonfinite: int = 5  # consecutive non-finite steps before the run stops
    timeout_s: float = 1800.0  # collectives: a dead peer ends the job after this long
    compile: bool = False  # torch.compile the model's forward
    channels_last: bool = False  # image tokenizers: train in the channels-last memory format (CPU convs ~1.3× faster)
    device: str | None = None  # default: cuda when available

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"run.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"run.max_steps must be >= 1, got {self.max_steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"run.epochs must be > 0, got {self.epochs}")
        if self.seed < 0:
            raise ValueError(f"run.seed must be >= 0, got {self.seed}")
        if self.sample_every < 0:
            raise ValueError(f"run.sample_every must be >= 0 (0: never), got {self.sample_every}")
        for name in ("log_every", "save_every", "keep_last", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"run.ema_decay must be in (0, 1) or null, got {self.ema_decay}")


@dataclass(frozen=True)
class InitConfig:
    """Where the weights start: scratch (all null), a checkpoint, or (video) an image tokenizer to inflate."""

    checkpoint: str | None = None  # official .ckpt, save_pretrained dir, a run or a run checkpoint
    # which weights to start from: null = the source's own result (a run's EMA when its recipe keeps one, an
    # official tokenizer file's EMA); ema | raw to choose (ema where there is none is an error)
    weights: str | None = None
    inflate_from: str | None = None  # video tokenizers: an image tokenizer inflated by inflate_image_to_video
    # video tokenizers from scratch: start every temporal kernel with its past taps at zero (tokenizer.inflate.
    # zero_past_taps), so each frame's path starts as an image network
    zero_past_taps: bool = False

    def __post_init__(self) -> None:
        if self.weights not in (None, "ema", "raw"):
            raise ValueError(f"init.weights must be ema, raw or null, got {self.weights!r}")
        if self.checkpoint and self.inflate_from:
            raise ValueError("set init.checkpoint or init.inflate_from, not both")
        if self.zero_past_taps and (self.checkpoint or self.inflate_from):
            raise ValueError("init.zero_past_taps shapes a fresh initialisation; init.checkpoint and "
                             "init.inflate_from bring their own weights (inflation already starts the past taps at "
                             "zero): drop one")


# ---- YAML ↔ dataclasses ----------------------------------------------------------------------------------------


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


def _convert(hint: Any, value: Any, key: str, default: Any = None) -> Any:
    hint, optional = _strip_optional(hint)
    if value is None:
        if optional or hint is Any:
            return None
        raise ValueError(f"{key} cannot be null")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a mapping of {hint.__name__} fields, got {value!r}")
        if isinstance(default, hint):  # a section starts from its field's default (e.g. the generator's optimiser)
            value = {**to_dict(default), **value}
        return build(hint, value, prefix=f"{key}.")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None and len(args) != len(value):
            raise ValueError(f"{key} must have {len(args)} items, got {list(value)}")
        return tuple(_convert(item or a, v, key) for a, v in zip(args if item is None else [item] * len(value), value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"{key} must be {hint.__name__}, got {value!r}")
    if hint is float and not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    return value


def with_model_args(preset: T, model_args: Mapping[str, Any]) -> T:
    """A model preset (a config dataclass) with the recipe's ``model_args`` fields replaced; an unknown field is a
    ``ValueError`` that lists the allowed ones."""
    try:
        return dataclasses.replace(preset, **model_args)
    except TypeError:
        known = [f.name for f in dataclasses.fields(preset) if f.init]
        unknown = sorted(set(model_args) - set(known))
        raise ValueError(f"unknown model_args {', '.join(unknown)}; the allowed keys are {', '.join(known)}") from None


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """``cls(**data)`` with nested dataclasses built recursively; an unknown key is a ``ValueError`` naming it."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'the recipe'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ValueError(f"unknown config key {prefix}{unknown[0]!s}; {prefix.rstrip('.') or 'top level'} has: "
                         f"{', '.join(known)}")
    factories = {f.name: f.default_factory for f in dataclasses.fields(cls)}
    defaults = {k: f() for k, f in factories.items() if f is not dataclasses.MISSING}
    kwargs = {k: _convert(hints[k], v, f"{prefix}{k}", defaults.get(k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{prefix}{e}" if prefix and not str(e).startswith(prefix) else str(e)) from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) → plain dicts/lists/scalars, the form written to ``config.yaml``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - yaml ships with the train extra
        raise ValueError("reading recipes needs PyYAML: pip install 'open-magvit2[train]'") from None
    return yaml


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    yaml = _yaml()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        raise ValueError(f"{path}: the recipe is empty; start from one in configs/ (e.g. --config tiny)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a nested dict, in order; returns a new dict."""
    yaml = _yaml()
    out = to_dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value, e.g. optim.lr=3e-4")
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {item!r}: {p} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def dump_yaml(data: Mapping[str, Any]) -> str:
    return _yaml().safe_dump(to_dict(data), sort_keys=False)


RECIPES = Path(__file__).resolve().parents[1] / "configs"  # package data; configs/ in a checkout links here


def recipe_names(kind: str) -> list[str]:
    """The shipped recipes for ``kind`` ("tokenizer" or "generator"), as ``--config`` accepts them."""
    names = [p.stem for p in sorted((RECIPES / kind).glob("*.yaml"))]
    demo = [f"demo/{p.stem}" for p in sorted((RECIPES / "demo").glob("*.yaml")) if p.stem.endswith(kind)
            or (kind == "generator" and p.stem == "generator")]
    return names + demo


def resolve_recipe(config: str | Path, kind: str) -> Path:
    """``--config``: a YAML file, or the name of a shipped recipe (``tiny``, ``imagenet_128_L``, ``demo/...``)."""
    path = Path(config).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    for candidate in (RECIPES / kind / f"{config}.yaml", RECIPES / f"{config}.yaml"):
        if candidate.is_file() and str(config) in recipe_names(kind):
            return candidate
    raise FileNotFoundError(f"--config {config}: neither a recipe file nor a shipped {kind} recipe; the shipped "
                            f"ones are {', '.join(recipe_names(kind))}")


def load_recipe(cls: type[T], path: str | Path | None, overrides: Sequence[str] = (), **defaults: Any) -> T:
    """Build ``cls`` from a YAML recipe, then ``defaults`` (nested dicts, e.g. from CLI flags), then ``--set``s."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(_merge(data, defaults), overrides)
    where = f"{path}: " if path is not None else ""
    try:
        return build(cls, data)
    except ValueError as e:
        raise ValueError(f"{where}{e}") from None


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping):
            out[k] = _merge(dict(out[k]) if isinstance(out.get(k), Mapping) else {}, v)
        elif v is not None:
            out[k] = v
    return out

