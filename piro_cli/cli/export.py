"""`piro export`: options -> piro_cli.inference.export.export_onnx."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from piro_cli.cli.common import console, err_console, handle_errors, parse_tta_scales, tta_option, tta_scales_option
from piro_cli.errors import PiroError


@handle_errors
def export(
    run: Path = typer.Argument(..., show_default=False, metavar="RUN", help="A run folder (its best.pt) or a checkpoint file."),
    onnx: Path = typer.Option(
        None,
        "--onnx",
        show_default=False,
        help="The single-view embedder to write, NAME.onnx; the view-set head goes to "
        "NAME.viewset.onnx and a description to NAME.json beside it.",
    ),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Run both graphs in onnxruntime (when installed) and compare with piro's own embeddings (1e-4).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
    tta: bool = tta_option("For an index built with other settings than its run's: "),
    tta_scales: str = tta_scales_option("For an index built with other settings than its run's: "),
) -> None:
    """Export a run's model to ONNX, to embed photos and view sets without piro or torch (README: Deploying).

    Needs the deploy extra: pip install -e '.[deploy]'

    Example: piro export runs/exp --onnx exp.onnx
    """
    from piro_cli.inference.export import export_onnx
    from piro_cli.inference.run import EmbedSettings

    if onnx is None:
        raise PiroError("say what to export: --onnx NAME.onnx")
    from rich.progress import Progress

    from piro_cli.cli.common import RichReporter, progress_columns

    with Progress(*progress_columns(), console=err_console, transient=True) as progress:
        result = export_onnx(
            run, onnx, overwrite=overwrite, check=check, reporter=RichReporter(progress),
            embedding=EmbedSettings(tta=tta, tta_scales=parse_tta_scales(tta_scales)),
        )  # fmt: skip
    for path in (result.embedder, result.viewset, result.metadata):
        console.print(f"[green]wrote[/] {escape(str(path))}", highlight=False)
    if result.max_difference is not None:
        console.print(f"onnxruntime matches piro within {result.max_difference:.1e}", highlight=False)
    elif check:
        console.print("not checked: onnxruntime is not installed (pip install onnxruntime)", highlight=False)
