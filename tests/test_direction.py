"""The direction regulariser (losses/direction.py) against values worked out by hand, and ProxyGML as the category
term (--cat-loss proxy-gml); both end to end through train() and evaluate()."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_config
from pytorch_metric_learning.losses import TripletMarginLoss

from piro_cli.errors import PiroError
from piro_cli.evaluation.evaluate import evaluate
from piro_cli.losses import DirectionRegularisedTripletLoss, LossConfig, PiroLoss, PoseInvariantObjectLoss
from piro_cli.losses.proxy_gml import ProxyGMLLoss
from piro_cli.training import train
from piro_cli.training.config import method_label

# unit vectors: anchor a and positive p of class 0; negatives n1 (behind the anchor) and n3 (on the positive's side)
A, P, N1, N3 = [1.0, 0.0], [0.6, 0.8], [0.8, -0.6], [0.28, 0.96]
TRIPLETS = (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([2, 3]))


def triplet_value(gamma: float) -> float:
    embeddings, labels = torch.tensor([A, P, N1, N3]), torch.tensor([0, 0, 1, 1])
    return float(DirectionRegularisedTripletLoss(gamma, margin=0.5)(embeddings, labels, TRIPLETS))


def test_triplet_value_by_hand():
    """d(a,p) = sqrt(0.8) = 0.894427; d(a,n1) = sqrt(0.4) = 0.632456; d(a,n3) = 1.2.
    cos(p-a, n1-a) = (0.08 - 0.48) / (0.894427 * 0.632456) = -0.707107; cos(p-a, n3-a) = 1.056 / 1.073313 = 0.983870.
    margin 0.5, gamma 0.5: n1 gives 0.761971 + 0.353553 = 1.115524; n3 gives 0.194427 - 0.491935 < 0, so it leaves
    the loss, and the mean over the non-zero triplets is 1.115524. gamma 0: (0.761971 + 0.194427) / 2."""
    assert triplet_value(0.5) == pytest.approx(0.761971 + 0.353553, abs=1e-5)
    assert triplet_value(0.0) == pytest.approx((0.761971 + 0.194427) / 2, abs=1e-5)


def test_gamma_zero_is_the_library_triplet_loss():
    torch.manual_seed(0)
    embeddings, labels = torch.randn(24, 8), torch.arange(6).repeat(4)
    plain = TripletMarginLoss(margin=0.2)(embeddings, labels)
    assert float(DirectionRegularisedTripletLoss(0.0)(embeddings, labels)) == pytest.approx(float(plain), rel=1e-6)
    assert float(DirectionRegularisedTripletLoss(0.4)(embeddings, labels)) != pytest.approx(float(plain), rel=1e-3)


def test_the_gram_matrix_cosines_match_the_direct_ones():
    """The loss's cosines come from Gram matrices; the direct formula on gathered vectors is the reference."""
    from piro_cli.losses.direction import _triplet_cosines, direction_cosine

    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(20, 16), dim=1)
    a, p, n = (torch.randint(0, 20, (500,)) for _ in range(3))
    fast, direct = _triplet_cosines(x, x, a, p, n), direction_cosine(x[a], x[p], x[n])
    assert torch.allclose(fast, direct, atol=1e-5)
    assert bool((fast[(a == p) | (a == n)] == 0).all())


def piobj_pair() -> tuple[torch.Tensor, ...]:
    """Views of a at (0,0), (2,0); of b at (3,0), (0.5,0.5): the confusers are (0,0) and (0.5,0.5) (distance 0.7071
    against 1, 1.58 and 3). View sets at mv_a = (1,0), mv_b = (1.5,1.5)."""
    sv_a, sv_b = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]]), torch.tensor([[[3.0, 0.0], [0.5, 0.5]]])
    return sv_a, sv_b, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.5, 1.5]])


def test_piobj_value_by_hand():
    """Squared confuser gap 0.5; cos at con_a = cos((1,0), (0.5,0.5)) = 0.707107, at con_b = cos((1,1), (-0.5,-0.5)) = -1.
    beta 1, gamma 0.5: ([1 - 0.5 - 0.353553]+ + [1 - 0.5 + 0.5]+) / 2 = 0.573223 instead of [1 - 0.5]+ = 0.5.
    Clustering: [1 - 0.25]+ + [sqrt(2) - 0.25]+ = 1.914214; view-set separation [1 - 1.581139]+ = 0."""
    plain = PoseInvariantObjectLoss()(*piobj_pair())
    regularised = PoseInvariantObjectLoss(direction_reg=0.5)(*piobj_pair())
    assert float(plain) == pytest.approx(1.914214 + 0.5, abs=1e-5)
    assert float(regularised) == pytest.approx(1.914214 + 0.573223, abs=1e-5)


def test_gradients_reach_all_three_points_and_steps_lower_the_loss():
    points = torch.nn.Parameter(torch.tensor([A, P, N1, N3]))
    loss = DirectionRegularisedTripletLoss(0.5, margin=0.5)
    value = loss(points, torch.tensor([0, 0, 1, 1]), TRIPLETS)
    value.backward()
    assert all(points.grad[i].abs().sum() > 0 for i in (0, 1, 2))  # a, p and the active negative n1
    optimizer = torch.optim.SGD([points], lr=0.1)
    history = []
    for _ in range(20):
        optimizer.zero_grad()
        value = loss(points, torch.tensor([0, 0, 1, 1]), TRIPLETS)
        value.backward()
        optimizer.step()
        history.append(float(value.detach()))
    assert history[-1] < 0.5 * history[0]


def test_piobj_regulariser_gradients_reach_confusers_and_view_sets():
    sv_a, sv_b, mv_a, mv_b = (torch.nn.Parameter(t.clone()) for t in piobj_pair())
    loss = PoseInvariantObjectLoss(direction_reg=0.5)
    loss(sv_a, sv_b, mv_a, mv_b).backward()
    assert sv_a.grad[0, 0].abs().sum() > 0 and sv_b.grad[0, 1].abs().sum() > 0  # the two confusers
    assert mv_a.grad.abs().sum() > 0 and mv_b.grad.abs().sum() > 0
    optimizer = torch.optim.SGD([sv_a, sv_b, mv_a, mv_b], lr=0.05)
    history = []
    for _ in range(20):
        optimizer.zero_grad()
        value = loss(sv_a, sv_b, mv_a, mv_b)
        value.backward()
        optimizer.step()
        history.append(float(value.detach()))
    assert history[-1] < 0.7 * history[0]


def test_category_proxy_gml_term_is_the_loss_on_each_objects_views():
    """--cat-loss proxy-gml: "cat" = ProxyGML(a's views, their category) + ProxyGML(b's views, theirs), with the
    same proxies; computed here with a separate ProxyGMLLoss holding those proxies."""
    torch.manual_seed(0)
    config = LossConfig(terms=("cat",), cat_loss="proxy-gml", gml_proxies=2, gml_neighbourhood=0.5)
    loss = PiroLoss(config, num_classes=3, cat_dim=4)
    reference = ProxyGMLLoss(3, 4, proxies_per_class=2, neighbourhood=0.5)
    reference.load_state_dict(loss.cat.state_dict())
    views = [torch.nn.functional.normalize(torch.randn(2, 3, 4), dim=-1) for _ in range(2)]
    out_a, out_b = (type("Out", (), {"sv_cat": v, "sv_obj": v}) for v in views)
    labels = torch.tensor([0, 2])
    expected = sum(float(reference(v.flatten(0, 1), torch.tensor([0, 0, 0, 2, 2, 2])).detach()) for v in views)
    assert float(loss(out_a, out_b, labels)["cat"].detach()) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(
    ("options", "label"),
    [
        (dict(dual=True, direction_reg=0.5), "piro-dual+dr=0.5"),
        (dict(dual=False, direction_reg=0.5, obj_loss="triplet"), "piro-single+triplet+dr=0.5"),
        (dict(dual=True, cat_loss="proxy-gml", gml_proxies=2), "piro-dual+cat=proxy-gml+gml=2/0.05/0.3"),
        (dict(dual=False, cat_loss="proxy-gml", gml_proxies=2), "piro-single+cat=proxy-gml+gml=2/0.05/0.3"),
    ],
)
def test_train_and_evaluate(tiny_data, tmp_path, options, label):
    config = tiny_config(tiny_data, project=str(tmp_path / "runs"), epochs=1, freeze_backbone=True, feature_passes=1,
                         val_fraction=0.25, **options)  # fmt: skip
    result = train(config)
    assert math.isfinite(result.history[0]["loss"])
    assert method_label(json.loads((result.run_dir / "config.json").read_text())["train"]) == label
    assert set(evaluate([result.best_path], split="test", save=False).runs[0].values)


def test_bad_combinations_are_one_line(tiny_data):
    with pytest.raises(PiroError, match="direction_reg: .*obj_loss piro or triplet, not contrastive"):
        tiny_config(tiny_data, obj_loss="contrastive", direction_reg=0.5)
    with pytest.raises(PiroError, match="direction_reg -1"):
        tiny_config(tiny_data, direction_reg=-1.0)
    with pytest.raises(PiroError, match="direction_reg: shapes the losses of piro-dual"):
        tiny_config(tiny_data, method="mv-cnn", direction_reg=0.5)
    with pytest.raises(PiroError, match="cat_loss 'arcface'"):
        tiny_config(tiny_data, cat_loss="arcface")
    with pytest.raises(PiroError, match="cat_loss proxy-gml: replaces the term 'cat'"):
        tiny_config(tiny_data, cat_loss="proxy-gml", losses=("piobj", "picat"))
