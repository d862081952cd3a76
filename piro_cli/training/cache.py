"""The feature cache that makes `--freeze-backbone` (and `--train-from`) training practical on a CPU.

Backbone outputs (or, with `--train-from STAGE`, the activations where that stage starts, in float16) of every
training object are computed once, over K passes (pass 1 the clean views, passes 2..K augmented), into a file
beside the run folders (`runs/feature-cache/<backbone>-<key>.pt`) that runs with the same backbone, data, passes
and augmentation share. On several processes each computes its share of the objects and the shares are
gathered (piro_cli.training.distributed); process 0 writes the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from piro_cli.errors import PiroError
from piro_cli.models.embedding import backbone_features
from piro_cli.models.pan import PAN
from piro_cli.outputs import atomic_torch_save, remove_stale_temps
from piro_cli.reporting import Reporter
from piro_cli.runs import FEATURE_CACHE
from piro_cli.training.config import TrainConfig
from piro_cli.training.data import RunData
from piro_cli.training.distributed import Processes, broadcast, gather_rows

FEATURE_CACHE_SEED = 2  # seed of the augmented feature passes (what `seed + 2` gave seed-0 runs before)


def cache_key(config: TrainConfig, data: RunData, processes: Processes | None = None) -> dict:
    # The augmented passes use a fixed seed, not the run's: features are a function of the backbone and the data,
    # so runs with different --seed (and any method or loss) share one cache; the seed still varies the heads'
    # initialisation, the pairs, the views and which pass each object is read from.
    key = {
        "backbone": config.backbone,
        "pretrained": config.pretrained,
        "data_fingerprint": data.store.fingerprint,
        "passes": config.feature_passes,
        # "piro-released": the affine as released (shear +-1 on both axes, black fill); caches built with the
        # earlier affine (key True) are not reused
        "augment": config.augment and ("piro-released" if config.augmentation == "piro" else config.augmentation),
    }
    if config.train_from is not None:  # activations at the cut, stored in float16 (half the memory, ample precision)
        key.update(train_from=config.train_from, dtype="float16")
    if processes is not None and processes.active and config.feature_passes > 1:
        key["processes"] = processes.world  # each process augments its share with its own stream
    return key


def cache_path(project: Path, config: TrainConfig, key: dict) -> Path:
    # Shared beside the run folders: runs that differ only in heads or losses (dual vs single, ablations) reuse it.
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return project / FEATURE_CACHE / f"{config.backbone.replace(':', '_')}-{digest}.pt"


def feature_cache(
    model: PAN, data: RunData, config: TrainConfig, device: torch.device, augment, project: Path, reporter: Reporter,
    processes: Processes,
) -> dict:  # fmt: skip
    """The run's feature cache: read from its file when one with the same key exists, else computed (and saved)."""
    key = cache_key(config, data, processes)
    path = cache_path(project, config, key)
    views = data.store.num_views
    shapes = {"train": (config.feature_passes, len(data.train), views)}
    if data.val is not None and data.val is not data.train:
        shapes["val"] = (len(data.val), views)
    cached = None
    if processes.main:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)  # caches half-written by killed runs
        cached, unusable = _read_feature_cache(path, key, shapes)
        if unusable is not None:
            reporter.info(f"rebuilding the feature cache {path}: {unusable}")
    # process 0 checked the file; the others read it themselves (the run folders' filesystem is shared)
    if broadcast(cached is not None, processes) and not processes.main:
        cached = load_feature_cache(path, key, shapes)
        if cached is None:
            raise PiroError(f"{path}: process {processes.rank} cannot read the feature cache process 0 found; share the --project folder")
    if cached is not None:
        reporter.info(f"using cached backbone features {path}")
        return cached
    # one augmentation stream per process, across its passes (in one process: the stream the cache always had)
    generator = torch.Generator().manual_seed(FEATURE_CACHE_SEED + 1000 * processes.rank)
    passes = []
    for k in range(config.feature_passes):
        pass_augment = augment if k > 0 else None  # pass 1 is the clean views, later passes augmented
        stage = f"backbone features, pass {k + 1}/{config.feature_passes}" + (" (augmented)" if pass_augment else "")
        passes.append(_sharded_features(model, data.train, device, pass_augment, generator, stage, config, reporter, processes))
    payload = {"key": key, "train": torch.stack(passes)}
    if data.val is not None and data.val is not data.train:
        stage = "backbone features, validation split"
        payload["val"] = _sharded_features(model, data.val, device, None, generator, stage, config, reporter, processes)
    if processes.main:
        atomic_torch_save(payload, path, "free space or pass --project elsewhere")
    return payload


def _sharded_features(
    model: PAN, split, device, augment, generator, stage: str, config: TrainConfig, reporter: Reporter, processes: Processes
) -> torch.Tensor:
    """This process's share of a split's features, gathered from every process."""
    rows = np.arange(len(split))[processes.share(len(split))]
    part = backbone_features(
        model, split, rows, device, augment, generator, progress=lambda done, total: reporter.progress(stage, done, total),
        stage=config.train_from,
    )  # fmt: skip
    return gather_rows(part, processes)


def load_feature_cache(path: Path, key: dict, shapes: dict[str, tuple[int, ...]] | None = None) -> dict | None:
    """The cache at `path` if it was built with the same `key` (backbone, data, passes) and, with `shapes`, holds
    finite tensors whose leading dimensions are these ("train": (passes, objects, views), "val": (objects, views));
    else None."""
    return _read_feature_cache(path, key, shapes)[0]


def _read_feature_cache(path: Path, key: dict, shapes: dict[str, tuple[int, ...]] | None) -> tuple[dict | None, str | None]:
    """(the cache, None), or (None, why it cannot be used; None when there is no file)."""
    if not path.exists():
        return None, None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None, "it cannot be read"
    # anything but the dict piro wrote (a file replaced by other data) is rebuilt too
    if not isinstance(payload, dict) or not isinstance(payload.get("train"), torch.Tensor):
        return None, "it is not a feature cache"
    if payload.get("key") != key:
        return None, "it was built with other settings"
    for name, leading in (shapes or {}).items():
        tensor = payload.get(name)
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape[: len(leading)]) != tuple(leading):
            found = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            return None, f"its {name} features are {found}, not {tuple(leading)} + ..."
        if not bool(torch.isfinite(tensor).all()):
            return None, f"its {name} features hold NaN or infinite values"
    return payload, None


def cached_batch(cache: dict, objects: np.ndarray, view_idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Features of the chosen views, each object from a randomly chosen pass (augmented copies)."""
    train_feats = cache["train"]  # (K, N, V, F)
    passes = rng.integers(0, train_feats.shape[0], size=len(objects))
    obj = torch.as_tensor(objects)[:, None]
    return train_feats[torch.as_tensor(passes)[:, None], obj, torch.as_tensor(view_idx)]


@torch.no_grad()
def features_of_cached(model: PAN, cache: dict, cached: torch.Tensor, device, batch: int = 64) -> torch.Tensor:
    """Backbone features (N, V, F) of cached entries (N, V, ...): themselves, or activations run through the top of
    the backbone (model in eval mode)."""
    stage = cache["key"].get("train_from")
    if stage is None:
        return cached
    model.eval()
    parts = [
        model.features_from(cached[i : i + batch].to(device).float(), stage).float().cpu() for i in range(0, len(cached), batch)
    ]
    return torch.cat(parts)
