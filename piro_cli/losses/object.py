"""Pose-invariant object loss L_piobj (METHOD.md section 3, object space)."""

from __future__ import annotations

import torch
from torch import Tensor

from .direction import direction_separation
from .geometry import check_pair_shapes, distance
from .registry import SEPARATIONS  # noqa: E402


class PoseInvariantObjectLoss(torch.nn.Module):
    """L_piobj = [d(o_mv^a, o_con^a) - alpha]+ + [d(o_mv^b, o_con^b) - alpha]+
    + lam * ([beta - s(o_con^a, o_con^b)]+ + [beta - d(o_mv^a, o_mv^b)]+), averaged over the P pairs.

    The confusers (o_con^a, o_con^b) are the closest pair of single views across the two objects. `separation`
    chooses s: "squared" (s = d^2, the released losses/PILosses.py, which the published numbers come from) or
    "plain" (s = d, the paper's Eq. 7). The clustering terms and the multi-view separation use d in both.
    lam weighs both separation terms, as released. `direction_reg` (gamma > 0) adds the direction regulariser to the
    confuser separation (losses/direction.py; not part of PiRO). `per_pair(...) > 0` marks the pairs with a non-zero loss,
    whose fraction the released training script logs as "exemplar information".
    """

    def __init__(
        self, alpha: float = 0.25, beta: float = 1.0, lam: float = 1.0, separation: str = "squared", direction_reg: float = 0.0
    ) -> None:  # fmt: skip
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("lam", lam), ("direction_reg", direction_reg)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if separation not in SEPARATIONS:
            raise ValueError(f"separation must be one of {', '.join(SEPARATIONS)}, got {separation!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.lam = float(lam)
        self.separation = separation
        self.direction_reg = float(direction_reg)

    def extra_repr(self) -> str:
        extra = f", direction_reg={self.direction_reg}" if self.direction_reg else ""
        return f"alpha={self.alpha}, beta={self.beta}, lam={self.lam}, separation={self.separation}{extra}"

    @staticmethod
    def confusers(sv_a: Tensor, sv_b: Tensor) -> tuple[Tensor, Tensor]:
        """sv_a (P, Va, D), sv_b (P, Vb, D) single-view object embeddings.

        Returns (idx_a, idx_b), each (P,) long: per pair, the view indices of the closest cross-object
        pair argmin_{x in a, y in b} d(x, y). The choice is a hard selection (no gradient flows through it).
        Ties (the spec is silent) go to the first minimum in row-major order, i.e. the lowest view index
        of a, then of b, which is what `torch.argmin` guarantees (and what the released code's argmin over the
        flattened (view of a, view of b) grid picks).
        """
        if sv_a.dim() != 3 or sv_b.dim() != 3 or sv_a.shape[0] != sv_b.shape[0] or sv_a.shape[2] != sv_b.shape[2]:
            raise ValueError(
                f"confusers need (P, V, D) tensors with equal P and D; got {tuple(sv_a.shape)} and {tuple(sv_b.shape)}"
            )
        with torch.no_grad():
            # The exact (non-matmul) Euclidean path: the matmul shortcut can reorder near-equal distances.
            dist = torch.cdist(sv_a.detach(), sv_b.detach(), compute_mode="donot_use_mm_for_euclid_dist")  # (P, Va, Vb)
            flat = dist.flatten(1).argmin(dim=1)  # (P,)
            vb = sv_b.shape[1]
            return flat // vb, flat % vb

    def forward(self, sv_a: Tensor, sv_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> Tensor:
        """sv_a, sv_b: (P, V, D) single-view object embeddings; mv_a, mv_b: (P, D) multi-view ones.

        Returns the scalar L_piobj averaged over pairs.
        """
        return self.per_pair(sv_a, sv_b, mv_a, mv_b).mean()

    def per_pair(self, sv_a: Tensor, sv_b: Tensor, mv_a: Tensor, mv_b: Tensor) -> Tensor:
        """L_piobj for every pair, shape (P,)."""
        check_pair_shapes(sv_a, sv_b, mv_a, mv_b)
        idx_a, idx_b = self.confusers(sv_a, sv_b)
        rows = torch.arange(sv_a.shape[0], device=sv_a.device)
        con_a = sv_a[rows, idx_a]  # (P, D), differentiable w.r.t. the chosen views
        con_b = sv_b[rows, idx_b]
        cluster = torch.relu(distance(mv_a, con_a) - self.alpha) + torch.relu(distance(mv_b, con_b) - self.alpha)
        # The squared distance as its own expression, not distance(...) ** 2: its gradient is 2(x - y), finite at 0.
        con_gap = ((con_a - con_b) ** 2).sum(dim=-1) if self.separation == "squared" else distance(con_a, con_b)
        if self.direction_reg:
            con_separate = direction_separation(con_gap, self.beta, self.direction_reg, con_a, con_b, mv_a, mv_b)
        else:
            con_separate = torch.relu(self.beta - con_gap)
        separate = con_separate + torch.relu(self.beta - distance(mv_a, mv_b))
        return cluster + self.lam * separate
