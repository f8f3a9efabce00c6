"""The dynamic batcher with the deterministic FakeBackend (no HTTP, no weights).

Batch compositions are made deterministic by queueing work synchronously before the batching
task runs, or by holding the backend on a gate; timings are only ever lower bounds.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from app.backend import FakeBackend, FakeResult
from app.batching import Batcher, BatcherConfig
from app.errors import (
    InferenceError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ValidationFailedError,
)
from app.metrics import Metrics
from app.scheduling import plan_batch
from bundle.batch import WorkItem

T = TypeVar("T")
MODEL = "m"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine; a hang fails after 5 s instead of blocking the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout=5))


def item(tag: int, length: int) -> WorkItem:
    """An item whose first token `tag` identifies it in FakeBackend's answers and records."""
    return WorkItem.of([tag] + [7] * (length - 1))


def expected(items: list[WorkItem]) -> list[FakeResult]:
    return [FakeResult(it.length, int(it.input_ids[0])) for it in items]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of `name`'s samples for MODEL with these labels (over the others, e.g. every
    priority)."""
    want = {"model": MODEL, **labels}
    return sum(
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name and want.items() <= s.labels.items()
    )


def make(
    backend: FakeBackend, metrics: Metrics | None = None, **config: Any
) -> Batcher[FakeResult]:
    return Batcher(backend, BatcherConfig(**config), model=MODEL, metrics=metrics)


async def until(condition: Any) -> None:
    """Yield to the loop until `condition()` holds (the 5 s run timeout bounds it)."""
    while not condition():
        await asyncio.sleep(0.001)


def test_concurrent_submits_form_batches_and_record_metrics() -> None:
    backend, metrics = FakeBackend(), Metrics()

    async def main() -> list[list[FakeResult]]:
        async with make(backend, metrics, max_batch_size=8, max_wait_s=0.05) as b:

            async def client(i: int) -> list[FakeResult]:
                return await b.submit([item(i, 3)])

            return await asyncio.gather(*(client(i) for i in range(20)))

    results = run(main())
    assert results == [[FakeResult(3, i)] for i in range(20)]
    assert [b.size for b in backend.batches] == [8, 8, 4]
    assert sorted(backend.seen_first_tokens()) == list(range(20))
    assert sample(metrics, "bert_batch_size_count") == 3
    assert sample(metrics, "bert_batch_size_sum") == 20
    assert sample(metrics, "bert_batch_tokens_sum") == 60
    assert sample(metrics, "bert_padding_ratio_sum") == 0
    assert sample(metrics, "bert_queue_time_seconds_count") == 20
    assert sample(metrics, "bert_inference_time_seconds_count") == 3
    assert sample(metrics, "bert_queue_depth") == 0


def test_split_requests_get_results_in_input_order() -> None:
    backend = FakeBackend()
    a = [item(100 + i, n) for i, n in enumerate([5, 50, 6, 48, 7, 49, 5, 51])]
    c = [item(200 + i, n) for i, n in enumerate([49, 6, 50])]

    async def main() -> tuple[list[FakeResult], list[FakeResult]]:
        # patience=100: grouping by length alone (nothing is urgent).
        async with make(backend, max_batch_size=3, max_wait_s=0, patience=100) as b:
            fa, fc = b.submit(a), b.submit(c)
            return await fa, await fc

    ra, rc = run(main())
    assert ra == expected(a)
    assert rc == expected(c)
    firsts = [[int(it.input_ids[0]) for it in batch.items] for batch in backend.batches]
    # Grouping reorders: the oldest (len 5) is batched with the other short ones, not its
    # neighbours, and request c's short item joins a's short ones.
    assert firsts[0] == [100, 106, 102]
    assert len(backend.batches) == 4
    assert firsts[3] == [104, 201]
    assert sorted(backend.seen_first_tokens()) == [*range(100, 108), 200, 201, 202]


def test_token_budget_and_batch_size_are_never_exceeded() -> None:
    backend = FakeBackend()
    rng = random.Random(0)
    requests = [
        [item(1000 * r + i, rng.randint(1, 40)) for i in range(rng.randint(1, 6))]
        for r in range(30)
    ]

    async def main() -> list[list[FakeResult]]:
        async with make(backend, max_batch_tokens=64, max_batch_size=4, max_wait_s=0.001) as b:

            async def client(items: list[WorkItem]) -> list[FakeResult]:
                await asyncio.sleep(rng.random() * 0.01)  # spread arrivals
                return await b.submit(items)

            return await asyncio.gather(*(client(r) for r in requests))

    assert run(main()) == [expected(r) for r in requests]
    n_items = sum(len(r) for r in requests)
    assert len(backend.seen_first_tokens()) == n_items  # each item ran exactly once
    assert len(backend.batches) >= n_items // 4
    for batch in backend.batches:
        assert 1 <= batch.size <= 4
        assert batch.padded_tokens <= 64
        assert batch.input_ids.shape == batch.attention_mask.shape == (batch.size, batch.padded_len)
        assert batch.attention_mask.sum() == batch.real_tokens


@pytest.mark.parametrize("group", [False, True])
def test_plan_batch_respects_limits_and_takes_the_oldest(group: bool) -> None:
    rng = random.Random(1)
    for _ in range(500):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 60))]
        size = rng.randint(1, 8)
        picked = plan_batch(
            lengths, max_batch_tokens=64, max_batch_size=size, group_by_length=group
        )
        assert picked[0] == 0
        assert len(set(picked)) == len(picked) <= size
        assert len(picked) * max(lengths[i] for i in picked) <= 64
        if not group:
            assert picked == list(range(len(picked)))  # FIFO takes a prefix
        elif len(picked) < size:
            # Greedy fill: every item left out would have broken the token budget.
            width = max(lengths[i] for i in picked)
            for i in set(range(len(lengths))) - set(picked):
                assert (len(picked) + 1) * max(width, lengths[i]) > 64


@pytest.mark.parametrize("cap", [0.0, 0.1, 0.3, 0.6])
def test_plan_batch_caps_padding_and_always_takes_the_oldest(cap: float) -> None:
    rng = random.Random(2)
    for _ in range(500):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 40))]
        picked = plan_batch(
            lengths, max_batch_tokens=4096, max_batch_size=32, max_padding_ratio=cap
        )
        assert picked[0] == 0  # fairness: the head of the queue always leaves
        width = max(lengths[i] for i in picked)
        real = sum(lengths[i] for i in picked)
        assert len(picked) == 1 or 1 - real / (len(picked) * width) <= cap + 1e-9
    # the SST-2-like case: one batch of mixed lengths becomes batches of close lengths
    lengths = [12, 40, 13, 41, 12, 39]
    assert sorted(plan_batch(lengths, max_batch_tokens=4096, max_batch_size=32)) == [*range(6)]
    capped = plan_batch(lengths, max_batch_tokens=4096, max_batch_size=32, max_padding_ratio=0.1)
    assert sorted(capped) == [0, 2, 4]


def padding_of(backend: FakeBackend) -> int:
    return sum(b.padded_tokens - b.real_tokens for b in backend.batches)


@pytest.mark.parametrize(
    ("group", "padding"), [(False, 8 * (4 * 120 - 2 * 8 - 2 * 120)), (True, 0)]
)
def test_length_grouping_cuts_padding_against_fifo(group: bool, padding: int) -> None:
    # 32 inputs alternating 8 and 120 tokens, all queued before the first batch forms.
    items = [item(i, 8 if i % 2 == 0 else 120) for i in range(32)]
    backend = FakeBackend()

    async def main() -> list[FakeResult]:
        async with make(backend, max_batch_size=4, group_by_length=group, max_wait_s=0) as b:
            return await b.submit(items)

    assert run(main()) == expected(items)
    assert len(backend.batches) == 8
    assert padding_of(backend) == padding
    if not group:
        assert backend.seen_first_tokens() == list(range(32))  # strict arrival order


def test_full_batch_is_dispatched_without_waiting() -> None:
    backend = FakeBackend()

    async def main() -> list[FakeResult]:
        # max_wait of 60 s: only "the batch is full" can dispatch within the 5 s run timeout.
        async with make(backend, max_batch_size=2, max_wait_s=60) as b:
            return await b.submit([item(1, 4), item(2, 4)])

    assert run(main()) == [FakeResult(4, 1), FakeResult(4, 2)]
    assert [b.size for b in backend.batches] == [2]


def test_max_wait_dispatches_a_lone_item_and_gathers_late_arrivals() -> None:
    backend = FakeBackend()

    async def main() -> tuple[float, list[FakeResult], list[FakeResult]]:
        async with make(backend, max_batch_size=8, max_wait_s=0.2) as b:
            loop = asyncio.get_running_loop()
            start = loop.time()
            first = b.submit([item(1, 3)])
            for _ in range(3):
                await asyncio.sleep(0)  # the batcher is now waiting on the clock
            second = b.submit([item(2, 5)])
            r1, r2 = await first, await second
            elapsed = loop.time() - start
            lone = await b.submit([item(3, 2)])
            return elapsed, r1 + r2, lone

    elapsed, pair, lone = run(main())
    assert pair == [FakeResult(3, 1), FakeResult(5, 2)]
    assert lone == [FakeResult(2, 3)]
    assert [b.size for b in backend.batches] == [2, 1]  # late arrival joined; lone item went alone
    assert elapsed >= 0.2  # a partial batch is held for max_wait (a lower bound, never flaky)


def test_full_queue_is_refused_with_retry_after() -> None:
    backend, metrics = FakeBackend(), Metrics()

    async def main() -> list[FakeResult]:
        b = make(backend, metrics, queue_size=4, max_batch_size=4, max_wait_s=0)
        first = b.submit([item(1, 2), item(2, 2), item(3, 2)])  # not started: stays queued
        with pytest.raises(OverloadedError) as info:
            b.submit([item(4, 2), item(5, 2)])
        assert info.value.retry_after >= 1
        assert info.value.status_code == 429
        assert b.queue_depth == 3
        assert sample(metrics, "bert_queue_depth") == 3
        last = b.submit([item(6, 2)])  # exactly fills the queue
        async with b:
            return await first + await last

    assert run(main()) == [FakeResult(2, t) for t in (1, 2, 3, 6)]
    assert sample(metrics, "bert_rejected_requests_total") == 1
    assert 4 not in backend.seen_first_tokens()


def test_deadline_fails_a_queued_request_whose_items_never_run() -> None:
    gate, metrics = threading.Event(), Metrics()
    backend = FakeBackend(gate=gate)

    async def main() -> list[FakeResult]:
        async with make(backend, metrics, max_batch_size=1, max_in_flight=1, max_wait_s=0) as b:
            loop = asyncio.get_running_loop()
            running = b.submit([item(1, 4)])  # holds the only slot until the gate opens
            while not b.in_flight:  # (queued together, the earlier deadline would go first)
                await asyncio.sleep(0)
            late = b.submit([item(2, 4), item(3, 4)], deadline=loop.time() + 0.05)
            with pytest.raises(RequestTimeoutError):
                await late
            assert b.queue_depth == 0
            gate.set()
            return await running

    assert run(main()) == [FakeResult(4, 1)]
    assert backend.seen_first_tokens() == [1]
    assert sample(metrics, "bert_timeouts_total") == 1


def test_cancelled_request_is_dropped_before_inference_and_counted() -> None:
    gate, metrics = threading.Event(), Metrics()
    backend = FakeBackend(gate=gate)

    async def main() -> list[FakeResult]:
        async with make(backend, metrics, max_batch_size=1, max_in_flight=1, max_wait_s=0) as b:
            running = b.submit([item(1, 4)])

            async def handler() -> list[FakeResult]:
                return await b.submit([item(2, 4), item(3, 4), item(4, 4)])

            task = asyncio.create_task(handler())
            await until(lambda: b.queue_depth == 3)  # handler submitted
            task.cancel()  # what the server does when the client disconnects
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: b.queue_depth == 0)  # items dropped
            gate.set()
            return await running

    assert run(main()) == [FakeResult(4, 1)]
    assert backend.seen_first_tokens() == [1]
    assert sample(metrics, "bert_dropped_requests_total") == 1
    assert sample(metrics, "bert_dropped_items_total") == 3


def test_failing_batch_fails_only_its_own_requests() -> None:
    backend = FakeBackend(fail_on_calls={1})

    async def main() -> tuple[list[Any], list[FakeResult]]:
        config = {"max_batch_size": 2, "max_in_flight": 1, "group_by_length": False}
        async with make(backend, max_wait_s=0, **config) as b:
            doomed = b.submit([item(1, 3), item(2, 3)])  # batch 1: fails
            fine = b.submit([item(3, 3), item(4, 3)])  # batch 2
            both = await asyncio.gather(doomed, fine, return_exceptions=True)
            after = await b.submit([item(5, 3)])  # the batcher keeps serving
            return both, after

    (doomed, fine), after = run(main())
    assert isinstance(doomed, InferenceError)
    assert doomed.status_code == 500
    assert fine == [FakeResult(3, 3), FakeResult(3, 4)]
    assert after == [FakeResult(3, 5)]
    assert backend.calls == 3


def test_a_concurrent_backend_runs_its_batches_together() -> None:
    """config.concurrent (continuous batching of generation): every in-flight batch is inside
    predict at once, each on its own worker, none held back behind the running ones."""
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main() -> list[FakeResult]:
        config = {"max_batch_size": 1, "max_in_flight": 3, "max_wait_s": 0, "concurrent": True}
        async with make(backend, **config) as b:
            pending = b.submit([item(i, 2) for i in range(4)])
            await until(lambda: backend.calls == 3)  # three batches running at once
            await asyncio.sleep(0.02)
            assert backend.calls == 3 and b.queue_depth == 1  # at most max_in_flight
            gate.set()
            return await pending

    assert run(main()) == [FakeResult(2, i) for i in range(4)]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_run_that_many_batches_at_once(workers: int) -> None:
    """config.workers: up to `workers` batches inside predict at once, each on its own worker;
    max_in_flight - 1 more wait prepared (one worker: one runs, one waits); the rest stays
    queued."""
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main() -> list[FakeResult]:
        config = {"max_batch_size": 1, "max_in_flight": 2, "max_wait_s": 0, "workers": workers}
        async with make(backend, **config) as b:
            pending = b.submit([item(i, 2) for i in range(6)])
            await until(lambda: backend.calls == workers and b.in_flight == workers + 1)
            await asyncio.sleep(0.02)  # room for a (wrong) extra run or hand-over to show up
            assert backend.calls == workers
            assert b.in_flight == workers + 1 and b.queue_depth == 6 - workers - 1
            gate.set()
            return await pending

    assert run(main()) == [FakeResult(2, i) for i in range(6)]


def test_idle_dispatch_uses_a_free_worker_while_another_runs() -> None:
    """With two workers, an arrival while one batch runs goes at once to the idle worker;
    with every worker busy, arrivals wait to be batched together."""
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main() -> list[FakeResult]:
        config = {"max_batch_size": 8, "max_wait_s": 60, "idle_dispatch": True, "workers": 2}
        async with make(backend, **config) as b:
            first = b.submit([item(1, 3)])
            await until(lambda: backend.calls == 1)
            second = b.submit([item(2, 3)])
            await until(lambda: backend.calls == 2)  # the idle worker took it alone, at once
            third, fourth = b.submit([item(3, 3)]), b.submit([item(4, 3)])
            await asyncio.sleep(0.05)
            assert backend.calls == 2 and b.queue_depth == 2  # both workers busy: they wait
            gate.set()
            results = []
            for f in (first, second, third, fourth):
                results += await f
            return results

    assert run(main()) == [FakeResult(3, i) for i in (1, 2, 3, 4)]
    assert [b.size for b in backend.batches] == [1, 1, 2]


def test_drain_finishes_queued_work_and_refuses_new_work() -> None:
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main() -> list[list[FakeResult]]:
        b = make(backend, max_batch_size=2, max_wait_s=60)
        b.start()
        futures = [
            b.submit([item(1, 2)]),
            b.submit([item(2, 2), item(3, 5)]),
            b.submit([item(4, 9)]),
        ]
        draining = asyncio.create_task(b.drain())
        await asyncio.sleep(0)
        with pytest.raises(NotReadyError):
            b.submit([item(5, 2)])
        assert not draining.done()
        gate.set()
        await draining  # despite max_wait 60 s: draining sends partial batches at once
        assert all(f.done() for f in futures)
        return [f.result() for f in futures]

    results = run(main())
    assert results == [[FakeResult(2, 1)], [FakeResult(2, 2), FakeResult(5, 3)], [FakeResult(9, 4)]]
    assert sorted(backend.seen_first_tokens()) == [1, 2, 3, 4]


def test_submit_refuses_what_can_never_run() -> None:
    async def main() -> None:
        async with make(FakeBackend(), max_batch_tokens=16) as b:
            assert await b.submit([]) == []
            with pytest.raises(ValidationFailedError):
                b.submit([item(1, 4), item(2, 17)])
            with pytest.raises(PayloadTooLargeError):
                b.submit([item(i, 1) for i in range(b.config.queue_size + 1)])
            with pytest.raises(RequestTimeoutError):
                b.submit([item(3, 4)], deadline=asyncio.get_running_loop().time() - 1)
            assert b.queue_depth == 0

    run(main())


def test_metrics_are_per_instance_and_share_one_prefix() -> None:
    a, b = Metrics(version="1.2.3"), Metrics()
    a.inc_rejected(MODEL)
    a.observe_request("/v1/models/{name}/embed", 200, 0.01)
    assert sample(a, "bert_rejected_requests_total") == 1
    assert sample(b, "bert_rejected_requests_total") == 0
    text, content_type = a.render()
    names = {line.split()[2] for line in text.decode().splitlines() if line.startswith("# TYPE")}
    assert names
    assert all(name.startswith("bert_") for name in names)
    assert "bert_build_info{python=" in text.decode()
    assert 'version="1.2.3"' in text.decode()
    assert content_type.startswith("text/plain")


def test_serving_core_never_imports_torch_or_training() -> None:
    code = (
        "import sys, app.errors, app.settings, app.metrics, app.backend, app.batching\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'training'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_idle_dispatch_sends_at_once_when_nothing_runs() -> None:
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main() -> tuple[list[FakeResult], list[FakeResult]]:
        # max_wait of 60 s: only "the backend is idle" can dispatch within the 5 s run timeout.
        async with make(backend, max_batch_size=8, max_wait_s=60, idle_dispatch=True) as b:
            first = b.submit([item(1, 3)])
            await until(lambda: b.in_flight == 1)  # sent alone at once: nothing was running
            second, third = b.submit([item(2, 3)]), b.submit([item(3, 4)])
            await asyncio.sleep(0.05)
            assert b.queue_depth == 2  # a batch runs: these wait to be batched together
            gate.set()  # when batch 1 ends the backend is idle: the two go at once, together
            return await first, (await second) + (await third)

    first, rest = run(main())
    assert first == [FakeResult(3, 1)] and rest == [FakeResult(3, 2), FakeResult(4, 3)]
    assert [b.size for b in backend.batches] == [1, 2]


def test_while_a_batch_runs_the_next_stays_open_until_the_backend_is_nearly_free() -> None:
    """max_wait 0 would hand each arrival over alone; while a batch runs, a batch handed over
    could only wait behind it, so the batcher keeps it open until the running batch should end
    (by the learned batch latency): the arrivals of that time form one batch."""
    backend = FakeBackend(delay_s=0.2)

    async def main() -> list[FakeResult]:
        async with make(backend, max_batch_size=8, max_wait_s=0) as b:
            for tag in range(4):  # the latency model learns ~0.2 s per batch of one
                await b.submit([item(10 + tag, 2)])
            running = b.submit([item(1, 2)])
            await until(lambda: backend.calls == 5)
            late = []
            for tag in (2, 3, 4):
                late.append(b.submit([item(tag, 2)]))
                await asyncio.sleep(0.02)
            results = await running
            for f in late:
                results += await f
            return results

    assert run(main()) == [FakeResult(2, i) for i in (1, 2, 3, 4)]
    assert [b.size for b in backend.batches] == [1, 1, 1, 1, 1, 3]
