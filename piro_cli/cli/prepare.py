"""`piro prepare`: raw dataset -> one HDF5 view-set file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from piro_cli.cli.common import SEED_MAX, console, err_console, handle_errors, option_group, progress_bar, with_option_groups
from piro_cli.data.prepare import PrepareOptions, PrepareSummary, prepare_dataset
from piro_cli.data.sources import SOURCES, get_source, synthetic
from piro_cli.data.store import COMPRESSIONS, StoreInfo, ViewSetStore

SOURCE_HELP = "Dataset source: " + "; ".join(f"[bold]{s.name}[/] ({s.summary})" for s in SOURCES.values())


@dataclass
class MeshFlags:
    """The options of the mesh sources (modelnet40, fg3d)."""

    per_category: int = typer.Option(
        None, min=1, help="modelnet40/fg3d: keep the first N models of each category per split (the paper uses ~100)."
    )
    up_axis: str = typer.Option(None, help="modelnet40/fg3d meshes: up axis, 'z' or 'y' (default: z for ModelNet, y for FG3D).")


@dataclass
class SyntheticFlags:
    """The options of the generated source (synthetic)."""

    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="synthetic: random seed; the same seed gives the same dataset.")
    categories: int = typer.Option(synthetic.DEFAULT_CATEGORIES, help="synthetic: number of categories (shape families).")
    objects_per_category: int = typer.Option(synthetic.DEFAULT_OBJECTS_PER_CATEGORY, help="synthetic: objects per category.")
    test_fraction: float = typer.Option(
        synthetic.DEFAULT_TEST_FRACTION, help="synthetic: fraction of each category's objects in the test split."
    )
    difficulty: str = typer.Option(
        "hard",
        help="synthetic: hard (one colour scheme per category, per-view camera jitter, lights and cluttered backgrounds, "
        "like photographs) or easy (per-instance colours, fixed cameras and light, white background).",
    )


@handle_errors
@with_option_groups
def prepare(
    source: str = typer.Argument(None, metavar="SOURCE", help=SOURCE_HELP, show_default=False),
    raw_dir: Path = typer.Argument(None, metavar="RAW_DIR", help="Folder with the raw dataset (not used by 'synthetic').", show_default=False),
    out: Path = typer.Option(None, "--out", "-o", help="Output HDF5 file. Default: ./data/<source>.h5"),
    size: int = typer.Option(224, help="Side of the square view images stored, in pixels."),
    views: int = typer.Option(
        None, help="Keep N evenly spaced views of every object (needed when objects have different view counts)."
    ),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip objects with unreadable images/meshes and list them."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output file if it exists."),
    compression: str = typer.Option(
        "none",
        help=f"HDF5 compression of the images: {', '.join(COMPRESSIONS)}. 'none' reads fastest; "
        "'lzf' saves disk (9x on rendered meshes, 1.2x on photos) at about half the read speed (docs/BENCHMARKS.md).",
    ),
    workers: int = typer.Option(2, min=1, help="Objects decoded or rendered concurrently."),
    mesh: MeshFlags = option_group(MeshFlags),
    generator: SyntheticFlags = option_group(SyntheticFlags),
    info: Path = typer.Option(None, "--info", help="Print a summary of an existing piro HDF5 file and exit."),
) -> None:
    """Turn a raw dataset (view images, or 3-D meshes rendered to 12 views) into one HDF5 file.

    Examples:

    piro prepare objectpi ./ObjectPI

    piro prepare modelnet40 ./ModelNet40 --per-category 100

    piro prepare synthetic --difficulty easy --out data/easy.h5
    """
    if info is not None:
        with ViewSetStore(info) as store:
            print_store_info(store.info())
        return
    if source is None:
        err_console.print("Give a dataset SOURCE (one of: " + ", ".join(SOURCES) + ") or --info FILE. See `piro prepare --help`.")
        raise typer.Exit(2)
    spec = get_source(source)
    if spec.needs_raw and raw_dir is None:
        err_console.print(f"`piro prepare {source}` needs RAW_DIR, a folder laid out as:\n{escape(spec.expected_layout)}")
        raise typer.Exit(2)
    source_options: dict = {}
    if source in ("modelnet40", "fg3d"):
        source_options["per_category"] = mesh.per_category
        up_axis = mesh.up_axis
        if up_axis is not None:
            if up_axis not in ("y", "z"):
                err_console.print(f"--up-axis must be 'y' or 'z', not {up_axis!r}")
                raise typer.Exit(2)
            source_options["up_axis"] = up_axis
    elif source == "synthetic":
        source_options.update(dataclasses.asdict(generator))
    options = PrepareOptions(
        size=size, views=views, skip_bad=skip_bad, overwrite=overwrite, compression=compression, workers=workers
    )
    with progress_bar(f"preparing {source}") as update:
        summary = prepare_dataset(source, raw_dir, out, options, source_options, progress=update)
    print_summary(summary)


def print_summary(summary: PrepareSummary) -> None:
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    splits = ", ".join(f"{split} {count}" for split, count in summary.objects_per_split.items())
    console.print(
        f"[green]wrote[/] {escape(str(summary.path))}: {splits} objects x {summary.num_views} views "
        f"({summary.image_size}x{summary.image_size}), {len(summary.categories)} categories, "
        f"layout: {escape(summary.layout)}, {summary.seconds:.1f} s",
        highlight=False,
    )
    if summary.skipped:
        err_console.print(f"[yellow]skipped {len(summary.skipped)} unreadable objects:[/]")
        for path, reason in summary.skipped:
            err_console.print(f"  {escape(path)}: {escape(reason)}", highlight=False)


def print_store_info(info: StoreInfo) -> None:
    console.print(f"[bold]{escape(str(info.path))}[/] ({info.file_bytes / 2**20:.1f} MiB)", highlight=False)
    console.print(
        f"source {info.source_dataset}, {info.num_views} views of {info.image_size}x{info.image_size}, "
        f"{len(info.categories)} categories, written by piro {info.piro_version} at {info.created_at}, "
        f"fingerprint {info.fingerprint}",
        highlight=False,
    )
    table = Table("category", *(s.name for s in info.splits), title="objects per split")
    for category in info.categories:
        table.add_row(category, *(str(s.objects_per_category.get(category, 0)) for s in info.splits))
    table.add_section()
    table.add_row("[bold]total[/]", *(f"[bold]{s.num_objects}[/]" for s in info.splits))
    console.print(table)
    options = ", ".join(f"{k}={v}" for k, v in info.creation_options.items() if v is not None)
    console.print(f"created with: {escape(options)}", highlight=False)
