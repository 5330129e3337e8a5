"""The run directory, metrics log and non-finite guard."""

from __future__ import annotations

import json

import pytest

from open_magvit2.train.run import MetricsLog, NonFiniteError, NonFiniteGuard, RunDir, read_metrics


def test_fresh_start_refuses_a_used_directory(tmp_path):
    RunDir(tmp_path / "new").check_fresh_start()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(ValueError, match="--resume auto"):
        RunDir(tmp_path / "used").check_fresh_start()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        RunDir(tmp_path / "file").check_fresh_start()


def test_resume_config_check(tmp_path):
    run = RunDir(tmp_path)
    cfg = {"optim": {"lr": 1e-4}, "run": {"max_steps": 10, "seed": 0}}
    run.write_config(cfg)
    assert run.check_resume_config(cfg) == []
    assert run.check_resume_config({**cfg, "run": {"max_steps": 20, "seed": 0}}) == ["run.max_steps"]
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.0001 → 0\.0003"):
        run.check_resume_config({**cfg, "optim": {"lr": 3e-4}})


def test_metrics_log_truncates_on_resume(tmp_path):
    run = RunDir(tmp_path)
    log = MetricsLog(run, enabled=True)
    for s in (1, 2, 3, 4):
        log.log(s, {"loss/total": 1.0 / s, "lr": float("nan")})
    log.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert read_metrics(tmp_path)[0]["lr"] == "nan"
    log = MetricsLog(run, enabled=True, resume_step=2)  # resumed from the step-2 checkpoint
    log.log(3, {"loss/total": 0.5})
    log.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert json.loads(run.metrics.read_text().splitlines()[-1])["loss/total"] == 0.5
    assert not MetricsLog(RunDir(tmp_path / "other"), enabled=False).enabled  # other ranks write nothing
    assert not (tmp_path / "other").exists()


def test_guard_counts_and_stops(capsys):
    g = NonFiniteGuard(max_consecutive=3)
    assert g.check(0, True, "loss")
    assert not g.check(1, False, "loss") and not g.check(2, False, "loss")
    assert g.check(3, True, "loss") and g.consecutive == 0 and g.skipped == 2
    state = g.state_dict()
    g2 = NonFiniteGuard(3)
    g2.load_state_dict(state)
    assert g2.skipped == 2 and g2.last_bad_step == 2
    g.check(4, False, "loss")
    g.check(5, False, "loss")
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps .*\(last at step 6\)"):
        g.check(6, False, "loss")
    assert "step 1: non-finite loss" in capsys.readouterr().err
