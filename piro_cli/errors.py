"""User-facing errors.

The library raises these instead of printing or exiting; the CLI turns them
into one clear line and a non-zero exit code. The message must name the file
involved and say how to fix the problem.
"""


class PiroError(Exception):
    """An error caused by the user's input or environment, with a fix in its message."""


class DataError(PiroError):
    """Bad or unexpected input data (layout, unreadable image or mesh, view counts)."""


class BadItemError(DataError):
    """One object of a dataset cannot be read; `--skip-bad` skips objects that raise this."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
