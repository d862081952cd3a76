"""A client of `piro serve` for Python programs (needs httpx, installed with `pip install -e '.[serve]'`).

    from piro_cli.client import PiroClient

    client = PiroClient("http://127.0.0.1:8000", token=None)
    answer = client.identify(["photo.jpg"])          # the JSON of `piro identify --format json`
    print(answer["answer"], answer["category"], answer["false_accept_rate"])
    client.enrol("my-mug", "mug", ["mug1.jpg", "mug2.jpg", "mug3.jpg"])
    client.remove("my-mug")

Errors of the service (a bad photo, a missing token, an unknown object) raise PiroClientError with the service's
one-line message and its HTTP status.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class PiroClientError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class PiroClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 60.0, transport=None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)

    def identify(self, photos: Sequence[str | Path], top: int = 5, threshold: float | None = None) -> dict:
        """The answer for photos of one object (one view set)."""
        return self._send("POST", "/identify", files=_files(photos), params=_params(top, threshold))

    def identify_each(self, photos: Sequence[str | Path], top: int = 5, threshold: float | None = None) -> list[dict]:
        """One answer per photo, each photo its own query."""
        return self._send("POST", "/identify/batch", files=_files(photos), params=_params(top, threshold))

    def enrol(self, name: str, category: str, photos: Sequence[str | Path]) -> dict:
        return self._send("POST", "/objects", files=_files(photos), data={"name": name, "category": category})

    def remove(self, name: str) -> dict:
        return self._send("DELETE", f"/objects/{name}")

    def objects(self) -> list[dict]:
        return self._send("GET", "/objects")

    def info(self) -> dict:
        return self._send("GET", "/info")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PiroClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs):
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise PiroClientError(response.status_code, str(detail))
        return response.json()


def _files(photos: Sequence[str | Path]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("photos", (Path(p).name, Path(p).read_bytes())) for p in photos]


def _params(top: int, threshold: float | None) -> dict:
    return {"top": top, **({"threshold": threshold} if threshold is not None else {})}
