"""Help that reads at 80 columns: each option panel in two columns (the option with its value, then its help).

Typer's own panels give every option six columns (long and short names, their negative forms, the type, the help),
which at 80 columns leaves the help about 20 characters wide. This layout keeps the panels (`rich_help_panel`)
and gives the help the rest of the line. It replaces typer.rich_utils._print_options_panel (same arguments); if a
typer version renames it, typer's own layout stays in place.
"""

from __future__ import annotations

import typer.rich_utils as rich_utils
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

OPTION_COLUMN = 30  # at most: longer option names fold onto the next line

_VALUE_NAMES = {"int": "N", "float": "X", "str": "TEXT", "Path": "PATH"}


def _value(param) -> str:
    """A short name for the option's value (N, X, TEXT, PATH), none for a flag."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.metavar:
        return param.metavar
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    name = getattr(annotation, "__name__", str(annotation or ""))
    if name == "list":  # list[str]: a repeatable option
        return "TEXT"
    return _VALUE_NAMES.get(name, name.upper())


def _option_text(param) -> Text:
    is_argument = param.param_type_name == "argument"
    if is_argument:
        label = (param.metavar or param.name).upper()
        return Text(label + ("..." if param.nargs != 1 else ""), style=rich_utils.STYLE_OPTION)
    names = sorted(param.opts, key=len)
    text = Text(", ".join(names), style=rich_utils.STYLE_OPTION)
    if param.secondary_opts:
        text.append("/" + ", ".join(param.secondary_opts), style=rich_utils.STYLE_NEGATIVE_OPTION)
    value = _value(param)
    if value:
        text.append(" " + value, style=rich_utils.STYLE_TYPES)
    limits = param._get_number_range_help_str() if hasattr(param, "_get_number_range_help_str") else None
    if limits:
        text.append(f" [{limits}]", style=rich_utils.STYLE_TYPES)
    if param.required:
        text.append(" *", style=rich_utils.STYLE_REQUIRED_SHORT)
    return text


def _print_options_panel(*, name: str, params, ctx, markup_mode, console) -> None:
    if not params:
        return
    labels = [_option_text(param) for param in params]
    table = Table(show_header=False, box=None, padding=(0, 1), expand=True, pad_edge=False)
    table.add_column(width=min(OPTION_COLUMN, max(label.cell_len for label in labels)), overflow="fold")
    table.add_column(ratio=1)
    for param, label in zip(params, labels, strict=True):
        table.add_row(label, rich_utils._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode))
    console.print(Panel(table, border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER, title=name, title_align="left"))


def _literal_text(make):
    """Help text as written: typer parses help as Rich markup, which swallows bracketed words (`pip install -e
    '.[deploy]'` lost its `[deploy]`); piro's help uses no markup, so every bracket is escaped first."""

    def make_literal(*, text: str, style: str = "", markup_mode):
        if markup_mode == getattr(rich_utils, "MARKUP_MODE_RICH", "rich"):
            text = escape(text)
        return make(text=text, style=style, markup_mode=markup_mode)

    return make_literal


def install() -> None:
    """Use the two-column option panels in every command's help, and keep help text literal."""
    if hasattr(rich_utils, "_print_options_panel") and hasattr(rich_utils, "_get_parameter_help"):
        rich_utils._print_options_panel = _print_options_panel
    if hasattr(rich_utils, "_make_rich_text") and not getattr(rich_utils._make_rich_text, "piro_literal", False):
        rich_utils._make_rich_text = _literal_text(rich_utils._make_rich_text)
        rich_utils._make_rich_text.piro_literal = True
