"""`piro serve` over HTTP on this machine: one photo's latency for one client, and photos per second for many
clients at once, side by side in one run.

    python bench/bench_serve.py INDEX PHOTO [--onnx GRAPHS.onnx] [--requests 60] [--clients 20]

The service runs in this process (uvicorn on a free local port, in a thread); clients are threads with their own
httpx connection. Prints p50 and p99 of one client's requests, then throughput and p99 with `--clients` at once.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from piro_cli.inference.service import Service, ServiceOptions, create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed_requests(url: str, photo: bytes, count: int, into: list[float]) -> None:
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post(url, files=[("photos", ("photo.jpg", photo, "image/jpeg"))])
            response.raise_for_status()
            into.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index")
    parser.add_argument("photo")
    parser.add_argument("--onnx", default=None)
    parser.add_argument("--requests", type=int, default=60, help="requests of the single client (and of each client)")
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    service = Service(args.index, ServiceOptions(), onnx=args.onnx)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/identify"
    photo = Path(args.photo).read_bytes()
    timed_requests(url, photo, 3, [])  # warm-up: first answers compute spreads, first forward passes
    one: list[float] = []
    timed_requests(url, photo, args.requests, one)
    print(f"engine: {service.identifier.engine}; index {args.index}: {len(service.identifier.gallery.objects)} objects")
    print(f"1 client, {len(one)} requests: p50 {1000 * statistics.median(one):.1f} ms, p99 {1000 * percentile(one, 0.99):.1f} ms, "
          f"{len(one) / sum(one):.1f} photos/s")  # fmt: skip
    many: list[float] = []
    workers = [threading.Thread(target=timed_requests, args=(url, photo, max(1, args.requests // 4), many)) for _ in range(args.clients)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    print(f"{args.clients} clients, {len(many)} requests: {len(many) / wall:.1f} photos/s, p50 {1000 * statistics.median(many):.1f} ms, "
          f"p99 {1000 * percentile(many, 0.99):.1f} ms")  # fmt: skip
    server.should_exit = True
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
