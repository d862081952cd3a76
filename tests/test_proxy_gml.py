"""ProxyGML (losses/proxy_gml.py) against values worked out by hand from the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from piro_cli.losses.proxy_gml import ProxyGMLLoss

# two classes, two proxies each, already unit length: p0, p1 of class 0; p2, p3 of class 1
PROXIES = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]]


def loss_with(proxies, classes: int, per_class: int, r: float, reg: float) -> ProxyGMLLoss:
    loss = ProxyGMLLoss(classes, 2, proxies_per_class=per_class, neighbourhood=r, regularisation=reg)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor(proxies))
    return loss


def test_value_by_hand():
    """x = (0.8, 0.6) of class 0, r = 0.75 (k = ceil(0.75 * 4) = 3 proxies kept).
    s = x.p = (0.8, 0.96, 0.6, 0.0); kept: p0, p1 (its class) and p2 (the most similar other).
    Class scores: z0 = 0.8 + 0.96 = 1.76, z1 = 0.6; L_classify = -log(e^1.76 / (e^1.76 + e^0.6)).
    Regulariser: P P^T summed per class, per proxy: p0 (1.6, -0.6), p1 (1.6, 1.08), p2 (0.8, 1.8), p3 (-0.32, 1.8),
    classes (0, 0, 1, 1); L_reg = mean cross-entropy."""
    classify = -math.log(math.exp(1.76) / (math.exp(1.76) + math.exp(0.6)))
    rows, targets = [(1.6, -0.6), (1.6, 1.08), (0.8, 1.8), (-0.32, 1.8)], [0, 0, 1, 1]
    reg = sum(-(r[t] - math.log(math.exp(r[0]) + math.exp(r[1]))) for r, t in zip(rows, targets, strict=True)) / 4
    loss = loss_with(PROXIES, 2, 2, 0.75, 0.3)
    value = loss(torch.tensor([[0.8, 0.6]]), torch.tensor([0])).detach()
    assert float(value.detach()) == pytest.approx(classify + 0.3 * reg, rel=1e-6)
    assert float(loss_with(PROXIES, 2, 2, 0.75, 0.0)(torch.tensor([[0.8, 0.6]]), torch.tensor([0])).detach()) == pytest.approx(classify, rel=1e-6)


def test_classes_outside_the_sub_graph_leave_the_softmax():
    """A third class whose proxies are cut from the sub-graph (k = ceil(0.5 * 6) = 3: class 0's two and p2) scores
    exactly 0 and is left out of the softmax, as the released masked softmax does: the value is the two-class one."""
    proxies = PROXIES + [[-1.0, 0.0], [0.0, -1.0]]
    loss = loss_with(proxies, 3, 2, 0.5, 0.0)
    value = loss(torch.tensor([[0.8, 0.6]]), torch.tensor([0])).detach()
    assert float(value.detach()) == pytest.approx(-math.log(math.exp(1.76) / (math.exp(1.76) + math.exp(0.6))), rel=1e-6)


def test_gradients_reach_embeddings_and_proxies_and_steps_lower_the_loss():
    torch.manual_seed(0)
    loss = ProxyGMLLoss(4, 8, proxies_per_class=3, neighbourhood=0.25)
    x = torch.nn.functional.normalize(torch.randn(16, 8), dim=1).requires_grad_(True)
    labels = torch.arange(4).repeat(4)
    value = loss(x, labels)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and loss.proxies.grad.abs().sum() > 0
    weights = torch.nn.Parameter(torch.randn(16, 8))
    optimizer = torch.optim.Adam([weights, *loss.parameters()], lr=0.05)
    history = []
    for _ in range(30):
        optimizer.zero_grad()
        value = loss(torch.nn.functional.normalize(weights, dim=1), labels)
        value.backward()
        optimizer.step()
        history.append(float(value.detach()))
    assert history[-1] < 0.7 * history[0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="neighbourhood"):
        ProxyGMLLoss(2, 4, neighbourhood=0.0)
    with pytest.raises(ValueError, match="regularisation"):
        ProxyGMLLoss(2, 4, regularisation=-1.0)
