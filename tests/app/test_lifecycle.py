"""Start-up, readiness, refused bundles, drain on SIGTERM, and the committed API/config docs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import app.registry
from app.__main__ import openapi_json
from app.settings import reference_markdown, settings_table
from tests.app.conftest import KINDS
from tests.app.live import Live, error_of, models_dir, serve, until

REPO = Path(__file__).resolve().parents[2]


def test_readiness_flips_only_after_warm_up(
    bundles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = models_dir(bundles, tmp_path, "classification", "qa")
    gate = threading.Event()
    warm_up = app.registry.warm_up
    warmed: list[str] = []

    def held_warm_up(model: Any, settings: Any) -> None:
        gate.wait(timeout=20)
        warm_up(model, settings)
        warmed.append(model.name)

    monkeypatch.setattr(app.registry, "warm_up", held_warm_up)
    with serve(models, wait=False) as live:
        assert live.client.get("/healthz").status_code == 200  # alive while loading
        err = error_of(live.client.get("/readyz"), 503, "not_ready")
        assert err["details"]["loading"] is True and err["details"]["phase"] == "starting"
        error_of(live.post("/v1/classify", {"inputs": "a"}), 503, "not_ready")
        gate.set()
        until(lambda: live.client.get("/readyz").status_code == 200)
        assert warmed == ["classification", "qa"]
        assert live.post("/v1/classify", {"inputs": "a"}).status_code == 200


def test_refused_bundles_are_listed_and_keep_readyz_503(
    bundles: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = models_dir(bundles, tmp_path, "qa")
    tampered = Path(shutil.copytree(bundles / "classification", models / "tampered"))
    data = bytearray((tampered / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (tampered / "model.int8.onnx").write_bytes(bytes(data))
    missing = Path(shutil.copytree(bundles / "fill-mask", models / "missing"))
    (missing / "tokenizer.json").unlink()
    future = Path(shutil.copytree(bundles / "token-classification", models / "future"))
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 2}))
    caplog.set_level("ERROR", logger="app.registry")
    with serve(models, models=("qa", "tampered", "missing", "future", "absent")) as live:
        listed = live.client.get("/v1/models").json()
        assert [m["name"] for m in listed["models"]] == ["qa"]
        reasons = {f["name"]: f["reason"] for f in listed["failed"]}
        assert set(reasons) == {"tampered", "missing", "future", "absent"}
        assert "model.int8.onnx does not match its sha256" in reasons["tampered"]
        assert "tokenizer.json is missing" in reasons["missing"]
        assert "schema_version 2" in reasons["future"]
        assert "no bundle 'absent'" in reasons["absent"]
        err = error_of(live.client.get("/readyz"), 503, "not_ready")
        assert set(err["details"]["failed"]) == set(reasons)
        assert "tampered: " in err["message"]
        # The good bundle still serves.
        assert live.post("/v1/qa", {"question": "who", "context": "john ran"}).status_code == 200
        records = [r for r in caplog.records if r.name == "app.registry"]
        refused = [r.getMessage() for r in records if "refused" in r.getMessage()]
        assert len(refused) == 4 and all("\n" not in m for m in refused)
        assert live.sample("bert_models_failed") == 4


def test_drain_finishes_queued_work_and_refuses_new_work(bundles: Path, tmp_path: Path) -> None:
    models = models_dir(bundles, tmp_path, "classification")
    conf: dict[str, Any] = {
        "max_wait_ms": 5000, "max_batch_size": 8, "shutdown_grace_s": 0.5, "idle_dispatch": False,
    }  # fmt: skip
    with serve(models, **conf) as live:
        batcher = live.model("classification").batcher
        assert batcher is not None
        result: dict[str, Any] = {}

        def waiting_request() -> None:
            t0 = time.monotonic()
            result["response"] = httpx.post(f"{live.url}/v1/classify", json={"inputs": "a"})
            result["seconds"] = time.monotonic() - t0

        thread = threading.Thread(target=waiting_request)
        thread.start()
        until(lambda: batcher.queue_depth == 1)  # would wait 5 s for more inputs
        live.server.request_drain()
        until(lambda: live.service.phase != "running")
        err = error_of(live.client.get("/readyz"), 503, "not_ready")
        assert "draining" in err["message"]
        error_of(live.post("/v1/classify", {"inputs": "b"}), 503, "not_ready")
        thread.join(timeout=10)
        assert result["response"].status_code == 200 and result["seconds"] < 4
        live.thread.join(timeout=10)
        assert not live.thread.is_alive()  # the server exited by itself after the drain


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_python_m_app_drains_on_sigterm_and_logs_json(bundles: Path, tmp_path: Path) -> None:
    models = models_dir(bundles, tmp_path, "classification")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BERT_")},
        "BERT_MAX_WAIT_MS": "3000",
        "BERT_IDLE_DISPATCH": "false",  # a lone request waits in the queue: something to drain
        "BERT_INTRA_OP_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "app", "--models-dir", str(models), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz").status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, "the server exited"
                return False

        until(ready, timeout=60, step=0.1)
        result: dict[str, httpx.Response] = {}

        def waiting_request() -> None:
            headers = {"x-request-id": "req-42"}
            result["r"] = httpx.post(f"{url}/v1/classify", json={"inputs": "a"}, headers=headers)

        thread = threading.Thread(target=waiting_request)
        thread.start()
        depth = 'bert_queue_depth{model="classification"} 1.0'
        until(lambda: depth in httpx.get(f"{url}/metrics").text, timeout=10)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        thread.join(timeout=10)
        assert result["r"].status_code == 200 and time.monotonic() - t0 < 2.5
        assert result["r"].headers["x-request-id"] == "req-42"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([x for x in err.splitlines() if x.strip()]), err
    messages = [x["message"] for x in lines]
    assert any("SIGTERM received: draining" in m for m in messages)
    assert any("finishing 1 queued input" in m for m in messages)
    access = [x for x in lines if x["logger"] == "app.access" and x.get("request_id") == "req-42"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/v1/classify"
    assert any("CPUExecutionProvider" in m for m in messages)  # the provider choice is logged


def test_serving_imports_no_torch(bundles: Path) -> None:
    code = """
import asyncio, sys
from app.main import create_app
from app.settings import Settings
import app.__main__, app.server

async def main():
    app_ = create_app(Settings(models_dir=sys.argv[1], intra_op_threads=1), setup_logging=False)
    service = app_.state.service
    service.start()
    while service.loading:
        await asyncio.sleep(0.01)
    assert len(service.models) == int(sys.argv[2]) and not service.registry.failures
    await service.drain()

asyncio.run(main())
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'training'))
print(heavy)
"""
    run = subprocess.run(
        [sys.executable, "-c", code, str(bundles), str(len(KINDS))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_committed_openapi_json_equals_the_live_schema(fp32: Live) -> None:
    committed = json.loads((REPO / "openapi.json").read_text(encoding="utf-8"))
    live = fp32.client.get("/openapi.json").json()
    assert committed == live, (
        "openapi.json is stale: run `python -m app --write-openapi openapi.json`"
    )
    assert json.loads(openapi_json()) == live
    assert {"/v1/classify", "/v1/qa", "/v1/fill-mask", "/v1/token-classify", "/v1/tokenize"} <= set(
        live["paths"]
    )
    assert fp32.client.get("/docs").status_code == 200


def test_configuration_doc_is_generated_from_the_settings() -> None:
    doc = (REPO / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")
    fix = "python -m app --write-config-doc docs/CONFIGURATION.md"
    assert doc == reference_markdown(), f"docs/CONFIGURATION.md is stale: run `{fix}`"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme, "README's settings table differs from app/settings.py"
