"""Losses of METHOD.md section 3, checked against values worked out by hand on tiny 2-D inputs.

The pose-invariant losses do not require unit-norm inputs, so the hand-made cases use easy points on the axes.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

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

# The released losses/PILosses.py: L = lam * ([beta - d^2(con_a, con_b)]+ + [beta - d(mv_a, mv_b)]+)
#   + [d(mv_a, con_a) - alpha]+ + [d(mv_b, con_b) - alpha]+, mean over pairs; "squared" is piro's default and
#   separation="plain" is the paper's Eq. 7 ([beta - d(con_a, con_b)]+).
# All four hinges active (alpha=0.25, beta=1):
#   closest cross pair a0=(0,0), b0=(0.5,0) (d(a0,b1)=3, d(a1,b0)=2.5, d(a1,b1)=5); d(con_a,con_b)=0.5
#   mv_a=(0,1):   d(mv_a,con_a)=1 -> [1-0.25]+ = 0.75
#   mv_b=(0.5,1): d(mv_b,con_b)=1 -> 0.75
#   confuser separation: squared [1-0.25]+ = 0.75; plain [1-0.5]+ = 0.5
#   multi-view separation: [1-d(mv_a,mv_b)=1-0.5]+ = 0.5
#   L = 0.75 + 0.75 + lam * (0.75 + 0.5)   (plain: 0.75 + 0.75 + lam * (0.5 + 0.5))
ALL_ACTIVE = ([[0, 0], [-2, 0]], [[0.5, 0], [3, 0]], [0, 1], [0.5, 1])

# Every hinge inactive: con_a=(0,0), con_b=(2,0) (d=2 >= 1); d(mv_a,con_a)=0.1, d(mv_b,con_b)=0.2 (< 0.25);
# d(mv_a,mv_b)=sqrt(4+0.01) >= 1.  L = 0.
ALL_INACTIVE = ([[0, 0], [0, 0.1]], [[2, 0], [3, 0]], [0, 0.1], [2, 0.2])


@pytest.mark.parametrize("lam, expected", [(1.0, 2.75), (2.0, 4.0), (0.0, 1.5), (0.5, 2.125)])
def test_object_loss_all_hinges_active_and_lam_scales_both_separations(lam, expected):
    loss = PoseInvariantObjectLoss(alpha=0.25, beta=1.0, lam=lam)(*pair(*ALL_ACTIVE))
    assert loss.item() == pytest.approx(expected)  # 0.75 + 0.75 + lam * (0.75 + 0.5)


@pytest.mark.parametrize("lam, expected", [(1.0, 2.5), (2.0, 3.5), (0.0, 1.5), (0.5, 2.0)])
def test_object_loss_plain_separation_is_the_papers_eq7(lam, expected):
    loss = PoseInvariantObjectLoss(alpha=0.25, beta=1.0, lam=lam, separation="plain")(*pair(*ALL_ACTIVE))
    assert loss.item() == pytest.approx(expected)  # 0.75 + 0.75 + lam * (0.5 + 0.5)


def test_object_loss_squared_vs_plain_separation_on_two_pairs():
    # 2 pairs x 2 views x 2-d. Pair 0: a=(0,0),(0,3); b=(0.6,0),(0,-2) -> confusers a0, b0 at d=0.6 (d^2=0.36);
    #   mv_a=(0,0.1), mv_b=(0.6,0.1): clustering d=0.1 < alpha; d(mv_a,mv_b)=0.6 -> [1-0.6]+ = 0.4.
    #   squared: [1-0.36]+ + 0.4 = 1.04; plain: [1-0.6]+ + 0.4 = 0.8.
    # Pair 1: a=(0,0),(5,0); b=(0,1.2),(0,4) -> confusers a0, b0 at d=1.2 (d^2=1.44), both separations 0;
    #   mv_a=(0,-0.5): d(mv_a,con_a)=0.5 -> 0.25; mv_b=(0,1.3): d=0.1 -> 0; d(mv_a,mv_b)=1.8 -> 0. L = 0.25.
    sv_a = t([[[0, 0], [0, 3]], [[0, 0], [5, 0]]])
    sv_b = t([[[0.6, 0], [0, -2]], [[0, 1.2], [0, 4]]])
    mv_a, mv_b = t([[0, 0.1], [0, -0.5]]), t([[0.6, 0.1], [0, 1.3]])
    squared = PoseInvariantObjectLoss()
    plain = PoseInvariantObjectLoss(separation="plain")
    assert squared.per_pair(sv_a, sv_b, mv_a, mv_b).tolist() == pytest.approx([1.04, 0.25])
    assert plain.per_pair(sv_a, sv_b, mv_a, mv_b).tolist() == pytest.approx([0.8, 0.25])
    assert squared(sv_a, sv_b, mv_a, mv_b).item() == pytest.approx((1.04 + 0.25) / 2)  # mean over pairs, as released
    assert plain(sv_a, sv_b, mv_a, mv_b).item() == pytest.approx((0.8 + 0.25) / 2)
    with pytest.raises(ValueError, match="squared, plain"):
        PoseInvariantObjectLoss(separation="cubed")


def test_object_loss_all_hinges_inactive_is_zero():
    assert PoseInvariantObjectLoss()(*pair(*ALL_INACTIVE)).item() == 0.0


@pytest.mark.parametrize(
    "case, lam1, lam2",  # with the default squared confuser separation
    [
        # clustering a only: inactive case with mv_a=(0,1): d(mv_a,con_a)=1 -> 0.75; d(mv_a,mv_b)=sqrt(4+0.64) >= 1
        pytest.param(([[0, 0], [0, 0.1]], [[2, 0], [3, 0]], [0, 1], [2, 0.2]), 0.75, 0.75, id="cluster-a"),
        # clustering b only: mv_b=(2,-0.5): d(mv_b,con_b)=0.5 -> 0.25; d(mv_a,mv_b)=sqrt(4+0.36) >= 1
        pytest.param(([[0, 0], [0, 0.1]], [[2, 0], [3, 0]], [0, 0.1], [2, -0.5]), 0.25, 0.25, id="cluster-b"),
        # confuser separation only (confusers are views 1/1): con_a=(0,0), con_b=(0.8,0) -> [1-0.8^2]+ = 0.36;
        # mv_a=(-0.2,0), mv_b=(1,0): d to confusers 0.2 (< 0.25), d(mv_a,mv_b)=1.2 >= 1
        pytest.param(([[-0.4, 0], [0, 0]], [[1.2, 0], [0.8, 0]], [-0.2, 0], [1, 0]), 0.36, 0.72, id="confuser-beta"),
        # multi-view separation only: con_a=(0,0), con_b=(1.2,0) (d=1.2 >= 1);
        # mv_a=(0.2,0), mv_b=(1,0): d to confusers 0.2, d(mv_a,mv_b)=0.8 -> [1-0.8]+ = 0.2
        pytest.param(([[0, 0], [-1, 0]], [[1.2, 0], [2, 0]], [0.2, 0], [1, 0]), 0.2, 0.4, id="mv-beta"),
    ],
)
def test_object_loss_each_hinge_alone(case, lam1, lam2):
    assert PoseInvariantObjectLoss(lam=1.0)(*pair(*case)).item() == pytest.approx(lam1)
    assert PoseInvariantObjectLoss(lam=2.0)(*pair(*case)).item() == pytest.approx(lam2)


def test_object_loss_margins():
    # ALL_ACTIVE with alpha=1: the clustering hinges [1-1]+ vanish -> 0 + 0 + (0.75 + 0.5)
    assert PoseInvariantObjectLoss(alpha=1.0)(*pair(*ALL_ACTIVE)).item() == pytest.approx(1.25)
    # ALL_ACTIVE with beta=0.5: separation [0.5-0.25]+ + [0.5-0.5]+ = 0.25 -> 0.75 + 0.75 + 0.25
    assert PoseInvariantObjectLoss(beta=0.5)(*pair(*ALL_ACTIVE)).item() == pytest.approx(1.75)
    # beta=2: separation [2-0.25]+ + [2-0.5]+ = 3.25 -> 1.5 + 3.25
    assert PoseInvariantObjectLoss(beta=2.0)(*pair(*ALL_ACTIVE)).item() == pytest.approx(4.75)
    # plain, beta=2: [2-0.5]+ + [2-0.5]+ = 3 -> 1.5 + 3
    assert PoseInvariantObjectLoss(beta=2.0, separation="plain")(*pair(*ALL_ACTIVE)).item() == pytest.approx(4.5)


def test_object_loss_is_the_mean_over_pairs():
    a = pair(*ALL_ACTIVE)
    b = pair(*ALL_INACTIVE)
    batch = [torch.cat([x, y]) for x, y in zip(a, b, strict=True)]
    loss = PoseInvariantObjectLoss()
    assert loss(*batch).item() == pytest.approx((2.75 + 0.0) / 2)
    assert loss.per_pair(*batch).tolist() == pytest.approx([2.75, 0.0])


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
    loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4, train_weights=True)
    sv, labels = clustered()
    per_object = loss(sv, labels)
    per_view = loss(sv.reshape(-1, 4), labels.repeat_interleave(3))
    assert per_object.dim() == 0 and torch.isfinite(per_object)
    assert per_object.item() == pytest.approx(per_view.item())
    per_object.backward()
    assert torch.isfinite(loss.lsoftmax.W.grad).all() and loss.lsoftmax.W.grad.abs().sum() > 0


# A hand-made half batch (2 objects x 2 views, unit 2-d embeddings given by their angle in degrees) and an
# independent reading of the released procedure: pml's BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard")
# keeps every view with a positive and a negative, pairs it with its farthest positive and its closest negative, and
# returns (anchors, positives, anchors, negatives); LargeMarginSoftmaxLoss weighs each view by its count in those four
# lists over the largest count, and averages weight x L-Softmax over all views.
HALF_A = ([0, 90, 60, 180], [0, 0, 1, 1])  # views of object 0 (category 0), then of object 1 (category 1)
CLASS_ANGLES = [0, 90]  # the L-Softmax class weights W, unit vectors (category 0 along x, category 1 along y)


def unit_vectors(degrees) -> torch.Tensor:
    radians = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    return torch.stack([torch.cos(radians), torch.sin(radians)], dim=-1).float()


def mined_by_hand(degrees, labels):
    """The released miner's tuple, from angular gaps (on the unit circle the chord grows with the angle)."""

    def gap(i, j):
        return min(abs(degrees[i] - degrees[j]) % 360, 360 - abs(degrees[i] - degrees[j]) % 360)

    anchors, positives, negatives = [], [], []
    for i in range(len(degrees)):
        pos = [j for j in range(len(degrees)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(degrees)) if labels[j] != labels[i]]
        if pos and neg:
            anchors.append(i)
            positives.append(max(pos, key=lambda j: gap(i, j)))
            negatives.append(min(neg, key=lambda j: gap(i, j)))
    return anchors, positives, anchors, negatives


def weights_of(mined, n):
    counts = [sum(index.count(i) for index in mined) for i in range(n)]
    return [c / max(counts) for c in counts] if max(counts) else [1.0] * n


def lsoftmax_by_hand(degrees, labels, weights, margin=4):
    """L-Softmax (Liu et al. 2016) with unit embeddings and unit class weights at CLASS_ANGLES:
    target logit psi(theta) = (-1)^k cos(m theta) - 2k, k = floor(m theta / pi); other logits cos(theta)."""
    total = 0.0
    for degree, label, weight in zip(degrees, labels, weights, strict=True):
        cosines = [math.cos(math.radians(degree - c)) for c in CLASS_ANGLES]
        theta = math.acos(max(-1.0, min(1.0, cosines[label])))
        k = math.floor(margin * theta / math.pi)
        logits = list(cosines)
        logits[label] = (-1) ** k * math.cos(margin * theta) - 2 * k
        total += weight * (math.log(sum(math.exp(z) for z in logits)) - logits[label])
    return total / len(degrees)


def lsoftmax_with_known_weights(**kwargs) -> CategoryLSoftmaxLoss:
    loss = CategoryLSoftmaxLoss(num_classes=2, embedding_size=2, gamma=4, **kwargs)
    with torch.no_grad():
        loss.lsoftmax.W.copy_(unit_vectors(CLASS_ANGLES).T)  # pml stores W as (embedding_size, num_classes)
    return loss


def test_lsoftmax_mined_pairs_and_value_by_hand():
    degrees, labels = HALF_A
    # Hardest positive of each view: the other view of its object. Hardest negative (closest other-category view):
    # 0 deg -> 60 (view 2); 90 -> 60 (view 2); 60 -> 90 (view 1); 180 -> 90 (view 1).
    expected = ([0, 1, 2, 3], [1, 0, 3, 2], [0, 1, 2, 3], [2, 2, 1, 1])
    assert mined_by_hand(degrees, labels) == expected
    loss = lsoftmax_with_known_weights()
    mined = loss.miner(unit_vectors(degrees), torch.tensor(labels))
    assert len(mined) == 4 and [m.tolist() for m in mined] == [list(x) for x in expected]  # pairs, not triplets
    # counts (anchor twice + positive + negative): view 0: 2+1+0, view 1: 2+1+2, view 2: 2+1+2, view 3: 2+1+0
    assert weights_of(expected, 4) == [0.6, 1.0, 1.0, 0.6]
    # Per view (m = 4): 0 deg, class 0: theta 0, psi 1, other cos 90 = 0           -> log(e + 1) - 1
    #                   90 deg, class 0: theta 90, k 2, psi cos 360 - 4 = -3, other 1 -> log(e^-3 + e) + 3
    #                   60 deg, class 1: theta 30, k 0, psi cos 120 = -0.5, other 0.5 -> log(e^-0.5 + e^0.5) + 0.5
    #                   180 deg, class 1: theta 90, psi -3, other cos 180 = -1        -> log(e^-3 + e^-1) + 3
    e = math.e
    per_view = [math.log(e + 1) - 1, math.log(e**-3 + e) + 3, math.log(e**-0.5 + e**0.5) + 0.5, math.log(e**-3 + e**-1) + 3]
    by_hand = (0.6 * per_view[0] + per_view[1] + per_view[2] + 0.6 * per_view[3]) / 4
    assert lsoftmax_by_hand(degrees, labels, [0.6, 1.0, 1.0, 0.6]) == pytest.approx(by_hand)
    sv = unit_vectors(degrees).reshape(2, 2, 2)  # (objects, views, D)
    assert loss(sv, torch.tensor([0, 1])).item() == pytest.approx(by_hand, rel=1e-5)
    # pml's BatchHardMiner (triplets: each anchor counted once) weighs [0.5, 1, 1, 0.5]: another value
    triplet_weighted = (0.5 * per_view[0] + per_view[1] + per_view[2] + 0.5 * per_view[3]) / 4
    assert triplet_weighted != pytest.approx(by_hand, rel=1e-3)


def test_lsoftmax_single_category_batch_mines_nothing_and_weighs_every_view_one():
    loss = lsoftmax_with_known_weights()
    degrees, labels = [0, 90, 60, 180], [1, 1, 1, 1]  # one category: no negatives, the miner finds no pair
    assert all(m.numel() == 0 for m in loss.miner(unit_vectors(degrees), torch.tensor(labels)))
    value = loss(unit_vectors(degrees).reshape(2, 2, 2), torch.tensor([1, 1]))
    assert value.item() == pytest.approx(lsoftmax_by_hand(degrees, labels, [1.0] * 4), rel=1e-5)


def test_lsoftmax_weights_stay_at_their_init_unless_trained():
    for train_weights in (False, True):
        torch.manual_seed(0)
        loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4, train_weights=train_weights)
        assert loss.lsoftmax.W.requires_grad is train_weights
        assert "lsoftmax.W" in loss.state_dict()  # saved in checkpoints either way
        start, labels = clustered()
        raw = torch.nn.Parameter(start.clone())
        initial = loss.lsoftmax.W.detach().clone()
        optimizer = torch.optim.Adam([raw, *loss.parameters()], lr=0.1)  # as train.py: the criterion's parameters too
        loss(F.normalize(raw, dim=-1), labels).backward()
        optimizer.step()
        assert not torch.equal(raw.detach(), start)  # the embeddings did train
        assert torch.equal(loss.lsoftmax.W.detach(), initial) is not train_weights
    # the random init depends on the seed only
    torch.manual_seed(5)
    first = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4).lsoftmax.W.detach().clone()
    torch.manual_seed(5)
    assert torch.equal(CategoryLSoftmaxLoss(num_classes=3, embedding_size=4).lsoftmax.W.detach(), first)


@pytest.mark.parametrize("train_weights", [False, True])
def test_lsoftmax_decreases_under_sgd(train_weights):
    torch.manual_seed(0)
    loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4, train_weights=train_weights)
    start, labels = clustered(seed=1)
    raw = torch.nn.Parameter(start.clone())
    opt = torch.optim.SGD([raw, *loss.parameters()], lr=2.0)
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


def test_piro_loss_cat_mines_each_half_of_the_pair_batch_and_adds_the_two():
    # Pairs (a0, b0) of category 0 and (a1, b1) of category 1, 2 views each; the b-views at 0, 30 | 90, 120 degrees.
    half_b = ([0, 30, 90, 120], [0, 0, 1, 1])
    loss = PiroLoss(LossConfig(terms=("cat",)), num_classes=2, cat_dim=2)
    with torch.no_grad():
        loss.cat.lsoftmax.W.copy_(unit_vectors(CLASS_ANGLES).T)
    a = SimpleNamespace(sv_cat=unit_vectors(HALF_A[0]).reshape(2, 2, 2))
    b = SimpleNamespace(sv_cat=unit_vectors(half_b[0]).reshape(2, 2, 2))
    out = loss(a, b, torch.tensor([0, 1]))
    halves = [lsoftmax_by_hand(d, lab, weights_of(mined_by_hand(d, lab), 4)) for d, lab in (HALF_A, half_b)]
    assert out["cat"].item() == pytest.approx(halves[0] + halves[1], rel=1e-5)  # L_CAT_A + L_CAT_N, as released
    # mining all eight views at once would weigh them otherwise (here: another value)
    together = (HALF_A[0] + half_b[0], HALF_A[1] + half_b[1])
    joint = 2 * lsoftmax_by_hand(*together, weights_of(mined_by_hand(*together), 8))
    assert joint != pytest.approx(halves[0] + halves[1], rel=1e-3)


def test_loss_config_passes_the_released_options_to_the_terms():
    default = PiroLoss(LossConfig(), num_classes=3, cat_dim=4)
    assert default.piobj.separation == "squared" and default.cat.lsoftmax.W.requires_grad is False
    other = PiroLoss(LossConfig(separation="plain", train_lsoftmax_weights=True), num_classes=3, cat_dim=4)
    assert other.piobj.separation == "plain" and other.cat.lsoftmax.W.requires_grad is True
    with pytest.raises(ValueError, match="separation 'euclid'"):
        LossConfig(separation="euclid")


def test_lsoftmax_keeps_its_weights_in_fp32_for_half_precision_embeddings():
    torch.manual_seed(0)
    loss = CategoryLSoftmaxLoss(num_classes=3, embedding_size=4)
    initial = loss.lsoftmax.W.detach().clone()
    sv, labels = clustered()
    value = loss(sv.to(torch.bfloat16), labels)
    assert torch.isfinite(value) and value.dtype == torch.float32
    assert loss.lsoftmax.W.dtype == torch.float32 and torch.equal(loss.lsoftmax.W.detach(), initial)
