"""The total PiRO loss L = mean over pairs of L_cat^a + L_cat^b + L_picat + L_piobj (METHOD.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .category import CategoryLSoftmaxLoss, PoseInvariantCategoryLoss
from .object import PoseInvariantObjectLoss

LOSS_TERMS = ("cat", "piobj", "picat")


def _canonical_terms(terms: Any) -> tuple[str, ...]:
    """Validate a collection of term names; returns them deduplicated, in LOSS_TERMS order."""
    if isinstance(terms, str):
        return parse_loss_terms(terms)
    terms = tuple(terms)
    if not terms:
        raise ValueError(f"no loss terms given; choose one or more of {', '.join(LOSS_TERMS)}")
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if unknown:
        raise ValueError(f"unknown loss term(s) {', '.join(map(repr, unknown))}; valid terms are {', '.join(LOSS_TERMS)}")
    # Canonical order (the spec is silent): "piobj,cat" and "cat,piobj" name the same ablation, so they compare equal.
    return tuple(t for t in LOSS_TERMS if t in terms)


def parse_loss_terms(text: str) -> tuple[str, ...]:
    """'cat,piobj' -> ('cat', 'piobj'). Whitespace and letter case around names are ignored; duplicates collapse; the
    result is in LOSS_TERMS order. Raises ValueError for an empty list, an empty item ('cat,,piobj') or an unknown
    name (the message lists the valid ones)."""
    if not text or not text.strip():
        raise ValueError(f"no loss terms given; choose one or more of {', '.join(LOSS_TERMS)} (comma-separated)")
    items = [item.strip().lower() for item in text.split(",")]
    if any(not item for item in items):
        raise ValueError(f"empty item in loss terms {text!r}; write e.g. 'cat,piobj' (valid terms: {', '.join(LOSS_TERMS)})")
    return _canonical_terms(items)


@dataclass
class LossConfig:
    """Loss hyper-parameters; defaults are the paper's (METHOD.md section 3)."""

    alpha: float = 0.25  # object clustering margin
    beta: float = 1.0  # object separation margin
    theta: float = 0.25  # category pose-invariance margin
    gamma: float = 4.0  # L-Softmax margin (a positive integer)
    lam: float = 1.0  # weight of the object separation part (2 for FG3D in the released code)
    terms: tuple[str, ...] = LOSS_TERMS  # subset, for the ablations of paper Table 4 (`--losses cat,piobj,picat`)
    mine_hard: bool = True  # BatchHardMiner before the L-Softmax

    def __post_init__(self) -> None:
        # Accepts a comma-separated string too, and normalises to the canonical tuple so configs compare/serialise cleanly.
        self.terms = _canonical_terms(self.terms)
        for name in ("alpha", "beta", "theta", "lam"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gamma < 1 or not float(self.gamma).is_integer():
            raise ValueError(f"gamma (the L-Softmax margin) must be a positive integer, got {self.gamma}")


class PiroLoss(torch.nn.Module):
    """Total loss L = mean over pairs of L_cat^a + L_cat^b + L_picat + L_piobj (only the enabled terms).

    "cat" is CategoryLSoftmaxLoss on the a-views plus the same on the b-views (each a mean over its P*V views, so
    their sum is the mean over pairs of L_cat^a + L_cat^b); the miner runs separately on the a-views and on the
    b-views, as in the authors' released code. The L-Softmax class weights (learnable) exist only when "cat" is
    enabled; give `PiroLoss.parameters()` to the optimiser together with the model's.
    """

    def __init__(self, config: LossConfig, num_classes: int, cat_dim: int) -> None:
        super().__init__()
        self.config = config
        self.terms = _canonical_terms(config.terms)
        self.cat = (
            CategoryLSoftmaxLoss(num_classes, cat_dim, gamma=config.gamma, use_miner=config.mine_hard)
            if "cat" in self.terms
            else None
        )
        self.piobj = (
            PoseInvariantObjectLoss(alpha=config.alpha, beta=config.beta, lam=config.lam) if "piobj" in self.terms else None
        )
        self.picat = PoseInvariantCategoryLoss(theta=config.theta) if "picat" in self.terms else None

    def forward(self, out_a: Any, out_b: Any, labels: Tensor) -> dict[str, Tensor]:
        """out_a / out_b: objects with attributes sv_cat (P,V,Dc), sv_obj (P,V,Do), mv_cat (P,Dc), mv_obj (P,Do) for
        objects a and b of each pair (in the single-space variant the cat and obj tensors are the same ones).
        labels: (P,) category of each pair. Returns {"total", then the enabled terms among "cat", "piobj", "picat"}.
        """
        parts: dict[str, Tensor] = {}
        if self.cat is not None:
            parts["cat"] = self.cat(out_a.sv_cat, labels) + self.cat(out_b.sv_cat, labels)
        if self.piobj is not None:
            parts["piobj"] = self.piobj(out_a.sv_obj, out_b.sv_obj, out_a.mv_obj, out_b.mv_obj)
        if self.picat is not None:
            parts["picat"] = self.picat(out_a.sv_cat, out_b.sv_cat, out_a.mv_cat, out_b.mv_cat)
        total = sum(parts.values())  # at least one term: LossConfig/_canonical_terms refuse an empty list
        return {"total": total, **parts}
