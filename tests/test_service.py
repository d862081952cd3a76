"""`piro serve` (issue #27) through FastAPI's in-process test client, on a tiny index: the answers are
`piro identify`'s, the token rules hold, requests are bounded, writes go through the index's own code and a
change made by another process is seen."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from piro_cli.data.store import ViewSetStore
from piro_cli.errors import PiroError
from piro_cli.inference.index import Enrolment, GalleryIndex, add_objects, build_index, identify
from piro_cli.training import train

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from piro_cli.inference.service import Service, ServiceOptions, check_binding, create_app, read_token  # noqa: E402

TOKEN = "0123456789abcdef0123"


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    run = train(tiny_config(tiny_data, project=str(root / "runs"), name="s", epochs=1)).run_dir
    index = root / "shop.piro-index"
    build_index(run, index, data=tiny_data)
    store = ViewSetStore(tiny_data)
    test = store.split("test")
    photos = []
    for row in range(len(test)):
        for k, view in enumerate(test.views_uint8(row)[:3]):
            path = root / f"o{row}-{k}.png"
            Image.fromarray(np.asarray(view)).save(path)
            photos.append(path)
    return {"index": index, "photos": photos, "root": root}


def fresh_index(world, name="idx.piro-index") -> Path:
    import shutil

    shutil.copytree(world["index"], name)
    return Path(name)


def client_for(index: Path, **options) -> TestClient:
    return TestClient(create_app(Service(index, ServiceOptions(**options))))


def upload(paths) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photos", (Path(p).name, Path(p).read_bytes(), "image/png")) for p in paths]


def test_identify_answers_as_piro_identify(world):
    index = fresh_index(world)
    client = client_for(index)
    assert client.get("/health").json() == {"status": "ok"}
    for chosen in ([world["photos"][0]], world["photos"][3:6]):
        got = client.post("/identify", files=upload(chosen))
        assert got.status_code == 200, got.text
        want = identify(index, chosen).to_dict()
        for key in ("answer", "nearest_object", "category", "category_votes", "nearest"):
            assert got.json()[key] == want[key]
    batch = client.post("/identify/batch", files=upload(world["photos"][:4])).json()
    assert [b["answer"] for b in batch] == [identify(index, [p]).answer["answer"] for p in world["photos"][:4]]
    assert client.get("/info").json()["objects"] == len(GalleryIndex(index).objects)


def test_enrol_remove_and_changes_from_another_process(world):
    index = fresh_index(world)
    client = client_for(index)
    before = len(client.get("/objects").json())
    made = client.post("/objects", data={"name": "my-mug", "category": "mug"}, files=upload(world["photos"][:3]))
    assert made.status_code == 201, made.text
    assert "my-mug" in {o["name"] for o in client.get("/objects").json()}
    assert client.post("/identify", files=upload([world["photos"][0]])).json()["answer"] == "my-mug"
    assert client.post("/objects", data={"name": "my-mug", "category": "mug"}, files=upload(world["photos"][:1])).status_code == 422
    assert client.delete("/objects/my-mug").status_code == 200
    assert client.delete("/objects/my-mug").status_code == 404
    add_objects(index, [Enrolment("from-cli", "cup", list(world["photos"][3:5]))])  # as `piro index add` elsewhere
    names = {o["name"] for o in client.get("/objects").json()}
    assert "from-cli" in names and len(names) == before + 1


def test_tokens(world, tmp_path):
    index = fresh_index(world)
    closed = client_for(index, token=TOKEN)
    assert closed.get("/health").status_code == 200
    assert closed.get("/objects").status_code == 401
    assert closed.post("/identify", files=upload(world["photos"][:1]), headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert closed.get("/objects", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    open_reads = client_for(index, token=TOKEN, read_open=True)
    assert open_reads.post("/identify", files=upload(world["photos"][:1])).status_code == 200
    assert open_reads.delete("/objects/anything").status_code == 401
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    with pytest.raises(PiroError, match="others can read it"):
        read_token(token_file)
    token_file.chmod(0o600)
    assert read_token(token_file) == TOKEN
    token_file.write_text("short\n")
    with pytest.raises(PiroError, match="at least 16 characters"):
        read_token(token_file)
    with pytest.raises(PiroError, match="--host 0.0.0.0"):
        check_binding("0.0.0.0", None, insecure=False)
    check_binding("0.0.0.0", TOKEN, insecure=False)
    check_binding("0.0.0.0", None, insecure=True)


def test_bounds_and_bad_photos(world):
    index = fresh_index(world)
    client = client_for(index, max_photos=2, max_request_bytes=200_000)
    assert client.post("/identify", files=upload(world["photos"][:3])).status_code == 413
    big = [("photos", ("big.png", b"x" * 300_000, "image/png"))]
    assert client.post("/identify", files=big).status_code == 413
    bad = client.post("/identify", files=[("photos", ("bad.jpg", b"not an image", "image/jpeg"))])
    assert bad.status_code == 422 and "bad.jpg" in bad.json()["detail"]
    assert client.post("/identify").status_code == 422  # no photos
    # a chunked body (no Content-Length) is counted as it arrives
    chunked = client.post("/identify", content=iter([b"x" * 100_000] * 3), headers={"content-type": "multipart/form-data; boundary=b"})
    assert chunked.status_code == 413
    # without the token, nothing is read: 401 before the size
    closed = client_for(index, token=TOKEN, max_request_bytes=200_000)
    assert closed.post("/identify", content=iter([b"x" * 100_000] * 3), headers={"content-type": "multipart/form-data; boundary=b"}).status_code == 401
    assert closed.get("/docs").status_code == 401 and closed.get("/openapi.json").status_code == 401


def test_identification_and_enrolment_at_once(world):
    index = fresh_index(world)
    client = client_for(index)
    expected = client.post("/identify", files=upload([world["photos"][0]])).json()["nearest_object"]
    failures = []

    def identify_often():
        for _ in range(10):
            response = client.post("/identify", files=upload([world["photos"][0]]))
            if response.status_code != 200:
                failures.append(response.text)

    def enrol_and_remove():
        for k in range(3):
            for response in (
                client.post("/objects", data={"name": f"n{k}", "category": "c"}, files=upload(world["photos"][6:8])),
                client.delete(f"/objects/n{k}"),
            ):
                if response.status_code not in (200, 201):
                    failures.append(response.text)

    threads = [threading.Thread(target=identify_often) for _ in range(3)] + [threading.Thread(target=enrol_and_remove)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert client.post("/identify", files=upload([world["photos"][0]])).json()["nearest_object"] == expected
    assert len(GalleryIndex(index).objects) == len(GalleryIndex(world["index"]).objects)  # the index is whole


def test_single_photos_that_arrive_together_are_embedded_together(world):
    index = fresh_index(world)
    client = client_for(index, batch_wait=0.2, batch_size=8)
    photos = world["photos"][:6]
    answers: dict[int, dict] = {}

    def ask(k: int) -> None:
        answers[k] = client.post("/identify", files=upload([photos[k]])).json()

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(len(photos))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(a["batch"] for a in answers.values()) > 1  # some were embedded in one forward pass
    for k, photo in enumerate(photos):  # and each answer is the one `piro identify` gives alone
        alone = identify(index, [photo]).to_dict()
        for key in ("answer", "nearest_object", "category", "category_votes"):
            assert answers[k][key] == alone[key]
        assert answers[k]["score"] == pytest.approx(alone["score"], abs=1e-4)


def test_an_index_rebuilt_with_other_weights_is_refused_not_answered(world, tiny_data):
    index = fresh_index(world)
    client = client_for(index)
    assert client.post("/identify", files=upload([world["photos"][0]])).status_code == 200
    other = train(tiny_config(tiny_data, project=str(world["root"] / "runs"), name="other", epochs=1, seed=7)).run_dir
    build_index(other, index, data=tiny_data, overwrite=True)
    response = client.post("/identify", files=upload([world["photos"][0]]))
    assert response.status_code == 422 and "rebuilt with other weights" in response.json()["detail"]


def test_serve_command_refusals_are_one_line(world, tmp_path):
    from typer.testing import CliRunner

    from piro_cli.cli import app

    runner = CliRunner()
    index = fresh_index(world)
    result = runner.invoke(app, ["serve", str(index), "--host", "0.0.0.0"], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "--host 0.0.0.0" in result.output and "--token-file" in result.output
    result = runner.invoke(app, ["serve", str(index), "--read-open"], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "--read-open: give --token-file too" in result.output
    loose = tmp_path / "token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    result = runner.invoke(app, ["serve", str(index), "--token-file", str(loose)], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "others can read it" in result.output
    assert "Traceback" not in result.output


def test_the_python_client_against_a_running_service(world):
    import socket
    import time

    import uvicorn

    from piro_cli.client import PiroClient, PiroClientError

    index = fresh_index(world)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Service(index, ServiceOptions(token=TOKEN))), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        with PiroClient(url, token=TOKEN) as client:
            photo = world["photos"][0]
            assert client.identify([photo])["answer"] == identify(index, [photo]).answer["answer"]
            assert len(client.identify_each(world["photos"][:3])) == 3
            assert client.enrol("my-cup", "cup", world["photos"][3:5])["added"] == ["my-cup"]
            assert "my-cup" in {o["name"] for o in client.objects()}
            assert client.remove("my-cup")["removed"] == ["my-cup"]
            with pytest.raises(PiroClientError) as error:
                client.remove("my-cup")
            assert error.value.status == 404 and "no such object" in error.value.detail
        with PiroClient(url) as stranger, pytest.raises(PiroClientError) as error:
            stranger.info()
        assert error.value.status == 401
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_sigkill_of_the_service_during_enrolments_leaves_the_index_whole(world):
    """`piro serve` as its own process, a client enrolling and removing through it in a loop, the service killed
    with SIGKILL at three moments while it writes: each time the index opens whole (every shard its manifest names
    is there and matches it), no enrolment the service confirmed is lost, and a new service enrols again."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    index = fresh_index(world, "killed.piro-index")
    before = {o.name for o in GalleryIndex(index).objects}
    confirmed: set[str] = set()
    photos = world["photos"][:3]
    for moment in (0.2, 0.7, 1.5):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        service = subprocess.Popen(
            [sys.executable, "-m", "piro_cli", "serve", str(index), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise AssertionError(f"the service did not start: {service.stderr.read() if service.poll() is not None else ''}")
            stop = threading.Event()

            def enrol_in_a_loop(moment=moment, url=url, stop=stop) -> None:
                k = 0
                with httpx.Client(base_url=url, timeout=30) as client:
                    while not stop.is_set():
                        name = f"kill{moment}-{k}"
                        try:
                            sent = client.post("/objects", data={"name": name, "category": "mug"}, files=upload(photos))
                        except httpx.HTTPError:
                            return  # the service is gone
                        if sent.status_code == 201:
                            confirmed.add(name)
                        k += 1

            writer = threading.Thread(target=enrol_in_a_loop, daemon=True)
            writer.start()
            time.sleep(moment)
            service.send_signal(signal.SIGKILL)
            service.wait(timeout=30)
            stop.set()
            writer.join(timeout=60)
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()
        gallery = GalleryIndex(index)
        vectors = gallery.vectors()
        assert len(vectors.view_object) == sum(o.views for o in gallery.objects)
        names = {o.name for o in gallery.objects}
        assert before <= names and confirmed <= names  # nothing confirmed is lost
    assert confirmed  # the kills came while it was enrolling
    add_objects(index, [Enrolment("after", "mug", photos)])
    assert "after" in {o.name for o in GalleryIndex(index).objects}
    shards = sorted(p.name for p in (index / "shards").iterdir())
    assert shards == sorted(GalleryIndex(index).manifest["shards"])  # the killed writes left nothing behind
