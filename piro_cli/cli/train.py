"""`piro train`: options -> TrainConfig -> piro_cli.training.train."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from piro_cli.cli.common import RichReporter, console, count, err_console, handle_errors, progress_columns
from piro_cli.errors import PiroError
from piro_cli.losses import CATEGORY_LOSSES, OBJECT_LOSSES
from piro_cli.methods import METHODS, get_method, method_for_space
from piro_cli.models.registry import available_backbones
from piro_cli.options import PANELS, flag_of, option_spec
from piro_cli.recipes import recipe_default, recipe_help
from piro_cli.training.config_file import merged_config


def _print_methods(value: bool) -> None:
    if not value:
        return
    table = Table("method", "what it trains", title="--method", title_justify="left")
    for spec in METHODS.values():
        table.add_row(spec.name, spec.summary)
    console.print(table)
    table = Table("object loss", "what it is", title="--obj-loss (piro-dual, piro-single)", title_justify="left")
    for name, summary in OBJECT_LOSSES.items():
        table.add_row(name, summary)
    console.print(table)
    table = Table("category loss", "what it is", title="--cat-loss (piro-dual, piro-single)", title_justify="left")
    for name, summary in CATEGORY_LOSSES.items():
        table.add_row(name, summary)
    console.print(table)
    console.print(f"--backbone: {', '.join(available_backbones())}, or timm:<model> (README: Training)", highlight=False)
    console.print(f"--recipe: {recipe_help()}", highlight=False)
    raise typer.Exit()


@handle_errors
def train(
    ctx: typer.Context,
    embed_dim: int = typer.Option(
        None, min=1, help=f"Embedding dimension of both spaces (the paper's 2048). {recipe_default('obj_dim')}",
        rich_help_panel="Model",
    ),  # fmt: skip
    config: Path = typer.Option(
        None,
        "--config",
        help="Read options from a YAML, TOML or JSON file (keys: these options' names); options typed here override it. "
        "A run's config.json works too: `piro train --config runs/x/config.json --name x-again` trains it again.",
        show_default=False,
        rich_help_panel="Run",
    ),
    logger: list[str] = typer.Option(
        None,
        "--logger",
        help="Also mirror metrics.csv to: tensorboard (events in <run folder>/tensorboard/; needs tensorboard).",
        show_default=False,
        rich_help_panel="Run",
    ),
    devices: int = typer.Option(
        None,
        "--devices",
        min=1,
        help="Train on this many processes on this machine (one per GPU, or CPU processes sharing the cores), through "
        "torchrun; multi-machine: run `torchrun ... -m piro_cli train ...` yourself (README: Scaling out).",
        show_default=False,
        rich_help_panel="Run",
    ),
    resume: Path = typer.Option(
        None, help="Continue an interrupted run: its folder or last.pt (its saved options are used).", rich_help_panel="Run"
    ),
    help_methods: bool = typer.Option(
        False, "--help-methods", callback=_print_methods, is_eager=True, expose_value=False,
        help="List the methods, object losses and backbones with what each is, and exit.", rich_help_panel="Run",
    ),  # fmt: skip
    **options: Any,  # every TrainConfig field with an OptionSpec: its typer option is built from it (_config_options)
) -> None:
    """Train PAN (dual or single space) with the pose-invariant losses, or a baseline, and write runs/<name>/.

    The run folder holds config.json, metrics.csv (one row per epoch), last.pt and best.pt (best validation mean when there is a validation split, else last).

    Examples:

    piro train --data data/objectpi-240.h5 --recipe objectpi-cpu --val-fraction 0.2

    piro train --freeze-backbone --single --name single    (heads only: minutes on a CPU)

    piro train --devices 2 --config runs/exp/config.json --name exp-again
    """
    if devices is not None and devices > 1 and "WORLD_SIZE" not in os.environ:
        from piro_cli.training.distributed import launch

        raise typer.Exit(launch(devices, strip_option(sys.argv[1:], "--devices")))
    if resume is not None:
        _refuse_options_with_resume(ctx)
    command_line = dict(options, loggers=tuple(logger or ()))
    for dim in ("cat_dim", "obj_dim"):
        command_line[dim] = embed_dim if options[dim] is None else options[dim]
    # neither typed: None, so that a --config file's method or dual decides (else TrainConfig's piro-dual)
    method, dual = options["method"], options["dual"]
    command_line["method"] = _method_from_flags(method, dual) if method is not None or dual is not None else None
    del command_line["dual"]  # the method carries it
    folds, fold = options["folds"], options["fold"]
    command_line["fold"] = fold if fold is not None or folds is None else 1  # --folds K alone: every fold, from 1
    config = merged_config(config, command_line, _given_fields(ctx))
    from piro_cli.training.trainer import train as train_run  # torch: loaded once the options are checked

    columns = progress_columns()
    if folds is not None and fold is None and resume is None:
        _cross_validate(config, train_run, columns)
        return
    with Progress(*columns, console=err_console, transient=True) as progress:
        result = train_run(config, RichReporter(progress), resume=resume, resume_epochs=options["epochs"])
    if os.environ.get("RANK", "0") != "0":  # under torchrun process 0 alone reports
        return
    console.print(
        f"[green]done[/]: {count(result.epochs_done, 'epoch')} ({result.stop_reason}) in {result.seconds:.0f} s; "
        f"best {escape(str(result.best_path))}, last {escape(str(result.last_path))}",
        highlight=False,
    )


def _cross_validate(config, train_run, columns) -> None:
    """`--folds K` alone: one run per fold (<name>-fold1 ... -foldK), then their table (mean and spread per task)."""
    import dataclasses

    from piro_cli.cli.compare import print_comparison_table
    from piro_cli.evaluation.compare import compare_runs

    base = config.name or "cv"
    runs = []
    for k in range(1, config.folds + 1):
        console.print(f"fold {k} of {config.folds}", highlight=False)
        with Progress(*columns, console=err_console, transient=True) as progress:
            result = train_run(dataclasses.replace(config, fold=k, name=f"{base}-fold{k}"), RichReporter(progress))
        runs.append(result.run_dir)
    print_comparison_table(compare_runs(runs))
    console.print(f"[green]done[/]: {count(len(runs), 'fold')} in {escape(str(Path(config.project)))}/{escape(base)}-fold*", highlight=False)




def _config_options() -> list[inspect.Parameter]:
    """A keyword parameter with its typer option for every TrainConfig field that is a command-line option (its
    OptionSpec), in the order of the help panels (piro_cli.options.PANELS), then of the fields."""
    from dataclasses import fields

    from piro_cli.training.config import TrainConfig

    made = []
    for f in fields(TrainConfig):
        spec = option_spec(f)
        if spec is None:
            continue
        kind = spec.cli_type or (f.type if isinstance(f.type, type) else _TYPES[f.type.replace(" | None", "")])
        extra = {"min": spec.bounds[0], "max": spec.bounds[1]} if spec.bounds is not None else {}
        if spec.metavar is not None:
            extra["metavar"] = spec.metavar
        default = spec.cli_default if spec.own_cli_default else f.default
        decls = spec.flags or ((flag_of(f.name),) if kind is bool else ())
        made.append((PANELS.index(spec.panel), len(made), inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
            default=typer.Option(default, *decls, help=spec.help, rich_help_panel=spec.panel, show_default=spec.show_default, **extra),
        )))  # fmt: skip
    return [parameter for _, _, parameter in sorted(made, key=lambda item: item[:2])]


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}  # TrainConfig's field types (text: postponed) -> typer's


def _with_config_options(command):
    """`command` (train) with its `**options` replaced by the typer options of TrainConfig's fields, which typer reads
    from its signature; the command's own parameters (ctx and the command-only options) come first, by panel."""
    own = [p for p in inspect.signature(command).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = _config_options()
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]]
    ordered = sorted(generated + keyword, key=lambda p: PANELS.index(p.default.rich_help_panel))
    parameters = [own[0], *ordered]
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


RESUME_OPTIONS = {"resume", "epochs", "data", "devices"}
# the TrainConfig fields a command-line option sets, where its name is not the field's
FIELDS_OF_OPTION = {
    "embed_dim": ("cat_dim", "obj_dim"),
    "dual": ("method", "dual"),
    "method": ("method", "dual"),
    "logger": ("loggers",),
}


def _given_fields(ctx: typer.Context) -> set[str]:
    """The TrainConfig fields typed on the command line (they override a --config file)."""
    given = set()
    for param in ctx.command.params:
        if getattr(ctx.get_parameter_source(param.name), "name", "") == "COMMANDLINE":
            given.update(FIELDS_OF_OPTION.get(param.name, (param.name,)))
    return given


def strip_option(argv: list[str], option: str) -> list[str]:
    """argv without `option VALUE` / `option=VALUE` (what `--devices` hands on to each process)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out  # what --resume takes from the command line; the rest is the run's own


def _refuse_options_with_resume(ctx: typer.Context) -> None:
    """A resumed run trains with its saved options: an option typed beside --resume would be silently ignored."""
    given = [
        param.secondary_opts[0]
        if getattr(param, "secondary_opts", None) and ctx.params.get(param.name) is False
        else param.opts[0]
        for param in ctx.command.params
        if param.name not in RESUME_OPTIONS
        and getattr(ctx.get_parameter_source(param.name), "name", "") == "COMMANDLINE"  # typer may vendor click
    ]
    if given:
        raise PiroError(
            f"{', '.join(given)}: not used with --resume, which continues the run with its saved options "
            "(only --epochs and --data may be given); drop them, or start a new run"
        )


def _method_from_flags(method: str | None, dual: bool | None) -> str:
    """--method and --dual/--single together: the flag picks piro-dual/piro-single, and must agree with a method."""
    if method is None:
        return method_for_space(dual is not False)
    spec = get_method(method)
    if dual is not None and spec.dual != dual:
        flag = "--dual" if dual else "--single"
        raise PiroError(
            f"{flag} contradicts --method {spec.name} ({'two spaces' if spec.dual else 'one space'}); drop one of them"
        )
    return spec.name


train = _with_config_options(train)
