"""Backbone features of a split, and the cache that makes `--freeze-backbone` training practical on a CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from piro_cli.data.augment import Augmentation
from piro_cli.data.store import SplitData, normalize_views
from piro_cli.evaluation.picr import EmbeddingSet

ProgressCallback = Callable[[int, int], None]


@torch.no_grad()
def compute_features(
    model: torch.nn.Module,
    split: SplitData,
    indices: Sequence[int],
    device: torch.device,
    augment: Augmentation | None = None,
    generator: torch.Generator | None = None,
    batch_views: int = 64,
    progress: ProgressCallback | None = None,
    stage: str | None = None,
) -> torch.Tensor:
    """Backbone features (N, V, F) of the given objects, in float32 on the CPU; with `stage` (--train-from), the
    backbone's activations where that stage starts, (N, V, C, h, w) in float16."""
    model.eval()
    indices = [int(i) for i in indices]
    per_batch = max(1, batch_views // split.num_views)
    chunks = []
    for start in range(0, len(indices), per_batch):
        block = np.stack([split.views_uint8(i) for i in indices[start : start + per_batch]])
        views = normalize_views(block, device)
        if augment is not None:
            views = augment(views, generator)
        with _autocast(device):
            if stage is None:
                chunks.append(model.features(_channels_last(views, device)).float().cpu())
            else:
                chunks.append(model.activations(views, stage).half().cpu())
        if progress is not None:
            progress(min(start + per_batch, len(indices)), len(indices))
    return torch.cat(chunks)


@torch.no_grad()
def embed_features(
    model: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor, device: torch.device, batch: int = 256
) -> EmbeddingSet:
    """All embeddings the PICR tasks need, from backbone features (N, V, F)."""
    model.eval()
    v = feats.shape[1]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("sv_cat", "sv_obj", "mv_cat", "mv_obj", "first", "last")}
    for start in range(0, len(feats), batch):
        f = feats[start : start + batch].to(device)
        out = model.forward_features(f)
        parts["sv_cat"].append(out.sv_cat.float().cpu())
        parts["sv_obj"].append(out.sv_obj.float().cpu())
        parts["mv_cat"].append(out.mv_cat.float().cpu())
        parts["mv_obj"].append(out.mv_obj.float().cpu())
        # MV object tasks (METHOD.md section 5): gallery o_mv of views [:V//2], queries o_mv of views [V//2:],
        # the released split (for an odd V the queries have the extra view); one view serves as both
        first, last = (f, f) if v == 1 else (f[:, : v // 2], f[:, v // 2 :])
        parts["first"].append(model.forward_features(first).mv_obj.float().cpu())
        parts["last"].append(model.forward_features(last).mv_obj.float().cpu())
    cat = {k: torch.cat(p) for k, p in parts.items()}
    return EmbeddingSet(cat["sv_cat"], cat["sv_obj"], cat["mv_cat"], cat["mv_obj"], cat["first"], cat["last"], labels.cpu())


def _channels_last(views: torch.Tensor, device: torch.device) -> torch.Tensor:
    return views.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and views.dim() == 4 else views


def _autocast(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported); full fp32 on the CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def load_feature_cache(path: Path, key: dict) -> dict | None:
    """The cache at `path` if it was built with the same `key` (backbone, data, passes), else None."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    # anything but the dict piro wrote (a file replaced by other data) is rebuilt too
    if not isinstance(payload, dict) or payload.get("key") != key or not isinstance(payload.get("train"), torch.Tensor):
        return None
    return payload
