"""Run folders (`runs/<name>/`, Ultralytics style) and self-describing checkpoints.

A run folder holds `config.json`, `metrics.csv` (one row per epoch), `last.pt`
and `best.pt`; `--freeze-backbone` runs share feature caches in `runs/feature-cache/`.
Checkpoints hold only tensors and plain Python values, so they load with
`torch.load(..., weights_only=True)`: opening a checkpoint cannot run code.
"""

from __future__ import annotations

import csv
import io
import pickle
import re
import warnings
from pathlib import Path

import torch

from piro_cli import __version__
from piro_cli.errors import PiroError, short_cause
from piro_cli.outputs import write_text

FEATURE_CACHE = "feature-cache"  # runs/feature-cache/: backbone features shared by the run folders beside it
CHECKPOINT_FORMAT = "piro-checkpoint"
CHECKPOINT_VERSION = 1


def new_run_dir(project: Path, name: str | None) -> Path:
    """`project/name`, or `name2`, `name3`, ... when taken (default name `exp`), created empty."""
    base = name or "exp"
    if not re.fullmatch(r"[\w.-]+", base):
        raise PiroError(f"--name {base!r}: use letters, digits, '.', '_' or '-' only")
    candidate = project / base
    number = 2
    while candidate.exists():
        candidate = project / f"{base}{number}"
        number += 1
    candidate.mkdir(parents=True)
    return candidate


def latest_run_dir(project: Path = Path("runs")) -> Path:
    runs = [p for p in project.glob("*/last.pt")] if project.is_dir() else []
    if not runs:
        raise PiroError(f"no runs found under {project}/; train one with `piro train`")
    return max(runs, key=lambda p: p.stat().st_mtime).parent


def checkpoint_file(run: str | Path) -> Path:
    """A RUN as commands take it (a run folder, meaning its `best.pt`, or a checkpoint file) -> the checkpoint file."""
    path = Path(run)
    if path.is_dir():
        best = path / "best.pt"
        if not best.is_file():
            hint = f"; its last epoch is {path / 'last.pt'}" if (path / "last.pt").is_file() else ""
            raise PiroError(
                f"{path}: no best.pt in this folder (not a run folder written by `piro train`, or a run that has not "
                f"finished an epoch){hint}"
            )
        return best
    if not path.is_file():
        raise PiroError(f"{path}: no such run folder or checkpoint; pass a run folder (runs/<name>) or a .pt checkpoint")
    return path


def run_name(checkpoint: str | Path) -> str:
    """How tables name a checkpoint: its run folder's name, plus the file name for any file but best.pt."""
    path = Path(checkpoint)
    return path.parent.name if path.name == "best.pt" else f"{path.parent.name}/{path.name}"


PIRO_CHECKPOINT_ADVICE = (
    "pass a best.pt or last.pt written by `piro train` (the authors' released weights: convert them with `piro import-weights`)"
)


def load_plain_torch_file(path: Path, advice: str, map_location: str | torch.device = "cpu") -> object:
    """`torch.load(path, weights_only=True)`: tensors and plain values only, so a file piro did not write cannot run
    code. Any failure is a PiroError naming the file, what is wrong with it, and `advice` (what to pass instead)."""
    if path.stat().st_size == 0:
        raise PiroError(f"{path}: empty file (0 bytes); {advice}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of files it then refuses
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise PiroError(f"{path}: {_unloadable(path, exc)}; {advice}") from exc


def _unloadable(path: Path, exc: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in words (torch's own text ends in advice to load the file with
    weights_only=False, that is, to run the code it may hold)."""
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or short_cause(exc)})"
    with path.open("rb") as handle:
        head = handle.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch's zip format, or a pickle
        return "not a PyTorch file (neither a zip archive nor a pickle)"
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        objects = f"pickled Python objects ({found.group(1)})" if found else "pickled data other than tensors and plain values"
        return f"refused: it holds {objects}, which could run code when loaded, and piro refuses to run code from a checkpoint"
    if isinstance(exc, EOFError):
        return "truncated or damaged: the file ends early"
    return f"truncated or damaged: {short_cause(exc)}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a piro checkpoint; a run folder means its `best.pt`."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise PiroError(f"{path}: no such checkpoint; train one with `piro train` (it writes runs/<name>/best.pt and last.pt)")
    payload = load_plain_torch_file(path, PIRO_CHECKPOINT_ADVICE, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise PiroError(
            f"{path}: not a piro checkpoint (no '{CHECKPOINT_FORMAT}' tag); pass a best.pt or last.pt from a piro run"
        )
    if int(payload.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise PiroError(f"{path}: written by a newer piro ({payload.get('piro_version')}); upgrade piro to read it")
    payload["path"] = str(path)
    return payload


def checkpoint_header() -> dict:
    return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "piro_version": __version__}


def metric_value(text) -> float:
    """A value of metrics.csv (text, as read back) as a number; NaN for an empty or edited cell."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


class MetricsLog:
    """`metrics.csv`, one row per epoch; the header is fixed by the first row.

    Every change rewrites the file whole (piro_cli.outputs), so a full disk or a kill never leaves half a row.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, row: dict) -> None:
        rows = self._rows() if self.path.exists() else []  # read once: the checked rows are what is rewritten
        fields = rows[0] if rows else list(row)
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(rows or [fields])
        csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore").writerow({k: _fmt(v) for k, v in row.items()})
        self._write(buffer.getvalue())

    def truncate_after(self, epoch: int) -> None:
        """On resume from a checkpoint of `epoch`: drop the rows of later epochs (a run killed mid-way); refuse a file
        that lacks any of epochs 1..`epoch` (deleted, truncated or edited), which resuming would silently continue."""
        rows = self._rows() if self.path.exists() else []
        try:
            kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= epoch]
        except ValueError:
            raise PiroError(f"{self.path}: a row's epoch is not a number; restore or delete the file") from None
        recorded = [int(r[0]) for r in kept[1:]]
        if recorded != list(range(1, epoch + 1)):
            held = f"epoch{'s' * (len(recorded) > 1)} {', '.join(map(str, recorded))}" if recorded else "no epochs"
            raise PiroError(
                f"{self.path}: holds {held}, but the run's last.pt is at epoch {epoch} (deleted, truncated or edited?); "
                "restore the file, or train a new run"
            )
        if len(kept) != len(rows):
            buffer = io.StringIO(newline="")
            csv.writer(buffer).writerows(kept)
            self._write(buffer.getvalue())

    def _write(self, text: str) -> None:
        write_text(text, self.path, disk_full_advice(self.path.parent))

    def read(self) -> list[dict]:
        rows = self._rows() if self.path.exists() else []
        return [dict(zip(rows[0], row, strict=False)) for row in rows[1:]]

    def _rows(self) -> list[list[str]]:
        """The file's rows; a file piro cannot read as its own CSV is refused in one line, never half-trusted."""
        try:
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise PiroError(
                f"{self.path}: not a metrics.csv written by piro ({short_cause(exc)}); restore or delete it"
            ) from None
        if rows and rows[0][:1] != ["epoch"]:
            raise PiroError(f"{self.path}: not a metrics.csv written by piro (no 'epoch' column first); restore or delete it")
        for number, row in enumerate(rows[1:], start=2):  # piro writes every field of every row
            if row and len(row) != len(rows[0]):
                raise PiroError(
                    f"{self.path}: line {number} has {len(row)} fields but the header {len(rows[0])} (truncated or edited?); "
                    "restore or delete it"
                )
        return rows


def disk_full_advice(run_dir: Path) -> str:
    """What to do when the disk fills while a run is written: resume from its last.pt, or, before one exists, train again."""
    if (run_dir / "last.pt").is_file():
        return f"free space, then continue the run with `piro train --resume {run_dir}`"
    return "free space, then train again (no epoch of this run was saved)"


def resume_advice(run_dir: Path | None) -> str:
    """How to go on after a training run stopped: resume it from its last.pt, or say none was kept."""
    if run_dir is not None and (run_dir / "last.pt").is_file():
        return f"continue it with `piro train --resume {run_dir}`"
    return "no epoch was saved, so no run folder was kept"


def _fmt(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value
