"""Tokenizer training (paper §3; spec §3–4): an explicit loop, one generator step then one discriminator step.

Per optimiser step (``grad_accum`` micro-batches each):

1. **G step.** ``tokenizer(x, sync_codebook=True)`` on every rank (the LFQ codebook distribution is averaged over
   ranks here and only here), then L1 + LPIPS + non-saturating GAN + entropy + commitment. The discriminator
   scores the reconstruction but gets no gradient from this loss.
2. **D step** on the detached reconstruction of step 1: hinge + LeCAM. LPIPS is not recomputed (the official D
   step recomputes and discards it, spec §9 item 32).
3. One all-reduce of both losses; the non-finite guard decides; both optimisers step; the EMA (encoder, quantiser
   and decoder only, spec §9 item 33) follows the tokenizer.
4. Metrics, a reconstruction grid, a checkpoint (atomic, the last K kept, exact resume).

The same code runs on 1 rank and on N (a 1-process group when not under torchrun), for images (dims 2) and
video (dims 3: L1 and LPIPS per frame, the discriminator per clip).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from open_magvit2.data import build_image_stream, build_video_stream
from open_magvit2.distributed import all_reduce_mean, all_reduce_sum
from open_magvit2.imaging import image_grid, save_image, to_uint8
from open_magvit2.losses import TokenizerLoss, TokenizerLossConfig
from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig, VideoTokenizer
from open_magvit2.tokenizer.presets import tokenizer_config
from open_magvit2.train.config import InitConfig, OptimConfig, RunConfig, ScheduleConfig
from open_magvit2.train.ema import make_ema, update_ema
from open_magvit2.train.init import load_tokenizer_init
from open_magvit2.train.optim import adam, grad_norm, lr_factor, set_lr, steps_from_epochs
from open_magvit2.train.session import TrainSession

USAGE_MAX_BITS = 24  # codebook usage is tracked exactly (a 2^K vector) up to this many bits


@dataclass(frozen=True)
class TokenizerDataConfig:
    size: int = 128  # training crops are size × size (spec §6.1: resize shorter side, random crop)
    batch_size: int = 8  # per rank and micro-batch
    num_workers: int = 4
    random_crop: bool = True  # False: centre crop
    flip: bool = False  # horizontal flips (the official recipes have none)
    frames: int = 17  # video clips: frames per clip (4k + 1)
    fps: float | None = None  # video: resample to this frame rate (None: native)


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

    def tokenizer_config(self) -> TokenizerConfig:
        try:
            return tokenizer_config(self.model).replace(**self.model_args)
        except TypeError as e:
            raise ValueError(f"model_args: {e}; the fields of TokenizerConfig are the allowed keys") from None


def _check_data_shape(cfg: TokenizerTrainConfig, model: nn.Module) -> None:
    f = model.config.spatial_factor
    if cfg.data.size % f:
        raise ValueError(f"data.size {cfg.data.size} must be a multiple of {f} (the model's downsampling factor)")
    if model.config.dims == 3:
        model._check_frames(cfg.data.frames)


def _stream(cfg: TokenizerTrainConfig, source: str | Path, session: TrainSession, dims: int) -> Any:
    d, ctx = cfg.data, session.ctx
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


class _Usage:
    """Distinct codes seen over a logging window, summed over ranks at log time."""

    def __init__(self, bits: int, device: torch.device) -> None:
        self.size = 2**bits
        self.seen = torch.zeros(self.size, device=device) if bits <= USAGE_MAX_BITS else None

    def add(self, indices: Tensor) -> None:
        if self.seen is not None:
            self.seen[indices.reshape(-1)] = 1.0

    def flush(self, session: TrainSession) -> dict[str, float]:
        if self.seen is None:
            return {}
        all_reduce_sum(self.seen, session.ctx)
        used = int((self.seen > 0).sum())
        self.seen.zero_()
        return {"codebook/used": float(used), "codebook/usage": used / self.size}


def train_tokenizer(cfg: TokenizerTrainConfig, data: str | Path, output: str | Path, resume: str | None = None) -> Path:
    """Train a tokenizer on ``data`` (image folder, WebDataset shards or a video folder) into ``output``.

    ``resume``: None (a fresh run; ``output`` must be empty), ``"auto"`` (the newest complete checkpoint in
    ``output``, or fresh when there is none) or a checkpoint/run directory. Returns the run directory.
    """
    with TrainSession("tokenizer", cfg, output, resume) as session:
        _train(cfg, data, session)
    return Path(output)


def _train(cfg: TokenizerTrainConfig, data: str | Path, session: TrainSession) -> None:
    device, ctx, run = session.device, session.ctx, cfg.run
    # ---- models, identical on every rank ----------------------------------------------------------------------
    session.seed()
    tok_cfg = cfg.tokenizer_config()
    tokenizer = (VideoTokenizer if tok_cfg.dims == 3 else ImageTokenizer)(tok_cfg)
    init_weights, init_disc = load_tokenizer_init(cfg.init, tok_cfg) if session.resume_from is None else (None, None)
    if init_weights is not None:
        tokenizer.load_state_dict(init_weights, strict=True)
    _check_data_shape(cfg, tokenizer)
    loss = TokenizerLoss(cfg.loss, dims=tok_cfg.dims)
    if init_disc is not None:
        loss.discriminator.load_state_dict(init_disc, strict=True)
    tokenizer.to(device).train()
    loss.to(device).train()
    ema = make_ema(tokenizer) if run.ema_decay is not None else None
    ddp_tok = DDP(tokenizer, device_ids=[device] if device.type == "cuda" else None)
    ddp_disc = DDP(loss.discriminator, device_ids=[device] if device.type == "cuda" else None)
    opt_g = adam(tokenizer.parameters(), cfg.optim, cfg.optim.lr)
    disc_lr = cfg.optim.disc_lr or cfg.optim.lr
    opt_d = adam(loss.discriminator.parameters(), cfg.optim, disc_lr)
    scaler = session.grad_scaler()
    stream = _stream(cfg, data, session, tok_cfg.dims)
    key = "video" if tok_cfg.dims == 3 else "image"
    accum = cfg.optim.grad_accum
    steps_per_epoch = stream.batches_per_epoch // accum if stream.batches_per_epoch else None
    if steps_per_epoch == 0:
        raise ValueError(f"{data}: too few samples for one step of {accum} × {cfg.data.batch_size} per rank "
                         f"on {ctx.world_size} rank(s)")
    if run.max_steps is None and run.epochs is None:
        raise ValueError("set run.epochs or run.max_steps in the recipe, or pass --max-steps")
    total = run.max_steps or steps_from_epochs(run.epochs, steps_per_epoch, "run.epochs")

    # ---- resume -------------------------------------------------------------------------------------------------
    step = 0
    loaded = session.load()
    if loaded is not None:
        s = loaded.state
        tokenizer.load_state_dict(s["model"])
        if ema is not None:
            ema.load_state_dict(s["ema"])
        loss.load_state_dict(s["loss"])
        opt_g.load_state_dict(s["opt_g"])
        opt_d.load_state_dict(s["opt_d"])
        scaler.load_state_dict(s["scaler"])
        stream.load_state_dict(loaded.rank_state["data"])
        step = int(s["step"])
    session.seed_per_rank()
    if loaded is not None:
        session.restore(loaded)
    session.start(total_steps=total, step=step, unit="img")
    usage = _Usage(tok_cfg.z_channels, device)
    last_layer = _last_layer(tokenizer) if cfg.loss.gen_loss_weight is None else None

    def batch_mean(t: Tensor) -> Tensor:  # LeCAM's batch means, averaged so every rank keeps the same EMA state
        return all_reduce_mean(t.detach().clone(), ctx)
    batches = iter(stream)

    def save() -> None:
        session.checkpoint(
            step,
            {"model": tokenizer.state_dict(), "ema": None if ema is None else ema.state_dict(),
             "loss": loss.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
             "scaler": scaler.state_dict(), "tokenizer_config": tok_cfg.to_dict(),
             "model_type": tokenizer.model_type},
            {"data": stream.state_dict()},
        )

    # ---- the loop -----------------------------------------------------------------------------------------------
    while step < total:
        factor = lr_factor(cfg.schedule, step, total, steps_per_epoch)
        set_lr(opt_g, cfg.optim.lr * factor)
        set_lr(opt_d, disc_lr * factor)
        micro = [next(batches)[key].to(device, non_blocking=True) for _ in range(accum)]

        # 1. generator step
        opt_g.zero_grad(set_to_none=True)
        recs, g_logs = [], None
        for i, x in enumerate(micro):
            with (ddp_tok.no_sync() if i < accum - 1 else nullcontext()), session.autocast():
                out = ddp_tok(x, sync_codebook=True)
                g = loss.generator_loss(x, out.reconstruction, out.quantizer, step, last_layer=last_layer)
            scaler.scale(g.loss / accum).backward()
            recs.append(out.reconstruction.detach())
            usage.add(out.quantizer.indices)
            g_logs = g.logs
        # 2. discriminator step on the same reconstructions
        opt_d.zero_grad(set_to_none=True)
        for i, (x, rec) in enumerate(zip(micro, recs)):
            with (ddp_disc.no_sync() if i < accum - 1 else nullcontext()), session.autocast():
                d = loss.discriminator_loss(x, rec, step, discriminator=ddp_disc, batch_mean=batch_mean)
            scaler.scale(d.loss / accum).backward()
        # 3. one decision for every rank, then the updates
        scaler.unscale_(opt_g)
        scaler.unscale_(opt_d)
        g_norm = grad_norm(tokenizer.parameters(), cfg.optim.grad_clip)
        d_norm = grad_norm(loss.discriminator.parameters(), cfg.optim.grad_clip)
        losses = session.mean_over_ranks({"g": g.loss, "d": d.loss})
        finite = all(np.isfinite([losses["g"], losses["d"]]))
        if run.precision != "fp16":  # fp16 overflow is the scaler's business: it skips and lowers the scale
            finite = finite and bool(torch.isfinite(g_norm) and torch.isfinite(d_norm))
        if session.guard.check(step, finite, "loss or gradients"):
            scaler.step(opt_g)
            scaler.step(opt_d)
            if ema is not None:
                update_ema(ema, tokenizer, run.ema_decay)
        scaler.update()
        step += 1

        # 4. logging, pictures, checkpoints
        images = accum * len(micro[0]) * ctx.world_size
        rate = session.progress.update(images, {"loss": losses["g"], "d": losses["d"], "lr": cfg.optim.lr * factor})
        if session.every(step, run.log_every, total):
            logs = session.mean_over_ranks({**g_logs, **d.logs})
            logs.update(usage.flush(session))
            logs.update({"lr": cfg.optim.lr * factor, "grad_norm/g": float(g_norm), "grad_norm/d": float(d_norm),
                         "throughput/images_per_s": rate, "nonfinite/skipped": float(session.guard.skipped),
                         "epoch": step / steps_per_epoch if steps_per_epoch else 0.0})
            session.log.log(step, logs)
        if ctx.is_main and session.every(step, run.sample_every, total):
            _grid(ema if ema is not None else tokenizer, micro[0][:8], session.run.samples / f"step_{step:07d}.png")
        if session.every(step, run.save_every, total):
            save()
