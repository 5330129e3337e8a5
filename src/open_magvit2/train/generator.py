"""AR generator training (paper §2.3; docs/design.md O-30, O-36, O-37): next-sub-token prediction on LFQ tokens.

Per optimiser step (``grad_accum`` micro-batches each, gradients synchronised on the last one only):

1. Tokens (B, h, w) from pre-tokenised shards, or encoded on the fly (``generator_data.py``), split into the
   M sub-tokens of the bit split (docs/design.md O-12; (pre, post) for M = 2). A video token set gives clips
   (B, t, h, w), read in raster order t, h, w, and trains a video generator (docs/design.md "Video generation").
2. Teacher-forced logits under autocast (bf16 by default); the model applies label drop to the null class
   (0.1) and the token, residual and FFN dropouts (0.1 each, docs/design.md O-31) in train mode.
3. Loss = the sum of the M sub-token cross-entropies (:func:`open_magvit2.generator.generator_loss`), averaged
   over ranks for the log as ``loss`` and one ``loss/<sub-token>`` each (:func:`sub_token_log_names`).
4. Clip the global gradient norm to 1.0; the non-finite guard decides on every rank alike; AdamW (0.9, 0.95),
   weight decay 0.05 on tensors with ndim ≥ 2 only (``optim.decay_norms: true`` reproduces the official decay of
   every tensor, docs/design.md O-38); learning rate from the warm-up + constant + linear-decay schedule
   (docs/design.md O-37).
5. Metrics, a sample grid from the current weights (fixed classes and seed, decoded by the tokenizer; for video
   one row of frames per clip), and a checkpoint (atomic, last K kept, exact resume).

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

from open_magvit2.data.tokens import write_classes
from open_magvit2.distributed import DistContext
from open_magvit2.generator import GeneratorTransformer, generator_loss
from open_magvit2.generator.model import VideoGeneratorConfig, transformer_for
from open_magvit2.generator.sampling import generate_tokens
from open_magvit2.generator.video import generator_class
from open_magvit2.imaging import image_grid, save_image, to_uint8
from open_magvit2.quantize import factorize_indices, unfactorize_indices
from open_magvit2.train import fsdp
from open_magvit2.train.config import InitConfig, OptimConfig, RunConfig, ScheduleConfig
from open_magvit2.train.ema import make_ema
from open_magvit2.train.generator_arch import resolve_generator_config
from open_magvit2.train.generator_data import TrainData, open_train_data
from open_magvit2.train.init import load_generator_init
from open_magvit2.train.optim import adamw, grad_norm, lr_factor, run_length, set_lr
from open_magvit2.train.rundir import TOKENIZER_DIR
from open_magvit2.train.session import TrainSession
from open_magvit2.train.step import every, guarded_update

PARALLEL = ("ddp", "fsdp")
VIDEO_DECODE_BATCH = 4  # clips per decoder call when the sample grid is decoded


@dataclass(frozen=True)
class GeneratorDataConfig:
    batch_size: int = 24  # per rank and micro-batch; global batch = batch_size × grad_accum × ranks (paper: 768)
    num_workers: int = 0  # DataLoader workers (token shards need none; on-the-fly image decoding does)
    tokenizer: str | None = None  # set: --data holds images, encoded on the fly by this tokenizer / AR checkpoint
    tokenizer_weights: str = "ema"  # for an official tokenizer .ckpt (AR files hold raw first-stage weights only)
    size: int = 256  # on the fly: resize the shorter side, then crop size × size (docs/design.md O-45)
    random_crop: bool = True  # on the fly: official RandomCrop; False: centre crop
    flip: bool = False  # on the fly: horizontal flips (the official recipe has none)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0 or self.size < 1:
            raise ValueError(f"data.batch_size and data.size must be >= 1 and data.num_workers >= 0, got "
                             f"{self.batch_size}, {self.size} and {self.num_workers}")
        if self.tokenizer_weights not in ("ema", "raw"):
            raise ValueError(f"data.tokenizer_weights must be ema or raw, got {self.tokenizer_weights!r}")


@dataclass(frozen=True)
class SampleGridConfig:
    """The grid saved every ``run.sample_every`` steps: ``per_class`` samples of each class, fixed seed (video:
    one row per sample, its frames across)."""

    classes: tuple[int, ...] = ()  # empty: 4 classes spread over the label range
    per_class: int = 4
    seed: int = 0
    cfg_scale: tuple[float, ...] | None = None  # one per sub-token; None: the model's (config.sample_cfg_scale)

    def __post_init__(self) -> None:
        if self.per_class < 1:
            raise ValueError(f"samples.per_class must be >= 1, got {self.per_class}")


@dataclass(frozen=True)
class GeneratorLossConfig:
    """The objective's weighting. ``first_frame_weight``: video only, how much each token of latent frame 0 weighs
    against a later one (1: the plain mean). Frame 0 is class-conditional image generation with nothing before it
    to copy, a ninth of a 9-frame clip's tokens and its hardest part; a weight > 1 spends more of the model on it
    (docs/training.md, "Video generators")."""

    first_frame_weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.first_frame_weight > 0 and math.isfinite(self.first_frame_weight)):
            raise ValueError(f"loss.first_frame_weight must be a positive number, got {self.first_frame_weight}")


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """A generator training recipe (``configs/generator/*.yaml``); the defaults are the paper's
    (docs/design.md O-37)."""

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
    loss: GeneratorLossConfig = field(default_factory=GeneratorLossConfig)
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
        data_ = open_train_data(data, cfg.data, session.ctx, cfg.run.seed)
        with data_.stream:  # stops its DataLoader workers at the end, or on an error
            _train(cfg, data_, str(data), session)
    return Path(output)


# ---- pieces of the loop -------------------------------------------------------------------------------------------


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
                 ctx: DistContext) -> None:
    """Every rank samples (FSDP needs them all); rank 0 decodes and saves one row per class (video: one row of
    frames per sample)."""
    c = model.config
    labels = torch.tensor(_grid_labels(cfg.samples, c.num_classes), device=ctx.device)
    gen = torch.Generator(labels.device).manual_seed(cfg.samples.seed)  # fixed noise; training RNG untouched
    with fsdp.gathered(model):
        out = generate_tokens(model, labels, cfg_scale=cfg.samples.cfg_scale or c.sample_cfg_scale,
                              temperature=c.sample_temperature, top_k=c.sample_top_k, top_p=c.sample_top_p,
                              generator=gen)
    if not ctx.is_main:
        return
    idx = unfactorize_indices(out.tokens, c.factorized_bits)
    if isinstance(c, VideoGeneratorConfig):
        frames = []
        with torch.no_grad():  # a few clips per decoder call: a video decoder's activations are large
            for chunk in idx.view(-1, *c.grid).split(VIDEO_DECODE_BATCH):
                clips = data.tokenizer.decode(chunk).clamp(-1, 1)  # (b, 3, T, H, W)
                frames += [f for clip in clips for f in to_uint8(clip.transpose(0, 1))]  # T × (H, W, 3) each
        save_image(image_grid(frames, columns=len(frames) // idx.shape[0]), path)
        return
    with torch.no_grad():
        images = data.tokenizer.decode(idx.view(-1, c.grid_size, c.grid_size)).clamp(-1, 1)
    save_image(image_grid(list(to_uint8(images)), columns=cfg.samples.per_class), path)


def _position_weight(loss: GeneratorLossConfig, gcfg: Any, device: torch.device) -> torch.Tensor | None:
    """The per-position loss weight of ``loss.first_frame_weight`` (None for the plain mean)."""
    if loss.first_frame_weight == 1.0:
        return None
    if not isinstance(gcfg, VideoGeneratorConfig):
        raise ValueError("loss.first_frame_weight weighs a video generator's first latent frame; this token set "
                         "holds images: drop it from the recipe")
    t, h, w = gcfg.grid
    weight = torch.ones(t * h * w, device=device)
    weight[: h * w] = loss.first_frame_weight
    return weight


def sub_token_log_names(m: int) -> list[str]:
    """The metric names of the M per-sub-token losses: ``loss/pre``, ``loss/post`` for M = 2 (the names of every
    earlier run), else ``loss/sub_1`` … ``loss/sub_M``."""
    return ["loss/pre", "loss/post"] if m == 2 else [f"loss/sub_{i + 1}" for i in range(m)]


def _run_files(data: TrainData) -> list[Any]:
    """Writers of ``RUN_DIR/tokenizer/`` and ``RUN_DIR/classes.json`` (when the data names its classes)."""
    writers = []
    if data.tokenizer is not None:
        writers.append(lambda d: data.tokenizer.save_pretrained(d / TOKENIZER_DIR))
    if data.stream.class_names is not None:
        writers.append(lambda d: write_classes(d, data.stream.class_names))
    return writers


# ---- the loop -----------------------------------------------------------------------------------------------------


def _train(cfg: GeneratorTrainConfig, data: TrainData, where: str, session: TrainSession) -> None:
    device, ctx, run, step_ctx = session.device, session.ctx, cfg.run, session.step_ctx
    # ---- check everything, write nothing: architecture, init weights, length ------------------------------------
    gcfg = resolve_generator_config(cfg.model, cfg.model_args, data)
    _grid_labels(cfg.samples, gcfg.num_classes)  # a bad samples.classes fails now, not at the first grid
    weight = _position_weight(cfg.loss, gcfg, device)
    session.seed()  # the model is identical on every rank
    model = transformer_for(gcfg)  # official init (docs/design.md); the (t, h, w) RoPE for video
    init = load_generator_init(cfg.init, gcfg) if session.resume_from is None else None
    if init is not None:
        model.load_state_dict(init, strict=True)
    accum = cfg.optim.grad_accum
    total, steps_per_epoch = run_length(run, data.stream.batches_per_epoch, accum, cfg.data.batch_size,
                                        ctx.world_size, where)
    model.to(device).train()
    ema = make_ema(model) if run.ema_decay is not None else None
    wrapped = fsdp.shard_generator(model) if cfg.parallel == "fsdp" else DDP(
        model, device_ids=[device] if device.type == "cuda" else None)
    forward = torch.compile(wrapped) if run.compile else wrapped
    opt = adamw(model, cfg.optim)  # after FSDP sharding: it must hold the sharded parameters
    scaler = step_ctx.grad_scaler()
    sharded = fsdp.is_sharded(model)
    # ---- the run directory, the state, resume ---------------------------------------------------------------------
    session.create(_run_files(data))
    if sharded:
        session.register_shard(fsdp.ShardedState(model, opt))
        session.register(ema=ema, scaler=scaler)
    else:
        session.register(model=model, opt=opt, ema=ema, scaler=scaler)
    session.register_rank(data=data.stream)
    session.record(model_type=generator_class(gcfg).model_type, sharded=sharded)
    session.expect("generator_config", gcfg.to_dict(), "the checkpoint's generator architecture differs from what "
                   "the recipe and data give now; resume with the same recipe and token set")
    session.expect("tokenizer", data.tokenizer_info, "the data was made by another tokenizer than the run's "
                   "(tokenizer config or weights differ); resume on the same token set")
    step = session.resume()
    session.start(total_steps=total, step=step, unit="tok")
    names = sub_token_log_names(gcfg.sub_tokens)

    # ---- the steps ----------------------------------------------------------------------------------------------
    while step < total:
        lr = cfg.optim.lr * lr_factor(cfg.schedule, step, total, steps_per_epoch)
        set_lr(opt, lr)
        opt.zero_grad(set_to_none=True)
        sums = torch.zeros(1 + len(names), device=device)  # loss, then each sub-token's: summed over micro-batches
        for i in range(accum):
            tokens, labels = data.next_batch(device)
            subs = factorize_indices(tokens.flatten(1), gcfg.factorized_bits)  # M × (B, N)
            with _sync(wrapped, last=i == accum - 1), step_ctx.autocast():
                out = generator_loss(*forward(*subs, labels), *subs, weight=weight)
            scaler.scale(out.loss / accum).backward()
            sums += torch.stack([out.loss, *out.parts]).detach() / accum
        scaler.unscale_(opt)
        norm = fsdp.full(grad_norm(model.parameters(), cfg.optim.grad_clip))
        _, losses = guarded_update(step_ctx, session.guard, step + 1,
                                   {"loss": sums[0], **{n: sums[1 + j] for j, n in enumerate(names)}}, [norm], scaler,
                                   [opt], None if ema is None else (ema, model, run.ema_decay))
        step += 1

        tokens_done = accum * tokens.shape[0] * gcfg.seq_len * ctx.world_size
        rate = session.progress.update(tokens_done, {"loss": losses["loss"], "lr": lr})
        if every(step, run.log_every, total):
            session.log.log(step, {**losses, "lr": lr, "grad_norm": float(norm), "throughput/tokens_per_s": rate,
                                   "nonfinite/skipped": float(session.guard.skipped),
                                   "epoch": step / steps_per_epoch})
        if data.tokenizer is not None and every(step, run.sample_every, total):
            _sample_grid(model, data, cfg, session.run.sample_path(step), ctx)
        if every(step, run.save_every, total):
            session.save(step)
