"""Evaluation details of the released code: the PIEs test crop, which arithmetic and crop a run is embedded with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from piro_cli.inference.run import PIES_TEST_CROP, run_center_crop, run_precision
from piro_cli.models.pan import crop_center


@pytest.mark.parametrize("size", [224, 32, 17])
def test_center_crop_is_torchvisions_center_crop_resized_back(size):
    images = torch.rand(2, 3, size, size)
    crop = round(size * PIES_TEST_CROP)
    reference = v2.Compose([v2.CenterCrop(crop), v2.Resize(size, antialias=False)])  # bilinear by default
    assert torch.allclose(crop_center(images, PIES_TEST_CROP), reference(images), atol=1e-6)


def test_center_crop_by_hand():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    # the central 2x2 is [[5, 6], [9, 10]]; doubled bilinearly (half-pixel centres) its corners stay 5, 6, 9, 10
    out = crop_center(image, 0.5)
    assert out.shape == (1, 1, 4, 4)
    assert out[0, 0, 0, 0] == 5 and out[0, 0, 0, 3] == 6 and out[0, 0, 3, 0] == 9 and out[0, 0, 3, 3] == 10
    assert out[0, 0, 1, 1] == pytest.approx(5 + 0.25 * 1 + 0.25 * 4)  # a quarter of the way to 6 and to 9


@pytest.mark.parametrize(
    ("method", "cropped"),
    [("pi-cnn", True), ("mv-cnn", True), ("pi-tc", True), ("piro-dual", False), ("backbone", False), (None, False), (5, False)],
)
def test_the_pies_baselines_are_evaluated_on_the_crop(method, cropped):
    assert run_center_crop({"train_config": {"method": method}}) is cropped


def test_run_precision_of_old_and_damaged_runs():
    from piro_cli.errors import PiroError

    assert run_precision({"train_config": {}}) == "auto"  # runs from before --precision
    assert run_precision({"train_config": {"precision": "fp32"}}) == "fp32"
    with pytest.raises(PiroError, match="precision 'x' is not one of"):
        run_precision({"path": "runs/a/best.pt", "train_config": {"precision": "x"}})


# ----------------------------------------------------------------------------- L_cat as pytorch-metric-learning 1.6.3


def lsoftmax_pml163(emb, labels, weights_matrix, margin=4):
    """The released environment's L_cat in float64 numpy, written from pytorch-metric-learning 1.6.3's source
    (losses/large_margin_softmax_loss.py, miners/batch_easy_hard_miner.py, utils/loss_and_miner_utils.py
    convert_to_weights, reducers/mean_reducer.py): BatchEasyHardMiner(hard, hard) on L2-normalised Euclidean
    distances gives, per view with a positive and a negative in the batch, (anchor, farthest positive, anchor,
    closest negative); each view weighs its count in those four lists over the largest count (0 if absent, all 1
    when nothing is mined); the L-Softmax replaces the target logit cos(theta) by (-1)^k cos(m theta) - 2k,
    k = floor(theta m / pi), scales every logit by |x| |W_c|, and the weighted cross-entropies are averaged."""
    emb, w = np.asarray(emb, np.float64), np.asarray(weights_matrix, np.float64)
    labels = np.asarray(labels)
    m = len(emb)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.sqrt(np.maximum(((unit[:, None] - unit[None]) ** 2).sum(-1), 0))
    mined = []
    for i in range(m):
        pos = [j for j in range(m) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(m) if labels[j] != labels[i]]
        if pos and neg:
            mined += [i, pos[int(np.argmax(dist[i, pos]))], i, neg[int(np.argmin(dist[i, neg]))]]
    if mined:
        counts = np.bincount(mined, minlength=m).astype(np.float64)
        view_weights = counts / counts.max()
    else:
        view_weights = np.ones(m)
    norms_x, norms_w = np.linalg.norm(emb, axis=1), np.linalg.norm(w, axis=0)
    cosine = emb @ w / np.outer(norms_x, norms_w)
    target = cosine[np.arange(m), labels]
    theta = np.arccos(np.clip(target, -1, 1))
    k = np.floor(theta / (np.pi / margin))
    psi = (-1) ** k * np.cos(margin * theta) - 2 * k
    logits = cosine.copy()
    logits[np.arange(m), labels] = psi
    logits *= np.outer(norms_x, norms_w)
    shifted = logits - logits.max(1, keepdims=True)
    nll = -(shifted[np.arange(m), labels] - np.log(np.exp(shifted).sum(1)))
    return float((nll * view_weights).mean())


@pytest.mark.parametrize("seed", range(4))
def test_category_lsoftmax_gives_pml_163s_values(seed):
    from piro_cli.losses.category import CategoryLSoftmaxLoss

    generator = torch.Generator().manual_seed(seed)
    classes, dim = 5, 12
    loss = CategoryLSoftmaxLoss(classes, dim, gamma=4)
    weights_matrix = torch.randn(dim, classes, generator=generator)
    loss.lsoftmax.W.data.copy_(weights_matrix)
    labels = torch.randint(0, classes, (4,), generator=generator)  # 4 objects x 6 views, categories may repeat
    sv = torch.randn(4, 6, dim, generator=generator)
    want = lsoftmax_pml163(sv.reshape(24, dim).numpy(), labels.repeat_interleave(6).numpy(), weights_matrix.numpy())
    assert loss(sv, labels).item() == pytest.approx(want, rel=1e-5)
    # one category only: nothing mined, every view weighs 1
    same = torch.zeros(4, dtype=torch.long)
    want = lsoftmax_pml163(sv.reshape(24, dim).numpy(), np.zeros(24, dtype=int), weights_matrix.numpy())
    assert loss(sv, same).item() == pytest.approx(want, rel=1e-5)
