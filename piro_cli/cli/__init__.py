"""The `piro` command line: a thin layer that parses options and calls one library function per command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from piro_cli import __version__
from piro_cli.cli.common import SEED_MAX, RichReporter, console, count, err_console, handle_errors
from piro_cli.cli.compare import compare as compare_command
from piro_cli.cli.embed import embed as embed_command
from piro_cli.cli.evaluate import evaluate as evaluate_command
from piro_cli.cli.export import export as export_command
from piro_cli.cli.help import install as install_help
from piro_cli.cli.import_weights import import_weights as import_weights_command
from piro_cli.cli.index import identify as identify_command
from piro_cli.cli.index import index_app
from piro_cli.cli.prepare import prepare
from piro_cli.cli.serve import serve as serve_command
from piro_cli.cli.train import train as train_command
from piro_cli.cli.visualize import visualize as visualize_command
from piro_cli.data.sources import synthetic

install_help()  # option panels in two columns, readable at 80 columns (piro_cli/cli/help.py)

app = typer.Typer(
    name="piro",
    help="Pose-invariant object recognition and retrieval: dual category/object embeddings (PiRO, CVPR 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"piro {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """piro: prepare -> train -> embed / evaluate -> visualize; serve: index -> identify, export."""


app.command(help=prepare.__doc__)(prepare)
app.command(help=train_command.__doc__, name="train")(train_command)


app.command(help=embed_command.__doc__, name="embed")(embed_command)
app.command(help=evaluate_command.__doc__, name="evaluate")(evaluate_command)
app.command(help=compare_command.__doc__, name="compare")(compare_command)
app.command(help=import_weights_command.__doc__, name="import-weights")(import_weights_command)


app.command(help=visualize_command.__doc__, name="visualize")(visualize_command)
app.add_typer(index_app)
app.command(help=identify_command.__doc__, name="identify")(identify_command)
app.command(help=export_command.__doc__, name="export")(export_command)
app.command(help=serve_command.__doc__, name="serve")(serve_command)


@app.command()
@handle_errors
def demo(
    workdir: Path = typer.Option(Path("piro-demo"), help="Folder for the demo's dataset, runs and figures."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the synthetic dataset and of the runs."),
    categories: int = typer.Option(synthetic.DEFAULT_CATEGORIES, help="Categories in the synthetic dataset."),
    objects_per_category: int = typer.Option(synthetic.DEFAULT_OBJECTS_PER_CATEGORY, help="Objects per category."),
    size: int = typer.Option(224, help="Side of the rendered views, in pixels."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone (frozen; 'tiny' for a seconds-long smoke run)."),
    epochs: int = typer.Option(10, min=1, help="Training epochs of the dual and single runs."),
) -> None:
    """The paper's point in a few minutes on a CPU: PiRO's dual space against the single space and untrained features.

    Prepares the built-in synthetic set (objects of one category share a colour scheme; every view has its own camera, light and cluttered background), trains piro-dual and piro-single with the same seed, adds the untrained backbone baseline, prints one `piro compare` table of the three on the test split, and draws UMAP of dual vs single and the distance curves of both.

    Examples:

    piro demo

    piro demo --workdir /tmp/demo --seed 1
    """
    from piro_cli.cli.compare import print_comparison_table
    from piro_cli.demo import run_demo

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        result = run_demo(
            workdir, seed, categories, objects_per_category, size, backbone, epochs, reporter=RichReporter(progress)
        )
    if result.prepared is None:
        console.print(f"reused the dataset {escape(str(result.data_path))}", highlight=False)
    for name, run in result.runs.items():
        console.print(f"{name}: {escape(str(run.run_dir))} ({count(run.epochs_done, 'epoch')}, {run.stop_reason})", highlight=False)
    print_comparison_table(result.comparison)
    console.print("figures:")
    for path in result.figures:
        console.print(f"  {escape(str(path))}", highlight=False)
    console.print(
        f"next: train on the same data with `piro train --data {escape(str(result.data_path))} --val-fraction 0.2`, "
        f"or compare with the demo's runs: `piro compare {escape(str(workdir / 'runs'))}/* --split test`",
        highlight=False,
    )


def main() -> None:
    from piro_cli.hardware import keep_freed_memory

    keep_freed_memory()  # a large speed-up of every backbone pass on Linux CPUs (piro_cli.hardware)
    app()
