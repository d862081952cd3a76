"""PiRO's train-time affine against the released code's: torchvision's RandomAffine on the uint8 PIL image."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from piro_cli.data.augment import ViewAugment
from piro_cli.data.store import normalize_views


def released_affine() -> T.RandomAffine:
    # ConfigLearn.py: RandomAffine(5, translate=None, scale=(0.9, 1.1), shear=[-1, 1, -1, 1], fillcolor=0)
    return T.RandomAffine(5, translate=None, scale=(0.9, 1.1), shear=[-1, 1, -1, 1], fill=0)


@pytest.mark.parametrize("seed", range(6))
def test_view_affine_is_the_released_affine_on_the_pil_image(seed):
    # pixels 1..255 so that only the fill is black
    image = np.random.default_rng(seed).integers(1, 256, (48, 64, 3), dtype=np.uint8)
    torch.manual_seed(seed)  # the same draw of angle, scale and both shears
    on_pil = np.asarray(released_affine()(Image.fromarray(image))).copy()
    torch.manual_seed(seed)
    ours = ViewAugment().affine(normalize_views(image))
    want = normalize_views(on_pil)
    mismatched = ((ours - want).abs().amax(0) > 1e-5).float().mean().item()
    # PIL and grid_sample round a pixel centre differently at most along a few edge pixels
    assert mismatched < 0.005, mismatched


def test_view_affine_fills_black_and_shears_both_axes():
    image = np.full((40, 40, 3), 200, dtype=np.uint8)
    black = normalize_views(np.zeros((1, 1, 3), dtype=np.uint8))[:, 0, 0]
    affine = ViewAugment().affine
    filled = 0
    for seed in range(20):
        torch.manual_seed(seed)
        params = affine.make_params([normalize_views(image)])
        assert abs(params["angle"]) <= 5 and 0.9 <= params["scale"] <= 1.1
        assert all(abs(s) <= 1 for s in params["shear"]) and params["shear"][1] != 0  # y is sheared too
        torch.manual_seed(seed)
        out = affine(normalize_views(image))
        is_black = (out - black.view(3, 1, 1)).abs().amax(0) < 1e-6
        filled += int(is_black.sum())
    assert filled > 0  # some draws shrink or rotate the image and uncover black corners
