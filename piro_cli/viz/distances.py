"""`--distances`: the training progress signal across epochs, from the runs' `metrics.csv` (paper Fig. 6).

Top: `d_intra_max` (dashed; mean over training objects of the largest distance between two views of the
object) and `d_inter_min` (solid; mean over objects of the smallest, over the other objects of its category,
mean distance between their views), both in the object space, of the model before each epoch
(piro_cli/convergence.py). Bottom: `rho = d_inter_min / d_intra_max`, with rho = 1 marked (above
it every object's views are, on average, closer together than to any other object of its category) and the
run's early-stop threshold when it had one. Several runs are overlaid, one colour each. Needs no model and
no data: only each run folder's metrics.csv.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure

from piro_cli.errors import PiroError
from piro_cli.runs import MetricsLog
from piro_cli.viz.embeddings import RunRef, space_of
from piro_cli.viz.style import new_figure, palette

FIGURE_INCHES = (10.5, 7.0)  # plots on the left, legends on the right
COLUMNS = ("d_intra_max", "d_inter_min", "rho")


def read_history(ref: RunRef) -> dict[str, list[float]]:
    """epoch, d_intra_max, d_inter_min and rho of every epoch in the run's metrics.csv."""
    rows = MetricsLog(ref.metrics_path).read()
    if not rows:
        raise PiroError(
            f"{ref.metrics_path}: no such file or no epochs in it; --distances needs a run folder written by `piro train`"
        )
    missing = [c for c in ("epoch", *COLUMNS) if c not in rows[0]]
    if missing:
        raise PiroError(f"{ref.metrics_path}: has no {', '.join(missing)} column; it was not written by `piro train`")
    history: dict[str, list[float]] = {c: [] for c in ("epoch", *COLUMNS)}
    for row in rows:
        for column in history:
            try:
                history[column].append(float(row[column]))
            except (TypeError, ValueError):
                history[column].append(math.nan)
    return history


def run_label(ref: RunRef) -> str:
    model = ref.config().get("model")
    return f"{ref.name} ({space_of(model)})" if model else ref.name


def plot_distances(refs: Sequence[RunRef]) -> Figure:
    histories = [read_history(ref) for ref in refs]
    fig = new_figure(*FIGURE_INCHES)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"hspace": 0.08, "height_ratios": (3, 2)})
    fig.subplots_adjust(left=0.08, right=0.68, top=0.92, bottom=0.08)
    colours = palette(len(refs), "tab10")
    thresholds = set()
    for ref, history, colour in zip(refs, histories, colours, strict=True):
        label = run_label(ref)
        style = {"color": colour, "marker": "o", "markersize": 3.5, "linewidth": 1.6}
        top.plot(history["epoch"], history["d_intra_max"], linestyle="--", label=f"{label}: d_intra_max", **style)
        top.plot(history["epoch"], history["d_inter_min"], linestyle="-", label=f"{label}: d_inter_min", **style)
        bottom.plot(history["epoch"], history["rho"], linestyle="-", label=label, **style)
        threshold = ref.config().get("train", {}).get("early_stop_rho")
        if isinstance(threshold, (int, float)) and threshold > 0:
            thresholds.add(float(threshold))
    bottom.axhline(1.0, color="0.4", linewidth=1.0, linestyle=":", label="rho = 1")
    for threshold in sorted(thresholds):
        bottom.axhline(threshold, color="0.6", linewidth=1.0, linestyle="-.", label=f"early stop (rho > {threshold:g})")
    fig.suptitle("Object-space distances on the training objects across epochs (mean over objects)", fontsize=11, x=0.38)
    top.set_ylabel("mean distance")
    top.set_title(
        "d_intra_max (dashed): farthest two views of an object; d_inter_min (solid): nearest other object of its category",
        fontsize=8,
    )
    bottom.set_ylabel("rho = d_inter_min / d_intra_max")
    bottom.set_xlabel("epoch")
    epochs = sorted({e for h in histories for e in h["epoch"] if not math.isnan(e)})
    if epochs and len(epochs) <= 30:
        bottom.set_xticks(epochs)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, handlelength=4, frameon=False)
    return fig
