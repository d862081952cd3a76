"""`piro embed --images`: one new object's photos embedded, and with a gallery its nearest categories and objects.

The gallery is a data file (its train split is embedded on the fly) or an embeddings file with train
embeddings; for a saved index that answers "which object, or none" see piro_cli.inference.index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from piro_cli.data.store import ViewSetStore, resolve_data
from piro_cli.errors import DataError
from piro_cli.inference.cache import cached_embeddings
from piro_cli.inference.embedding import EmbeddedGroup, PhotoEmbeddings, embed_photos
from piro_cli.inference.embeddings_file import EmbeddingsFile, is_embeddings_file
from piro_cli.inference.run import check_categories, load_run, require_split
from piro_cli.reporting import Reporter, SilentReporter, stage_progress
from piro_cli.retrieval.search import KNN_VOTES, as_matrix, nearest, vote


def embed_new_object(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    *,
    gallery: str | Path | None = None,
    top: int = 5,
    device: str | None = None,
    tta: bool | None = None,
    reporter: Reporter | None = None,
    skip_bad: bool = False,
) -> PhotoEmbeddings:
    """Embeddings of one new object's photos; with `gallery` (a data file, whose train split is embedded, or an
    embeddings file with train embeddings) also its nearest categories and gallery objects. `skip_bad` leaves out
    the photos that cannot be read (listed in the result's `skipped`) instead of raising."""
    reporter = reporter or SilentReporter()
    run = load_run(checkpoint, device, tta)
    emb = store = None
    if gallery is not None:  # checked before any work
        if is_embeddings_file(gallery):
            emb = EmbeddingsFile(gallery)
            if emb.categories != run.categories:
                raise DataError(f"{gallery}: its categories are not the ones {run.path} was trained on")
            emb.require("train", hint=" (the gallery)")
        else:
            store = ViewSetStore(resolve_data(gallery))
            check_categories(run.checkpoint, store)
            require_split(store, "train", "the gallery")
    result = embed_photos(run.model, images, run.image_size, run.device, skip_bad)
    if emb is not None:
        return nearest_in_gallery(result, emb.load("train", ("mv_cat", "mv_obj")), emb.categories, top=top)
    if store is not None:
        group = cached_embeddings(run, store, "train", None, stage_progress(reporter, "embedding the gallery (train)"))
        return nearest_in_gallery(result, group, list(store.categories), top=top)
    return result


def nearest_in_gallery(
    result: PhotoEmbeddings, gallery: EmbeddedGroup, categories: Sequence[str], top: int = 5
) -> PhotoEmbeddings:
    """Fill `result.categories` (10-NN vote of c_mv among the gallery objects' c_mv, as in MV category
    recognition) and `result.objects` (gallery objects nearest in the object space, o_mv)."""
    g = gallery.embeddings
    labels = g.labels.long()
    found, distances = nearest(as_matrix(result.mv_cat[None]), as_matrix(g.mv_cat), KNN_VOTES)
    found, distances = found[0], distances[0]
    winner = int(vote(labels[torch.as_tensor(found)][None])[0]) if len(found) else -1
    votes: dict[int, list] = {}
    for position, (item, distance) in enumerate(zip(found.tolist(), distances.tolist(), strict=True)):
        entry = votes.setdefault(int(labels[item]), [0, position, distance])
        entry[0] += 1
    # the vote's winner first (ties to the smaller index, as `vote` decides), then by votes and index
    ordered = sorted(votes.items(), key=lambda kv: (kv[0] != winner, -kv[1][0], kv[0]))
    result.categories = [
        {"category": categories[c], "votes": v[0], "of": len(found), "distance": round(v[2], 4)} for c, v in ordered[:top]
    ]
    near, distances = nearest(as_matrix(result.mv_obj[None]), as_matrix(g.mv_obj), top)
    result.objects = [
        {"object": gallery.names[i], "category": categories[int(labels[i])], "distance": round(float(d), 4)}
        for i, d in zip(near[0].tolist(), distances[0].tolist(), strict=True)
    ]
    return result
