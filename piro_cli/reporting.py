"""How the library talks to its caller: messages and progress go to a reporter (the CLI renders them with rich;
the library never prints)."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def info(self, message: str) -> None: ...
    def progress(self, stage: str, done: int, total: int) -> None: ...


class SilentReporter:
    """Says nothing: the default of every library call."""

    def info(self, message: str) -> None:
        pass

    def progress(self, stage: str, done: int, total: int) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass


def stage_progress(reporter: Reporter, stage: str):
    """A progress(done, total) callback that reports under `stage`."""
    return lambda done, total: reporter.progress(stage, done, total)
