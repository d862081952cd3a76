"""`piro import-weights`: options -> piro_cli.inference.released.import_released_weights -> one line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from piro_cli.cli.common import console, err_console, handle_errors
from piro_cli.errors import PiroError


@handle_errors
def import_weights(
    weights: Path = typer.Argument(
        ...,
        show_default=False,
        metavar="FILE.pth",
        help="The released weights: the state dict trainPiRO_Dual.py or trainPiRO_Single.py of github.com/sarkar-rohan/PiRO "
        "saves (VGG-16 PAN). Read with torch.load(weights_only=True): a file holding other pickled objects is refused.",
    ),
    dual: bool = typer.Option(
        None,
        "--dual/--single",
        show_default=False,
        help="Required: --dual for a dual-space model (models/VGG_PAN_DualEmb.py: category and object embeddings), "
        "--single for PiRO-SE (models/VGG_PAN_SingleEmb.py: one embedding for both). The file must hold that model.",
    ),
    data: Path = typer.Option(
        ...,
        show_default=False,
        help="The HDF5 file from `piro prepare` to evaluate the model on; the checkpoint records its categories and "
        "fingerprint as a trained run does. The released weights saw 224x224 views (`piro prepare ... --size 224`).",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        show_default=False,
        help="The piro checkpoint to write (.pt), e.g. runs/released-dual/best.pt: then `piro evaluate runs/released-dual` "
        "reads it like a trained run.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Turn the authors' released PiRO weights (VGG-16 PAN) into a piro checkpoint for evaluate, embed, visualize, compare.

    Every key of the released state dict is mapped onto piro's PAN, with the embedding sizes the weights have; a file
    with unknown or missing keys, other shapes or the other embedding space is refused.

    Examples:

    piro import-weights PiRO_dual.pth --dual --data data/objectpi.h5 --out runs/released-dual/best.pt

    piro evaluate runs/released-dual --data data/objectpi.h5
    """
    from piro_cli.inference.released import import_released_weights

    if dual is None:
        raise PiroError("say which model the file holds: --dual (VGG_PAN_DualEmb) or --single (VGG_PAN_SingleEmb)")
    result = import_released_weights(weights, dual, data, out, overwrite=overwrite)
    config = result.model_config
    dims = f"category {config.cat_dim}-d, object {config.obj_dim}-d" if config.dual else f"{config.obj_dim}-d"
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print(
        f"[green]wrote[/] {escape(str(result.path))}: released PiRO {'dual' if config.dual else 'single'}-space VGG-16 PAN "
        f"({dims}) from {escape(result.source.name)} (sha256 {result.sha256[:12]}), {result.num_categories} categories",
        highlight=False,
    )
