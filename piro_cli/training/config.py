"""Every `piro train` option, in one dataclass: checked when built, resolved against a recipe, saved in each run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from piro_cli.errors import OptionError, PiroError, extended
from piro_cli.hardware import check_precision
from piro_cli.losses.registry import (
    CATEGORY_LOSSES,
    DEFAULT_NEIGHBOURHOOD,
    DEFAULT_PROXIES,
    DEFAULT_REGULARISATION,
    DEFAULT_TOPK,
    DEFAULT_WEIGHT,
    LOSS_TERMS,
    OBJECT_LOSSES,
    POSE_INVARIANT_LOSSES,
    parse_loss_terms,
    parse_object_loss,
)  # fmt: skip
from piro_cli.losses.registry import LABELS as LANGUAGE_LABELS
from piro_cli.methods import (
    DEFAULT_METHOD,
    DEFAULT_OBJ_LOSS,
    DEFAULT_SEPARATION,
    METHODS,
    PRE_OPTION_VALUES,
    get_method,
    loss_config_of,
    method_for_space,
    resolve_method,
    resolve_method_options,
)  # fmt: skip
from piro_cli.models.registry import cut_points, cut_points_help
from piro_cli.options import SEED_MAX, check_option_bounds, check_test_scales, option, option_spec
from piro_cli.recipes import BUILTIN_DEFAULTS, RECIPES, Resolution, describe, get_recipe, recipe_default
from piro_cli.recipes import resolve as resolve_recipe

LOGGERS = ("tensorboard",)  # piro_cli/training/loggers.py
OBJECT_FEATURES = ("shared", "frozen")  # what the object head reads (PANConfig.object_trunk)


@dataclass
class TrainConfig:
    """Every `piro train` option.

    The options a recipe may set (piro_cli.recipes.BUILTIN_DEFAULTS) default to None here: "not given",
    resolved by `train` from `recipe` (or the data source's recipe), else the built-in default, while a
    value given explicitly is kept. A resolved config (config.json, checkpoints) has them all set; `views`
    None then means all the views.
    """

    # --- Data
    data: str | None = option(
        None, "HDF5 file from `piro prepare`. Default: the most recently written ./data/*.h5.", "Data", cli_type=Path
    )
    views: int | None = option(
        None,
        "Random views per object in a pair, the same views for both objects (released: 8 ObjectPI, 12 ModelNet-40 "
        "and FG3D, at most the data's). (default: the recipe's, else all)",
        "Data", bounds=(1, None),
    )  # fmt: skip
    augment: bool | None = option(
        None, "Augment the training views (see --augmentation). (default: the recipe's, else on)", "Data",
        flags=("--augment/--no-augment",), show_default=False,
    )  # fmt: skip
    augmentation: str | None = option(
        None,
        "piro (PiRO's released code: random flip; rotation 5 deg, scale 0.9-1.1, shear 1 deg on both axes, black "
        "fill) or pies (RandomResizedCrop scale 0.8-1 and flip, the PIEs code's). [default: pies for the PIEs "
        "baselines, else piro]",
        "Data",
    )
    val_fraction: float | None = option(None, "Carve this fraction of train objects (per category, seeded) out as validation.", "Data")
    val_seed: int = option(
        0, "Seed of the --val-fraction or --folds split (kept apart from --seed so seeds share one split).", "Data",
        bounds=(0, SEED_MAX),
    )  # fmt: skip
    folds: int | None = option(
        None,
        "Object-level cross-validation: a category-stratified K-fold split of the train objects. Alone, trains every "
        "fold (runs <name>-fold1 ... -foldK) and prints their mean and spread per task (`piro compare`); with --fold, "
        "trains that one.",
        "Data", bounds=(2, None),
    )  # fmt: skip
    fold: int | None = option(None, "With --folds K: which fold (1 to K) is this run's validation objects.", "Data", bounds=(1, None))
    # --- Method and losses
    recipe: str | None = option(
        None,
        f"Training values of the released code: {', '.join(RECIPES)} (what each sets: --help-methods). Default: pies "
        "for the PIEs baselines; for PiRO the recipe of the data file's source (objectpi, modelnet40, fg3d), else the "
        "built-in defaults. Options given explicitly override it; config.json records every resolved value.",
        "Method and losses", show_default=False,
    )  # fmt: skip
    method: str | None = option(
        None, f"What to train: {', '.join(METHODS)} (each explained by --help-methods). [default: piro-dual]", "Method and losses"
    )
    dual: bool = option(
        True,
        "Dual space (category + object; = --method piro-dual) or the single-space PiRO-SE (= --method piro-single). "
        "The baselines have one space.",
        "Method and losses", flags=("--dual/--single",), show_default=False, cli_default=None,
    )  # fmt: skip  # set from the method; the command line's None lets a --config file's method decide
    obj_loss: str = option(
        "piro", f"Object-space loss of piro-dual/piro-single: {', '.join(OBJECT_LOSSES)} (see --help-methods).", "Method and losses"
    )
    dvml: bool = option(
        False, "Add deep variational metric learning (DVML) to the object-space loss.", "Method and losses", flags=("--dvml",),
        label="dvml",
    )  # fmt: skip
    dvml_kl: float = option(0.1, "With --dvml: weight of the KL term.", "Method and losses")
    dvml_rec: float = option(0.1, "With --dvml: weight of the feature reconstruction term.", "Method and losses")
    dvml_syn: float = option(0.5, "With --dvml: weight of the object loss on the synthetic embeddings.", "Method and losses")
    cat_loss: str = option(
        "lsoftmax", f"Category-space loss (the term 'cat') of piro-dual/piro-single: {', '.join(CATEGORY_LOSSES)}.",
        "Method and losses",
    )  # fmt: skip
    direction_reg: float = option(
        0.0,
        "Weight gamma of the direction regulariser (Mohan et al. 2020) on the object loss: --obj-loss piro or triplet "
        "only. 0: off.",
        "Method and losses",
        label="dr={:g}",
    )
    distance_margin: float = option(
        0.0,
        "Weight of an absolute-distance term in the object space (same-object views and view sets pulled under "
        "distance 0.5, other objects pushed beyond 1.0), for open-set identification's threshold. 0: off (as released).",
        "Method and losses",
        label="margin={:g}",
    )
    gml_proxies: int = option(
        DEFAULT_PROXIES, "With proxy-gml (--obj-loss or --cat-loss): proxies per object or category (ProxyGML's N; the "
        "paper's 12).", "Method and losses", bounds=(1, None),
    )  # fmt: skip
    gml_neighbourhood: float = option(
        DEFAULT_NEIGHBOURHOOD, "With proxy-gml: fraction r of all proxies in each sample's sub-graph (the paper's 0.05).",
        "Method and losses",
    )  # fmt: skip
    gml_reg: float = option(
        DEFAULT_REGULARISATION, "With proxy-gml: weight lambda of the proxy regulariser (the paper's 0.3).", "Method and losses"
    )
    language_guidance: bool = option(
        False,
        "Distil the similarities of the category names in a language model into the embeddings (Roth et al. 2022; "
        "needs pip install -e '.[language]').",
        "Method and losses", flags=("--language-guidance",),
    )  # fmt: skip
    language_weight: float = option(
        DEFAULT_WEIGHT, "With --language-guidance: weight of the matching loss (the authors' runs: 1.5-10).", "Method and losses"
    )
    language_space: str = option("object", "With --language-guidance: the space it shapes, object or category.", "Method and losses")
    language_labels: str = option(
        "names",
        "With --language-guidance: the labels embedded, the category names (names) or the names of an ImageNet "
        "classifier's top classes for each category's training views (imagenet; for poorly named data).",
        "Method and losses",
    )
    language_topk: int = option(
        DEFAULT_TOPK, "With --language-labels imagenet: ImageNet classes per category (as released, 5).", "Method and losses",
        bounds=(1, 1000),
    )  # fmt: skip
    pi_alpha: float | None = option(
        None, "pi-cnn, pi-proxy, pi-tc: weight a of d2(view, view set) [default: as released, 1; pi-tc 0.2].",
        "Method and losses",
    )  # fmt: skip  # None: the released value
    pi_beta: float | None = option(
        None, "pi-cnn, pi-proxy, pi-tc: weight b of d2(view set, category centre) [default: as released, 1].",
        "Method and losses",
    )  # fmt: skip
    losses: tuple[str, ...] | None = option(
        None,
        "Loss terms, for the ablations of paper Table 4: any of cat, piobj, picat. [default: the released ones: "
        "cat,piobj,picat for piro-dual; cat,piobj for piro-single (PiRO-SE)]",
        "Method and losses", show_default=False, cli_type=str,
    )  # fmt: skip  # None: the method's released terms
    alpha: float | None = option(None, f"Object clustering margin alpha. {recipe_default('alpha')}", "Method and losses")
    beta: float | None = option(None, f"Object separation margin beta. {recipe_default('beta')}", "Method and losses")
    theta: float | None = option(None, f"Category margin theta. {recipe_default('theta')}", "Method and losses")
    gamma: float | None = option(None, f"L-Softmax margin gamma. {recipe_default('gamma')}", "Method and losses")
    lam: float | None = option(
        None, f"Weight lambda of the object separation term (released code: 1, FG3D 2). {recipe_default('lam')}",
        "Method and losses",
    )  # fmt: skip
    separation: str = option(
        "squared",
        "Distance in L_piobj's confuser separation [beta - s(o_con^a, o_con^b)]+: squared (s = d^2, the released code "
        "behind the published numbers) or plain (s = d, the paper's Eq. 7).",
        "Method and losses",
    )
    train_lsoftmax_weights: bool = option(
        False,
        "Also optimise the L-Softmax class-weight matrix of L_cat (the released code leaves it at its random "
        "initialisation).",
        "Method and losses", flags=("--train-lsoftmax-weights",),
    )  # fmt: skip
    # --- Model
    backbone: str | None = option(
        None, f"Backbone (--help-methods lists them), or timm:<model>. {recipe_default('backbone')}", "Model",
        show_default=False,
    )  # fmt: skip
    pretrained: bool = option(True, "Start from ImageNet weights (or random init).", "Model", flags=("--pretrained/--no-pretrained",))
    cat_dim: int | None = option(None, "Category-space dimension (overrides --embed-dim).", "Model", bounds=(1, None))
    obj_dim: int | None = option(
        None, "Object-space dimension (overrides --embed-dim; the single space uses it).", "Model", bounds=(1, None)
    )
    freeze_backbone: bool | None = option(
        None,
        "Cache backbone features once and train only the heads (fast on CPU); replaces a recipe's --train-from. "
        "(default: the recipe's, else off)",
        "Model", flags=("--freeze-backbone",), show_default=False,
    )  # fmt: skip
    train_from: str | None = option(
        None,
        "Train the backbone from this stage on, with the heads, from cached activations below it (partial fine-tuning, "
        f"practical on a CPU). Stages: {cut_points_help()}. Replaces a recipe's --freeze-backbone. Default: the "
        "recipe's, else full fine-tuning (none with --freeze-backbone).",
        "Model", show_default=False,
    )  # fmt: skip  # backbone stage where training starts (models.registry.cut_points)
    feature_passes: int | None = option(
        None,
        "With --freeze-backbone or --train-from: passes over the data cached (1 clean + K-1 augmented). "
        f"{recipe_default('feature_passes')}",
        "Model", bounds=(1, None), show_default=False,
    )  # fmt: skip
    tta: bool | None = option(
        None,
        "Evaluate and embed this run with test-time flips by default (each view averaged with its mirror image; `piro "
        "evaluate --tta/--no-tta` overrides it). The validation numbers of metrics.csv are always without. "
        f"{recipe_default('tta')}",
        "Model", flags=("--tta/--no-tta",), show_default=False,
    )  # fmt: skip
    tta_scales: tuple[float, ...] | None = option(
        None,
        "Evaluate and embed this run by default as the mean over each view resized by these factors (1 = as stored; "
        "e.g. 1,1.15: the stored view and one 15% larger), with the flips if on; `piro evaluate --tta-scales` "
        f"overrides it. The validation numbers of metrics.csv are always at 1. {recipe_default('tta_scales')}",
        "Model", metavar="F[,F...]", show_default=False, cli_type=str,
    )  # fmt: skip
    dropout: float = option(0.25, "Dropout on the attention layers' output (released: 0.25).", "Model")
    object_features: str = option(
        "shared",
        "What the object head reads: shared (the backbone both heads train, as released) or frozen (two paths: a "
        "frozen copy of the layers from the --train-from stage up as they start (ImageNet's; random with "
        "--no-pretrained), which the category loss cannot bend towards categories; piro-dual with --train-from).",
        "Model",
        label="obj-features={}",
    )
    # --- Optimisation
    lr: float | None = option(None, f"Adam learning rate (released: 1e-5; FG3D 5e-5). {recipe_default('lr')}", "Optimisation")
    ema_decay: float = option(
        0.0,
        "Validate, save and embed with an exponential moving average of the trained weights, updated after every step "
        "with this decay (e.g. 0.998: about the last 500 steps). 0: off (as released).",
        "Optimisation", label="ema={:g}",
    )  # fmt: skip
    lr_step: int | None = option(
        None,
        "Halve the learning rate every this many epochs (released PiRO: epochs / 5); 0 keeps it constant (the PIEs "
        f"code). {recipe_default('lr_step')}",
        "Optimisation", bounds=(0, None),
    )  # fmt: skip
    epochs: int | None = option(
        None, f"Epochs to train; with --resume, extend the run to this many. {recipe_default('epochs')}", "Optimisation",
        bounds=(1, None),
    )  # fmt: skip
    batch_pairs: int | None = option(
        None, f"Pairs per batch (released: 4 ObjectPI, 3 ModelNet-40, 9 FG3D). {recipe_default('batch_pairs')}",
        "Optimisation", bounds=(1, None),
    )  # fmt: skip
    batch_objects: int | None = option(
        None, "PIEs baselines: whole objects per shuffled batch [default: as released, 4 pi-cnn and pi-proxy, 8 the others].",
        "Optimisation", bounds=(1, None),
    )  # fmt: skip
    pairs_per_object: int | None = option(
        None,
        "Pairs each training object starts per epoch, each partner drawn (with replacement) from the other objects of "
        f"its category (released: 10, FG3D 3). {recipe_default('pairs_per_object')}",
        "Optimisation", bounds=(1, None),
    )  # fmt: skip
    seed: int = option(0, "Random seed; CPU runs with the same seed are reproducible.", "Optimisation", bounds=(0, SEED_MAX))
    precision: str | None = option(
        None,
        "Arithmetic of training and, by default, of evaluating this run: auto (mixed bf16/fp16 on a GPU, fp32 on a "
        "CPU), fp32 (float32 without TF32: the released code's), bf16 or fp16. "
        f"{recipe_default('precision')}",
        "Optimisation", show_default=False,
    )  # fmt: skip
    early_stop_rho: float | None = option(
        None,
        "Stop early, as the released code does: rho = d_inter_min / d_intra_max of the training objects is computed "
        "before each epoch, and when it exceeds this value training stops after that epoch (so one more epoch runs "
        f"after rho crosses it); 0 disables. {recipe_default('early_stop_rho')}",
        "Optimisation",
    )  # fmt: skip  # 0 disables; piro_cli/convergence.py has the rule
    # --- Run
    device: str | None = option(None, "cpu, cuda or cuda:N (default: cuda when available).", "Run")
    name: str | None = option(None, "Run folder name under --project (default exp, exp2, ...).", "Run")
    project: str = option("runs", "Folder holding the run folders.", "Run", cli_type=Path, cli_default=Path("runs"))
    loggers: tuple[str, ...] = ()  # mirrors of metrics.csv (piro_cli/training/loggers.py): "tensorboard"; --logger

    def __post_init__(self) -> None:
        check_option_bounds(self)
        if isinstance(self.losses, str):  # the command line's and config files' "cat,piobj"
            try:
                self.losses = parse_loss_terms(self.losses)
            except ValueError as exc:
                raise OptionError("{losses}: {why}", why=exc) from None
        for name in ("separation", "cat_loss", "language_labels"):  # names as typed: " Plain " is plain
            if isinstance(getattr(self, name), str):
                setattr(self, name, getattr(self, name).strip().lower())
        if isinstance(self.data, Path) or isinstance(self.project, Path):  # the command line's paths
            self.data = None if self.data is None else str(self.data)
            self.project = str(self.project)
        if self.recipe is not None:
            self.recipe = get_recipe(self.recipe).name
        if (self.folds is None) != (self.fold is None):
            raise OptionError("{fold} k and {folds} K go together (`piro train --folds K` alone trains every fold)")
        if self.folds is not None:
            if self.val_fraction:
                raise OptionError("{folds}: the validation objects are a fold; leave {val_fraction} out")
            if self.folds < 2 or not 1 <= self.fold <= self.folds:
                raise OptionError("{folds} {k} {fold} {k_th}: give K >= 2 folds and a fold from 1 to K", k=self.folds, k_th=self.fold)
        try:
            self.obj_loss = parse_object_loss(self.obj_loss)
        except ValueError as exc:
            raise OptionError("{obj_loss}: {why}", why=exc) from None
        spec = resolve_method(self.method, self.dual, self.obj_loss, self.dvml)
        for name, used in (
            ("direction_reg", self.direction_reg), ("cat_loss", self.cat_loss != "lsoftmax"), ("distance_margin", self.distance_margin)
        ):  # fmt: skip
            if used and spec.family != "piro":
                raise OptionError.of(name, ": shapes the losses of piro-dual / piro-single; {method} has its own loss", method=spec.name)
        self.method, self.dual = spec.name, spec.dual
        if self.losses is None:
            self.losses = spec.default_losses
        resolve_method_options(spec, self)
        if self.train_from is not None:
            if self.freeze_backbone:
                raise OptionError("{train_from} trains part of the backbone and {freeze_backbone} none of it: pass one of them")
            if self.backbone is not None and self.train_from not in cut_points(self.backbone):  # None: checked resolved
                where = ", ".join(cut_points(self.backbone)) or "nowhere (use {freeze_backbone} or full fine-tuning)"
                raise OptionError(
                    "{train_from} {stage}: {backbone} {name} can start training at " + where, stage=self.train_from, name=self.backbone
                )
        self.object_features = self.object_features.strip().lower()
        if self.object_features not in OBJECT_FEATURES:
            raise OptionError("{object_features} {given!r}: choose one of {known}", given=self.object_features, known=", ".join(OBJECT_FEATURES))
        if self.object_features == "frozen" and self.method != "piro-dual":
            raise OptionError("{object_features} frozen: two backbone paths need the two spaces of piro-dual, not {name}", name=self.method)
        if self.feature_passes is not None and self.feature_passes < 1:
            raise OptionError("{feature_passes} {given}: must be at least 1", given=self.feature_passes)
        from piro_cli.data.augment import AUGMENTATIONS  # torchvision: loaded when a run is configured, not at start-up

        if self.augmentation not in AUGMENTATIONS:
            raise OptionError("{augmentation} {given!r}: choose one of {known}", given=self.augmentation, known=", ".join(AUGMENTATIONS))
        if self.tta_scales is not None:  # None: the recipe's
            try:
                self.tta_scales = check_test_scales(self.tta_scales)
            except ValueError as exc:
                raise OptionError("{tta_scales}: {why}", why=exc) from None
        if self.precision is not None:  # None: the recipe's
            self.precision = check_precision(self.precision)
        # the float options outside the losses (integer options are checked by the CLI's min=): nan passes any comparison
        # above 1 an Adam step overflows float32 (a traceback, not a NaN) long before it could train anything
        if not (math.isfinite(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise OptionError("{ema_decay} {given}: give a decay from 0 (off) up to, not including, 1 (e.g. 0.998)", given=self.ema_decay)
        if self.lr is not None and not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise OptionError("{lr} {given}: the learning rate must be a number > 0 and <= 1 (released: 1e-5)", given=self.lr)
        if self.language_guidance and get_method(self.method).family != "piro":
            raise OptionError("{language_guidance}: shapes the spaces of piro-dual / piro-single, not {name}", name=self.method)
        if self.language_labels not in LANGUAGE_LABELS:
            raise OptionError("{language_labels} {given!r}: choose one of {known}", given=self.language_labels, known=", ".join(LANGUAGE_LABELS))
        if not 1 <= self.language_topk <= 1000:
            raise OptionError("{language_topk} {given}: must be between 1 and 1000 (the ImageNet classes)", given=self.language_topk)
        if not (math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise OptionError("{dropout} {given}: must be a number >= 0 and < 1 (released: 0.25)", given=self.dropout)
        self.loggers = tuple(dict.fromkeys(self.loggers))
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise OptionError("{loggers} {given!r}: choose one of {known}", given=unknown[0], known=", ".join(LOGGERS))
        if self.early_stop_rho is not None and not (math.isfinite(self.early_stop_rho) and self.early_stop_rho >= 0):
            raise OptionError("{early_stop_rho} {given}: must be a finite number >= 0 (0 disables the early stop)", given=self.early_stop_rho)
        try:
            # margins, loss terms and DVML options, checked before any work starts (options not given: their built-in value)
            loss_config_of(SimpleNamespace(**{**asdict(self), **self._unset()}))
        except OptionError:
            raise
        except ValueError as exc:
            raise PiroError(str(exc)) from None

    def _unset(self) -> dict:
        """The recipe-settable options not given, with their built-in defaults."""
        return {k: v for k, v in BUILTIN_DEFAULTS.items() if getattr(self, k) is None}

    def given(self) -> dict:
        """The recipe-settable options given explicitly (not None)."""
        return {k: getattr(self, k) for k in BUILTIN_DEFAULTS if getattr(self, k) is not None}

    def resolved(self, source_dataset: str | None, num_views: int, cpu_only: bool = False) -> tuple[TrainConfig, Resolution]:
        """This config with every recipe-settable option set (piro_cli.recipes.resolve), and how they were set;
        `cpu_only`: the machine has no GPU (the `cpu` recipe is the default of PiRO methods there)."""
        family = get_method(self.method).family
        resolution = resolve_recipe(self.recipe, self.given(), source_dataset, num_views, family, cpu_only)
        name = resolution.recipe.name if resolution.recipe is not None else None
        if self.object_features == "frozen" and resolution.values.get("train_from") is None:
            raise OptionError("{object_features} frozen reads frozen layers from the {train_from} stage up: give {train_from} "
                              "(or a recipe that sets it, e.g. objectpi-cpu)")  # fmt: skip
        try:
            return dataclasses.replace(self, recipe=name, **resolution.values), resolution
        except PiroError as exc:
            if resolution.recipe is None or not set(resolution.recipe.values) - set(self.given()):
                raise
            raise extended(exc, after=f" (with options of --recipe {name}: {describe(resolution.recipe.values)})") from None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["losses"] = list(self.losses)
        out["loggers"] = list(self.loggers)
        if self.tta_scales is not None:
            out["tta_scales"] = list(self.tta_scales)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A saved (resolved) config; runs written before an option existed get its value of that time."""
        return cls(**saved_values(values))


RESOLVED_BEFORE_OPTIONS = {"tta_scales": [1.0]}
"""What a run's config.json (every recipe-settable value resolved) meant by leaving out an option it predates: its
run trained (and evaluates) with these, which a recipe must not replace when the run is trained again."""


def saved_values(values: dict) -> dict:
    """The TrainConfig fields of a saved config (config.json "train", a checkpoint's train_config), each option the
    run predates filled in with what it trained with: the option's default, or the value of that time (all three
    loss terms, PRE_OPTION_VALUES, RESOLVED_BEFORE_OPTIONS, the built-in recipe values). The one reading of old
    runs, for --resume and `piro compare`."""
    fields = dataclasses.fields(TrainConfig)
    values = {k: v for k, v in values.items() if k in {f.name for f in fields}}
    losses = values.get("losses", LOSS_TERMS)  # runs from before --losses trained all three terms
    values["losses"] = None if losses is None else tuple(losses)
    values["loggers"] = tuple(values.get("loggers") or ())
    if "val_seed" not in values:  # runs from before --val-seed carved their split with the training seed
        values["val_seed"] = values.get("seed", 0)
    if values.get("method") not in POSE_INVARIANT_LOSSES:  # runs from before the PIEs losses saved 1.0 for every method
        values.pop("pi_alpha", None)
        values.pop("pi_beta", None)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING and f.default is not None}
    for key, value in {**defaults, **BUILTIN_DEFAULTS, **RESOLVED_BEFORE_OPTIONS, **PRE_OPTION_VALUES}.items():
        values.setdefault(key, value)
    return values


def method_label(train: dict[str, Any]) -> str:
    """A run's method as `piro compare` groups it, from its saved train config (config.json "train").

    The method name, then what changes it from the released method: '+<obj-loss>' for a classic object loss,
    '+cat=proxy-gml' for ProxyGML as the category term,
    '+losses=...' for loss terms other than the method's default (a Table 4 ablation),
    '+separation=plain' for the paper's Eq. 7 confuser term, '+lsoftmax-trained' for an optimised L-Softmax weight
    matrix, then each option whose field declares a label (OptionSpec.label) and differs from its default, in the
    order of the fields ('+dvml', '+dr=<gamma>', '+margin=<weight>', '+obj-features=frozen'), then language
    guidance; '+released' for imported released weights; e.g. 'piro-dual', 'piro-single+triplet',
    'piro-dual+contrastive+dvml', 'piro-dual+released'.
    Runs written before `--method` existed have no "method" key: their `dual` flag decides; keys missing from
    older runs read as what those runs trained with (all three terms, PRE_OPTION_VALUES).
    """
    method = train.get("method") or method_for_space(train.get("dual", True))
    if train.get("imported_from"):  # the authors' released weights (`piro import-weights`), never averaged with piro's runs
        return f"{method}+released"
    parts = [method]
    spec = METHODS.get(method, METHODS[DEFAULT_METHOD])
    if spec.family == "piro":
        obj_loss = train.get("obj_loss") or DEFAULT_OBJ_LOSS
        if obj_loss != DEFAULT_OBJ_LOSS:
            parts.append(obj_loss)
        gml_defaults = (DEFAULT_PROXIES, DEFAULT_NEIGHBOURHOOD, DEFAULT_REGULARISATION)
        gml = (train.get("gml_proxies", gml_defaults[0]), train.get("gml_neighbourhood", gml_defaults[1]), train.get("gml_reg", gml_defaults[2]))
        cat_loss = train.get("cat_loss", "lsoftmax")
        if cat_loss != "lsoftmax":
            parts.append(f"cat={cat_loss}")
        if "proxy-gml" in (obj_loss, cat_loss) and gml != gml_defaults:
            parts.append("gml={}/{}/{}".format(*gml))
        terms = [t for t in LOSS_TERMS if t in (train.get("losses") or LOSS_TERMS)]
        if terms != list(spec.default_losses):
            parts.append("losses=" + ",".join(terms))
        separation = train.get("separation", PRE_OPTION_VALUES["separation"])
        if obj_loss == DEFAULT_OBJ_LOSS and "piobj" in terms and separation != DEFAULT_SEPARATION:
            parts.append(f"separation={separation}")
        lsoftmax = "cat" in terms and cat_loss == "lsoftmax"
        if lsoftmax and train.get("train_lsoftmax_weights", PRE_OPTION_VALUES["train_lsoftmax_weights"]):
            parts.append("lsoftmax-trained")
    for f in dataclasses.fields(TrainConfig):  # the options that name themselves in labels (OptionSpec.label)
        shown = option_spec(f)
        value = train.get(f.name, f.default)
        if shown is not None and shown.label and value != f.default:
            parts.append(shown.label if isinstance(value, bool) else shown.label.format(value))
    if train.get("language_guidance"):
        weight, space = train.get("language_weight", DEFAULT_WEIGHT), train.get("language_space", "object")
        labels, topk = train.get("language_labels", "names"), train.get("language_topk", DEFAULT_TOPK)
        pseudo = f"-imagenet{topk if topk != DEFAULT_TOPK else ''}" if labels == "imagenet" else ""
        parts.append("language" + pseudo + (f"={weight}" if weight != DEFAULT_WEIGHT else "") + ("-category" if space == "category" else ""))
    return "+".join(parts)
