"""Benchmark the mesh renderer (piro_cli.data.render.render_views) on generated meshes.

    python bench/bench_render.py [--meshes 10] [--faces 10000] [--size 224] [--views 12] [--device cpu] [--threads N]

Meshes are generated offline (randomly deformed UV spheres, tori, revolved vases,
finely gridded boxes and capsules, each with about --faces faces, randomly rotated),
normalised to the unit sphere; one render is done for warm-up before timing.

Timings are only meaningful on an otherwise idle machine: with torch's default
thread count (one per core), another busy process makes every parallel op wait
for a descheduled thread and rendering slows down many times; use --threads 1
(or torch.set_num_threads(1) in the renderer's process) when sharing the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from piro_cli.data.render import SUPERSAMPLE, ViewProtocol, normalize_to_unit_sphere, render_views  # noqa: E402

MODELNET40_MESHES = 12311


def _grid_box(extents: np.ndarray, k: int) -> trimesh.Trimesh:
    """A box whose six sides are k x k quad grids (12 k^2 triangles)."""
    u = np.linspace(-0.5, 0.5, k + 1)
    gu, gv = np.meshgrid(u, u, indexing="ij")
    idx = np.arange((k + 1) ** 2).reshape(k + 1, k + 1)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    parts = []
    for axis in range(3):
        for sign in (-0.5, 0.5):
            pts = np.zeros((gu.size, 3))
            pts[:, axis] = sign
            pts[:, (axis + 1) % 3] = gu.ravel()
            pts[:, (axis + 2) % 3] = gv.ravel()
            parts.append(trimesh.Trimesh(vertices=pts * extents, faces=tris, process=False))
    return trimesh.util.concatenate(parts)


def make_mesh(i: int, faces: int, rng: np.random.Generator) -> trimesh.Trimesh:
    """Shape i (cycling through five kinds) with about `faces` triangles, randomly rotated, normalised."""
    kind = i % 5
    if kind == 0:  # randomly deformed UV sphere (about 4 n^2 faces)
        n = max(4, round(np.sqrt(faces / 4)))
        m = trimesh.creation.uv_sphere(count=[n, n])
        v = m.vertices
        bumps = sum(
            rng.uniform(0.05, 0.25) * np.sin(rng.uniform(1, 4) * v @ rng.normal(size=3) + rng.uniform(0, 6)) for _ in range(4)
        )
        m.vertices = v * (1.0 + bumps)[:, None] * rng.uniform(0.5, 1.5, size=3)
    elif kind == 1:  # torus (2 * major * minor faces)
        n = max(4, round(np.sqrt(faces / 4)))
        m = trimesh.creation.torus(major_radius=1.0, minor_radius=rng.uniform(0.2, 0.45), major_sections=2 * n, minor_sections=n)
    elif kind == 2:  # vase: random profile revolved (2 (points - 1) sections faces)
        n = max(8, round(np.sqrt(faces / 2)))
        z = np.linspace(0.0, rng.uniform(1.5, 3.0), n + 1)
        r = 0.3 + 0.25 * np.sin(z * rng.uniform(1, 3) + rng.uniform(0, 6)) + 0.2 * rng.random()
        m = trimesh.creation.revolve(np.stack([np.clip(r, 0.05, None), z], axis=1), sections=n)
    elif kind == 3:  # box with finely gridded sides (12 k^2 faces), many small coplanar triangles
        k = max(1, round(np.sqrt(faces / 12)))
        m = _grid_box(rng.uniform(0.5, 2.0, size=3), k)
    else:  # capsule, stretched (about 2 n^2 faces)
        n = max(4, round(np.sqrt(faces / 2)))
        m = trimesh.creation.capsule(height=rng.uniform(1, 3), radius=0.5, count=[n, n])
    rot = trimesh.transformations.random_rotation_matrix(rng.random(3))
    m.apply_transform(rot)
    return normalize_to_unit_sphere(m)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meshes", type=int, default=10, help="number of generated meshes to time")
    ap.add_argument("--faces", type=int, default=10000, help="approximate faces per mesh")
    ap.add_argument("--size", type=int, default=224, help="image size in pixels")
    ap.add_argument("--views", type=int, default=12, help="views per mesh")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default 0: keep torch's default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    meshes = [make_mesh(i, args.faces, rng) for i in range(args.meshes)]
    protocol = ViewProtocol(num_views=args.views)
    device = torch.device(args.device)

    print(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip())
    print(f"cpu count: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device} ({dev_name})")
    fcount = [len(m.faces) for m in meshes]
    print(
        f"meshes: {len(meshes)}, faces per mesh: mean {np.mean(fcount):.0f} "
        f"(min {min(fcount)}, max {max(fcount)}), size {args.size}, views {args.views}, "
        f"supersample {SUPERSAMPLE}x"
    )

    render_views(meshes[0], size=args.size, protocol=protocol, device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    per = []
    t_all = time.perf_counter()
    for m in meshes:
        t0 = time.perf_counter()
        render_views(m, size=args.size, protocol=protocol, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        per.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    s_per_mesh = total / len(meshes)
    print(f"s/mesh: {s_per_mesh:.3f} (median {np.median(per):.3f}, max {max(per):.3f})")
    print(f"meshes/s: {1.0 / s_per_mesh:.2f}")
    est = MODELNET40_MESHES * s_per_mesh
    print(
        f"ModelNet-40 ({MODELNET40_MESHES} meshes) extrapolated: {est:.0f} s = {est / 60:.1f} min "
        "(rendering only, at these face counts)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
