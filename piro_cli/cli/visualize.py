"""`piro visualize`: options -> piro_cli.viz.draw_figures; prints the paths of the figures it wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from piro_cli.cli.common import SEED_MAX, console, err_console, handle_errors, option_group, with_option_groups
from piro_cli.viz.kinds import DEFAULT_QUERIES, DEFAULT_TOP_K, KINDS, MAX_QUERIES, MAX_TOP_K


class StageBars:
    """One progress bar per stage (embedding a run, fitting its UMAP), for the library's progress(stage, done, total)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


@dataclass
class FigureFlags:
    """Which figures to draw (none chosen: every one)."""

    umap: bool = typer.Option(
        False, "--umap", help="2-D UMAP of the test views in the object space and the category space, side by side."
    )
    distances: bool = typer.Option(
        False,
        "--distances",
        help="d_intra_max and d_inter_min (top) and rho (bottom) across epochs, from each run's metrics.csv.",
    )
    retrieval: bool = typer.Option(
        False,
        "--retrieval",
        help="Test queries and their top-k retrieved views in each space; correct ones framed green, wrong red.",
    )
    attention: bool = typer.Option(
        False, "--attention", help="Multi-view attention weights of one test object's view set, beside its views."
    )
    views: bool = typer.Option(
        False, "--views", help="Accuracy against the number of query views, from `piro evaluate RUN --views-curve`."
    )
    all_figures: bool = typer.Option(
        False, "--all", help="Draw every figure (also what happens when no figure option is given)."
    )

    def chosen(self) -> list[str]:
        named = {"umap": self.umap, "distances": self.distances, "retrieval": self.retrieval, "attention": self.attention, "views": self.views}
        return [k for k, on in named.items() if on]

    @property
    def every(self) -> bool:
        """--all, or no figure named."""
        return self.all_figures or not self.chosen()

    def kinds(self) -> list[str]:
        return list(KINDS) if self.every else self.chosen()


@handle_errors
@with_option_groups
def visualize(
    runs: list[Path] = typer.Argument(
        None,
        metavar="RUN_OR_CKPT",
        show_default=False,
        help="Run folders (their best.pt is used) or .pt checkpoints; several are drawn together. Default: the latest run under ./runs.",
    ),
    figures: FigureFlags = option_group(FigureFlags),
    categories: str = typer.Option(
        None, help="UMAP categories, comma-separated names (default: the 5 with the most test objects, as the paper's Fig. 5)."
    ),
    queries: int = typer.Option(
        DEFAULT_QUERIES,
        min=1,
        max=MAX_QUERIES,
        help="Retrieval: number of query views (different test objects, chosen with --seed).",
    ),
    top_k: int = typer.Option(
        DEFAULT_TOP_K, "--top-k", min=1, max=MAX_TOP_K, help="Retrieval: views retrieved per query and space."
    ),
    seed: int = typer.Option(
        0,
        min=0,
        max=SEED_MAX,
        help="Seed of the UMAP layout, the retrieval queries and the attention object; same seed, same figure.",
    ),
    pdf: bool = typer.Option(False, "--pdf", help="Also write each figure as PDF beside the PNG."),
    data: Path = typer.Option(
        None,
        help="HDF5 file to draw the test views from (default: the file each run recorded); must be the data the run was trained on.",
    ),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N for embedding the views (default: cuda when available)."),
) -> None:
    """Draw the figures a run is read by: UMAP of both spaces, distance curves, retrievals, attention, views curves.

    Test views are the data file's test split, or the run's validation objects when the file has none. Figures are PNG (--pdf adds PDF), written into the run folder (several runs: the first run's folder, e.g. umap_<run1>_vs_<run2>.png); their paths are printed.

    Examples:

    piro visualize runs/dual runs/single --umap --distances

    piro visualize runs/dual --retrieval --queries 5

    piro visualize runs/dual runs/single --views   (after piro evaluate ... --views-curve)
    """
    from piro_cli.hardware import pick_device
    from piro_cli.viz import FigureOptions, draw_figures

    names = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        written = draw_figures(
            runs or None, figures.kinds(), FigureOptions(names, queries, top_k, seed, pdf), data=data, device=pick_device(device),
            progress=StageBars(progress), skip_missing_history=figures.every,
        )  # fmt: skip
    for path in written:
        console.print(f"wrote {escape(str(path))}", highlight=False)
