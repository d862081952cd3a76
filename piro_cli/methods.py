"""The training methods `piro train --method NAME` knows, in one registry (like the backbone registry).

- piro-dual / piro-single: PAN with attention aggregation and the PiRO losses (METHOD.md sections 2-3);
  the object-space term is L_piobj or, with `--obj-loss`, a classic metric-learning loss; `--dvml` adds DVML.
- the PIEs baselines of Ho et al. (METHOD.md section 8): one embedding space, views aggregated by average
  pooling; MV- methods train only the multi-view embedding, PI- methods also the single views plus the
  pose-invariant pull d_pi. CNN = softmax classifier, Proxy = one proxy per category (ProxyNCA), TC =
  triplet-center loss.

Every method builds the same `PAN` class (so checkpoints, `piro embed` and `piro evaluate` are shared) and a
loss module called as `criterion(out_a, out_b, labels, object_ids=..., feats=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from piro_cli.errors import PiroError
from piro_cli.losses import LOSS_TERMS, LossConfig, PIEsLoss, PiroLoss

DEFAULT_METHOD = "piro-dual"
DEFAULT_OBJ_LOSS = "piro"
DEFAULT_SEPARATION = LossConfig.separation  # the released squared distance
# What runs written before an option existed trained with, for config.json "train" without its key: the plain
# distance in the confuser separation and an optimised L-Softmax weight matrix. Resumes and labels keep it.
PRE_OPTION_VALUES = {"separation": "plain", "train_lsoftmax_weights": True}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: str  # "piro" or "pies"
    dual: bool  # two embedding spaces (category + object) or one
    aggregation: str  # "attention" (PAN) or "mean" (average pooling of view features)
    pies_loss: str | None = None  # "cnn", "proxy" or "tc" for the PIEs baselines
    pose_invariant: bool = False  # PI- (single views + d_pi) rather than MV- (multi-view embedding only)
    summary: str = ""
    default_losses: tuple[str, ...] = LOSS_TERMS  # PiRO loss terms without --losses (the released training script's)


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
        MethodSpec("mv-cnn", "pies", False, "mean", "cnn", False, "softmax classifier on the multi-view embedding"),
        MethodSpec("pi-cnn", "pies", False, "mean", "cnn", True, "softmax on views and view set + pose-invariant pull"),
        MethodSpec("mv-proxy", "pies", False, "mean", "proxy", False, "ProxyNCA on the multi-view embedding"),
        MethodSpec("pi-proxy", "pies", False, "mean", "proxy", True, "ProxyNCA on views and view set + pose-invariant pull"),
        MethodSpec("mv-tc", "pies", False, "mean", "tc", False, "triplet-center loss on the multi-view embedding"),
        MethodSpec("pi-tc", "pies", False, "mean", "tc", True, "triplet-center on views and view set + pose-invariant pull"),
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


def method_label(train: dict[str, Any]) -> str:
    """A run's method as `piro compare` groups it, from its saved train config (config.json "train").

    The method name, then what changes it from the released method: '+<obj-loss>' for a classic object loss,
    '+dvml', '+losses=...' for loss terms other than the method's default (a Table 4 ablation),
    '+separation=plain' for the paper's Eq. 7 confuser term and '+lsoftmax-trained' for an optimised L-Softmax
    weight matrix, '+released' for imported released weights; e.g. 'piro-dual', 'piro-single+triplet',
    'piro-dual+contrastive+dvml', 'piro-dual+released'.
    Runs written before `--method` existed have no "method" key: their `dual` flag decides; keys missing from
    older runs read as what those runs trained with (all three terms, PRE_OPTION_VALUES).
    """
    method = train.get("method") or method_for_space(train.get("dual", True))
    parts = [method]
    spec = METHODS.get(method, METHODS[DEFAULT_METHOD])
    if spec.family == "piro":
        obj_loss = train.get("obj_loss") or DEFAULT_OBJ_LOSS
        if obj_loss != DEFAULT_OBJ_LOSS:
            parts.append(obj_loss)
        terms = [t for t in LOSS_TERMS if t in (train.get("losses") or LOSS_TERMS)]
        if terms != list(spec.default_losses):
            parts.append("losses=" + ",".join(terms))
        separation = train.get("separation", PRE_OPTION_VALUES["separation"])
        if obj_loss == DEFAULT_OBJ_LOSS and "piobj" in terms and separation != DEFAULT_SEPARATION:
            parts.append(f"separation={separation}")
        if "cat" in terms and train.get("train_lsoftmax_weights", PRE_OPTION_VALUES["train_lsoftmax_weights"]):
            parts.append("lsoftmax-trained")
    if train.get("dvml"):
        parts.append("dvml")
    if train.get("imported_from"):  # the authors' released weights (`piro import-weights`), never averaged with piro's runs
        parts.append("released")
    return "+".join(parts)


def build_criterion(config: Any, num_classes: int, num_objects: int, feat_dim: int) -> PiroLoss | PIEsLoss:
    """The loss module of a TrainConfig's method: PiroLoss for piro-*, PIEsLoss for the baselines.

    `num_objects` sizes per-object proxies (object ids are rows of the training split); `feat_dim` is the
    backbone's feature size (DVML reconstructs features).
    """
    spec = get_method(config.method)
    if spec.family == "pies":
        return PIEsLoss(
            spec.pies_loss, spec.pose_invariant, num_classes, config.obj_dim, alpha=config.pi_alpha, beta=config.pi_beta
        )
    loss_config = loss_config_of(config)
    cat_dim = config.cat_dim if spec.dual else config.obj_dim
    return PiroLoss(loss_config, num_classes, cat_dim=cat_dim, obj_dim=config.obj_dim, num_objects=num_objects, feat_dim=feat_dim)


def loss_config_of(config: Any) -> LossConfig:
    """The LossConfig of a TrainConfig (what a PiRO run's losses are; recorded in config.json for every run)."""
    return LossConfig(
        alpha=config.alpha, beta=config.beta, theta=config.theta, gamma=config.gamma, lam=config.lam, terms=tuple(config.losses),
        train_lsoftmax_weights=config.train_lsoftmax_weights, separation=config.separation, obj_loss=config.obj_loss,
        dvml=config.dvml, dvml_kl=config.dvml_kl, dvml_rec=config.dvml_rec, dvml_syn=config.dvml_syn,
    )  # fmt: skip


def resolve_method(method: str | None, dual: bool, obj_loss: str, dvml: bool) -> MethodSpec:
    """The method a TrainConfig names, checked against the options that only PiRO methods take.

    `method=None` (configs written before `--method`) means piro-dual or piro-single by `dual`.
    """
    spec = get_method(method or method_for_space(dual))
    if spec.family == "pies" and (obj_loss or DEFAULT_OBJ_LOSS) != DEFAULT_OBJ_LOSS:
        raise PiroError(
            f"--obj-loss {obj_loss}: the object-space loss is part of piro-dual / piro-single; {spec.name} has its own loss"
        )
    if spec.family == "pies" and dvml:
        raise PiroError(f"--dvml: DVML works on the object space of piro-dual / piro-single, not on {spec.name}")
    return spec
