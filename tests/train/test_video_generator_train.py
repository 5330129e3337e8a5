"""The generator trainer on a video token set (CPU): a video token set trains a ``VideoGenerator`` (the (t, h, w)
RoPE, ``frames`` = the set's latent frames), 3 steps + a crash + 3 resumed steps equal 6 straight steps bit for bit,
the sample grid has one row of frames per clip, ``export`` writes a folder ``VideoGenerator.from_pretrained`` loads,
fine-tuning starts from a video run only, and every disagreement between recipe and data is one line before a run
directory exists."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main
from open_magvit2.data.pretokenize import tokenize_dataset
from open_magvit2.data.tokens import TokenShards
from open_magvit2.generator import (
    GeneratorConfig,
    ImageGenerator,
    VideoGenerator,
    VideoGeneratorConfig,
    VideoGeneratorTransformer,
)
from open_magvit2.tokenizer import TokenizerConfig, VideoTokenizer
from open_magvit2.train.config import InitConfig, load_recipe
from open_magvit2.train.generator import GeneratorTrainConfig
from open_magvit2.train.generator_arch import resolve_generator_config
from open_magvit2.train.init import load_generator_init

sys.path.insert(0, str(Path(__file__).parent))
from generator_helpers import REPO, metrics, stop_after, weights

pytest.importorskip("av")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

VIDEO_TINY = REPO / "configs" / "generator" / "video_tiny.yaml"
FRAMES, SIZE = 5, 16  # clips of 5 frames at 16² px → 3 × 4 × 4 tokens (2× in time, 4× in space)
GRID = (3, 4, 4)
SETS = ["data.batch_size=2", "run.save_every=3", "run.log_every=1", "run.sample_every=3"]


def _clip(label: int, shift: int, n: int = 9) -> np.ndarray:
    """(n, 20, 20, 3) uint8: a square of the class's colour moving right (class 0) or down (class 1)."""
    rng = np.random.default_rng(10 * label + shift)
    frames = rng.integers(0, 40, (n, 20, 20, 3), dtype=np.uint8)
    for t in range(n):
        y, x = (4, shift + t) if label == 0 else (shift + t, 4)
        frames[t, y : y + 6, x : x + 6, label] = 230
    return frames


@pytest.fixture(scope="module")
def module_one_thread():
    """``one_thread`` (tests/conftest.py) for the module fixtures, which are set up before it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def video_tokens(tmp_path_factory, module_one_thread) -> Path:
    """2 classes × 2 videos of 9 frames, cut into clips of 5 frames every 4 (8 clips) by a tiny random video
    tokenizer (10 bits)."""
    from open_magvit2.data.video_io import write_video

    root = tmp_path_factory.mktemp("video_tokens")
    torch.manual_seed(0)
    tok = VideoTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, dims=3, z_channels=10))
    tok_dir = tok.save_pretrained(root / "tok")
    for label, name in enumerate(("left_right", "up_down")):
        (root / "clips" / name).mkdir(parents=True)
        for j in range(2):
            write_video(root / "clips" / name / f"v{j}.mp4", _clip(label, 2 * j), fps=8)
    out = root / "tokens"
    tokenize_dataset(tok_dir, root / "clips", SIZE, out, frames=FRAMES, stride=4, num_workers=0, verbose=False)
    assert TokenShards(out).grid == GRID and len(TokenShards(out)) == 8
    return out


def _train(data: Path, out: Path, *args: str) -> int:
    return main(["train-generator", "--config", str(VIDEO_TINY), "--data", str(data), "--output", str(out), *args])


def _export(run: Path, out: Path, *args: str) -> dict[str, torch.Tensor]:
    assert main(["export", str(run), str(out), *args]) == 0
    return weights(out)


@pytest.fixture(scope="module")
def whole_run(video_tokens, tmp_path_factory, module_one_thread) -> Path:
    """6 straight steps of the video_tiny recipe (all dropouts and label drop on)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    assert _train(video_tokens, run, "--max-steps", "6", *[f"--set={s}" for s in SETS]) == 0
    return run


def test_interrupted_and_resumed_video_run_is_bit_identical(video_tokens, whole_run, tmp_path, monkeypatch):
    """6 steps in one run == 3 steps, a crash, and 3 resumed steps: weights, optimiser, schedule, data order and
    dropout RNG all resume exactly."""
    sets = [f"--set={s}" for s in SETS]
    stop_after(monkeypatch, 3)
    assert _train(video_tokens, tmp_path / "split", "--max-steps", "6", *sets) == 130  # the CLI's interrupt code
    monkeypatch.undo()
    assert (tmp_path / "split" / "checkpoints" / "step_0000003").is_dir()
    assert _train(video_tokens, tmp_path / "split", "--max-steps", "6", "--resume", "auto", *sets) == 0
    a, b = _export(whole_run, tmp_path / "a"), _export(tmp_path / "split", tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    split, whole = metrics(tmp_path / "split"), metrics(whole_run)
    assert [r["step"] for r in split] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in split] == [r["loss"] for r in whole]
    assert whole[0]["loss"] > 0 and whole[-1]["loss"] != whole[0]["loss"]  # it trained
    assert all(r["throughput/tokens_per_s"] > 0 for r in whole)


def test_the_sample_grid_has_one_row_of_frames_per_clip(whole_run):
    assert sorted(p.name for p in (whole_run / "samples").iterdir()) == ["step_0000003.png", "step_0000006.png"]
    grid = np.asarray(Image.open(whole_run / "samples" / "step_0000006.png"))
    # 2 classes × samples.per_class 2 = 4 rows; 5 frames of 16 px across; 2 px borders
    assert grid.shape == (4 * (SIZE + 2) + 2, FRAMES * (SIZE + 2) + 2, 3)


def test_export_gives_a_video_generator(video_tokens, whole_run, tmp_path):
    exported = _export(whole_run, tmp_path / "exp")
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["model_type"] == "video_generator"
    assert json.loads((tmp_path / "exp" / "classes.json").read_text()) == ["left_right", "up_down"]
    gen = VideoGenerator.from_pretrained(tmp_path / "exp")
    assert isinstance(gen.config, VideoGeneratorConfig) and isinstance(gen.transformer, VideoGeneratorTransformer)
    assert gen.grid == GRID and gen.config.num_classes == 2 and gen.config.factorized_bits == (3, 7)
    assert gen.config.dim == 64 and gen.transformer.rope.shape[0] == 1 + 3 * 4 * 4  # the (t, h, w) table
    # the token set's own tokenizer came along: it decodes the generator's tokens as the set's tokens were made
    tok = VideoTokenizer.from_pretrained(video_tokens / "tokenizer")
    assert all(torch.equal(v, exported[f"tokenizer.{k}"]) for k, v in tok.state_dict().items())
    labels = torch.tensor([0, 1])
    idx = gen.generate(labels, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (2, *GRID) and idx.dtype == torch.int64 and int(idx.min()) >= 0 and int(idx.max()) < 2**10
    assert torch.equal(idx, gen.generate(labels, generator=torch.Generator().manual_seed(0)))  # seeded
    clips = gen.sample_videos(labels, generator=torch.Generator().manual_seed(0))
    assert clips.shape == (2, 3, FRAMES, SIZE, SIZE) and float(clips.abs().max()) <= 1.0
    first = torch.rand(2, 3, SIZE, SIZE) * 2 - 1  # image-to-video works on the exported model too
    assert gen.sample_videos(labels, first_frame=first).shape == (2, 3, FRAMES, SIZE, SIZE)
    with pytest.raises(ValueError, match="holds a 'video_generator'"):
        ImageGenerator.from_pretrained(tmp_path / "exp")


def _data(grid=GRID, bits=10, num_classes=2):
    return SimpleNamespace(grid=grid, bits=bits, num_classes=num_classes, split=None)


def test_the_architecture_comes_from_the_video_set():
    c = resolve_generator_config("tiny", {"dim": 64}, _data())
    assert isinstance(c, VideoGeneratorConfig) and (c.frames, c.grid_size, c.seq_len) == (3, 4, 48)
    assert (c.factorized_bits, c.num_classes, c.n_layers) == ((3, 7), 2, 2)
    assert resolve_generator_config("B", {"frames": 5}, _data(grid=(5, 16, 16), bits=18)).seq_len == 1280
    image = resolve_generator_config("tiny", {}, _data(grid=(4, 4)))
    assert type(image) is GeneratorConfig  # an image set still gives the image config


@pytest.mark.parametrize(
    "args, grid, message",
    [
        ({"frames": 4}, GRID, r"^model_args\.frames=4 but the data's clips have 3 latent frames \(3×4×4 token "
                              r"grids\)$"),
        ({"grid_size": 8}, GRID, r"^model_args\.grid_size=8 but the data has a 4×4 token grid per frame \(3×4×4 per "
                                 r"clip\)$"),
        ({"frames": 3}, (4, 4), r"^model_args\.frames is for video generators, but the data is an image token set"),
        ({}, (3, 4, 2), r"^the data has a 4×2 token grid; the generator's \(t, h, w\) RoPE needs a square grid$"),
    ],
)
def test_disagreements_name_both_values(args, grid, message):
    with pytest.raises(ValueError, match=message):
        resolve_generator_config("tiny", args, _data(grid=grid))


def test_fine_tuning_starts_from_a_video_generator_only(whole_run, tmp_path):
    config = resolve_generator_config("tiny", {"dim": 64}, _data())
    sd = load_generator_init(InitConfig(checkpoint=str(whole_run)), config)  # a video run
    VideoGeneratorTransformer(config=config).load_state_dict(sd, strict=True)
    main(["export", str(whole_run), str(tmp_path / "exp")])
    exported = load_generator_init(InitConfig(checkpoint=str(tmp_path / "exp")), config)  # its export
    assert exported.keys() == sd.keys() and all(torch.equal(exported[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match=r"has another architecture .* \(frames=3 vs 5\)"):
        load_generator_init(InitConfig(checkpoint=str(whole_run)), dataclasses.replace(config, frames=5))
    image = resolve_generator_config("tiny", {"dim": 64}, _data(grid=(4, 4)))
    with pytest.raises(ValueError, match=r"holds a video generator, but the data is an image token set"):
        load_generator_init(InitConfig(checkpoint=str(tmp_path / "exp")), image)
    with pytest.raises(ValueError, match=r"holds a video generator, but the data is an image token set"):
        load_generator_init(InitConfig(checkpoint=str(whole_run)), image)
    ImageGenerator(config=image).save_pretrained(tmp_path / "image_gen")
    with pytest.raises(ValueError, match=r"holds an image generator, but the data is a video token set; fine-tune a "
                                         r"video generator from a video generator"):
        load_generator_init(InitConfig(checkpoint=str(tmp_path / "image_gen")), config)


@pytest.mark.parametrize(
    "override, line",
    [
        ("model_args.grid_size=8", "model_args.grid_size=8 but the data has a 4×4 token grid per frame (3×4×4 per "
                                   "clip)"),
        ("model_args.frames=5", "model_args.frames=5 but the data's clips have 3 latent frames (3×4×4 token grids)"),
        ("init.checkpoint={image_gen}", "init.checkpoint {image_gen} holds an image generator, but the data is a video "
                                        "token set; fine-tune a video generator from a video generator (a run or an "
                                        "export of one), or drop init.checkpoint"),
    ],
)
def test_recipe_and_video_set_disagreements_are_one_line_before_any_run_dir(video_tokens, tmp_path, capsys, override,
                                                                            line):
    image_gen = tmp_path / "image_gen"
    ImageGenerator(config=GeneratorConfig(dim=64, n_layers=2, n_intra_layers=1, n_heads=2, grid_size=4, num_classes=2,
                                          factorized_bits=(3, 7))).save_pretrained(image_gen)
    run = tmp_path / "runs" / "run"
    capsys.readouterr()
    code = _train(video_tokens, run, "--max-steps", "1", "--set", override.format(image_gen=image_gen))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"open-magvit2 train-generator: error: {line.format(image_gen=image_gen)}"], err
    assert not (tmp_path / "runs").exists()


def test_first_frame_weight_weighs_latent_frame_0(video_tokens, tmp_path, monkeypatch):
    """loss.first_frame_weight reaches the loss as a per-position weight: the 4 × 4 tokens of latent frame 0 weigh
    3, the 2 × 4 × 4 after them 1 (the weighted mean itself: tests/train/test_generator_loss.py)."""
    import open_magvit2.train.generator as trainer

    seen = []

    def spy(*args, weight=None):
        seen.append(weight)
        return trainer.generator_loss.__wrapped__(*args, weight=weight)

    spy.__wrapped__ = trainer.generator_loss
    monkeypatch.setattr(trainer, "generator_loss", spy)
    assert _train(video_tokens, tmp_path / "run", "--max-steps", "1", "--set=data.batch_size=2",
                  "--set=loss.first_frame_weight=3") == 0
    expected = torch.cat([torch.full((16,), 3.0), torch.ones(32)])
    assert len(seen) == 1 and torch.equal(seen[0], expected)
    assert metrics(tmp_path / "run")[0]["loss"] > 0


def test_the_ucf101_recipe_matches_its_compute_header():
    """configs/generator/ucf101_B.yaml: B on 5 × 16 × 16 tokens of 18 bits, 101 classes: the parameters, tokens per
    clip and clips per step its header states."""
    cfg = load_recipe(GeneratorTrainConfig, REPO / "configs" / "generator" / "ucf101_B.yaml")
    c = resolve_generator_config(cfg.model, cfg.model_args, _data(grid=(5, 16, 16), bits=18, num_classes=101))
    assert isinstance(c, VideoGeneratorConfig) and c.seq_len == 1280 and c.factorized_bits == (6, 12)
    with torch.device("meta"):
        assert VideoGeneratorTransformer(config=c).num_params() == 342_649_856
    assert cfg.data.batch_size * cfg.optim.grad_accum * 8 == 256 and cfg.run.max_steps == 50_000
    assert cfg.run.precision == "bf16" and cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.05
