"""Every error code over real HTTP, each with the common JSON body; bad input never gives a 500.

Overload and timeouts are made deterministic by holding the real backend on a gate (the
onnxruntime session still runs once released) while the test inspects the real queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.live import Live, error_of, models_dir, serve, until


def hold(live: Live, model: str) -> threading.Event:
    """Make `model`'s backend wait for the returned event before each batch."""
    backend = live.model(model).backend
    run = backend.run
    gate = threading.Event()

    def held(batch: Any) -> Any:
        gate.wait(timeout=20)
        return run(batch)

    backend.run = held  # type: ignore[method-assign]
    return gate


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v1/classify", {"model": "classification", "inputs": ""}, "at least 1 character"),
        ("/v1/classify", {"model": "classification", "inputs": ["ok", "   "]}, "text is empty"),
        ("/v1/classify", {"model": "classification", "inputs": []}, "inputs"),
        ("/v1/classify", {"model": "classification", "inputs": 5}, "inputs"),
        ("/v1/classify", {"model": "classification", "inputs": [["a"]]}, "inputs"),
        ("/v1/classify", {"model": "classification", "inputs": "a", "top_k": 0}, "top_k"),
        ("/v1/classify", {"model": "classification", "inputs": "a", "topk": 1}, "topk"),
        ("/v1/classify", {"inputs": "a"}, "several classification models"),
        ("/v1/classify", {"model": "qa", "inputs": "a"}, "is a qa model"),
        (
            "/v1/classify",
            {"model": "classification", "inputs": "the cat " * 40, "truncate": False},
            "longer than the model's max length (64 tokens)",
        ),
        ("/v1/classify", {"model": "classification", "inputs": ["a"] * 9}, "limit of 8"),
        ("/v1/qa", {"question": "who"}, "question and context"),
        (
            "/v1/qa",
            {"question": "a", "context": "b", "inputs": [{"question": "a", "context": "b"}]},
            "not both",
        ),
        ("/v1/qa", {"inputs": [{"question": "", "context": "b"}]}, "question"),
        ("/v1/qa", {"question": "a", "context": "b", "top_k": 50}, "top_k"),
        ("/v1/fill-mask", {"inputs": "no mask here"}, "has no [MASK] to fill ([MASK] missing)"),
        ("/v1/fill-mask", {"inputs": "the cat " * 40 + "[MASK]"}, "beyond the model's max length"),
        ("/v1/fill-mask", {"inputs": "a [MASK]", "top_k": 11}, "exceeds the 10 candidates"),
        ("/v1/token-classify", {"inputs": ["john", None]}, "inputs"),
        ("/v1/tokenize", {"inputs": "a"}, "several models"),
    ],
)
def test_invalid_requests_are_422_with_a_clear_message(
    limited: Live, path: str, body: Any, fragment: str
) -> None:
    err = error_of(limited.post(path, body), 422, "validation_error")
    assert fragment in err["message"] or fragment in str(err.get("details")), err


@pytest.fixture(scope="module")
def limited(bundles: Path) -> Iterator[Live]:
    """Every bundle, at most 8 inputs per request, bodies up to 4 KiB, an API key off."""
    with serve(
        bundles, variant="fp32", max_inputs_per_request=8, max_body_bytes=4096, queue_size=16,
        max_batch_size=4,
    ) as live:  # fmt: skip
        yield live


def test_malformed_json_unknown_model_and_route(limited: Live) -> None:
    headers = {"content-type": "application/json"}
    r = limited.client.post("/v1/classify", content=b'{"inputs": ', headers=headers)
    error_of(r, 400, "bad_request")
    r = limited.client.post("/v1/classify", content=b"\xff\xfe", headers=headers)
    assert r.status_code in (400, 422) and "error" in r.json()
    err = error_of(
        limited.post("/v1/classify", {"model": "nope", "inputs": "a"}), 404, "model_not_found"
    )
    assert "classification" in err["details"]["available"]
    error_of(limited.client.get("/v1/nowhere"), 404, "not_found")
    error_of(limited.client.get("/v1/classify"), 405, "method_not_allowed")


def test_bodies_over_the_limit_are_413_before_parsing(limited: Live) -> None:
    big = {"model": "classification", "inputs": "x" * 5000}
    error_of(limited.post("/v1/classify", big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"inputs": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = limited.client.post(
        "/v1/classify", content=chunks(), headers={"content-type": "application/json"}
    )
    error_of(r, 413, "payload_too_large")
    # More QA windows than the whole queue holds (16): too large to ever be admitted.
    long = " ".join(["john ran to paris"] * 180)
    error_of(limited.post("/v1/qa", {"question": "who", "context": long}), 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    [
        b"null", b"[]", b'"text"', b"{}", b'{"inputs": {"a": 1}}', b'{"inputs": [1, 2]}',
        b'{"inputs": "\\u0000\\u0001"}', b'{"inputs": "\xf0\x9f\x98\x80 [SEP] [CLS] [PAD]"}',
        b'{"inputs": "a", "model": 3}', b'{"inputs": "a", "truncate": "maybe"}',
    ],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/v1/classify", "/v1/qa", "/v1/fill-mask", "/v1/token-classify"])
def test_bad_input_is_never_a_500(limited: Live, path: str, body: bytes) -> None:
    if path == "/v1/classify" and body.startswith(b'{"inputs"'):
        body = b'{"model": "classification", ' + body[1:]  # two classification bundles loaded
    r = limited.client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 or r.status_code == 200, (path, body, r.text)
    assert "error" in r.json() or r.status_code == 200


def test_api_key_is_required_when_set(
    bundles: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    models = models_dir(bundles, tmp_path, "classification")
    with serve(models, api_key="s3cret", metrics_requires_key=True) as live:
        for path in ("/v1/models", "/v1/qa", "/v1/fill-mask", "/v1/tokenize", "/v1/token-classify"):
            r = live.client.request("GET" if path == "/v1/models" else "POST", path, json={})
            error_of(r, 401, "unauthorized")
        for path in ("/openapi.json", "/docs", "/redoc"):  # the schema is not public either
            assert live.client.get(path).status_code in (401, 404), path
        body = {"inputs": "a"}
        r = live.post("/v1/classify", body)
        err = error_of(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer" and "s3cret" not in err["message"]
        error_of(
            live.post("/v1/classify", body, headers={"authorization": "Bearer nope"}),
            401,
            "unauthorized",
        )
        error_of(live.client.get("/metrics"), 401, "unauthorized")
        ok = {"authorization": "Bearer s3cret"}
        assert live.post("/v1/classify", body, headers=ok).status_code == 200
        assert live.client.get("/metrics", headers=ok).status_code == 200
        schema = live.client.get("/openapi.json", headers=ok)
        assert schema.status_code == 200 and "/v1/classify" in schema.json()["paths"]
        assert "swagger" in live.client.get("/docs", headers=ok).text.lower()
        assert live.client.get("/healthz").status_code == 200  # probes stay open
        assert live.client.get("/readyz").status_code == 200
    assert caplog.records and "s3cret" not in caplog.text  # the key never reaches the logs


def test_cors_is_off_by_default_and_on_when_configured(bundles: Path, tmp_path: Path) -> None:
    models = models_dir(bundles, tmp_path, "classification")
    preflight = {"origin": "https://ui.example", "access-control-request-method": "POST"}
    with serve(models, warmup=False) as live:
        r = live.client.options("/v1/classify", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with serve(models, warmup=False, cors_origins=("https://ui.example",)) as live:
        r = live.client.options("/v1/classify", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://ui.example"
        assert r.headers["x-request-id"]


def test_overload_is_429_with_retry_after_and_deadline_is_504(
    bundles: Path, tmp_path: Path
) -> None:
    models = models_dir(bundles, tmp_path, "classification")
    conf: dict[str, Any] = {
        "max_batch_size": 1, "queue_size": 2, "max_inputs_per_request": 2,
        "max_batch_in_flight": 1, "max_wait_ms": 0, "request_timeout_s": 1.0,
    }  # fmt: skip
    with serve(models, **conf) as live:
        gate = hold(live, "classification")
        batcher = live.model("classification").batcher
        assert batcher is not None

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:

                def send(text: str) -> asyncio.Task[httpx.Response]:
                    return asyncio.create_task(client.post("/v1/classify", json={"inputs": text}))

                async def until_async(cond: Callable[[], bool]) -> None:
                    while not cond():
                        await asyncio.sleep(0.005)

                running = send("a")  # dispatched, then held in the backend
                await until_async(lambda: batcher.in_flight == 1 and batcher.queue_depth == 0)
                queued = [send("b"), send("c")]
                await until_async(lambda: batcher.queue_depth == 2)
                refused = await client.post("/v1/classify", json={"inputs": "d"})
                done = await asyncio.gather(running, *queued)
                return [refused, *done]

        try:
            refused, *waited = asyncio.run(scenario())
        finally:
            gate.set()
        err = error_of(refused, 429, "overloaded")
        assert int(refused.headers["retry-after"]) >= 1 and "retry" in err["message"]
        for r in waited:  # held past their 1 s deadline
            error_of(r, 504, "timeout")
        assert live.sample("bert_rejected_requests_total", model="classification") == 1
        assert live.sample("bert_timeouts_total", model="classification") == 3
        until(lambda: batcher.in_flight == 0)
        assert live.post("/v1/classify", {"inputs": "e"}).status_code == 200  # recovers


def test_inference_failure_fails_only_its_own_batch(fp32_failing: Live) -> None:
    live = fp32_failing
    r = live.post("/v1/classify", {"model": "classification", "inputs": "boom"})
    err = error_of(r, 500, "inference_error")
    assert "boom" not in err["message"]
    assert (
        live.post("/v1/classify", {"model": "classification", "inputs": "fine"}).status_code == 200
    )
    assert live.post("/v1/qa", {"question": "who", "context": "john ran"}).status_code == 200


@pytest.fixture
def fp32_failing(bundles: Path, tmp_path: Path) -> Iterator[Live]:
    """classification's first batch raises inside the backend."""
    models = models_dir(bundles, tmp_path, "classification", "qa")
    with serve(models, variant="fp32") as live:
        backend = live.model("classification").backend
        run, calls = backend.run, []

        def flaky(batch: Any) -> Any:
            calls.append(batch.size)
            if len(calls) == 1:
                raise RuntimeError("injected: onnxruntime failed on this batch")
            return run(batch)

        backend.run = flaky  # type: ignore[method-assign]
        yield live


def test_a_disconnected_client_has_its_queued_work_dropped(bundles: Path, tmp_path: Path) -> None:
    models = models_dir(bundles, tmp_path, "classification")
    conf: dict[str, Any] = {"max_batch_size": 1, "max_batch_in_flight": 1, "max_wait_ms": 0}
    with serve(models, **conf) as live:
        gate = hold(live, "classification")
        batcher = live.model("classification").batcher
        assert batcher is not None
        backend_batches: list[int] = []
        run = live.model("classification").backend.run

        def counting(batch: Any) -> Any:
            backend_batches.append(batch.size)
            return run(batch)

        live.model("classification").backend.run = counting  # type: ignore[method-assign]
        first = threading.Thread(target=live.post, args=("/v1/classify", {"inputs": "a"}))
        first.start()
        until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 0)
        with pytest.raises(httpx.ReadTimeout):  # gives up and closes its connection
            httpx.post(f"{live.url}/v1/classify", json={"inputs": "b c d"}, timeout=0.3)
        until(lambda: live.sample("bert_dropped_requests_total", model="classification") == 1)
        assert live.sample("bert_dropped_items_total", model="classification") == 1
        assert batcher.queue_depth == 0
        gate.set()
        first.join(timeout=10)
        until(lambda: batcher.in_flight == 0)
        assert backend_batches == [1]  # the abandoned input never reached the model
