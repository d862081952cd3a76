"""What every figure shares: resolution, colours, markers, framed thumbnails and headless saving.

Figures are `matplotlib.figure.Figure` objects made without pyplot, so no display or GUI backend is ever
touched (the Agg canvas renders them), and nothing global is left behind. Sizes are fixed in inches at
`DPI` and saved without "tight" cropping, so a figure's pixel size is known in advance (`pixel_size`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from piro_cli.outputs import AtomicFile

DPI = 100
CORRECT = "#2ca02c"  # green frame: a correct retrieval
WRONG = "#d62728"  # red frame: a wrong one
QUERY = "#1f77b4"  # blue frame: the query
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<")  # 9 markers: with 20 colours, 180 distinct pairs


def palette(count: int, name: str = "tab20") -> list[tuple]:
    """`count` colours, distinct neighbours first: tab20's dark shades, then its light ones, then repeats."""
    cmap = colormaps[name]
    order = list(range(0, cmap.N, 2)) + list(range(1, cmap.N, 2)) if name == "tab20" else list(range(cmap.N))
    return [cmap(order[i % len(order)]) for i in range(count)]


def style_of(index: int) -> tuple[tuple, str]:
    """(colour, marker) of the index-th item; distinct for the first 180 items (20 colours x 9 markers, coprime)."""
    return palette(index + 1)[index], MARKERS[index % len(MARKERS)]


def new_figure(width: float, height: float) -> Figure:
    """A figure of the given size in inches, rounded to whole pixels."""
    return Figure(figsize=(round(width * DPI) / DPI, round(height * DPI) / DPI), dpi=DPI)


def pixel_size(fig: Figure) -> tuple[int, int]:
    """(width, height) in pixels of the saved PNG."""
    width, height = fig.get_size_inches()
    return int(round(width * DPI)), int(round(height * DPI))


def show_image(ax: Axes, image: np.ndarray, frame: str | None = None, width: float = 3.0) -> None:
    """An image without ticks; `frame` colours its border."""
    ax.imshow(image, interpolation="lanczos" if min(image.shape[:2]) > 96 else "nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(width)


def save_figure(fig: Figure, path: Path, pdf: bool = False) -> list[Path]:
    """Write `path` (PNG) and, with `pdf`, the same figure as PDF beside it; atomic (piro_cli.outputs)."""
    written = []
    for target, fmt in [(path, "png")] + ([(path.with_suffix(".pdf"), "pdf")] if pdf else []):
        metadata = {"CreationDate": None} if fmt == "pdf" else {}  # the same figure gives the same bytes
        with AtomicFile(target) as file:
            fig.savefig(file, format=fmt, dpi=DPI, metadata=metadata)
        written.append(target)
    return written
