"""Checkpoints: atomic directories, pruning, the newest intact checkpoint (with fallback past a damaged one), the
one EMA policy, weights-only loading, RNG streams, and a SIGKILL in the middle of a save."""

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
    checkpoint_weights,
    list_checkpoints,
    newest_checkpoint,
    read_checkpoint,
    resolve_resume,
    restore_rng,
    run_weights,
)

CTX = DistContext()


def test_save_load_round_trip(tmp_path):
    ck = Checkpointer(tmp_path / "checkpoints", CTX, keep_last=2)
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 3, "names": ["a", "b"], "opt": {"lr": 0.1}}
    path = ck.save(3, state, {"data": {"epoch": 1, "batch": 7}})
    assert path.name == "step_0000003" and ck.latest() == path
    loaded = read_checkpoint(path, CTX)
    torch.testing.assert_close(loaded.state["model"]["w"], state["model"]["w"])
    assert loaded.state["names"] == ["a", "b"] and loaded.rank_state == {"data": {"epoch": 1, "batch": 7}}
    assert loaded.meta["step"] == 3 and loaded.meta["world_size"] == 1 and loaded.shard is None


def test_keep_last_and_stale_temporaries(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ck = Checkpointer(ckpts, CTX, keep_last=2)
    (ckpts / ".tmp-step_0000009").mkdir(parents=True)  # a save killed midway
    (ckpts / "step_0000008").mkdir()  # a directory without meta.json is not a checkpoint
    for s in (1, 2, 3):
        ck.save(s, {"step": s}, {})
    assert [p.name for p in ck.list()] == ["step_0000002", "step_0000003"]
    assert not (ckpts / ".tmp-step_0000009").exists()
    assert resolve_resume("auto", tmp_path).path.name == "step_0000003"
    assert resolve_resume(str(ckpts / "step_0000002"), tmp_path).path.name == "step_0000002"
    assert resolve_resume(str(tmp_path), tmp_path / "elsewhere").path.name == "step_0000003"  # another run
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path / "empty") is None
    with pytest.raises(FileNotFoundError, match="--resume auto"):
        resolve_resume(str(tmp_path / "nothing"), tmp_path)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    ck = Checkpointer(tmp_path / "checkpoints", CTX, keep_last=3)
    for s in (1, 2):
        ck.save(s, {"step": s, "kind": "tokenizer", "model": {"w": torch.full((2,), float(s))}, "ema": None}, {})
    newest = tmp_path / "checkpoints" / "step_0000002"
    (newest / "state.pt").write_bytes((newest / "state.pt").read_bytes()[:100])  # damaged after the fact
    assert newest_checkpoint(tmp_path).path.name == "step_0000001"
    assert "skipping step_0000002: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="unreadable checkpoint file"):  # asked for by name: never replaced
        newest_checkpoint(newest)
    sd, which, loaded = run_weights(tmp_path, "tokenizer")
    assert which == "raw" and loaded.path.name == "step_0000001" and torch.equal(sd["w"], torch.ones(2))


def test_non_finite_weights_are_never_taken(tmp_path, capsys):
    ck = Checkpointer(tmp_path / "checkpoints", CTX, keep_last=3)
    for s, v in ((1, 1.0), (2, float("inf"))):
        ck.save(s, {"step": s, "kind": "tokenizer", "model": {"w": torch.full((2,), v)}, "ema": None}, {})
    sd, _, loaded = run_weights(tmp_path, "tokenizer")
    assert loaded.path.name == "step_0000001" and torch.isfinite(sd["w"]).all()
    err = capsys.readouterr().err
    assert "skipping step_0000002: " in err and "holds non-finite weights" in err and "using step_0000001" in err
    with pytest.raises(ValueError, match=r"holds non-finite weights \(1 tensor, e.g. w\)"):
        run_weights(tmp_path / "checkpoints" / "step_0000002", "tokenizer")
    with pytest.raises(ValueError, match="is a tokenizer run checkpoint, not a generator one"):
        run_weights(tmp_path / "checkpoints" / "step_0000001", "generator")


def test_one_ema_policy(tmp_path):
    ck = Checkpointer(tmp_path / "with" / "checkpoints", CTX)
    ema, raw = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    ck.save(1, {"step": 1, "kind": "tokenizer", "model": raw, "ema": ema}, {})
    Checkpointer(tmp_path / "without" / "checkpoints", CTX).save(1, {"step": 1, "kind": "tokenizer", "model": raw,
                                                                    "ema": None}, {})
    with_ema, without = newest_checkpoint(tmp_path / "with"), newest_checkpoint(tmp_path / "without")
    assert checkpoint_weights(with_ema)[1] == "ema" and checkpoint_weights(with_ema, "raw")[1] == "raw"
    assert checkpoint_weights(without)[1] == "raw"  # the run's own result: it keeps no EMA
    with pytest.raises(ValueError, match=r"keeps no EMA weights .*use --weights raw"):
        checkpoint_weights(without, "ema")
    with pytest.raises(ValueError, match="weights must be 'ema' or 'raw'"):
        checkpoint_weights(with_ema, "bogus")


def test_world_size_must_match(tmp_path):
    ck = Checkpointer(tmp_path, CTX)
    path = ck.save(1, {}, {})
    with pytest.raises(ValueError, match="written by 1 ranks"):
        read_checkpoint(path, DistContext(rank=0, world_size=2))


def test_loading_never_unpickles_code(tmp_path):
    ck = Checkpointer(tmp_path, CTX)
    path = ck.save(1, {"x": 1}, {})

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"ranks": [{}], "evil": Evil()}, path / "state.pt")
    with pytest.raises(ValueError, match="unreadable checkpoint file"):
        read_checkpoint(path, CTX)
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
    loaded = newest_checkpoint(tmp_path)
    torch.testing.assert_close(loaded.state["w"], torch.ones(4))
    Checkpointer(tmp_path, CTX).save(2, {"w": torch.zeros(4)}, {})
    assert not (tmp_path / ".tmp-step_0000002").exists()
