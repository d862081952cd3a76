"""Serving speed and the `unknown` rate: `piro index` and `piro identify` measured (docs/BENCHMARKS.md, "Serving").

python bench/bench_serving.py search [--views 100000] [--dim 512]
    An index of random unit vectors (views of 8 per object, both spaces D-dimensional) written, loaded
    and searched: memory per 100k views, one photo's search time (category vote and object distances),
    queries per second in batches, and piro's exact search against faiss IndexFlatL2 (k=10) side by side.
python bench/bench_serving.py model [--backbone efficientnet_lite0] [--size 224]
    The model's share of `identify`: one photo through the backbone and both heads.
python bench/bench_serving.py trial RUN --data FILE [--split val|test] [--trials 5] [--enrol 4]
    The issue's path on a trained run: `index build` on its training objects, `calibrate` on its validation
    objects, then per trial the held-out objects (the run's validation objects, or the test split) are split
    in half at random: one half enrolled with `index add` from image files of their first `--enrol` views,
    and every other view of every held-out object is identified alone. Reports build and add throughput,
    how often an enrolled object's photo is named correctly, and how often a never-enrolled object's photo
    comes back `unknown` at the calibrated threshold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from piro_cli.hardware import keep_freed_memory
from piro_cli.inference.index import (
    MANIFEST,
    SHARDS,
    Enrolment,
    GalleryIndex,
    _shard_bytes,
    add_objects,
    build_index,
    commit_index,
)
from piro_cli.retrieval.search import nearest


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls (after one warm-up) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def search(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    views, d, per = args.views, args.dim, 8
    objects = views // per
    folder = Path(tempfile.mkdtemp(prefix="bench-index-")) / "bench.piro-index"
    manifest = {
        "format": "piro-index", "format_version": 1, "piro_version": "bench", "created_at": "",
        "checkpoint": {"path": "none", "fingerprint": "bench", "cat_dim": d, "obj_dim": d, "image_size": 224, "tta": False},
        "categories": [f"c{i}" for i in range(25)], "shards": ["000000.npz"], "next_shard": 1, "next_id": objects,
        "objects": [{"id": i, "name": f"o{i}", "category": i % 25, "views": per, "source": "bench", "shard": "000000.npz"} for i in range(objects)],
        "threshold": {"by_photos": {"1": {"score": 1.0}}, "scoring": {"distance": "combined", "rejection": args.rejection}},
    }  # fmt: skip
    ids = np.arange(objects)
    arrays = {
        "sv_cat": unit(rng, views, d),
        "sv_obj": unit(rng, views, d),
        "mv_cat": unit(rng, objects, d),
        "mv_obj": unit(rng, objects, d),
    }
    started = time.perf_counter()
    commit_index(folder, manifest, ("000000.npz", _shard_bytes({"view_object": np.repeat(ids, per), "set_object": ids, **arrays}, "bench")))
    write_seconds = time.perf_counter() - started
    disk = (folder / SHARDS / "000000.npz").stat().st_size + (folder / MANIFEST).stat().st_size
    del arrays
    before = rss_mb()
    started = time.perf_counter()
    gallery = GalleryIndex(folder)
    vectors = gallery.vectors()
    load_seconds = time.perf_counter() - started
    held = sum(getattr(vectors, n).nbytes for n in ("sv_cat", "sv_obj", "mv_cat", "mv_obj", "view_object", "view_category"))
    print(f"index: {objects} objects x {per} views = {views} views, D = {d} in each space; threads {torch.get_num_threads()}")
    print(f"  write {write_seconds:.2f} s, {disk / 2**20:.0f} MiB on disk; load {load_seconds:.2f} s")
    print(
        f"  memory: arrays {held / 2**20:.0f} MiB ({held / 2**20 * 100_000 / views:.0f} MiB per 100k views), RSS +{rss_mb() - before:.0f} MB"
    )
    query_cat, query_obj, query_set = unit(rng, 256, d), unit(rng, 256, d), unit(rng, 256, d)
    started = time.perf_counter()
    gallery.identify(query_cat[:1], query_obj[:1], query_set[0])  # the first answer also computes spreads and scales
    print(f"  first answer after loading: {1000 * (time.perf_counter() - started):.1f} ms")
    one_vote, _ = timed(lambda: gallery._category_votes(query_cat[:1]), args.repeats)
    one_total, answer = timed(lambda: gallery.identify(query_cat[:1], query_obj[:1], query_set[0]), args.repeats)
    print(
        f"  one photo: identify {1000 * one_total:.1f} ms (default scoring {gallery.rule.label}), of which the category vote {1000 * one_vote:.1f} ms"
    )
    batch, _ = timed(lambda: gallery.identify_each(query_cat, query_obj, query_set), max(3, args.repeats // 5))
    print(f"  batch of 256 photos (identify_each): {batch:.3f} s, {256 / batch:.0f} photos/s")
    own_one, _ = timed(lambda: nearest(query_cat[:1], vectors.sv_cat, 10, vectors.sv_cat_norms), args.repeats)
    own_batch, own = timed(lambda: nearest(query_cat, vectors.sv_cat, 10, vectors.sv_cat_norms), max(3, args.repeats // 5))
    try:
        import faiss
    except ImportError:
        print("  faiss not installed: no side-by-side")
        return
    faiss.omp_set_num_threads(torch.get_num_threads())
    flat = faiss.IndexFlatL2(d)
    flat.add(vectors.sv_cat)
    faiss_one, _ = timed(lambda: flat.search(query_cat[:1], 10), args.repeats)
    faiss_batch, (_, found) = timed(lambda: flat.search(query_cat, 10), max(3, args.repeats // 5))
    agree = float(np.mean([set(a) == set(b) for a, b in zip(own[0], found, strict=True)]))
    print("  exact 10-NN over the category views, piro vs faiss IndexFlatL2:")
    print(
        f"    1 query:    piro {1000 * own_one:.2f} ms, faiss {1000 * faiss_one:.2f} ms, faiss/piro time {faiss_one / own_one:.2f}"
    )
    print(
        f"    256 queries: piro {1000 * own_batch:.1f} ms, faiss {1000 * faiss_batch:.1f} ms, faiss/piro time {faiss_batch / own_batch:.2f}"
    )
    print(f"    same neighbour sets: {100 * agree:.1f}% of queries")
    shutil.rmtree(folder.parent)
    print(json.dumps({"answer": answer["answer"], "distance": answer["distance"]}))


def model(args: argparse.Namespace) -> None:
    from piro_cli.inference.embedding import embed_views
    from piro_cli.models.pan import PAN, PANConfig

    pan = PAN(PANConfig(backbone=args.backbone, pretrained=False, cat_dim=256, obj_dim=512)).eval()
    photo = np.random.default_rng(0).integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8)
    one, _ = timed(lambda: embed_views(pan, photo, torch.device("cpu")), args.repeats)
    print(f"model: {args.backbone} at {args.size} px, one photo: {1000 * one:.1f} ms (threads {torch.get_num_threads()})")
    pan.flip_views = True
    for _ in range(args.rounds):  # interleaved, so both see the same machine
        pan.test_scales = (1.0,)
        flipped, _ = timed(lambda: embed_views(pan, photo, torch.device("cpu")), args.repeats)
        pan.test_scales = tuple(float(s) for s in args.tta_scales.split(","))
        scaled, _ = timed(lambda: embed_views(pan, photo, torch.device("cpu")), args.repeats)
        print(f"  with test-time flips: {1000 * flipped:.1f} ms; and scales {args.tta_scales}: {1000 * scaled:.1f} ms "
              f"({scaled / flipped:.2f}x)")  # fmt: skip


def trial(args: argparse.Namespace) -> None:
    from PIL import Image

    from piro_cli.data.store import ViewSetStore
    from piro_cli.inference.calibration import OpenSetProtocol, calibrate_index
    from piro_cli.inference.embedding import embed_views, read_photos
    from piro_cli.inference.run import group_rows, load_run

    work = Path(tempfile.mkdtemp(prefix="bench-trial-"))
    index = work / "gallery.piro-index"
    started = time.perf_counter()
    built = build_index(args.run, index, data=args.data, split="train", device="cpu")
    build_seconds = time.perf_counter() - started
    print(
        f"build: {built.objects} objects, {built.views} views in {build_seconds:.1f} s ({built.views / build_seconds:.1f} views/s)"
    )
    loaded = load_run(args.run, "cpu")
    store = ViewSetStore(args.data)
    split_name, rows = group_rows(loaded.checkpoint, store, args.split)
    split = store.split(split_name)
    rows = np.arange(len(split)) if rows is None else rows
    calibrate_on = None
    if args.split == "val":  # the same objects would test the threshold they chose: calibrate on half, test on the rest
        order = np.random.default_rng(7).permutation(rows)
        calibrate_on = [split.object_names[int(r)] for r in order[: len(order) // 2]]
        rows = np.sort(order[len(order) // 2 :])
    started = time.perf_counter()
    calibration = calibrate_index(index, data=args.data, split="val", protocol=OpenSetProtocol(draws=args.draws), objects=calibrate_on)
    single = calibration.single
    print(
        f"calibrate ({calibration.objects} val objects, {args.draws} draws, {calibration.rule.label}): one-photo threshold "
        f"{single.score:.4f}, FAR {100 * single.far:.1f}%, FRR {100 * single.frr:.1f}%, wrong object {100 * single.wrong_object:.1f}% "
        f"({time.perf_counter() - started:.1f} s)"
    )
    print(f"trial objects: {len(rows)} of {args.split} (never used to calibrate)")
    photos = work / "photos"
    files: dict[int, list[Path]] = {}
    for r in rows:
        folder = photos / str(int(r))
        folder.mkdir(parents=True)
        files[int(r)] = []
        for k, view in enumerate(split.views_uint8(int(r))):
            Image.fromarray(view).save(folder / f"{k}.png")
            files[int(r)].append(folder / f"{k}.png")
    gallery = GalleryIndex(index)
    named, unknown_rates, known_total, unknown_total, add_rates = [], [], 0, 0, []
    for t in range(args.trials):
        trial_index = work / f"trial{t}.piro-index"
        shutil.copytree(index, trial_index)
        order = np.random.default_rng(100 + t).permutation(rows)
        enrolled = order[: len(order) // 2]  # the other half is never enrolled
        enrolments = [
            Enrolment(f"held-{r}", store.categories[int(split.category[int(r)])], files[int(r)][: args.enrol]) for r in enrolled
        ]
        started = time.perf_counter()
        add_objects(trial_index, enrolments, device="cpu")
        add_rates.append(len(enrolments) / (time.perf_counter() - started))
        gallery = GalleryIndex(trial_index)
        queries, owners = [], []
        for r in order:
            for path in files[int(r)][args.enrol :]:
                queries.append(path)
                owners.append(int(r))
        views, _, _ = read_photos(queries, loaded.image_size)
        sv_cat, sv_obj, mv_obj = [], [], []
        for photo in range(len(views)):  # each photo its own view set, as `piro identify photo.jpg` embeds it
            c, o, _, m = embed_views(loaded.model, views[photo : photo + 1], torch.device("cpu"))
            sv_cat.append(c)
            sv_obj.append(o)
            mv_obj.append(m[None])
        answers = gallery.identify_each(torch.cat(sv_cat), torch.cat(sv_obj), torch.cat(mv_obj))
        enrolled_set = {int(r) for r in enrolled}
        right = [a["answer"] == f"held-{o}" for a, o in zip(answers, owners, strict=True) if o in enrolled_set]
        unknown = [a["answer"] == "unknown" for a, o in zip(answers, owners, strict=True) if o not in enrolled_set]
        named.append(float(np.mean(right)))
        unknown_rates.append(float(np.mean(unknown)))
        known_total += len(right)
        unknown_total += len(unknown)
        shutil.rmtree(trial_index)
        print(
            f"  trial {t}: enrolled photo named right {100 * named[-1]:.1f}% ({len(right)}), never-enrolled photo unknown {100 * unknown_rates[-1]:.1f}% ({len(unknown)})"
        )
    print(f"add: {np.mean(add_rates):.1f} objects/s ({args.enrol} photos each, embedding included)")
    print(
        f"over {args.trials} trials: enrolled objects' photos named right {100 * np.mean(named):.1f}% (min {100 * min(named):.1f}%, "
        f"{known_total} photos); never-enrolled photos unknown {100 * np.mean(unknown_rates):.1f}% (min {100 * min(unknown_rates):.1f}%, "
        f"{unknown_total} photos); unknown in {sum(r > 0.5 for r in unknown_rates)} of {args.trials} trials for most photos"
    )
    shutil.rmtree(work)


def onnx(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    from piro_cli.inference.embedding import embed_views
    from piro_cli.inference.export import export_onnx
    from piro_cli.inference.run import EmbedSettings, load_run

    scales = tuple(float(s) for s in args.tta_scales.split(",")) if args.tta_scales else None
    work = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    started = time.perf_counter()
    result = export_onnx(args.run, work / "model.onnx", embedding=EmbedSettings(tta_scales=scales))
    print(f"export: {time.perf_counter() - started:.1f} s, onnxruntime vs torch largest difference {result.max_difference:.1e}")
    loaded = load_run(args.run, "cpu", tta_scales=scales)
    print(f"  flips {loaded.tta}, scales {loaded.tta_scales}")
    size = loaded.image_size
    photo = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(result.embedder), options, providers=["CPUExecutionProvider"])
    for _ in range(args.rounds):  # interleaved, so both see the same machine
        torch_time, _ = timed(lambda: embed_views(loaded.model, photo, torch.device("cpu")), args.repeats)
        ort_time, _ = timed(lambda: session.run(None, {"images": photo}), args.repeats)
        print(
            f"  one photo at {size} px: torch {1000 * torch_time:.1f} ms, onnxruntime {1000 * ort_time:.1f} ms, torch/onnxruntime {torch_time / ort_time:.2f}"
        )
    sizes = {p.name: p.stat().st_size / 2**20 for p in (result.embedder, result.viewset)}
    print("  files: " + ", ".join(f"{name} {mb:.1f} MiB" for name, mb in sizes.items()))
    shutil.rmtree(work)


def main() -> None:
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("search")
    s.add_argument("--views", type=int, default=100_000)
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--repeats", type=int, default=30)
    s.add_argument("--rejection", default="scaled", help="the scoring rule's rejection (the default: scaled)")
    m = sub.add_parser("model")
    m.add_argument("--backbone", default="efficientnet_lite0")
    m.add_argument("--size", type=int, default=224)
    m.add_argument("--repeats", type=int, default=20)
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--tta-scales", default="1,1.15", help="test-time scales timed beside the flips alone")
    t = sub.add_parser("trial")
    t.add_argument("run")
    t.add_argument("--data", required=True)
    t.add_argument("--split", default="val", choices=("val", "test"))
    t.add_argument("--trials", type=int, default=5)
    t.add_argument("--enrol", type=int, default=4)
    t.add_argument("--draws", type=int, default=5)
    o = sub.add_parser("onnx")
    o.add_argument("run")
    o.add_argument("--repeats", type=int, default=10)
    o.add_argument("--rounds", type=int, default=3)
    o.add_argument("--tta-scales", default=None, help="test-time scales to export and time (default: the run's own)")
    args = parser.parse_args()
    {"search": search, "model": model, "trial": trial, "onnx": onnx}[args.what](args)


if __name__ == "__main__":
    main()
