"""`piro index build|add|remove|info|calibrate` and `piro identify`: options -> piro_cli.inference.index / calibration."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from piro_cli.cli.common import (
    RichReporter,
    console,
    count,
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

index_app = typer.Typer(
    name="index",
    help="A saved gallery of enrolled objects that `piro identify` searches.\n\nBuild it from a run, enrol new objects "
    "from a few photos without retraining, calibrate the distance beyond which a photo is `unknown`.\n\n"
    "piro index build runs/exp --out shop.piro-index\n\n"
    "piro index add shop.piro-index --object my-mug --category mug mug1.jpg mug2.jpg\n\n"
    "piro index calibrate shop.piro-index --split val",
    no_args_is_help=True,
)

INDEX_ARG = typer.Argument(
    ..., show_default=False, metavar="INDEX", help="An index folder (NAME.piro-index) from `piro index build`."
)
RUN_OPTION = typer.Option(
    None, "--run", help="The run the index was built with, when its checkpoint has moved (default: the path the index recorded)."
)
DEVICE_OPTION = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when available).")


def _reporting():
    progress = Progress(*progress_columns(), console=err_console, transient=True)
    return progress, RichReporter(progress)


@index_app.command("build")
@handle_errors
def build(
    run: Path = typer.Argument(..., show_default=False, metavar="RUN", help="A run folder (its best.pt) or a checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", show_default=False, help="The index folder to create, NAME.piro-index."),
    data: Path = typer.Option(
        None, help="The run's HDF5 data file (default: the file it was trained on, else the newest ./data/*.h5)."
    ),
    split: str = typer.Option(
        "train",
        help="Which objects to enrol: train (the objects the run trained on; its validation objects stay out, for "
        "calibrate), val (its validation objects) or test (the data file's test split).",
    ),
    tta: bool = tta_option("Also used by every later add and identify on this index. "),
    tta_scales: str = tta_scales_option("Also used by every later add and identify on this index. "),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index at --out."),
    device: str = DEVICE_OPTION,
) -> None:
    """Embed a split's objects (every view, both spaces, and each object's view set) into a new index.

    Example: piro index build runs/exp --out shop.piro-index
    """
    from piro_cli.inference.index import build_index

    progress, reporter = _reporting()
    with progress:
        change = build_index(
            run, out, data=data, split=split, device=device, tta=tta, tta_scales=parse_tta_scales(tta_scales),
            overwrite=overwrite, reporter=reporter,
        )  # fmt: skip
    console.print(
        f"[green]built[/] {escape(str(change.path))}: {count(change.objects, 'object')}, {count(change.views, 'view')} in {change.seconds:.1f} s; "
        f"next: `piro index calibrate {escape(str(change.path))}`",
        highlight=False,
    )


@index_app.command("add")
@handle_errors
def add(
    index: Path = INDEX_ARG,
    photos: list[Path] = typer.Argument(
        ...,
        show_default=False,
        metavar="PHOTO",
        help="With --object: the photos of one object (its views). Without: folders laid out category/object/*.jpg, "
        "each object folder enrolled as one object of its category.",
    ),
    object_name: str = typer.Option(None, "--object", help="Name of the object the photos show (must be new to the index)."),
    category: str = typer.Option(None, "--category", help="Its category (a new name adds a category to the index)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out photos that cannot be read instead of stopping."),
    run: Path = RUN_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Enrol new objects from a few photos each, without retraining; all or nothing.

    Examples:

    piro index add shop.piro-index --object my-mug --category mug mug1.jpg mug2.jpg

    piro index add shop.piro-index new-stock/   (new-stock/CATEGORY/OBJECT/*.jpg)
    """
    from piro_cli.inference.index import Enrolment, add_objects, enrolments_from_folder

    if (object_name is None) != (category is None):
        raise PiroError("--object and --category go together: name the object and its category, or pass folders only")
    if object_name is not None:
        enrolments = [Enrolment(object_name, category, list(photos))]
    else:
        files = [p for p in photos if not p.is_dir()]
        if files:
            raise PiroError(
                f"{files[0]}: photos need --object NAME --category CAT; without them pass folders category/object/*.jpg"
            )
        enrolments = [e for folder in photos for e in enrolments_from_folder(folder)]
    progress, reporter = _reporting()
    with progress:
        change = add_objects(index, enrolments, run=run, device=device, skip_bad=skip_bad, reporter=reporter)
    console.print(
        f"[green]added[/] {count(change.objects, 'object')} ({count(change.views, 'photo')}) to {escape(str(change.path))} in {change.seconds:.1f} s; "
        f"it holds {count(change.total_objects, 'object')}, {count(change.total_views, 'view')}",
        highlight=False,
    )


@index_app.command("remove")
@handle_errors
def remove(
    index: Path = INDEX_ARG,
    names: list[str] = typer.Argument(..., show_default=False, metavar="OBJECT", help="Names of the objects to remove."),
) -> None:
    """Remove objects from an index (all or nothing).

    Example: piro index remove shop.piro-index my-mug
    """
    from piro_cli.inference.index import remove_objects

    change = remove_objects(index, names)
    console.print(
        f"[green]removed[/] {count(change.objects, 'object')} ({count(change.views, 'view')}) from {escape(str(change.path))}; "
        f"it holds {count(change.total_objects, 'object')}",
        highlight=False,
    )


@index_app.command("info")
@handle_errors
def info(
    index: Path = INDEX_ARG,
    output_format: str = typer.Option("table", "--format", "-f", help="table or json."),
    objects: bool = typer.Option(False, "--objects", help="Also list every object (name, category, views, where from)."),
) -> None:
    """What an index holds, what built it and its threshold.

    Example: piro index info shop.piro-index --objects
    """
    from piro_cli.inference.index import GalleryIndex

    if output_format not in ("table", "json"):
        raise PiroError(f"--format {output_format!r}: choose table or json")
    gallery = GalleryIndex(index)
    facts = gallery.info()
    if objects:
        facts["object_list"] = [{**o.to_dict(), "category": gallery.categories[o.category]} for o in gallery.objects]
    if output_format == "json":
        console.print_json(json.dumps(facts))
        return
    threshold = facts["threshold"]
    lines = [
        f"{facts['objects']} objects ({facts['enrolled']} enrolled with `add`), {facts['views']} views, {facts['categories']} categories",
        f"checkpoint {facts['checkpoint']} (weights {facts['fingerprint']}), dims {facts['dims']['category']}/{facts['dims']['object']}"
        + (", test-time flips" if facts["tta"] else "")
        + (f", test-time scales {','.join(f'{x:g}' for x in facts['tta_scales'])}" if facts["tta_scales"] != [1.0] else ""),
        f"{facts['bytes_on_disk'] / 2**20:.1f} MiB on disk",
        "threshold: none (every photo gets its nearest object); run `piro index calibrate`"
        if not threshold
        else f"scoring {gallery.rule.label}, {threshold['rule']} on {threshold['objects']} held-out objects of {threshold['split']}",
    ]
    for q in (1, 2, 3) if threshold else ():
        entry = gallery.calibrated(q)
        if entry.get("far") is not None:
            lines.append(
                f"  {q} photo{'s' if q > 1 else ''}: threshold {entry['score']:.4f} (unknown objects accepted "
                f"{100 * entry['far']:.1f}%, known rejected {100 * entry['frr']:.1f}%)"
            )
    console.print(f"[bold]{escape(str(gallery.path))}[/]", highlight=False)
    for line in lines:
        console.print(f"  {escape(line)}", highlight=False)
    if objects:
        table = Table("object", "category", "views", "from")
        for o in facts["object_list"]:
            table.add_row(escape(o["name"]), escape(o["category"]), str(o["views"]), escape(o["source"]))
        console.print(table)


@dataclass
class ProtocolFlags:
    """`index calibrate`'s protocol: the target and the draws of held-out objects."""

    far: float = typer.Option(
        None,
        "--far",
        help="Pick the largest threshold whose false-accept rate is at most this (e.g. 0.05); default: the equal-error point.",
    )
    draws: int = typer.Option(5, min=1, help="Random enrolled/unseen halves of the held-out objects, pooled.")
    seed: int = typer.Option(0, min=0, help="Seed of the draws.")
    enrol_views: int = typer.Option(
        None, "--enrol-views", min=1, help="Photos each held-out object is enrolled from (its first E views; default 4, "
        "or one less than the views an object has)."
    )
    query_views: str = typer.Option(
        None, "--query-views", help="Photos per query to calibrate a threshold for, separated by commas (default 1,2,3 "
        "as far as the views left after enrolment allow); `identify` uses the threshold of its number of photos."
    )
    distance: str = distance_option()
    rejection: str = rejection_option()

    def protocol(self):
        from piro_cli.inference.calibration import OpenSetProtocol

        counts, rule = query_counts(self.query_views), scoring_rule(self.distance, self.rejection)
        return OpenSetProtocol(self.enrol_views, counts, self.draws, self.seed, rule)


@index_app.command("calibrate")
@handle_errors
@with_option_groups
def calibrate(
    index: Path = INDEX_ARG,
    data: Path = typer.Option(None, help="The run's HDF5 data file (default: the file it was trained on)."),
    split: str = typer.Option(
        "val", help="Held-out objects the index does not hold: val (the run's validation objects) or test."
    ),
    protocol: ProtocolFlags = option_group(ProtocolFlags),
    plot: Path = typer.Option(None, "--plot", help="Also draw false accepts and false rejects against the threshold (.png)."),
    save: bool = typer.Option(True, "--save/--no-save", help="Write the threshold into the index (--no-save: report only)."),
    run: Path = RUN_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Choose the distance beyond which `identify` answers `unknown`, on held-out objects; report its error rates.

    In each draw half of the held-out objects are enrolled from half their views and queried with the rest (known photos), the other half are queried without being enrolled (unknown photos).

    Examples:

    piro index calibrate shop.piro-index --plot cal.png

    piro index calibrate shop.piro-index --far 0.05
    """
    from piro_cli.inference.calibration import calibrate_index
    from piro_cli.viz.calibration import check_plot_path, plot_calibration

    if plot is not None:
        check_plot_path(plot)
    progress, reporter = _reporting()
    with progress:
        result = calibrate_index(
            index,
            data=data,
            split=split,
            protocol=protocol.protocol(),
            target_far=protocol.far,
            run=run,
            device=device,
            save=save,
            reporter=reporter,
        )
    if result.excluded:
        err_console.print(
            f"[yellow]warning:[/] left out {len(result.excluded)} {split} objects the index already holds", highlight=False
        )
    console.print(
        f"scoring {result.rule.label}, {result.target}, {result.objects} held-out objects enrolled from {result.enrol_views} "
        f"photos, {result.draws} draws:",
        highlight=False,
    )
    for q, entry in sorted(result.thresholds.items()):
        console.print(
            f"  {q} photo{'s' if q > 1 else ''}: threshold {entry.score:.4f}: unknown objects accepted {100 * entry.far:.1f}% "
            f"of {len(entry.impostor)}, known objects rejected {100 * entry.frr:.1f}% of {len(entry.genuine)}, "
            f"accepted as another object {100 * entry.wrong_object:.1f}%",
            highlight=False,
        )
        for pair in entry.lookalikes[:3]:  # what the false accepts are: often near-twins of enrolled objects
            console.print(
                f"    unknown {escape(pair['object'])!r} taken for {escape(pair['taken_for'])!r}: {pair['accepted']} of its "
                f"{pair['queries']} queries",
                highlight=False,
            )
    if plot is not None:
        console.print(f"[green]wrote[/] {escape(str(plot_calibration(result, plot)))}", highlight=False)
    if save:
        console.print(f"saved in {escape(str(index))}; `piro identify` uses it unless --threshold is given", highlight=False)


@handle_errors
def identify(
    index: Path = INDEX_ARG,
    photos: list[Path] = typer.Argument(..., show_default=False, metavar="PHOTO", help="Photos of one object: one view set."),
    top: int = typer.Option(5, min=1, help="How many nearest objects to list."),
    threshold: float = typer.Option(
        None, help="Answer `unknown` when the nearest object's score is above this (default: the index's calibrated one for that many photos)."
    ),
    output_format: str = typer.Option("table", "--format", "-f", help="table or json (for scripts)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out photos that cannot be read instead of stopping."),
    run: Path = RUN_OPTION,
    device: str = DEVICE_OPTION,
    onnx: Path = typer.Option(
        None,
        "--onnx",
        help="Embed the photos with the graphs `piro export RUN --onnx NAME.onnx` wrote (onnxruntime, no torch: a "
        "fresh process answers in about a second instead of four). They must come from the index's run. Default: the "
        "index's own graphs when `piro export RUN --onnx INDEX/model.onnx` put them there, else the run's model.",
        show_default=False,
    ),
) -> None:
    """Which category and which enrolled object the photos show, or `unknown`.

    The category is the 10-NN vote of the photos' views among the enrolled views (as the PICR tasks), given even when the object is unknown. Objects are ranked by the index's scoring rule (`piro index info`; by default the mean of each photo's distance to an object's nearest view and of the view-set embeddings' distance). The answer is `unknown` when the score is above the threshold calibrated for that number of photos; a named object comes with the share of never-enrolled objects' photos that scored as low in calibration (its false-accept rate).

    Examples:

    piro identify shop.piro-index photo.jpg

    piro identify shop.piro-index front.jpg side.jpg --format json

    piro identify shop.piro-index photo.jpg --onnx exp.onnx
    """
    from piro_cli.inference.index import identify as run_identify

    if output_format not in ("table", "json"):
        raise PiroError(f"--format {output_format!r}: choose table or json")
    result = run_identify(index, photos, top=top, threshold=threshold, run=run, device=device, skip_bad=skip_bad, onnx=onnx)
    for image, reason in result.skipped:
        err_console.print(f"[yellow]warning:[/] skipped {escape(image)}: {escape(reason)}", highlight=False, soft_wrap=True)
    if output_format == "json":
        console.print_json(json.dumps(result.to_dict()))
        return
    answer = result.answer
    share = f"{answer['category_votes'][answer['category']]} of {sum(answer['category_votes'].values())} votes"
    if answer["answer"] == "unknown":
        verdict = f"[yellow]unknown[/]: no enrolled object is close enough (score {answer['score']:.4f} > threshold {answer['threshold']:.4f})"
    else:
        verdict = f"[bold green]{escape(answer['answer'])}[/] (score {answer['score']:.4f}"
        if answer["threshold"] is None:
            verdict += ", no threshold: run `piro index calibrate` to be told when it is none of the enrolled objects)"
        elif answer["false_accept_rate"] is not None:
            verdict += f", threshold {answer['threshold']:.4f}: {100 * answer['false_accept_rate']:.1f}% of photos of objects that are not enrolled score this low)"
        else:
            verdict += f", threshold {answer['threshold']:.4f})"
    console.print(verdict, highlight=False)
    console.print(f"category [bold]{escape(answer['category'])}[/] ({share})", highlight=False)
    table = Table("object", "category", "distance")
    for row in answer["nearest"]:
        table.add_row(escape(row["object"]), escape(row["category"]), f"{row['distance']:.4f}")
    console.print(table)
    seconds = result.to_dict()["seconds"]
    console.print(
        f"{count(len(result.images), 'photo')}; load {1000 * seconds['load']:.0f} ms (index and model), decode "
        f"{1000 * seconds['decode']:.0f} ms, model {1000 * seconds['model']:.0f} ms ({result.engine}), search "
        f"{1000 * seconds['search']:.1f} ms",
        highlight=False,
    )
