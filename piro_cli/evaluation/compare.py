"""`piro compare`: the eight PICR tasks of several runs in one table, grouped by method (paper Tables 2 and 3).

A RUN is a run folder (meaning its `best.pt`) or a checkpoint file. Runs are grouped by
`piro_cli.training.config.method_label` of their training options (e.g. 'piro-dual', 'mv-cnn',
'piro-single+triplet'); groups appear in the order their first run was given. Each group reports the
number of runs, their seeds, and per task (and for the mean of the eight tasks) the mean and the sample
standard deviation over its runs (n - 1; none for a single run), plus each run's training wall time
(the sum of the `seconds` column of its folder's `metrics.csv`) and checkpoint epoch. The best group
mean of each task column (and of the mean column) is marked best; equal means at the two decimals
shown are all best.

Which numbers: by default (`split=None`) the validation numbers each run recorded at the checkpoint's
epoch (`best.pt` keeps its best epoch's), so nothing is re-embedded; a run trained without validation
objects has none (train with `--val-fraction`, or re-evaluate with `split="test"`). `split="test"` or
`"val"` re-evaluates every checkpoint with `piro_cli.evaluation.evaluate.evaluate` (nothing is saved).

Runs that share a method label but differ in other training options (epochs, backbone, image size, ...) are
different methods: their labels gain '+option=value' for each such option. Seeds, folds, validation carving,
recipe names, run names and devices never split a method.

Comparable numbers only: all runs must have been trained on the same dataset (the fingerprint their
checkpoints record) or on files of the same objects stored otherwise (prepared at other image sizes: the
objects fingerprint; each run is then evaluated on its own file), and for validation numbers (recorded, or `split="val"`) have held out the very same
validation objects (`--val-fraction` with the same `--val-seed`, or the data file's val split). Runs from
before `--val-seed` carved their validation objects with the training seed; compare those on the test split.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from piro_cli import __version__
from piro_cli.errors import DataError, PiroError
from piro_cli.evaluation.evaluate import SPLITS, json_safe
from piro_cli.outputs import write_text
from piro_cli.reporting import Reporter, SilentReporter
from piro_cli.retrieval.picr import SHORT_NAMES, TASKS
from piro_cli.runs import FEATURE_CACHE, MetricsLog, checkpoint_file, load_checkpoint, metric_value, run_name
from piro_cli.training.config import method_label, saved_values

FORMATS = ("table", "markdown", "csv", "json")
TEXT_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json"}
COLUMNS = (*TASKS, "mean")
"""The compared columns: the eight tasks in the paper's order, then their mean."""
DECIMALS = 2  # shown in the tables; equal means at this precision are all best

# Training options that may differ between the runs of one group without making them different methods.
# Folds of a K-fold estimate are one method, and so are runs whose options came from a recipe or were typed alike.
_NOT_METHOD = {"seed", "fold", "val_fraction", "val_seed", "recipe", "name", "project", "data", "device", "loggers"}


@dataclass
class RunValues:
    """One run's task values (percent) and what the table reports about it."""

    source: str  # the RUN as given
    checkpoint: str  # the checkpoint file read
    name: str  # for tables: the run folder name (folder/file for a checkpoint other than best.pt)
    method: str
    seed: int | None
    epoch: int | None  # the checkpoint's epoch (best.pt: the best one)
    epochs_trained: int | None  # rows of metrics.csv; None without it
    train_seconds: float  # sum of metrics.csv "seconds"; NaN without it
    values: dict[str, float]

    @property
    def mean(self) -> float:
        return float(np.mean([self.values[t] for t in TASKS]))

    def column(self, column: str) -> float:
        return self.mean if column == "mean" else self.values[column]


@dataclass
class MethodGroup:
    """The runs of one method and their mean and sample standard deviation (NaN for one run)."""

    method: str
    runs: list[RunValues] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    @property
    def mean(self) -> dict[str, float]:
        return {c: _mean([r.column(c) for r in self.runs]) for c in COLUMNS}

    @property
    def std(self) -> dict[str, float]:
        return {c: _std([r.column(c) for r in self.runs]) for c in COLUMNS}

    @property
    def train_seconds(self) -> tuple[float, float]:
        """Mean and standard deviation over the runs whose metrics.csv was found."""
        known = [r.train_seconds for r in self.runs if math.isfinite(r.train_seconds)]
        return _mean(known), _std(known)

    @property
    def epoch(self) -> tuple[float, float]:
        known = [float(r.epoch) for r in self.runs if r.epoch is not None]
        return _mean(known), _std(known)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


@dataclass
class Comparison:
    """Runs grouped by method; `.markdown()`, `.csv()`, `.to_dict()` and `.table()` render it."""

    groups: list[MethodGroup]
    split: str  # "val" or "test"
    recorded: bool  # True: the validation numbers recorded during training; False: re-evaluated now
    tta: bool = False  # re-evaluated with test-time flips (every run)
    center_crop: bool = False  # some runs (the PIEs baselines) re-evaluated on the central 224/256 of each view
    tta_scales: list[float] = field(default_factory=lambda: [1.0])  # every run's test-time scales; []: each run its own

    @property
    def runs(self) -> list[RunValues]:
        return [r for g in self.groups for r in g.runs]

    @property
    def title(self) -> str:
        where = "validation objects, as recorded in training" if self.recorded else f"{self.split} split, re-evaluated"
        where += " with test-time flips" if self.tta else ""
        if self.tta_scales != [1.0]:
            shown = ",".join(f"{s:g}" for s in self.tta_scales)
            where += f" over test-time scales {shown}" if shown else " over each run's own test-time scales"
        where += " (the PIEs baselines on the central 224/256 crop, as released)" if self.center_crop else ""
        return f"PICR tasks on the {where}: percent, mean ± std over runs"

    def best(self) -> dict[str, list[str]]:
        """Per column (the tasks and "mean"): the methods with the highest mean (several on a tie at the shown precision)."""
        out: dict[str, list[str]] = {}
        for column in COLUMNS:
            shown = {g.method: round(g.mean[column], DECIMALS) for g in self.groups}
            top = max(shown.values())
            out[column] = [m for m, v in shown.items() if v == top]
        return out

    def table(self) -> tuple[list[str], list[tuple[str, list[str], list[bool]]]]:
        """Header and, per group, (method, cells, best flags) for a display table; cells are "mean ± std".

        Columns: method, n, the eight tasks (short names), mean, train time; only task and mean cells can be best."""
        unit, scale = _time_unit([g.train_seconds[0] for g in self.groups])
        header = ["method", "n", *(SHORT_NAMES[t] for t in TASKS), "mean", f"train time ({unit})"]
        best = self.best()
        rows = []
        for group in self.groups:
            mean, std = group.mean, group.std
            seconds, seconds_std = group.train_seconds
            cells = [
                group.method,
                str(group.n),
                *(_pm(mean[c], std[c], DECIMALS) for c in COLUMNS),
                _pm(seconds / scale, seconds_std / scale, 1),
            ]
            flags = [False, False, *(group.method in best[c] for c in COLUMNS), False]
            rows.append((group.method, cells, flags))
        return header, rows

    def markdown(self) -> str:
        """A caption line and a GitHub markdown table, one row per method; the best mean per column in bold."""
        header, rows = self.table()
        lines = [
            self.title,
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|",
        ]
        for _, cells, flags in rows:
            shown = [_md_escape(c) if not flag or not c else f"**{_md_escape(c)}**" for c, flag in zip(cells, flags, strict=True)]
            lines.append("| " + " | ".join(shown) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """One row per method: n, seeds (space-separated), mean and std per column, train seconds, epoch. Blank = none."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        stats = [f"{c}_{s}" for c in COLUMNS for s in ("mean", "std")]
        writer.writerow(["method", "n", "seeds", *stats, "train_seconds_mean", "train_seconds_std", "epoch_mean", "epoch_std"])
        for group in self.groups:
            mean, std = group.mean, group.std
            writer.writerow([
                group.method, group.n, " ".join("" if s is None else str(s) for s in group.seeds),
                *(_num(v) for c in COLUMNS for v in (mean[c], std[c])),
                *(_num(v) for v in group.train_seconds), *(_num(v) for v in group.epoch),
            ])  # fmt: skip
        return buffer.getvalue()

    def to_dict(self) -> dict:
        """JSON-able (NaN -> None): the groups with their runs' values, and the best method(s) per column."""
        out = {
            "piro_version": __version__,
            "split": self.split,
            "numbers": "recorded" if self.recorded else "evaluated",
            "protocol": "default",
            "tie_break": "smallest",
            "tta": self.tta,
            "tta_scales": self.tta_scales,
            "center_crop": self.center_crop,
            "tasks": list(TASKS),
            "columns": list(COLUMNS),
            "groups": [
                {
                    "method": g.method,
                    "n": g.n,
                    "seeds": g.seeds,
                    "mean": g.mean,
                    "std": g.std,
                    "train_seconds": dict(zip(("mean", "std"), g.train_seconds, strict=True)),
                    "epoch": dict(zip(("mean", "std"), g.epoch, strict=True)),
                    "runs": [
                        {
                            "source": r.source,
                            "checkpoint": r.checkpoint,
                            "name": r.name,
                            "seed": r.seed,
                            "epoch": r.epoch,
                            "epochs_trained": r.epochs_trained,
                            "train_seconds": r.train_seconds,
                            "tasks": {t: r.values[t] for t in TASKS},
                            "mean": r.mean,
                        }
                        for r in g.runs
                    ],
                }
                for g in self.groups
            ],
            "best": self.best(),
        }
        return json_safe(out)

    def render(self, fmt: str) -> str:
        """The text of a format: markdown, csv or json."""
        if fmt == "markdown":
            return self.markdown()
        if fmt == "csv":
            return self.csv()
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2) + "\n"
        raise PiroError(f"format {fmt!r}: choose markdown, csv or json")


def _pm(mean: float, std: float, decimals: int) -> str:
    if not math.isfinite(mean):
        return ""
    return f"{mean:.{decimals}f}" + (f" ± {std:.{decimals}f}" if math.isfinite(std) else "")


def _num(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else ""


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _time_unit(seconds: Sequence[float]) -> tuple[str, float]:
    known = [s for s in seconds if math.isfinite(s)]
    largest = max(known) if known else 0.0
    if largest < 120:
        return "s", 1.0
    if largest < 7200:
        return "min", 60.0
    return "h", 3600.0


def out_format(out: str | Path | None, fmt: str) -> str | None:
    """The text format to write `--out` in: the chosen one, or for `table` the file's suffix (.md, .csv, .json).

    None without `out`; a PiroError for an unknown format, or a suffix that names another format."""
    if fmt not in FORMATS:
        raise PiroError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if out is None:
        return None
    by_suffix = TEXT_SUFFIXES.get(Path(out).suffix.lower())
    if fmt == "table":
        if by_suffix is None:
            raise PiroError(f"--out {out}: use a .md, .csv or .json file name, or choose the file's format with --format")
        return by_suffix
    if by_suffix is not None and by_suffix != fmt:
        raise PiroError(f"--out {out}: the name says {by_suffix} but --format is {fmt}; make them agree")
    return fmt


def write_comparison(comparison: Comparison, path: str | Path, fmt: str) -> Path:
    """Write the comparison as markdown, csv or json."""
    return write_text(comparison.render(fmt), path)


# ----------------------------------------------------------------------------- compare


def compare_runs(
    runs: Sequence[str | Path],
    *,
    split: str | None = None,
    data: str | Path | None = None,
    tta: bool | None = None,
    tta_scales: tuple[float, ...] | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
) -> Comparison:
    """Group runs by method and compare their PICR tasks; see the module docstring for which numbers and checks."""
    reporter = reporter or SilentReporter()
    if not runs:
        raise PiroError("give at least one run folder (runs/<name>) or checkpoint (runs/<name>/best.pt) to compare")
    if split is not None and split not in SPLITS:
        raise PiroError(
            f"--split {split!r}: choose one of {', '.join(SPLITS)} (or leave it out for the recorded validation numbers)"
        )
    if split is None and (tta is not None or tta_scales is not None):
        flag = "--tta" if tta is not None else "--tta-scales"
        raise PiroError(f"{flag} applies when the runs are re-evaluated (--split test or --split val), not to recorded numbers")
    if split is None and data is not None:
        raise PiroError(
            "--data is used only to re-evaluate the runs (--split test or --split val); the recorded validation numbers need no data file"
        )
    skipped = [run for run in runs if _is_feature_cache(Path(run))]  # `piro compare runs/*` matches it too
    for run in skipped:
        reporter.info(f"skipped {run}: the feature cache that --freeze-backbone runs share, not a run")
    runs = [run for run in runs if run not in skipped]
    if not runs:
        raise PiroError("no runs to compare: give run folders (runs/<name>) or checkpoints (runs/<name>/best.pt)")
    paths = [checkpoint_file(run) for run in runs]
    seen: dict[Path, str] = {}
    for run, path in zip(runs, paths, strict=True):
        key = path.resolve()
        if key in seen:
            raise PiroError(f"{run}: given twice (also as {seen[key]}); each run may count only once in its method's mean")
        seen[key] = str(run)
    checkpoints = [load_checkpoint(path) for path in paths]
    _check_same_data(runs, checkpoints, data)
    if split in (None, "val"):
        _check_same_validation(runs, checkpoints)

    flipped = cropped = False  # the numbers recorded in training never use test-time flips, scales or the crop
    scales: list[float] = [1.0]
    if split is None:
        values = [_recorded_values(run, ckpt) for run, ckpt in zip(runs, checkpoints, strict=True)]
    else:
        from piro_cli.evaluation.evaluate import evaluate
        from piro_cli.inference.run import EmbedSettings

        started = time.perf_counter()
        result = evaluate(
            paths, data=data, split=split, device=device, save=False, reporter=reporter,
            embedding=EmbedSettings(tta=tta, tta_scales=tta_scales),
        )  # fmt: skip
        evaluated = {r.data.get("objects") or r.data.get("fingerprint") for r in result.runs}
        if len(evaluated) > 1:
            raise DataError(
                f"the runs were evaluated on different data files ({', '.join(sorted(r.data['path'] for r in result.runs))}); pass one with --data"
            )
        values = [dict(r.values) for r in result.runs]
        flipped = result.tta
        cropped = any(r.center_crop for r in result.runs)
        every = {tuple(r.tta_scales or [1.0]) for r in result.runs}
        scales = list(every.pop()) if len(every) == 1 else []
        reporter.info(f"evaluated {len(paths)} runs on the {split} split in {time.perf_counter() - started:.1f}s")

    items = [_run_values(run, ckpt, vals) for run, ckpt, vals in zip(runs, checkpoints, values, strict=True)]
    by_path = {str(ckpt["path"]): ckpt for ckpt in checkpoints}
    # a run's own test-time flips and scales are how it embeds by default: no difference where the numbers do not use
    # them (recorded: always without) or where the command sets them for all
    embedding = {k for k, given in (("tta", tta), ("tta_scales", tta_scales)) if split is None or given is not None}
    _name_differences(items, by_path, ignored=embedding)
    groups: dict[str, MethodGroup] = {}
    for item in items:
        groups.setdefault(item.method, MethodGroup(item.method)).runs.append(item)
    for group in groups.values():
        _warn_repeated_seeds(group, by_path, reporter)
    return Comparison(list(groups.values()), split or "val", split is None, flipped, cropped, scales)


def _is_feature_cache(path: Path) -> bool:
    return path.is_dir() and path.name == FEATURE_CACHE and not (path / "best.pt").exists()


def _check_same_data(runs: Sequence[str | Path], checkpoints: list[dict], data: str | Path | None) -> None:
    """The runs were trained on the same data file, or on files of the same objects stored otherwise (e.g. prepared
    at each backbone's image size: `ViewSetStore.objects_fingerprint`), then each is evaluated on its own file."""
    records = [ckpt.get("data") or {} for ckpt in checkpoints]
    if len({r.get("fingerprint") for r in records}) == 1:
        return
    first = _objects_fingerprint(records[0])
    for run, record in zip(runs[1:], records[1:], strict=True):
        if record.get("fingerprint") == records[0].get("fingerprint"):
            continue  # the same file's objects: nothing to read
        held = _objects_fingerprint(record)
        if held is None or held != first:
            raise DataError(
                f"{run} was trained on other data than {runs[0]} ({record.get('path')} vs {records[0].get('path')}: "
                "dataset fingerprints differ, and they do not hold the same objects); only runs on the same objects "
                "can be compared"
            )
        if data is not None:
            raise DataError(
                f"--data {data}: {run} and {runs[0]} were trained on different files of the same objects "
                f"({record.get('path')}, {records[0].get('path')}: other image sizes?); leave --data out to evaluate "
                "each run on its own file"
            )


def _objects_fingerprint(record: dict) -> str | None:
    """Which objects a run's data file holds: recorded at training, or (runs trained before it was) read from the
    file at the recorded path while it exists; None when neither can tell."""
    if record.get("objects"):
        return str(record["objects"])
    path = record.get("path")
    if not path or not Path(path).is_file():
        return None
    from piro_cli.data.store import ViewSetStore

    try:
        with ViewSetStore(path) as store:
            return store.objects_fingerprint if store.fingerprint == record.get("fingerprint") else None
    except PiroError:
        return None


def _val_record(ckpt: dict) -> dict | None:
    return (ckpt.get("data") or {}).get("val")


def _check_same_validation(runs: Sequence[str | Path], checkpoints: list[dict]) -> None:
    """All runs with validation objects must have the same ones (split and object indices), or be folds of one
    K-fold split (`piro train --folds K`: the same K and --val-seed)."""
    reference: tuple[str | Path, dict] | None = None
    for run, ckpt in zip(runs, checkpoints, strict=True):
        val = _val_record(ckpt)
        if not val:
            continue  # reported where the numbers are read (recorded) or by evaluate (--split val)
        if reference is None:
            reference = (run, val)
            continue
        other_run, other = reference
        fold, other_fold = val.get("folds"), other.get("folds")
        if fold and other_fold and (fold["of"], fold["seed"]) == (other_fold["of"], other_fold["seed"]):
            continue  # folds of one K-fold split: their mean and spread are the cross-validation estimate
        if val.get("split") != other.get("split") or list(val.get("indices") or []) != list(other.get("indices") or []):
            raise DataError(
                f"{run} and {other_run} were validated on different objects ({_describe_val(val)} vs {_describe_val(other)}), "
                "so their validation numbers are not comparable; compare them on the test split with --split test, or "
                "train them with the same --val-fraction and --val-seed"
            )


def _describe_val(val: dict) -> str:
    names = val.get("names") or []
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(val.get('indices') or [])} objects of the {val.get('split')} split" + (f": {shown}" if shown else "")


def _recorded_values(run: str | Path, ckpt: dict) -> dict[str, float]:
    metrics = ckpt.get("metrics") or {}
    missing = [t for t in TASKS if f"val_{t}" not in metrics]
    if missing:
        raise PiroError(
            f"{ckpt['path']}: the run recorded no validation numbers (it was trained without validation objects); "
            "re-evaluate the runs with --split test, or train with --val-fraction 0.2 (or on data with a val split)"
        )
    return {t: float(metrics[f"val_{t}"]) for t in TASKS}


def _run_values(run: str | Path, ckpt: dict, values: dict[str, float]) -> RunValues:
    train_config = ckpt.get("train_config") or {}
    metrics_csv = Path(ckpt["path"]).parent / "metrics.csv"
    rows = MetricsLog(metrics_csv).read()
    seconds = float("nan")  # informational: an edited or damaged column leaves the time unknown, nothing else
    if rows:
        seconds = float(sum(metric_value(r.get("seconds")) for r in rows))
    seed = train_config.get("seed")
    epoch = ckpt.get("epoch")
    return RunValues(
        source=str(run), checkpoint=str(ckpt["path"]), name=run_name(ckpt["path"]), method=method_label(train_config),
        seed=None if seed is None else int(seed), epoch=None if epoch is None else int(epoch),
        epochs_trained=len(rows) if rows else None, train_seconds=seconds, values=values,
    )  # fmt: skip


def _name_differences(items: list[RunValues], checkpoints: dict[str, dict], ignored: set[str] = frozenset()) -> None:
    """Runs of one method label that differ in other training options (a lever measured against the recipe: more
    epochs, another backbone, another image size) are different methods: each label gets '+option=value' for every
    option in which that label's runs differ, so `--epochs 6` and `--epochs 3` become two rows, not one mean."""
    settings = {}
    for item in items:
        checkpoint = checkpoints[item.checkpoint]
        config = saved_values(checkpoint.get("train_config") or {})  # a run from before an option trained without it
        config["image_size"] = (checkpoint.get("data") or {}).get("image_size")
        # --precision auto is fp32 on a CPU and mixed on CUDA: what a run computed in is its recorded arithmetic, and
        # unknown (told apart by nothing) for runs from before that record, whose device is not saved
        arithmetic = checkpoint.get("arithmetic") or config.pop("precision", None)
        if arithmetic not in (None, "auto"):
            config["precision"] = arithmetic
        settings[id(item)] = {k: v for k, v in config.items() if k not in _NOT_METHOD and k not in ignored}
    for label in dict.fromkeys(item.method for item in items):
        runs = [item for item in items if item.method == label]
        # an option some run does not record (and whose earlier value is unknown) tells nothing apart
        keys = sorted(set.intersection(*(set(settings[id(item)]) for item in runs)))
        differ = [k for k in keys if len({json.dumps(settings[id(item)][k], sort_keys=True) for item in runs}) > 1]
        for item in runs:
            item.method = label + "".join(f"+{k}={_shown(settings[id(item)].get(k))}" for k in differ)


def _shown(value) -> str:
    """An option's value in a method label: 6, 0.0001, efficientnet_lite1, cat,piobj, none."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_shown(v) for v in value)
    return str(value)


def _warn_repeated_seeds(group: MethodGroup, checkpoints: dict[str, dict], reporter: Reporter) -> None:
    """Warn (not fail) when one method's runs repeat a seed (folds of one K-fold split share the seed, not the fold)."""
    trained = [
        ((checkpoints[r.checkpoint].get("train_config") or {}).get("fold"), r.seed) for r in group.runs if r.seed is not None
    ]
    repeated = sorted({seed for fold, seed in trained if trained.count((fold, seed)) > 1})
    if repeated:
        reporter.info(
            f"warning: {group.method}: several runs have seed {', '.join(map(str, repeated))}; they may be the same run twice"
        )
