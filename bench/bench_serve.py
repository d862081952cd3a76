"""`piro serve` over HTTP on this machine: one photo's latency for one client, and photos per second for many
clients at once, side by side in one run.

    python bench/bench_serve.py INDEX PHOTO [--onnx GRAPHS.onnx] [--requests 60] [--clients 20]
    python bench/bench_serve.py INDEX PHOTO... --load 2000 [--onnx GRAPHS.onnx]

With --load: the photos are identified offline first (`Identifier.answer`), then --clients clients send --load
requests of them while one more client enrols and removes objects made of random-noise photos in a loop; every
answer must be the offline one (noise objects are never the nearest to a real photo), no request may fail, and
the index must open whole afterwards. Run it on a copy of the index: the loop leaves it as it found it.

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
    parser.add_argument("photo", nargs="+")
    parser.add_argument("--onnx", default=None)
    parser.add_argument("--requests", type=int, default=60, help="requests of the single client (and of each client)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--load", type=int, default=0, help="a load test of this many requests, with enrolments interleaved")
    args = parser.parse_args()
    service = Service(args.index, ServiceOptions(), onnx=args.onnx)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/identify"
    if args.load:
        load_test(f"http://127.0.0.1:{port}", service, [Path(p) for p in args.photo], args.load, args.clients)
        server.should_exit = True
        thread.join(timeout=10)
        return
    photo = Path(args.photo[0]).read_bytes()
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


def load_test(base: str, service: Service, photos: list[Path], total: int, clients: int) -> None:
    import io

    import numpy as np
    from PIL import Image

    from piro_cli.data.photos import read_photos
    from piro_cli.inference.index import GalleryIndex

    expected = {}
    for photo in photos:
        views, _, _ = read_photos([photo], service.identifier.image_size)
        expected[photo.name] = service.identifier.answer(views)[0]["nearest_object"]
    data = {photo.name: photo.read_bytes() for photo in photos}
    failures, wrong, done = [], [], []
    stop = threading.Event()

    def identify_many(count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=120) as client:
            for _ in range(count):
                name = photos[int(rng.integers(len(photos)))].name
                response = client.post(f"{base}/identify", files=[("photos", (name, data[name], "image/jpeg"))])
                if response.status_code != 200:
                    failures.append(response.text[:200])
                elif response.json()["nearest_object"] != expected[name]:
                    wrong.append(name)
                done.append(1)

    def enrol_loop() -> None:
        rng = np.random.default_rng(99)
        noise = []
        for _ in range(3):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(buffer, format="PNG")
            noise.append(("noise.png", buffer.getvalue(), "image/png"))
        k = 0
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                made = client.post(f"{base}/objects", data={"name": f"noise{k}", "category": "noise"},
                                   files=[("photos", n) for n in noise])  # fmt: skip
                gone = client.delete(f"{base}/objects/noise{k}")
                for response in (made, gone):
                    if response.status_code not in (200, 201):
                        failures.append(response.text[:200])
                k += 1
        print(f"  enrolled and removed {k} objects meanwhile")

    started = time.perf_counter()
    writer = threading.Thread(target=enrol_loop)
    writer.start()
    workers = [threading.Thread(target=identify_many, args=(total // clients, seed)) for seed in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    writer.join()
    gallery = GalleryIndex(service.index)
    whole = len(gallery.vectors().view_object) == sum(o.views for o in gallery.objects)
    print(f"load: {len(done)} identifications by {clients} clients in {time.perf_counter() - started:.0f} s; "
          f"failed requests {len(failures)}, answers unlike offline {len(wrong)}; index whole afterwards: {whole}")  # fmt: skip
    for failure in failures[:3]:
        print("  failure:", failure)


if __name__ == "__main__":
    main()
