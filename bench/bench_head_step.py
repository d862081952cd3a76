"""One head-only training step (the cached-feature path: --freeze-backbone) under each CPU setting, interleaved.

Cached features of 4 pairs x 8 views (1280-d, efficientnet_lite0's width), the full PiRO dual loss and an Adam
step, at the heads' sizes 256/512 and the paper's 2048/2048. For each size it times every combination of
the optimiser (Adam with torch's default for-each kernels, or `fused=True`), torch threads (1 or all) and the
heads' precision (fp32, or bf16 autocast where the CPU has native bf16), round-robin so that a change in the
machine's load touches all alike, and prints the best of the rounds per setting with its ratio to the baseline
(for-each Adam, 1 thread, fp32) and the epoch time it implies for ObjectPI (382 objects x 10 pairs / 4 per step).
The last setting, fused Adam on all threads with `zero_grad(set_to_none=False)`, keeps the gradient buffers from
step to step instead of freeing and re-allocating them (at 2048/2048, 39 M parameters: 156 MB a step).

    python bench/bench_head_step.py [--rounds 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import torch

from piro_cli.hardware import cpu_has_native_bf16, keep_freed_memory
from piro_cli.losses import LossConfig, PiroLoss
from piro_cli.models.pan import PAN, PANConfig

FEAT_DIM, PAIRS, VIEWS, CLASSES = 1280, 4, 8, 25
OBJECTPI_STEPS = 382 * 10 // PAIRS


def build(cat_dim: int, obj_dim: int, fused: bool):
    torch.manual_seed(0)
    model = PAN(PANConfig(backbone="tiny", pretrained=False, cat_dim=cat_dim, obj_dim=obj_dim))
    # heads sized for efficientnet_lite0 features; the backbone is not used on this path
    model.feat_dim = FEAT_DIM
    model.obj_head = torch.nn.Linear(FEAT_DIM, obj_dim)
    model.cat_head = torch.nn.Linear(FEAT_DIM, cat_dim)
    model.train()
    criterion = PiroLoss(LossConfig(), num_classes=CLASSES, cat_dim=cat_dim)
    params = [p for p in list(model.head_parameters()) + list(criterion.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5, fused=fused)
    feats, labels = torch.randn(2 * PAIRS, VIEWS, FEAT_DIM), torch.randint(0, CLASSES, (PAIRS,))

    def step(bf16: bool, keep_grads: bool = False) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.forward_features(feats)
        a = type(out)(**{k: v[:PAIRS].float() for k, v in vars(out).items()})
        b = type(out)(**{k: v[PAIRS:].float() for k, v in vars(out).items()})
        loss = criterion(a, b, labels)["total"]
        optimizer.zero_grad(set_to_none=not keep_grads)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    keep_freed_memory()  # as the piro command does at start (bench/bench_malloc.py measures what it changes)
    cores = os.cpu_count() or 1
    precisions = [False, True] if cpu_has_native_bf16() else [False]
    print(f"cpu count {cores}, native bf16: {cpu_has_native_bf16()}, load average {os.getloadavg()[0]:.2f}")
    for cat_dim, obj_dim in ((256, 512), (2048, 2048)):
        settings = [(*s, False) for s in itertools.product((False, True), (1, cores), precisions)] + [(True, cores, False, True)]
        steps = {fused: build(cat_dim, obj_dim, fused) for fused in (False, True)}
        best = {s: float("inf") for s in settings}
        for _ in range(args.rounds):
            for setting in settings:
                fused, threads, bf16, keep_grads = setting
                torch.set_num_threads(threads)
                steps[fused](bf16, keep_grads)  # warm-up of this setting
                start = time.perf_counter()
                for _ in range(args.steps):
                    steps[fused](bf16, keep_grads)
                best[setting] = min(best[setting], (time.perf_counter() - start) / args.steps)
        base = best[(False, 1, False, False)]
        print(f"\nheads {cat_dim}/{obj_dim}: ms/step (best of {args.rounds} x {args.steps}), ratio to for-each/1 thread/fp32")
        for (fused, threads, bf16, keep_grads), seconds in best.items():
            optimiser = "Adam fused  " if fused else "Adam foreach"
            print(
                f"  {optimiser}  threads {threads}  {'bf16' if bf16 else 'fp32'}{'  grads kept' if keep_grads else ''}: "
                f"{seconds * 1000:7.1f} ms  "
                f"x{base / seconds:4.2f}  ObjectPI epoch ~{seconds * OBJECTPI_STEPS:5.0f} s"
            )


if __name__ == "__main__":
    main()
