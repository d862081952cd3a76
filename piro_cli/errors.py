"""User-facing errors.

The library raises these instead of printing or exiting; the CLI turns them
into one clear line and a non-zero exit code. The message must name the file
involved and say how to fix the problem.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable


class PiroError(Exception):
    """An error caused by the user's input or environment, with a fix in its message."""


class OptionError(PiroError, ValueError):
    """A bad value of training configuration fields. The library names a field by its own name (`gml_proxies`, as a
    `--config` file or the Python API spells it); the command line names it by its flag (`--gml-proxies`).

    `template` writes each field as `{field_name}` and each value as `{key}` of `values`:
    `OptionError("{lr} {given}: must be > 0", given=0.0)`. A ValueError too: what a config record raises for a bad
    value.
    """

    def __init__(self, template: str, **values: object) -> None:
        self.template = template
        self.values = values
        super().__init__(self.spelled(str))

    @classmethod
    def of(cls, field_name: str, detail: str, **values: object) -> OptionError:
        """The error of field `field_name`: its name, then `detail` (a template too)."""
        return cls("{" + field_name + "}" + detail, **values)

    @property
    def fields(self) -> list[str]:
        """The fields the message names."""
        named = [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
        return [name for name in dict.fromkeys(named) if name not in self.values]

    def spelled(self, name_of: Callable[[str], str]) -> str:
        """The message with every field written as `name_of(field)`."""

        class Names(dict):
            def __missing__(self, key: str) -> str:
                return name_of(key)

        return self.template.format_map(Names(self.values))


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


def extended(exc: PiroError, before: str = "", after: str = "") -> PiroError:
    """`exc` with plain text put before and after its message (an OptionError stays one, its fields still spelled by
    whoever prints it)."""
    if isinstance(exc, OptionError):
        literal = {ord("{"): "{{", ord("}"): "}}"}
        return OptionError(before.translate(literal) + exc.template + after.translate(literal), **exc.values)
    return PiroError(f"{before}{exc}{after}")
