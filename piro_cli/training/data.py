"""The data a run sees: its data file, training objects and validation objects (carved or the file's own)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from piro_cli.data.samplers import carve_validation, fold_validation
from piro_cli.data.store import SplitData, ViewSetStore, resolve_data
from piro_cli.errors import DataError


def resume_data_path(given: str | None, recorded: str) -> Path:
    """The data file of a resumed run: the file it trained on; `--data` only when that is the same file, or when the
    file was moved (then `open_run_data` checks that `--data` holds the same data)."""
    if not Path(recorded).exists():
        if given is None:
            raise DataError(
                f"{recorded}: the data file this run was trained on no longer exists; pass it, moved or copied, with --data"
            )
        return resolve_data(given)
    if given is not None and not os.path.samefile(resolve_data(given), recorded):
        raise DataError(
            f"--data {given}: this run trains on {recorded}, and --resume continues on that file; leave --data out "
            "(--data is for a run whose data file has moved)"
        )
    return Path(recorded)


@dataclass
class RunData:
    store: ViewSetStore
    train: SplitData  # the split the training objects come from
    train_indices: np.ndarray  # rows of `train` used for training (validation objects carved out)
    val: SplitData | None
    val_indices: np.ndarray | None
    folds: tuple[int, int, int] | None = None  # (fold k, of K folds, seed) when the validation objects are a fold

    def describe(self) -> dict:
        val = None
        if self.val is not None and self.val_indices is not None:
            val = {
                "split": self.val.name,
                "indices": self.val_indices.tolist(),
                "names": [self.val.object_names[i] for i in self.val_indices],
            }
            if self.folds is not None:
                val["folds"] = {"fold": self.folds[0], "of": self.folds[1], "seed": self.folds[2]}
        return {
            "path": str(self.store.path),
            "fingerprint": self.store.fingerprint,
            "objects": self.store.objects_fingerprint,
            "source_dataset": self.store.source_dataset,
            "num_views": self.store.num_views,
            "image_size": self.store.image_size,
            "train_indices": self.train_indices.tolist(),
            "val": val,
        }


def open_run_data(
    path: Path, val_fraction: float | None, val_seed: int, saved: dict | None = None, folds: tuple[int, int] | None = None
) -> RunData:
    """The objects a run trains and validates on; `folds` (fold k, of K): the k-th fold of a K-fold split."""
    store = ViewSetStore(path)
    train = store.split("train")
    if saved is not None:  # resuming: the exact objects of the interrupted run
        if saved["fingerprint"] != store.fingerprint:
            raise DataError(
                f"{path}: is not the dataset this run was trained on (the fingerprints differ: replaced or re-prepared "
                "since?); resume with the original data (--data FILE), or train a new run"
            )
        val_info = saved.get("val")
        val = store.split(val_info["split"]) if val_info else None
        return RunData(
            store, train, np.asarray(saved["train_indices"]), val, np.asarray(val_info["indices"]) if val_info else None
        )
    if "val" in store.splits:
        val = store.split("val")
        return RunData(store, train, np.arange(len(train)), val, np.arange(len(val)))
    if folds is not None:
        train_idx, val_idx = fold_validation(train.category, folds[1], folds[0], val_seed)
        return RunData(store, train, train_idx, train, val_idx, folds=(folds[0], folds[1], val_seed))
    if val_fraction:
        train_idx, val_idx = carve_validation(train.category, val_fraction, val_seed)
        return RunData(store, train, train_idx, train, val_idx)
    return RunData(store, train, np.arange(len(train)), None, None)
