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
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from piro_cli.data.photos import decode_photos
from piro_cli.errors import BadItemError, PiroError
from piro_cli.inference.index import Enrolment, Identifier, add_objects, remove_objects

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServiceOptions:
    token: str | None = None  # None: no token asked (only allowed on a local address, unless `insecure`)
    read_open: bool = False  # with a token: reads and identification need none, writes do
    max_photos: int = 64  # photos per request
    max_request_bytes: int = 64 << 20
    top: int = 5


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
        self.identifier = Identifier(index, run, device, onnx)
        self.lock = threading.Lock()

    def current(self) -> Identifier:
        self.identifier.reopen_if_changed()
        return self.identifier

    def identify(self, photos: list[tuple[str, bytes]], top: int, threshold: float | None) -> dict:
        with self.lock:
            identifier = self.current()
            views = decode_photos(photos, identifier.image_size)
            answer, model_seconds = identifier.answer(views, top, threshold)
        return {"images": [name for name, _ in photos], **answer, "model_seconds": round(model_seconds, 4)}

    def identify_each(self, photos: list[tuple[str, bytes]], top: int, threshold: float | None) -> list[dict]:
        with self.lock:
            identifier = self.current()
            views = decode_photos(photos, identifier.image_size)
            answers = identifier.answer_each(views, top, threshold)
        return [{"image": name, **answer} for (name, _), answer in zip(photos, answers, strict=True)]

    def enrol(self, name: str, category: str, photos: list[tuple[str, bytes]]) -> dict:
        with self.lock, tempfile.TemporaryDirectory(prefix="piro-serve-") as folder:
            paths = []
            for k, (filename, data) in enumerate(photos):
                path = Path(folder) / f"{k:03d}{Path(filename).suffix.lower() or '.jpg'}"
                path.write_bytes(data)
                paths.append(path)
            change = add_objects(self.index, [Enrolment(name, category, paths)])
            self.identifier.reopen_if_changed()
        return {"added": change.names, "objects": change.total_objects, "views": change.total_views}

    def remove(self, name: str) -> dict:
        with self.lock:
            change = remove_objects(self.index, [name])
            self.identifier.reopen_if_changed()
        return {"removed": change.names, "objects": change.total_objects, "views": change.total_views}


def create_app(service: Service):
    """The FastAPI application over `service`."""
    try:
        from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
        from fastapi.responses import JSONResponse
    except ImportError:
        raise PiroError("piro serve needs FastAPI: pip install -e '.[serve]'") from None

    options = service.options
    app = FastAPI(title="piro", description="Identify objects from photos against a piro index.")

    def guard(write: bool):
        def check(request: Request) -> None:
            if options.token is None or (options.read_open and not write):
                return
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {options.token}".encode()):
                raise HTTPException(401, "a bearer token is needed: Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})

        return check

    read, write = Depends(guard(False)), Depends(guard(True))

    @app.middleware("http")
    async def bounded(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > options.max_request_bytes):
            return JSONResponse({"detail": f"the request is over {options.max_request_bytes} bytes"}, status_code=413)
        return await call_next(request)

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

    @app.get("/info", dependencies=[read])
    def info() -> dict:
        with service.lock:
            return service.current().gallery.info()

    @app.get("/objects", dependencies=[read])
    def objects() -> list[dict]:
        with service.lock:
            gallery = service.current().gallery
            return [{"name": o.name, "category": gallery.categories[o.category], "views": o.views, "source": o.source} for o in gallery.objects]

    @app.post("/identify", dependencies=[read])
    def identify(photos: list[UploadFile] = File(...), top: int = options.top, threshold: float | None = None) -> dict:
        return service.identify(received(photos), top, threshold)

    @app.post("/identify/batch", dependencies=[read])
    def identify_batch(photos: list[UploadFile] = File(...), top: int = options.top, threshold: float | None = None) -> list[dict]:
        return service.identify_each(received(photos), top, threshold)

    @app.post("/objects", dependencies=[write], status_code=201)
    def enrol(name: str = Form(...), category: str = Form(...), photos: list[UploadFile] = File(...)) -> dict:
        return service.enrol(name, category, received(photos))

    @app.delete("/objects/{name}", dependencies=[write])
    def remove(name: str) -> dict:
        return service.remove(name)

    @app.exception_handler(BadItemError)
    async def bad_photo(request: Request, exc: BadItemError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app
