"""Train-time augmentations, by name (`--augmentation`):

- `piro`: the released PiRO code's random horizontal flip and `RandomAffine(5, scale=(0.9, 1.1),
  shear=[-1, 1, -1, 1], fillcolor=0)` (ConfigLearn.py; METHOD.md section 4);
- `pies`: the released PIEs code's RandomResizedCrop (scale 0.8-1) and random horizontal flip (METHOD.md section 8).

Both work on normalised float tensors (..., 3, H, W) on any device, each view augmented independently, and
draw their randomness from a torch.Generator when given one, so a seeded run stays reproducible.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from piro_cli.errors import OptionError


class Augmentation(torch.nn.Module):
    """Applies `transform_for(H, W)` to every image of (..., 3, H, W) independently."""

    def transform_for(self, height: int, width: int) -> v2.Transform:
        raise NotImplementedError

    def forward(self, views: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = views.shape
        flat = views.reshape(-1, *shape[-3:])
        transform = self.transform_for(int(shape[-2]), int(shape[-1]))
        if generator is not None:
            # torchvision draws its parameters from the global RNG; fork it so that a seeded run stays reproducible.
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = torch.stack([transform(image) for image in flat])
        else:
            out = torch.stack([transform(image) for image in flat])
        return out.reshape(shape)


class ViewAugment(Augmentation):
    """PiRO's, as released: flip p=0.5, then rotation +-5 deg, scale 0.9-1.1 and shear +-1 deg on each axis, nearest
    neighbour, pixels moved in from outside the image black.

    The released code applies the affine to the PIL image before normalisation, so its fill is black; here the
    views are already normalised, so the fill is black's normalised value. With nearest-neighbour sampling the
    result is the normalised affine of the uint8 image (tests/test_augment.py checks it against torchvision on PIL).
    """

    def __init__(self) -> None:
        super().__init__()
        from piro_cli.data.store import IMAGENET_MEAN, IMAGENET_STD

        black = [-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
        self.affine = v2.RandomAffine(degrees=5, scale=(0.9, 1.1), shear=[-1.0, 1.0, -1.0, 1.0], fill=black)
        self.transform = v2.Compose([v2.RandomHorizontalFlip(0.5), self.affine])

    def transform_for(self, height: int, width: int) -> v2.Transform:
        return self.transform


class PIEsAugment(Augmentation):
    """The PIEs code's: RandomResizedCrop (area 0.8-1 of the image, aspect ratio 3/4-4/3) back to the image's own
    size, then a horizontal flip with p=0.5.

    The released code crops its 256-pixel images to 224; piro's stored views are already 224 (the prepared size),
    so the crop is resized back to the stored size, which is 224 for the paper's datasets.
    """

    def transform_for(self, height: int, width: int) -> v2.Transform:
        return v2.Compose([v2.RandomResizedCrop((height, width), scale=(0.8, 1.0), antialias=True), v2.RandomHorizontalFlip(0.5)])


AUGMENTATIONS: dict[str, type[Augmentation]] = {"piro": ViewAugment, "pies": PIEsAugment}


def build_augmentation(name: str) -> Augmentation:
    """The augmentation called `name` (see the module docstring)."""
    if name not in AUGMENTATIONS:
        raise OptionError("{augmentation} {given!r}: choose one of {known}", given=name, known=", ".join(AUGMENTATIONS))
    return AUGMENTATIONS[name]()
