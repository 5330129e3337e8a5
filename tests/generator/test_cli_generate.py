"""``generate`` / ``sample-fid`` and the rank-independent FID sharding."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main
from open_magvit2.generator.fid import class_seed, sample_class, sample_shard, shard_classes


@pytest.fixture(scope="module")
def small_dir(small_gen, tmp_path_factory):
    return small_gen.save_pretrained(tmp_path_factory.mktemp("gen") / "small")


def test_sharding_does_not_depend_on_the_number_of_ranks(small_gen):
    classes = [0, 1, 2, 3, 4]
    kw = dict(seed=42, batch_size=2, cfg_scale=(1.5, 2.0))
    one = sample_shard(small_gen, classes, 3, rank=0, world_size=1, **kw)
    two = {}
    for rank in range(2):
        part = sample_shard(small_gen, classes, 3, rank=rank, world_size=2, **kw)
        assert not set(part) & set(two)
        two.update(part)
    assert sorted(one) == sorted(two) == classes
    for c in classes:
        assert one[c].shape == (3, 8, 8, 3) and one[c].dtype == np.uint8
        assert np.array_equal(one[c], two[c]), f"class {c}"
    assert not np.array_equal(one[0], one[1])
    assert shard_classes(classes, 1, 2) == [1, 3] and shard_classes(classes, 0, 3) == [0, 3]
    with pytest.raises(ValueError):
        shard_classes(classes, 2, 2)


def test_class_seeds_are_distinct_and_stable():
    seeds = {class_seed(s, c) for s in range(3) for c in range(1000)}
    assert len(seeds) == 3000 and class_seed(42, 7) == class_seed(42, 7) and 0 <= class_seed(0, 0) < 2**63


def test_generate_cli_writes_pngs_and_grid(small_dir, small_gen, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["generate", "--checkpoint", str(small_dir), "--classes", "1", "3", "--num-per-class", "2", "-o", str(out)]
    assert main([*argv, "--cfg", "1.5,2.0", "--top-k", "10", "--seed", "5", "--device", "cpu"]) == 0
    png = np.asarray(Image.open(out / "3" / "1.png"))
    want = sample_class(small_gen, 3, 2, seed=5, cfg_scale=(1.5, 2.0), top_k=(10, 10))
    assert np.array_equal(png, want[1])
    assert np.asarray(Image.open(out / "grid.png")).shape == (2 + 2 * 10, 2 + 2 * 10, 3)  # 2×2 tiles of 8 + pads
    assert "class 3: 2 images" in capsys.readouterr().out


def test_sample_fid_cli_writes_arr_0(small_dir, small_gen, tmp_path):
    out = tmp_path / "samples.npz"
    assert main(["sample-fid", "--checkpoint", str(small_dir), "--num-per-class", "2", "-o", str(out)]) == 0
    with np.load(out) as f:
        arr, labels = f["arr_0"], f["labels"]
    assert arr.shape == (10, 8, 8, 3) and arr.dtype == np.uint8
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert np.array_equal(arr[4:6], sample_class(small_gen, 2, 2, seed=42))  # model defaults, global seed 42


def test_cli_user_errors(small_dir, tmp_path, capsys):
    base = ["generate", "--checkpoint", str(small_dir), "-o", str(tmp_path / "x")]
    assert main([*base, "--classes", "5"]) == 2
    assert "[0, 5)" in capsys.readouterr().err
    assert main([*base, "--classes", "1", "--cfg", "1,2,3"]) == 2
    assert "PRE,POST" in capsys.readouterr().err
    assert main(["generate", "--classes", "1", "--num-per-class", "1", "-o", str(tmp_path / "y")]) == 0
    assert "no --checkpoint: using the bundled demo generator" in capsys.readouterr().err  # the demo default


def test_help_texts(capsys):
    for cmd in ("generate", "sample-fid"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "--num-per-class" in capsys.readouterr().out


def test_generator_argument_is_respected(small_gen):
    """An explicit torch.Generator drives every draw (same seed → same indices, different seed → different)."""
    labels = torch.tensor([0, 1, 2, 3])
    a = small_gen.generate(labels, generator=torch.Generator().manual_seed(1))
    b = small_gen.generate(labels, generator=torch.Generator().manual_seed(1))
    c = small_gen.generate(labels, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_fid_under_torchrun_equals_one_process(small_dir, tmp_path):
    """Two real ranks (gloo, CPU) write the same .npz as one process, and clean up their part files."""
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    args = [
        "sample-fid",
        "--checkpoint",
        str(small_dir),
        "--num-per-class",
        "2",
        "--classes",
        "0",
        "2",
        "3",
        "--seed",
        "3",
    ]
    assert main([*args, "-o", str(one)]) == 0
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "open_magvit2.cli",
        *args,
        "-o",
        str(two),
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(one) as a, np.load(two) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["labels"], b["labels"])
        assert a["arr_0"].shape == (6, 8, 8, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]
