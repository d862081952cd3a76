"""`piro serve`: identification as a long-running HTTP service over an index."""

from __future__ import annotations

from pathlib import Path

import typer

from piro_cli.cli.common import err_console, handle_errors
from piro_cli.cli.index import DEVICE_OPTION, INDEX_ARG, RUN_OPTION
from piro_cli.errors import PiroError


@handle_errors
def serve(
    index: Path = INDEX_ARG,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; another than this machine's needs --token-file (or --insecure)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    token_file: Path = typer.Option(
        None, "--token-file", help="A file (mode 600) whose first line is the bearer token every request but /health must send.", show_default=False
    ),
    read_open: bool = typer.Option(False, "--read-open", help="With --token-file: identification and reads need no token, writes do."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow another address than this machine's without a token."),
    max_photos: int = typer.Option(64, min=1, help="Photos per request at most (413 above it)."),
    max_request_mb: int = typer.Option(64, min=1, help="Request body size at most, in MiB (413 above it)."),
    onnx: Path = typer.Option(
        None, "--onnx", help="Embed with the graphs `piro export RUN --onnx NAME.onnx` wrote (onnxruntime, no torch).", show_default=False
    ),
    run: Path = RUN_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Serve identification over HTTP: the index and its model are loaded once (needs pip install -e '.[serve]').

    POST /identify (photos of one object, multipart field `photos`) answers as `piro identify --format json`; POST /identify/batch answers each photo on its own; GET /objects, POST /objects (enrol: `name`, `category`, `photos`), DELETE /objects/NAME, GET /info, GET /health. The OpenAPI description is at /docs. Writes use the index's locked, atomic code, and changes made by other processes (`piro index add`) are picked up.

    Examples:

    piro serve shop.piro-index

    piro serve shop.piro-index --host 0.0.0.0 --token-file token.txt --read-open

    curl -F photos=@photo.jpg http://127.0.0.1:8000/identify
    """
    from piro_cli.inference.service import Service, ServiceOptions, check_binding, create_app, read_token

    try:
        import uvicorn
    except ImportError:
        raise PiroError("piro serve needs uvicorn: pip install -e '.[serve]'") from None
    token = read_token(token_file) if token_file is not None else None
    if read_open and token is None:
        raise PiroError("--read-open: give --token-file too (it opens reads of a service that asks a token)")
    check_binding(host, token, insecure)
    options = ServiceOptions(token=token, read_open=read_open, max_photos=max_photos, max_request_bytes=max_request_mb << 20)
    app = create_app(Service(index, options, run=run, device=device, onnx=onnx))
    err_console.print(f"serving {index} on http://{host}:{port} (OpenAPI: /docs); Ctrl-C stops", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")
