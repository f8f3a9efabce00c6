"""Helpers for the service tests: copies of the tiny bundles, a real uvicorn server on a
loopback socket in a background thread (the same server class `python -m app` runs), polling and
the common error-shape check."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from app.registry import LoadedModel
from app.server import Server, uvicorn_config
from app.service import Service
from app.settings import Settings


def models_dir(bundles: Path, tmp_path: Path, *kinds: str) -> Path:
    """A models folder holding copies of some of the bundles."""
    out = tmp_path / "models"
    out.mkdir()
    for kind in kinds:
        shutil.copytree(bundles / kind, out / kind)
    return out


@dataclass
class Live:
    """A running server: its URL, app, service and a client."""

    url: str
    app: Any
    server: Server
    thread: threading.Thread
    client: httpx.Client

    @property
    def service(self) -> Service:
        service: Service = self.app.state.service
        return service

    def model(self, name: str) -> LoadedModel:
        return self.service.registry.models[name]

    def sample(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples with these labels (over the others it has)."""
        return sum(
            s.value
            for family in self.service.metrics.registry.collect()
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()
        )

    def wait_loaded(self, timeout: float = 30) -> None:
        until(lambda: not self.service.loading, timeout)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.client.post(path, json=body, **kw)


def until(condition: Callable[[], Any], timeout: float = 10, step: float = 0.005) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


@contextmanager
def serve(models_dir: Path, *, wait: bool = True, **overrides: Any) -> Iterator[Live]:
    """Run the service on a free loopback port (threads: onnxruntime gets 1, as in CI)."""
    conf: dict[str, Any] = {"intra_op_threads": 1, "log_format": "text", **overrides}
    settings = Settings(models_dir=models_dir, **conf)
    app = create_app(settings, setup_logging=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = Server(
        uvicorn_config(app, "127.0.0.1", port),
        app.state.service,
        grace_s=settings.shutdown_grace_s,
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: server.started or not thread.is_alive(), timeout=30)
        assert server.started, "the server did not start"
        with httpx.Client(base_url=url, timeout=30) as client:
            live = Live(url, app, server, thread, client)
            if wait:
                live.wait_loaded()
            yield live
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def error_of(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """Assert `response` is the common error shape with `status` and `kind`; return its error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert set(err) <= {"type", "message", "details"} and {"type", "message"} <= set(err)
    assert err["type"] == kind, err
    assert isinstance(err["message"], str) and err["message"]
    assert response.headers.get("x-request-id")
    return err
