"""``demo``: the whole system on the bundled demo models, offline (``make demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from open_magvit2.cli.common import add_device_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the bundled demo models end to end, offline: photo and clip reconstruction, digit samples, "
        "moving-digit clips",
        description="Reconstruct a held-out photo and a clip with the bundled demo tokenizers, sample a 10 × 8 "
        "grid of digits with the demo generator, and one moving-digit clip per digit plus a held-out first frame "
        "continued with the demo video generator; everything goes to --output. Demo models: small models trained "
        "with this package's own trainers on data that ships with scikit-image and scikit-learn "
        "(docs/model_zoo.md), not the paper's models.",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    add_device_arg(p)
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from open_magvit2.demo.run import run_demo

    run_demo(args.output, device=args.device)
    return 0
