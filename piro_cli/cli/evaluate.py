"""`piro evaluate`: options -> piro_cli.evaluation.evaluate.evaluate -> a table, JSON or CSV."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from piro_cli.cli.common import (
    RichReporter,
    console,
    distance_option,
    err_console,
    handle_errors,
    option_group,
    parse_tta_scales,
    progress_columns,
    query_counts,
    rejection_option,
    scoring_rule,
    tta_option,
    tta_scales_option,
    with_option_groups,
)  # fmt: skip
from piro_cli.errors import PiroError
from piro_cli.outputs import OutputLock, check_output_path
from piro_cli.retrieval.tasks import TASKS

TASK_HELP = (
    "Task to compute: " + ", ".join(TASKS) + ", or all (the eight); or open-set (the engineer's protocol: enrol half "
    "the objects from a few photos, query both halves; see --enrol-views). Repeat the option or separate names with commas."
)


@dataclass
class EmbeddingFlags:
    """How the runs' models embed; each left out: the run's own setting."""

    tta: bool = tta_option()
    tta_scales: str = tta_scales_option(after=" Results under other scales are not saved into the run folder.")
    precision: str = typer.Option(
        None,
        help="Arithmetic of the embedding: auto (mixed bf16/fp16 on a GPU, fp32 on a CPU), fp32 (no TF32), bf16 or "
        "fp16. Default: the run's own (`piro train --precision`; fp32 for the released recipes). Results under "
        "another precision are not saved into the run folder.",
        show_default=False,
    )
    center_crop: bool = typer.Option(
        None,
        "--center-crop/--no-center-crop",
        help="Embed the central 224/256 of each view, resized back: the PIEs baselines' released test transform "
        "(Resize 256, CenterCrop 224). Default: on for the PIEs methods, off for the others. Results with another "
        "crop than the method's are not saved into the run folder.",
        show_default=False,
    )

    def settings(self):
        from piro_cli.inference.run import EmbedSettings

        return EmbedSettings(self.tta, parse_tta_scales(self.tta_scales), self.precision, self.center_crop)


@dataclass
class OutputFlags:
    """What is printed and written."""

    output_format: str = typer.Option(
        "table", "--format", "-f", help="What to print: table, json or csv (for scripts; progress goes to stderr)."
    )
    out: Path = typer.Option(None, "--out", "-o", help="Also write the results to this file, .json or .csv.")
    save: bool = typer.Option(
        True,
        "--save/--no-save",
        help="Save eval_<split>.json and .csv into each checkpoint's run folder (beside an embeddings file), when all "
        "eight tasks are computed: a subset (--task) or the open set never replaces them.",
    )


@dataclass
class OpenSetFlags:
    """The open-set protocol (--task open-set); --draws also counts the views curve's draws."""

    draws: int = typer.Option(
        5, min=1, help="With --views-curve: random view subsets averaged for each number of views. With --task open-set: "
        "random halves of the objects enrolled (the others never), pooled."
    )
    seed: int = typer.Option(0, min=0, help="With --task open-set: the seed of the draws.")
    enrol_views: int = typer.Option(
        4, "--enrol-views", min=1, help="With --task open-set: photos each enrolled object is enrolled from (its first E views)."
    )
    query_views: str = typer.Option(
        "1", "--query-views", help="With --task open-set: photos per query, drawn from the views not used to enrol; "
        "several counts separated by commas (1,3) are measured in one run."
    )
    distance: str = distance_option("With --task open-set: ")
    rejection: str = rejection_option("With --task open-set: ")

    def options(self):
        from piro_cli.inference.calibration import OpenSetProtocol

        rule = scoring_rule(self.distance, self.rejection)
        return OpenSetProtocol(self.enrol_views, query_counts(self.query_views), self.draws, self.seed, rule)


@handle_errors
@with_option_groups
def evaluate(
    sources: list[Path] = typer.Argument(
        ...,
        metavar="SOURCE",
        show_default=False,
        help="Checkpoints (runs/<name>/best.pt or last.pt; a run folder means its best.pt) and/or embeddings files "
        "from `piro embed`. Several give the mean and standard deviation of every task, like the paper's Table 1.",
    ),
    data: Path = typer.Option(
        None,
        help="HDF5 file from `piro prepare`. Default: the file the checkpoint was trained on if it still exists, "
        "else the most recently written ./data/*.h5. Not needed for embeddings files.",
    ),
    task: list[str] = typer.Option(["all"], "--task", "-t", help=TASK_HELP),
    split: str = typer.Option(
        "test",
        help="test: probes = the test split, gallery = the train split. val: probes = the validation objects of "
        "the checkpoint's run (carved out of train with --val-fraction, or the data's val split), gallery = the train "
        "objects it trained on.",
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Leave the query itself out of every ranking. Default: the authors' released protocol, where a "
        "category retrieval ranks the query itself too and the SV object tasks drop the first hit of the full "
        "ranking (the query, unless an exact duplicate view has a lower index).",
    ),
    tie_break: str = typer.Option(
        "smallest",
        "--tie-break",
        help="Who wins a tie in a 10-NN category vote. smallest: the smallest tied category index, as the "
        "authors' released code (argmax of bincount) decides, behind the published numbers. nearest: the tied "
        "category whose nearest neighbour ranks first; it depends on the ranking only, not on how the categories "
        "are numbered, so renumbering them cannot change the result.",
    ),
    embedding: EmbeddingFlags = option_group(EmbeddingFlags),
    output: OutputFlags = option_group(OutputFlags),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when available)."),
    views_curve: bool = typer.Option(
        False,
        "--views-curve",
        help="Instead of the eight tasks: MV category and MV object recognition for 1, 2, ... V query views (random view "
        "subsets, --draws of them, seeded), saved as views_<split>.json/.csv in each run folder; `piro visualize --views` draws it.",
    ),
    open_set: OpenSetFlags = option_group(OpenSetFlags),
) -> None:
    """Compute the eight pose-invariant classification and retrieval (PICR) tasks of a trained model.

    Accuracy for recognition, mAP for retrieval, in percent, in the paper's column order.

    Examples:

    piro evaluate runs/exp --split val

    piro evaluate runs/seed*/best.pt --format csv --out table1.csv

    piro evaluate runs/dual runs/single --views-curve

    piro evaluate runs/exp --split val --task open-set --query-views 1,3 --format json
    """
    from piro_cli.evaluation.evaluate import FORMATS, write_results
    from piro_cli.evaluation.evaluate import evaluate as run_evaluation

    out, output_format = output.out, output.output_format
    if views_curve:
        if embedding.tta_scales is not None:
            raise PiroError("--tta-scales: the views curve embeds at each run's own scales; leave it out with --views-curve")
        _views_curves(sources, data, split, open_set.draws, embedding.tta, device, output.save)
        return
    if output_format not in FORMATS:
        raise PiroError(f"--format {output_format!r}: choose one of {', '.join(FORMATS)}")
    if out is not None:
        if out.suffix.lower() not in (".json", ".csv"):
            raise PiroError(f"--out {out}: use a .json or .csv file name")
        check_output_path(out, "--out", overwrite=True)  # evaluate replaces its --out file, as before
    with OutputLock(out) if out is not None else contextlib.nullcontext():
        with Progress(*progress_columns(), console=err_console, transient=True) as progress:
            result = run_evaluation(
                [str(s) for s in sources], data=data, tasks=task, split=split, strict=strict, tie_break=tie_break,
                device=device, save=output.save, open_set=open_set.options(), reporter=RichReporter(progress),
                embedding=embedding.settings(),
            )  # fmt: skip
        if out is not None:
            write_results(result, out)
    if output_format == "json":
        console.print_json(json.dumps(result.to_dict()))
    elif output_format == "csv":
        console.file.write(result.csv())
    else:
        if result.tasks:
            print_results_table(result)
        if result.open_set:
            print_open_set_table(result)
    for run in result.runs:
        if run.saved:
            err_console.print(f"saved {escape(', '.join(str(p) for p in run.saved))}", highlight=False)
    if out is not None:
        err_console.print(f"wrote {escape(str(out))}", highlight=False)


def _views_curves(sources, data, split, draws, tta, device, save) -> None:
    """--views-curve: one curve per checkpoint, then one table (rows: k; columns: each run's two tasks)."""
    from piro_cli.evaluation.views_curve import TASKS, views_curve

    curves = []
    with Progress(*progress_columns(), console=err_console, transient=True) as progress:
        for source in sources:
            curves.append(
                views_curve(source, data=data, split=split, draws=draws, tta=tta, device=device, save=save,
                            reporter=RichReporter(progress))
            )  # fmt: skip
    table = Table(title=f"accuracy (%) against query views k on {split}, mean of {draws} draws", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("k", justify="right")
    for curve in curves:
        table.add_column(f"{escape(curve.run)}\nMV cat", justify="right")
        table.add_column(f"{escape(curve.run)}\nMV obj", justify="right")
    for k in range(1, max(c.num_views for c in curves) + 1):
        cells = [str(k)]
        for curve in curves:
            for task in TASKS:
                value = curve.mean(task).get(k)
                cells.append("" if value is None else f"{value:.2f}")
        table.add_row(*cells)
    console.print(table)
    for curve in curves:
        if curve.saved:
            err_console.print(f"saved {escape(', '.join(str(p) for p in curve.saved))}", highlight=False)


def print_results_table(result) -> None:
    """The PICR results as a rich table in the paper's column order (one row per source, then mean and std)."""
    from piro_cli.evaluation.evaluate import table_rows

    header, rows = table_rows(result)
    protocol = ("strict" if result.strict else "default protocol") + (
        ", vote ties to the nearest" if result.tie_break == "nearest" else ""
    )
    # A borderless table whose headers may wrap ("SV cat" / "acc"): all nine numbers fit in 80 columns.
    table = Table(
        title=f"PICR tasks on {result.split} ({protocol}), percent",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        pad_edge=False,
    )
    for i, name in enumerate(header):
        if i == 0:
            table.add_column(name, justify="left", overflow="fold", min_width=4)
        else:
            table.add_column(name, justify="right", no_wrap=False, min_width=6)
    for i, row in enumerate(rows):
        table.add_row(*(escape(c) for c in row), end_section=i == len(result.runs) - 1 and len(rows) > len(result.runs))
    console.print(table)


def print_open_set_table(result) -> None:
    """The open-set rates: one row per run and query-view count (then the mean over runs)."""
    first = next(iter(result.open_set.values()))["settings"]
    scoring = first["scoring"]
    table = Table(
        title=f"open set on {result.split}: enrolled from {first['enrol_views']} photos, {first['draws']} draws, "
        f"scoring {scoring['distance']}+{scoring['rejection']}, percent",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in ("source", "photos", "rank-1", "EER", "DIR@FAR1%", "DIR@FAR5%"):
        table.add_column(name, justify="left" if name == "source" else "right")
    rows = [(run.name, run.open_set) for run in result.runs if run.open_set]
    if len(rows) > 1:
        rows.append((f"mean of {len(rows)}", result.open_set))
    for name, measured in rows:
        for q, entry in measured.items():
            table.add_row(escape(name), q, *(f"{entry[k]:.2f}" for k in ("rank1", "eer", "dir@far1", "dir@far5")))
    console.print(table)
    err_console.print(
        "EER: the share of wrong accept/reject decisions where both kinds are equal; DIR@FAR x: enrolled objects' queries "
        "named right at the threshold that lets x of never-enrolled objects' queries through.",
        highlight=False,
    )
