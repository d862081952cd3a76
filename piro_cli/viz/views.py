"""`--views`: recognition accuracy against the number of query views (from `piro evaluate --views-curve`).

Left: MV category recognition, right: MV object recognition, for k = 1 .. V query views, each point the mean over
the curve's random view subsets, several runs overlaid, one colour each. Needs no model: only each run folder's
`views_<split>.json` (the test split's when there is one, else the validation objects').
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from matplotlib.figure import Figure

from piro_cli.errors import PiroError
from piro_cli.evaluation.views_curve import TASKS, ViewsCurve, curve_path
from piro_cli.viz.distances import run_label
from piro_cli.viz.embeddings import RunRef
from piro_cli.viz.style import new_figure, palette

TITLES = {"mv-category-recognition": "MV category recognition", "mv-object-recognition": "MV object recognition"}


def read_curve(ref: RunRef) -> ViewsCurve:
    for split in ("test", "val"):
        path = curve_path(ref.folder, split)
        if path.is_file():
            try:
                return ViewsCurve.from_dict(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                cause = "nested too deeply" if isinstance(exc, RecursionError) else exc
                raise PiroError(f"{path}: not a views curve written by piro ({cause}); write it again with --views-curve") from None
    raise PiroError(f"{ref.folder}: no views curve; compute it with `piro evaluate {ref.checkpoint} --views-curve`")


def has_curve(ref: RunRef) -> bool:
    return any(curve_path(ref.folder, split).is_file() for split in ("test", "val"))


def plot_views(refs: Sequence[RunRef]) -> Figure:
    curves = [read_curve(ref) for ref in refs]
    fig = new_figure(10.0, 4.2)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.14, wspace=0.22)
    for ref, curve, colour in zip(refs, curves, palette(len(refs), "tab10"), strict=True):
        for ax, task in zip(axes, TASKS, strict=True):
            means = curve.mean(task)
            ax.plot(list(means), list(means.values()), marker="o", color=colour, label=f"{run_label(ref)}, {curve.split}")
    for ax, task in zip(axes, TASKS, strict=True):
        ax.set_title(TITLES[task])
        ax.set_xlabel("query views k")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Accuracy against the number of query views (mean over {curves[0].draws} random subsets)")
    return fig
