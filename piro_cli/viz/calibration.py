"""The calibration curve of an index (`piro index calibrate --plot`): false accepts and false rejects against the
distance threshold, the chosen threshold marked."""

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
    path = check_plot_path(path)
    values = np.linspace(0.0, float(max(result.genuine.max(), result.impostor.max())) * 1.05, 400)
    curve = np.array([rates(result.genuine, result.impostor, t) for t in values])
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.plot(values, 100 * curve[:, 0], label="false accepts (an unknown object named)")
    ax.plot(values, 100 * curve[:, 1], label="false rejects (a known object called unknown)")
    ax.axvline(result.threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {result.threshold:.3f}")
    ax.set_xlabel("distance to the nearest enrolled object")
    ax.set_ylabel("% of queries")
    ax.set_title(f"{result.index}: FAR {100 * result.far:.1f}%, FRR {100 * result.frr:.1f}% ({result.rule})", fontsize=9)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)[0]
