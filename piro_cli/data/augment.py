"""Train-time augmentation of the released code: random horizontal flip and a small random affine."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


class ViewAugment(torch.nn.Module):
    """Augments every view independently: flip p=0.5, rotation +-5 deg, scale 0.9-1.1, shear +-5 deg.

    Works on normalised float tensors (..., 3, H, W) on any device, so on a GPU
    the augmentation runs there. Pixels moved in from outside the image are 0,
    i.e. the mean colour after normalisation.
    """

    def __init__(self) -> None:
        super().__init__()
        # The released code's affine: degrees=5, scale=(0.9, 1.1), "small shear" (METHOD.md section 4); 5 degrees chosen.
        self.transform = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomAffine(degrees=5, scale=(0.9, 1.1), shear=5)])

    def forward(self, views: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = views.shape
        flat = views.reshape(-1, *shape[-3:])
        if generator is not None:
            # torchvision draws its parameters from the global RNG; fork it so that a seeded run stays reproducible.
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = torch.stack([self.transform(image) for image in flat])
        else:
            out = torch.stack([self.transform(image) for image in flat])
        return out.reshape(shape)
