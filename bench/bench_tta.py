"""Test-time flips (`--tta`) on and off: the validation PICR tasks of trained runs, from one pass of each kind.

For each run (a folder or checkpoint with a validation split, `--val-fraction`), the backbone features of its
gallery (training objects) and validation objects are computed once as they are and once mirrored; the tasks
are then evaluated with the plain features (what `piro evaluate --split val` gives) and with the mean of the
two (what `piro evaluate --split val --tta` gives: PAN.flip_views averages the backbone features of a view and
its mirror). Prints one row per run and setting, the per-task gain, and its mean over the runs.

    python bench/bench_tta.py RUN [RUN ...] [--data FILE]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from piro_cli.data.store import ViewSetStore
from piro_cli.inference.run import load_model
from piro_cli.models.embedding import backbone_features, embed_features
from piro_cli.retrieval.picr import TASKS, evaluate_picr
from piro_cli.runs import checkpoint_file, load_checkpoint


def mirrored(views: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return views.flip(-1)


def run_tasks(path: str, data: str | None) -> dict[str, dict[str, float]]:
    checkpoint = load_checkpoint(checkpoint_file(path))
    store = ViewSetStore(data or checkpoint["data"]["path"])
    split = store.split("train")
    gallery_rows = np.asarray(checkpoint["data"]["train_indices"])
    val_rows = np.asarray(checkpoint["data"]["val"]["indices"])
    model = load_model(checkpoint, torch.device("cpu"), tta=False)
    out = {}
    plain = {rows: backbone_features(model, split, r, torch.device("cpu")) for rows, r in (("g", gallery_rows), ("v", val_rows))}
    flips = {
        rows: backbone_features(model, split, r, torch.device("cpu"), augment=mirrored)
        for rows, r in (("g", gallery_rows), ("v", val_rows))
    }
    labels = {"g": torch.as_tensor(split.category[gallery_rows]), "v": torch.as_tensor(split.category[val_rows])}
    for setting, feats in (("plain", plain), ("tta", {k: (plain[k] + flips[k]) / 2 for k in plain})):
        gallery = embed_features(model, feats["g"], labels["g"], torch.device("cpu"))
        probes = embed_features(model, feats["v"], labels["v"], torch.device("cpu"))
        out[setting] = evaluate_picr(gallery, probes)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", default=None, help="default: each run's own data file")
    args = parser.parse_args()
    short = {t: "".join(w[0] for w in t.split("-")) for t in TASKS}
    print("run".ljust(28), "setting", *(short[t].rjust(6) for t in TASKS), "  mean", sep=" ")
    gains = []
    for run in args.runs:
        started = time.perf_counter()
        result = run_tasks(run, args.data)
        for setting, values in result.items():
            row = [values[t] for t in TASKS]
            print(run[-28:].ljust(28), setting.ljust(7), *(f"{v:6.2f}" for v in row), f"{np.mean(row):6.2f}")
        gain = [result["tta"][t] - result["plain"][t] for t in TASKS]
        gains.append(gain)
        print(run[-28:].ljust(28), "gain".ljust(7), *(f"{g:+6.2f}" for g in gain), f"{np.mean(gain):+6.2f}",
              f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    mean_gain = np.mean(gains, axis=0)
    print("mean gain".ljust(36), *(f"{g:+6.2f}" for g in mean_gain), f"{np.mean(mean_gain):+6.2f}")


if __name__ == "__main__":
    main()
