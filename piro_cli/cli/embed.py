"""`piro embed`: a split into an embeddings file, or one new object's photos (and what they are nearest to)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from piro_cli.cli.common import RichReporter, console, count, err_console, handle_errors, progress_columns, tta_option
from piro_cli.errors import PiroError
from piro_cli.outputs import AtomicFile, OutputLock, check_output_path, write_text


@handle_errors
def embed(
    checkpoint: Path = typer.Argument(
        ..., metavar="RUN", show_default=False, help="A checkpoint (runs/<name>/best.pt or last.pt), or a run folder (its best.pt)."
    ),
    photos: list[Path] = typer.Argument(
        None, show_default=False, metavar="IMAGES", help="With --images: the photos of one new object (its views), in order."
    ),
    images: bool = typer.Option(
        False,
        "--images",
        help="Embed the photos listed after the checkpoint as the view set of one new object, instead of a split.",
    ),
    data: Path = typer.Option(
        None,
        help="Split mode: the HDF5 file from `piro prepare` whose objects to embed (default: the file the checkpoint "
        "was trained on if it still exists, else the most recently written ./data/*.h5). With --images: a gallery to find "
        "the nearest categories and objects in: a data file (its train split is embedded) or an embeddings file with train embeddings.",
    ),
    split: str = typer.Option(
        "test",
        help="Split mode: which objects: train, val, test, several comma-separated, or all. val = the validation "
        "objects of the checkpoint's run (carved out of train with --val-fraction, or the data's val split).",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Split mode: the embeddings file to write (.h5; default runs/<name>/embeddings_<split>.h5). "
        "With --images: write the embeddings (and nearest lists) to a .json or .npz file.",
    ),
    top: int = typer.Option(5, min=1, help="With --images and --data: how many nearest categories and gallery objects to list."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    tta: bool = tta_option(),
    skip_bad: bool = typer.Option(
        False,
        "--skip-bad",
        help="With --images: leave out the photos that cannot be read (listed in a warning) instead of stopping.",
    ),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when available)."),
) -> None:
    """Single- and multi-view embeddings of both spaces, from a trained checkpoint.

    Split mode writes every object of a split, with object and category labels and names, to an HDF5 file (layout in data/README.md); `piro evaluate` accepts that file in place of the checkpoint. --images embeds the photos of one new object and, with --data, lists its nearest categories and gallery objects.

    Examples:

    piro embed runs/exp --split train,test --out emb.h5

    piro embed runs/exp --images mug1.jpg mug2.jpg --data data/objectpi.h5
    """
    from piro_cli.inference.embeddings_file import embed as embed_split
    from piro_cli.inference.photos import embed_new_object

    if photos and not images:
        raise PiroError(f"{photos[0]}: extra argument; to embed photos of a new object put --images before them")
    if images:
        if not photos:
            raise PiroError("--images needs one or more photo files after it, e.g. --images front.jpg side.jpg")
        _embed_photos(checkpoint, photos, data, out, top, overwrite, device, skip_bad, tta, embed_new_object)
        return
    if skip_bad:
        raise PiroError("--skip-bad: only with --images (a split's objects come from a prepared data file, read whole)")
    with Progress(*progress_columns(), console=err_console, transient=True) as progress:
        result = embed_split(
            checkpoint,
            out=out,
            data=data,
            splits=split,
            device=device,
            overwrite=overwrite,
            tta=tta,
            reporter=RichReporter(progress),
        )
    counts = ", ".join(f"{group} {n}" for group, n in result.groups.items())
    console.print(f"[green]wrote[/] {escape(str(result.path))} ({counts} objects) in {result.seconds:.0f} s", highlight=False)


def _embed_photos(checkpoint, photos, data, out, top, overwrite, device, skip_bad, tta, embed_new_object) -> None:
    if out is not None:
        if out.suffix.lower() not in (".json", ".npz"):
            raise PiroError(f"--out {out}: with --images write a .json or .npz file")
        check_output_path(out, "--out", overwrite)
    with OutputLock(out) if out is not None else contextlib.nullcontext():
        with Progress(*progress_columns(), console=err_console, transient=True) as progress:
            result = embed_new_object(
                checkpoint,
                photos,
                gallery=data,
                top=top,
                device=device,
                tta=tta,
                reporter=RichReporter(progress),
                skip_bad=skip_bad,
            )
        if out is not None:
            _write_photo_embeddings(result, out)
    if result.skipped:
        err_console.print(f"[yellow]warning:[/] skipped {len(result.skipped)} of {len(photos)} photos, which cannot be read:")
        for image, reason in result.skipped:
            err_console.print(f"  {escape(image)}: {escape(reason)}", highlight=False, soft_wrap=True)
    console.print(
        f"{count(len(result.images), 'photo')} -> single-view sv_cat {tuple(result.sv_cat.shape)}, sv_obj {tuple(result.sv_obj.shape)}; "
        f"multi-view mv_cat {tuple(result.mv_cat.shape)}, mv_obj {tuple(result.mv_obj.shape)}",
        highlight=False,
    )
    if result.categories:
        table = Table(title="nearest categories (10-NN vote of c_mv among the gallery objects)", title_justify="left")
        for name, justify in (("category", "left"), ("votes", "right"), ("distance", "right")):
            table.add_column(name, justify=justify)
        for c in result.categories:
            table.add_row(escape(c["category"]), f"{c['votes']}/{c['of']}", f"{c['distance']:.4f}")
        console.print(table)
        table = Table(title="nearest gallery objects (object space, o_mv)", title_justify="left")
        for name, justify in (("object", "left"), ("category", "left"), ("distance", "right")):
            table.add_column(name, justify=justify)
        for o in result.objects:
            table.add_row(escape(o["object"]), escape(o["category"]), f"{o['distance']:.4f}")
        console.print(table)
    if out is not None:
        console.print(f"[green]wrote[/] {escape(str(out))}", highlight=False)
    elif not result.categories:
        for name in ("mv_cat", "mv_obj"):
            values = ", ".join(f"{v:.4f}" for v in getattr(result, name)[:8].tolist())
            console.print(f"{name}[:8] [{values}, ...]", highlight=False)
        console.print(
            "pass --out FILE.json (or .npz) for every value, --data FILE for the nearest categories and objects", highlight=False
        )


def _write_photo_embeddings(result, out: Path) -> None:
    if out.suffix.lower() == ".json":
        write_text(json.dumps(result.to_dict()) + "\n", out)
        return
    with AtomicFile(out) as file:
        np.savez(file, images=np.array(result.images), sv_cat=result.sv_cat.numpy(), sv_obj=result.sv_obj.numpy(),
                 mv_cat=result.mv_cat.numpy(), mv_obj=result.mv_obj.numpy())  # fmt: skip
