"""Every command's options stay as they were when commands with many options were given option groups
(`option_group` / `with_option_groups` in piro_cli/cli/common.py), and no function in piro_cli takes more than
12 parameters (issue #26). The snapshot, tests/data/command_options_before_groups.json, was dumped from the
commands as written before the change (`piro train` has its own snapshot: tests/test_option_tree.py)."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import typer
import typer.main
from typer.testing import CliRunner

from piro_cli.cli import app
from piro_cli.cli.common import handle_errors, option_group, with_option_groups

SNAPSHOT = Path(__file__).parent / "data" / "command_options_before_groups.json"
PACKAGE = Path(__file__).resolve().parents[1] / "piro_cli"
MOST_PARAMETERS = 12


def command_options(command, prefix: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """{'index calibrate': [one record per click parameter, in order], ...} for every command under `command`."""
    if hasattr(command, "list_commands"):
        context = command.context_class(command)
        found: dict[str, list[dict]] = {}
        for name in command.list_commands(context):
            found.update(command_options(command.get_command(context, name), (*prefix, name)))
        return found
    return {
        " ".join(prefix): [
            {
                "name": p.name, "kind": type(p).__name__, "opts": list(p.opts), "secondary": list(getattr(p, "secondary_opts", [])),
                "default": repr(p.default), "help": getattr(p, "help", None), "type": type(getattr(p, "type", None)).__name__,
                "required": p.required, "multiple": p.multiple, "panel": getattr(p, "rich_help_panel", None), "metavar": p.metavar,
            }  # fmt: skip
            for p in command.params
        ]
    }


def test_every_command_keeps_its_options():
    before = json.loads(SNAPSHOT.read_text())
    now = command_options(typer.main.get_command(app))
    now.pop("train")
    assert sorted(now) == sorted(before)
    for name in before:
        assert now[name] == before[name], f"`piro {name}`: its options changed"


def test_no_function_takes_more_than_twelve_parameters():
    crowded = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
                if count > MOST_PARAMETERS:
                    crowded.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({count})")
    assert not crowded, "functions with more than 12 parameters:\n" + "\n".join(crowded)


@dataclass
class Shape:
    width: int = typer.Option(3, min=1, help="Width.")
    colour: str = typer.Option("red", "--colour", "-c", help="Colour.")


@dataclass
class Output:
    out: Path = typer.Option(None, help="File.")
    loud: bool = typer.Option(False, "--loud/--quiet", help="Loudness.")


def test_an_option_group_is_spread_into_options_and_gathered_back():
    seen = {}
    toy = typer.Typer()

    @toy.command()
    @handle_errors
    @with_option_groups
    def draw(name: str = typer.Argument(...), shape: Shape = option_group(Shape), count: int = typer.Option(1),
             output: Output = option_group(Output)) -> None:  # fmt: skip
        seen.update(name=name, shape=shape, count=count, output=output)

    result = CliRunner().invoke(toy, ["box", "-c", "blue", "--count", "2", "--loud", "--out", "f.txt"])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "box", "shape": Shape(3, "blue"), "count": 2, "output": Output(Path("f.txt"), True)}
    help_text = CliRunner().invoke(toy, ["--help"]).output
    assert help_text.index("--width") < help_text.index("--colour") < help_text.index("--count") < help_text.index("--out")
    refused = CliRunner().invoke(toy, ["box", "--width", "0"])
    assert refused.exit_code == 2 and "--width" in refused.output  # the field's bounds are the option's


def test_an_option_repeated_by_two_groups_is_refused():
    @dataclass
    class Again:
        out: Path = typer.Option(None)

    def command(output: Output = option_group(Output), again: Again = option_group(Again)) -> None: ...

    try:
        with_option_groups(command)
    except TypeError as exc:
        assert "out" in str(exc)
    else:
        raise AssertionError("a repeated option was accepted")
