"""The CPU memory allocator's setting (piro_cli.hardware.keep_freed_memory) on piro's heavy CPU work, one process.

Run it twice, with `--malloc glibc` (glibc's defaults: large tensors are fresh mmaps, returned on free) and
`--malloc piro` (what the `piro` command sets at start), ideally alternated by a whole-process timer, and compare:

- `--work features`: backbone features of `--objects` ObjectPI objects (8 views each) through efficientnet_lite0 in
  piro's CPU batches of 64 views (what feature caching, `piro evaluate` and `piro embed` do);
- `--work cut`: training steps from cached activations at blocks.6 (the objectpi-cpu recipe's step: 4 pairs x 8
  views, heads 256/512, the PiRO dual loss, fused Adam);
- `--work heads`: head-only steps at the paper's 2048/2048 (`--freeze-backbone` at D=2048).

It prints the seconds of the work and the process's page faults and system time during it.

    python bench/bench_malloc.py --malloc piro --work features [--data data/objectpi.h5]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from piro_cli.hardware import keep_freed_memory
from piro_cli.losses import LossConfig, PiroLoss
from piro_cli.models.pan import PAN, PANConfig

PAIRS, VIEWS, CLASSES = 4, 8, 25


def features(args) -> None:
    from piro_cli.data.store import ViewSetStore
    from piro_cli.models.embedding import backbone_features

    model = PAN(PANConfig(backbone="efficientnet_lite0", cat_dim=256, obj_dim=512)).eval()
    split = ViewSetStore(args.data).split("train")
    backbone_features(model, split, range(2), torch.device("cpu"))  # warm-up
    timed(lambda: backbone_features(model, split, range(args.objects), torch.device("cpu")), "features")


def steps(args, cut: bool) -> None:
    dims = (256, 512) if cut else (2048, 2048)
    torch.manual_seed(0)
    model = PAN(PANConfig(backbone="efficientnet_lite0", pretrained=False, cat_dim=dims[0], obj_dim=dims[1]))
    criterion = PiroLoss(LossConfig(), num_classes=CLASSES, cat_dim=dims[0])
    params = list(model.head_parameters()) + [p for p in criterion.parameters() if p.requires_grad]
    if cut:
        params += list(model.cut("blocks.6").above.parameters())
        inputs = model.activations(torch.randn(2 * PAIRS, VIEWS, 3, 224, 224), "blocks.6").detach()
    else:
        inputs = torch.randn(2 * PAIRS, VIEWS, model.feat_dim)
    optimizer = torch.optim.Adam(params, lr=1e-5, fused=True)
    labels = torch.randint(0, CLASSES, (PAIRS,))
    model.train()

    def step() -> None:
        feats = model.features_from(inputs, "blocks.6") if cut else inputs
        out = model.forward_features(feats)
        a = type(out)(**{k: v[:PAIRS] for k, v in vars(out).items()})
        b = type(out)(**{k: v[PAIRS:] for k, v in vars(out).items()})
        loss = criterion(a, b, labels)["total"]
        optimizer.zero_grad(set_to_none=True)  # as piro_cli.training does
        loss.backward()
        optimizer.step()

    step()  # warm-up

    def run() -> None:
        for _ in range(args.steps):
            step()

    timed(run, f"{args.steps} {'cut' if cut else 'head 2048'} steps")


def timed(work, what: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"{what}: {seconds:.2f} s, system time {after.ru_stime - before.ru_stime:.2f} s, "
        f"page faults {after.ru_minflt - before.ru_minflt}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--malloc", choices=("glibc", "piro"), required=True)
    parser.add_argument("--work", choices=("features", "cut", "heads"), required=True)
    parser.add_argument("--data", default="data/objectpi.h5")
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.malloc == "piro" and not keep_freed_memory():
        raise SystemExit("this platform's allocator cannot be set (glibc's mallopt only)")
    if args.work == "features":
        features(args)
    else:
        steps(args, cut=args.work == "cut")


if __name__ == "__main__":
    main()
