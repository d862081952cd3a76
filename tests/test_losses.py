"""Losses of METHOD.md section 3, checked against values worked out by hand on tiny 2-D inputs.

The pose-invariant losses do not require unit-norm inputs, so the hand-made cases use easy points on the axes.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.miners import BatchHardMiner

from piro_cli.losses import (
    LOSS_TERMS,
    CategoryLSoftmaxLoss,
    LossConfig,
    PiroLoss,
    PoseInvariantCategoryLoss,
    PoseInvariantObjectLoss,
    parse_loss_terms,
)

# pml's LargeMarginSoftmaxLoss builds its margin table with scipy.special.binom on torch scalars, which NumPy 2 flags.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def pair(sv_a, sv_b, mv_a, mv_b, grad: bool = False) -> list[torch.Tensor]:
    """One pair (P = 1) from nested lists: sv (V, D) and mv (D,) per object."""
    tensors = [t([sv_a]), t([sv_b]), t([mv_a]), t([mv_b])]
    return [x.requires_grad_(grad) for x in tensors]


# ---------------------------------------------------------------------------------------------- confusers


def test_confusers_pick_the_closest_cross_pair_per_pair():
    sv_a = t(
        [
            # pair 0: a0=(0,0) a1=(3,0); b0=(0,5) b1=(4,0)
            # d(a0,b0)=5  d(a0,b1)=4  d(a1,b0)=sqrt(9+25)=5.83  d(a1,b1)=1   -> (1, 1)
            [[0, 0], [3, 0]],
            # pair 1: a0=(0,1) a1=(0,-1); b0=(0,-4) b1=(0,2)
            # d(a0,b0)=5  d(a0,b1)=1  d(a1,b0)=3  d(a1,b1)=3   -> (0, 1)
            [[0, 1], [0, -1]],
        ]
    )
    sv_b = t([[[0, 5], [4, 0]], [[0, -4], [0, 2]]])
    idx_a, idx_b = PoseInvariantObjectLoss.confusers(sv_a, sv_b)
    assert idx_a.dtype == torch.long and idx_b.dtype == torch.long
    assert idx_a.tolist() == [1, 0]
    assert idx_b.tolist() == [1, 1]
    # each pair is independent: swapping the pairs swaps the answers
    idx_a, idx_b = PoseInvariantObjectLoss.confusers(sv_a.flip(0), sv_b.flip(0))
    assert idx_a.tolist() == [0, 1]
    assert idx_b.tolist() == [1, 1]


def test_confusers_with_three_views():
    # a: (0,0) (10,0) (5,5); b: (0,-9) (5,7) (10,3)
    # d(a2,b1) = 2 is the smallest (d(a1,b2)=3, d(a0,b0)=9, others larger)
    idx_a, idx_b = PoseInvariantObjectLoss.confusers(t([[[0, 0], [10, 0], [5, 5]]]), t([[[0, -9], [5, 7], [10, 3]]]))
    assert (idx_a.item(), idx_b.item()) == (2, 1)


# ---------------------------------------------------------------------------------------------- object loss

# All four hinges active (alpha=0.25, beta=1):
#   closest cross pair a0=(0,0), b0=(0.5,0) (d(a0,b1)=3, d(a1,b0)=2.5, d(a1,b1)=5); d(con_a,con_b)=0.5
#   mv_a=(0,1):   d(mv_a,con_a)=1 -> [1-0.25]+ = 0.75
#   mv_b=(0.5,1): d(mv_b,con_b)=1 -> 0.75
#   separation: [1-0.5]+ = 0.5 (confusers) + [1-d(mv_a,mv_b)=1-0.5]+ = 0.5 (multi-view) -> 1.0
#   L = 0.75 + 0.75 + lam * 1.0
ALL_ACTIVE = ([[0, 0], [-2, 0]], [[0.5, 0], [3, 0]], [0, 1], [0.5, 1])

# Every hinge inactive: con_a=(0,0), con_b=(2,0) (d=2 >= 1); d(mv_a,con_a)=0.1, d(mv_b,con_b)=0.2 (< 0.25);
# d(mv_a,mv_b)=sqrt(4+0.01) >= 1.  L = 0.
ALL_INACTIVE = ([[0, 0], [0, 0.1]], [[2, 0], [3, 0]], [0, 0.1], [2, 0.2])


@pytest.mark.parametrize("lam, expected", [(1.0, 2.5), (2.0, 3.5), (0.0, 1.5), (0.5, 2.0)])
def test_object_loss_all_hinges_active_and_lam_scales_separation(lam, expected):
    loss = PoseInvariantObjectLoss(alpha=0.25, beta=1.0, lam=lam)(*pair(*ALL_ACTIVE))
    assert loss.item() == pytest.approx(expected)  # 0.75 + 0.75 + lam * (0.5 + 0.5)


def test_object_loss_all_hinges_inactive_is_zero():
    assert PoseInvariantObjectLoss()(*pair(*ALL_INACTIVE)).item() == 0.0


@pytest.mark.parametrize(
    "case, lam1, lam2",
    [
        # clustering a only: inactive case with mv_a=(0,1): d(mv_a,con_a)=1 -> 0.75; d(mv_a,mv_b)=sqrt(4+0.64) >= 1
        pytest.param(([[0, 0], [0, 0.1]], [[2, 0], [3, 0]], [0, 1], [2, 0.2]), 0.75, 0.75, id="cluster-a"),
        # clustering b only: mv_b=(2,-0.5): d(mv_b,con_b)=0.5 -> 0.25; d(mv_a,mv_b)=sqrt(4+0.36) >= 1
        pytest.param(([[0, 0], [0, 0.1]], [[2, 0], [3, 0]], [0, 0.1], [2, -0.5]), 0.25, 0.25, id="cluster-b"),
        # confuser separation only (confusers are views 1/1): con_a=(0,0), con_b=(0.8,0) -> [1-0.8]+ = 0.2;
        # mv_a=(-0.2,0), mv_b=(1,0): d to confusers 0.2 (< 0.25), d(mv_a,mv_b)=1.2 >= 1
        pytest.param(([[-0.4, 0], [0, 0]], [[1.2, 0], [0.8, 0]], [-0.2, 0], [1, 0]), 0.2, 0.4, id="confuser-beta"),
        # multi-view separation only: con_a=(0,0), con_b=(1.2,0) (d=1.2 >= 1);
        # mv_a=(0.2,0), mv_b=(1,0): d to confusers 0.2, d(mv_a,mv_b)=0.8 -> [1-0.8]+ = 0.2
        pytest.param(([[0, 0], [-1, 0]], [[1.2, 0], [2, 0]], [0.2, 0], [1, 0]), 0.2, 0.4, id="mv-beta"),
    ],
)
def test_object_loss_each_hinge_alone(case, lam1, lam2):
    assert PoseInvariantObjectLoss(lam=1.0)(*pair(*case)).item() == pytest.approx(lam1)
    assert PoseInvariantObjectLoss(lam=2.0)(*pair(*case)).item() == pytest.approx(lam2)


def test_object_loss_margins():
    # ALL_ACTIVE with alpha=1: the clustering hinges [1-1]+ vanish -> 0 + 0 + 1.0
    assert PoseInvariantObjectLoss(alpha=1.0)(*pair(*ALL_ACTIVE)).item() == pytest.approx(1.0)
    # ALL_ACTIVE with beta=0.5: separation [0.5-0.5]+ + [0.5-0.5]+ = 0 -> 0.75 + 0.75
    assert PoseInvariantObjectLoss(beta=0.5)(*pair(*ALL_ACTIVE)).item() == pytest.approx(1.5)
    # beta=2: separation [2-0.5]+ + [2-0.5]+ = 3 -> 1.5 + 3
    assert PoseInvariantObjectLoss(beta=2.0)(*pair(*ALL_ACTIVE)).item() == pytest.approx(4.5)


def test_object_loss_is_the_mean_over_pairs():
    a = pair(*ALL_ACTIVE)
    b = pair(*ALL_INACTIVE)
    batch = [torch.cat([x, y]) for x, y in zip(a, b, strict=True)]
    loss = PoseInvariantObjectLoss()
    assert loss(*batch).item() == pytest.approx((2.5 + 0.0) / 2)
    assert loss.per_pair(*batch).tolist() == pytest.approx([2.5, 0.0])


def test_object_loss_gradients_reach_both_objects_when_active():
    sv_a, sv_b, mv_a, mv_b = pair(*ALL_ACTIVE, grad=True)
    PoseInvariantObjectLoss()(sv_a, sv_b, mv_a, mv_b).backward()
    for g in (sv_a.grad, sv_b.grad, mv_a.grad, mv_b.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # only the confuser views (view 0 of both) are pulled; the other views get nothing
    assert sv_a.grad[0, 1].abs().sum() == 0 and sv_b.grad[0, 1].abs().sum() == 0
    # d/d mv_a: clustering term -> unit(mv_a - con_a) = (0,1); multi-view separation -> -unit(mv_a - mv_b) = -(-1,0)
    assert mv_a.grad[0].tolist() == pytest.approx([1.0, 1.0])


def test_object_loss_gradients_are_zero_when_every_hinge_is_inactive():
    sv_a, sv_b, mv_a, mv_b = pair(*ALL_INACTIVE, grad=True)
    loss = PoseInvariantObjectLoss()(sv_a, sv_b, mv_a, mv_b)
    loss.backward()
    for x in (sv_a, sv_b, mv_a, mv_b):
        assert torch.equal(x.grad, torch.zeros_like(x))


def test_object_loss_coincident_confusers_give_finite_gradients():
    # con_a = con_b = (0,0): d = 0, [1-0]+ = 1 active, the norm's gradient at 0 must not be NaN
    sv_a, sv_b, mv_a, mv_b = pair([[0, 0], [0, 1]], [[0, 0], [0, -1]], [0, 0], [0, 0], grad=True)
    loss = PoseInvariantObjectLoss()(sv_a, sv_b, mv_a, mv_b)
    assert loss.item() == pytest.approx(2.0)  # 0 + 0 + [1-0]+ + [1-0]+
    loss.backward()
    assert all(torch.isfinite(x.grad).all() for x in (sv_a, sv_b, mv_a, mv_b))


def test_object_loss_rejects_bad_shapes():
    sv_a, sv_b, mv_a, mv_b = pair(*ALL_ACTIVE)
    with pytest.raises(ValueError):
        PoseInvariantObjectLoss()(sv_a, sv_b, mv_a[0], mv_b)
    with pytest.raises(ValueError):
        PoseInvariantObjectLoss()(sv_a, torch.zeros(1, 2, 3), mv_a, mv_b)


# ---------------------------------------------------------------------------------------------- category loss

# Mixed case (theta = 0.25):
#   d_sm^a: views (0.6,0), (0,0.2) around mv_a=(0,0): distances 0.6, 0.2 -> mean 0.4 -> [0.4-0.25]+ = 0.15
#   d_sm^b: views (3,0.1), (3,-0.1) around mv_b=(3,0): distances 0.1, 0.1 -> 0.1 -> 0
#   d(mv_a, mv_b) = 3 -> [3-0.25]+ = 2.75                       L = 0.15 + 0 + 2.75 = 2.9
MIXED = ([[0.6, 0], [0, 0.2]], [[3, 0.1], [3, -0.1]], [0, 0], [3, 0])

# All inactive: d_sm^a = d_sm^b = 0.1, d(mv_a,mv_b) = 0.2
CAT_INACTIVE = ([[0, 0.1], [0, -0.1]], [[0.2, 0.1], [0.2, -0.1]], [0, 0], [0.2, 0])


def test_category_d_sm_by_hand():
    sv_a, _, mv_a, _ = pair(*MIXED)
    assert PoseInvariantCategoryLoss.d_sm(sv_a, mv_a).tolist() == pytest.approx([0.4])  # (0.6 + 0.2) / 2


@pytest.mark.parametrize("theta, expected", [(0.25, 2.9), (0.5, 2.5), (0.0, 3.5), (0.05, 0.35 + 0.05 + 2.95)])
def test_category_loss_values_and_theta(theta, expected):
    # theta=0.5:  [0.4-0.5]+ = 0, [0.1-0.5]+ = 0, [3-0.5]+ = 2.5
    # theta=0:    0.4 + 0.1 + 3 = 3.5
    # theta=0.05: 0.35 + 0.05 + 2.95
    assert PoseInvariantCategoryLoss(theta)(*pair(*MIXED)).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "case, expected",
    [
        # d_sm^a only: views (0.6,0), (-0.2,0) around (0,0): mean(0.6, 0.2) = 0.4 -> 0.15; rest as CAT_INACTIVE
        pytest.param(([[0.6, 0], [-0.2, 0]], [[0.2, 0.1], [0.2, -0.1]], [0, 0], [0.2, 0]), 0.15, id="sm-a"),
        # d_sm^b only: views (0.2,0.5), (0.2,-0.3) around (0.2,0): mean(0.5, 0.3) = 0.4 -> 0.15
        pytest.param(([[0, 0.1], [0, -0.1]], [[0.2, 0.5], [0.2, -0.3]], [0, 0], [0.2, 0]), 0.15, id="sm-b"),
        # multi-view only: mv_b=(1,0), views (1,±0.1): d_sm^b=0.1; d(mv_a,mv_b)=1 -> 0.75
        pytest.param(([[0, 0.1], [0, -0.1]], [[1, 0.1], [1, -0.1]], [0, 0], [1, 0]), 0.75, id="mv"),
        pytest.param(CAT_INACTIVE, 0.0, id="none"),
    ],
)
def test_category_loss_each_hinge_alone(case, expected):
    assert PoseInvariantCategoryLoss(0.25)(*pair(*case)).item() == pytest.approx(expected)


def test_category_loss_is_the_mean_over_pairs():
    batch = [torch.cat([x, y]) for x, y in zip(pair(*MIXED), pair(*CAT_INACTIVE), strict=True)]
    assert PoseInvariantCategoryLoss()(*batch).item() == pytest.approx(2.9 / 2)


def test_category_loss_gradients():
    sv_a, sv_b, mv_a, mv_b = pair(*MIXED, grad=True)
    # make d_sm^b active too (views (3,±0.5): d_sm^b = 0.5) so both objects' single views are pulled
    with torch.no_grad():
        sv_b[0, :, 1] = t([0.5, -0.5])
    PoseInvariantCategoryLoss()(sv_a, sv_b, mv_a, mv_b).backward()
    for g in (sv_a.grad, sv_b.grad, mv_a.grad, mv_b.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # d/d sv_a view 0 of mean_k d(c_k, c_mv) = unit((0.6,0) - (0,0)) / V = (0.5, 0)
    assert sv_a.grad[0, 0].tolist() == pytest.approx([0.5, 0.0])

    sv_a, sv_b, mv_a, mv_b = pair(*CAT_INACTIVE, grad=True)
    PoseInvariantCategoryLoss()(sv_a, sv_b, mv_a, mv_b).backward()
    for x in (sv_a, sv_b, mv_a, mv_b):
        assert torch.equal(x.grad, torch.zeros_like(x))


# ---------------------------------------------------------------------------------------------- L-Softmax


def clustered(n_classes: int = 3, per_class: int = 2, views: int = 3, dim: int = 4, seed: int = 0):
    """Unit embeddings (N, V, D) near one axis per class, and per-object labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    centres = torch.eye(dim)[labels]  # (N, D)
    sv = centres.unsqueeze(1) + 0.3 * torch.randn(len(labels), views, dim, generator=g)
    return F.normalize(sv, dim=-1), labels


def test_lsoftmax_finite_for_both_input_layouts():
    torch.manual_seed(0)
    loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4)
    sv, labels = clustered()
    per_object = loss(sv, labels)
    per_view = loss(sv.reshape(-1, 4), labels.repeat_interleave(3))
    assert per_object.dim() == 0 and torch.isfinite(per_object)
    assert per_object.item() == pytest.approx(per_view.item())
    per_object.backward()
    assert torch.isfinite(loss.lsoftmax.W.grad).all() and loss.lsoftmax.W.grad.abs().sum() > 0


def test_lsoftmax_uses_batch_hard_mining():
    torch.manual_seed(0)
    loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4)
    emb, lab = clustered()
    emb, lab = emb.reshape(-1, 4), lab.repeat_interleave(3)
    expected = loss.lsoftmax(emb, lab, BatchHardMiner()(emb, lab))
    assert loss(emb, lab).item() == pytest.approx(expected.item())


def test_lsoftmax_single_category_batch_falls_back_to_no_mining():
    torch.manual_seed(0)
    mined = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4, use_miner=True)
    plain = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4, use_miner=False)
    plain.load_state_dict(mined.state_dict())
    sv, _ = clustered(n_classes=1, per_class=2)
    labels = torch.tensor([2, 2])  # one category: no negatives, the miner finds no triplet
    assert mined.miner(sv.reshape(-1, 4), labels.repeat_interleave(3))[0].numel() == 0
    value = mined(sv, labels)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(plain(sv, labels).item())


def test_lsoftmax_decreases_under_sgd():
    torch.manual_seed(0)
    loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4)
    start, labels = clustered(seed=1)
    raw = torch.nn.Parameter(start.clone())
    opt = torch.optim.SGD([raw, *loss.parameters()], lr=0.5)
    values = []
    for _ in range(30):
        opt.zero_grad()
        value = loss(F.normalize(raw, dim=-1), labels)
        value.backward()
        opt.step()
        values.append(value.item())
    assert all(math.isfinite(v) for v in values)
    assert values[-1] < 0.5 * values[0]


def test_lsoftmax_rejects_bad_input():
    loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4)
    sv, labels = clustered()
    with pytest.raises(ValueError):
        loss(sv, torch.tensor([0, 1, 3, 0, 1, 2]))  # label 3 >= num_classes
    with pytest.raises(ValueError):
        loss(sv, labels[:-1])
    with pytest.raises(ValueError):
        CategoryLSoftmaxLoss(3, 4, gamma=4.5)


# ---------------------------------------------------------------------------------------------- total


def test_parse_loss_terms():
    assert parse_loss_terms("cat,piobj") == ("cat", "piobj")
    assert parse_loss_terms(" piobj , cat,piobj") == ("cat", "piobj")  # canonical order, duplicates collapse
    assert parse_loss_terms("cat,piobj,picat") == LOSS_TERMS
    for bad in ("", "  ", "cat,,piobj"):
        with pytest.raises(ValueError):
            parse_loss_terms(bad)
    with pytest.raises(ValueError, match="cat, piobj, picat"):
        parse_loss_terms("cat,triplet")


def test_loss_config_validates_terms():
    assert LossConfig(terms="picat,cat").terms == ("cat", "picat")
    with pytest.raises(ValueError, match="valid terms"):
        LossConfig(terms=("cat", "bogus"))
    with pytest.raises(ValueError):
        LossConfig(terms=())


def outputs(seed: int, p: int = 2, v: int = 3, dc: int = 4, do: int = 5, single_space: bool = False):
    g = torch.Generator().manual_seed(seed)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=g), dim=-1).requires_grad_()

    sv_obj, mv_obj = unit(p, v, do), unit(p, do)
    if single_space:
        return SimpleNamespace(sv_cat=sv_obj, sv_obj=sv_obj, mv_cat=mv_obj, mv_obj=mv_obj)
    return SimpleNamespace(sv_cat=unit(p, v, dc), sv_obj=sv_obj, mv_cat=unit(p, dc), mv_obj=mv_obj)


def test_piro_loss_total_is_the_sum_of_the_terms():
    torch.manual_seed(0)
    config = LossConfig(lam=2.0, theta=0.1)
    loss = PiroLoss(config, num_classes=3, cat_dim=4)
    a, b, labels = outputs(1), outputs(2), torch.tensor([0, 2])
    out = loss(a, b, labels)
    assert list(out) == ["total", "cat", "piobj", "picat"]
    assert out["total"].item() == pytest.approx(out["cat"].item() + out["piobj"].item() + out["picat"].item())
    assert out["cat"].item() == pytest.approx((loss.cat(a.sv_cat, labels) + loss.cat(b.sv_cat, labels)).item())
    piobj = PoseInvariantObjectLoss(config.alpha, config.beta, config.lam)(a.sv_obj, b.sv_obj, a.mv_obj, b.mv_obj)
    assert out["piobj"].item() == pytest.approx(piobj.item())
    picat = PoseInvariantCategoryLoss(config.theta)(a.sv_cat, b.sv_cat, a.mv_cat, b.mv_cat)
    assert out["picat"].item() == pytest.approx(picat.item())
    out["total"].backward()
    for x in (a.sv_cat, a.sv_obj, a.mv_cat, a.mv_obj, b.sv_cat, b.sv_obj, b.mv_cat, b.mv_obj):
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_piro_loss_cat_term_is_twice_the_mean_over_all_single_views():
    # without mining every view weighs 1: mean_pairs(L_cat^a + L_cat^b) = 2 * mean over all 2*P*V views
    torch.manual_seed(0)
    loss = PiroLoss(LossConfig(terms=("cat",), mine_hard=False), num_classes=3, cat_dim=4)
    a, b, labels = outputs(1), outputs(2), torch.tensor([0, 2])
    out = loss(a, b, labels)
    everything = loss.cat(torch.cat([a.sv_cat, b.sv_cat]), torch.cat([labels, labels]))
    assert out["cat"].item() == pytest.approx(2 * everything.item())


def test_piro_loss_terms_subset():
    torch.manual_seed(0)
    loss = PiroLoss(LossConfig(terms=parse_loss_terms("cat,piobj")), num_classes=3, cat_dim=4)
    out = loss(outputs(1), outputs(2), torch.tensor([1, 1]))
    assert set(out) == {"total", "cat", "piobj"}
    assert out["total"].item() == pytest.approx(out["cat"].item() + out["piobj"].item())

    only_obj = PiroLoss(LossConfig(terms=("piobj",)), num_classes=3, cat_dim=4)
    assert only_obj.cat is None and list(only_obj.parameters()) == []
    out = only_obj(outputs(1), outputs(2), torch.tensor([1, 1]))
    assert set(out) == {"total", "piobj"} and out["total"].item() == pytest.approx(out["piobj"].item())


def test_piro_loss_single_space_variant():
    torch.manual_seed(0)
    loss = PiroLoss(LossConfig(), num_classes=3, cat_dim=5)
    a, b = outputs(1, single_space=True), outputs(2, single_space=True)
    out = loss(a, b, torch.tensor([0, 1]))
    assert all(torch.isfinite(v) for v in out.values())
    out["total"].backward()
    assert a.sv_obj.grad.abs().sum() > 0 and b.mv_obj.grad.abs().sum() > 0


def test_piro_loss_unknown_term_raises():
    with pytest.raises(ValueError, match="valid terms"):
        PiroLoss(LossConfig(terms=("cat", "center")), num_classes=3, cat_dim=4)
