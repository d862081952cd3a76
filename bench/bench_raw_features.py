"""Which pooled ImageNet features of efficientnet_lite0 retrieve ObjectPI's objects best, before any training: a
cheap screen of issue #24's object-space levers (GeM pooling, earlier stages, flips, test-time scales).

    python bench/bench_raw_features.py --data data/objectpi.h5            # about 12 minutes on 2 cores

Every view of the train split goes through the frozen backbone once per variant; the L2-normalised pooled features
are the embeddings; SV object recognition and retrieval (and SV category retrieval) over all objects as probes
(piro_cli.retrieval.picr, the released protocol). Prints one line per variant.
"""

from __future__ import annotations

import argparse
import time

import h5py
import torch
import torch.nn.functional as F

from piro_cli.data.store import normalize_views
from piro_cli.hardware import keep_freed_memory
from piro_cli.models.backbones import build_backbone
from piro_cli.models.embedding import EmbeddingSet
from piro_cli.retrieval.picr import run_picr

TASKS = ["sv-object-recognition", "sv-object-retrieval", "sv-category-retrieval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/objectpi.h5")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(2)
    net = build_backbone("efficientnet_lite0", True).module.eval()
    with h5py.File(args.data) as f:
        images, labels = f["train/images"][:], torch.as_tensor(f["train/category"][:]).long()
    n = len(images)

    def stages(x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        h, acts = net.bn1(net.conv_stem(x)), {}
        for i, block in enumerate(net.blocks):
            h = acts[i] = block(h)
        return acts, net.bn2(net.conv_head(h))  # the last map, before pooling

    def resized(x: torch.Tensor, side: int) -> torch.Tensor:
        return F.interpolate(x, size=side, mode="bilinear", align_corners=False)

    out: dict[str, list[torch.Tensor]] = {}
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, 8):
            x = normalize_views(images[i : i + 8]).flatten(0, 1)
            acts, last = stages(x)
            rows = {"avg": last.mean((2, 3)), "blocks.5": acts[5].mean((2, 3)), "blocks.6": acts[6].mean((2, 3))}
            for p in (2, 3, 4, 6):
                rows[f"gem p={p}"] = last.clamp(min=1e-6).pow(p).mean((2, 3)).pow(1 / p)
            rows["flip (avg of 224 and its mirror)"] = (rows["avg"] + stages(x.flip(-1))[1].mean((2, 3))) / 2
            rows["224 + 288"] = (rows["avg"] + stages(resized(x, 288))[1].mean((2, 3))) / 2
            rows["224 + 192"] = (rows["avg"] + stages(resized(x, 192))[1].mean((2, 3))) / 2
            rows["blocks.5 + avg (concatenated)"] = torch.cat([F.normalize(rows["blocks.5"], dim=-1), F.normalize(rows["avg"], dim=-1)], -1)
            for name, value in rows.items():
                out.setdefault(name, []).append(value)
    print(f"# features of {n * 8} views in {time.perf_counter() - started:.0f} s")
    for name, chunks in out.items():
        v = F.normalize(torch.cat(chunks), dim=-1).reshape(n, 8, -1)
        probes = EmbeddingSet(sv_cat=v, sv_obj=v, mv_cat=None, mv_obj=None, mv_obj_first=None, mv_obj_last=None, labels=labels)
        values = run_picr(None, probes, TASKS).values
        print(f"{name}: " + ", ".join(f"{task} {values[task]:.2f}" for task in TASKS), flush=True)


if __name__ == "__main__":
    main()
