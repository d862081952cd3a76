"""Embedding with a trained PAN for inference: the objects of a data split (through the embedding core,
piro_cli.models.embedding), and one view set of photos. Every embedding returned is float32 on the CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from piro_cli.data.photos import read_photos
from piro_cli.data.store import ViewSetStore, normalize_views
from piro_cli.hardware import autocast
from piro_cli.models.embedding import (
    FIELDS,
    EmbeddingSet,
    Progress,
    backbone_features,
    batch_views_for,
    embed_features,
    empty_embedding_set,
)
from piro_cli.models.pan import PAN


@dataclass
class EmbeddedGroup:
    """The embeddings of some objects of one data split, with who they are."""

    embeddings: EmbeddingSet
    names: list[str]
    object_index: np.ndarray  # rows in the data file's `source_split`
    source_split: str


# ----------------------------------------------------------------------------- stored objects


@torch.no_grad()
def embed_objects(
    model: PAN,
    store: ViewSetStore,
    split: str,
    indices: Sequence[int] | None,
    device: torch.device,
    progress: Progress | None = None,
) -> EmbeddedGroup:
    """Embeddings of the given objects (default: all) of one split, streamed in batches sized to the device."""
    data = store.split(split)
    rows = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    per_batch = max(1, batch_views_for(device, store.image_size) // max(1, store.num_views))
    parts: list[EmbeddingSet] = []
    for start in range(0, len(rows), per_batch):
        chunk = rows[start : start + per_batch]
        feats = backbone_features(model, data, chunk, device, batch_views=len(chunk) * store.num_views)
        parts.append(embed_features(model, feats, torch.as_tensor(data.category[chunk]), device))
        if progress is not None:
            progress(min(start + per_batch, len(rows)), len(rows))
    labels = torch.as_tensor(data.category[rows]).long()
    if not parts:
        embeddings = empty_embedding_set(model, labels)
    else:
        embeddings = EmbeddingSet(*(torch.cat([getattr(p, f) for p in parts]) for f in FIELDS), labels)
    return EmbeddedGroup(embeddings, [data.object_names[i] for i in rows], rows, split)


# ----------------------------------------------------------------------------- photos


@dataclass
class PhotoEmbeddings:
    """Embeddings of one view set of photos, and (with a gallery) its nearest categories and objects."""

    images: list[str]  # the photos embedded, in order
    sv_cat: torch.Tensor  # (V, Dc)
    sv_obj: torch.Tensor  # (V, Do)
    mv_cat: torch.Tensor  # (Dc,)
    mv_obj: torch.Tensor  # (Do,)
    categories: list[dict] = field(default_factory=list)  # {category, votes, distance}, best first
    objects: list[dict] = field(default_factory=list)  # {object, category, distance}, nearest first
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason): unreadable, left out (--skip-bad)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "skipped": [{"image": image, "reason": reason} for image, reason in self.skipped],
            "sv_cat": self.sv_cat.tolist(),
            "sv_obj": self.sv_obj.tolist(),
            "mv_cat": self.mv_cat.tolist(),
            "mv_obj": self.mv_obj.tolist(),
            "nearest_categories": self.categories,
            "nearest_objects": self.objects,
        }


@torch.no_grad()
def embed_views(model: PAN, views: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(sv_cat (V, Dc), sv_obj (V, Do), mv_cat (Dc,), mv_obj (Do,)) of one view set, uint8 (V, S, S, 3), float32 on the CPU."""
    model.eval()
    with autocast(device, model.precision):
        out = model(normalize_views(views[None], device))
    return tuple(t[0].float().cpu() for t in (out.sv_cat, out.sv_obj, out.mv_cat, out.mv_obj))


@torch.no_grad()
def embed_each_photo(model: PAN, views: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(sv_cat (N, Dc), sv_obj (N, Do), mv_obj (N, Do)): each of N photos, uint8 (N, S, S, 3), as a view set of its
    own, in one batch (what `embed_views` gives photo by photo)."""
    model.eval()
    with autocast(device, model.precision):
        out = model(normalize_views(views[:, None], device))
    return tuple(t.float().cpu() for t in (out.sv_cat[:, 0], out.sv_obj[:, 0], out.mv_obj))


def embed_photos(
    model: PAN, paths: Sequence[str | Path], image_size: int, device: torch.device, skip_bad: bool = False
) -> PhotoEmbeddings:
    """All embeddings of one object's photos (one view set, in the order given); `skip_bad` leaves out the
    photos that cannot be read (PhotoEmbeddings.skipped) instead of raising."""
    views, read, skipped = read_photos(paths, image_size, skip_bad)
    sv_cat, sv_obj, mv_cat, mv_obj = embed_views(model, views, device)
    return PhotoEmbeddings(images=read, sv_cat=sv_cat, sv_obj=sv_obj, mv_cat=mv_cat, mv_obj=mv_obj, skipped=skipped)
