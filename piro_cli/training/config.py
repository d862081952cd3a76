"""Every `piro train` option, in one dataclass: checked when built, resolved against a recipe, saved in each run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace

from piro_cli.errors import PiroError
from piro_cli.hardware import check_precision
from piro_cli.losses.registry import (
    DEFAULT_NEIGHBOURHOOD,
    DEFAULT_PROXIES,
    DEFAULT_REGULARISATION,
    DEFAULT_TOPK,
    DEFAULT_WEIGHT,
    LOSS_TERMS,
    POSE_INVARIANT_LOSSES,
    parse_object_loss,
)  # fmt: skip
from piro_cli.losses.registry import LABELS as LANGUAGE_LABELS
from piro_cli.methods import PRE_OPTION_VALUES, get_method, loss_config_of, resolve_method, resolve_method_options
from piro_cli.models.registry import cut_points
from piro_cli.options import check_integer_options, check_test_scales
from piro_cli.recipes import BUILTIN_DEFAULTS, Resolution, describe, get_recipe
from piro_cli.recipes import resolve as resolve_recipe

LOGGERS = ("tensorboard",)  # piro_cli/training/loggers.py


@dataclass
class TrainConfig:
    """Every `piro train` option.

    The options a recipe may set (piro_cli.recipes.BUILTIN_DEFAULTS) default to None here: "not given",
    resolved by `train` from `recipe` (or the data source's recipe), else the built-in default, while a
    value given explicitly is kept. A resolved config (config.json, checkpoints) has them all set; `views`
    None then means all the views.
    """

    data: str | None = None  # HDF5 file; None: the most recently written ./data/*.h5
    project: str = "runs"
    name: str | None = None  # run folder name; default exp, exp2, ...
    recipe: str | None = None  # piro_cli/recipes.py; None: the data source's recipe, if it has one
    # model
    method: str | None = None  # piro_cli/methods.py; None: piro-dual, or piro-single with dual=False
    backbone: str | None = None  # None: the recipe's, else efficientnet_lite0
    pretrained: bool = True
    dual: bool = True  # set from the method
    cat_dim: int | None = None
    obj_dim: int | None = None
    # losses
    losses: tuple[str, ...] | None = None  # None: the method's released terms (piro-single: cat, piobj; else all three)
    alpha: float | None = None
    beta: float | None = None
    theta: float | None = None
    gamma: float | None = None
    lam: float | None = None
    separation: str = "squared"  # L_piobj's confuser term: [beta - d^2]+ as released, or "plain" [beta - d]+ (Eq. 7)
    train_lsoftmax_weights: bool = False  # the released optimiser leaves the L-Softmax class weights at their init
    obj_loss: str = "piro"  # the object term of piro-* methods: L_piobj or a metric-learning loss
    dvml: bool = False
    dvml_kl: float = 0.1
    dvml_rec: float = 0.1
    dvml_syn: float = 0.5
    gml_proxies: int = DEFAULT_PROXIES  # proxy-gml: proxies per object or category, the sub-graph's r, the regulariser's lambda
    gml_neighbourhood: float = DEFAULT_NEIGHBOURHOOD
    gml_reg: float = DEFAULT_REGULARISATION
    language_guidance: bool = False  # distil the category names' language similarities (losses/language.py)
    language_weight: float = DEFAULT_WEIGHT
    language_space: str = "object"
    language_labels: str = "names"  # "names": the category names; "imagenet": an ImageNet classifier's top-k pseudo-labels
    language_topk: int = DEFAULT_TOPK  # pseudo-labels per category (the released 5)
    direction_reg: float = 0.0  # gamma of the direction regulariser on the object term (losses/direction.py); 0: off
    distance_margin: float = 0.0  # weight of the absolute-distance term in the object space (losses/margin.py); 0: off
    cat_loss: str = "lsoftmax"  # the category term of piro-* methods: PiRO's L-Softmax or ProxyGML (losses/total.py)
    pi_alpha: float | None = None  # PI- baselines: weight a of d2(view, view set); None: the released value
    pi_beta: float | None = None  # PI- baselines: weight b of d2(view set, category centre); None: the released value
    # optimisation
    lr: float | None = None
    lr_step: int | None = None  # halve the learning rate every lr_step epochs
    epochs: int | None = None
    batch_pairs: int | None = None
    batch_objects: int | None = None  # PIEs baselines: objects per batch; None: the method's released default
    pairs_per_object: int | None = None
    views: int | None = None  # views per object in a training pair; None: the recipe's, else all
    augment: bool | None = None
    augmentation: str | None = None  # "piro" or "pies" (piro_cli/data/augment.py); None: the method's own
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    freeze_backbone: bool | None = None
    train_from: str | None = None  # backbone stage where training starts (models.backbones.cut_points); None: all/none
    feature_passes: int | None = None
    tta: bool | None = None  # the run's default for evaluate/embed: each view averaged with its mirror (test-time flips)
    tta_scales: tuple[float, ...] | None = None  # the run's default for evaluate/embed: each view averaged over resizings
    precision: str | None = None  # piro_cli.hardware.PRECISIONS; None: the recipe's (fp32 released, else auto)
    val_fraction: float | None = None
    val_seed: int = 0  # seed of the carved validation split: fixed, so runs with other --seed see the same objects
    folds: int | None = None  # K of a K-fold split of the train objects (with `fold`): object-level cross-validation
    fold: int | None = None  # which of the K folds is this run's validation objects (1 to K)
    early_stop_rho: float | None = None  # 0 disables; piro_cli/convergence.py has the rule
    dropout: float = 0.25  # of the attention layers' output (released: 0.25)
    loggers: tuple[str, ...] = ()  # mirrors of metrics.csv (piro_cli/training/loggers.py): "tensorboard"

    def __post_init__(self) -> None:
        check_integer_options({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.recipe is not None:
            self.recipe = get_recipe(self.recipe).name
        if (self.folds is None) != (self.fold is None):
            raise PiroError("--fold k and --folds K go together (`piro train --folds K` alone trains every fold)")
        if self.folds is not None:
            if self.val_fraction:
                raise PiroError("--folds: the validation objects are a fold; leave --val-fraction out")
            if self.folds < 2 or not 1 <= self.fold <= self.folds:
                raise PiroError(f"--folds {self.folds} --fold {self.fold}: give K >= 2 folds and a fold from 1 to K")
        try:
            self.obj_loss = parse_object_loss(self.obj_loss)
        except ValueError as exc:
            raise PiroError(f"--obj-loss: {exc}") from None
        spec = resolve_method(self.method, self.dual, self.obj_loss, self.dvml)
        for flag, used in (
            ("--direction-reg", self.direction_reg), ("--cat-loss", self.cat_loss != "lsoftmax"), ("--distance-margin", self.distance_margin)
        ):  # fmt: skip
            if used and spec.family != "piro":
                raise PiroError(f"{flag}: shapes the losses of piro-dual / piro-single; {spec.name} has its own loss")
        self.method, self.dual = spec.name, spec.dual
        if self.losses is None:
            self.losses = spec.default_losses
        resolve_method_options(spec, self)
        if self.train_from is not None:
            if self.freeze_backbone:
                raise PiroError("--train-from trains part of the backbone and --freeze-backbone none of it: pass one of them")
            if self.backbone is not None and self.train_from not in cut_points(self.backbone):  # None: checked resolved
                where = ", ".join(cut_points(self.backbone)) or "nowhere (use --freeze-backbone or full fine-tuning)"
                raise PiroError(f"--train-from {self.train_from}: backbone {self.backbone} can start training at {where}")
        if self.feature_passes is not None and self.feature_passes < 1:
            raise PiroError(f"--feature-passes {self.feature_passes}: must be at least 1")
        from piro_cli.data.augment import AUGMENTATIONS  # torchvision: loaded when a run is configured, not at start-up

        if self.augmentation not in AUGMENTATIONS:
            raise PiroError(f"--augmentation {self.augmentation!r}: choose one of {', '.join(AUGMENTATIONS)}")
        if self.tta_scales is not None:  # None: the recipe's
            try:
                self.tta_scales = check_test_scales(self.tta_scales)
            except ValueError as exc:
                raise PiroError(f"--tta-scales: {exc}") from None
        if self.precision is not None:  # None: the recipe's
            self.precision = check_precision(self.precision)
        # the float options outside the losses (integer options are checked by the CLI's min=): nan passes any comparison
        # above 1 an Adam step overflows float32 (a traceback, not a NaN) long before it could train anything
        if self.lr is not None and not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise PiroError(f"--lr {self.lr}: the learning rate must be a number > 0 and <= 1 (released: 1e-5)")
        if self.language_guidance and get_method(self.method).family != "piro":
            raise PiroError(f"--language-guidance: shapes the spaces of piro-dual / piro-single, not {self.method}")
        if self.language_labels not in LANGUAGE_LABELS:
            raise PiroError(f"--language-labels {self.language_labels!r}: choose one of {', '.join(LANGUAGE_LABELS)}")
        if not 1 <= self.language_topk <= 1000:
            raise PiroError(f"--language-topk {self.language_topk}: must be between 1 and 1000 (the ImageNet classes)")
        if not (math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise PiroError(f"--dropout {self.dropout}: must be a number >= 0 and < 1 (released: 0.25)")
        self.loggers = tuple(dict.fromkeys(self.loggers))
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise PiroError(f"--logger {unknown[0]!r}: choose one of {', '.join(LOGGERS)}")
        if self.early_stop_rho is not None and not (math.isfinite(self.early_stop_rho) and self.early_stop_rho >= 0):
            raise PiroError(f"--early-stop-rho {self.early_stop_rho}: must be a finite number >= 0 (0 disables the early stop)")
        try:
            # margins, loss terms and DVML options, checked before any work starts (options not given: their built-in value)
            loss_config_of(SimpleNamespace(**{**asdict(self), **self._unset()}))
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
        try:
            return dataclasses.replace(self, recipe=name, **resolution.values), resolution
        except PiroError as exc:
            if resolution.recipe is None or not set(resolution.recipe.values) - set(self.given()):
                raise
            raise PiroError(f"{exc} (with options of --recipe {name}: {describe(resolution.recipe.values)})") from None

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
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        losses = values.get("losses", LOSS_TERMS)  # runs from before --losses trained all three terms
        values["losses"] = None if losses is None else tuple(losses)
        values["loggers"] = tuple(values.get("loggers") or ())
        for key, value in PRE_OPTION_VALUES.items():  # what runs from before these options trained with
            values.setdefault(key, value)
        if "val_seed" not in values:  # runs from before --val-seed carved their split with the training seed
            values["val_seed"] = values.get("seed", 0)
        if values.get("method") not in POSE_INVARIANT_LOSSES:  # runs from before the PIEs losses saved 1.0 for every method
            values.pop("pi_alpha", None)
            values.pop("pi_beta", None)
        for key, value in BUILTIN_DEFAULTS.items():
            values.setdefault(key, value)
        return cls(**values)
