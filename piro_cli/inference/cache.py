"""Embeddings computed once: a run's embeddings of some objects of a data file, kept in its run folder and reused.

`evaluate`, `compare --split`, `embed`, `embed --images` (the gallery), `index build`, the views curve and the
open-set protocol all embed through here. An entry is keyed by what determines its values: the weights
(fingerprint), the data file (fingerprint), the split and rows, test-time flips and the device kind (a GPU embeds
under mixed precision). It lives in `<run folder>/embedding-cache/<key>.npz`, written atomically; an entry that
cannot be read is computed again, and a run folder that cannot be written to simply gets no cache. Entries over
MAX_BYTES are not kept (the FG3D scale at D = 2048 would take gigabytes).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from piro_cli.errors import PiroError
from piro_cli.inference.embedding import EmbeddedGroup, embed_objects
from piro_cli.inference.run import LoadedRun
from piro_cli.models.embedding import FIELDS, EmbeddingSet, backbone_features, batch_views_for
from piro_cli.outputs import write_bytes

CACHE_DIR = "embedding-cache"
MAX_BYTES = 1 << 30
VERSION = 1  # bump when what an entry holds changes

Progress = Callable[[int, int], None]


def cache_key(loaded: LoadedRun, store, split: str, rows, kind: str) -> str:
    described = {
        "version": VERSION,
        "kind": kind,
        "weights": loaded.fingerprint(),
        "data": store.fingerprint,
        "split": split,
        "rows": None if rows is None else [int(r) for r in rows],
        "tta": loaded.tta,
        "precision": loaded.precision,
        "center_crop": loaded.center_crop,
        "device": loaded.device.type,
    }
    if loaded.tta_scales != (1.0,):  # caches written before test-time scales keep their keys
        described["tta_scales"] = list(loaded.tta_scales)
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]


def cached_embeddings(loaded: LoadedRun, store, split: str, rows=None, progress: Progress | None = None) -> EmbeddedGroup:
    """`embed_objects` of the run's model, from the run folder's cache when it holds them."""
    path = loaded.folder / CACHE_DIR / f"{cache_key(loaded, store, split, rows, 'embeddings')}.npz"
    arrays = _read(path)
    if arrays is not None:
        embeddings = EmbeddingSet(*(torch.from_numpy(arrays[name]) for name in FIELDS), torch.from_numpy(arrays["labels"]))
        return EmbeddedGroup(embeddings, [str(n) for n in arrays["names"]], arrays["object_index"], split)
    group = embed_objects(loaded.model, store, split, rows, loaded.device, progress)
    e = group.embeddings
    _write(
        path,
        {**{name: getattr(e, name).numpy() for name in FIELDS}, "labels": e.labels.numpy(),
         "names": np.array(group.names, dtype=str), "object_index": np.asarray(group.object_index)},
    )  # fmt: skip
    return group


def cached_features(loaded: LoadedRun, store, split: str, rows, progress: Progress | None = None) -> torch.Tensor:
    """Backbone features (N, V, F) of the given objects (test-time flips included), from the cache when there."""
    path = loaded.folder / CACHE_DIR / f"{cache_key(loaded, store, split, rows, 'features')}.npz"
    arrays = _read(path)
    if arrays is not None:
        return torch.from_numpy(arrays["features"])
    features = backbone_features(
        loaded.model, store.split(split), rows, loaded.device, batch_views=batch_views_for(loaded.device, store.image_size),
        progress=progress,
    )  # fmt: skip
    _write(path, {"features": features.numpy()})
    return features


def _read(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError, EOFError):  # damaged or half-copied: computed again and replaced
        return None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    if sum(a.nbytes for a in arrays.values()) > MAX_BYTES:
        return
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        path.parent.mkdir(exist_ok=True)
        write_bytes(buffer.getvalue(), path, "free space; the cache is only a speed-up")
    except (OSError, PiroError):  # a read-only run folder or a full disk: no cache, the same results
        return
