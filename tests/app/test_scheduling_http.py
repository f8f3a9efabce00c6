"""Priority and per-request deadlines over real HTTP: a real uvicorn, the real classification
bundle in onnxruntime, its backend held on a gate while requests queue behind it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from app.batching import Batcher
from tests.app.live import Live, error_of, models_dir, serve, until
from tests.app.test_errors_http import hold


@contextlib.contextmanager
def held_classifier(
    bundles: Path, tmp_path: Path
) -> Iterator[tuple[Live, threading.Event, Batcher[Any]]]:
    """A live server with the classification bundle, one input per batch and one batch at a
    time, its backend held until the yielded event is set: (live, gate, batcher)."""
    models = models_dir(bundles, tmp_path, "classification")
    conf: dict[str, Any] = {
        "max_batch_size": 1, "max_batch_in_flight": 1, "max_wait_ms": 0, "warmup": False,
    }  # fmt: skip
    with serve(models, **conf) as live:
        gate = hold(live, "classification")
        batcher = live.model("classification").batcher
        assert batcher is not None
        try:
            yield live, gate, batcher
        finally:
            gate.set()


def test_priority_orders_service_and_timeout_ms_answers_504_in_time(
    bundles: Path, tmp_path: Path
) -> None:
    with held_classifier(bundles, tmp_path) as (live, gate, batcher):
        done: list[str] = []

        async def scenario() -> tuple[httpx.Response, float, list[httpx.Response]]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:

                async def send(name: str, **fields: Any) -> httpx.Response:
                    body = {"inputs": f"a {name} film", **fields}
                    r = await client.post("/v1/classify", json=body)
                    done.append(name)
                    return r

                async def until_async(cond: Callable[[], bool]) -> None:
                    while not cond():
                        await asyncio.sleep(0.005)

                tasks = {"running": asyncio.create_task(send("running"))}
                await until_async(lambda: batcher.in_flight == 1 and batcher.queue_depth == 0)
                queue: list[tuple[str, dict[str, Any]]] = [
                    ("low", {"priority": "low"}),
                    ("normal", {}),
                    ("high", {"priority": "high"}),
                    ("impatient", {"timeout_ms": 300}),
                ]
                for n, (name, fields) in enumerate(queue, start=1):
                    tasks[name] = asyncio.create_task(send(name, **fields))
                    while batcher.queue_depth < n:  # queued in this order
                        await asyncio.sleep(0.005)
                started = time.monotonic()
                impatient = await tasks.pop("impatient")  # answered while the backend is held
                waited = time.monotonic() - started
                gate.set()
                return impatient, waited, await asyncio.gather(*tasks.values())

        impatient, waited, answers = asyncio.run(scenario())
        err = error_of(impatient, 504, "timeout")
        assert "deadline" in err["message"]
        assert waited < 5  # answered at its deadline, not when the gate opened
        assert all(r.status_code == 200 for r in answers)
        assert done == ["impatient", "running", "high", "normal", "low"]
        assert live.sample("bert_timeouts_total", priority="normal") == 1
        assert live.sample("bert_queue_time_seconds_count", priority="high") == 1
        assert live.sample("bert_queue_time_seconds_count", priority="low") == 1
        until(lambda: batcher.in_flight == 0)


def test_scheduling_fields_are_validated_and_documented(bundles: Path, tmp_path: Path) -> None:
    models = models_dir(bundles, tmp_path, "classification")
    with serve(models, warmup=False) as live:
        for fields, fragment in [
            ({"priority": "urgent"}, "priority"),
            ({"timeout_ms": 0}, "timeout_ms"),
            ({"timeout_ms": "soon"}, "timeout_ms"),
        ]:
            r = live.post("/v1/classify", {"inputs": "fine", **fields})
            err = error_of(r, 422, "validation_error")
            assert fragment in err["message"] or fragment in str(err.get("details")), err
        ok = live.post("/v1/classify", {"inputs": "fine", "priority": "low", "timeout_ms": 9000})
        assert ok.status_code == 200, ok.text
        schema = live.client.get("/openapi.json").json()["components"]["schemas"]
        for name in ("ClassifyRequest", "QARequest", "FillMaskRequest", "TokenClassifyRequest"):
            props = schema[name]["properties"]
            assert {"priority", "timeout_ms"} <= set(props), name
        assert (
            "TokenizeRequest" not in schema
            or "priority" not in schema["TokenizeRequest"]["properties"]
        )


def test_a_shed_request_is_refused_before_it_is_tokenized(bundles: Path, tmp_path: Path) -> None:
    """While high is queued, low may have at most eight one-input batches' worth queued ahead of
    it; the next low request gets 429 with Retry-After, checked before its text is tokenized
    (under overload a refusal must be cheap), and everything admitted is answered."""
    with held_classifier(bundles, tmp_path) as (live, gate, batcher):
        loaded = live.model("classification")
        prepare, tokenized = loaded.task_model.prepare, []

        def counted(*args: Any) -> Any:
            tokenized.append(args)
            return prepare(*args)

        loaded.task_model.prepare = counted

        async def scenario() -> tuple[httpx.Response, int, list[httpx.Response]]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:

                def send(n: int, priority: str) -> asyncio.Task[httpx.Response]:
                    body = {"inputs": f"film number {n}", "priority": priority}
                    return asyncio.create_task(client.post("/v1/classify", json=body))

                async def queued(depth: int) -> None:
                    while batcher.queue_depth < depth:
                        await asyncio.sleep(0.005)

                tasks = [send(0, "normal")]
                while batcher.in_flight < 1:
                    await asyncio.sleep(0.005)
                tasks.append(send(1, "high"))
                await queued(1)
                tasks += [send(10 + n, "low") for n in range(7)]
                await queued(8)
                before = len(tokenized)
                refused = await client.post(
                    "/v1/classify", json={"inputs": "one too many", "priority": "low"}
                )
                since = len(tokenized) - before
                gate.set()
                return refused, since, await asyncio.gather(*tasks)

        refused, since, answers = asyncio.run(scenario())
        err = error_of(refused, 429, "overloaded")
        assert "higher-priority" in err["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert since == 0  # refused before tokenizing
        assert [r.status_code for r in answers] == [200] * 9
        assert live.sample("bert_rejected_requests_total", priority="low") == 1
        until(lambda: batcher.in_flight == 0)
