"""`piro serve`: an index and its model loaded once, answering over HTTP (FastAPI; `pip install -e '.[serve]'`).

Endpoints (JSON; the OpenAPI description is at /docs and /openapi.json):

- `GET /health`: liveness, without a token;
- `GET /info`: what `piro index info` gives; `GET /objects`: the enrolled objects;
- `POST /identify`: one or several photos of one object (multipart `photos`), the answer of
  `piro identify --format json`;
- `POST /identify/batch`: several photos, each its own single-photo query;
- `POST /objects`: enrol an object (multipart `name`, `category`, `photos`); `DELETE /objects/{name}`.

Writes go through the index's own locked, atomic code (`add_objects`, `remove_objects`): a crash leaves the
index before or after a change. Before each request the service re-reads the index if its manifest changed, so
a `piro index add` from another process is seen. Bounds: the request body (`max_request_bytes`), photos per
request (`max_photos`) and decoded pixels (PIL's decompression-bomb limit) give 413 or 422 with one message.
Access: with a token every request but /health needs `Authorization: Bearer TOKEN`; `read_open` leaves reads
and identification open and guards writes only.
"""


import hmac
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from piro_cli.data.photos import decode_photos
from piro_cli.errors import BadItemError, PiroError
from piro_cli.inference.index import Enrolment, Identifier, add_objects, check_answer_options, remove_objects

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServiceOptions:
    token: str | None = None  # None: no token asked (only allowed on a local address, unless `insecure`)
    read_open: bool = False  # with a token: reads and identification need none, writes do
    max_photos: int = 64  # photos per request
    max_request_bytes: int = 64 << 20
    top: int = 5
    batch_size: int = 32  # single-photo queries embedded together at most
    batch_wait: float = 0.005  # seconds the first query of a batch waits for others to join it


def read_token(path: str | Path) -> str:
    """The bearer token in a file (its first line); refused when empty or readable by others."""
    path = Path(path)
    try:
        lines = path.read_text().strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PiroError(f"--token-file {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise PiroError(f"--token-file {path}: holds no token of at least 16 characters; write one, e.g. `openssl rand -hex 32 > {path}`")
    if path.stat().st_mode & 0o077:
        raise PiroError(f"--token-file {path}: others can read it; `chmod 600 {path}`")
    return token


def check_binding(host: str, token: str | None, insecure: bool) -> None:
    if host not in LOCAL_HOSTS and token is None and not insecure:
        raise PiroError(
            f"--host {host}: any machine that reaches it could enrol and remove objects; give --token-file, "
            "or --insecure to serve without a token on a trusted network"
        )


class Service:
    """The state behind the endpoints: an Identifier and a lock that orders model calls and index writes."""

    def __init__(self, index: str | Path, options: ServiceOptions, run=None, device=None, onnx=None) -> None:
        self.index = Path(index)
        self.options = options
        self.run, self.device = run, device  # enrolment embeds with the run's model (the index's, or --run's)
        self.identifier = Identifier(index, run, device, onnx)
        self.lock = threading.Lock()
        self.batcher = PhotoBatcher(self)
        self.single_photo_queries = 0  # in this process now, from arrival to answer: whom a batch may wait for
        self._counting = threading.Lock()

    def current(self) -> Identifier:
        self.identifier.reopen_if_changed()
        return self.identifier

    def identify(self, photos: list[tuple[str, bytes]], top: int, threshold: float | None) -> dict:
        check_answer_options(top, threshold)
        if len(photos) == 1:  # one photo: embedded in a batch with the others that arrive meanwhile
            with self._counting:
                self.single_photo_queries += 1
            try:
                views = decode_photos(photos, self.identifier.image_size)  # outside the lock: decoded in parallel
                answer, model_seconds, batch = self.batcher.submit(views[0], top, threshold)
            finally:
                with self._counting:
                    self.single_photo_queries -= 1
        else:
            views = decode_photos(photos, self.identifier.image_size)
            with self.lock:
                answer, model_seconds = self.current().answer(views, top, threshold)
            batch = 1
        return {"images": [name for name, _ in photos], **answer, "model_seconds": round(model_seconds, 4), "batch": batch}

    def identify_each(self, photos: list[tuple[str, bytes]], top: int, threshold: float | None) -> list[dict]:
        check_answer_options(top, threshold)
        views = decode_photos(photos, self.identifier.image_size)
        with self.lock:
            answers = self.current().answer_each(views, top, threshold)
        return [{"image": name, **answer} for (name, _), answer in zip(photos, answers, strict=True)]

    def enrol(self, name: str, category: str, photos: list[tuple[str, bytes]]) -> dict:
        with self.lock, tempfile.TemporaryDirectory(prefix="piro-serve-") as folder:
            paths = []
            for k, (filename, data) in enumerate(photos):
                path = Path(folder) / f"{k:03d}{Path(filename).suffix.lower() or '.jpg'}"
                path.write_bytes(data)
                paths.append(path)
            change = add_objects(self.index, [Enrolment(name, category, paths)], run=self.run, device=self.device)
            self.identifier.reopen_if_changed()
        return {"added": change.names, "objects": change.total_objects, "views": change.total_views}

    def remove(self, name: str) -> dict:
        with self.lock:
            change = remove_objects(self.index, [name])
            self.identifier.reopen_if_changed()
        return {"removed": change.names, "objects": change.total_objects, "views": change.total_views}


class PhotoBatcher:
    """Single-photo queries that arrive together, embedded in one batch: the first waits up to `batch_wait` for
    the others already received (at most `batch_size`; a lone query does not wait), then one forward pass embeds them all (each photo its own view set) and each
    is answered on its own. On a CPU a batch of photos costs less than the photos one by one."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, name="piro-photo-batcher", daemon=True).start()

    def submit(self, view: np.ndarray, top: int, threshold: float | None) -> tuple[dict, float, int]:
        """(the answer, the batch's model seconds, the batch's size) for one photo (uint8 (S, S, 3))."""
        item = {"view": view, "top": top, "threshold": threshold, "done": threading.Event()}
        self.pending.put(item)
        item["done"].wait()
        if "error" in item:
            raise item["error"]
        return item["answer"], item["model_seconds"], item["batch"]

    def _serve(self) -> None:
        options = self.service.options
        while True:
            batch = [self.pending.get()]
            deadline = time.monotonic() + options.batch_wait
            # wait only for queries already here (being decoded or queued): a lone query goes at once
            while (
                len(batch) < options.batch_size
                and self.service.single_photo_queries > len(batch)
                and (left := deadline - time.monotonic()) > 0
            ):
                try:
                    batch.append(self.pending.get(timeout=left))
                except queue.Empty:
                    break
            try:
                self._answer(batch)
            except Exception as exc:  # noqa: BLE001 (handed to the requests, which report it)
                for item in batch:
                    item.setdefault("error", exc)
            finally:
                for item in batch:
                    item["done"].set()

    def _answer(self, batch: list[dict]) -> None:
        with self.service.lock:
            identifier = self.service.current()
            started = time.perf_counter()
            sv_cat, sv_obj, mv_obj = identifier.embed_each(np.stack([item["view"] for item in batch]))
            seconds = time.perf_counter() - started
            for k, item in enumerate(batch):
                try:
                    item["answer"] = identifier.gallery.identify(
                        sv_cat[k : k + 1], sv_obj[k : k + 1], mv_obj[k], top=item["top"], threshold=item["threshold"]
                    )
                    item["model_seconds"], item["batch"] = seconds, len(batch)
                except Exception as exc:  # noqa: BLE001 (this request's own error)
                    item["error"] = exc


class Gate:
    """ASGI middleware in front of every endpoint: the bearer token first (every path but /health; with
    `read_open`, writes only), then the body's size, counted as it arrives (a chunked body has no
    Content-Length) and held in memory up to `max_request_bytes`, so an unauthorised or oversized request is
    refused before anything parses it."""

    def __init__(self, app, options: ServiceOptions) -> None:
        self.app = app
        self.options = options

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        options = self.options
        headers = dict(scope.get("headers") or [])
        write = scope["method"] in ("POST", "DELETE") and scope["path"].rstrip("/").startswith("/objects")
        if options.token is not None and scope["path"] != "/health" and (write or not options.read_open):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {options.token}".encode()):
                await _reply(send, 401, "a bearer token is needed: Authorization: Bearer TOKEN", [(b"www-authenticate", b"Bearer")])
                return
        limit = options.max_request_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reply(send, 413, f"the request is over {limit} bytes")
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _reply(send, 413, f"the request is over {limit} bytes")
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the client's disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _reply(send, status: int, detail: str, headers: list | None = None) -> None:
    import json

    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


def create_app(service: Service):
    """The FastAPI application over `service`."""
    try:
        from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
        from fastapi.responses import JSONResponse
    except ImportError:
        raise PiroError("piro serve needs FastAPI: pip install -e '.[serve]'") from None

    options = service.options
    app = FastAPI(title="piro", description="Identify objects from photos against a piro index.")

    # the gate (token, then size) runs before FastAPI reads or parses a byte of the body
    app.add_middleware(Gate, options=options)

    @app.exception_handler(PiroError)
    async def piro_error(request: Request, exc: PiroError):
        status = 404 if "no such object" in str(exc) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    # the endpoints that run the model are plain functions: FastAPI runs them in its thread pool, off the event loop
    def received(photos: list[UploadFile]) -> list[tuple[str, bytes]]:
        if not photos:
            raise HTTPException(422, "send one or more photos (multipart field 'photos')")
        if len(photos) > options.max_photos:
            raise HTTPException(413, f"{len(photos)} photos: at most {options.max_photos} a request")
        return [(photo.filename or f"photo-{k}", photo.file.read()) for k, photo in enumerate(photos)]

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    def info() -> dict:
        with service.lock:
            return service.current().gallery.info()

    @app.get("/objects")
    def objects() -> list[dict]:
        with service.lock:
            gallery = service.current().gallery
            return [{"name": o.name, "category": gallery.categories[o.category], "views": o.views, "source": o.source} for o in gallery.objects]

    @app.post("/identify")
    def identify(photos: list[UploadFile] = File(...), top: int = options.top, threshold: float | None = None) -> dict:
        return service.identify(received(photos), top, threshold)

    @app.post("/identify/batch")
    def identify_batch(photos: list[UploadFile] = File(...), top: int = options.top, threshold: float | None = None) -> list[dict]:
        return service.identify_each(received(photos), top, threshold)

    @app.post("/objects", status_code=201)
    def enrol(name: str = Form(...), category: str = Form(...), photos: list[UploadFile] = File(...)) -> dict:
        return service.enrol(name, category, received(photos))

    @app.delete("/objects/{name}")
    def remove(name: str) -> dict:
        return service.remove(name)

    @app.exception_handler(BadItemError)
    async def bad_photo(request: Request, exc: BadItemError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app
