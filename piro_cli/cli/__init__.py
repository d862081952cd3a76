"""The `piro` command line: a thin layer that parses options and calls one library function per command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from piro_cli import __version__
from piro_cli.cli.common import console, err_console, handle_errors, not_implemented, progress_bar
from piro_cli.cli.prepare import prepare, print_store_info
from piro_cli.cli.train import train as train_command
from piro_cli.data.sources import synthetic

app = typer.Typer(
    name="piro",
    help="Pose-invariant object recognition and retrieval: dual category/object embeddings (PiRO, CVPR 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Commands whose issues have not landed yet accept any arguments, so that the
# documented command lines reach the "not implemented yet" message as typed.
_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _version(value: bool) -> None:
    if value:
        console.print(f"piro {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """piro: prepare -> train -> embed / evaluate -> visualize."""


app.command(help=prepare.__doc__)(prepare)
app.command(help=train_command.__doc__, name="train")(train_command)


@app.command(context_settings=_PASSTHROUGH)
def embed(ctx: typer.Context) -> None:
    """Write single- and multi-view embeddings of a dataset. Not implemented yet."""
    not_implemented("embed", "issue #4")


@app.command(context_settings=_PASSTHROUGH)
def evaluate(ctx: typer.Context) -> None:
    """Compute the eight PICR tasks for a checkpoint. Not implemented yet."""
    not_implemented("evaluate", "issue #4")


@app.command(context_settings=_PASSTHROUGH)
def visualize(ctx: typer.Context) -> None:
    """UMAP pictures of the spaces and intra/inter distance curves. Not implemented yet."""
    not_implemented("visualize", "issue #5")


@app.command()
@handle_errors
def demo(
    workdir: Path = typer.Option(Path("piro-demo"), help="Folder for the demo's dataset, runs and plots."),
    seed: int = typer.Option(0, help="Seed of the synthetic dataset."),
    categories: int = typer.Option(synthetic.DEFAULT_CATEGORIES, help="Categories in the synthetic dataset."),
    objects_per_category: int = typer.Option(synthetic.DEFAULT_OBJECTS_PER_CATEGORY, help="Objects per category."),
    size: int = typer.Option(224, help="Side of the rendered views, in pixels."),
) -> None:
    """Run the whole pipeline on the built-in synthetic dataset: prepare -> train -> evaluate -> visualize."""
    from piro_cli.demo import run_demo

    with progress_bar("preparing the synthetic dataset") as update:
        result = run_demo(workdir, seed, categories, objects_per_category, size, progress=update)
    if result.prepared is None:
        console.print(f"reusing {escape(str(result.data_path))}", highlight=False)
    print_store_info(result.data_info)
    for stage in result.missing_stages:
        err_console.print(f"[yellow]not run:[/] {stage} is not implemented yet")


def main() -> None:
    app()
