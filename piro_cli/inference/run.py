"""A trained run, loaded for use: its checkpoint, its model (eval mode, on a device) and its data file.

Which checkpoint: a run folder means its `best.pt`; a `.pt` file is used as it is (piro_cli.runs).

Which data file: the one given (`--data`); else the file the checkpoint recorded (`data.path`, as given to
`piro train`; a relative path is looked up from the current folder, then from the folder that holds the run's
project folder); else the newest ./data/*.h5, as `piro train` picks it. Its categories must be the
checkpoint's, in order. Where rows of the file are recorded (the objects `--val-fraction` carved out of
train), the file must also have the fingerprint the run recorded (a file with the same content prepared
elsewhere has the same fingerprint).

Which objects of a group: `train` and `test` are the data file's splits; `val` is the run's validation
objects (the file's `val` split, or the rows `--val-fraction` carved out of `train`, `group_rows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from piro_cli.data.store import ViewSetStore, resolve_data
from piro_cli.errors import DataError, PiroError, short_cause
from piro_cli.hardware import PRECISIONS, check_precision, pick_device, resolve_precision
from piro_cli.methods import METHODS
from piro_cli.models.pan import PAN, PANConfig
from piro_cli.options import check_test_scales
from piro_cli.runs import checkpoint_file, load_checkpoint, run_name

# Checkpoint entries inference never needs; dropped after loading to free memory.
TRAINING_STATE = ("optimizer_state", "scheduler_state", "loss_state", "rng")


def run_tta(checkpoint: dict) -> bool:
    """The run's own test-time-flip setting (`piro train --tta`, or its recipe's); off for runs from before it."""
    return bool((checkpoint.get("train_config") or {}).get("tta"))


def run_tta_scales(checkpoint: dict) -> tuple[float, ...]:
    """The run's own test-time scales (`piro train --tta-scales`, or its recipe's); (1.0,) for runs from before them."""
    value = (checkpoint.get("train_config") or {}).get("tta_scales") or (1.0,)
    try:
        return check_test_scales(value)
    except ValueError as exc:
        where = checkpoint.get("path", "checkpoint")
        raise PiroError(f"{where}: its train_config tta_scales: {exc}; pass --tta-scales") from None


def run_precision(checkpoint: dict) -> str:
    """The run's own arithmetic (`piro train --precision`, or its recipe's); auto for runs from before it."""
    value = (checkpoint.get("train_config") or {}).get("precision") or "auto"
    if value not in PRECISIONS:
        where = checkpoint.get("path", "checkpoint")
        raise PiroError(f"{where}: its train_config precision {value!r} is not one of {', '.join(PRECISIONS)}; pass --precision")
    return value


PIES_TEST_CROP = 224 / 256  # the PIEs code's test transform: Resize(256), CenterCrop(224)


def run_center_crop(checkpoint: dict) -> bool:
    """Whether the run's method evaluates on the central crop of each view: the PIEs baselines, as released."""
    method = (checkpoint.get("train_config") or {}).get("method")
    return isinstance(method, str) and method in METHODS and METHODS[method].family == "pies"


@dataclass(frozen=True)
class EmbedSettings:
    """How a run's model embeds views; each None means the run's own setting (`piro train --tta`, `--tta-scales`,
    `--precision`; the method's crop)."""

    tta: bool | None = None  # test-time flips (PAN.flip_views)
    tta_scales: tuple[float, ...] | None = None  # test-time scales (PAN.test_scales)
    precision: str | None = None  # piro_cli.hardware.PRECISIONS
    center_crop: bool | None = None  # the PIEs baselines' central 224/256 (PAN.center_crop)

    @property
    def changes_the_runs_numbers(self) -> bool:
        """Whether results under these settings may differ from the run's own saved ones beyond its flips (whose
        results are saved under their own name): other scales, arithmetic or crop."""
        return self.tta_scales is not None or self.precision is not None or self.center_crop is not None


def load_model(
    checkpoint: dict,
    device: torch.device,
    tta: bool | None = None,
    precision: str | None = None,
    center_crop: bool | None = None,
    tta_scales: tuple[float, ...] | None = None,
) -> PAN:
    """The checkpoint's PAN in eval mode on `device` (no ImageNet download: the saved weights replace them); `tta`:
    each view embedded as the mean with its horizontal mirror (PAN.flip_views); None: the run's setting (run_tta);
    `precision` (PRECISIONS) the backbone's arithmetic, None: the run's (run_precision); `center_crop`: embed the
    central 224/256 of each view resized back (PAN.center_crop), None: the method's (run_center_crop); `tta_scales`:
    each view embedded as the mean over it resized by these factors (PAN.test_scales), None: the run's."""
    where = checkpoint.get("path", "checkpoint")
    for key in ("model_config", "model_state"):
        if key not in checkpoint:
            raise PiroError(f"{where}: the checkpoint has no '{key}' entry; pass a best.pt or last.pt written by `piro train`")
    try:
        config = PANConfig.from_dict({**checkpoint["model_config"], "pretrained": False})
        model = PAN(config)
        model.load_state_dict(checkpoint["model_state"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise PiroError(
            f"{where}: the model in it cannot be rebuilt ({short_cause(exc)}); is it from this piro version?"
        ) from exc
    model = model.to(device).eval()
    model.flip_views = run_tta(checkpoint) if tta is None else tta
    try:
        model.test_scales = run_tta_scales(checkpoint) if tta_scales is None else check_test_scales(tta_scales)
    except ValueError as exc:
        raise PiroError(f"--tta-scales {tta_scales if isinstance(tta_scales, str) else ','.join(map(str, tta_scales))}: {exc}") from None
    if model.test_scales != (1.0,) and model.fixed_input_size:
        raise PiroError(f"{where}: its backbone {config.backbone} takes one input size only, which test-time scales would "
                        "change: use --tta-scales 1")  # fmt: skip
    model.precision = run_precision(checkpoint) if precision is None else check_precision(precision)
    model.center_crop = PIES_TEST_CROP if (run_center_crop(checkpoint) if center_crop is None else center_crop) else None
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def weights_fingerprint(checkpoint: dict) -> str:
    """sha256 (first 16 hex digits) of the model's weights and config: what an index or export is tied to."""
    digest = hashlib.sha256(repr(sorted(checkpoint["model_config"].items())).encode())
    for name, tensor in sorted(checkpoint["model_state"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class LoadedRun:
    """A checkpoint with its model ready for inference."""

    path: Path  # the checkpoint file
    checkpoint: dict
    model: PAN
    device: torch.device

    @property
    def name(self) -> str:
        return run_name(self.path)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def categories(self) -> list[str]:
        return list(self.checkpoint.get("categories", []))

    @property
    def image_size(self) -> int:
        return int((self.checkpoint.get("data") or {}).get("image_size") or 224)

    @property
    def tta(self) -> bool:
        return bool(self.model.flip_views)

    @property
    def tta_scales(self) -> tuple[float, ...]:
        return tuple(self.model.test_scales)

    @property
    def center_crop(self) -> bool:
        return self.model.center_crop is not None

    @property
    def precision(self) -> str:
        """What the model computes in on this device: fp32, bf16 or fp16."""
        return resolve_precision(self.device, self.model.precision)

    @property
    def epoch(self) -> int | None:
        return self.checkpoint.get("epoch")

    def fingerprint(self) -> str:
        """weights_fingerprint, computed once (it hashes every weight)."""
        if "_fingerprint" not in self.__dict__:
            self.__dict__["_fingerprint"] = weights_fingerprint(self.checkpoint)
        return self.__dict__["_fingerprint"]

    def open_data(self, data: str | Path | None = None, same_data: bool = False) -> ViewSetStore:
        """The run's data file (see the module docstring), checked: its categories; with `same_data`, its fingerprint."""
        store = ViewSetStore(self.data_path(data))
        check_categories(self.checkpoint, store)
        if same_data:
            check_same_data(self.checkpoint, store)
        return store

    def data_path(self, data: str | Path | None = None) -> Path:
        if data is not None:
            return resolve_data(data)
        recorded = (self.checkpoint.get("data") or {}).get("path")
        if recorded:
            candidates = [Path(recorded)]
            if not Path(recorded).is_absolute():
                candidates.append(self.folder.parent.parent / recorded)  # trained from the folder holding runs/
            for candidate in candidates:
                if candidate.is_file():
                    return candidate
        return resolve_data(None)


def load_run(
    source: str | Path,
    device: str | torch.device | None = None,
    tta: bool | None = None,
    keep_training_state: bool = False,
    precision: str | None = None,
    center_crop: bool | None = None,
    tta_scales: tuple[float, ...] | None = None,
) -> LoadedRun:
    """A run folder (its best.pt) or checkpoint file, with its model on `device` (None: the GPU when there is one)."""
    path = Path(source)
    checkpoint = load_checkpoint(checkpoint_file(path) if path.is_dir() else path)
    if not keep_training_state:
        for key in TRAINING_STATE:
            checkpoint.pop(key, None)
    torch_device = device if isinstance(device, torch.device) else pick_device(device)
    return LoadedRun(Path(checkpoint["path"]), checkpoint, load_model(checkpoint, torch_device, tta, precision, center_crop, tta_scales),
                     torch_device)


def check_categories(checkpoint: dict, store: ViewSetStore) -> None:
    """The checkpoint must have been trained on the categories the data file holds, in the same order."""
    trained = list(checkpoint.get("categories", []))
    if trained != list(store.categories):
        raise DataError(
            f"{checkpoint['path']} was trained on {len(trained)} categories ({_preview(trained)}) but {store.path} holds "
            f"{len(store.categories)} ({_preview(store.categories)}); pass the data file the model was trained on with --data"
        )


def _preview(names: Sequence[str]) -> str:
    shown = ", ".join(list(names)[:3])
    return shown + (", ..." if len(names) > 3 else "") if names else "none"


def check_same_data(checkpoint: dict, store: ViewSetStore) -> None:
    recorded = (checkpoint.get("data") or {}).get("fingerprint")
    if recorded and recorded != store.fingerprint:
        raise DataError(
            f"{store.path}: is not the dataset run {run_name(checkpoint['path'])} was trained on (fingerprint "
            f"{store.fingerprint}, the run recorded {recorded}); pass the original file with --data FILE"
        )


def group_rows(checkpoint: dict, store: ViewSetStore, group: str) -> tuple[str, np.ndarray | None]:
    """(data split, rows or None for all) behind a group: `val` is the checkpoint run's validation objects."""
    if group != "val":
        store.split(group)  # a clear error when the data file lacks it
        return group, None
    val = (checkpoint.get("data") or {}).get("val")
    if not val:
        if "val" in store.splits:
            return "val", None
        raise DataError(
            f"{checkpoint['path']}: its run has no validation objects and {store.path} has no 'val' split; "
            "train with --val-fraction (e.g. 0.2) to carve some out of train"
        )
    check_same_data(checkpoint, store)
    split = store.split(val["split"])
    rows = np.asarray(val["indices"], dtype=np.int64)
    recorded = val.get("names")
    in_range = len(rows) == 0 or (rows.min() >= 0 and rows.max() < len(split))
    if not in_range or (recorded is not None and [split.object_names[int(i)] for i in rows] != list(recorded)):
        raise DataError(
            f"{store.path}: its '{val['split']}' split does not hold run {run_name(checkpoint['path'])}'s validation "
            "objects; pass the run's data file with --data FILE"
        )
    return val["split"], rows


def trained_rows(checkpoint: dict, store: ViewSetStore) -> np.ndarray | None:
    """Rows of the train split the run trained on (its validation objects carved out), or None for all of them."""
    data = checkpoint.get("data") or {}
    if not data.get("val") or data["val"].get("split") != "train" or "train_indices" not in data:
        return None
    check_same_data(checkpoint, store)
    return np.asarray(data["train_indices"], dtype=np.int64)


def require_split(store: ViewSetStore, split: str, role: str, hint: str = "") -> None:
    if split not in store.splits:
        have = ", ".join(store.splits) or "none"
        raise DataError(
            f"{store.path}: has no '{split}' split for {role} (it has: {have}){hint or '; prepare a file with train and test splits'}"
        )
