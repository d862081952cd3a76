"""What every command shares: the console, error reporting and progress bars."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import signal
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from piro_cli.errors import OptionError, PiroError, short_cause
from piro_cli.options import SEED_MAX, check_test_scales, flag_of, option_spec  # noqa: F401  (SEED_MAX: seed options of several commands)

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 epoch', '3 epochs', '1 category', '2 categories' (`plural` for nouns that do not just take an s)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def distance_option(context: str = "") -> Any:
    """`--distance`: how the open-set scoring measures an object's distance (evaluate --task open-set, calibrate)."""
    return typer.Option(
        None, "--distance", help=f"{context}How an object's distance to the photos is measured: views (each photo's "
        "nearest enrolled view, averaged), viewset (the view-set embeddings) or combined (their mean; the default).",
    )  # fmt: skip


def rejection_option(context: str = "") -> Any:
    """`--rejection`: the score the open-set threshold applies to."""
    return typer.Option(
        None, "--rejection", help=f"{context}How objects are ranked and the score thresholded for `unknown`: scaled "
        "(the default: distances over the typical spread of the object's group, trained-on or enrolled, for ranking; "
        "for the score over the mean of that and the object's own spread), spread (the nearest object's distance over "
        "its own enrolment spread), distance (the distance itself), ratio (over the second-nearest object's) or "
        "neighbourhood (over the distance to its 5th nearest other object).",
    )  # fmt: skip


def scoring_rule(distance: str | None, rejection: str | None):
    """The ScoringRule of --distance / --rejection, defaults filled in."""
    from piro_cli.inference.index import ScoringRule

    default = ScoringRule()
    return ScoringRule(distance or default.distance, rejection or default.rejection)


def query_counts(text: str | None) -> tuple[int, ...] | None:
    """--query-views '1,3' -> (1, 3); one line naming the bad item."""
    if text is None:
        return None
    from piro_cli.evaluation.openset import parse_query_views

    try:
        return parse_query_views(text)
    except ValueError as exc:
        raise PiroError(f"--query-views {text!r}: {exc}") from None




@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """The default of a command parameter that stands for a dataclass of options (`option_group`)."""

    of: type


def option_group(of: type) -> Any:
    """A command parameter that receives one `of` instance: `of` is a dataclass whose fields default to typer
    options; `with_option_groups` spreads the fields into the command's options (their order and help as declared)
    and gathers what was typed back into the instance. Commands with many options thus keep a short signature, and
    options shared by several commands are declared once."""
    return OptionGroup(of)


def with_option_groups(command: F) -> F:
    """`command` with each `option_group` parameter replaced, for typer, by the options of its dataclass's fields."""
    spread: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for parameter in inspect.signature(command).parameters.values():
        if not isinstance(parameter.default, OptionGroup):
            spread.append(parameter)
            continue
        group = groups[parameter.name] = parameter.default.of
        types = typing.get_type_hints(group)
        for f in dataclasses.fields(group):
            spread.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=types[f.name]))
    names = [p.name for p in spread]
    if len(set(names)) != len(names):
        raise TypeError(f"{command.__name__}: an option group repeats an option: {sorted(n for n in names if names.count(n) > 1)}")
    own = typing.get_type_hints(command)

    @functools.wraps(command)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        for name, group in groups.items():
            kwargs[name] = group(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(group)})
        return command(*args, **kwargs)

    # typer passes every value by keyword and orders the options as listed: all keyword-only keeps the order valid
    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=own.get(p.name, p.annotation)) for p in spread]
    gathered.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    gathered.__annotations__ = {p.name: p.annotation for p in parameters}
    return gathered  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up (temporary files removed, locks released) runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def handle_errors(command: F) -> F:
    """Turn a PiroError into one red line on stderr and exit 1; Ctrl-C into exit 130, SIGTERM into 143. No tracebacks
    for user errors."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return command(*args, **kwargs)
        except PiroError as exc:
            # soft_wrap: the message stays one line when stderr is not a terminal (logs, pipes, tests)
            err_console.print(f"[bold red]error:[/] {escape(error_message(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
            asked = re.search(r"[Tt]ried to allocate ([\d.]+ ?\w+)", str(exc))
            cause = f"tried to allocate {asked.group(1)}" if asked else short_cause(exc)
            message = f"out of memory ({cause}); use smaller sizes (--embed-dim, --batch-pairs, --size) or free memory"
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            what = "terminated" if isinstance(exc, Terminated) else "interrupted"
            err_console.print(f"[yellow]{what}[/]: files are only ever replaced whole, so none was left half-written")
            for note in getattr(exc, "__notes__", []):  # what the library says to do next (train: how to resume)
                err_console.print(escape(note), highlight=False, soft_wrap=True)
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's OutOfMemoryError (CUDA) or its CPU allocator's RuntimeError."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def error_message(exc: PiroError) -> str:
    """What the error line says: the message (a configuration field named by its flag), or for an error raised
    without one, its kind."""
    message = (exc.spelled(option_flag) if isinstance(exc, OptionError) else str(exc)).strip()
    if message:
        return message
    kind = (type(exc).__doc__ or "").strip().splitlines()
    return f"{type(exc).__name__} without details" + (f" ({kind[0].rstrip('.')})" if kind else "")


def option_flag(field_name: str) -> str:
    """The `piro train` flag of a TrainConfig field (`augment`: `--augment`; `loggers`: `--logger`)."""
    from piro_cli.training.config import TrainConfig

    if field_name == "loggers":  # not an option field: `--logger NAME`, repeatable
        return "--logger"
    spec = next((option_spec(f) for f in dataclasses.fields(TrainConfig) if f.name == field_name), None)
    return spec.flags[0].split("/")[0] if spec is not None and spec.flags else flag_of(field_name)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields a callback(done, total) for library functions."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def tta_option(when: str = ""):
    """`--tta/--no-tta` of the commands that embed with a run's model (evaluate, embed, compare)."""
    return typer.Option(
        None,
        "--tta/--no-tta",
        help=f"{when}Test-time augmentation: embed each view as the mean of its own and its horizontal mirror's "
        "embedding (before normalisation); twice the backbone work. Default: the run's own setting (`piro train --tta`, "
        "or its recipe's), off for runs without one.",
        show_default=False,
    )


def tta_scales_option(when: str = "", after: str = ""):
    """`--tta-scales` of the commands that re-embed with a run's model (evaluate, compare, index build)."""
    return typer.Option(
        None,
        "--tta-scales",
        metavar="F[,F...]",
        help=f"{when}Test-time scales: embed each view as the mean over it resized by these factors (1 = as stored; "
        "e.g. 1,1.15), each factor costing about its square in backbone work. Default: the run's own setting (`piro "
        f"train --tta-scales`, or its recipe's), 1 for runs without one.{after}",
        show_default=False,
    )


def parse_tta_scales(text: str | None) -> tuple[float, ...] | None:
    """`--tta-scales` text as factors (None: not given), or a PiroError naming the option."""
    if text is None:
        return None
    try:
        return check_test_scales(text)
    except ValueError as exc:
        raise PiroError(f"--tta-scales {text}: {exc}") from None


def progress_columns():
    """The columns of every progress bar: stage, bar, done of total, elapsed, remaining."""
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())


class RichReporter:
    """Renders training events: one progress bar per stage, one line per epoch."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = None
        self._stage = None

    def info(self, message: str) -> None:
        style = "yellow" if message.startswith("warning") else None
        self._progress.console.print(escape(message), style=style, highlight=False)

    def progress(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(stage, total=total)
            self._stage = stage
        self._progress.update(self._task, completed=done, total=total)

    def epoch(self, row: dict) -> None:
        parts = [f"epoch {row['epoch']}"] + ([f"loss {row['loss']:.4f}"] if "loss" in row else [])
        parts += [f"{k[5:]} {v:.4f}" for k, v in row.items() if k.startswith("loss_")]
        parts += [f"d_intra_max {row['d_intra_max']:.3f}", f"d_inter_min {row['d_inter_min']:.3f}", f"rho {row['rho']:.3f}"]
        if "val_mean" in row:
            parts.append(f"val mean {row['val_mean']:.2f}%")
        parts.append(f"{row['seconds']:.0f}s")
        self._progress.console.print("  ".join(parts), highlight=False)
