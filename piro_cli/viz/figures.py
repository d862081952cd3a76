"""`draw_figures`: the one entry point `piro visualize` calls.

Figures are written into the run folder (with several runs, into the first run's folder, named after all
of them): `umap.png`, `distances.png`, `retrieval.png`, `attention.png`, or e.g.
`umap_<run1>_vs_<run2>.png`; `pdf=True` adds a PDF of each beside the PNG. Every figure is seeded and
drawn headless, so the same runs and options give the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from piro_cli.errors import PiroError
from piro_cli.viz.embeddings import PlotRun, RunRef, StageProgress, open_run, resolve_runs, select_categories
from piro_cli.viz.kinds import (  # noqa: F401 (re-exported)
    DEFAULT_CATEGORIES,
    DEFAULT_QUERIES,
    DEFAULT_TOP_K,
    KINDS,
    MAX_QUERIES,
    MAX_TOP_K,
)  # fmt: skip
from piro_cli.viz.style import save_figure


def output_path(refs: Sequence[RunRef], kind: str) -> Path:
    """runs/<name>/<kind>.png for one run; <first run>/<kind>_<run1>_vs_<run2>.png for several."""
    stem = kind if len(refs) == 1 else f"{kind}_" + "_vs_".join(r.name for r in refs)
    return refs[0].folder / f"{stem}.png"


@dataclass(frozen=True)
class FigureOptions:
    """What the figures show: `categories`, category names for the UMAP (default: the DEFAULT_CATEGORIES with the
    most test objects); `queries`/`top_k`, retrieval queries and hits per row; `seed`, the UMAP, query and
    attention-object choice; `pdf`, a PDF beside each PNG; `umap_epochs`, UMAP optimisation epochs (None: UMAP's
    default; small values make tests fast)."""

    categories: Sequence[str] | None = None
    queries: int = DEFAULT_QUERIES
    top_k: int = DEFAULT_TOP_K
    seed: int = 0
    pdf: bool = False
    umap_epochs: int | None = None


def draw_figures(
    runs: Sequence[str | Path] | None,
    kinds: Sequence[str],
    options: FigureOptions | None = None,
    *,
    data: str | Path | None = None,
    device: str | torch.device = "cpu",
    project: Path = Path("runs"),
    progress: StageProgress | None = None,
    skip_missing_history: bool = False,
) -> list[Path]:
    """Draw the requested figure kinds (KINDS) for the given runs (None or empty: the latest run under `project`),
    as `options` (FigureOptions) say.

    `runs`: run folders (meaning their best.pt) or .pt checkpoints. `data`: the HDF5 file to use instead of each
    checkpoint's recorded one. `skip_missing_history`: leave the distance figure out, instead of refusing, when a
    run has no training history (an imported checkpoint has no metrics.csv), and the views curve when a run has
    none saved; for "every figure". Returns the paths written (PNG, and PDF with `options.pdf`).
    """
    options = options or FigureOptions()
    queries, top_k, pdf = options.queries, options.top_k, options.pdf
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise PiroError(f"unknown figure {unknown[0]!r}; figures are {', '.join(KINDS)}")
    if not kinds:
        raise PiroError(f"no figure chosen; choose from {', '.join(KINDS)}")
    if not 1 <= queries <= MAX_QUERIES:
        raise PiroError(f"--queries {queries}: must be 1 to {MAX_QUERIES}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise PiroError(f"--top-k {top_k}: must be 1 to {MAX_TOP_K}")
    refs = resolve_runs(runs, project)
    wanted = [k for k in KINDS if k in kinds]
    if skip_missing_history and any(not ref.metrics_path.exists() for ref in refs):
        wanted = [k for k in wanted if k != "distances"]
    if skip_missing_history and "views" in wanted:
        from piro_cli.viz.views import has_curve

        if not all(has_curve(ref) for ref in refs):
            wanted = [k for k in wanted if k != "views"]
    written: list[Path] = []
    if "distances" in wanted:  # needs only metrics.csv: drawn (and its errors raised) before any model loads
        from piro_cli.viz.distances import plot_distances

        written += save_figure(plot_distances(refs), output_path(refs, "distances"), pdf)
    if "views" in wanted:  # from the saved curves alone, like the distances
        from piro_cli.viz.views import plot_views

        written += save_figure(plot_views(refs), output_path(refs, "views"), pdf)
    model_kinds = [k for k in wanted if k not in ("distances", "views")]
    if not model_kinds:
        return written
    loaded: list[PlotRun] = []
    try:
        for ref in refs:
            loaded.append(open_run(ref, data, device))
        written += _model_figures(loaded, refs, model_kinds, options, progress)
    finally:
        for run in loaded:
            run.store.close()
    return written


def _model_figures(loaded, refs, kinds, options: FigureOptions, progress) -> list[Path]:
    written: list[Path] = []
    seed, pdf = options.seed, options.pdf
    if "retrieval" in kinds:  # every test object is in the gallery: embed them all once, with progress
        for run in loaded:
            run.embed(range(len(run.indices)), progress)
    if "umap" in kinds:
        written += save_figure(_umap_figure(loaded, options.categories, seed, options.umap_epochs, progress), output_path(refs, "umap"), pdf)
    if "retrieval" in kinds:
        from piro_cli.viz.retrieval import pick_queries, plot_retrieval

        picked = pick_queries(loaded[0], options.queries, seed)
        written += save_figure(plot_retrieval(loaded, picked, options.top_k, seed), output_path(refs, "retrieval"), pdf)
    if "attention" in kinds:
        from piro_cli.viz.attention import plot_attention
        from piro_cli.viz.retrieval import pick_queries

        row = pick_queries(loaded[0], 1, seed)[0][0]
        written += save_figure(plot_attention(loaded, row, progress), output_path(refs, "attention"), pdf)
    return written


def _umap_figure(loaded: list[PlotRun], categories: Sequence[str] | None, seed: int, umap_epochs: int | None, progress):
    from piro_cli.viz.umap_plot import plot_umap, umap_panels

    chosen = select_categories(loaded[0], categories, DEFAULT_CATEGORIES)
    names = [loaded[0].categories[c] for c in chosen]
    rows = []
    for run in loaded:
        # the same categories, by name, in every run
        indices = select_categories(run, names) if run is not loaded[0] else chosen
        rows.append(umap_panels(run, indices, seed, progress, umap_epochs))
    count = sum(int((loaded[0].labels == c).sum()) for c in chosen)
    subtitle = (
        f"UMAP (seed {seed}) of the single-view embeddings of {count} test objects x {loaded[0].store.num_views} views, "
        f"{len(names)} categories: {', '.join(names)}\ntest views: {loaded[0].test_source}"
    )
    return plot_umap(rows, subtitle)
