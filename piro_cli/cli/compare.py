"""`piro compare`: options -> piro_cli.evaluation.compare.compare_runs -> a table, markdown, CSV or JSON."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from piro_cli.cli.common import (
    RichReporter,
    console,
    err_console,
    handle_errors,
    parse_tta_scales,
    progress_columns,
    tta_option,
    tta_scales_option,
)
from piro_cli.outputs import OutputLock, check_output_path


@handle_errors
def compare(
    runs: list[Path] = typer.Argument(
        ...,
        metavar="RUN",
        show_default=False,
        help="Run folders (runs/<name>, meaning its best.pt) or checkpoint files, e.g. runs/*. Runs are grouped by "
        "method (--method and the options that change it); groups appear in the order their first run is given.",
    ),
    split: str = typer.Option(
        None,
        show_default=False,
        help="Re-evaluate every checkpoint: test (probes = the test split, gallery = the train split) or val (the run's "
        "validation objects). Default: the validation numbers each run recorded at its best epoch (instant; needs runs "
        "trained with --val-fraction or on data with a val split).",
    ),
    data: Path = typer.Option(
        None,
        help="With --split: the HDF5 file to evaluate on. Default: the file the runs were trained on if it still "
        "exists, else the most recently written ./data/*.h5.",
    ),
    output_format: str = typer.Option(
        "table",
        "--format",
        "-f",
        help="table (best per column in bold green), markdown (best in **bold**), csv (mean and std columns) or json "
        "(also every run's values and the best method per column). markdown, csv and json go to stdout, progress to stderr.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Also write the comparison to this file: in the --format chosen, or for --format table in the format its "
        "name says (.md, .csv or .json).",
    ),
    tta: bool = tta_option("With --split: "),
    tta_scales: str = tta_scales_option("With --split: "),
    device: str = typer.Option(None, help="With --split: cpu, cuda or cuda:N (default: cuda when available)."),
) -> None:
    """Compare runs: the eight PICR tasks per method, mean ± standard deviation over its runs (seeds), best per column.

    Like the paper's Tables 2 and 3.

    Examples:

    piro compare runs/dual-s0 runs/dual-s1 runs/single-s0

    piro compare runs/* --split test --format markdown > table.md
    """
    from piro_cli.evaluation.compare import compare_runs, out_format, write_comparison

    write_as = out_format(out, output_format)  # checked before any work
    if out is not None:
        check_output_path(out, "--out", overwrite=True)  # compare replaces its --out file, as before
    with OutputLock(out) if out is not None else contextlib.nullcontext():
        with Progress(*progress_columns(), console=err_console, transient=True) as progress:
            comparison = compare_runs(
                runs, split=split, data=data, tta=tta, tta_scales=parse_tta_scales(tta_scales), device=device,
                reporter=RichReporter(progress),
            )
        if out is not None:
            write_comparison(comparison, out, write_as)
    if output_format == "table":
        print_comparison_table(comparison)
    else:
        console.file.write(comparison.render(output_format))
    if out is not None:
        err_console.print(f"wrote {escape(str(out))}", highlight=False)


NARROW = 80  # below this many columns the table would drop its method column: blocks instead


def print_comparison_table(comparison) -> None:
    """One row per method (its run count below its name); a cell shows the mean over the group's runs and, below
    it, ± the standard deviation. Two-line rows keep all eleven numeric columns within an 80-column terminal."""
    header, rows = comparison.table()
    if console.width < NARROW:  # too narrow for eleven columns: one block per method, a task a line
        console.print(escape(comparison.title), highlight=False)
        for _, cells, flags in rows:
            runs = int(cells[1])
            console.print(f"[bold]{escape(cells[0])}[/] ({runs} run{'s' if runs != 1 else ''})", highlight=False)
            for name, cell, best in zip(header[2:], cells[2:], flags[2:], strict=True):
                text = escape(cell or "-")
                console.print(f"  {escape(name)}: " + (f"[bold green]{text}[/]" if best and cell else text), highlight=False)
        return
    table = Table(
        title=comparison.title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False, show_edge=False
    )
    table.add_column("method", justify="left", overflow="fold", min_width=11)  # "piro-single" on one line
    for name in header[2:]:
        # "100.00", "±12.34"; headers wrap ("SV cat" / "acc"); the train time ("38.6") in 5, so 80 columns hold it all
        table.add_column(name, justify="right", width=5 if "time" in name else 6)
    for _, cells, flags in rows:
        runs = int(cells[1])
        shown = [escape(f"{cells[0]}\n{runs} run{'s' if runs != 1 else ''}")]
        for cell, best in zip(cells[2:], flags[2:], strict=True):
            text = escape(cell.replace(" ± ", "\n±"))
            shown.append(f"[bold green]{text}[/]" if best and cell else text)
        table.add_row(*shown)
    console.print(table)
