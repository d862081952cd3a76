"""The calibration curve of an index (`piro index calibrate --plot`): false accepts and false rejects against the
threshold on the scoring rule's score, the chosen threshold marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from piro_cli.errors import PiroError
from piro_cli.inference.calibration import Calibration, rates
from piro_cli.outputs import check_output_path
from piro_cli.viz.style import new_figure, save_figure


def check_plot_path(path: str | Path) -> Path:
    """Refuse a --plot path that cannot be written, before any work."""
    path = check_output_path(path, "--plot", overwrite=True)
    if path.suffix.lower() != ".png":
        raise PiroError(f"--plot {path}: use a .png file name")
    return path


def plot_calibration(result: Calibration, path: str | Path) -> Path:
    """False accepts and false rejects of one-photo queries against the threshold on the rule's score."""
    path = check_plot_path(path)
    single = result.single
    values = np.linspace(0.0, float(max(single.genuine.max(), single.impostor.max())) * 1.05, 400)
    curve = np.array([rates(single.genuine, single.impostor, t) for t in values])
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.plot(values, 100 * curve[:, 0], label="false accepts (an unknown object named)")
    ax.plot(values, 100 * curve[:, 1], label="false rejects (a known object called unknown)")
    ax.axvline(single.score, color="black", linestyle="--", linewidth=1, label=f"threshold {single.score:.3f}")
    ax.set_xlabel(f"score of the nearest enrolled object ({result.rule.label}), {single.photos} photo per query")
    ax.set_ylabel("% of queries")
    ax.set_title(f"{result.index}: FAR {100 * single.far:.1f}%, FRR {100 * single.frr:.1f}% ({result.target})", fontsize=9)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)[0]
