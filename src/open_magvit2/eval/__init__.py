"""Evaluation: the metrics of the paper's tables 3–6 with the official arithmetic (docs/design.md O-48–O-50,
docs/evaluation.md).

* :mod:`~open_magvit2.eval.metrics` — Fréchet distances, precision/recall, Inception score, PSNR/SSIM, usage.
* :mod:`~open_magvit2.eval.backbones` — InceptionV3 (torch-fidelity), LPIPS (lpips), I3D, loaded from files.
* :func:`evaluate_tokenizer`, :func:`evaluate_generator`, :func:`evaluate_video`,
  :func:`evaluate_video_generator` — the pipelines behind the ``evaluate-*`` commands. Heavy dependencies (scipy,
  scikit-image, lpips, torch-fidelity: the ``eval`` extra) are imported when a pipeline runs.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "TokenizerEvalConfig": "reconstruction", "TokenizerEvalResult": "reconstruction",
    "evaluate_tokenizer": "reconstruction", "GeneratorEvalConfig": "generation",
    "GeneratorEvalResult": "generation", "evaluate_generator": "generation", "VideoEvalConfig": "video",
    "VideoEvalResult": "video", "evaluate_video": "video", "VideoGeneratorEvalConfig": "video_generation",
    "VideoGeneratorEvalResult": "video_generation", "evaluate_video_generator": "video_generation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"open_magvit2.eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'open_magvit2.eval' has no attribute {name!r}")


__all__ = sorted(_LAZY)
