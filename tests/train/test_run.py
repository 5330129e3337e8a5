"""The run directory (checked before anything is written, created atomically), the metrics log and the
non-finite guard."""

from __future__ import annotations

import json

import pytest

from open_magvit2.train.guard import NonFiniteError, NonFiniteGuard
from open_magvit2.train.metrics import MetricsLog, read_metrics
from open_magvit2.train.rundir import RunDir


def test_fresh_start_refuses_a_used_directory(tmp_path):
    RunDir(tmp_path / "new").check_fresh()
    assert not (tmp_path / "new").exists()  # checking writes nothing
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(ValueError, match="--resume auto to continue"):
        RunDir(tmp_path / "used").check_fresh()
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is an existing file"):
        RunDir(tmp_path / "file").check_fresh()
    unstarted = RunDir(tmp_path / "unstarted")
    unstarted.create({"run": {}})
    with pytest.raises(ValueError, match="never reached its first checkpoint; pass --resume auto"):
        unstarted.check_fresh()


def test_create_is_atomic_and_discard_removes_an_unstarted_run(tmp_path):
    run = RunDir(tmp_path / "a" / "run")

    def failing_writer(d):
        (d / "classes.json").write_text("[]")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        run.create({"run": {"seed": 0}}, [failing_writer])
    assert not run.root.exists() and [p.name for p in (tmp_path / "a").iterdir()] == []  # no temporary left
    run.create({"run": {"seed": 0}}, [lambda d: (d / "classes.json").write_text("[]")])
    assert sorted(p.name for p in run.root.iterdir()) == ["classes.json", "config.yaml"]
    run.discard()  # no checkpoint yet: the run goes
    assert not run.root.exists()


def test_resume_recipe_check(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = {"optim": {"lr": 1e-4, "betas": [0.5, 0.9]}, "run": {"max_steps": 10, "seed": 0}}
    run.create(cfg)
    assert run.check_recipe(cfg) == {}
    assert run.check_recipe({**cfg, "run": {"max_steps": 20, "seed": 0}}) == {"run.max_steps": [10, 20]}
    lowered = {**cfg, "optim": {"lr": 1e-5, "betas": [0.5, 0.9]}}  # how a run recovers from a blow-up
    assert run.check_recipe(lowered) == {"optim.lr": [1e-4, 1e-5]}
    with pytest.raises(ValueError, match=r"run\.seed: 0 → 1"):
        run.check_recipe({**cfg, "run": {"max_steps": 10, "seed": 1}})
    with pytest.raises(ValueError, match=r"optim\.betas"):
        run.check_recipe({**cfg, "optim": {"lr": 1e-4, "betas": [0.9, 0.95]}})


def test_metrics_log_truncates_on_resume_and_records_events(tmp_path):
    path, tb = tmp_path / "metrics.jsonl", tmp_path / "tb"
    log = MetricsLog(path, tb, enabled=True)
    for s in (1, 2, 3, 4):
        log.log(s, {"loss/total": 1.0 / s, "lr": float("nan")})
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    assert read_metrics(tmp_path)[0]["lr"] == "nan"
    log = MetricsLog(path, tb, enabled=True, resume_step=2)  # resumed from the step-2 checkpoint
    log.event(2, "resume", changed={"optim.lr": [1e-4, 1e-5]})
    log.log(3, {"loss/total": 0.5})
    log.close()
    records = read_metrics(path, events=True)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert [r["step"] for r in records] == [1, 2, 2, 3] and records[2]["changed"] == {"optim.lr": [1e-4, 1e-5]}
    assert json.loads(path.read_text().splitlines()[-1])["loss/total"] == 0.5
    assert not MetricsLog(tmp_path / "o" / "m.jsonl", tb, enabled=False).enabled  # other ranks write nothing
    assert not (tmp_path / "o").exists()


def test_a_truncated_last_line_is_skipped_and_a_bad_line_is_named(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "l": 1.0}\n{"step": 2, "l": 0.5}\n{"step": 3, "l"')  # killed mid-write
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert "ignoring the unfinished last line 3" in capsys.readouterr().err
    log = MetricsLog(path, tmp_path / "tb", enabled=True, resume_step=2)  # a resume drops it
    log.close()
    assert path.read_text() == '{"step": 1, "l": 1.0}\n{"step": 2, "l": 0.5}\n'
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON record"):
        read_metrics(path)


def test_guard_counts_and_stops(capsys):
    g = NonFiniteGuard(max_consecutive=3)
    assert g.check(1, True, "loss") and not g.open
    assert not g.check(2, False, "loss") and not g.check(3, False, "loss") and g.open
    assert g.check(4, True, "loss") and g.consecutive == 0 and g.skipped == 2 and not g.open
    g2 = NonFiniteGuard(3)
    g2.load_state_dict(g.state_dict())
    assert g2.skipped == 2 and g2.last_bad_step == 3
    g.check(5, False, "loss")
    g.check(6, False, "loss")
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps with non-finite loss \(steps 5–7\)"):
        g.check(7, False, "loss")
    assert "step 2: non-finite loss; step skipped (1 in a row, 1 in all)" in capsys.readouterr().err
