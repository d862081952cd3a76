"""The direction regulariser's cosines on an ObjectPI-sized batch: gathered vectors against Gram matrices.

    python bench/bench_direction_cosines.py [--triplets 37000] [--embeddings 72] [--dim 512] [--threads 1]

A piro-dual batch of 4 pairs has 72 object embeddings (2 x 4 objects x (8 views + the view set)); the semi-hard
miner finds tens of thousands of triplets among them. Prints the median time of each way over 7 repeats, their
ratio and the largest difference between their values.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from piro_cli.losses.direction import _triplet_cosines, direction_cosine


def median_seconds(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triplets", type=int, default=37000)
    parser.add_argument("--embeddings", type=int, default=72)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(args.embeddings, args.dim), dim=1)
    a, p, n = (torch.randint(0, args.embeddings, (args.triplets,)) for _ in range(3))
    gathered = median_seconds(lambda: direction_cosine(x[a], x[p], x[n]))
    gram = median_seconds(lambda: _triplet_cosines(x, x, a, p, n))
    valid = (a != p) & (a != n)
    difference = (direction_cosine(x[a], x[p], x[n]) - _triplet_cosines(x, x, a, p, n))[valid].abs().max()
    print(f"{args.triplets} triplets of {args.embeddings} embeddings (D = {args.dim}), {args.threads} thread(s)")
    print(f"gathered vectors: {gathered * 1000:.1f} ms; Gram matrices: {gram * 1000:.1f} ms; ratio {gathered / gram:.1f}x")
    print(f"largest difference: {float(difference):.1e}")


if __name__ == "__main__":
    main()
