"""Mirrors of a run's metrics.csv for experiment trackers (`piro train --logger tensorboard`).

metrics.csv stays the record; a logger receives each epoch's row (loss terms, learning rate, the spread
statistics d_intra_max, d_inter_min and rho, the validation tasks) and, at the end, the PICR table of the
best epoch. Loggers run in process 0 only and write into the run folder (`tensorboard/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from piro_cli.errors import PiroError
from piro_cli.retrieval.picr import SHORT_NAMES, TASKS
from piro_cli.runs import metric_value


class Logger(Protocol):
    def epoch(self, row: dict) -> None: ...
    def finish(self, history: list[dict]) -> None: ...
    def close(self) -> None: ...


def _tag(key: str) -> str:
    """metrics.csv column -> a grouped tag: loss/..., val/..., spread/..., lr, seconds."""
    if key == "loss":
        return "loss/total"
    if key.startswith("loss_"):
        return f"loss/{key[5:]}"
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key in ("d_intra_max", "d_inter_min", "rho"):
        return f"spread/{key}"
    return key


def picr_table(history: list[dict]) -> str | None:
    """The validation PICR tasks of the best epoch (highest val_mean) as a markdown table; None without validation."""
    # a resumed run's earlier epochs come back from metrics.csv as text: compare and print numbers
    rows = [{key: metric_value(value) for key, value in row.items()} for row in history if "val_mean" in row]
    if not rows:
        return None
    best = max(rows, key=lambda row: row["val_mean"])
    header = "| epoch | " + " | ".join(SHORT_NAMES[t] for t in TASKS) + " | mean |"
    rule = "|---|" + "---|" * (len(TASKS) + 1)
    values = " | ".join(f"{best[f'val_{t}']:.2f}" for t in TASKS)
    return f"{header}\n{rule}\n| {int(best['epoch'])} | {values} | {best['val_mean']:.2f} |"


class TensorBoardLogger:
    """Event files in `<run folder>/tensorboard/`; a resumed run drops the events after its checkpoint's epoch."""

    def __init__(self, run_dir: Path, start_epoch: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PiroError(
                "--logger tensorboard needs the tensorboard package: pip install tensorboard (or 'piro[tensorboard]')"
            ) from None
        folder = run_dir / "tensorboard"
        if folder.exists() and not folder.is_dir():
            raise PiroError(f"{folder}: is a file, where the run's TensorBoard events go; move it away and run again")
        try:
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=start_epoch + 1 if start_epoch else None)
        except OSError as exc:
            raise PiroError(f"{folder}: cannot write the TensorBoard events ({exc.strerror or exc}); make it writable") from None

    def epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(_tag(key), float(value), step)
        self.writer.flush()

    def finish(self, history: list[dict]) -> None:
        table = picr_table(history)
        if table is not None:
            self.writer.add_text("picr/best_epoch", table, int(history[-1]["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_loggers(names: tuple[str, ...]) -> None:
    """Refuse, before any work, a logger whose package is missing."""
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise PiroError(
                "--logger tensorboard needs the tensorboard package: pip install tensorboard (or 'piro[tensorboard]')"
            ) from None


def open_loggers(names: tuple[str, ...], run_dir: Path, start_epoch: int) -> list[Logger]:
    return [TensorBoardLogger(run_dir, start_epoch) for name in names if name == "tensorboard"]
