"""The run-checkpoint format stays the one that runs were written in before the trainers were restructured, so an
old run still resumes: the key tree of ``state.pt`` (weights, EMA, optimisers, scaler, loss state, configs, guard,
every rank's RNG streams and data position) and the fields of ``meta.json`` are those of
``tests/fixtures/run_format_v1.json``. (When the restructure landed, a 3-step run of the old code resumed with the
new code gave weights bit-identical to the old code's own 6-step run, for both trainers.)

The model configs stored with a checkpoint may gain fields that have defaults (e.g. the tokenizer's
``entropy_group_bits``): a config written without them must still load, to the same model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from open_magvit2.cli import main
from open_magvit2.generator import GeneratorConfig
from open_magvit2.tokenizer import TokenizerConfig

sys.path.insert(0, str(Path(__file__).parent))
from generator_helpers import TINY as GEN_TINY
from generator_helpers import token_set
from tokenizer_helpers import TINY, photo_folder

FORMAT = json.loads((Path(__file__).parents[1] / "fixtures" / "run_format_v1.json").read_text())


def _tree(x: object, path: str, out: dict[str, str]) -> dict[str, str]:
    if isinstance(x, dict):
        for k, v in x.items():
            _tree(v, f"{path}/{k}", out)
    else:
        out[path] = "tensor" if isinstance(x, torch.Tensor) else type(x).__name__
    return out


CONFIGS = ("/tokenizer_config/", "/generator_config/", "/tokenizer/config/")  # model configs: may gain fields


def _check(run: Path, kind: str) -> None:
    tree, meta = _format(run)
    old = FORMAT[kind]["state"]
    assert meta == FORMAT[kind]["meta"]
    assert {k: v for k, v in tree.items() if not k.startswith(CONFIGS)} == \
        {k: v for k, v in old.items() if not k.startswith(CONFIGS)}
    assert {k: v for k, v in old.items() if k.startswith(CONFIGS)}.items() <= tree.items()
    state = torch.load(next((run / "checkpoints").iterdir()) / "state.pt", weights_only=True)
    for prefix, cls in (("/tokenizer_config/", TokenizerConfig), ("/generator_config/", GeneratorConfig)):
        section = prefix.strip("/")
        if section in state:  # the config as an old run stored it (without the newer fields) loads the same
            known = {k[len(prefix):] for k in old if k.startswith(prefix)}
            stored = {k: v for k, v in state[section].items() if k in known}
            assert cls.from_dict(stored) == cls.from_dict(state[section])


def _format(run: Path) -> tuple[dict[str, str], list[str]]:
    ckpt = next((run / "checkpoints").iterdir())
    state = torch.load(ckpt / "state.pt", weights_only=True)
    ranks = state.pop("ranks")
    tree = {f"/{k}": "state_dict" for k in ("model", "ema", "opt", "opt_g", "opt_d", "loss")
            if isinstance(state.get(k), dict) and state.pop(k) is not None}
    state.pop("config")
    _tree(state, "", tree)
    _tree(ranks[0], "/ranks/0", tree)
    return tree, sorted(json.loads((ckpt / "meta.json").read_text()))


def test_tokenizer_checkpoints_keep_the_format(tmp_path):
    run = tmp_path / "run"
    photos = photo_folder(tmp_path / "photos")
    assert main(["train-tokenizer", "--config", str(TINY), "--data", str(photos), "--output", str(run),
                 "--max-steps", "1", "--set", "data.size=32", "--set", "data.batch_size=2", "--set",
                 "run.sample_every=0", "--set", "loss.disc_start=0"]) == 0
    _check(run, "tokenizer")


def test_generator_checkpoints_keep_the_format(tmp_path):
    run = tmp_path / "run"
    assert main(["train-generator", "--config", str(GEN_TINY), "--data", str(token_set(tmp_path)), "--output",
                 str(run), "--max-steps", "1", "--set", "data.batch_size=2", "--set", "run.sample_every=0"]) == 0
    _check(run, "generator")
