"""``sample-fid`` is a resumable job: a run killed halfway and started again writes the same bytes as a run that
was never interrupted; the merge streams class files; a different run is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from open_magvit2.cli import main
from open_magvit2.generator import ImageGenerator
from open_magvit2.generator.fid import merge_npz, parts_dir, sample_class

CLASSES = 16  # conftest.GEN_CLASSES


def _args(gen_dir: Path, out: Path) -> list[str]:
    return ["sample-fid", "-c", str(gen_dir), "--num-per-class", "6", "--batch-size", "2", "--seed", "7",
            "--device", "cpu", "--no-progress", "-o", str(out)]


def test_a_killed_run_resumes_to_the_same_npz(gen_dir, tmp_path):
    whole, resumed = tmp_path / "whole.npz", tmp_path / "resumed.npz"
    assert main(_args(gen_dir, whole)) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "open_magvit2", *_args(gen_dir, resumed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = parts_dir(resumed)
    deadline = time.monotonic() + 240
    while len(list(parts.glob("class_*.npy"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(parts.glob("class_*.npy"))
    assert 2 <= len(done) < CLASSES and not resumed.exists(), "the run was not killed halfway"

    assert main(_args(gen_dir, resumed)) == 0
    assert resumed.read_bytes() == whole.read_bytes()  # no duplicate, no gap, same samples, same bytes
    assert not parts.exists()
    with np.load(resumed) as z:
        assert z["labels"].tolist() == [c for c in range(CLASSES) for _ in range(6)]
        assert z["arr_0"].shape == (CLASSES * 6, 8, 8, 3) and z["arr_0"].dtype == np.uint8
        gen = ImageGenerator.from_pretrained(gen_dir)
        assert np.array_equal(z["arr_0"][18:24], sample_class(gen, 3, 6, seed=7, batch_size=2))


def test_parts_of_a_different_run_are_refused(gen_dir, tmp_path, capsys):
    out = tmp_path / "s.npz"
    parts = parts_dir(out)
    parts.mkdir()
    (parts / "run.json").write_text('{"seed": 1}')
    assert main(_args(gen_dir, out)) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "--restart" in err and len(err.strip().splitlines()) == 1
    assert main([*_args(gen_dir, out), "--restart"]) == 0 and out.is_file() and not parts.exists()


def test_merge_streams_classes_into_an_adm_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 4, 5, 3), dtype=np.uint8) for n in (2, 3)]
    files = []
    for i, a in enumerate(arrays):
        files.append(tmp_path / f"c{i}.npy")
        np.save(files[-1], a)
    out = merge_npz(tmp_path / "m.npz", files, [7, 2])
    with np.load(out) as z:
        assert np.array_equal(z["arr_0"], np.concatenate(arrays)) and z["labels"].tolist() == [7, 7, 2, 2, 2]
    with zipfile.ZipFile(out) as z:
        assert z.namelist() == ["arr_0.npy", "labels.npy"]
    np.save(tmp_path / "bad.npy", np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="different image shapes"):
        merge_npz(tmp_path / "x.npz", [*files, tmp_path / "bad.npy"], [7, 2, 1])
