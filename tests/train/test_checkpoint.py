"""Checkpoints: atomic directories, pruning, newest-complete lookup, weights-only loading, RNG streams, and a
SIGKILL in the middle of a save."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from open_magvit2.distributed import DistContext
from open_magvit2.train.checkpoint import (
    Checkpointer,
    capture_rng,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    restore_rng,
)

CTX = DistContext()


def test_save_load_round_trip(tmp_path):
    ck = Checkpointer(tmp_path / "checkpoints", CTX, keep_last=2)
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 3, "names": ["a", "b"], "opt": {"lr": 0.1}}
    path = ck.save(3, state, {"data": {"epoch": 1, "batch": 7}})
    assert path.name == "step_0000003" and ck.latest() == path
    loaded = load_checkpoint(path, CTX)
    torch.testing.assert_close(loaded.state["model"]["w"], state["model"]["w"])
    assert loaded.state["names"] == ["a", "b"] and loaded.rank_state == {"data": {"epoch": 1, "batch": 7}}
    assert loaded.meta["step"] == 3 and loaded.meta["world_size"] == 1 and loaded.shard is None


def test_keep_last_and_stale_temporaries(tmp_path):
    ck = Checkpointer(tmp_path, CTX, keep_last=2)
    (tmp_path / ".tmp-step_0000009").mkdir(parents=True)  # a save killed midway
    (tmp_path / "step_0000008").mkdir()  # a directory without meta.json is not a checkpoint
    for s in (1, 2, 3):
        ck.save(s, {"step": s}, {})
    assert [p.name for p in ck.list()] == ["step_0000002", "step_0000003"]
    assert not (tmp_path / ".tmp-step_0000009").exists()
    assert resolve_resume("auto", tmp_path).name == "step_0000003"
    assert resolve_resume(str(tmp_path / "step_0000002"), tmp_path).name == "step_0000002"
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path / "empty") is None
    with pytest.raises(FileNotFoundError, match="--resume auto"):
        resolve_resume(str(tmp_path / "nothing"), tmp_path)


def test_world_size_must_match(tmp_path):
    ck = Checkpointer(tmp_path, CTX)
    path = ck.save(1, {}, {})
    with pytest.raises(ValueError, match="written by 1 ranks"):
        load_checkpoint(path, DistContext(rank=0, world_size=2))


def test_loading_never_unpickles_code(tmp_path):
    ck = Checkpointer(tmp_path, CTX)
    path = ck.save(1, {"x": 1}, {})

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"ranks": [{}], "evil": Evil()}, path / "state.pt")
    with pytest.raises(ValueError, match="unreadable checkpoint file"):
        load_checkpoint(path, CTX)
    assert not (tmp_path / "pwned").exists()


def test_rng_capture_restore_replays_every_stream():
    state = capture_rng()
    draws = (torch.rand(3), random.random(), np.random.rand(2))
    restore_rng(state)
    again = (torch.rand(3), random.random(), np.random.rand(2))
    torch.testing.assert_close(draws[0], again[0], rtol=0, atol=0)
    assert draws[1] == again[1] and np.array_equal(draws[2], again[2])


SLOW_SAVE = textwrap.dedent(
    """
    import sys, time, torch
    from open_magvit2.distributed import DistContext
    import open_magvit2.train.checkpoint as c
    ck = c.Checkpointer(sys.argv[1], DistContext())
    ck.save(1, {"w": torch.ones(4)}, {})
    real = c._save
    def slow(obj, path):  # write half of the second checkpoint, then hang until killed
        path.write_bytes(b"PK partial")
        print("saving", flush=True)
        time.sleep(60)
    c._save = slow
    ck.save(2, {"w": torch.zeros(4)}, {})
    """
)


@pytest.mark.timeout(60)
def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saving"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".tmp-step_0000002").is_dir()  # the interrupted save
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000001"]
    loaded = load_checkpoint(resolve_resume("auto", tmp_path), CTX)
    torch.testing.assert_close(loaded.state["w"], torch.ones(4))
    Checkpointer(tmp_path, CTX).save(2, {"w": torch.zeros(4)}, {})
    assert not (tmp_path / ".tmp-step_0000002").exists()
