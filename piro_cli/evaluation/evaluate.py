"""`piro evaluate`, as a library call (the CLI only parses options and renders results).

Sources: checkpoints (a `best.pt` / `last.pt`, or a run folder meaning its `best.pt`) and embeddings files
from `piro embed`, in any mix. Several sources give the mean and the sample standard deviation (n - 1)
of every task over them, like the paper's Table 1.

Which objects: `split="test"`: gallery = the data file's train split, probes = its test split.
`split="val"`: probes = the validation objects of the checkpoint's run (the data file's val split, or
the objects `--val-fraction` carved out of train, as recorded in the checkpoint), gallery = the train
objects the run trained on.

Which data file (checkpoints only): `data` when given; else the file the checkpoint was trained on when
it still exists at the recorded path; else the newest ./data/*.h5, as `piro train` picks it. Its
categories must be the checkpoint's. Embeddings files carry their own labels and need no data file.

Results are saved beside each source: `<run folder>/eval_<split>.json` and `.csv` for a `best.pt`
(`eval_<checkpoint stem>_<split>` for other checkpoint files; `_strict` appended with `strict`, `_nearest`
with `tie_break="nearest"`), and `<file stem>.eval_<split>.json` / `.csv` beside an embeddings file. The
protocol (piro_cli.retrieval.picr) is recorded in them: `protocol` (default or strict) and `tie_break`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from piro_cli import __version__
from piro_cli.data.store import FORMAT_NAME as VIEWSET_FORMAT
from piro_cli.data.store import open_hdf5
from piro_cli.errors import DataError, PiroError
from piro_cli.evaluation.openset import TASK as OPEN_SET_TASK
from piro_cli.evaluation.openset import evaluate_open_set
from piro_cli.hardware import check_precision, pick_device
from piro_cli.inference.cache import cached_embeddings
from piro_cli.inference.calibration import OpenSetProtocol
from piro_cli.inference.embeddings_file import FORMAT_NAME as EMBEDDINGS_FORMAT
from piro_cli.inference.embeddings_file import EmbeddingsFile
from piro_cli.inference.index_manifest import recorded_tta_scales
from piro_cli.inference.run import EmbedSettings, group_rows, load_run, require_split, trained_rows
from piro_cli.outputs import write_text
from piro_cli.reporting import Reporter, SilentReporter, stage_progress
from piro_cli.retrieval.picr import SHORT_NAMES, TASKS, needs_gallery, parse_tasks, required_fields, run_picr
from piro_cli.retrieval.search import TIE_BREAKS

SPLITS = ("test", "val")
OPEN_SET_RATES = ("rank1", "eer", "dir@far1", "dir@far5")
FORMATS = ("table", "json", "csv")


@dataclass
class SourceResult:
    """The tasks of one checkpoint or embeddings file."""

    source: str
    kind: str  # "checkpoint" or "embeddings"
    name: str  # for tables: the run folder name, or the file name
    values: dict[str, float]
    num_queries: dict[str, int]
    seconds: float
    data: dict = field(default_factory=dict)
    epoch: int | None = None
    saved: list[Path] = field(default_factory=list)
    tta: bool = False  # embedded with test-time flips
    tta_scales: list[float] | None = None  # embedded as the mean over these resizings of each view; None: embeddings file
    precision: str | None = None  # the arithmetic it was embedded in (fp32, bf16, fp16); None: an embeddings file
    center_crop: bool = False  # embedded from the central 224/256 of each view (the PIEs baselines' test transform)
    open_set: dict | None = None  # --task open-set: {"1": {rank1, eer, dir@far1, dir@far5, ...}, ...}

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else float("nan")


@dataclass
class EvaluationResult:
    tasks: tuple[str, ...]
    split: str
    strict: bool
    runs: list[SourceResult]
    tie_break: str = "smallest"
    tta: bool = False  # every source embedded with test-time flips (each run's own setting: SourceResult.tta)

    @property
    def open_set(self) -> dict | None:
        """Each query-view count's open-set rates, averaged over the runs (one run: its own)."""
        measured = [r.open_set for r in self.runs if r.open_set]
        if not measured:
            return None
        if len(measured) == 1:
            return measured[0]
        out = {}
        for q, first in measured[0].items():
            entry = {k: float(np.mean([m[q][k] for m in measured])) for k in OPEN_SET_RATES}
            entry["std"] = {k: float(np.std([m[q][k] for m in measured], ddof=1)) for k in OPEN_SET_RATES}
            out[q] = {**entry, "runs": len(measured), "settings": first["settings"]}
        return out

    @property
    def protocol(self) -> dict:
        return {"protocol": "strict" if self.strict else "default", "tie_break": self.tie_break, "tta": self.tta}

    @property
    def mean(self) -> dict[str, float]:
        return {t: float(np.mean([r.values[t] for r in self.runs])) for t in self.tasks}

    @property
    def std(self) -> dict[str, float]:
        """Sample standard deviation over the sources (n - 1); NaN for a single source."""
        if len(self.runs) < 2:
            return {t: float("nan") for t in self.tasks}
        return {t: float(np.std([r.values[t] for r in self.runs], ddof=1)) for t in self.tasks}

    def to_dict(self) -> dict:
        out = {
            "piro_version": __version__,
            "split": self.split,
            **self.protocol,
            "tasks": list(self.tasks),
            "runs": [_run_dict(r, self) for r in self.runs],
            "mean": {**self.mean, "mean": float(np.mean(list(self.mean.values())))} if self.tasks else {},
        }
        if self.open_set is not None:
            out[OPEN_SET_TASK] = self.open_set
        if len(self.runs) > 1 and self.tasks:
            out["std"] = {**self.std, "mean": float(np.std([r.mean for r in self.runs], ddof=1))}
        return json_safe(out)

    def csv(self) -> str:
        """One row per source (plus mean and std rows for several), columns in TASKS order, then their mean."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        counts = list(self.open_set or {})
        extra = [f"{OPEN_SET_TASK} {q} {rate}" for q in counts for rate in OPEN_SET_RATES]
        writer.writerow(["source", *self.tasks, "mean", *extra])
        for run in self.runs:
            measured = [_fmt(run.open_set[q][rate]) if run.open_set else "" for q in counts for rate in OPEN_SET_RATES]
            writer.writerow([run.source, *(_fmt(run.values[t]) for t in self.tasks), _fmt(run.mean), *measured])
        if len(self.runs) > 1:
            means, stds = self.mean, self.std
            writer.writerow(["mean", *(_fmt(means[t]) for t in self.tasks), _fmt(float(np.mean([r.mean for r in self.runs])))])
            writer.writerow(
                ["std", *(_fmt(stds[t]) for t in self.tasks), _fmt(float(np.std([r.mean for r in self.runs], ddof=1)))]
            )
        return buffer.getvalue()


def _fmt(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def json_safe(value):
    """NaN and infinities -> None, through dicts and lists: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _run_dict(run: SourceResult, result: EvaluationResult) -> dict:
    return {
        "source": run.source,
        "kind": run.kind,
        "epoch": run.epoch,
        "data": run.data,
        "split": result.split,
        **result.protocol,
        "tta": run.tta,
        "tta_scales": run.tta_scales,
        "precision": run.precision,
        "center_crop": run.center_crop,
        "tasks": dict(run.values),
        "mean": run.mean,
        "num_queries": dict(run.num_queries),
        "seconds": round(run.seconds, 3),
        **({OPEN_SET_TASK: run.open_set} if run.open_set else {}),
    }


# ----------------------------------------------------------------------------- evaluate


def evaluate(
    sources: Sequence[str | Path],
    *,
    data: str | Path | None = None,
    tasks: str | Sequence[str] | None = None,
    split: str = "test",
    strict: bool = False,
    tie_break: str = "smallest",
    device: str | None = None,
    save: bool = True,
    open_set: OpenSetProtocol | None = None,
    reporter: Reporter | None = None,
    embedding: EmbedSettings | None = None,
) -> EvaluationResult:
    """The PICR tasks for every source; see the module docstring for which objects, data file and outputs,
    and piro_cli.retrieval.picr for the protocol (`strict`, `tie_break`). `embedding`: how checkpoints embed their
    views (test-time flips and scales, arithmetic, the PIEs crop; piro_cli.inference.run.EmbedSettings), by default
    each run's own settings (embeddings files hold what they were written with); results under other scales,
    arithmetic or crop are never saved beside the run. The task "open-set" (piro_cli.evaluation.openset, with `open_set`'s settings) is measured
    for checkpoints and never saved beside them."""
    reporter = reporter or SilentReporter()
    if not sources:
        raise PiroError("give at least one checkpoint (runs/<name>/best.pt) or embeddings file (from `piro embed`)")
    if split not in SPLITS:
        raise PiroError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    if tie_break not in TIE_BREAKS:
        raise PiroError(f"--tie-break {tie_break!r}: choose one of {', '.join(TIE_BREAKS)}")
    wants_open_set, tasks = split_open_set(tasks)
    try:
        chosen = () if wants_open_set and tasks is None else parse_tasks(tasks)
    except ValueError as exc:
        raise PiroError(f"--task: {exc}") from None
    if wants_open_set:
        open_set = open_set or OpenSetProtocol(query_views=(1,))  # one photo per query unless asked
        embeddings = [s for s in sources if _is_embeddings_source(Path(s))]
        if embeddings:
            raise PiroError(
                f"{embeddings[0]}: --task open-set embeds view subsets through the run's view-set head; give the "
                "checkpoint (runs/<name>/best.pt), not an embeddings file"
            )
    embedding = embedding or EmbedSettings()
    if embedding.precision is not None:
        embedding = dataclasses.replace(embedding, precision=check_precision(embedding.precision))
    # a subset of the tasks, or other scales, arithmetic or crop than the run's, never replaces a run's saved eight
    save = save and chosen == TASKS and not embedding.changes_the_runs_numbers
    if save:  # the results are saved beside each source: checked before any work
        for source in map(Path, sources):
            folder = source if source.is_dir() else source.parent
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise PiroError(
                    f"{source}: cannot save the results beside it (no permission to write in {folder}); pass --no-save"
                )
    torch_device = pick_device(device)
    runs: list[SourceResult] = []
    categories: list[str] | None = None
    for source in sources:
        started = time.perf_counter()
        if _is_embeddings_source(Path(source)):
            run, gallery, probes, names = _from_embeddings(Path(source), chosen, split)
        else:
            run, gallery, probes, names = _from_checkpoint(
                Path(source), data, chosen, split, torch_device, reporter, embedding, open_set if wants_open_set else None
            )
        if categories is not None and names != categories:
            raise DataError(f"{source}: has other categories than {sources[0]}; only runs on the same categories can be averaged")
        categories = names
        if chosen:
            reporter.info(
                f"{run.name}: {len(probes)} {split} objects" + (f" against {len(gallery)} gallery objects" if gallery else "")
            )
            picr = run_picr(
                gallery, probes, chosen, strict=strict, tie_break=tie_break, device=torch_device,
                progress=lambda stage, done, total, name=run.name: reporter.progress(f"{name}: {stage}", done, total),
            )  # fmt: skip
            run.values, run.num_queries = picr.values, picr.num_queries
        run.seconds = time.perf_counter() - started
        runs.append(run)
    result = EvaluationResult(chosen, split, strict, runs, tie_break, all(run.tta for run in runs))
    if save:
        for run in runs:
            run.saved = _save_beside(run, result)
    return result


def split_open_set(tasks: str | Sequence[str] | None) -> tuple[bool, list[str] | None]:
    """(whether "open-set" is among the task names, the other names; None: none left, when open-set was given)."""
    if tasks is None:
        return False, None
    items = [n.strip() for part in ([tasks] if isinstance(tasks, str) else tasks) for n in part.split(",") if n.strip()]
    if OPEN_SET_TASK not in items:
        return False, items
    rest = [n for n in items if n != OPEN_SET_TASK]
    return True, (rest or None)


def _is_embeddings_source(path: Path) -> bool:
    """True for an embeddings file, False for a checkpoint; any other HDF5 file (or .h5 name) is refused here,
    with what it is, before torch.load would report it as a broken pickle."""
    if not path.is_file() or (path.suffix.lower() not in (".h5", ".hdf5") and not h5py.is_hdf5(path)):
        return False
    expected = "a checkpoint (runs/<name>/best.pt) or a file written by `piro embed`"
    with open_hdf5(path, expected) as handle:
        kind = handle.attrs.get("format")
    if kind == EMBEDDINGS_FORMAT:
        return True
    if kind == VIEWSET_FORMAT:
        raise DataError(
            f"{path}: a view-set data file from `piro prepare`, not a checkpoint or embeddings file; evaluate a "
            f"checkpoint on it: `piro evaluate runs/<name>/best.pt --data {path}`"
        )
    raise DataError(f"{path}: an HDF5 file not written by piro (neither a piro embeddings nor a view-set file); pass {expected}")


def _from_checkpoint(
    path: Path, data: str | Path | None, tasks, split: str, device: torch.device, reporter: Reporter,
    embedding: EmbedSettings, open_set: OpenSetProtocol | None = None,
):  # fmt: skip
    run = load_run(
        path, device, embedding.tta, precision=embedding.precision, center_crop=embedding.center_crop,
        tta_scales=embedding.tta_scales,
    )  # fmt: skip
    store = run.open_data(data)
    probe_split, probe_rows, gallery_rows = evaluation_objects(run, store, split)
    measured = evaluate_open_set(run, store, probe_split, probe_rows, split, open_set, reporter) if open_set else None
    if needs_gallery(tasks):
        require_split(store, "train", "the gallery")
    reporter.info(f"{run.path}: epoch {run.epoch if run.epoch is not None else '?'}, data {store.path}")
    gallery = probes = None
    if needs_gallery(tasks):
        stage = stage_progress(reporter, f"{run.name}: embedding the gallery (train)")
        gallery = cached_embeddings(run, store, "train", gallery_rows, stage)
    if tasks:
        stage = stage_progress(reporter, f"{run.name}: embedding the {split} objects")
        probes = cached_embeddings(run, store, probe_split, probe_rows, stage)
    result = SourceResult(
        source=str(path), kind="checkpoint", name=run.name, values={}, num_queries={}, seconds=0.0,
        data={"path": str(store.path), "fingerprint": store.fingerprint, "objects": store.objects_fingerprint}, epoch=run.epoch, tta=run.tta, precision=run.precision,
        center_crop=run.center_crop, open_set=measured, tta_scales=list(run.tta_scales),
    )  # fmt: skip
    return result, (gallery.embeddings if gallery else None), (probes.embeddings if probes else None), list(store.categories)


def _from_embeddings(path: Path, tasks, split: str):
    emb = EmbeddingsFile(path)
    gallery_fields, probe_fields = required_fields(tasks)
    if split == "test":
        emb.require("test")
        probes = emb.load("test", probe_fields)
        gallery_rows = None
    else:
        emb.require("val", hint=" (the validation objects of the checkpoint's run)")
        probes = emb.load("val", probe_fields)
        gallery_rows = None
        if probes.source_split == "train" and "train" in emb.groups:  # carved out of train: the rest is the gallery
            gallery_rows = np.flatnonzero(~np.isin(emb.object_index("train"), probes.object_index))
    gallery = None
    if needs_gallery(tasks):
        emb.require("train", hint=" (the gallery of the category recognition tasks; or pick other tasks with --task)")
        gallery = emb.load("train", gallery_fields, gallery_rows)
    run = SourceResult(
        source=str(path), kind="embeddings", name=path.name, values={}, num_queries={}, seconds=0.0,
        data={"path": emb.attrs.get("data_path"), "fingerprint": emb.attrs.get("data_fingerprint"),
              "checkpoint": emb.attrs.get("checkpoint")},
        epoch=emb.attrs.get("checkpoint_epoch"), tta=bool(emb.attrs.get("tta", False)),
        tta_scales=_recorded_scales(emb.attrs.get("tta_scales")),
    )  # fmt: skip
    return run, (gallery.embeddings if gallery else None), probes.embeddings, emb.categories


def _recorded_scales(value) -> list[float]:
    """An embeddings file's test-time scales (its attribute holds them as JSON text), as an index records them."""
    try:
        return recorded_tta_scales({"tta_scales": json.loads(value) if isinstance(value, str) and value else value})
    except (TypeError, ValueError):
        return [1.0]


def evaluation_objects(run, store, split: str) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """(probe split, probe rows, gallery rows; None: all) of a checkpoint's evaluation on `split` (module docstring)."""
    recorded_val = (run.checkpoint.get("data") or {}).get("val")
    if split == "test":
        hint = "; evaluate the run's validation objects with --split val" if recorded_val or "val" in store.splits else ""
        require_split(store, "test", "the probes", hint)
        return "test", None, None
    probe_split, probe_rows = group_rows(run.checkpoint, store, "val")
    return probe_split, probe_rows, trained_rows(run.checkpoint, store)  # the objects the run trained on


def _save_beside(run: SourceResult, result: EvaluationResult) -> list[Path]:
    source = Path(run.source)
    suffix = (
        f"{result.split}{'_strict' if result.strict else ''}{'_nearest' if result.tie_break == 'nearest' else ''}"
        f"{'_tta' if run.tta else ''}"
    )
    if run.kind == "checkpoint":
        ckpt = source / "best.pt" if source.is_dir() else source
        stem = f"eval_{suffix}" if ckpt.name == "best.pt" else f"eval_{ckpt.stem}_{suffix}"
        base = ckpt.parent / stem
    else:
        base = source.with_name(f"{source.stem}.eval_{suffix}")
    single = EvaluationResult(result.tasks, result.split, result.strict, [run], result.tie_break, run.tta)
    json_path, csv_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".csv")
    advice = "free space or pass --no-save"
    write_text(json.dumps(single.to_dict(), indent=2) + "\n", json_path, advice)
    write_text(single.csv(), csv_path, advice)
    return [json_path, csv_path]


def write_results(result: EvaluationResult, path: str | Path) -> Path:
    """Write the results as JSON or CSV, chosen by the file's suffix."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return write_text(json.dumps(result.to_dict(), indent=2) + "\n", path)
    if path.suffix.lower() == ".csv":
        return write_text(result.csv(), path)
    raise PiroError(f"--out {path}: use a .json or .csv file name")


def table_rows(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table: paper column order, then the mean of the tasks shown."""
    average = len(result.tasks) > 1
    header = ["source", *(SHORT_NAMES[t] for t in result.tasks)] + (["mean"] if average else [])
    rows = [
        [run.name, *(f"{run.values[t]:.2f}" for t in result.tasks)] + ([f"{run.mean:.2f}"] if average else [])
        for run in result.runs
    ]
    if len(result.runs) > 1:
        means, stds = result.mean, result.std
        run_means = [r.mean for r in result.runs]
        rows.append(
            [f"mean of {len(result.runs)}", *(f"{means[t]:.2f}" for t in result.tasks)]
            + ([f"{np.mean(run_means):.2f}"] if average else [])
        )
        rows.append(
            ["std", *(f"{stds[t]:.2f}" for t in result.tasks)] + ([f"{np.std(run_means, ddof=1):.2f}"] if average else [])
        )
    return header, rows
