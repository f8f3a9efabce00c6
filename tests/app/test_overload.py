"""Overload over real HTTP: at ten times the rate a model can sustain, every request is answered
(200, 429 or 504; none hangs, none is lost), refused work never reaches the model, the queue
empties, and the service recovers once the load drops.

The sustainable rate is made known, not measured: the real onnxruntime backend is slowed by a
fixed sleep per batch, so the model can finish at most `BATCH` inputs per `BATCH_S` seconds
whatever the machine. Nothing here asserts a speed or a memory figure; the bound on answered
requests follows from that sleep alone.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.live import Live, error_of, models_dir, serve, until

BATCH = 2  # max_batch_size
BATCH_S = 0.2  # seconds the slowed backend takes per batch, at least
SUSTAINABLE = BATCH / BATCH_S  # inputs per second the model can finish (10)
RATE = 10 * SUSTAINABLE  # requests per second sent (100)
SECONDS = 2.0  # of overload
ERROR_TYPES = {429: "overloaded", 504: "timeout"}


@dataclass
class Slowed:
    """A model whose backend sleeps `BATCH_S` before each batch, counting the inputs it ran."""

    items: int = 0
    backend: Any = None

    def install(self, live: Live, model: str) -> None:
        backend = self.backend = live.model(model).backend
        run, lock = backend.run, threading.Lock()

        def slow(batch: Any) -> Any:
            time.sleep(BATCH_S)
            with lock:
                self.items += batch.size
            return run(batch)

        backend.run = slow  # type: ignore[method-assign]

    def remove(self) -> None:
        """Back to the real backend's own speed."""
        del self.backend.run  # the instance attribute shadowed the class's method


def settings(timeout_s: float) -> dict[str, Any]:
    return {
        "variant": "fp32", "max_batch_size": BATCH, "max_batch_in_flight": 1, "queue_size": 4,
        "max_inputs_per_request": 2, "max_wait_ms": 1, "request_timeout_s": timeout_s,
    }  # fmt: skip


@pytest.fixture
def flooded(bundles: Path, tmp_path: Path) -> Iterator[tuple[Live, Slowed]]:
    """classification (slowed) and qa (not), a queue of 4 inputs, a 0.6 s request deadline."""
    models = models_dir(bundles, tmp_path, "classification", "qa")
    with serve(models, **settings(timeout_s=0.6)) as live:
        slowed = Slowed()
        slowed.install(live, "classification")
        yield live, slowed


async def open_loop(
    url: str, path: str, body: dict[str, Any], rate: float, seconds: float
) -> tuple[list[httpx.Response | BaseException], float]:
    """`rate * seconds` requests sent on schedule, whatever the answers; (outcomes, elapsed).
    A request unanswered after 20 s counts as hung (an exception in the outcomes)."""
    n = int(rate * seconds)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            tasks.append(asyncio.create_task(client.post(path, json=body)))
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return list(outcomes), loop.time() - start


def at_most(seconds: float) -> int:
    """Most inputs the slowed model can finish in `seconds` (one batch per BATCH_S, and the
    batch running when the clock started)."""
    return BATCH * (math.floor(seconds / BATCH_S) + 1)


def tally(outcomes: list[httpx.Response | BaseException]) -> Counter[int]:
    """Status counts; asserts each answer is 200, or 429/504 with the common error body."""
    hung = [o for o in outcomes if isinstance(o, BaseException)]
    assert not hung, f"{len(hung)} of {len(outcomes)} requests got no answer: {hung[:3]!r}"
    statuses: Counter[int] = Counter()
    for r in outcomes:
        assert isinstance(r, httpx.Response)
        statuses[r.status_code] += 1
        if r.status_code == 200:
            assert len(r.json()["results"]) == 1
        else:
            assert r.status_code in ERROR_TYPES, r.text
            error_of(r, r.status_code, ERROR_TYPES[r.status_code])
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
    return statuses


def served(live: Live, route: str) -> Counter[int]:
    """Requests the server counted on `route`, by status."""
    counts: Counter[int] = Counter()
    for status in (200, 400, 413, 422, 429, 499, 500, 503, 504):
        n = int(live.sample("bert_requests_total", route=route, status=str(status)))
        if n:
            counts[status] = n
    return counts


def settled(live: Live, model: str) -> None:
    """The model's batcher holds nothing: no queued input, no running batch, no queued token."""
    batcher = live.model(model).batcher
    assert batcher is not None
    until(lambda: batcher.queue_depth == 0 and batcher.in_flight == 0, timeout=10)
    assert live.sample("bert_queue_depth", model=model) == 0
    load = batcher._load  # bookkeeping back to zero: nothing leaked
    assert load.queued_tokens == 0 and load.items == [0, 0, 0], (load.tokens, load.items)


def test_ten_times_the_sustainable_rate_every_request_is_answered(
    flooded: tuple[Live, Slowed],
) -> None:
    live, slowed = flooded
    before = served(live, "/v1/classify")
    outcomes, elapsed = asyncio.run(
        open_loop(live.url, "/v1/classify", {"inputs": "the cat sat"}, RATE, SECONDS)
    )
    sent = len(outcomes)
    statuses = tally(outcomes)
    assert sum(statuses.values()) == sent == int(RATE * SECONDS)  # none lost
    # The model cannot have finished more than one batch per BATCH_S: the rest were refused
    # or timed out (most of them, unless the client itself was very slow to send).
    print(f"\n{sent} requests in {elapsed:.1f} s: {dict(statuses)}, model ran {slowed.items}")
    assert statuses[200] <= at_most(elapsed), (statuses, elapsed)
    assert statuses[429] + statuses[504] >= sent - at_most(elapsed), (statuses, elapsed)
    # The server counted every request once, with the status the client saw.
    until(lambda: served(live, "/v1/classify") - before == statuses, timeout=10)
    settled(live, "classification")
    # Refused requests never reached the model; timed-out ones may have been running.
    assert statuses[200] <= slowed.items <= statuses[200] + statuses[504]
    assert live.sample("bert_rejected_requests_total", model="classification") == statuses[429]
    assert live.sample("bert_timeouts_total", model="classification") == statuses[504]
    # Load drops (and the model is back to its own speed, so that a loaded test machine cannot
    # push these past the 0.6 s deadline): the same server answers every request in turn.
    slowed.remove()
    for i in range(5):
        r = live.post("/v1/classify", {"inputs": ["the cat sat", "a dog ran"][: 1 + i % 2]})
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 1 + i % 2
    settled(live, "classification")


def test_an_overloaded_model_does_not_hold_up_the_others(bundles: Path, tmp_path: Path) -> None:
    models = models_dir(bundles, tmp_path, "classification", "qa")
    with serve(models, **settings(timeout_s=10.0)) as live:
        Slowed().install(live, "classification")
        qa: list[httpx.Response] = []

        async def scenario() -> list[httpx.Response | BaseException]:
            flood = asyncio.create_task(
                open_loop(live.url, "/v1/classify", {"inputs": "a"}, RATE, SECONDS)
            )
            async with httpx.AsyncClient(base_url=live.url, timeout=20) as client:
                while not flood.done():  # one QA request at a time, all through the flood
                    body = {"question": "who ran", "context": "john ran to paris"}
                    qa.append(await client.post("/v1/qa", json=body))
            outcomes, _ = await flood
            return outcomes

        t0 = time.monotonic()
        statuses = tally(asyncio.run(scenario()))
        elapsed, sent = time.monotonic() - t0, int(RATE * SECONDS)
        print(f"\n{sent} requests in {elapsed:.1f} s: {dict(statuses)}, {len(qa)} QA answered")
        assert sum(statuses.values()) == sent
        assert statuses[200] <= at_most(elapsed), (statuses, elapsed)
        assert statuses[429] + statuses[504] >= sent - at_most(elapsed), (statuses, elapsed)
        assert qa and all(r.status_code == 200 for r in qa), [r.text for r in qa[:3]]
        assert live.sample("bert_rejected_requests_total", model="qa") == 0
        settled(live, "classification")
        settled(live, "qa")


def test_sigterm_under_load_finishes_every_admitted_request(bundles: Path, tmp_path: Path) -> None:
    """A drain (what SIGTERM starts) while 12 requests are queued or running behind a slowed
    model: every admitted request still gets its 200 (none is cut off), requests sent during the
    drain get 503, and the server then exits by itself."""
    models = models_dir(bundles, tmp_path, "classification")
    conf = {**settings(timeout_s=30), "queue_size": 64, "shutdown_grace_s": 30}
    with serve(models, **conf) as live:
        slowed = Slowed()
        slowed.install(live, "classification")
        batcher = live.model("classification").batcher
        assert batcher is not None
        answers: list[httpx.Response | BaseException] = []

        def send(i: int) -> None:
            try:
                url, body = f"{live.url}/v1/classify", {"inputs": f"a {i}"}
                answers.append(httpx.post(url, json=body, timeout=60))
            except httpx.HTTPError as exc:  # a cut-off connection would land here
                answers.append(exc)

        admitted = []
        submit = batcher.submit

        def counted(*args: Any, **kw: Any) -> Any:
            future = submit(*args, **kw)
            admitted.append(future)
            return future

        batcher.submit = counted  # type: ignore[method-assign]
        threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        until(lambda: len(admitted) == 12, timeout=10)  # all queued or running
        live.server.request_drain()
        until(lambda: live.service.phase != "running")
        error_of(live.post("/v1/classify", {"inputs": "late"}), 503, "not_ready")
        for t in threads:
            t.join(timeout=30)
        assert len(answers) == 12
        assert all(isinstance(a, httpx.Response) and a.status_code == 200 for a in answers), [
            a if isinstance(a, BaseException) else (a.status_code, a.text[:200]) for a in answers
        ]
        assert slowed.items == 12  # each admitted input ran once; the late one never did
        live.thread.join(timeout=30)
        assert not live.thread.is_alive()
