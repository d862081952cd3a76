"""One training step from cached activations at each `--train-from` cut, against heads only (--freeze-backbone).

efficientnet_lite0 (or --backbone) with ImageNet weights, a batch of 4 pairs x 8 views at --size (ObjectPI's
recipe), the full PiRO dual loss and fused Adam, all torch threads: forward from the cut through the rest of the
backbone and the heads, backward, optimiser step. Settings run round-robin; the best of the rounds is printed
with the ObjectPI epoch time it implies (382 objects x 10 pairs / 4 per step) and the size of the float16
activation cache for ObjectPI's 382 x 8 views per pass.

    python bench/bench_cut_step.py [--backbone efficientnet_lite0] [--size 224] [--dims 256 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from piro_cli.losses import LossConfig, PiroLoss
from piro_cli.models.backbones import cut_points
from piro_cli.models.pan import PAN, PANConfig

PAIRS, VIEWS, CLASSES, OBJECTS = 4, 8, 25, 382
OBJECTPI_STEPS = OBJECTS * 10 // PAIRS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dims", type=int, nargs=2, default=(256, 512), metavar=("CAT", "OBJ"))
    parser.add_argument("--cuts", nargs="*", default=None, help="default: the last four cut points")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = PAN(PANConfig(backbone=args.backbone, cat_dim=args.dims[0], obj_dim=args.dims[1]))
    criterion = PiroLoss(LossConfig(), num_classes=CLASSES, cat_dim=args.dims[0])
    images = torch.randn(2 * PAIRS, VIEWS, 3, args.size, args.size)
    labels = torch.randint(0, CLASSES, (PAIRS,))
    cuts = args.cuts if args.cuts is not None else list(cut_points(args.backbone))[-4:]
    settings: dict[str, tuple] = {}
    model.eval()
    with torch.no_grad():
        feats = model.features(images)
    for stage in [None, *cuts]:
        for p in model.parameters():
            p.requires_grad_(False)
        trainable = list(model.head_parameters())
        if stage is None:
            cached, size = feats, feats[0, 0].numel()
        else:
            with torch.no_grad():
                cached = model.activations(images, stage).half()
            size = cached[0, 0].numel()
            trainable = list(model.cut(stage).above.parameters()) + trainable
        for p in trainable:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(trainable, lr=1e-5, fused=True)
        settings[stage or "heads only"] = (stage, cached, optimizer, size, sum(p.numel() for p in trainable))

    def step(stage, cached, optimizer) -> None:
        model.train()
        for module in model.backbone.modules():  # as piro trains a cut: BatchNorm keeps its ImageNet statistics
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
        f = cached if stage is None else model.features_from(cached.float(), stage)
        out = model.forward_features(f)
        a = type(out)(**{k: v[:PAIRS] for k, v in vars(out).items()})
        b = type(out)(**{k: v[PAIRS:] for k, v in vars(out).items()})
        loss = criterion(a, b, labels)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    best = {name: float("inf") for name in settings}
    for _ in range(args.rounds):
        for name, (stage, cached, optimizer, _, _) in settings.items():
            step(stage, cached, optimizer)
            start = time.perf_counter()
            for _ in range(args.steps):
                step(stage, cached, optimizer)
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    print(
        f"{args.backbone} at {args.size}px, heads {args.dims[0]}/{args.dims[1]}, {torch.get_num_threads()} threads, "
        f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )
    print("| trained from | trainable parameters | ms/step | ObjectPI epoch | cache per pass (float16; heads only: float32) |")
    print("|---|--:|--:|--:|--:|")
    for name, (stage, _, _, size, params) in settings.items():
        per_pass = OBJECTS * VIEWS * size * (4 if stage is None else 2)
        print(
            f"| {name} | {params / 1e6:.2f} M | {best[name] * 1000:.0f} | {best[name] * OBJECTPI_STEPS / 60:.1f} min "
            f"| {per_pass / 2**20:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
