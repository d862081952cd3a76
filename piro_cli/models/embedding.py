"""The embedding core: backbone features of stored views and every embedding the PICR tasks read, in batches
sized to the device (`batch_views_for`) and in the model's arithmetic (`PAN.precision`, piro_cli.hardware.autocast:
by default mixed precision on a GPU, float32 on a CPU). Every embedding returned is float32 on the CPU.

Training (its feature cache and validation), evaluation and inference all embed through these functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from piro_cli.data.store import SplitData, normalize_views
from piro_cli.hardware import autocast
from piro_cli.models.pan import PAN

if TYPE_CHECKING:  # torchvision (1 s to import): only training augments, and it passes the augmentation in
    from piro_cli.data.augment import Augmentation

Progress = Callable[[int, int], None]
FIELDS = ("sv_cat", "sv_obj", "mv_cat", "mv_obj", "mv_obj_first", "mv_obj_last")


@dataclass
class EmbeddingSet:
    """Embeddings of the objects of one split (all L2-normalised). A field a task does not read may be None."""

    sv_cat: torch.Tensor | None  # (N, V, Dc)
    sv_obj: torch.Tensor | None  # (N, V, Do)
    mv_cat: torch.Tensor | None  # (N, Dc)
    mv_obj: torch.Tensor | None  # (N, Do)
    mv_obj_first: torch.Tensor | None  # (N, Do) o_mv of views [:V//2]: the MV object tasks' gallery
    mv_obj_last: torch.Tensor | None  # (N, Do) o_mv of views [V//2:]: their queries
    labels: torch.Tensor  # (N,) category indices

    def __len__(self) -> int:
        return len(self.labels)


def batch_views_for(device: torch.device, image_size: int) -> int:
    """Views per backbone batch: 64 on a CPU; on a GPU as many as a quarter of its free memory allows (up to 1024)."""
    if device.type != "cuda":
        return 64
    free, _ = torch.cuda.mem_get_info(device)
    per_view = image_size * image_size * 3 * 4 * 60  # input plus a generous allowance for activations
    return int(max(64, min(1024, free // 4 // per_view)))


@torch.no_grad()
def backbone_features(
    model: PAN,
    split: SplitData,
    indices: Sequence[int],
    device: torch.device,
    augment: Augmentation | None = None,
    generator: torch.Generator | None = None,
    batch_views: int = 64,
    progress: Progress | None = None,
    stage: str | None = None,
) -> torch.Tensor:
    """Backbone features (N, V, F) of the given objects, in float32 on the CPU; with `stage` (--train-from), the
    backbone's activations where that stage starts, (N, V, C, h, w) in float16 (what training caches)."""
    model.eval()
    indices = [int(i) for i in indices]
    per_batch = max(1, batch_views // split.num_views)
    chunks = []
    for start in range(0, len(indices), per_batch):
        block = np.stack([split.views_uint8(i) for i in indices[start : start + per_batch]])
        views = normalize_views(block, device)
        if augment is not None:
            views = augment(views, generator)
        with autocast(device, model.precision):
            if stage is None:
                chunks.append(model.features(_channels_last(views, device)).float().cpu())
            else:
                chunks.append(model.activations(views, stage).half().cpu())
        if progress is not None:
            progress(min(start + per_batch, len(indices)), len(indices))
    return torch.cat(chunks)


def _channels_last(views: torch.Tensor, device: torch.device) -> torch.Tensor:
    return views.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and views.dim() == 4 else views


@torch.no_grad()
def embed_features(model: PAN, feats: torch.Tensor, labels: torch.Tensor, device: torch.device, batch: int = 256) -> EmbeddingSet:
    """All embeddings the PICR tasks need, from backbone features (N, V, F)."""
    model.eval()
    v = feats.shape[1]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in FIELDS}
    for start in range(0, len(feats), batch):
        f = feats[start : start + batch].to(device)
        out = model.forward_features(f)
        for name in ("sv_cat", "sv_obj", "mv_cat", "mv_obj"):
            parts[name].append(getattr(out, name).float().cpu())
        # MV object tasks (METHOD.md section 5): gallery o_mv of views [:V//2], queries o_mv of views [V//2:],
        # the released split (for an odd V the queries have the extra view); one view serves as both
        first, last = (f, f) if v == 1 else (f[:, : v // 2], f[:, v // 2 :])
        parts["mv_obj_first"].append(model.forward_features(first).mv_obj.float().cpu())
        parts["mv_obj_last"].append(model.forward_features(last).mv_obj.float().cpu())
    if not parts["sv_cat"]:
        return empty_embedding_set(model, labels)
    return EmbeddingSet(*(torch.cat(parts[name]) for name in FIELDS), labels.long().cpu())


@torch.no_grad()
def embed_view_sets(model: PAN, feats: torch.Tensor, device: torch.device, batch: int = 512) -> tuple[np.ndarray, ...]:
    """(sv_cat (N, V, Dc), sv_obj (N, V, Do), mv_cat (N, Dc), mv_obj (N, Do)) as float32 numpy, from backbone
    features (N, V, F) of N view sets of V views each (heads only: view subsets of embedded views cost no pass)."""
    model.eval()
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for start in range(0, len(feats), batch):
        out = model.forward_features(feats[start : start + batch].to(device).float())
        for part, tensor in zip(parts, (out.sv_cat, out.sv_obj, out.mv_cat, out.mv_obj), strict=True):
            part.append(tensor.float().cpu().numpy())
    if not parts[0]:
        raise ValueError("embed_view_sets: no view sets given")
    return tuple(np.concatenate(p) for p in parts)


def empty_embedding_set(model: PAN, labels: torch.Tensor) -> EmbeddingSet:
    dc = model.config.cat_dim if model.config.dual else model.config.obj_dim
    do = model.config.obj_dim
    return EmbeddingSet(
        torch.empty(0, 0, dc), torch.empty(0, 0, do), torch.empty(0, dc), torch.empty(0, do), torch.empty(0, do),
        torch.empty(0, do), labels.long(),
    )  # fmt: skip
