"""The training methods `piro train --method NAME` knows, in one registry (like the backbone registry).

- piro-dual / piro-single: PAN with attention aggregation and the PiRO losses (METHOD.md sections 2-3);
  the object-space term is L_piobj or, with `--obj-loss`, a classic metric-learning loss; `--dvml` adds DVML.
- backbone: no training at all, the frozen backbone's pooled features serve as both spaces (mean over views for a
  view set): the baseline that says whether training helped;
- the PIEs baselines of Ho et al. (METHOD.md section 8, piro_cli/losses/pies.py): one embedding space, views
  aggregated by average pooling, trained on shuffled batches of whole objects with the released losses; with
  `--backbone vgg16` the embedding is VGG-16's fc7 feature (PAN head `vgg16_fc7`), else a linear layer.

Every method builds the same `PAN` class (so checkpoints, `piro embed` and `piro evaluate` are shared). A PiRO
loss module is called on pairs as `criterion(out_a, out_b, labels, object_ids=..., feats=...)`; a PIEs loss on
one batch of objects as `criterion(views, view_set, labels, pooled=...)`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from piro_cli.errors import OptionError, PiroError
from piro_cli.losses.registry import (
    LOSS_TERMS,
    POSE_INVARIANT_LOSSES,
    SEPARATIONS,
)  # fmt: skip

if TYPE_CHECKING:  # the loss modules need torch: loaded where used, so that the command line starts fast
    import torch

    from piro_cli.losses.total import LossConfig

DEFAULT_METHOD = "piro-dual"
DEFAULT_OBJ_LOSS = "piro"
DEFAULT_SEPARATION = SEPARATIONS[0]  # the released squared distance
# What runs written before an option existed trained with, for config.json "train" without its key: the plain
# distance in the confuser separation and an optimised L-Softmax weight matrix. Resumes and labels keep it.
PRE_OPTION_VALUES = {"separation": "plain", "train_lsoftmax_weights": True}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: str  # "piro", "pies" or "untrained"
    dual: bool  # two embedding spaces (category + object) or one
    aggregation: str  # "attention" (PAN) or "mean" (average pooling of view features)
    summary: str = ""
    default_losses: tuple[str, ...] = LOSS_TERMS  # PiRO loss terms without --losses (the released training script's)
    objects_per_batch: int | None = None  # PIEs baselines: the released net.py's default batch size (objects)


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("piro-dual", "piro", True, "attention", summary="PiRO: PAN with a category and an object space"),
        # trainPiRO_Single.py sums L_cat + L_piobj only: the paper's Table 1 single rows are that model.
        MethodSpec(
            "piro-single",
            "piro",
            False,
            "attention",
            summary="PiRO-SE: PAN with one space for both",
            default_losses=("cat", "piobj"),
        ),
        MethodSpec("backbone", "untrained", False, "mean", "no training: the frozen backbone's features as both spaces"),
        MethodSpec("mv-cnn", "pies", False, "mean", "PIEs: softmax classifier on the pooled views", objects_per_batch=8),
        MethodSpec(
            "pi-cnn",
            "pies",
            False,
            "mean",
            "PIEs: each view against the batch's view sets and category centres",
            objects_per_batch=4,
        ),
        MethodSpec("mv-proxy", "pies", False, "mean", "PIEs: ProxyNCA of the view set and category centres", objects_per_batch=8),
        MethodSpec(
            "pi-proxy", "pies", False, "mean", "PIEs: pi-cnn without the true category in the denominator", objects_per_batch=4
        ),
        MethodSpec("mv-tc", "pies", False, "mean", "PIEs: triplet-center loss on the view set", objects_per_batch=8),
        MethodSpec("pi-tc", "pies", False, "mean", "PIEs: triplet-center on views, view sets and centres", objects_per_batch=8),
    )
}


def method_for_space(dual: bool) -> str:
    """The PiRO method a bare `--dual` / `--single` (or a config from before `--method`) means."""
    return "piro-dual" if dual else "piro-single"


def get_method(name: str) -> MethodSpec:
    """The spec of a method name; a PiroError naming the valid ones otherwise."""
    key = name.strip().lower()
    if key not in METHODS:
        raise PiroError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[key]


def build_criterion(
    config: Any, num_classes: int, num_objects: int, feat_dim: int, language_labels: list[list[str]] | None = None
) -> torch.nn.Module:
    """The loss module of a TrainConfig's method: PiroLoss for piro-*, the method's PIES_LOSSES class for the baselines.

    `num_objects` sizes per-object proxies (object ids are rows of the training split); `feat_dim` is the
    backbone's feature size (DVML reconstructs features); `language_labels` are each category's labels for
    language guidance (its name, or its ImageNet pseudo-labels).
    """
    import torch

    from piro_cli.losses.language import name_embeddings
    from piro_cli.losses.pies import PIES_LOSSES
    from piro_cli.losses.total import PiroLoss

    spec = get_method(config.method)
    if spec.family == "untrained":
        return torch.nn.Module()  # nothing is optimised
    if spec.family == "pies":
        weights = {"a": config.pi_alpha, "b": config.pi_beta} if spec.name in POSE_INVARIANT_LOSSES else {}
        return PIES_LOSSES[spec.name](num_classes, config.obj_dim, **weights)
    loss_config = loss_config_of(config)
    cat_dim = config.cat_dim if spec.dual else config.obj_dim
    names = None
    if loss_config.language_weight > 0:
        if not language_labels:
            raise OptionError("{language_guidance} needs the category names of the data")
        try:
            names = name_embeddings(language_labels)
        except ImportError as exc:
            raise OptionError("{language_guidance}: {why}", why=exc) from None
    return PiroLoss(
        loss_config, num_classes, cat_dim=cat_dim, obj_dim=config.obj_dim, num_objects=num_objects, feat_dim=feat_dim,
        category_names=names,
    )  # fmt: skip


def loss_config_of(config: Any) -> LossConfig:
    """The LossConfig of a TrainConfig (what a PiRO run's losses are; recorded in config.json for every run)."""
    from dataclasses import fields

    from piro_cli.losses.total import LossConfig

    # every LossConfig field is the TrainConfig field of its name, but for these two (mine_hard: not an option)
    derived = {"terms": tuple(config.losses), "language_weight": config.language_weight if config.language_guidance else 0.0}
    settings = {f.name: derived[f.name] if f.name in derived else getattr(config, f.name) for f in fields(LossConfig) if f.name != "mine_hard"}
    return LossConfig(**settings)


def resolve_method(method: str | None, dual: bool, obj_loss: str, dvml: bool) -> MethodSpec:
    """The method a TrainConfig names, checked against the options that only PiRO methods take.

    `method=None` (configs written before `--method`) means piro-dual or piro-single by `dual`.
    """
    spec = get_method(method or method_for_space(dual))
    if spec.family != "piro" and (obj_loss or DEFAULT_OBJ_LOSS) != DEFAULT_OBJ_LOSS:
        raise OptionError(
            "{obj_loss} {given}: the object-space loss is part of piro-dual / piro-single; {name} has its own loss",
            given=obj_loss, name=spec.name,
        )
    if spec.family != "piro" and dvml:
        raise OptionError("{dvml}: DVML works on the object space of piro-dual / piro-single, not on {name}", name=spec.name)
    return spec


def embedding_head(spec: MethodSpec, backbone: str) -> str:
    """The PAN head of a method on a backbone: none (identity) for the untrained baseline, VGG-16's fc7 for the PIEs
    baselines on vgg16 (as released), else linear."""
    if spec.family == "untrained":
        return "identity"
    return "vgg16_fc7" if spec.family == "pies" and backbone == "vgg16" else "linear"


def resolve_method_options(spec: MethodSpec, config: Any) -> None:
    """Fill a TrainConfig's method-dependent options left None with the method's values (the released ones for the
    PIEs baselines), so config.json records them; refuse those the method has no use for."""
    if spec.name not in POSE_INVARIANT_LOSSES:
        for name, value in (("pi_alpha", config.pi_alpha), ("pi_beta", config.pi_beta)):
            if value is not None:
                known = ", ".join(POSE_INVARIANT_LOSSES)
                raise OptionError.of(name, ": only {known} weigh their distances; not {name}", known=known, name=spec.name)
    else:
        from piro_cli.losses.pies import PIES_LOSSES

        weights = inspect.signature(PIES_LOSSES[spec.name]).parameters  # the released a and b are the defaults
        config.pi_alpha = weights["a"].default if config.pi_alpha is None else config.pi_alpha
        config.pi_beta = weights["b"].default if config.pi_beta is None else config.pi_beta
        if not all(math.isfinite(w) and w >= 0 for w in (config.pi_alpha, config.pi_beta)):  # a nan passes `w < 0`
            raise OptionError("{pi_alpha} {a}, {pi_beta} {b}: the weights must be finite numbers >= 0", a=config.pi_alpha, b=config.pi_beta)
    if spec.family == "untrained":
        if config.batch_objects is not None:
            raise OptionError("{batch_objects}: the backbone baseline does not train")
        config.augmentation = config.augmentation or "piro"
        return
    if spec.family != "pies":
        if config.batch_objects is not None:
            raise OptionError(
                "{batch_objects}: {name} trains on pairs ({batch_pairs}); objects per batch are for the PIEs baselines", name=spec.name
            )
        config.augmentation = config.augmentation or "piro"
        return
    if config.batch_objects is None:
        config.batch_objects = spec.objects_per_batch
    if config.batch_objects < 1:
        raise OptionError("{batch_objects} {given}: must be at least 1", given=config.batch_objects)
    config.augmentation = config.augmentation or "pies"
    if config.backbone is not None and embedding_head(spec, config.backbone) == "vgg16_fc7":  # None: not yet resolved
        from piro_cli.models.backbones import VGG16_FC7_DIM

        config.obj_dim = VGG16_FC7_DIM  # the fc7 feature is the embedding: no linear layer to another size
