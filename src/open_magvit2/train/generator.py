"""AR generator training (paper §2.3; spec §5.1, §5.6, §5.7): next-sub-token prediction on LFQ tokens.

Per optimiser step (``grad_accum`` micro-batches each, gradients synchronised on the last one only):

1. Tokens (B, h, w) from pre-tokenised shards, or encoded on the fly (``generator_data.py``), split into the
   sub-tokens (pre, post) of the bit split (spec §2.3).
2. Teacher-forced logits under autocast (bf16 by default); the model applies label drop to the null class
   (0.1) and the token, residual and FFN dropouts (0.1 each, spec §5.2) in train mode.
3. Loss = CE(pre) + CE(post) (:func:`open_magvit2.generator.generator_loss`), averaged over ranks for the log.
4. Clip the global gradient norm to 1.0; the non-finite guard decides on every rank alike; AdamW (0.9, 0.95),
   weight decay 0.05 on tensors with ndim ≥ 2 only (``optim.decay_norms: true`` reproduces the official decay of
   every tensor, spec §9 item 12); learning rate from the warm-up + constant + linear-decay schedule (§5.7).
5. Metrics, a sample grid from the current weights (fixed classes and seed, decoded by the tokenizer), and a
   checkpoint (atomic, last K kept, exact resume).

DDP for every size (the 1-rank run is a 1-process group, the same code), or FSDP2 with ``parallel: fsdp`` for L and
XL (``fsdp.py``: sharded checkpoints, gathered by ``export``). The frozen tokenizer is copied into
``RUN_DIR/tokenizer/`` so that ``export`` can ship it with the transformer.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from open_magvit2.checkpoints.hub import load_pretrained_dir, save_pretrained_dir
from open_magvit2.data.tokens import write_classes
from open_magvit2.generator import GeneratorConfig, GeneratorTransformer, ImageGenerator, generator_loss
from open_magvit2.generator.sampling import generate_tokens
from open_magvit2.imaging import image_grid, save_image, to_uint8
from open_magvit2.quantize import factorize_indices, unfactorize_indices
from open_magvit2.tokenizer import TokenizerConfig
from open_magvit2.train import fsdp
from open_magvit2.train.config import InitConfig, OptimConfig, RunConfig, ScheduleConfig
from open_magvit2.train.ema import make_ema, update_ema
from open_magvit2.train.generator_data import (
    TrainData,
    checkpoint_weights,
    load_generator_init,
    open_train_data,
    resolve_generator_config,
)
from open_magvit2.train.optim import adamw, grad_norm, lr_factor, set_lr, steps_from_epochs
from open_magvit2.train.session import TrainSession

TOKENIZER_DIR = "tokenizer"  # RUN_DIR/tokenizer/: the frozen tokenizer that made the tokens (save_pretrained)
PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class GeneratorDataConfig:
    batch_size: int = 24  # per rank and micro-batch; global batch = batch_size × grad_accum × ranks (paper: 768)
    num_workers: int = 0  # DataLoader workers (token shards need none; on-the-fly image decoding does)
    tokenizer: str | None = None  # set: --data holds images, encoded on the fly by this tokenizer / AR checkpoint
    tokenizer_weights: str = "ema"  # for an official tokenizer .ckpt (AR files hold raw first-stage weights only)
    size: int = 256  # on the fly: resize the shorter side, then crop size × size (spec §6.1)
    random_crop: bool = True  # on the fly: official RandomCrop; False: centre crop
    flip: bool = False  # on the fly: horizontal flips (the official recipe has none)


@dataclass(frozen=True)
class SampleGridConfig:
    """The grid saved every ``run.sample_every`` steps: ``per_class`` samples of each class, fixed seed."""

    classes: tuple[int, ...] = ()  # empty: 4 classes spread over the label range
    per_class: int = 4
    seed: int = 0
    cfg_scale: tuple[float, float] | None = None  # None: the model's defaults (config.sample_cfg_scale)

    def __post_init__(self) -> None:
        if self.per_class < 1:
            raise ValueError(f"samples.per_class must be >= 1, got {self.per_class}")


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """A generator training recipe (``configs/generator/*.yaml``); the defaults are the paper's (spec §5.7)."""

    model: str = "B"  # a generator preset (B, L, XL, tiny)
    model_args: dict[str, Any] = field(default_factory=dict)  # GeneratorConfig fields over the preset
    init: InitConfig = field(default_factory=InitConfig)  # init.checkpoint: fine-tune from an AR .ckpt or a run
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.05, grad_clip=1.0)
    )
    schedule: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(kind="warmup_linear", warmup_epochs=6.0, warmup_start=0.005, final=0.1)
    )
    run: RunConfig = field(default_factory=lambda: RunConfig(precision="bf16", ema_decay=None, sample_every=5000,
                                                             save_every=5000))
    samples: SampleGridConfig = field(default_factory=SampleGridConfig)
    parallel: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard; for L and XL)

    def __post_init__(self) -> None:
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {self.parallel!r}")
        if self.parallel == "fsdp" and self.run.ema_decay is not None:
            raise ValueError("parallel: fsdp keeps no EMA copy (the official AR recipes have none); set "
                             "run.ema_decay: null")


def train_generator(cfg: GeneratorTrainConfig, data: str | Path, output: str | Path, resume: str | None = None) -> Path:
    """Train a generator on ``data`` (a token set, or images with ``data.tokenizer``) into ``output``.

    ``resume``: None (a fresh run; ``output`` must be empty), ``"auto"`` (the newest complete checkpoint in
    ``output``, or fresh when there is none) or a checkpoint/run directory. Returns the run directory.
    """
    with TrainSession("generator", cfg, output, resume) as session:
        _train(cfg, data, session)
    return Path(output)


# ---- pieces of the loop -------------------------------------------------------------------------------------------


def _wrap(cfg: GeneratorTrainConfig, model: GeneratorTransformer, device: torch.device) -> nn.Module:
    if cfg.parallel == "fsdp":
        return fsdp.shard_generator(model)
    return DDP(model, device_ids=[device] if device.type == "cuda" else None)


def _build_model(cfg: GeneratorTrainConfig, gcfg: GeneratorConfig, session: TrainSession) -> tuple[Any, ...]:
    """(model, its DDP/FSDP wrapper, EMA copy or None), identical on every rank."""
    session.seed()
    model = GeneratorTransformer(config=gcfg)  # official init (spec §5.3)
    init = load_generator_init(cfg.init, gcfg) if session.resume_from is None else None
    if init is not None:
        model.load_state_dict(init, strict=True)
    model.to(session.device).train()
    ema = make_ema(model) if cfg.run.ema_decay is not None else None
    return model, _wrap(cfg, model, session.device), ema


def _length(cfg: GeneratorTrainConfig, data: TrainData, where: str | Path, world: int) -> tuple[int, int]:
    """(optimiser steps of the run, optimiser steps per epoch)."""
    accum, run = cfg.optim.grad_accum, cfg.run
    steps_per_epoch = data.stream.batches_per_epoch // accum
    if steps_per_epoch == 0:
        raise ValueError(f"{where}: too few samples for one step of {accum} × {cfg.data.batch_size} per rank "
                         f"on {world} rank(s)")
    if run.max_steps is None and run.epochs is None:
        raise ValueError("set run.epochs or run.max_steps in the recipe, or pass --max-steps")
    return run.max_steps or steps_from_epochs(run.epochs, steps_per_epoch, "run.epochs"), steps_per_epoch


def _sync(wrapped: nn.Module, last: bool) -> Any:
    """Gradient all-reduce on the last micro-batch only (DDP ``no_sync``; FSDP2 ``set_requires_gradient_sync``)."""
    if isinstance(wrapped, DDP):
        return nullcontext() if last else wrapped.no_sync()
    wrapped.set_requires_gradient_sync(last)
    return nullcontext()


def _grid_labels(s: SampleGridConfig, num_classes: int) -> list[int]:
    classes = list(s.classes) or sorted({round(i * (num_classes - 1) / 3) for i in range(4)})
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"samples.classes {bad} outside [0, {num_classes})")
    return [c for c in classes for _ in range(s.per_class)]


def _sample_grid(model: GeneratorTransformer, data: TrainData, cfg: GeneratorTrainConfig, path: Path,
                 session: TrainSession) -> None:
    """Every rank samples (FSDP needs them all); rank 0 decodes and saves one row per class."""
    c = model.config
    labels = torch.tensor(_grid_labels(cfg.samples, c.num_classes), device=session.device)
    gen = torch.Generator(labels.device).manual_seed(cfg.samples.seed)  # fixed noise; training RNG untouched
    with fsdp.gathered(model):
        out = generate_tokens(model, labels, cfg_scale=cfg.samples.cfg_scale or c.sample_cfg_scale,
                              temperature=c.sample_temperature, generator=gen)
    if session.ctx.is_main:
        idx = unfactorize_indices((out.pre, out.post), c.factorized_bits).view(-1, c.grid_size, c.grid_size)
        with torch.no_grad():
            images = data.tokenizer.decode(idx).clamp(-1, 1)
        save_image(image_grid(list(to_uint8(images)), columns=cfg.samples.per_class), path)


def _save_run_files(data: TrainData, run_root: Path) -> None:
    """Rank 0: ``RUN_DIR/tokenizer/`` (once) and ``RUN_DIR/classes.json`` (when the data names its classes)."""
    if data.tokenizer is not None and not (run_root / TOKENIZER_DIR / "config.json").is_file():
        data.tokenizer.save_pretrained(run_root / TOKENIZER_DIR)
    if data.stream.class_names is not None:
        write_classes(run_root, data.stream.class_names)


def _check_resume(state: dict[str, Any], gcfg: GeneratorConfig, data: TrainData) -> None:
    if state["generator_config"] != gcfg.to_dict():
        raise ValueError("the checkpoint's generator architecture differs from what the recipe and data give now; "
                         "resume with the same recipe and token set")
    old, new = (state.get("tokenizer") or {}).get("sha256"), (data.tokenizer_info or {}).get("sha256")
    if old != new:
        raise ValueError("the data was made by another tokenizer than the run's (tokenizer sha256 differs); "
                         "resume on the same token set")


# ---- the loop -----------------------------------------------------------------------------------------------------


def _train(cfg: GeneratorTrainConfig, data_path: str | Path, session: TrainSession) -> None:
    device, ctx, run = session.device, session.ctx, cfg.run
    data = open_train_data(data_path, cfg.data, ctx, run.seed)
    gcfg = resolve_generator_config(cfg.model, cfg.model_args, data)
    _grid_labels(cfg.samples, gcfg.num_classes)  # a bad samples.classes fails now, not at the first grid
    model, wrapped, ema = _build_model(cfg, gcfg, session)
    forward = torch.compile(wrapped) if run.compile else wrapped
    opt = adamw(model, cfg.optim)  # after FSDP sharding: it must hold the sharded parameters
    scaler = session.grad_scaler()
    accum = cfg.optim.grad_accum
    total, steps_per_epoch = _length(cfg, data, data_path, ctx.world_size)
    if ctx.is_main:
        _save_run_files(data, session.run.root)

    # ---- resume -------------------------------------------------------------------------------------------------
    step = 0
    loaded = session.load()
    if loaded is not None:
        s = loaded.state
        _check_resume(s, gcfg, data)
        if s["sharded"]:
            fsdp.load_sharded_state(model, opt, loaded.shard)
        else:
            model.load_state_dict(s["model"])
            opt.load_state_dict(s["opt"])
        if ema is not None:
            ema.load_state_dict(s["ema"])
        scaler.load_state_dict(s["scaler"])
        data.stream.load_state_dict(loaded.rank_state["data"])
        step = int(s["step"])
    session.seed_per_rank()
    if loaded is not None:
        session.restore(loaded)
    session.start(total_steps=total, step=step, unit="tok")
    sharded = fsdp.is_sharded(model)

    def save() -> None:
        state = {"ema": None if ema is None else ema.state_dict(), "scaler": scaler.state_dict(),
                 "generator_config": gcfg.to_dict(), "tokenizer": data.tokenizer_info,
                 "model_type": ImageGenerator.model_type, "sharded": sharded}
        if not sharded:
            state.update(model=model.state_dict(), opt=opt.state_dict())
        session.checkpoint(step, state, {"data": data.stream.state_dict()},
                           shard=fsdp.sharded_state(model, opt) if sharded else None)

    # ---- the steps ----------------------------------------------------------------------------------------------
    with data.stream:  # stops its DataLoader workers at the end, or on an error
        while step < total:
            factor = lr_factor(cfg.schedule, step, total, steps_per_epoch)
            set_lr(opt, cfg.optim.lr * factor)
            opt.zero_grad(set_to_none=True)
            sums = torch.zeros(3, device=device)  # loss, pre, post: summed over micro-batches
            for i in range(accum):
                tokens, labels = data.next_batch(device)
                pre, post = factorize_indices(tokens.flatten(1), gcfg.factorized_bits)  # (B, N) each
                with _sync(wrapped, last=i == accum - 1), session.autocast():
                    logits_pre, logits_post = forward(pre, post, labels)
                    out = generator_loss(logits_pre, logits_post, pre, post)
                scaler.scale(out.loss / accum).backward()
                sums += torch.stack([out.loss, out.pre, out.post]).detach() / accum
            scaler.unscale_(opt)
            norm = fsdp.full(grad_norm(model.parameters(), cfg.optim.grad_clip))
            losses = session.mean_over_ranks({"loss": sums[0], "loss/pre": sums[1], "loss/post": sums[2]})
            finite = math.isfinite(losses["loss"]) and (run.precision == "fp16" or bool(torch.isfinite(norm)))
            if session.guard.check(step, finite, "loss or gradients"):
                scaler.step(opt)
                if ema is not None:
                    update_ema(ema, model, run.ema_decay)
            scaler.update()
            step += 1

            tokens_done = accum * tokens.shape[0] * gcfg.seq_len * ctx.world_size
            lr = cfg.optim.lr * factor
            rate = session.progress.update(tokens_done, {"loss": losses["loss"], "lr": lr})
            if session.every(step, run.log_every, total):
                session.log.log(step, {**losses, "lr": lr, "grad_norm": float(norm), "throughput/tokens_per_s": rate,
                                       "nonfinite/skipped": float(session.guard.skipped),
                                       "epoch": step / steps_per_epoch})
            if data.tokenizer is not None and session.every(step, run.sample_every, total):
                _sample_grid(model, data, cfg, session.run.samples / f"step_{step:07d}.png", session)
            if session.every(step, run.save_every, total):
                save()


# ---- export -------------------------------------------------------------------------------------------------------


def export_generator(state: dict[str, Any], out: Path, weights: str, where: Path) -> Path:
    """A generator run checkpoint → a ``save_pretrained`` folder that ``ImageGenerator.from_pretrained`` loads,
    with the tokenizer that made the tokens (``RUN_DIR/tokenizer/``), so ``generate`` and ``sample_images`` work.

    ``weights="ema"`` takes the EMA weights when the run kept them (the generator recipes keep none, as the
    official ones), else the trained weights; ``"raw"`` always the trained ones. Sharded (FSDP2) checkpoints are
    gathered from their per-rank files.
    """
    config = GeneratorConfig.from_dict(state["generator_config"])
    sd, which = checkpoint_weights(where, state, weights)
    full = {f"transformer.{k}": v for k, v in sd.items()}
    tok_config = None
    if state.get("tokenizer") is not None:
        tok_dir = where.parent.parent / TOKENIZER_DIR
        if not (tok_dir / "config.json").is_file():
            raise FileNotFoundError(f"{tok_dir}: the run's tokenizer copy is missing; it is needed to decode samples")
        _, tcfg, tsd = load_pretrained_dir(tok_dir)
        tok_config = TokenizerConfig.from_dict(tcfg)
        full.update({f"tokenizer.{k}": v for k, v in tsd.items()})
    model = ImageGenerator.from_weights(config, tok_config, full)  # strict: proves the folder will load
    doc = {"generator": config.to_dict(), "tokenizer": None if tok_config is None else tok_config.to_dict()}
    meta = {"source": str(where), "step": state["step"], "weights": which}
    return save_pretrained_dir(out, model.model_type, doc, model.state_dict(), metadata=meta)
