"""`--umap`: 2-D UMAP of the test views in the object space and in the category space (paper Fig. 5).

For the chosen categories (default: the 5 with the most test objects), every single-view embedding of
every test object of those categories is mapped to 2-D by UMAP (Euclidean metric, as the losses and the
PICR tasks use; seeded, one thread, so the same seed gives the same picture). Each run gives two panels:

- object space: one colour and marker per object: a good object space shows one tight blob per object,
  objects of the same category apart;
- category space: one colour and marker per category: a good category space shows one blob per category.

A single-space run (PiRO-SE) has one embedding for both tasks: its one UMAP is drawn twice, coloured by
object and by category, which is exactly the paper's single-vs-dual comparison. Several runs give one row
of two panels each, in one figure.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from piro_cli.errors import PiroError
from piro_cli.viz.embeddings import PlotRun, StageProgress
from piro_cli.viz.style import MARKERS, new_figure, palette, style_of

PANEL_INCHES = (7.2, 5.0)  # one panel: a square scatter plot and its legend on the right
AXES_INCHES = 4.25  # side of the square scatter plot
TITLE_INCHES = 0.6
UMAP_NEIGHBOURS = 15
LEGEND_MAX = 40  # more objects than this: no per-object legend (it would not fit)


@dataclass
class UmapPanel:
    title: str
    coords: np.ndarray  # (n, 2)
    groups: np.ndarray  # (n,) the group (object or category) of each point: its colour and marker
    names: list[str]  # name of each group, for the legend
    by_category: bool  # category colouring (tab10 colours) or object colouring (tab20 colours x markers)


def umap_layout(points: np.ndarray, seed: int, n_epochs: int | None = None) -> np.ndarray:
    """(n, D) -> (n, 2) UMAP coordinates, reproducible for a seed."""
    n = len(points)
    if n < 4:
        raise PiroError(f"UMAP needs at least 4 views to lay out, got {n}; choose more categories with --categories")
    neighbours = min(UMAP_NEIGHBOURS, n - 1)
    knn = exact_neighbours(points, neighbours)
    with warnings.catch_warnings():
        # numba / sklearn deprecation chatter; "seeded means one thread"; "precomputed kNN cannot transform new data"
        warnings.simplefilter("ignore")
        import umap

        reducer = umap.UMAP(
            n_neighbors=neighbours,
            n_components=2,
            metric="euclidean",
            min_dist=0.1,
            random_state=seed,
            n_jobs=1,
            n_epochs=n_epochs,
            init="spectral" if n > 3 * UMAP_NEIGHBOURS else "random",
            precomputed_knn=knn,
        )
        coords = reducer.fit_transform(np.ascontiguousarray(points, dtype=np.float32))
    return np.asarray(coords, dtype=np.float64)


def exact_neighbours(points: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (n, k): every point's k nearest points (itself first), Euclidean, exact.

    Handed to UMAP as its k-NN graph: the same graph its exact small-data path would build, without the
    ~10 s of numba compilation that path costs in every new process.
    """
    data = torch.as_tensor(np.ascontiguousarray(points, dtype=np.float32))
    indices, distances = [], []
    for start in range(0, len(data), chunk):
        dist = torch.cdist(data[start : start + chunk], data)
        dist[torch.arange(len(dist)), torch.arange(start, start + len(dist))] = 0.0  # itself, exactly
        values, order = torch.topk(dist, k, dim=1, largest=False, sorted=True)
        indices.append(order.numpy().astype(np.int32))
        distances.append(values.numpy().astype(np.float32))
    return np.concatenate(indices), np.concatenate(distances)


def umap_rows(run: PlotRun, categories: Sequence[int]) -> list[int]:
    """Test objects of the chosen categories, grouped in the order of `categories`."""
    labels = run.labels
    return [r for c in categories for r in np.flatnonzero(labels == c).tolist()]


def umap_panels(
    run: PlotRun, categories: Sequence[int], seed: int, progress: StageProgress | None = None, n_epochs: int | None = None
) -> list[UmapPanel]:
    """The run's two panels (object space, category space); embeds only the chosen categories' test objects."""
    rows = umap_rows(run, categories)
    emb = run.embed(rows, progress)
    views = emb.sv_obj.shape[1]
    rank = {c: i for i, c in enumerate(categories)}
    object_groups = np.repeat(np.arange(len(rows)), views)
    category_groups = np.repeat(np.array([rank[int(c)] for c in emb.labels]), views)
    object_names = [_short(run.object_name(r), 26 if len(rows) <= 20 else 18) for r in rows]
    category_names = [run.categories[c] for c in categories]
    total = 2 if run.dual else 1
    stage = f"UMAP {run.name}"
    if progress is not None:
        progress(stage, 0, total)
    obj_xy = umap_layout(emb.sv_obj.reshape(len(object_groups), -1), seed, n_epochs)
    if progress is not None:
        progress(stage, 1, total)
    if run.dual:
        cat_xy = umap_layout(emb.sv_cat.reshape(len(category_groups), -1), seed, n_epochs)
        if progress is not None:
            progress(stage, 2, total)
        titles = (f"{run.name} (dual): object space", f"{run.name} (dual): category space")
    else:
        cat_xy = obj_xy  # PiRO-SE: one space serves both tasks
        titles = (f"{run.name} (single space): coloured by object", f"{run.name} (single space): coloured by category")
    return [
        UmapPanel(titles[0], obj_xy, object_groups, object_names, by_category=False),
        UmapPanel(titles[1], cat_xy, category_groups, category_names, by_category=True),
    ]


def figure_inches(num_runs: int) -> tuple[float, float]:
    return 2 * PANEL_INCHES[0], num_runs * PANEL_INCHES[1] + TITLE_INCHES


def plot_umap(rows_of_panels: Sequence[Sequence[UmapPanel]], subtitle: str) -> Figure:
    """One row of panels per run: each a square scatter plot with its legend to the right."""
    width, height = figure_inches(len(rows_of_panels))
    fig = new_figure(width, height)
    fig.suptitle(subtitle, y=1 - 0.15 / height, va="top", fontsize=10)
    for i, panels in enumerate(rows_of_panels):
        bottom = height - TITLE_INCHES - (i + 1) * PANEL_INCHES[1] + 0.3
        for j, panel in enumerate(panels):
            left = j * PANEL_INCHES[0] + 0.25
            ax = fig.add_axes((left / width, bottom / height, AXES_INCHES / width, AXES_INCHES / height))
            _draw_panel(ax, panel)
    return fig


def _draw_panel(ax, panel: UmapPanel) -> None:
    count = len(panel.names)
    colours = palette(count, "tab10") if panel.by_category and count <= 10 else None
    for g in range(count):
        mask = panel.groups == g
        colour, marker = (colours[g], MARKERS[g % len(MARKERS)]) if colours else style_of(g)
        ax.scatter(panel.coords[mask, 0], panel.coords[mask, 1], s=22, color=colour, marker=marker, alpha=0.85,
                   linewidths=0, label=panel.names[g])  # fmt: skip
    ax.set_title(panel.title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if count <= LEGEND_MAX:
        columns = 1 if count <= 20 else 2
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7 if count <= 20 else 6, ncols=columns, frameon=False,
                  handletextpad=0.2, borderaxespad=0.0, markerscale=1.0)  # fmt: skip
    else:
        ax.text(1.02, 1.0, f"{count} objects\n(too many to list)", transform=ax.transAxes, fontsize=7, va="top")


def _short(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
