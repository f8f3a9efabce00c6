"""Order of service and admission under load, with the deterministic FakeBackend: priority
classes, earliest deadline first, the patience bound on length grouping, the learned batch
latency, and what is refused at once (429 / 504) instead of answered late."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.backend import FakeBackend, FakeResult
from app.batching import Batcher
from app.errors import OverloadedError, RequestTimeoutError
from app.metrics import Metrics
from app.scheduling import LatencyModel, Workload, plan_batch
from tests.app.test_batching import expected, item, make, run, sample, until


async def until_running(b: object) -> None:
    while not b.in_flight:
        await asyncio.sleep(0)


# --- plan_batch and the latency model ------------------------------------------------------------


def test_urgent_items_go_first_whatever_their_padding() -> None:
    lengths = [10, 10, 11, 120, 9]
    grouped = plan_batch(lengths, max_batch_tokens=4096, max_batch_size=3, max_padding_ratio=0.1)
    assert grouped == [0, 1, 2]
    # Item 3 (120 tokens) was passed over enough: it leads, padding cap or not.
    order = [3, 0, 1, 2, 4]
    picked = plan_batch(
        [lengths[i] for i in order],
        max_batch_tokens=4096, max_batch_size=3, max_padding_ratio=0.1, urgent=1,
    )  # fmt: skip
    assert [order[i] for i in picked] == [3]  # the short ones would pad it past the cap
    picked = plan_batch(
        [lengths[i] for i in order], max_batch_tokens=4096, max_batch_size=3, urgent=2
    )
    assert [order[i] for i in picked] == [3, 0, 2]  # then the nearest to 120 tokens


def test_fill_takes_the_anchors_class_before_lower_ones() -> None:
    # Item 1 is the nearest length but of a lower class; item 2 (same class) goes first.
    picked = plan_batch([20, 20, 40], max_batch_tokens=4096, max_batch_size=2, classes=[0, 2, 0])
    assert picked == [0, 2]


def test_a_lower_class_never_takes_the_place_of_a_higher_one_passed_over() -> None:
    # Item 1 (class 0) would pad the batch past the cap; item 2 (class 2) has the anchor's
    # length, but taking it would run "low" work while a "high" input waits for the next batch.
    lengths, classes = [10, 40, 10], [0, 0, 2]
    picked = plan_batch(
        lengths, max_batch_tokens=4096, max_batch_size=3, max_padding_ratio=0.1, classes=classes
    )
    assert picked == [0]
    # One class: the cap still groups by length as before.
    assert plan_batch(lengths, max_batch_tokens=4096, max_batch_size=3, max_padding_ratio=0.1) == [
        0, 2,
    ]  # fmt: skip


def test_latency_model_fits_a_line_and_falls_back_to_proportional() -> None:
    m = LatencyModel(min_batches=4)
    for tokens in (100, 200, 300):
        m.observe(tokens, 0.002 + 0.0001 * tokens)
    assert m.predict(100) is None and m.tokens_within(1.0) is None  # not ready yet
    m.observe(400, 0.002 + 0.0001 * 400)
    assert m.fixed == pytest.approx(0.002) and m.per_token == pytest.approx(0.0001)
    assert m.predict(1000, batches=2) == pytest.approx(2 * 0.002 + 0.1)
    assert m.tokens_within(0.012) == pytest.approx(100, abs=1)
    same = LatencyModel(min_batches=2)
    for _ in range(3):
        same.observe(256, 0.0256)  # one token count: proportional
    assert same.fixed == 0 and same.per_token == pytest.approx(0.0001)
    flat = LatencyModel(min_batches=2)
    for tokens in (10, 20, 30):
        flat.observe(tokens, 0.02)  # no growth with tokens: the mean time
    assert flat.per_token == 0 and flat.fixed == pytest.approx(0.02)
    assert flat.tokens_within(0.01) == 1 and flat.tokens_within(0.03) > 10**6


def test_workload_predicts_the_wait_of_a_class_from_what_is_ahead_of_it() -> None:
    w = Workload(max_batch_size=4, max_batch_tokens=4096, workers=1, target_s=None)
    for tokens in (10, 20, 30, 40):
        w.observe(tokens, 0.0, tokens / 1000)  # 1 ms per token, no padding
    assert w.estimate_s(1, [10]) == pytest.approx(0.010)
    for _ in range(4):
        w.queued(2, 10)  # low priority: not ahead of a normal request
    assert w.estimate_s(1, [10]) == pytest.approx(0.010)
    assert w.estimate_s(2, [10]) == pytest.approx(0.050)
    assert w.clear_s(2) == pytest.approx(0.020)  # two queued inputs of their mean length
    key = w.dispatched(30)  # waits for a worker: all of its 30 ms are ahead
    assert w.free_at() is None
    assert w.estimate_s(1, [10]) == pytest.approx(0.040)
    w.started(key, time.monotonic() - 0.010)  # began 10 ms ago: 20 ms left
    assert w.estimate_s(1, [10]) == pytest.approx(0.030, abs=0.002)
    assert w.free_at() == pytest.approx(time.monotonic() + 0.020, abs=0.002)
    w.finished(key)
    assert w.estimate_s(1, [10]) == pytest.approx(0.010)
    w.started(key, 0.0)  # a late start of a batch already gone is ignored
    # A latency objective of 80 ms cuts batches to 20 ms: 20 tokens.
    w.target_s = 0.08
    assert w.token_cap() == 20


def test_workload_scales_predictions_by_how_late_answers_came() -> None:
    w = Workload(max_batch_size=4, max_batch_tokens=4096, workers=1, target_s=None)
    for tokens in (10, 20, 30, 40):
        w.observe(tokens, 0.0, tokens / 1000)
    base = w.estimate_s(1, [10])
    assert base == pytest.approx(0.010)
    for n in range(208):  # most answers took twice the prediction, one in a hundred 3 times
        w.answered(0.010, 0.030 if n % 104 == 0 else 0.020)
    assert w.calibration == pytest.approx(2.0)  # the objective is a p99: a hundredth may be late
    assert w.estimate_s(1, [10]) == pytest.approx(0.010)  # estimates stay raw: the batcher
    # scales them for admission and learns from them unscaled
    for _ in range(16):  # more than a hundredth three times: predictions follow them
        w.answered(0.010, 0.030)
    assert w.calibration == pytest.approx(3.0)
    for _ in range(1024):  # early answers never make predictions more optimistic
        w.answered(0.010, 0.001)
    assert w.calibration == 1.0
    # The 1 % is of estimated time, not of requests: requests estimated at a millisecond and
    # answered in ten (a twentieth of them) do not set the scale for the 100 ms ones.
    for n in range(1024):
        if n % 20 == 0:
            w.answered(0.001, 0.010)
        else:
            w.answered(0.100, 0.200)
    assert w.calibration == pytest.approx(2.0)


def test_workload_scales_estimates_by_how_late_answers_of_their_length_came() -> None:
    """Long inputs among short ones come later than estimated (passed over for their length):
    their own scale covers them, and the short ones keep theirs; a length never seen before
    gets the scale of all answers."""
    w = Workload(max_batch_size=4, max_batch_tokens=4096, workers=1, target_s=None)
    for n in range(1024):
        if n % 4 == 3:
            w.answered(0.100, 0.300, longest=128)  # three times the estimate
        else:
            w.answered(0.100, 0.120, longest=20)
    assert w.calibration_for(20) == pytest.approx(1.2)
    assert w.calibration_for(30) == pytest.approx(1.2)  # the same group (16-31 tokens)
    assert w.calibration_for(128) == pytest.approx(3.0)
    assert w.calibration == pytest.approx(3.0)  # of all: a quarter came three times late
    assert w.calibration_for(400) == pytest.approx(3.0)  # no answers of its own yet
    for _ in range(63):
        w.answered(0.100, 0.150, longest=400)
    assert w.calibration_for(400) == pytest.approx(3.0)  # 63 answers: not enough yet
    w.answered(0.100, 0.150, longest=400)
    assert w.calibration_for(400) == pytest.approx(1.5)


# --- the batcher ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("patience", "long_batch"), [(1, 2), (100, 5)])
def test_patience_bounds_how_often_an_odd_length_is_passed_over(
    patience: int, long_batch: int
) -> None:
    # Inputs of odd lengths (30-100 tokens, none within the padding cap of another) queued
    # between short ones: the first batch groups the short ones and passes the odd ones over.
    # Grouping alone then gives each odd one its own batch, in arrival order, so the last waits
    # 5 batches; with patience 1 they are urgent and go next, padding or not.
    odd = [item(1, 30), item(2, 40), item(3, 55), item(4, 75), item(5, 100)]
    items = [item(0, 8), *odd, *(item(10 + i, 8) for i in range(6))]
    backend = FakeBackend()

    async def main() -> list[FakeResult]:
        async with make(
            backend, max_batch_size=3, max_wait_s=0, max_padding_ratio=0.1, patience=patience
        ) as b:
            return await b.submit(items)

    assert run(main()) == expected(items)
    batches = [[int(i.input_ids[0]) for i in batch.items] for batch in backend.batches]
    assert batches[0] == [0, 10, 11]
    assert next(n for n, firsts in enumerate(batches) if 5 in firsts) == long_batch


def test_higher_priority_is_served_first_and_earlier_deadlines_within_a_class() -> None:
    gate, metrics = threading.Event(), Metrics()
    backend = FakeBackend(gate=gate)

    async def main() -> None:
        async with make(backend, metrics, max_batch_size=1, max_in_flight=1, max_wait_s=0) as b:
            loop = asyncio.get_running_loop()
            running = b.submit([item(1, 4)])
            await until_running(b)
            low = b.submit([item(2, 4)], priority="low")
            late = b.submit([item(3, 4)], deadline=loop.time() + 4)
            soon = b.submit([item(4, 4)], deadline=loop.time() + 2)
            high = b.submit([item(5, 4)], priority="high")
            gate.set()
            await asyncio.gather(running, low, late, soon, high)

    run(main())
    assert backend.seen_first_tokens() == [1, 5, 4, 3, 2]
    assert sample(metrics, "bert_queue_time_seconds_count", priority="high") == 1
    assert sample(metrics, "bert_queue_time_seconds_count", priority="low") == 1
    assert sample(metrics, "bert_queue_time_seconds_count", priority="normal") == 3


def test_while_classes_mix_a_few_high_inputs_lead_the_next_batch_whole() -> None:
    """A high input runs; low work queues, then two more high inputs of different lengths. With
    both classes active no low batch was handed over early (it would run before them), and the
    next batch takes both high inputs whatever the padding cap says, low work only after."""
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main() -> None:
        async with make(
            backend, max_batch_size=32, max_wait_s=0, max_padding_ratio=0.1, max_in_flight=2
        ) as b:
            running = b.submit([item(1, 8)], priority="high")
            await until(lambda: backend.calls == 1)
            lows = [b.submit([item(10 + n, 8)], priority="low") for n in range(8)]
            await asyncio.sleep(0.05)  # time enough to hand a prepared batch over
            assert backend.calls == 1 and b.queue_depth == 8  # none was: classes mix
            highs = [
                b.submit([item(2, 8)], priority="high"),
                b.submit([item(3, 30)], priority="high"),
            ]
            await asyncio.sleep(0.01)
            gate.set()
            await asyncio.gather(running, *lows, *highs)

    run(main())
    second = [int(i.input_ids[0]) for i in backend.batches[1].items]
    assert second == [2, 3]  # both high inputs, the long one included, and no low one
    assert all(int(i.input_ids[0]) >= 10 for batch in backend.batches[2:] for i in batch.items)


def test_low_priority_is_refused_first_when_the_queue_fills() -> None:
    gate, metrics = threading.Event(), Metrics()
    backend = FakeBackend(gate=gate)

    async def main() -> None:
        async with make(
            backend, metrics, max_batch_size=1, max_in_flight=1, max_wait_s=0, queue_size=4
        ) as b:
            running = b.submit([item(1, 4)])
            await until_running(b)
            queued = [b.submit([item(2, 4)], priority="low"), b.submit([item(3, 4)])]
            with pytest.raises(OverloadedError, match="low priority may use 2"):
                b.submit([item(4, 4)], priority="low")
            queued += [b.submit([item(5, 4)], priority="high"), b.submit([item(6, 4)])]
            with pytest.raises(OverloadedError):
                b.submit([item(7, 4)], priority="high")  # the whole queue is full now
            gate.set()
            await asyncio.gather(running, *queued)

    run(main())
    assert sample(metrics, "bert_rejected_requests_total", priority="low") == 1
    assert sample(metrics, "bert_rejected_requests_total", priority="high") == 1


def test_a_lower_class_is_shed_while_a_higher_one_is_active() -> None:
    """Alone, low work queues deep; once high requests arrive, low may have at most eight
    mixed-class batches' worth queued ahead of it (8 x max(1, 4 // 32) here): more is refused at
    once (429 with Retry-After) instead of waiting behind high, and high itself is never shed."""
    gate, metrics = threading.Event(), Metrics()
    backend = FakeBackend(gate=gate)

    async def main() -> None:
        async with make(backend, metrics, max_batch_size=4, max_in_flight=1, max_wait_s=0) as b:
            running = b.submit([item(1, 4)], priority="low")
            await until_running(b)
            queued = [b.submit([item(10 + n, 4)], priority="low") for n in range(8)]
            queued.append(b.submit([item(2, 4)], priority="high"))
            with pytest.raises(OverloadedError, match="higher-priority requests first") as info:
                b.submit([item(20, 4)], priority="low")
            assert info.value.retry_after > 0
            with pytest.raises(OverloadedError, match="higher-priority requests first"):
                b.check_room(1, "low")  # the same answer before tokenizing
            b.check_room(1, "high")
            b.check_room(10**6, "low")  # never room: left to submit's 413, not "retry later"
            queued += [b.submit([item(30 + n, 4)], priority="high") for n in range(6)]
            gate.set()
            await asyncio.gather(running, *queued)

    run(main())
    assert sample(metrics, "bert_rejected_requests_total", priority="low") == 2
    assert sample(metrics, "bert_rejected_requests_total", priority="high") == 0
    # High went next, in a full batch: the highest active class is not cut to small batches.
    assert [int(i.input_ids[0]) for i in backend.batches[1].items] == [2, 30, 31, 32]


async def learn(b: Batcher[FakeResult], backend: FakeBackend, batches: int = 4) -> None:
    """Run `batches` lone batches so the batcher's latency model is ready; return once the
    last has left the backend."""
    for n in range(batches):
        await b.submit([item(90 + n, 4 * (n + 1))])
    while b.in_flight:
        await asyncio.sleep(0)


def test_a_deadline_that_cannot_be_met_is_answered_504_at_once() -> None:
    metrics = Metrics()
    backend = FakeBackend(delay_s=0.05)  # every batch takes 50 ms

    async def main() -> None:
        async with make(backend, metrics, max_batch_size=1, max_wait_s=0) as b:
            await learn(b, backend)
            loop = asyncio.get_running_loop()
            queued = [b.submit([item(i, 8)]) for i in range(4)]  # about 200 ms of work
            before = backend.calls
            with pytest.raises(RequestTimeoutError, match="cannot be answered within") as info:
                b.submit([item(9, 8)], deadline=loop.time() + 0.1)
            assert info.value.details["predicted_ms"] >= 150
            assert backend.calls == before  # refused before running, not after
            await asyncio.gather(*queued)
            # With time enough, the same request is served.
            assert await b.submit([item(9, 8)], deadline=loop.time() + 2) == expected([item(9, 8)])

    run(main())
    assert sample(metrics, "bert_timeouts_total", priority="normal") == 1


def test_a_latency_objective_refuses_with_retry_after_and_cuts_batches() -> None:
    backend = FakeBackend(delay_s=0.02)

    async def main() -> None:
        async with make(
            backend, max_batch_size=8, max_wait_s=0, target_latency_s=0.1, idle_dispatch=True
        ) as b:
            await learn(b, backend)
            loop = asyncio.get_running_loop()
            # The objective counts from the request's receipt: one batch (20 ms) is too late for
            # a request read and tokenized 95 ms ago, in time for one received 10 ms ago.
            with pytest.raises(OverloadedError, match="latency objective of 100 ms"):
                b.submit([item(70, 8)], received=loop.time() - 0.095)
            assert await b.submit([item(70, 8)], received=loop.time() - 0.01) == expected(
                [item(70, 8)]
            )
            gate_until = [b.submit([item(i, 8)]) for i in range(8)]
            with pytest.raises(OverloadedError, match="latency objective of 100 ms") as info:
                b.submit([item(50 + i, 8) for i in range(40)])
            assert info.value.retry_after >= 1
            high = b.submit([item(60, 8)], priority="high")  # nothing of its class ahead
            await asyncio.gather(*gate_until, high)

    run(main())


def test_a_queued_request_past_hope_is_failed_before_it_runs() -> None:
    gate = threading.Event()
    backend = FakeBackend(delay_s=0.05)

    async def main() -> None:
        async with make(backend, max_batch_size=1, max_in_flight=1, max_wait_s=0) as b:
            await learn(b, backend)
            backend.gate = gate
            loop = asyncio.get_running_loop()
            running = b.submit([item(1, 4)])
            await until_running(b)
            # Admitted (about 100 ms predicted), then the running batch overruns: when it ends
            # (at about 170 ms) a batch of its own (50 ms) can no longer make 200 ms.
            doomed = b.submit([item(2, 4)], deadline=loop.time() + 0.2)
            await asyncio.sleep(0.12)
            gate.set()
            with pytest.raises(RequestTimeoutError):
                await doomed
            await running

    run(main())
    assert 2 not in backend.seen_first_tokens()


def test_beyond_the_window_high_priority_and_near_deadlines_still_go_first() -> None:
    # 200 queued inputs (the window holds 4 batches of 4 = 16): a high-priority input queued
    # last, and a normal one whose deadline is near, are both served before the old ones.
    gate = threading.Event()
    backend = FakeBackend(gate=gate)

    async def main() -> None:
        async with make(backend, max_batch_size=4, max_in_flight=1, max_wait_s=0) as b:
            loop = asyncio.get_running_loop()
            running = b.submit([item(1, 4)])
            await until_running(b)
            old = [b.submit([item(1000 + i, 4)], deadline=loop.time() + 30) for i in range(200)]
            # Urgent by deadline: within two batches of the (not yet learned: 0 s) batch time.
            near = b.submit([item(2, 4)], deadline=loop.time() + 0.5)
            high = b.submit([item(3, 4)], priority="high")
            gate.set()
            await asyncio.gather(running, near, high, *old)

    run(main())
    seen = backend.seen_first_tokens()
    assert seen[1] == 3  # the high one leads the first batch after the running one
    assert seen.index(2) < seen.index(1016)  # the near deadline ahead of the window's tail


def test_batches_shrink_and_hold_one_class_while_several_priorities_are_active() -> None:
    """While a higher class is active, a lower class's batches are a thirty-second of the limits
    (one input of 16 here); the highest active class still batches in full, alone."""
    backend = FakeBackend()

    async def main() -> None:
        async with make(backend, max_batch_size=16, max_wait_s=0) as b:
            await b.submit([item(i, 4) for i in range(16)])  # one class: a full batch
            await asyncio.gather(
                b.submit([item(100 + i, 4) for i in range(16)], priority="low"),
                b.submit([item(200 + i, 4) for i in range(4)], priority="high"),
            )

    run(main())
    firsts = [[int(i.input_ids[0]) for i in batch.items] for batch in backend.batches]
    assert len(firsts[0]) == 16
    assert firsts[1] == [200, 201, 202, 203]  # high first, whole, and no low input fills it
    assert all(len(batch) == 1 for batch in firsts[2:])  # low: one at a time while high is active
    assert sorted(n for batch in firsts[2:] for n in batch) == list(range(100, 116))
