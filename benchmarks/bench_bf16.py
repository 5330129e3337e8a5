"""What the bf16 fast path changes: tokens, decoded images, PSNR and speed against float32, same weights, same run.

bf16 = the model loaded with ``dtype=torch.bfloat16`` (``from_pretrained(..., dtype=)``, what ``--dtype bf16``
does): every weight bf16; the AGN statistics, GroupNorm statistics and the LFQ sign decisions as ``precision.py``
says. float32 is the default and the exact path. Three parts (``--parts``):

* ``fixtures`` — the official golden fixtures (``tests/fixtures/official``, loaded as ``tests/official.py`` does):
  the tiny image tokenizers (18 and 14 bits), the tiny video tokenizer and the ``ar_tiny`` generator, against the
  **official float32 outputs** stored in the fixtures: token agreement of the bf16 encoder with the official
  indices, bf16 decode of the official indices against the official decode, and for ``ar_tiny`` the teacher-forced
  argmax agreement and logit error, and greedy CFG sampling against the official tokens. Their weights are
  integer-hash formulas (reconstructions of ~9 dB), so PSNR against the input means nothing there and is left out.
* ``demo`` — the bundled demo models (``from_pretrained("demo")``, docs/model_zoo.md), trained weights, on data held
  out of their training (``demo/data.py``): the image tokenizer on scikit-image's ``chelsea`` and ``coffee`` as
  ``reconstruct`` reads them by default (shorter side resized to the native 128, centre crop); the video tokenizer on
  the bundled clip's camera motion over ``coffee`` and over ``chelsea``, 9 frames of 64 × 64 (its training size);
  the generator on 1 digit per class (CFG and sampling at the model's defaults, one seed for both dtypes). Sizes are
  small because bf16 runs 5–20× slower than float32 on a CPU without bf16 units.
* ``released`` — the released ``imagenet_256_L`` / ``imagenet_128_L`` architectures with random weights
  (PyTorch's default init; no released weights offline) on ``--images`` smooth random images: the cost at full size.

Columns: "same index" = share of tokens whose full index is equal in bf16 and float32; "flipped bits / token" =
mean number of differing index bits per token; decode max / mean |Δ| = bf16 decode vs float32 decode of the *same*
(float32) tokens (the decoder's own bf16 error; images in [−1, 1]); PSNR (uint8, as the project's metrics) of the
bf16 reconstruction against the float32 one and of each against the input; time = wall clock at torch's default
thread count of **one** encode + decode per dtype, after a warm-up (bf16 is so slow on a CPU without bf16 units
that repeats would take an hour), for the generator sampling + decode, dtypes interleaved, medians of
``--repeats``; ratio bf16 / float32 (< 1: bf16 is faster). Whether the CPU has AMX-BF16 tiles is printed: without
them (or AVX-512-BF16) bf16 matmuls and convolutions are emulated and *slower* than float32.

Usage: ``.venv/bin/python benchmarks/bench_bf16.py [--parts fixtures demo released] [--presets ...]
[--images 1] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # official.py: the golden fixtures
import limits  # noqa: E402
from bench_tokenizer import smooth_images  # noqa: E402
from open_magvit2.imaging import psnr_uint8, to_uint8  # noqa: E402

BF16 = torch.bfloat16
TABLE = ("| model | data | tokens | same index | flipped bits / token | decode max / mean abs Δ | PSNR bf16 vs fp32 "
         "rec. (dB) | PSNR vs input fp32 / bf16 (dB) | wall s fp32 / bf16 | bf16 / fp32 time |")


def index_stats(ref: torch.Tensor, other: torch.Tensor, bits: int) -> tuple[float, float]:
    """(share of equal indices, mean number of differing bits per token) of two integer index tensors."""
    shifts = torch.arange(bits)
    flips = ((ref.long().flatten()[:, None] >> shifts) ^ (other.long().flatten()[:, None] >> shifts)) & 1
    return (ref.long() == other.long()).float().mean().item(), flips.sum(1).float().mean().item()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two float images in [−1, 1] after the project's uint8 conversion; channels at dim −3 or −4."""
    if a.dim() == 5:  # video (B, 3, T, H, W) → frames
        a, b = a.transpose(1, 2).flatten(0, 1), b.transpose(1, 2).flatten(0, 1)
    return psnr_uint8(to_uint8(a.float()), to_uint8(b.float()))


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall clock of each function, interleaved, after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def row(model: str, data: str, r: dict) -> str:
    def f(key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "—"

    dec = f"{r['dec_max']:.3f} / {r['dec_mean']:.4f}" if "dec_max" in r else "—"
    inp = f"{r['psnr_in32']:.2f} / {r['psnr_in16']:.2f}" if "psnr_in32" in r else "—"
    t = f"{r['t32']:.3f} / {r['t16']:.3f}" if "t32" in r else "—"
    ratio = f"{r['t16'] / r['t32']:.2f}" if "t32" in r else "—"
    return (f"| {model} | {data} | {r['tokens']} | {r['agree']:.2%} | {r['flips']:.3f} | {dec} | "
            f"{f('psnr_rec', '.2f')} | {inp} | {t} | {ratio} |")


def roundtrip(tok, x: torch.Tensor) -> torch.Tensor:
    """encode + decode: what ``reconstruct`` runs."""
    return tok.decode(tok.encode(x))


def clocked(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@torch.inference_mode()
def tokenizer_pair(tok32, tok16, x: torch.Tensor, time_it: bool = True) -> dict:
    """Tokens, decode error and PSNRs of bf16 vs float32 on input x (image or video batch); the time of one encode
    + decode of each (float32 first; bf16 runs after its own warm-up on the float32 tokens)."""
    tok32.decode(tok32.encode(x))  # float32 warm-up
    i32, e32 = clocked(lambda: tok32.encode(x))
    d32, t32 = clocked(lambda: tok32.decode(i32))
    d16same = tok16.decode(i32).float()  # also the bf16 warm-up
    i16, e16 = clocked(lambda: tok16.encode(x))
    d16, t16 = clocked(lambda: tok16.decode(i16).float())
    agree, flips = index_stats(i32, i16, tok32.config.z_channels)
    r = {"tokens": i32.numel(), "agree": agree, "flips": flips, "dec_max": (d16same - d32).abs().max().item(),
         "dec_mean": (d16same - d32).abs().mean().item(), "psnr_rec": psnr(d16, d32), "psnr_in32": psnr(d32, x),
         "psnr_in16": psnr(d16, x)}
    if time_it:
        r.update(t32=e32 + t32, t16=e16 + t16)
    return r


# ---- fixtures: against the official float32 outputs --------------------------------------------------------------


@torch.inference_mode()
def fixture_rows(work: Path) -> list[str]:
    from open_magvit2 import ImageTokenizer, VideoTokenizer
    from open_magvit2.generator import ImageGenerator

    from official import io_tensors, write_official_ckpt

    rows = []
    for name, cls, cases in (("image_tokenizer_tiny", ImageTokenizer, ("images", "images_32x48")),
                             ("image_tokenizer_tiny_z14", ImageTokenizer, ("images",)),
                             ("video_tokenizer_tiny", VideoTokenizer, ("video_t1", "video_t5"))):
        ckpt = write_official_ckpt(name, work / f"{name}.ckpt")
        tok = cls.from_pretrained(ckpt, dtype=BF16)
        io = io_tensors(name)
        for case in cases:
            ref_idx, ref_dec = io[f"ema/{case}/indices"], io[f"ema/{case}/decoded"]
            agree, flips = index_stats(ref_idx, tok.encode(io[case]), tok.config.z_channels)
            err = (tok.decode(ref_idx).float() - ref_dec).abs()
            r = {"tokens": ref_idx.numel(), "agree": agree, "flips": flips, "dec_max": err.max().item(),
                 "dec_mean": err.mean().item(), "psnr_rec": psnr(tok.decode(tok.encode(io[case])).float(), ref_dec)}
            rows.append(row(f"{name} (official fp32 outputs)", f"{case} {tuple(io[case].shape)}", r))

    gen = ImageGenerator.from_pretrained(write_official_ckpt("ar_tiny", work / "ar_tiny.ckpt"), dtype=BF16)
    io = io_tensors("ar_tiny")
    bits_pre = gen.config.factorized_bits[0]
    lp, lq = gen.logits(io["tf/pre"] + 2**bits_pre * io["tf/post"], io["tf/labels"])
    pre_agree = (lp.float().argmax(-1) == io["tf/logits_pre"].argmax(-1)).float().mean().item()
    post_agree = (lq.float().argmax(-1) == io["tf/logits_post_argmax"]).float().mean().item()
    lerr = (lp.float() - io["tf/logits_pre"]).abs()
    greedy = gen.generate(torch.tensor([0, 3, 7]), cfg_scale=(1.9, 2.0), top_k=1).flatten(1)
    ref = io["cfg_on/pre"] + 2**bits_pre * io["cfg_on/post"]
    agree, flips = index_stats(ref, greedy, gen.config.bits)
    first = [int((greedy[b] != ref[b]).nonzero()[0]) if (greedy[b] != ref[b]).any() else ref.shape[1]
             for b in range(ref.shape[0])]
    rows.append(row("ar_tiny (official fp32 outputs)", "greedy CFG (1.9, 2.0) samples, labels 0 3 7",
                    {"tokens": ref.numel(), "agree": agree, "flips": flips}))
    notes = [f"ar_tiny teacher-forced: argmax agreement pre {pre_agree:.2%}, post {post_agree:.2%}; logits_pre "
             f"max / mean abs Δ {lerr.max().item():.3f} / {lerr.mean().item():.4f} (logit range "
             f"{io['tf/logits_pre'].min().item():.1f}..{io['tf/logits_pre'].max().item():.1f}); greedy samples: first "
             f"differing token at positions {first} of {ref.shape[1]} (after it the contexts differ)"]
    return [*rows, "", *notes]


# ---- demo models: trained weights, held-out data ------------------------------------------------------------------


def demo_rows(repeats: int) -> list[str]:
    from PIL import Image

    from open_magvit2 import ImageTokenizer, VideoTokenizer
    from open_magvit2.checkpoints.hub import native_size
    from open_magvit2.data.video_io import uint8_to_video
    from open_magvit2.demo.data import HELD_OUT_PHOTOS, demo_clip, load_photo
    from open_magvit2.generator import ImageGenerator
    from open_magvit2.imaging import center_crop, pil_to_tensor, resize_shorter_side

    rows = []
    tok32, tok16 = ImageTokenizer.from_pretrained("demo"), ImageTokenizer.from_pretrained("demo", dtype=BF16)
    size = native_size(tok32.config.spatial_factor)
    for name in HELD_OUT_PHOTOS:  # as `reconstruct` reads a photo by default: shorter side to 128, centre crop
        photo = Image.fromarray(load_photo(name))
        x = pil_to_tensor(center_crop(resize_shorter_side(photo, size), size))
        r = tokenizer_pair(tok32, tok16, x)
        rows.append(row("demo image tokenizer", f"held-out `{name}`, {size}² (reconstruct's default)", r))
    vt32, vt16 = VideoTokenizer.from_pretrained("demo"), VideoTokenizer.from_pretrained("demo", dtype=BF16)
    for name in HELD_OUT_PHOTOS:  # the bundled clip's camera motion, at the model's 64² training size, 9 frames
        clip = uint8_to_video(torch.from_numpy(demo_clip(name, frames=9, size=64)).permute(3, 0, 1, 2))
        label = f"demo-clip camera motion over held-out `{name}`"
        r = tokenizer_pair(vt32, vt16, clip[None])
        rows.append(row("demo video tokenizer", f"{label}, {clip.shape[1]}×{clip.shape[2]}×{clip.shape[3]}", r))

    g32, g16 = ImageGenerator.from_pretrained("demo"), ImageGenerator.from_pretrained("demo", dtype=BF16)
    labels = torch.arange(10)

    def sample(gen: ImageGenerator) -> torch.Tensor:
        return gen.generate(labels, generator=torch.Generator().manual_seed(0))

    with torch.inference_mode():
        t32, t16 = sample(g32), sample(g16)
        agree, flips = index_stats(t32, t16, g32.config.bits)
        im32, im16 = g32.decode(t32), g16.decode(t16).float()
        im16same = g16.decode(t32).float()
        lp32, lq32 = g32.logits(t32.flatten(1), labels)
        lp16, lq16 = g16.logits(t32.flatten(1), labels)
    t = timed({"fp32": lambda: g32.decode(sample(g32)), "bf16": lambda: g16.decode(sample(g16))}, repeats)
    rows.append(row("demo generator (digits)", "1 sample per class, one seed, default CFG", {
        "tokens": t32.numel(), "agree": agree, "flips": flips, "dec_max": (im16same - im32).abs().max().item(),
        "dec_mean": (im16same - im32).abs().mean().item(), "psnr_rec": psnr(im16, im32), "t32": t["fp32"],
        "t16": t["bf16"]}))
    tf = [(a.float().argmax(-1) == b.argmax(-1)).float().mean().item() for a, b in ((lp16, lp32), (lq16, lq32))]
    return [*rows, "", f"demo generator teacher-forced on the float32 samples: bf16 argmax agreement pre {tf[0]:.2%}, "
                   f"post {tf[1]:.2%}; logits max abs Δ {(lp16.float() - lp32).abs().max().item():.3f} (pre), "
                   f"{(lq16.float() - lq32).abs().max().item():.3f} (post)"]


# ---- released architectures, random weights: the cost at full size ----------------------------------------------


def released_rows(images: int, presets: list[str]) -> list[str]:
    from open_magvit2.tokenizer import ImageTokenizer, tokenizer_config

    rows, speed = [], []
    for preset in presets:
        size = {"imagenet_256_L": 256, "imagenet_128_L": 128}[preset]
        torch.manual_seed(0)
        config = tokenizer_config(preset)
        state = ImageTokenizer(config).state_dict()
        tok32 = ImageTokenizer.from_config_and_weights(config, state)
        tok16 = ImageTokenizer.from_config_and_weights(config, state, dtype=BF16)
        x = smooth_images(images, size, seed=1)
        r = tokenizer_pair(tok32, tok16, x)
        with torch.inference_mode():
            flops = limits.count_flops(roundtrip, tok32, x)
        rows.append(row(f"{preset} (random weights)", f"{images} smooth random image(s) {size}²", r))
        speed.append(f"{preset}: {flops / 1e9:.0f} GFLOP per encode + decode; fp32 "
                     f"{flops / r['t32'] / 1e9:.1f} GFLOP/s = {limits.fraction_of_gemm(flops, r['t32']):.0%} of the "
                     f"fp32 GEMM, bf16 {flops / r['t16'] / 1e9:.1f} GFLOP/s = "
                     f"{limits.fraction_of_gemm(flops, r['t16'], BF16):.0%} of the bf16 GEMM")
    return [*rows, "", *speed]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["fixtures", "demo", "released"],
                    choices=["fixtures", "demo", "released"])
    ap.add_argument("--images", type=int, default=1, help="random images per released model")
    ap.add_argument("--presets", nargs="+", default=["imagenet_128_L", "imagenet_256_L"],
                    choices=["imagenet_128_L", "imagenet_256_L"], help="released architectures (part 'released')")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_float32_matmul_precision("highest")
    print(limits.machine_header())
    print(limits.limits_line(dtypes=(torch.float32, BF16)))
    print(f"CPU AMX-BF16: {'yes' if limits.has_amx_bf16() else 'no'}")
    header = [TABLE, "|" + "---|" * (TABLE.count("|") - 1)]
    for part in args.parts:
        print(f"\n{part}:\n")
        if part == "fixtures":
            with tempfile.TemporaryDirectory() as work:
                rows = fixture_rows(Path(work))
        elif part == "demo":
            rows = demo_rows(args.repeats)
        else:
            rows = released_rows(args.images, args.presets)
        print("\n".join(header + rows), flush=True)
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
