"""The total PiRO loss L = mean over pairs of L_cat^a + L_cat^b + L_picat + L_piobj (METHOD.md section 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from piro_cli.errors import OptionError

from .category import CategoryLSoftmaxLoss, PoseInvariantCategoryLoss
from .dvml import VariationalBranch
from .language import LanguageGuidance
from .margin import DistanceMarginLoss
from .metric import ObjectMetricLoss
from .object import PoseInvariantObjectLoss
from .proxy_gml import ProxyGMLLoss
from .registry import (
    CATEGORY_LOSSES,
    DEFAULT_NEIGHBOURHOOD,
    DEFAULT_PROXIES,
    DEFAULT_REGULARISATION,
    DIRECTION_LOSSES,
    LOSS_TERMS,
    SEPARATIONS,
    SPACES,
    canonical_terms,
    parse_object_loss,
)  # fmt: skip


@dataclass
class LossConfig:
    """Loss hyper-parameters; defaults are the paper's (METHOD.md section 3)."""

    alpha: float = 0.25  # object clustering margin
    beta: float = 1.0  # object separation margin
    theta: float = 0.25  # category pose-invariance margin
    gamma: float = 4.0  # L-Softmax margin (a positive integer)
    lam: float = 1.0  # weight of the object separation part (2 for FG3D in the released code)
    terms: tuple[str, ...] = LOSS_TERMS  # subset, for the ablations of paper Table 4 (`--losses cat,piobj,picat`)
    mine_hard: bool = True  # BatchEasyHardMiner(hard, hard) weights the L-Softmax's views, as released
    train_lsoftmax_weights: bool = False  # the released optimiser leaves the L-Softmax class weights at their init
    separation: str = "squared"  # distance in the confuser separation term: released "squared", or Eq. 7's "plain"
    obj_loss: str = "piro"  # the object term: L_piobj ("piro") or a metric-learning loss (losses/metric.py)
    dvml: bool = False  # add the DVML variational branch to the object term (losses/dvml.py)
    dvml_kl: float = 0.1  # weight of DVML's KL term
    dvml_rec: float = 0.1  # weight of DVML's feature reconstruction term
    dvml_syn: float = 0.5  # weight of the object term on DVML's synthetic embeddings
    gml_proxies: int = DEFAULT_PROXIES  # proxy-gml: proxies per object or category (ProxyGML's N; losses/proxy_gml.py)
    gml_neighbourhood: float = DEFAULT_NEIGHBOURHOOD  # ... the fraction r of all proxies in each sample's sub-graph
    gml_reg: float = DEFAULT_REGULARISATION  # ... the weight lambda of the proxy regulariser
    language_weight: float = 0.0  # --language-guidance: weight of the language matching loss (losses/language.py); 0: off
    language_space: str = "object"  # the space it shapes: "object" or "category"
    direction_reg: float = 0.0  # --direction-reg: gamma of the direction regulariser (losses/direction.py); 0: off
    cat_loss: str = "lsoftmax"  # the category term: L-Softmax (PiRO) or ProxyGML with the gml_* settings
    distance_margin: float = 0.0  # --distance-margin: weight of the absolute-distance term (losses/margin.py); 0: off

    def __post_init__(self) -> None:
        # Accepts a comma-separated string too, and normalises to the canonical tuple so configs compare/serialise cleanly.
        self.terms = canonical_terms(self.terms)
        self.obj_loss = parse_object_loss(self.obj_loss)
        if self.dvml and "piobj" not in self.terms:
            raise OptionError("{dvml}: DVML works on the object term; keep 'piobj' in {losses} to use it")
        for name in ("alpha", "beta", "theta", "lam", "dvml_kl", "dvml_rec", "dvml_syn"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):  # a nan passes `value < 0`
                raise OptionError.of(name, " {given}: must be a finite number >= 0", given=value)
        if int(self.gml_proxies) != self.gml_proxies or self.gml_proxies < 1:
            raise OptionError("{gml_proxies} {given}: give a whole number of proxies per object, at least 1", given=self.gml_proxies)
        if not (math.isfinite(self.gml_neighbourhood) and 0 < self.gml_neighbourhood <= 1):
            raise OptionError("{gml_neighbourhood} {given}: the fraction r of the proxies must be in (0, 1]", given=self.gml_neighbourhood)
        if not (math.isfinite(self.gml_reg) and self.gml_reg >= 0):
            raise OptionError("{gml_reg} {given}: must be a finite number >= 0", given=self.gml_reg)
        if not (math.isfinite(self.language_weight) and self.language_weight >= 0):
            raise OptionError("{language_weight} {given}: must be a finite number >= 0", given=self.language_weight)
        if self.language_space not in SPACES:
            raise OptionError("{language_space} {given!r}: choose one of {known}", given=self.language_space, known=", ".join(SPACES))
        if not (math.isfinite(self.direction_reg) and self.direction_reg >= 0):
            raise OptionError("{direction_reg} {given}: must be a finite number >= 0", given=self.direction_reg)
        if self.direction_reg and self.obj_loss not in DIRECTION_LOSSES:
            raise OptionError(
                "{direction_reg}: the regulariser is built on triplets, so it applies to {obj_loss} piro or triplet, not "
                "{given} (losses/direction.py says why)", given=self.obj_loss
            )
        if self.direction_reg and "piobj" not in self.terms:
            raise OptionError("{direction_reg} works on the object term; keep 'piobj' in {losses} to use it")
        if not (math.isfinite(self.distance_margin) and self.distance_margin >= 0):
            raise OptionError("{distance_margin} {given}: must be a finite number >= 0", given=self.distance_margin)
        if self.distance_margin and "piobj" not in self.terms:
            raise OptionError("{distance_margin} shapes the object space; keep 'piobj' in {losses} to use it")
        if self.cat_loss not in CATEGORY_LOSSES:
            raise OptionError("{cat_loss} {given!r}: choose one of {known}", given=self.cat_loss, known=", ".join(CATEGORY_LOSSES))
        if self.cat_loss != "lsoftmax" and "cat" not in self.terms:
            raise OptionError("{cat_loss} {given}: replaces the term 'cat'; keep it in {losses}", given=self.cat_loss)
        if self.gamma < 1 or not float(self.gamma).is_integer():
            raise ValueError(f"gamma (the L-Softmax margin) must be a positive integer, got {self.gamma}")
        if self.separation not in SEPARATIONS:
            raise OptionError("{separation} {given!r}: choose one of {known}", given=self.separation, known=", ".join(SEPARATIONS))


class PiroLoss(torch.nn.Module):
    """Total loss L = mean over pairs of L_cat^a + L_cat^b + L_picat + L_piobj (only the enabled terms).

    The object term is L_piobj, or with `obj_loss` a metric-learning loss over object identities (part "obj";
    needs `object_ids` in forward and `num_objects` here); with `dvml` the DVML branch adds the parts
    "dvml_syn" (the object term on synthetic views), "dvml_kl" and "dvml_rec" (needs `feats` in forward and
    `feat_dim` here). `obj_dim` is the object space's dimension (default: cat_dim).

    With `cat_loss="proxy-gml"` "cat" is ProxyGML over the categories on the a-views plus the same on the b-views
    (its proxies are trained with the model). Otherwise "cat" is CategoryLSoftmaxLoss on the a-views plus the same
    on the b-views (each a mean over its P*V views); the miner runs separately on the a-views and on the b-views,
    and the two values are added, as in the authors' released code (losses/CategoryLoss.py). The L-Softmax class weights exist only when "cat" is enabled; unless
    `train_lsoftmax_weights`, they do not require grad, so giving `PiroLoss.parameters()` to the optimiser together
    with the model's trains only the other loss parameters (metric-loss proxies, DVML) and leaves W as initialised.
    """

    def __init__(
        self, config: LossConfig, num_classes: int, cat_dim: int, obj_dim: int | None = None, num_objects: int | None = None,
        feat_dim: int | None = None, category_names: Tensor | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        obj_dim = obj_dim or cat_dim
        self.config = config
        self.terms = canonical_terms(config.terms)
        gml = {"proxies_per_class": config.gml_proxies, "neighbourhood": config.gml_neighbourhood, "regularisation": config.gml_reg}
        self.cat = None
        if "cat" in self.terms and config.cat_loss == "proxy-gml":
            self.cat = ProxyGMLLoss(num_classes, cat_dim, **gml)
        elif "cat" in self.terms:
            self.cat = CategoryLSoftmaxLoss(
                num_classes, cat_dim, gamma=config.gamma, use_miner=config.mine_hard, train_weights=config.train_lsoftmax_weights
            )
        self.piobj = None
        self.metric = None
        if "piobj" in self.terms and config.obj_loss == "piro":
            self.piobj = PoseInvariantObjectLoss(
                alpha=config.alpha, beta=config.beta, lam=config.lam, separation=config.separation,
                direction_reg=config.direction_reg,
            )  # fmt: skip
        elif "piobj" in self.terms:
            if config.obj_loss.startswith("proxy") and not num_objects:
                raise ValueError(f"obj_loss {config.obj_loss!r} keeps a proxy per object: give num_objects")
            options = gml if config.obj_loss == "proxy-gml" else {}
            self.metric = ObjectMetricLoss(config.obj_loss, num_objects or 1, obj_dim, config.direction_reg, **options)
        self.dvml = None
        if config.dvml:
            if not feat_dim:
                raise ValueError("DVML reconstructs backbone features: give feat_dim")
            self.dvml = VariationalBranch(feat_dim, obj_dim, variance_scale=max(config.alpha, 1e-3))
        self.picat = PoseInvariantCategoryLoss(theta=config.theta) if "picat" in self.terms else None
        self.margin = DistanceMarginLoss() if config.distance_margin > 0 else None
        self.language = None
        if config.language_weight > 0:
            if category_names is None:
                raise ValueError("language guidance needs the embeddings of the category names (category_names=)")
            self.language = LanguageGuidance(category_names, config.language_weight)

    def forward(
        self, out_a: Any, out_b: Any, labels: Tensor, object_ids: tuple[Tensor, Tensor] | None = None,
        feats: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:  # fmt: skip
        """out_a / out_b: objects with attributes sv_cat (P,V,Dc), sv_obj (P,V,Do), mv_cat (P,Dc), mv_obj (P,Do) for
        objects a and b of each pair (in the single-space variant the cat and obj tensors are the same ones).
        labels: (P,) category of each pair; object_ids: (ids of the a-objects, of the b-objects), each (P,), for
        a metric object loss; feats: (features of the a-views, of the b-views), each (P, V, F), for DVML.
        Returns {"total", then the enabled parts among "cat", "piobj" or "obj", "picat", "dvml_*"}.
        """
        parts: dict[str, Tensor] = {}
        if isinstance(self.cat, ProxyGMLLoss):  # every single view is a sample of its pair's category
            view_labels = labels.repeat_interleave(out_a.sv_cat.shape[1])
            parts["cat"] = self.cat(out_a.sv_cat.flatten(0, 1), view_labels) + self.cat(out_b.sv_cat.flatten(0, 1), view_labels)
        elif self.cat is not None:
            parts["cat"] = self.cat(out_a.sv_cat, labels) + self.cat(out_b.sv_cat, labels)
        if self.piobj is not None or self.metric is not None:
            name = "piobj" if self.piobj is not None else "obj"
            parts[name] = self._object_term(out_a.sv_obj, out_b.sv_obj, out_a, out_b, object_ids)
            if self.dvml is not None:
                if feats is None:
                    raise ValueError("DVML needs the backbone features of the views (feats=)")
                syn_a, kl_a, rec_a = self.dvml(feats[0], out_a.sv_obj)
                syn_b, kl_b, rec_b = self.dvml(feats[1], out_b.sv_obj)
                parts["dvml_syn"] = self.config.dvml_syn * self._object_term(syn_a, syn_b, out_a, out_b, object_ids)
                parts["dvml_kl"] = self.config.dvml_kl * (kl_a + kl_b) / 2
                parts["dvml_rec"] = self.config.dvml_rec * (rec_a + rec_b) / 2
        if self.picat is not None:
            parts["picat"] = self.picat(out_a.sv_cat, out_b.sv_cat, out_a.mv_cat, out_b.mv_cat)
        if self.margin is not None:
            if object_ids is None:
                raise ValueError("the distance margin term needs the object ids (object_ids=)")
            sv, mv = torch.cat([out_a.sv_obj, out_b.sv_obj]), torch.cat([out_a.mv_obj, out_b.mv_obj])
            parts["margin"] = self.config.distance_margin * self.margin(sv, mv, torch.cat(list(object_ids)))
        if self.language is not None:
            parts["language"] = self._language_term(out_a, out_b, labels, object_ids)
        total = sum(parts.values())  # at least one term: LossConfig/_canonical_terms refuse an empty list
        return {"total": total, **parts}

    def _language_term(self, out_a: Any, out_b: Any, labels: Tensor, object_ids) -> Tensor:
        """Language guidance on the pair's single views: in the object space identities are the objects (their
        categories' names guide), in the category space the categories."""
        object_space = self.config.language_space == "object"
        sv = torch.cat([out_a.sv_obj, out_b.sv_obj]) if object_space else torch.cat([out_a.sv_cat, out_b.sv_cat])
        views = sv.shape[1]
        categories = torch.cat([labels, labels]).repeat_interleave(views)  # both objects of a pair share its category
        if object_space:
            if object_ids is None:
                raise ValueError("language guidance in the object space needs the object ids (object_ids=)")
            identities = torch.cat(list(object_ids)).repeat_interleave(views)
        else:
            identities = categories
        return self.language(sv.flatten(0, 1), categories, identities)

    def _object_term(self, sv_a: Tensor, sv_b: Tensor, out_a: Any, out_b: Any, object_ids) -> Tensor:
        """The object term on the given single views (the real ones, or DVML's synthetic ones)."""
        if self.piobj is not None:
            return self.piobj(sv_a, sv_b, out_a.mv_obj, out_b.mv_obj)
        if object_ids is None:
            raise ValueError(f"the {self.config.obj_loss} object loss needs the object ids (object_ids=)")
        ids = torch.cat(list(object_ids))
        return self.metric(torch.cat([sv_a, sv_b]), torch.cat([out_a.mv_obj, out_b.mv_obj]), ids)
