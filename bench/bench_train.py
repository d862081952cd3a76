"""Training benchmarks on this machine.

1. `compare`: dual vs single space on ObjectPI train with a seeded 20% validation
   split, efficientnet_lite0 with a frozen backbone, the same seed: wall time and
   the eight PICR tasks on the validation objects (best epoch by validation mean).
2. `step`: one full fine-tuning step (forward, backward, Adam) at batch 1 pair of
   8 views at 224x224, for efficientnet_lite0 and vgg16 (random init: the same
   compute as ImageNet weights, which this offline machine cannot download).

    python bench/bench_train.py compare --data data/objectpi.h5 --epochs 25
    python bench/bench_train.py step
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from piro_cli.losses import LossConfig, PiroLoss
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.retrieval.picr import SHORT_NAMES as SHORT
from piro_cli.retrieval.picr import TASKS
from piro_cli.runs import load_checkpoint
from piro_cli.training import TrainConfig, train


def compare(args: argparse.Namespace) -> None:
    rows = []
    for dual in (True, False):
        config = TrainConfig(
            data=args.data, name=f"bench-{'dual' if dual else 'single'}", backbone="efficientnet_lite0", dual=dual,
            freeze_backbone=True, epochs=args.epochs, val_fraction=0.2, seed=args.seed, early_stop_rho=args.early_stop_rho,
            cat_dim=args.cat_dim, obj_dim=args.obj_dim, feature_passes=args.feature_passes,
        )  # fmt: skip
        start = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - start
        best = load_checkpoint(result.best_path)
        metrics = best["metrics"]
        rows.append((("dual" if dual else "single"), wall, result.epochs_done, int(best["epoch"]), metrics, result.stop_reason))
        print(
            f"{'dual' if dual else 'single'}: {wall:.0f} s, {result.epochs_done} epochs ({result.stop_reason}), run {result.run_dir}",
            flush=True,
        )
    print()
    print("| space | wall time | epochs (best) | " + " | ".join(SHORT[t] for t in TASKS) + " | mean |")
    print("|---" * (len(TASKS) + 4) + "|")
    for space, wall, epochs, best_epoch, metrics, _ in rows:
        values = " | ".join(f"{metrics[f'val_{t}']:.2f}" for t in TASKS)
        print(f"| {space} | {wall:.0f} s | {epochs} ({best_epoch}) | {values} | {metrics['val_mean']:.2f} |")


def step(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    print(f"cpu count {os.cpu_count()}, torch threads {torch.get_num_threads()}, device cpu, batch 1 pair x 8 views x 224x224")
    for backbone in args.backbones.split(","):
        model = PAN(PANConfig(backbone=backbone, pretrained=False, cat_dim=2048, obj_dim=2048))
        criterion = PiroLoss(LossConfig(), num_classes=25, cat_dim=2048)
        optimizer = torch.optim.Adam(list(model.parameters()) + list(criterion.parameters()), lr=1e-5)
        views = torch.randn(2, 8, 3, 224, 224)
        labels = torch.tensor([3])
        times = []
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            out = model(views)
            a = type(out)(**{k: v[:1] for k, v in vars(out).items()})
            b = type(out)(**{k: v[1:] for k, v in vars(out).items()})
            loss = criterion(a, b, labels)["total"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i > 0:  # the first step warms up allocators and kernels
                times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"{backbone}: {params:.1f} M parameters, step {statistics.median(times):.2f} s (median of {len(times)}, min {min(times):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--data", default="data/objectpi.h5")
    c.add_argument("--epochs", type=int, default=25)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--cat-dim", type=int, default=256, help="paper Fig. 7: ObjectPI wants 256 (category) / 512 (object)")
    c.add_argument("--obj-dim", type=int, default=512)
    c.add_argument("--feature-passes", type=int, default=2)
    c.add_argument("--early-stop-rho", type=float, default=1.5)
    s = sub.add_parser("step")
    s.add_argument("--backbones", default="efficientnet_lite0,vgg16")
    s.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    np.set_printoptions(precision=3)
    compare(args) if args.command == "compare" else step(args)


if __name__ == "__main__":
    main()
