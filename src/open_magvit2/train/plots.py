"""``open-magvit2 plot-run``: the curves of a run's ``metrics.jsonl`` as one PNG (matplotlib, the train extra)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from open_magvit2.fileio import atomic_write, check_output_file
from open_magvit2.train.metrics import read_metrics

FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}
# Panels in reading order: a panel shows every metric whose name starts with one of its prefixes.
PANELS = (
    ("reconstruction (tokenizer)", ("loss/l1", "loss/l2", "loss/lpips", "loss/nll")),
    ("losses", ("loss/",)),
    ("discriminator", ("d/",)),
    ("entropy", ("entropy/",)),
    ("codebook usage", ("codebook/usage",)),
    ("learning rate", ("lr",)),
    ("gradient norm", ("grad_norm/",)),
    ("throughput", ("throughput/",)),
)


def _series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for r in records:
        for k, v in r.items():
            if k == "step" or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            out[k][0].append(r["step"])
            out[k][1].append(float(v))
    # a term that is 0 throughout (LPIPS off, the GAN before disc_start) only crowds its panel
    return {k: v for k, v in out.items() if any(x != 0.0 for x in v[1])}


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the metrics of ``run_dir`` into ``out`` (default ``RUN_DIR/curves.png``; the suffix picks the format:
    .png, .jpg, .pdf or .svg); returns the path."""
    out = Path(out) if out is not None else Path(run_dir) / "curves.png"
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"-o {out}: name a .png, .jpg, .pdf or .svg file (the suffix picks the format)")
    check_output_file(out)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot-run needs matplotlib: pip install 'open-magvit2[train]'") from None
    series = _series(read_metrics(run_dir))
    if not series:
        raise ValueError(f"{run_dir}: metrics.jsonl has no finite values yet")
    panels, used = [], set()
    for title, prefixes in PANELS:  # each metric in the first panel that claims it
        keys = sorted(k for k in series if k.startswith(prefixes) and k not in used)
        panels.append((title, keys))
        used.update(keys)
    panels.append(("other", sorted(k for k in series if k not in used and k not in ("epoch",))))
    panels = [(t, keys) for t, keys in panels if keys]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.2 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for k in keys[:12]:
            ax.plot(*series[k], label=k, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        if title.startswith(("losses", "reconstruction")) and all(min(series[k][1]) > 0 for k in keys):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(str(Path(run_dir).name))
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=90, format=fmt))
    plt.close(fig)
    return out
