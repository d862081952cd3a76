"""Test-time scales on one trained run: every combination of the given factors, from one backbone pass per factor.

    python bench/bench_tta_scales.py bench-runs/cv/recipe-fold1 --scales 1,1.15,1.3 --out scales.json

The run's gallery (the objects it trained on) and validation objects are embedded once per scale (with the run's
test-time flips), as `piro evaluate --tta-scales S` would; each combination's features are their mean (what
PAN.features computes for several scales), and the eight PICR tasks are computed from them. Prints one line per
combination: the mean of the eight tasks and each task; `--out` writes them as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from piro_cli.evaluation.evaluate import evaluation_objects
from piro_cli.hardware import keep_freed_memory
from piro_cli.inference.run import load_run
from piro_cli.models.embedding import backbone_features, embed_features
from piro_cli.options import check_test_scales
from piro_cli.retrieval.picr import TASKS, run_picr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--scales", default="1,1.15,1.3")
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    keep_freed_memory()
    run = load_run(args.run, "cpu")
    store = run.open_data(args.data)
    probe_split, probe_rows, gallery_rows = evaluation_objects(run, store, "val")
    splits = {"gallery": ("train", gallery_rows), "probes": (probe_split, probe_rows)}
    rows = {k: list(range(len(store.split(s)))) if r is None else [int(x) for x in r] for k, (s, r) in splits.items()}
    labels = {k: torch.as_tensor(np.asarray(store.split(s).category)[rows[k]]).long() for k, (s, _) in splits.items()}
    features: dict[float, dict[str, torch.Tensor]] = {}
    for scale in check_test_scales(args.scales):
        started = time.perf_counter()
        run.model.test_scales = (scale,)
        features[scale] = {k: backbone_features(run.model, store.split(s), rows[k], run.device) for k, (s, _) in splits.items()}
        print(f"# scale {scale:g}: {time.perf_counter() - started:.0f} s", flush=True)
    results = {}
    for k in range(1, len(features) + 1):
        for combo in itertools.combinations(features, k):
            embedded = {
                part: embed_features(run.model, sum(features[s][part] for s in combo) / k, labels[part], run.device)
                for part in ("gallery", "probes")
            }
            values = run_picr(embedded["gallery"], embedded["probes"], TASKS).values
            name = ",".join(f"{s:g}" for s in combo)
            results[name] = values
            print(f"{name}: mean {np.mean(list(values.values())):.2f}; " + ", ".join(f"{t} {v:.2f}" for t, v in values.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
