"""The demo build's recipes: bf16 only where it is fast (a CPU without bf16 matrix units trains in float32 and
says so)."""

from __future__ import annotations

import pytest

from open_magvit2.demo import build
from open_magvit2.train.generator import GeneratorTrainConfig
from open_magvit2.train.tokenizer import TokenizerTrainConfig


@pytest.mark.parametrize("cls, name", [(GeneratorTrainConfig, "video_generator.yaml"),
                                       (TokenizerTrainConfig, "video_digits_tokenizer.yaml"),
                                       (TokenizerTrainConfig, "video_tokenizer.yaml")])
def test_bf16_recipes_fall_back_to_float32_only_without_bf16_units(cls, name, monkeypatch, capsys):
    monkeypatch.setattr(build, "fast_bf16", lambda: True)
    assert build._recipe(cls, build.CONFIGS / name).run.precision == "bf16"
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(build, "fast_bf16", lambda: False)
    cfg = build._recipe(cls, build.CONFIGS / name, ("run.max_steps=7",))
    assert cfg.run.precision == "fp32" and cfg.run.max_steps == 7  # the other overrides stay
    assert f"{name}: this CPU has no bf16 matrix units" in capsys.readouterr().out


def test_float32_recipes_stay_float32(monkeypatch, capsys):
    monkeypatch.setattr(build, "fast_bf16", lambda: True)
    cfg = build._recipe(TokenizerTrainConfig, build.CONFIGS / "video_digits_tokenizer_frames.yaml")
    assert cfg.run.precision == "fp32" and capsys.readouterr().out == ""


def test_fast_bf16_is_a_bool():
    assert isinstance(build.fast_bf16(), bool)


def test_the_generator_token_set_starts_with_the_tokenizer_clips():
    from open_magvit2.demo import data

    n = len(data.split_digits("train"))
    more = data.moving_digit_motions("train", build.GENERATOR_CLIPS_PER_DIGIT * n)
    assert more[:n] == data.moving_digit_motions("train")  # the tokenizer's clips, then new ones
    assert [m.digit for m in more[n:]] == [m.digit for m in more[:n]]  # the same digits again
    assert sum(a != b for a, b in zip(more[:n], more[n:])) > 0.95 * n  # other heights, positions or motions
