"""`piro train`: options -> TrainConfig -> piro_cli.training.train."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from piro_cli.cli.common import RichReporter, console, count, err_console, handle_errors, parse_tta_scales
from piro_cli.errors import PiroError
from piro_cli.losses import CATEGORY_LOSSES, OBJECT_LOSSES, parse_loss_terms
from piro_cli.losses.registry import DEFAULT_NEIGHBOURHOOD, DEFAULT_PROXIES, DEFAULT_REGULARISATION, DEFAULT_TOPK, DEFAULT_WEIGHT
from piro_cli.methods import METHODS, get_method, method_for_space
from piro_cli.models.registry import CUT_POINTS, available_backbones
from piro_cli.options import limits
from piro_cli.recipes import BUILTIN_DEFAULTS, RECIPES, option_flag, recipe_help
from piro_cli.training.config_file import merged_config


def _default(field: str) -> str:
    """Help text for an option a recipe may set."""
    return f"(default: the recipe's, else {option_flag(field, BUILTIN_DEFAULTS[field]).split(' ', 1)[-1]})"


def _cut_points_help() -> str:
    """Backbones that share their stages listed together: `efficientnet_lite0/1/2: blocks.1 ... conv_head; ...`."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, stages in CUT_POINTS.items():
        if name != "tiny":
            groups.setdefault(stages, []).append(name)
    return "; ".join(f"{', '.join(names)}: {' '.join(stages)}" for stages, names in groups.items())


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
    data: Path = typer.Option(None, help="HDF5 file from `piro prepare`. Default: the most recently written ./data/*.h5."),
    recipe: str = typer.Option(
        None,
        help=f"Training values of the released code: {', '.join(RECIPES)} (what each sets: --help-methods). Default: "
        "pies for the PIEs baselines; for PiRO the recipe of the data file's source (objectpi, modelnet40, fg3d), else "
        "the built-in defaults. Options given explicitly override it; config.json records every resolved value.",
        show_default=False,
    ),
    backbone: str = typer.Option(
        None,
        help=f"Backbone (--help-methods lists them), or timm:<model>. {_default('backbone')}",
        show_default=False,
    ),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Start from ImageNet weights (or random init)."),
    method: str = typer.Option(
        None, help=f"What to train: {', '.join(METHODS)} (each explained by --help-methods). [default: piro-dual]"
    ),
    dual: bool = typer.Option(
        None,
        "--dual/--single",
        help="Dual space (category + object; = --method piro-dual) or the single-space PiRO-SE "
        "(= --method piro-single). The baselines have one space.",
        show_default=False,
    ),
    obj_loss: str = typer.Option(
        "piro", help=f"Object-space loss of piro-dual/piro-single: {', '.join(OBJECT_LOSSES)} (see --help-methods)."
    ),
    dvml: bool = typer.Option(False, "--dvml", help="Add deep variational metric learning (DVML) to the object-space loss."),
    dvml_kl: float = typer.Option(0.1, help="With --dvml: weight of the KL term."),
    dvml_rec: float = typer.Option(0.1, help="With --dvml: weight of the feature reconstruction term."),
    dvml_syn: float = typer.Option(0.5, help="With --dvml: weight of the object loss on the synthetic embeddings."),
    cat_loss: str = typer.Option(
        "lsoftmax", help=f"Category-space loss (the term 'cat') of piro-dual/piro-single: {', '.join(CATEGORY_LOSSES)}."
    ),
    direction_reg: float = typer.Option(
        0.0, help="Weight gamma of the direction regulariser (Mohan et al. 2020) on the object loss: --obj-loss piro or "
        "triplet only. 0: off.",
    ),
    distance_margin: float = typer.Option(
        0.0, help="Weight of an absolute-distance term in the object space (same-object views and view sets pulled under "
        "distance 0.5, other objects pushed beyond 1.0), for open-set identification's threshold. 0: off (as released).",
    ),
    gml_proxies: int = typer.Option(
        DEFAULT_PROXIES, **limits("gml_proxies"), help="With proxy-gml (--obj-loss or --cat-loss): proxies per object or category (ProxyGML's N; the paper's 12)."
    ),
    gml_neighbourhood: float = typer.Option(
        DEFAULT_NEIGHBOURHOOD, help="With proxy-gml: fraction r of all proxies in each sample's sub-graph (the paper's 0.05)."
    ),
    gml_reg: float = typer.Option(DEFAULT_REGULARISATION, help="With proxy-gml: weight lambda of the proxy regulariser (the paper's 0.3)."),
    language_guidance: bool = typer.Option(
        False, "--language-guidance",
        help="Distil the similarities of the category names in a language model into the embeddings (Roth et al. 2022; "
        "needs pip install -e '.[language]').",
    ),
    language_weight: float = typer.Option(DEFAULT_WEIGHT, help="With --language-guidance: weight of the matching loss (the authors' runs: 1.5-10)."),
    language_space: str = typer.Option("object", help="With --language-guidance: the space it shapes, object or category."),
    language_labels: str = typer.Option(
        "names", help="With --language-guidance: the labels embedded, the category names (names) or the names of an "
        "ImageNet classifier's top classes for each category's training views (imagenet; for poorly named data).",
    ),
    language_topk: int = typer.Option(DEFAULT_TOPK, **limits("language_topk"), help="With --language-labels imagenet: ImageNet classes per category (as released, 5)."),
    pi_alpha: float = typer.Option(
        None, help="pi-cnn, pi-proxy, pi-tc: weight a of d2(view, view set) [default: as released, 1; pi-tc 0.2]."
    ),
    pi_beta: float = typer.Option(
        None, help="pi-cnn, pi-proxy, pi-tc: weight b of d2(view set, category centre) [default: as released, 1]."
    ),
    embed_dim: int = typer.Option(
        None, **limits("cat_dim"), help=f"Embedding dimension of both spaces (the paper's 2048). {_default('obj_dim')}"
    ),
    cat_dim: int = typer.Option(None, **limits("cat_dim"), help="Category-space dimension (overrides --embed-dim)."),
    obj_dim: int = typer.Option(None, **limits("obj_dim"), help="Object-space dimension (overrides --embed-dim; the single space uses it)."),
    losses: str = typer.Option(
        None,
        help="Loss terms, for the ablations of paper Table 4: any of cat, piobj, picat. [default: the released ones: "
        "cat,piobj,picat for piro-dual; cat,piobj for piro-single (PiRO-SE)]",
        show_default=False,
    ),
    alpha: float = typer.Option(None, help=f"Object clustering margin alpha. {_default('alpha')}"),
    beta: float = typer.Option(None, help=f"Object separation margin beta. {_default('beta')}"),
    theta: float = typer.Option(None, help=f"Category margin theta. {_default('theta')}"),
    gamma: float = typer.Option(None, help=f"L-Softmax margin gamma. {_default('gamma')}"),
    lam: float = typer.Option(
        None, help=f"Weight lambda of the object separation term (released code: 1, FG3D 2). {_default('lam')}"
    ),
    separation: str = typer.Option(
        "squared",
        help="Distance in L_piobj's confuser separation [beta - s(o_con^a, o_con^b)]+: squared (s = d^2, the released "
        "code behind the published numbers) or plain (s = d, the paper's Eq. 7).",
    ),
    train_lsoftmax_weights: bool = typer.Option(
        False,
        "--train-lsoftmax-weights",
        help="Also optimise the L-Softmax class-weight matrix of L_cat (the released code leaves it at its random "
        "initialisation).",
    ),
    lr: float = typer.Option(None, help=f"Adam learning rate (released: 1e-5; FG3D 5e-5). {_default('lr')}"),
    lr_step: int = typer.Option(
        None,
        **limits("lr_step"),
        help="Halve the learning rate every this many epochs (released PiRO: epochs / 5); 0 keeps it constant (the "
        f"PIEs code). {_default('lr_step')}",
    ),
    epochs: int = typer.Option(
        None, **limits("epochs"), help=f"Epochs to train; with --resume, extend the run to this many. {_default('epochs')}"
    ),
    batch_pairs: int = typer.Option(
        None, **limits("batch_pairs"), help=f"Pairs per batch (released: 4 ObjectPI, 3 ModelNet-40, 9 FG3D). {_default('batch_pairs')}"
    ),
    batch_objects: int = typer.Option(
        None,
        **limits("batch_objects"),
        help="PIEs baselines: whole objects per shuffled batch [default: as released, 4 pi-cnn and pi-proxy, 8 the others].",
    ),
    pairs_per_object: int = typer.Option(
        None,
        **limits("pairs_per_object"),
        help="Pairs each training object starts per epoch, each partner drawn (with replacement) from the other objects "
        f"of its category (released: 10, FG3D 3). {_default('pairs_per_object')}",
    ),
    views: int = typer.Option(
        None,
        **limits("views"),
        help="Random views per object in a pair, the same views for both objects (released: 8 ObjectPI, 12 ModelNet-40 "
        "and FG3D, at most the data's). (default: the recipe's, else all)",
    ),
    augment: bool = typer.Option(
        None,
        "--augment/--no-augment",
        help="Augment the training views (see --augmentation). (default: the recipe's, else on)",
        show_default=False,
    ),
    augmentation: str = typer.Option(
        None,
        help="piro (PiRO's released code: random flip; rotation 5 deg, scale 0.9-1.1, shear 1 deg on both axes, black "
        "fill) or pies (RandomResizedCrop scale 0.8-1 and flip, "
        "the PIEs code's). [default: pies for the PIEs baselines, else piro]",
    ),
    seed: int = typer.Option(0, **limits("seed"), help="Random seed; CPU runs with the same seed are reproducible."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when available)."),
    freeze_backbone: bool = typer.Option(
        None,
        "--freeze-backbone",
        help="Cache backbone features once and train only the heads (fast on CPU); replaces a recipe's --train-from. "
        "(default: the recipe's, else off)",
        show_default=False,
    ),
    train_from: str = typer.Option(
        None,
        "--train-from",
        help="Train the backbone from this stage on, with the heads, from cached activations below it (partial "
        f"fine-tuning, practical on a CPU). Stages: {_cut_points_help()}. Replaces a recipe's --freeze-backbone. "
        "Default: the recipe's, else full fine-tuning (none with --freeze-backbone).",
        show_default=False,
    ),
    feature_passes: int = typer.Option(
        None,
        **limits("feature_passes"),
        help="With --freeze-backbone or --train-from: passes over the data cached (1 clean + K-1 augmented). "
        f"{_default('feature_passes')}",
        show_default=False,
    ),
    tta: bool = typer.Option(
        None,
        "--tta/--no-tta",
        help="Evaluate and embed this run with test-time flips by default (each view averaged with its mirror image; "
        "`piro evaluate --tta/--no-tta` overrides it). The validation numbers of metrics.csv are always without. "
        f"{_default('tta')}",
        show_default=False,
    ),
    tta_scales: str = typer.Option(
        None,
        "--tta-scales",
        metavar="F[,F...]",
        help="Evaluate and embed this run by default as the mean over each view resized by these factors (1 = as "
        "stored; e.g. 1,1.15: the stored view and one 15% larger), with the flips if on; `piro evaluate --tta-scales` "
        f"overrides it. The validation numbers of metrics.csv are always at 1. {_default('tta_scales')}",
        show_default=False,
    ),
    precision: str = typer.Option(
        None,
        help="Arithmetic of training and, by default, of evaluating this run: auto (mixed bf16/fp16 on a GPU, fp32 on a "
        "CPU), fp32 (float32 without TF32: the released code's), bf16 or fp16. "
        f"{_default('precision')}",
        show_default=False,
    ),
    val_fraction: float = typer.Option(
        None, help="Carve this fraction of train objects (per category, seeded) out as validation."
    ),
    val_seed: int = typer.Option(
        0, **limits("val_seed"), help="Seed of the --val-fraction or --folds split (kept apart from --seed so seeds share one split)."
    ),
    folds: int = typer.Option(
        None, **limits("folds"), help="Object-level cross-validation: a category-stratified K-fold split of the train objects. Alone, "
        "trains every fold (runs <name>-fold1 ... -foldK) and prints their mean and spread per task (`piro compare`); "
        "with --fold, trains that one.",
    ),
    fold: int = typer.Option(None, **limits("fold"), help="With --folds K: which fold (1 to K) is this run's validation objects."),
    early_stop_rho: float = typer.Option(
        None,
        help="Stop early, as the released code does: rho = d_inter_min / d_intra_max of the training objects is computed "
        "before each epoch, and when it exceeds this value training stops after that epoch (so one more epoch runs "
        f"after rho crosses it); 0 disables. {_default('early_stop_rho')}",
    ),
    dropout: float = typer.Option(0.25, help="Dropout on the attention layers' output (released: 0.25)."),
    config: Path = typer.Option(
        None,
        "--config",
        help="Read options from a YAML, TOML or JSON file (keys: these options' names); options typed here override it. "
        "A run's config.json works too: `piro train --config runs/x/config.json --name x-again` trains it again.",
        show_default=False,
    ),
    logger: list[str] = typer.Option(
        None,
        "--logger",
        help="Also mirror metrics.csv to: tensorboard (events in <run folder>/tensorboard/; needs tensorboard).",
        show_default=False,
    ),
    devices: int = typer.Option(
        None,
        "--devices",
        min=1,
        help="Train on this many processes on this machine (one per GPU, or CPU processes sharing the cores), through "
        "torchrun; multi-machine: run `torchrun ... -m piro_cli train ...` yourself (README: Scaling out).",
        show_default=False,
    ),
    name: str = typer.Option(None, help="Run folder name under --project (default exp, exp2, ...)."),
    project: Path = typer.Option(Path("runs"), help="Folder holding the run folders."),
    resume: Path = typer.Option(None, help="Continue an interrupted run: its folder or last.pt (its saved options are used)."),
    help_methods: bool = typer.Option(
        False, "--help-methods", callback=_print_methods, is_eager=True, expose_value=False,
        help="List the methods, object losses and backbones with what each is, and exit.",
    ),
) -> None:
    """Train PAN (dual or single space) with the pose-invariant losses, or a baseline, and write runs/<name>/.

    The run folder holds config.json, metrics.csv (one row per epoch), last.pt and best.pt (best validation mean when there is a validation split, else last).

    Examples:

    piro train --data data/objectpi.h5 --recipe objectpi-cpu --val-fraction 0.2

    piro train --freeze-backbone --single --name single    (heads only: minutes on a CPU)

    piro train --devices 2 --config runs/exp/config.json --name exp-again
    """
    if devices is not None and devices > 1 and "WORLD_SIZE" not in os.environ:
        from piro_cli.training.distributed import launch

        raise typer.Exit(launch(devices, strip_option(sys.argv[1:], "--devices")))
    if resume is not None:
        _refuse_options_with_resume(ctx)
    try:
        terms = parse_loss_terms(losses) if losses is not None else None
    except ValueError as exc:
        raise PiroError(f"--losses: {exc}") from None
    # neither typed: None, so that a --config file's method or dual decides (else TrainConfig's piro-dual)
    method = _method_from_flags(method, dual) if method is not None or dual is not None else None
    command_line = dict(
        data=str(data) if data else None, project=str(project), name=name, recipe=recipe, method=method, backbone=backbone,
        pretrained=pretrained, cat_dim=embed_dim if cat_dim is None else cat_dim,
        obj_dim=embed_dim if obj_dim is None else obj_dim, losses=terms, alpha=alpha, beta=beta,
        theta=theta, gamma=gamma, lam=lam, separation=separation.strip().lower(),
        train_lsoftmax_weights=train_lsoftmax_weights, lr=lr, lr_step=lr_step, epochs=epochs, batch_pairs=batch_pairs, batch_objects=batch_objects,
        pairs_per_object=pairs_per_object, views=views, augment=augment, augmentation=augmentation, seed=seed, device=device, freeze_backbone=freeze_backbone,
        train_from=train_from, feature_passes=feature_passes, tta=tta, tta_scales=parse_tta_scales(tta_scales), precision=precision,
        val_fraction=val_fraction, val_seed=val_seed, folds=folds, fold=fold if fold is not None or folds is None else 1, early_stop_rho=early_stop_rho, obj_loss=obj_loss, dvml=dvml, dvml_kl=dvml_kl,
        dvml_rec=dvml_rec, dvml_syn=dvml_syn, gml_proxies=gml_proxies, gml_neighbourhood=gml_neighbourhood, gml_reg=gml_reg, cat_loss=cat_loss.strip().lower(), direction_reg=direction_reg, distance_margin=distance_margin, language_guidance=language_guidance, language_weight=language_weight, language_space=language_space, language_labels=language_labels.strip().lower(), language_topk=language_topk, pi_alpha=pi_alpha, pi_beta=pi_beta, dropout=dropout, loggers=tuple(logger or ()),
    )  # fmt: skip
    config = merged_config(config, command_line, _given_fields(ctx))
    from piro_cli.training.trainer import train as train_run  # torch: loaded once the options are checked

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    if folds is not None and fold is None and resume is None:
        _cross_validate(config, train_run, columns)
        return
    with Progress(*columns, console=err_console, transient=True) as progress:
        result = train_run(config, RichReporter(progress), resume=resume, resume_epochs=epochs)
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


PANELS = {
    "Data": ("data", "val_fraction", "val_seed", "folds", "fold", "views", "augment", "augmentation"),
    "Model": ("backbone", "pretrained", "embed_dim", "cat_dim", "obj_dim", "dropout", "freeze_backbone", "train_from",
              "feature_passes", "tta", "tta_scales"),
    "Method and losses": ("recipe", "method", "dual", "obj_loss", "cat_loss", "direction_reg", "distance_margin", "dvml", "dvml_kl", "dvml_rec", "dvml_syn", "gml_proxies",
                          "gml_neighbourhood", "gml_reg", "language_guidance", "language_weight", "language_space", "language_labels", "language_topk", "pi_alpha",
                          "pi_beta", "losses", "alpha", "beta", "theta", "gamma", "lam", "separation", "train_lsoftmax_weights"),
    "Optimisation": ("lr", "lr_step", "epochs", "batch_pairs", "batch_objects", "pairs_per_object", "seed", "early_stop_rho", "precision"),
    "Run": ("name", "project", "config", "resume", "logger", "device", "devices", "help_methods"),
}  # fmt: skip


def _set_panels(command) -> None:
    """Group `piro train`'s options into help panels (rich_help_panel) instead of one long list."""
    parameters = inspect.signature(command).parameters
    for panel, names in PANELS.items():
        for name in names:
            parameters[name].default.rich_help_panel = panel


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


_set_panels(train)
