"""PICR evaluation benchmarks on this machine (figures in docs/BENCHMARKS.md).

1. `fg3d`: all eight tasks at FG3D scale on synthetic but clustered embeddings: 3,977 test objects x 12
   views (47,724 single views) against a category gallery of 21,575 train objects x 12 views (258,900),
   dimension 2048 in both spaces, 66 categories (3 families of 22 subtypes). Wall time per computation
   step and in total, and peak memory (VmHWM = peak RSS) of the whole process, data included.
2. `speedup`: the four retrieval mAPs computed the straightforward per-query way of the authors'
   released code (rank every item for every query, then a Python loop of precision-at-k over the
   ranked list) against piro's kernels, on the same embeddings in the same run, at ObjectPI size
   (98 test objects x 8 views, 25 categories) and ModelNet-40 size (800 x 12, 40 categories).

3. `bf16`: SV category recognition, the step that is ~80% of the fg3d time, with the float32 kernels and with
   the bf16 candidate pass + exact re-ranking (metrics._rank_bf16), on the same embeddings in the same run:
   wall time of each and, for each, how many neighbour lists differ from a float64 brute-force sort
   (`--queries` of the test views against the whole FG3D-scale gallery). bf16 is automatic only where the CPU
   computes it natively (piro_cli.hardware.cpu_has_native_bf16); here it is forced, so on other CPUs this
   measures torch's emulated bf16.

    python bench/bench_evaluate.py fg3d
    python bench/bench_evaluate.py speedup
    python bench/bench_evaluate.py bf16 --queries 1000
    python bench/bench_evaluate.py all          # both, speedup first

The synthetic embeddings: category space view = L2norm(c + 0.5 h_o + 3 e_v), with c the subtype centre
(L2norm(family + 0.48 g_subtype)), h_o an object offset and e_v view noise, all random directions of
norm ~1; c_mv adds 0.8 x 3 of extra noise to the mean of the view terms. Object space view =
L2norm(p_o + 0.5 c' + 4.3 e_v); the o_mv of each half of the views adds 0.6 x 4.3 of noise to the half's
mean. On the CPU these give task values in the range of the paper's FG3D numbers (category accuracies
~80 %, object accuracies 80-100 %). The gallery's object-space embeddings are not generated: no task
reads them.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import time

import numpy as np
import torch

from piro_cli.models.embedding import EmbeddingSet
from piro_cli.retrieval.metrics import numba_available, rank
from piro_cli.retrieval.picr import SHORT_NAMES, TASKS, run_picr

DIM = 2048


# ----------------------------------------------------------------------------- synthetic clustered embeddings


def _directions(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, DIM, generator=generator) / math.sqrt(DIM)


def make_centres(num_categories: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    families = _directions(generator, 3)
    cat_centres = torch.nn.functional.normalize(
        families[torch.arange(num_categories) % 3] + 0.48 * _directions(generator, num_categories), dim=-1
    )
    obj_centres = _directions(generator, num_categories)
    return cat_centres, obj_centres


def make_split(
    labels: torch.Tensor,
    views: int,
    centres: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
    object_space: bool = True,
    block: int = 512,
) -> EmbeddingSet:
    """Embeddings of len(labels) objects, generated in blocks of objects so memory stays at the output's size."""
    n = len(labels)
    cat_centres, obj_centres = centres
    sv_cat = torch.empty(n, views, DIM)
    mv_cat = torch.empty(n, DIM)
    sv_obj = torch.empty(n, views, DIM) if object_space else None
    first = torch.empty(n, DIM) if object_space else None
    last = torch.empty(n, DIM) if object_space else None
    half = max(1, views // 2)
    normalize = torch.nn.functional.normalize
    for start in range(0, n, block):
        stop = min(start + block, n)
        lab = labels[start:stop]
        b = stop - start
        mean = cat_centres[lab] + 0.5 * _directions(generator, b)
        noise = 3.0 * _directions(generator, b, views)
        sv_cat[start:stop] = normalize(mean[:, None] + noise, dim=-1)
        mv_cat[start:stop] = normalize(mean + noise.mean(1) + 0.8 * 3.0 * _directions(generator, b), dim=-1)
        if object_space:
            obj_mean = _directions(generator, b) + 0.5 * obj_centres[lab]
            noise = 4.3 * _directions(generator, b, views)
            sv_obj[start:stop] = normalize(obj_mean[:, None] + noise, dim=-1)
            first[start:stop] = normalize(obj_mean + noise[:, :half].mean(1) + 0.6 * 4.3 * _directions(generator, b), dim=-1)
            last[start:stop] = normalize(
                obj_mean + noise[:, views - half :].mean(1) + 0.6 * 4.3 * _directions(generator, b), dim=-1
            )
    return EmbeddingSet(sv_cat, sv_obj, mv_cat, None, first, last, labels)


def make_dataset(train_objects: int, test_objects: int, views: int, categories: int, seed: int, gallery_objects: bool = False):
    generator = torch.Generator().manual_seed(seed)
    centres = make_centres(categories, generator)
    # objects grouped by category, as in the prepared files
    train_labels = torch.randint(0, categories, (train_objects,), generator=generator).sort().values
    test_labels = torch.randint(0, categories, (test_objects,), generator=generator).sort().values
    gallery = make_split(train_labels, views, centres, generator, object_space=gallery_objects)
    probes = make_split(test_labels, views, centres, generator)
    return gallery, probes


# ----------------------------------------------------------------------------- measurements


def peak_rss_gb() -> float:
    """Peak resident set size of this process (VmHWM), in GB (10^9 bytes)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}; torch {torch.__version__}, numba kernels: {numba_available()}"


def fg3d(args: argparse.Namespace) -> None:
    scale = args.scale
    train_objects, test_objects = round(21575 * scale), round(3977 * scale)
    print(f"FG3D scale x{scale}: {test_objects} test objects x 12 views ({test_objects * 12} single views), gallery "
          f"{train_objects} x 12 ({train_objects * 12}), dim {DIM}, 66 categories", flush=True)  # fmt: skip
    started = time.perf_counter()
    gallery, probes = make_dataset(train_objects, test_objects, 12, 66, args.seed)
    print(
        f"generated the embeddings in {time.perf_counter() - started:.1f} s; peak RSS so far {peak_rss_gb():.2f} GB", flush=True
    )

    def progress(stage: str, done: int, total: int) -> None:
        if args.verbose:
            print(f"  {stage}: {done}/{total}", flush=True)

    # one call per computation step (the SV and MV object tasks share theirs), so each gets its own wall and CPU time
    steps = [
        ("sv-category-recognition",), ("mv-category-recognition",), ("sv-object-recognition", "sv-object-retrieval"),
        ("mv-object-recognition", "mv-object-retrieval"), ("sv-category-retrieval",), ("mv-category-retrieval",),
    ]  # fmt: skip
    sizes = {
        "sv-category-recognition": f"{len(probes) * 12} x {len(gallery) * 12}",
        "mv-category-recognition": f"{len(probes)} x {len(gallery)}",
        "sv-object-recognition": f"{len(probes) * 12} x {len(probes) * 12}",
        "mv-object-recognition": f"{len(probes)} x {len(probes)}",
        "sv-category-retrieval": f"{len(probes) * 12} x {len(probes) * 12}",
        "mv-category-retrieval": f"{len(probes)} x {len(probes)}",
    }
    load_before = os.getloadavg()
    values: dict[str, float] = {}
    rows = []
    for names in steps:
        started, cpu_started = time.perf_counter(), time.process_time()
        values.update(run_picr(gallery, probes, names, device=args.device, progress=progress).values)
        rows.append((names, time.perf_counter() - started, time.process_time() - cpu_started))
        print(f"  {' + '.join(names)}: {rows[-1][1]:.1f} s", flush=True)
    total, cpu_total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print()
    print(
        f"load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (2 cores: above ~2 means other processes shared them)"
    )
    print()
    print("| step | queries x items | wall s | CPU s (this process, all threads) |")
    print("|---|---|---|---|")
    for names, seconds, cpu in rows:
        print(f"| {' + '.join(names)} | {sizes[names[0]]} | {seconds:.1f} | {cpu:.1f} |")
    print(f"| **all eight tasks** | | **{total:.1f}** | **{cpu_total:.1f}** |")
    print()
    print("| " + " | ".join(SHORT_NAMES[t] for t in TASKS) + " |")
    print("|---" * len(TASKS) + "|")
    print("| " + " | ".join(f"{values[t]:.2f}" for t in TASKS) + " |")
    print()
    print(f"total {total:.1f} s (target <= 600 s); peak RSS {peak_rss_gb():.2f} GB (target <= 6 GB)", flush=True)


# ----------------------------------------------------------------------------- the released code's way


def released_average_precision(relevance: np.ndarray) -> float:
    """AP of one ranked relevance list, the released code's way: precision at k for every relevant k, in Python."""
    out = [np.mean(relevance[: k + 1]) for k in range(relevance.size) if relevance[k]]
    return float(np.mean(out)) if out else 0.0


def released_map(queries: np.ndarray, query_ids: np.ndarray, items: np.ndarray, item_ids: np.ndarray, drop_first: bool) -> float:
    """Rank every item for every query (float32 squared distances as faiss's IndexFlatL2 computes them, stable
    argsort), drop the first hit where the released code does ('other_view'), then the Python precision-at-k loop."""
    aps = []
    item_norms = (items * items).sum(1)
    for i in range(len(queries)):
        distances = item_norms - 2 * (items @ queries[i])
        order = np.argsort(distances, kind="stable")
        if drop_first:
            order = order[1:]
        aps.append(released_average_precision(item_ids[order] == query_ids[i]))
    return 100.0 * float(np.mean(aps))


def retrieval_inputs(probes: EmbeddingSet):
    """(name, queries, query ids, items, item ids, drop_first) of the four retrieval tasks (default protocol)."""
    n, v = probes.sv_cat.shape[:2]
    view_labels = probes.labels.repeat_interleave(v)
    view_objects = torch.arange(n).repeat_interleave(v)
    objects = torch.arange(n)
    sv_cat, sv_obj = probes.sv_cat.flatten(0, 1), probes.sv_obj.flatten(0, 1)
    return [
        ("sv-category-retrieval", sv_cat, view_labels, sv_cat, view_labels, False),
        ("mv-category-retrieval", probes.mv_cat, probes.labels, probes.mv_cat, probes.labels, False),
        ("sv-object-retrieval", sv_obj, view_objects, sv_obj, view_objects, True),
        ("mv-object-retrieval", probes.mv_obj_last, objects, probes.mv_obj_first, objects, False),
    ]


def speedup(args: argparse.Namespace) -> None:
    warm = torch.eye(4)
    ids = torch.arange(4)
    rank(warm, None, k=1, query_ids=ids)  # load the compiled kernels before timing
    rank(warm, warm.clone(), k=1, query_ids=ids, item_ids=ids)
    print("| size | task | released-code way (s) | piro (s) | speed-up | mAP released | mAP piro |")
    print("|---|---|---|---|---|---|---|")
    for label, objects, views, categories in (("ObjectPI 98 x 8", 98, 8, 25), ("ModelNet-40 800 x 12", 800, 12, 40)):
        _, probes = make_dataset(categories * 2, objects, views, categories, args.seed)
        slow_total = fast_total = 0.0
        for name, q, qid, x, xid, drop_first in retrieval_inputs(probes):
            started = time.perf_counter()
            slow = released_map(q.numpy(), qid.numpy(), x.numpy(), xid.numpy(), drop_first)
            slow_s = time.perf_counter() - started
            started = time.perf_counter()
            fast = 100.0 * float(
                rank(q, None if x is q else x, query_ids=qid, item_ids=xid, drop_first=drop_first).average_precision.mean()
            )
            fast_s = time.perf_counter() - started
            slow_total += slow_s
            fast_total += fast_s
            print(
                f"| {label} | {name} | {slow_s:.3f} | {fast_s:.4f} | {slow_s / fast_s:.0f}x | {slow:.4f} | {fast:.4f} |",
                flush=True,
            )
        print(
            f"| {label} | **four retrievals** | **{slow_total:.2f}** | **{fast_total:.3f}** | **{slow_total / fast_total:.0f}x** | | |",
            flush=True,
        )


def bf16(args: argparse.Namespace) -> None:
    from piro_cli.hardware import cpu_has_native_bf16

    train_objects, test_objects = round(21575 * args.scale), round(3977 * args.scale)
    gallery, probes = make_dataset(train_objects, test_objects, 12, 66, args.seed)
    items = gallery.sv_cat.flatten(0, 1).contiguous()
    queries = probes.sv_cat.flatten(0, 1)[: args.queries].contiguous()
    print(f"SV category recognition: {len(queries)} queries x {len(items)} items, dim {DIM}; native bf16: {cpu_has_native_bf16()}")
    x64, q64 = items.double(), queries.double()
    truth = []
    for start in range(0, len(q64), 256):  # float64 brute force, ties by index
        keys = ((x64 * x64).sum(1)[None, :] - 2.0 * q64[start : start + 256] @ x64.T).numpy()
        truth += [np.lexsort((np.arange(keys.shape[1]), row))[:10] for row in keys]
    truth = np.stack(truth)
    for precision in ("fp32", "bf16", "fp32", "bf16"):  # interleaved: both see the same machine
        started = time.perf_counter()
        found = rank(queries, items, k=10, precision=precision).neighbours.numpy()
        seconds = time.perf_counter() - started
        differ = int((found != truth).any(1).sum())
        print(f"  {precision}: {seconds:.1f} s ({len(queries) / seconds:.0f} queries/s); neighbour lists unlike float64's: {differ}")
    print(f"peak RSS {peak_rss_gb():.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("fg3d", "speedup", "bf16", "all"))
    parser.add_argument("--queries", type=int, default=1000, help="bf16: test views to rank")
    parser.add_argument("--scale", type=float, default=1.0, help="fg3d: fraction of the FG3D object counts (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--verbose", action="store_true", help="print progress")
    args = parser.parse_args()
    print(machine(), flush=True)
    if args.what in ("speedup", "all"):
        speedup(args)
        print()
    if args.what in ("fg3d", "all"):
        fg3d(args)
    if args.what == "bf16":
        bf16(args)


if __name__ == "__main__":
    main()
