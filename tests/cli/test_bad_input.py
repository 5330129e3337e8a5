"""Bad input, as a new user would give it, answered everywhere the same way.

Every CLI row must exit with status 2 and one line on stderr (no traceback) that matches the row's pattern, and
leave no output behind (no file, no empty folder). Every API row must raise the row's exception with a message
that matches. "fixed" rows are inputs that used to give silently wrong results and now give the right one.
"""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2 import LFQ, ImageGenerator, ImageTokenizer, VideoTokenizer
from open_magvit2.cli import main
from open_magvit2.imaging import load_image

from official import FIXTURES

IMAGE_CKPT = FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"  # 2× downsampling


def write_bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width × height pixels: Pillow refuses it as a decompression bomb."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[16:29])  # after the 8-byte signature, the IHDR chunk's length and type
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29], data[29:33] = ihdr, struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory, gen_dir, video_ckpt, clip, photos) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("bad")
    e = SimpleNamespace(d=d, ckpt=str(IMAGE_CKPT), gen=str(gen_dir), vckpt=str(video_ckpt), clip=str(clip),
                        photos=str(photos), img=str(photos / "a.png"), out=str(d / "out"), clips=str(clip.parent))
    (d / "file.txt").write_text("a file, not a folder")
    e.file = str(d / "file.txt")
    e.folder = str(d)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    good = (photos / "a.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    for name, arr in {"zero.npy": np.zeros((0, 0), np.int64), "big.npy": np.full((4, 4), 2**18, np.int64),
                      "float.npy": np.zeros((4, 4), np.float32), "flat.npy": np.zeros(16, np.int64),
                      "one.npy": np.zeros((1, 1), np.int64)}.items():
        np.save(d / name, arr)
    np.savez(d / "archive.npz", arr_0=np.zeros((4, 4), np.int64))
    (d / "archive.npz").rename(d / "renamed.npy")
    for sub in ("p", "q"):  # two x.npy in different folders
        (d / sub).mkdir()
        np.save(d / sub / "x.npy", np.zeros((4, 4), np.int64))
    (d / "trunc.ckpt").write_bytes(IMAGE_CKPT.read_bytes()[:5000])
    saved = ImageTokenizer.from_pretrained(IMAGE_CKPT).save_pretrained(d / "short_weights")
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])  # an interrupted copy: the header whole, the tensors not
    write_bomb_png(d / "bomb.png", 20000, 20000)
    (d / "text.ckpt").write_text("not a checkpoint")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'PWNED'}",))

    torch.save({"state_dict": {"w": Evil()}}, d / "evil.ckpt")
    np.savez(d / "no_arr0.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(d / "images.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))  # evaluate-video-generator sample files
    np.savez(d / "float_clips.npz", arr_0=np.zeros((2, 9, 8, 8, 3), np.float32))
    np.savez(d / "clips8.npz", arr_0=np.zeros((2, 8, 8, 8, 3), np.uint8))
    np.savez(d / "clips.npz", arr_0=np.zeros((2, 9, 8, 8, 3), np.uint8), labels=np.zeros(2, np.int64))
    from open_magvit2.eval.backbones import write_random_backbones  # evaluate-tokenizer's rFID network

    e.inception = str(write_random_backbones(d / "hub", only=("inception",))["inception"])
    from open_magvit2 import VideoGenerator  # generate-video, sample-fvd: random, 5 classes, 8×8 frames
    from open_magvit2.generator import VideoGeneratorConfig
    from open_magvit2.tokenizer import TOKENIZER_PRESETS

    vtok = TOKENIZER_PRESETS["ucf101_128_L_tiny"].replace(ch=32, ch_mult=(2, 2, 1), z_channels=10)  # 4× space, time
    for name, frames in (("vgen", 3), ("vgen5", 2)):  # clips of 9 frames; of 5 (too short for FVD)
        vcfg = VideoGeneratorConfig(dim=64, n_layers=1, n_intra_layers=1, n_heads=2, grid_size=2, frames=frames,
                                    num_classes=5, factorized_bits=(4, 6))
        setattr(e, name, str(VideoGenerator(config=vcfg, tokenizer_config=vtok).save_pretrained(d / name)))
    return e


# ---- the CLI: (id, argv, stderr pattern); {name} is filled from env -------------------------------------------
CLI_CASES = [
    ("output-is-a-file", "reconstruct {img} -c {ckpt} -o {file}", r"is an existing file; name a folder"),
    ("output-under-a-file", "reconstruct {img} -c {ckpt} -o {file}/sub", r"is a file, not a folder"),
    ("output-in-sys", "reconstruct {img} -c {ckpt} -o /sys/open-magvit2-out", r"/sys"),
    ("output-in-proc", "tokenize {img} -c {ckpt} -o /proc/open-magvit2/x", r"/proc"),
    ("video-output-is-a-folder", "tokenize-video {clip} -c {vckpt} -o {folder}", r"is an existing folder"),
    ("device-foo", "reconstruct {img} -c {ckpt} -o {out} --device foo", r"not a torch device: 'foo'"),
    ("size-0", "reconstruct {img} -c {ckpt} -o {out} --size 0", r"expected a whole number >= 1"),
    ("size-not-multiple", "reconstruct {img} -c {ckpt} -o {out} --size 33", r"multiple of .* factor 2"),
    ("batch-size-0", "tokenize {img} -c {ckpt} -o {out} --batch-size 0", r"whole number >= 1"),
    ("missing-input", "reconstruct {d}/nope.png -c {ckpt} -o {out}", r"no such image file or folder"),
    ("glob-matches-nothing", "reconstruct '{d}/*.jpeg' -c {ckpt} -o {out}", r"no image files"),
    ("corrupt-image", "reconstruct {d}/corrupt.png -c {ckpt} -o {out}",
     r"error: 1 of 1 images could not be read: corrupt.png \(cannot read the image \(.+\); is it a complete image "
     r"file\?\)$"),
    ("truncated-image", "tokenize {d}/truncated.png -c {ckpt} -o {out}",
     r"error: 1 of 1 images could not be read: truncated.png \(cannot read the image \(.+\); is it a complete "
     r"image file\?\)$"),
    ("corrupt-image-strict", "reconstruct {d}/corrupt.png -c {ckpt} -o {out} --strict",
     r"error: .*/corrupt.png: cannot read the image \(.+\); is it a complete image file\?$"),
    ("decompression-bomb", "reconstruct {d}/bomb.png -c {ckpt} -o {out}",
     r"error: 1 of 1 images could not be read: bomb.png \(the image is too large \(400 megapixels, over Pillow's "
     r"limit of 179\): Pillow refuses it as a possible decompression bomb; scale it down first, or if you trust the "
     r"file raise PIL.Image.MAX_IMAGE_PIXELS in Python\)$"),
    ("size-beyond-memory", "reconstruct {img} -c {ckpt} -o {out} --size 100000",
     r"error: --size 100000 would need at least [\d,.]+ GiB of host memory for the tokenizer's activations \(one "
     r"image of 100000×100000 pixels\), more than the [\d,.]+ GiB free; lower --size$"),
    ("size-beyond-memory-batch", "tokenize {photos} -c {ckpt} -o {out} --size 50000",
     r"error: --size 50000 would need at least [\d,.]+ GiB of host memory for the tokenizer's activations \(2 "
     r"images of 50000×50000 pixels\), more than the [\d,.]+ GiB free; lower --size or --batch-size$"),
    ("demo-class-out-of-range", "generate --classes 12 -o {out}", r"\[0, 10\)"),  # no -c: the demo, 10 digits
    ("checkpoint-path-missing", "reconstruct {img} -c ckpts/x.ckpt -o {out}", r"ckpts/x.ckpt: no such file"),
    ("checkpoint-truncated", "reconstruct {img} -c {d}/trunc.ckpt -o {out}",
     r"error: .*/trunc.ckpt: truncated or corrupt checkpoint \(5,000 bytes; the zip archive that torch.save writes "
     r"has no end\); download or copy it again$"),
    ("weights-truncated", "tokenize {img} -c {d}/short_weights -o {out}",
     r"error: .*/short_weights/model.safetensors: truncated or corrupt checkpoint \(100,000 bytes; safetensors: Error "
     r"while deserializing header: incomplete metadata, file not fully covered\); download or copy it again$"),
    ("checkpoint-text", "reconstruct {img} -c {d}/text.ckpt -o {out}", r"not a PyTorch checkpoint"),
    ("checkpoint-pickle", "reconstruct {img} -c {d}/evil.ckpt -o {out}", r"evil.ckpt"),
    ("video-ckpt-for-images", "reconstruct {img} -c {vckpt} -o {out}", r"VideoTokenizer.*reconstruct-video"),
    ("image-ckpt-for-generate", "generate -c {ckpt} --classes 1 -o {out}", r"not a ImageGenerator.*AR_256"),
    ("tokens-0x0", "detokenize {d}/zero.npy -c {ckpt} -o {out}", r"non-empty integer array"),
    ("tokens-npz-renamed", "detokenize {d}/renamed.npy -c {ckpt} -o {out}", r"an .npz archive"),
    ("tokens-out-of-range", "detokenize {d}/big.npy -c {ckpt} -o {out}", r"\[0, 2\^18\)"),
    ("tokens-float", "detokenize {d}/float.npy -c {ckpt} -o {out}", r"integer array"),
    ("tokens-1d", "detokenize {d}/flat.npy -c {ckpt} -o {out}", r"\(h, w\) or \(B, h, w\)"),
    ("tokens-1x1", "detokenize {d}/one.npy -c {ckpt} -o {out}", r"at least 2 positions"),
    ("tokens-same-name", "detokenize {d}/p/x.npy {d}/q/x.npy -c {ckpt} -o {out}", r"same name"),
    ("cfg-inf", "generate -c {gen} --classes 1 -o {out} --cfg inf", r"cfg_scale must be a finite number"),
    ("cfg-nan", "generate -c {gen} --classes 1 -o {out} --cfg nan", r"cfg_scale must be a finite number"),
    ("cfg-negative", "generate -c {gen} --classes 1 -o {out} --cfg -1", r"cfg_scale must be >= 0"),
    ("temperature-nan", "generate -c {gen} --classes 1 -o {out} --temperature nan", r"temperature must be a finite"),
    ("temperature-0", "sample-fid -c {gen} -o {out}.npz --temperature 0", r"temperature must be > 0"),
    ("top-p-0", "generate -c {gen} --classes 1 -o {out} --top-p 0", r"top_p must lie in \(0, 1\]"),
    ("top-k-fraction", "generate -c {gen} --classes 1 -o {out} --top-k 1.5", r"PRE,POST"),
    ("cfg-three-values", "generate -c {gen} --classes 1 -o {out} --cfg 1.5,2,2", r"--cfg 1.5,2,2: the model has 2 "
     r"sub-tokens; give one number for all or 2 comma-separated ones \(PRE,POST\)$"),
    ("top-p-three-values", "sample-fid -c {gen} -o {out}.npz --top-p 0.9,1,1", r"--top-p 0.9,1,1: the model has 2 "
     r"sub-tokens"),
    ("class-out-of-range", "generate -c {gen} --classes 99 -o {out}", r"\[0, 16\)"),
    ("num-per-class-0", "sample-fid -c {gen} -o {out}.npz --num-per-class 0", r"whole number >= 1"),
    ("fid-output-is-a-folder", "sample-fid -c {gen} -o {folder}", r"is an existing folder; name a file"),
    # generate-video and sample-fvd: a video generator, first frames of its frame size, its classes
    ("generate-video-first-frame-size", "generate-video -c {vgen} --classes 1 --first-frame {img} -o {out}",
     r"error: .*/a\.png: the first frame is 36×40 pixels; this model makes 8×8 frames: pass 8×8 images \(resize or "
     r"crop them first\)$"),
    ("generate-video-image-generator", "generate-video -c {gen} --classes 1 -o {out}",
     r"error: .*/tiny holds a ImageGenerator, not a VideoGenerator; pass a video generator checkpoint \(an image "
     r"generator samples images with generate and sample-fid; tokenizers reconstruct, they do not generate\)$"),
    ("generate-video-tokenizer", "generate-video -c {vckpt} --classes 1 -o {out}",
     r"error: .*/video.ckpt holds a VideoTokenizer, not a VideoGenerator; pass a video generator checkpoint"),
    ("generate-video-class-out-of-range", "generate-video -c {vgen} --classes 2 5 -o {out}",
     r"error: class ids must lie in \[0, 5\); got \[5\]$"),
    ("generate-with-video-generator", "generate -c {vgen} --classes 1 -o {out}",
     r"error: .*/vgen holds a VideoGenerator, not a ImageGenerator; pass an AR_256_\* checkpoint \(a video "
     r"generator samples clips with generate-video; tokenizers reconstruct, they do not generate\)$"),
    ("sample-fvd-image-generator", "sample-fvd -c {gen} --num-per-class 1 -o {out}.npz",
     r"error: .*/tiny holds a ImageGenerator, not a VideoGenerator; pass a video generator checkpoint \(an image "
     r"generator samples images with generate and sample-fid"),
    ("sample-fvd-class-out-of-range", "sample-fvd -c {vgen} --classes 7 --num-per-class 1 -o {out}.npz",
     r"error: class ids must lie in \[0, 5\); got \[7\]$"),
    ("sample-fvd-clips-too-short", "sample-fvd -c {vgen5} --num-per-class 1 -o {out}.npz",
     r"error: .*/vgen5 makes clips of 5 frames; the I3D of FVD needs at least 9, so evaluate-video-generator could "
     r"not read them$"),
    ("max-frames-0", "reconstruct-video {clip} -c {vckpt} -o {out}.mp4 --max-frames 0", r"whole number >= 1"),
    ("window-4", "tokenize-video {clip} -c {vckpt} -o {out}.npy --window 4", r"2k\+1"),
    ("tile-word", "tokenize-video {clip} -c {vckpt} -o {out}.npy --tile big", r"--tile 'big'"),
    ("video-not-a-video", "reconstruct-video {file} -c {vckpt} -o {out}.mp4", r"cannot read video"),
    ("two-videos", "tokenize-video {clip} {clip} -c {vckpt} -o {out}.npy", r"one video at a time"),
    ("onnx-output-exists", "export-onnx -c {ckpt} --part encoder -o {file}",
     r"error: output file .*/file.txt already exists; choose a new name or delete it first$"),
    ("serve-port-99999", "serve --port 99999",
     r"argument --port: expected a port number from 1 to 65535, got '99999'$"),
    ("serve-unknown-host", "serve --host no.such.host.invalid",
     r"error: --host no.such.host.invalid: no such host \(.+\); pass an address of this machine: 127.0.0.1 \(this "
     r"machine only\) or 0.0.0.0 \(every network\)$"),
    ("serve-all-none", "serve --tokenizer none --video-tokenizer none --generator none --video-generator none",
     r"error: no model to serve: --tokenizer, --video-tokenizer, --generator and --video-generator are all 'none'; "
     r"name at least one model \(a checkpoint, or demo\)$"),
    ("serve-image-generator-as-video", "serve --tokenizer none --video-tokenizer none --generator none "
     "--video-generator {gen}", r"error: --video-generator .*/tiny: it holds a ImageGenerator, not a VideoGenerator; "
     r"pass it to --generator$"),
    ("eval-data-missing", "evaluate-tokenizer -c {ckpt} --data {d}/none -o {out}", r"no such image file"),
    ("eval-corrupt-image-strict", "evaluate-tokenizer -c {ckpt} --data {d}/corrupt.png --inception-weights "
     "{inception} --no-lpips --no-progress -o {out} --strict",
     r"error: .*/corrupt.png: cannot read the image \(.+\); is it a complete image file\?$"),
    ("eval-samples-no-arr0", "evaluate-generator --samples {d}/no_arr0.npz --reference {d}/no_arr0.npz",
     r"no 'arr_0' array"),
    # evaluate-video-generator: samples, reference and I3D file are checked before any clip is read
    ("evalvg-samples-missing", "evaluate-video-generator --samples {d}/none.npz --reference {clips} -o {out}",
     r"error: video samples file not found: .*/none\.npz$"),
    ("evalvg-samples-no-arr0", "evaluate-video-generator --samples {d}/no_arr0.npz --reference {clips} -o {out}",
     r"error: .*/no_arr0\.npz has no 'arr_0' array \(it holds \['images'\]\); video sample files store clips as "
     r"arr_0 uint8 \(N, T, H, W, 3\) clips, labels int64 \(N,\)$"),
    ("evalvg-samples-images", "evaluate-video-generator --samples {d}/images.npz --reference {clips} -o {out}",
     r"error: .*/images\.npz: 'arr_0' must be uint8 \(N, T, H, W, 3\) clips, got uint8 \(2, 8, 8, 3\); it holds "
     r"images: evaluate them with evaluate-generator$"),
    ("evalvg-samples-float", "evaluate-video-generator --samples {d}/float_clips.npz --reference {clips} -o {out}",
     r"error: .*/float_clips\.npz: 'arr_0' must be uint8 \(N, T, H, W, 3\) clips, got float32 \(2, 9, 8, 8, 3\)$"),
    ("evalvg-samples-8-frames", "evaluate-video-generator --samples {d}/clips8.npz --reference {clips} -o {out}",
     r"error: .*/clips8\.npz: 'arr_0' holds clips of 8 frames; the I3D of FVD needs at least 9 \(it halves time "
     r"three times, then pools over 2 steps\)$"),
    ("evalvg-reference-no-videos", "evaluate-video-generator --samples {d}/clips.npz --reference {photos} -o {out}",
     r"error: no video files \(\.avi, \.mp4, \.webm, \.mkv, \.mov\) found in .*photos\d*$"),
    ("evalvg-i3d-weights-missing", "evaluate-video-generator --samples {d}/clips.npz --reference {clips} "
     "--i3d-weights {d}/none.pt -o {out}", r"error: weights file not found: .*/none\.pt\. Expected I3D Kinetics-400"),
    # tokenize-dataset: a token grid too small for the tokenizer and the generator is refused before any write
    ("tokenize-dataset-grid-1x1", "tokenize-dataset -c {ckpt} --data {photos} --size 2 --output {out} --workers 0",
     r"--size 2 must be a multiple of 2 and at least 4 \(a 2×2 token grid"),
    ("tokenize-dataset-demo-grid-1x1", "tokenize-dataset --data {photos} --size 8 --output {out}",
     r"--size 8 must be a multiple of 8 and at least 16 \(a 2×2 token grid"),  # the demo tokenizer: 8×
    ("tokenize-dataset-data-is-a-file", "tokenize-dataset -c {ckpt} --data {img} --size 4 --output {out}",
     r"a\.png is a file; pass the folder that holds the images"),
    ("tokenize-shards-two-inputs", "tokenize {img} {img} -c {ckpt} -o {out} --shards",
     r"--shards reads one image folder or WebDataset shards"),
    # tokenize-dataset with a video tokenizer: clips of --frames every --stride frames ({clip}: 7 frames)
    ("tokenize-dataset-frames-0", "tokenize-dataset -c {vckpt} --data {clips} --output {out} --frames 0",
     r"argument --frames: expected a whole number >= 1, got '0'$"),
    ("tokenize-dataset-stride-0", "tokenize-dataset -c {vckpt} --data {clips} --output {out} --stride 0",
     r"argument --stride: expected a whole number >= 1, got '0'$"),
    ("tokenize-dataset-clip-too-short", "tokenize-dataset -c {vckpt} --data {clip} --output {out} --frames 9",
     r"error: .*/clip.mp4: the video has 7 frames, fewer than --frames 9; pass --frames 7 or fewer$"),
    ("tokenize-dataset-only-clip-too-short", "tokenize-dataset -c {vckpt} --data {clips} --output {out}",
     r"error: .*/clip.mp4: the video has 7 frames, fewer than --frames 17; pass --frames 7 or fewer$"),
    ("tokenize-dataset-frames-not-2k+1", "tokenize-dataset -c {vckpt} --data {clips} --output {out} --frames 4",
     r"error: --frames 4 does not fit this video tokenizer: a clip has 1 \+ k·2 frames \(2 = 2\^1 temporal "
     r"downsamplings\); pass --frames 3 or 5$"),
    ("tokenize-dataset-frames-image-tokenizer", "tokenize-dataset -c {ckpt} --data {photos} --output {out} --frames 5",
     r"error: --frames and --stride cut videos into clips, but .*tokenizer.ckpt is an image tokenizer; pass a video "
     r"tokenizer, or drop them$"),
    ("tokenize-dataset-images-to-video-tokenizer", "tokenize-dataset -c {vckpt} --data {photos} --output {out}",
     r"error: --data .* holds images, not videos; the checkpoint is a video tokenizer: pass an image tokenizer to "
     r"tokenize images, or a folder of videos \(CLASS/\*.avi\|mp4\)$"),
    ("tokenize-dataset-videos-to-image-tokenizer", "tokenize-dataset -c {ckpt} --data {clips} --output {out}",
     r"error: --data .* holds videos, not images; the checkpoint is an image tokenizer: pass a video tokenizer "
     r"\(e.g. -c video_128_262144\) to tokenize videos$"),
    ("tokenize-dataset-video-file-to-image-tokenizer", "tokenize-dataset -c {ckpt} --data {clip} --output {out}",
     r"error: .*/clip.mp4 is a video; the checkpoint is an image tokenizer"),
]


@pytest.mark.parametrize(("argv", "pattern"), [pytest.param(a, p, id=i) for i, a, p in CLI_CASES])
def test_cli_bad_input(env, argv, pattern, capsys):
    args = [a.strip("'") for a in argv.format(**vars(env)).split()]
    try:
        code = main(args)
    except SystemExit as e:  # argparse: a usage line and an error line
        code = e.code
    err = capsys.readouterr().err.strip()
    notices = ("usage:", "  ", "no --checkpoint: using the bundled demo")  # argparse's usage, the demo default
    lines = [ln for ln in err.splitlines() if not ln.startswith(notices)]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    out = Path(env.out)
    assert not any(p.exists() for p in (out, Path(f"{out}.npz"), Path(f"{out}.mp4"), Path(f"{out}.npy"))), err
    assert not (Path(env.d) / "PWNED").exists()  # a malicious pickle never ran


def test_full_disk_leaves_no_half_written_file(env, tmp_path, monkeypatch, capsys):
    """`tokenize` on a disk that fills up mid-write: one line, and no truncated .npy (atomic writes)."""
    real_save = np.save

    def save_then_fail(f, arr, *args, **kwargs):
        real_save(f, arr[: len(arr) // 2], *args, **kwargs)  # half the bytes reach the disk, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device", str(getattr(f, "name", f)))

    monkeypatch.setattr(np, "save", save_then_fail)
    out = tmp_path / "tok"
    assert main(["tokenize", env.img, "-c", env.ckpt, "-o", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "No space left on device; free some space or write elsewhere" in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.rglob("*"))  # no partial file, no temporary file, no empty folder


def test_malicious_pickle_says_so(env):
    from open_magvit2.checkpoints.official import load_official_state_dict

    with pytest.raises(ValueError, match="arbitrary pickle code"):
        load_official_state_dict(Path(env.d) / "evil.ckpt")
    assert not (Path(env.d) / "PWNED").exists()


# ---- the Python API: (id, call, exception, message pattern) ------------------------------------------------------
@pytest.fixture(scope="module")
def tok() -> ImageTokenizer:
    return ImageTokenizer.from_pretrained(IMAGE_CKPT)


@pytest.fixture(scope="module")
def gen(gen_dir) -> ImageGenerator:
    return ImageGenerator.from_pretrained(gen_dir)


API_CASES: list[tuple[str, Callable, type[Exception], str]] = [
    ("from_pretrained-None", lambda e: ImageTokenizer.from_pretrained(None), TypeError, "released name"),
    ("video-from_pretrained-list", lambda e: VideoTokenizer.from_pretrained(["x"]), TypeError, "released name"),
    ("lfq-bits-str", lambda e: LFQ(bits="18"), TypeError, "bits must be an int"),
    ("lfq-bits-float", lambda e: LFQ(bits=18.5), TypeError, "bits must be an int"),
    ("lfq-bits-bool", lambda e: LFQ(bits=True), TypeError, "bits must be an int"),
    ("encode-nan", lambda e: e.tok.encode(torch.full((1, 3, 8, 8), float("nan"))), ValueError, "NaN or inf"),
    ("encode-inf", lambda e: e.tok.encode(torch.full((1, 3, 8, 8), float("inf"))), ValueError, "NaN or inf"),
    ("encode-0..255", lambda e: e.tok.encode(torch.full((1, 3, 8, 8), 200.0)), ValueError, r"x / 127.5 - 1"),
    ("encode-uint8", lambda e: e.tok.encode(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)), ValueError, "float"),
    ("encode-4-channels", lambda e: e.tok.encode(torch.zeros(1, 4, 8, 8)), ValueError, "3 channels"),
    ("encode-3d", lambda e: e.tok.encode(torch.zeros(3, 8, 8)), ValueError, "4-D tensor"),
    ("encode-odd-size", lambda e: e.tok.encode(torch.zeros(1, 3, 9, 8)), ValueError, "multiples of 2"),
    ("encode-empty", lambda e: e.tok.encode(torch.zeros(0, 3, 8, 8)), ValueError, "non-empty"),
    ("encode-numpy", lambda e: e.tok.encode(np.zeros((1, 3, 8, 8), np.float32)), TypeError, "torch.Tensor"),
    ("decode-numpy", lambda e: e.tok.decode(np.zeros((1, 4, 4), np.int64)), TypeError, "torch.from_numpy"),
    ("decode-list", lambda e: e.tok.decode([[[0, 1], [2, 3]]]), TypeError, "torch.Tensor"),
    ("decode-1x1", lambda e: e.tok.decode(torch.zeros(1, 1, 1, dtype=torch.long)), ValueError, "at least 2"),
    ("decode-float", lambda e: e.tok.decode(torch.zeros(1, 4, 4)), TypeError, "integer"),
    ("decode-range", lambda e: e.tok.decode(torch.full((1, 4, 4), -1)), ValueError, r"\[0, 2\^18\)"),
    ("generate-empty-labels", lambda e: e.gen.generate(torch.zeros(0, dtype=torch.long)), ValueError, "empty"),
    ("generate-top_k-True", lambda e: e.gen.generate(torch.tensor([1]), top_k=True), ValueError, "top_k"),
    ("generate-cfg-nan", lambda e: e.gen.generate(torch.tensor([1]), cfg_scale=float("nan")), ValueError, "finite"),
    ("generate-float-labels", lambda e: e.gen.generate(torch.tensor([1.0])), ValueError, "integer tensor"),
    ("from_pretrained-weights-bogus", lambda e: ImageTokenizer.from_pretrained(IMAGE_CKPT, weights="bogus"),
     ValueError, r"^weights must be 'ema' or 'raw' \(the averaged weights every official number uses, or the trained "
     r"ones\), got 'bogus'$"),
    ("from_pretrained-folder-weights-bogus", lambda e: ImageTokenizer.from_pretrained("demo", weights="EMA"),
     ValueError, r"^weights must be 'ema' or 'raw' .*, got 'EMA'$"),
    ("generate-generator-int", lambda e: e.gen.generate(torch.tensor([1]), generator=123), TypeError,
     r"^generator must be a torch.Generator or None, got int; for a seed pass "
     r"generator=torch.Generator\(device\).manual_seed\(seed\)$"),
    ("load_image-folder", lambda e: load_image(e.env.d), FileNotFoundError, "image not found"),
    ("load_image-size-0", lambda e: load_image(e.env.img, 0), ValueError, "positive int"),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), [pytest.param(c, x, p, id=i) for i, c, x, p in API_CASES])
def test_api_bad_input(env, tok, gen, call, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        call(SimpleNamespace(env=env, tok=tok, gen=gen))
    assert "\n" not in str(info.value)


# ---- inputs that used to give silently wrong results ---------------------------------------------------------
def test_fixed_16_bit_greyscale_png_is_not_white(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "g8.png")
    x16, x8 = load_image(tmp_path / "g16.png", None), load_image(tmp_path / "g8.png", None)
    assert torch.equal(x16, x8) and float(x16.mean()) < 0.1  # the same picture, not almost all white


def test_fixed_float64_and_float16_inputs_encode_like_float32(tok):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ref = tok.encode(x)
        assert torch.equal(tok.encode(x.double()), ref)
        half = tok.encode(x.half())  # rounded to float16 first, then computed in the model's float32
        assert torch.equal(half, tok.encode(x.half().float()))


def test_fixed_atomic_writes_follow_the_umask(tmp_path):
    from open_magvit2.fileio import atomic_write

    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda p: p.write_text("x"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# ---- batch jobs: a file that cannot be read is skipped, counted and reported at the end (exit 2); --strict stops ----
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith("no --checkpoint")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def folder_with_a_bad_image(env, tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a.png", "c.png", "d.png"):
        (d / name).write_bytes(Path(env.img).read_bytes())
    (d / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    return d


def test_batch_rule_reconstruct_skips_the_bad_file_and_reports_it(env, folder_with_a_bad_image, tmp_path, capsys):
    out, strict = tmp_path / "out", tmp_path / "strict"
    argv = ["reconstruct", str(folder_with_a_bad_image), "-c", env.ckpt, "--size", "16", "--workers", "0",
            "--no-progress"]
    assert main([*argv, "-o", str(out), "--batch-size", "2"]) == 2
    assert re.fullmatch(r"open-magvit2 reconstruct: error: 1 of 4 images could not be read: b.png \(cannot read the "
                        r"image \(.+\); is it a complete image file\?\)", _one_error_line(capsys))
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_{k}.png" for n in "acd" for k in ("compare", "recon")]

    assert main([*argv, "-o", str(strict), "--batch-size", "1", "--strict"]) == 2
    assert re.fullmatch(r"open-magvit2 reconstruct: error: .*/b.png: cannot read the image \(.+\); is it a complete "
                        r"image file\?", _one_error_line(capsys))
    assert sorted(p.name for p in strict.iterdir()) == ["a_compare.png", "a_recon.png"]  # stopped at b.png


def test_batch_rule_tokenize_shards_records_the_skipped_file(env, folder_with_a_bad_image, tmp_path, capsys):
    from open_magvit2.data.tokens import read_index

    out = tmp_path / "tokens"
    argv = ["tokenize", str(folder_with_a_bad_image), "-c", env.ckpt, "-o", str(out), "--size", "16", "--shards",
            "--shard-size", "2", "--workers", "0", "--no-progress"]
    assert main(argv) == 2
    assert _one_error_line(capsys).startswith("open-magvit2 tokenize: error: 1 of 4 images could not be read: b.png (")
    index = read_index(out)
    assert index["num_samples"] == 3 and [s["count"] for s in index["shards"]] == [1, 2]
    assert [key for key, _ in index["skipped"]] == ["b.png"]
    (folder_with_a_bad_image / "b.png").write_bytes(Path(env.img).read_bytes())  # fixed: the rerun completes the set
    assert main(argv) == 0
    assert read_index(out)["num_samples"] == 4 and read_index(out)["skipped"] == []


def test_batch_rule_detokenize_leaves_nothing_of_a_bad_file(env, tmp_path, capsys):
    d = tmp_path / "tokens"
    d.mkdir()
    np.save(d / "good.npy", np.zeros((2, 4, 4), np.int64))
    np.save(d / "late.npy", np.stack([np.zeros((4, 4), np.int64), np.full((4, 4), 2**18, np.int64)]))
    out = tmp_path / "images"
    assert main(["detokenize", str(d), "-c", env.ckpt, "-o", str(out), "--batch-size", "1", "--no-progress"]) == 2
    assert re.fullmatch(r"open-magvit2 detokenize: error: 1 of 2 token files could not be read: late.npy \(.*"
                        r"\[0, 2\^18\).*\)", _one_error_line(capsys))
    assert sorted(p.name for p in out.iterdir()) == ["good_0.png", "good_1.png"]  # not late_0.png, decoded first


def test_serve_port_in_use(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--port", str(port), "--video-tokenizer", "none", "--generator", "none"]) == 2
    assert _one_error_line(capsys) == (f"open-magvit2 serve: error: cannot listen on 127.0.0.1:{port}: another "
                                       "program is using the port; pass another --port")


@pytest.mark.parametrize("opset", [5, 17, 99])
def test_export_onnx_opset_out_of_range(env, tmp_path, capsys, opset):
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
    newest = onnx.defs.onnx_opset_version()
    out = tmp_path / "tok.onnx"
    assert main(["export-onnx", "-c", env.ckpt, "--part", "decoder", "--size", "8", "--opset", str(opset),
                 "-o", str(out)]) == 2
    assert _one_error_line(capsys) == (
        f"open-magvit2 export-onnx: error: opset {opset} cannot be written: the exporter writes opsets 18 to {newest} "
        f"(18 is the first with the decoder's BitwiseAnd; {newest} is the newest the installed onnx package knows)")
    assert not any(tmp_path.iterdir())
