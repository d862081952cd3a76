"""User-facing errors.

The library raises these instead of printing or exiting; the CLI turns them
into one clear line and a non-zero exit code. The message must name the file
involved and say how to fix the problem.
"""

from __future__ import annotations

import re


class PiroError(Exception):
    """An error caused by the user's input or environment, with a fix in its message."""


class DataError(PiroError):
    """Bad or unexpected input data (layout, unreadable image or mesh, view counts)."""


class BadItemError(DataError):
    """One object of a dataset cannot be read; `piro prepare --skip-bad` skips objects that raise this.

    `reason` says what is wrong (what a skipped object is listed with), `fix` how to repair the file; the
    message adds that --skip-bad skips the object.
    """

    def __init__(self, path: str, reason: str, fix: str = "") -> None:
        advice = f"{fix}, or pass --skip-bad to skip it" if fix else "pass --skip-bad to skip it"
        super().__init__(f"{path}: {reason}; {advice}")
        self.path = path
        self.reason = reason


def short_cause(exc: BaseException, limit: int = 160) -> str:
    """An exception as the cause in a one-line message: its type and the first sentence of its message (whole
    words, at most `limit` characters), or the type alone when the message is empty."""
    text = " ".join(str(exc).split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " ..."
    name = type(exc).__name__
    return f"{name}: {sentence}" if sentence else name
