"""The absolute-distance term (`--distance-margin`, losses/margin.py) against a hand-worked value."""

from __future__ import annotations

import pytest
import torch

from piro_cli.losses.margin import DistanceMarginLoss
from piro_cli.losses.total import LossConfig


def test_distance_margin_by_hand():
    # object A: view (1, 0), view set (0.6, 0.8); object B: view (0, 1), view set (0, 1)
    sv = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    mv = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    loss = DistanceMarginLoss(0.5, 1.0)(sv, mv, torch.tensor([0, 1]))
    # same-object pairs (ordered): A view-set at sqrt(0.8) twice, B at 0 twice -> mean of (sqrt(0.8) - 0.5)^2 over 4
    pull = 2 * (0.8**0.5 - 0.5) ** 2 / 4
    # other-object pairs: only A's view set and B's two points are closer than 1: sqrt(0.4), both orders -> 4 of 8
    push = 4 * (1 - 0.4**0.5) ** 2 / 8
    assert float(loss) == pytest.approx(pull + push, rel=1e-5)


def test_distance_margin_has_finite_gradients_for_a_repeated_object():
    sv = torch.nn.functional.normalize(torch.randn(2, 3, 4), dim=-1)
    sv = torch.cat([sv, sv[:1]]).requires_grad_()  # object 0 twice in the batch: coinciding points
    mv = torch.nn.functional.normalize(sv.mean(dim=1), dim=-1)
    DistanceMarginLoss()(sv, mv, torch.tensor([0, 1, 0])).backward()
    assert torch.isfinite(sv.grad).all()


def test_distance_margin_needs_the_object_term():
    with pytest.raises(ValueError, match="distance_margin"):
        LossConfig(terms=("cat",), distance_margin=1.0)
    with pytest.raises(ValueError, match="distance_margin"):
        LossConfig(distance_margin=float("nan"))
