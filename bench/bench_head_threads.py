"""One head-only training step (the `--freeze-backbone` path) with 1 and 2 torch threads, interleaved.

Cached features of 4 pairs x 8 views (1280-d, efficientnet_lite0's width), heads 256 / 512, the full
PiRO loss and an Adam step. Shows why training from cached features runs single-threaded on a CPU.

    python bench/bench_head_threads.py
"""

from __future__ import annotations

import os
import time

import torch

from piro_cli.losses import LossConfig, PiroLoss
from piro_cli.models.pan import PAN, PANConfig


def main() -> None:
    torch.manual_seed(0)
    model = PAN(PANConfig(backbone="tiny", pretrained=False, cat_dim=256, obj_dim=512))
    # Heads sized for efficientnet_lite0 features; the backbone is not used on this path.
    model.feat_dim = 1280
    model.obj_head = torch.nn.Linear(1280, 512)
    model.cat_head = torch.nn.Linear(1280, 256)
    criterion = PiroLoss(LossConfig(), num_classes=25, cat_dim=256)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(criterion.parameters()), lr=1e-5)
    feats, labels = torch.randn(8, 8, 1280), torch.randint(0, 25, (4,))

    def step() -> None:
        out = model.forward_features(feats)
        a = type(out)(**{k: v[:4] for k, v in vars(out).items()})
        b = type(out)(**{k: v[4:] for k, v in vars(out).items()})
        loss = criterion(a, b, labels)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    best: dict[int, float] = {}
    for _ in range(3):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            step()
            start = time.perf_counter()
            for _ in range(30):
                step()
            best[threads] = min(best.get(threads, float("inf")), (time.perf_counter() - start) / 30)
    load = os.getloadavg()[0]
    print(f"cpu count {os.cpu_count()}, load average {load:.2f}")
    for threads, seconds in best.items():
        print(f"{threads} thread(s): {seconds * 1000:.1f} ms/step")


if __name__ == "__main__":
    main()
