"""Tokenizer training (paper §3; docs/design.md O-16–O-29): an explicit loop, one generator step then one
discriminator step.

Per optimiser step (``grad_accum`` micro-batches each):

1. **G step.** ``tokenizer(x, sync_codebook=True)`` on every rank (the LFQ codebook distribution is averaged over
   ranks here and only here), then L1 + LPIPS + non-saturating GAN + entropy + commitment. The discriminator
   scores the reconstruction but gets no gradient from this loss.
2. **D step** on the detached reconstruction of step 1: hinge + LeCAM. LPIPS is not recomputed (the official D
   step recomputes and discards it, docs/design.md O-24).
3. One all-reduce of both losses; the non-finite guard decides; both optimisers step; the EMA (encoder, quantiser
   and decoder only, docs/design.md O-23) follows the tokenizer.
4. Metrics, a reconstruction grid, a checkpoint (atomic, the last K kept, exact resume).

The same code runs on 1 rank and on N (a 1-process group when not under torchrun), for images (dims 2) and
video (dims 3: L1 and LPIPS per frame, the discriminator per clip).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from open_magvit2.data import build_image_stream, build_video_stream
from open_magvit2.data.tokens import write_classes
from open_magvit2.distributed import DistContext, all_reduce_mean
from open_magvit2.eval.metrics import CodebookUsage
from open_magvit2.imaging import image_grid, save_image, to_uint8
from open_magvit2.losses import TokenizerLoss, TokenizerLossConfig
from open_magvit2.losses.gan import disc_factor
from open_magvit2.losses.tokenizer_loss import LossOutput
from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig, VideoTokenizer
from open_magvit2.tokenizer.inflate import zero_past_taps
from open_magvit2.tokenizer.presets import tokenizer_config
from open_magvit2.train.config import InitConfig, OptimConfig, RunConfig, ScheduleConfig, with_model_args
from open_magvit2.train.ema import make_ema
from open_magvit2.train.guard import NonFiniteGuard
from open_magvit2.train.init import load_tokenizer_init
from open_magvit2.train.optim import adam, grad_norm, lr_factor, run_length, set_lr
from open_magvit2.train.session import TrainSession
from open_magvit2.train.step import StepContext, every, guarded_update


@dataclass(frozen=True)
class TokenizerDataConfig:
    size: int = 128  # training crops are size × size (docs/design.md O-45: resize shorter side, random crop)
    batch_size: int = 8  # per rank and micro-batch
    num_workers: int = 4
    random_crop: bool = True  # False: centre crop
    flip: bool = False  # horizontal flips (the official recipes have none)
    frames: int = 17  # video clips: frames per clip (4k + 1)
    fps: float | None = None  # video: resample to this frame rate (None: native)

    def __post_init__(self) -> None:
        for name in ("size", "batch_size", "frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"data.fps must be > 0 or null, got {self.fps}")


FREEZABLE = ("encoder", "decoder")  # the tokenizer parts with weights (the LFQ has none)


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """A tokenizer training recipe (``configs/tokenizer/*.yaml``)."""

    model: str = "imagenet_128_L"  # a tokenizer preset (open_magvit2.tokenizer.presets)
    model_args: dict[str, Any] = field(default_factory=dict)  # TokenizerConfig fields that override the preset
    init: InitConfig = field(default_factory=InitConfig)
    data: TokenizerDataConfig = field(default_factory=TokenizerDataConfig)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # parts whose weights stay as initialised (no gradient, no optimiser state): [encoder] fine-tunes the decoder
    # alone, e.g. an inflated video tokenizer whose latent frames keep coding the key frames as the image tokenizer
    # did (docs/training.md, "Freezing a part")
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = (self.freeze,) if isinstance(self.freeze, str) else self.freeze  # `freeze: encoder` is one name
        object.__setattr__(self, "freeze", tuple(names))
        bad = sorted(set(self.freeze) - set(FREEZABLE))
        if bad:
            raise ValueError(f"freeze names parts of the tokenizer, one of {list(FREEZABLE)}; got {bad}")
        if set(self.freeze) == set(FREEZABLE):
            raise ValueError(f"freeze lists every part {list(FREEZABLE)}: nothing would train; freeze at most one")
        if "decoder" in self.freeze and self.loss.gen_loss_weight is None:
            raise ValueError("freeze: [decoder] with loss.gen_loss_weight null: the adaptive GAN weight needs the "
                             "decoder's gradients; set loss.gen_loss_weight to a number")

    def tokenizer_config(self) -> TokenizerConfig:
        return with_model_args(tokenizer_config(self.model), self.model_args)


def _check_data_shape(cfg: TokenizerTrainConfig, model: nn.Module, loss: TokenizerLoss) -> None:
    """Fail before training when the crops do not fit the tokenizer or the discriminator."""
    f = model.config.spatial_factor
    if cfg.data.size % f:
        raise ValueError(f"data.size {cfg.data.size} must be a multiple of {f} (the model's downsampling factor)")
    shape = (1, 3, cfg.data.size, cfg.data.size)
    if model.config.dims == 3:
        model._check_frames(cfg.data.frames)
        shape = (1, 3, cfg.data.frames, cfg.data.size, cfg.data.size)
    probe = copy.deepcopy(loss.discriminator).to("meta").eval()  # shapes only, no computation
    try:
        probe(torch.empty(shape, device="meta"))
    except RuntimeError:
        raise ValueError(f"data.size {cfg.data.size} is too small for the {cfg.loss.discriminator} discriminator; "
                         "use larger crops (32 or more)") from None


def _stream(cfg: TokenizerTrainConfig, source: str | Path, ctx: DistContext, dims: int) -> Any:
    d = cfg.data
    common = dict(size=d.size, batch_size=d.batch_size, rank=ctx.rank, world_size=ctx.world_size,
                  seed=cfg.run.seed, num_workers=d.num_workers)
    if dims == 3:
        return build_video_stream(source, frames=d.frames, fps=d.fps, **common)
    return build_image_stream(source, random_crop=d.random_crop, flip=d.flip, **common)


def _last_layer(model: nn.Module) -> Tensor:
    params = dict(model.named_parameters())
    return params.get("decoder.conv_out.weight", params.get("decoder.conv_out.conv_1.weight"))


def _grid(ema: nn.Module, x: Tensor, path: Path) -> None:
    """Inputs (top rows) above their EMA reconstructions; video: first, middle and last frame of each clip."""
    with torch.no_grad():
        rec = ema(x).reconstruction.clamp(-1, 1)
    if x.dim() == 5:
        t = x.shape[2]
        pick = sorted({0, t // 2, t - 1})
        x, rec = (v[:, :, pick].transpose(1, 2).flatten(0, 1) for v in (x, rec))
    tiles = list(to_uint8(x)) + list(to_uint8(rec))
    save_image(image_grid(tiles, columns=len(x)), path)


def _metric_name(key: str) -> str:
    """Loss-module log keys → metric names grouped for TensorBoard and ``plot-run``."""
    if key.endswith("_entropy"):
        return f"entropy/{key[: -len('_entropy')]}"
    if key.startswith(("d_", "lecam")) or key == "g_logits_fake":
        return f"d/{key}"
    return f"loss/{key}"


class _Usage:
    """Distinct codes seen over a logging window, summed over ranks at log time (exact for any K: dense counts up to
    2^24 codes, the codes seen beyond, ``eval.metrics.CodebookUsage``)."""

    def __init__(self, bits: int, device: torch.device) -> None:
        self.counts = CodebookUsage(bits, device)

    def add(self, indices: Tensor) -> None:
        self.counts.update(indices)

    def flush(self, ctx: DistContext) -> dict[str, float]:
        self.counts.all_reduce(ctx)
        used, usage = self.counts.used, self.counts.usage
        self.counts.reset()
        return {"codebook/used": float(used), "codebook/usage": usage}


class TokenizerParts(NamedTuple):
    """Everything one tokenizer training step updates (the DDP wrappers share parameters with the modules)."""

    tokenizer: nn.Module
    loss: TokenizerLoss
    ddp_tok: DDP
    ddp_disc: DDP
    ema: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def make_parts(tokenizer: nn.Module, loss: TokenizerLoss, optim: OptimConfig, *, ema: bool,
               scaler: torch.amp.GradScaler, device: torch.device, channels_last: bool = False) -> TokenizerParts:
    """Move to ``device`` (in the channels-last memory format if asked), wrap both networks in DDP (a process
    group must exist), and build the EMA copy and the two Adam optimisers (docs/design.md O-21: G over encoder +
    decoder, D over the discriminator)."""
    fmt = {"memory_format": torch.channels_last} if channels_last and tokenizer.config.dims == 2 else {}
    tokenizer.to(device, **fmt).train()
    loss.to(device, **fmt).train()
    ids = [device] if device.type == "cuda" else None
    return TokenizerParts(
        tokenizer, loss, DDP(tokenizer, device_ids=ids), DDP(loss.discriminator, device_ids=ids),
        make_ema(tokenizer) if ema else None,
        adam((p for p in tokenizer.parameters() if p.requires_grad), optim, optim.lr),
        adam(loss.discriminator.parameters(), optim, optim.disc_lr or optim.lr),
        scaler,
    )


class StepResult(NamedTuple):
    taken: bool  # False: skipped by the non-finite guard
    losses: dict[str, float]  # {"g", "d"}: the two total losses, averaged over ranks
    logs: dict[str, Tensor]  # this rank's G and D log terms of the last micro-batch
    grad_norms: tuple[float, float]  # (G, D), before clipping
    indices: list[Tensor]  # LFQ indices of every micro-batch (codebook usage)


def train_step(parts: TokenizerParts, micro: list[Tensor], step: int, *, ctx: StepContext, guard: NonFiniteGuard,
               grad_clip: float | None, ema_decay: float | None) -> StepResult:
    """Optimiser step ``step + 1``: the G step, then the D step on the same reconstructions, then one guarded
    update. ``step`` counts the steps already taken (the official ``global_step`` the loss schedules read)."""
    p, accum = parts, len(micro)
    last_layer = _last_layer(p.tokenizer) if p.loss.config.gen_loss_weight is None else None

    def batch_mean(t: Tensor) -> Tensor:  # LeCAM's batch means: every rank keeps the same EMA state
        return all_reduce_mean(t.detach().clone(), ctx.dist)

    # 1. generator step
    p.opt_g.zero_grad(set_to_none=True)
    recs, indices = [], []
    for i, x in enumerate(micro):
        with (p.ddp_tok.no_sync() if i < accum - 1 else nullcontext()), ctx.autocast():
            out = p.ddp_tok(x, sync_codebook=True)
            g = p.loss.generator_loss(x, out.reconstruction, out.quantizer, step, last_layer=last_layer)
        p.scaler.scale(g.loss / accum).backward()
        recs.append(out.reconstruction.detach())
        indices.append(out.quantizer.indices)
    # 2. discriminator step on the same (detached) reconstructions; LPIPS is not recomputed. Before disc_start the
    #    discriminator is not trained (its loss is multiplied by 0), so it does not run at all.
    p.opt_d.zero_grad(set_to_none=True)
    d_active = disc_factor(step, p.loss.config.disc_start) > 0
    d = LossOutput(torch.zeros((), device=micro[0].device), {})
    for i, (x, rec) in enumerate(zip(micro, recs) if d_active else ()):
        with (p.ddp_disc.no_sync() if i < accum - 1 else nullcontext()), ctx.autocast():
            d = p.loss.discriminator_loss(x, rec, step, discriminator=p.ddp_disc, batch_mean=batch_mean)
        p.scaler.scale(d.loss / accum).backward()
    # 3. one decision for every rank (all-reduced values only), then both updates and the EMA
    p.scaler.unscale_(p.opt_g)
    p.scaler.unscale_(p.opt_d)
    norms = (grad_norm(p.tokenizer.parameters(), grad_clip), grad_norm(p.loss.discriminator.parameters(), grad_clip))
    taken, losses = guarded_update(ctx, guard, step + 1, {"g": g.loss, "d": d.loss}, norms, p.scaler,
                                   [p.opt_g, p.opt_d] if d_active else [p.opt_g],
                                   None if p.ema is None else (p.ema, p.tokenizer, ema_decay))
    return StepResult(taken, losses, {**g.logs, **d.logs}, (float(norms[0]), float(norms[1])), indices)


def train_tokenizer(cfg: TokenizerTrainConfig, data: str | Path, output: str | Path, resume: str | None = None) -> Path:
    """Train a tokenizer on ``data`` (image folder, WebDataset shards or a video folder) into ``output``.

    ``resume``: None (a fresh run; ``output`` must be empty), ``"auto"`` (the newest complete checkpoint in
    ``output``, or fresh when there is none) or a checkpoint/run directory. Returns the run directory.
    """
    with TrainSession("tokenizer", cfg, output, resume) as session:
        _train(cfg, data, session)
    return Path(output)


def _train(cfg: TokenizerTrainConfig, data: str | Path, session: TrainSession) -> None:
    # ---- check everything, write nothing: data, models, init weights, length -------------------------------------
    stream = _stream(cfg, data, session.ctx, cfg.tokenizer_config().dims)
    try:
        _run(cfg, data, session, stream)
    finally:
        stream.close()


def _run(cfg: TokenizerTrainConfig, data: str | Path, session: TrainSession, stream: Any) -> None:
    device, ctx, run = session.device, session.ctx, cfg.run
    session.seed()  # the models are identical on every rank
    tok_cfg = cfg.tokenizer_config()
    tokenizer = (VideoTokenizer if tok_cfg.dims == 3 else ImageTokenizer)(tok_cfg)
    loss = TokenizerLoss(cfg.loss, dims=tok_cfg.dims)
    if session.resume_from is None:
        init_weights, init_disc = load_tokenizer_init(cfg.init, tok_cfg)
        if init_weights is not None:
            tokenizer.load_state_dict(init_weights, strict=True)
        if init_disc is not None:
            loss.discriminator.load_state_dict(init_disc, strict=True)
        if cfg.init.zero_past_taps:
            zero_past_taps(tokenizer)
    for part in cfg.freeze:
        getattr(tokenizer, part).requires_grad_(False)
    _check_data_shape(cfg, tokenizer, loss)
    accum = cfg.optim.grad_accum
    total, steps_per_epoch = run_length(run, stream.batches_per_epoch, accum, cfg.data.batch_size, ctx.world_size,
                                        str(data))
    parts = make_parts(tokenizer, loss, cfg.optim, ema=run.ema_decay is not None,
                       scaler=session.step_ctx.grad_scaler(), device=device, channels_last=run.channels_last)
    # ---- the run directory, the state, resume ---------------------------------------------------------------------
    names = stream.class_names
    session.create([lambda d: write_classes(d, names)] if names else [])
    session.register(model=parts.tokenizer, ema=parts.ema, loss=parts.loss, opt_g=parts.opt_g, opt_d=parts.opt_d,
                     scaler=parts.scaler)
    session.register_rank(data=stream)
    session.record(tokenizer_config=tok_cfg.to_dict(), model_type=parts.tokenizer.model_type)
    step = session.resume()
    session.start(total_steps=total, step=step, unit="img")
    layout = torch.channels_last if run.channels_last and tok_cfg.dims == 2 else torch.contiguous_format
    key = "video" if tok_cfg.dims == 3 else "image"
    usage = _Usage(tok_cfg.z_channels, device)
    batches = iter(stream)
    window: dict[str, Tensor] = {}
    window_steps = 0
    # ---- the loop -----------------------------------------------------------------------------------------------
    while step < total:
        lr = cfg.optim.lr * lr_factor(cfg.schedule, step, total, steps_per_epoch)
        set_lr(parts.opt_g, lr)
        set_lr(parts.opt_d, lr * (cfg.optim.disc_lr or cfg.optim.lr) / cfg.optim.lr)
        micro = [next(batches)[key].to(device, non_blocking=True).contiguous(memory_format=layout)
                 for _ in range(accum)]
        result = train_step(parts, micro, step, ctx=session.step_ctx, guard=session.guard,
                            grad_clip=cfg.optim.grad_clip, ema_decay=run.ema_decay)
        for idx in result.indices:
            usage.add(idx)
        for k, v in result.logs.items():  # logged values are means over the logging window
            window[k] = window.get(k, 0.0) + v
        window_steps += 1
        step += 1
        images = sum(len(x) for x in micro) * ctx.world_size
        # the bar shows the reconstruction error: the total G loss includes the entropy term and can be negative
        rate = session.progress.update(images, {"l1": float(result.logs["l1"]), "d": result.losses["d"], "lr": lr})
        if every(step, run.log_every, total):
            means = {k: v / window_steps for k, v in window.items()}
            logs = {_metric_name(k): v for k, v in session.step_ctx.mean_over_ranks(means).items()}
            window, window_steps = {}, 0
            logs.update(usage.flush(ctx))
            logs.update({"lr": lr, "grad_norm/g": result.grad_norms[0],
                         "grad_norm/d": result.grad_norms[1], "throughput/images_per_s": rate,
                         "nonfinite/skipped": float(session.guard.skipped),
                         "epoch": step / steps_per_epoch if steps_per_epoch else 0.0})
            session.log.log(step, logs)
        if ctx.is_main and every(step, run.sample_every, total):
            _grid(parts.ema or parts.tokenizer, micro[0][:8], session.run.sample_path(step))
        if every(step, run.save_every, total):
            session.save(step)
