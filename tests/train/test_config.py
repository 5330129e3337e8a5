"""Recipes: YAML → dataclasses, unknown keys named, --set overrides, types checked."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from open_magvit2.train.config import (
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    apply_overrides,
    build,
    dump_yaml,
    load_recipe,
    to_dict,
)


@dataclass(frozen=True)
class Inner:
    a: int = 1
    b: float = 0.5
    c: tuple[float, float] = (0.1, 0.2)
    d: str | None = None


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    opt: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def test_build_nested_with_conversion():
    cfg = build(Outer, {"name": "y", "inner": {"a": 3, "b": 2, "c": [1, 2]}, "opt": {"lr": 3e-4}})
    assert cfg.inner == Inner(a=3, b=2.0, c=(1.0, 2.0))
    assert isinstance(cfg.inner.b, float) and cfg.opt.lr == 3e-4 and cfg.opt.betas == (0.5, 0.9)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"aa": 1}}, "unknown config key inner.aa; inner has: a, b, c, d"),
        ({"nmae": "x"}, "unknown config key nmae"),
        ({"inner": {"a": "three"}}, "inner.a must be int"),
        ({"inner": {"a": True}}, "inner.a must be int"),
        ({"inner": {"c": [1, 2, 3]}}, "inner.c must have 2 items"),
        ({"inner": 5}, "inner must be a mapping"),
        ({"opt": {"lr": -1}}, "lr must be a finite number > 0"),
        ({"run": {"precision": "fp8"}}, "run.precision must be one of"),
    ],
)
def test_build_errors_name_the_key(data, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build(Outer, data)


def test_overrides_and_recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: base\ninner:\n  a: 2\nopt:\n  betas: [0.9, 0.95]\n")
    cfg = load_recipe(Outer, path, ["inner.b=25e-3", "inner.b=0.25", "opt.grad_clip=1.0", "inner.d=null", "name=z"],
                      run={"max_steps": 7, "seed": None})
    assert cfg.name == "z" and cfg.inner.a == 2 and cfg.inner.b == 0.25 and cfg.inner.d is None
    assert cfg.opt.betas == (0.9, 0.95) and cfg.opt.grad_clip == 1.0 and cfg.run.max_steps == 7
    assert cfg.run.seed == 0  # None from a CLI flag leaves the recipe value
    assert build(Outer, to_dict(cfg)) == cfg  # the written config.yaml round-trips
    import yaml

    assert build(Outer, yaml.safe_load(dump_yaml(to_dict(cfg)))) == cfg


def test_override_errors(tmp_path):
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ValueError, match="is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])
    path = tmp_path / "r.yaml"
    path.write_text("inner: {a: 1}\n")
    with pytest.raises(ValueError, match=r"r\.yaml: unknown config key inner\.zz"):
        load_recipe(Outer, path, ["inner.zz=1"])
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="a recipe is a mapping"):
        load_recipe(Outer, path)
    with pytest.raises(FileNotFoundError):
        load_recipe(Outer, tmp_path / "missing.yaml")


def test_floats_without_a_dot():
    """YAML 1.1 reads 3e-4 (no dot) as a string; float fields accept it, other strings stay errors."""
    assert build(Outer, {"opt": {"lr": "3e-4"}}).opt.lr == 3e-4
    assert load_recipe(Outer, None, ["opt.lr=5e-4"]).opt.lr == 5e-4
    with pytest.raises(ValueError, match=r"inner\.b must be float"):
        build(Outer, {"inner": {"b": "fast"}})


def test_schedule_validation():
    with pytest.raises(ValueError, match=r"schedule\.kind"):
        ScheduleConfig(kind="linear")
