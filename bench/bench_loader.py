"""Views/s from disk to normalised 224x224 float tensors: piro's HDF5 store against decoding JPEGs.

The JPEG path is what the paper's released code does per view: PIL open + decode,
resize to 224, ToTensor, Normalize (torchvision). The HDF5 paths are piro's reader:
random access by object (what the pair sampler does) and streaming in file order
(what embedding a split does). Every path runs in the same process, one after the
other, on the same objects; each is timed over `--repeats` passes and the best is kept.

    python bench/bench_loader.py --raw ../shared/data/objectpi --objects 120
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from piro_cli.data.prepare import PrepareOptions, prepare_dataset
from piro_cli.data.sources import get_source
from piro_cli.data.store import IMAGENET_MEAN, IMAGENET_STD, ViewSetStore


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=Path("../shared/data/objectpi"), help="ObjectPI raw folder")
    parser.add_argument("--objects", type=int, default=120, help="objects to load (8 views each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compressions", default="none,lzf,gzip")
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    records = get_source("objectpi").scan(args.raw).records[: args.objects]
    view_paths = []
    for record in records:
        folder = Path(record.source_path)
        view_paths.extend(sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg"))
    num_views = len(view_paths)

    to_tensor = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )

    def jpeg_path() -> None:
        for path in view_paths:
            with Image.open(path) as image:
                tensor = to_tensor(image.convert("RGB"))
            assert tensor.shape == (3, 224, 224)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, no GPU"
    )
    print(f"objects: {len(records)} ObjectPI objects, {num_views} views; best of {args.repeats} interleaved passes")

    rng = np.random.default_rng(0)
    paths: dict[str, object] = {"JPEG decode+resize+normalize (released code)": jpeg_path}
    stores = []
    with tempfile.TemporaryDirectory() as tmp:
        for compression in args.compressions.split(","):
            out = Path(tmp) / f"bench_{compression}.h5"
            prepare_subset(args.raw, records, out, compression)
            store = ViewSetStore(out)
            stores.append(store)
            split = store.split("train")
            order = rng.permutation(len(split))
            size_mb = out.stat().st_size / 2**20

            def random_access(split=split, order=order) -> None:
                for index in order:
                    tensor = split.views(int(index))
                    assert tensor.shape[1:] == (3, 224, 224)

            def streaming(split=split) -> None:
                for _, batch in split.stream(batch_objects=16):
                    assert batch.shape[2:] == (3, 224, 224)

            def streaming_small(split=split) -> None:
                for _, batch in split.stream(batch_objects=4):
                    assert batch.shape[2:] == (3, 224, 224)

            paths[f"HDF5 {compression:<4} ({size_mb:4.0f} MiB) random access by object"] = random_access
            paths[f"HDF5 {compression:<4} ({size_mb:4.0f} MiB) streaming, 16 objects/batch"] = streaming
            paths[f"HDF5 {compression:<4} ({size_mb:4.0f} MiB) streaming, 4 objects/batch"] = streaming_small

        # Round-robin passes so that load from other processes hits every path alike.
        best = dict.fromkeys(paths, float("inf"))
        for _ in range(args.repeats):
            for label, fn in paths.items():
                best[label] = min(best[label], best_of(1, fn))
        jpeg_s = best["JPEG decode+resize+normalize (released code)"]
        for label, seconds in best.items():
            print(f"{label:<52} {num_views / seconds:8.0f} views/s {jpeg_s / seconds:6.2f}x")
        for store in stores:
            store.close()


def prepare_subset(raw: Path, records, out: Path, compression: str) -> None:
    """Write the benchmark's objects only, through the real `prepare_dataset` path."""
    from piro_cli.data.sources import SOURCES
    from piro_cli.data.sources.base import Source, SourceScan

    scan = SourceScan(records, sorted({r.category for r in records}), "benchmark subset")
    SOURCES["_bench"] = Source("_bench", "", "", lambda raw_dir: scan)
    try:
        prepare_dataset("_bench", raw, out, PrepareOptions(compression=compression, overwrite=True))
    finally:
        del SOURCES["_bench"]


if __name__ == "__main__":
    main()
