"""The dynamic batcher: one per model, a pure asyncio component between requests and a Backend.

Flow (as in text-embeddings-inference):

    submit(items, deadline, priority) ── admit or refuse at once: queue (or the priority's
        │          share) full, or predicted to finish past the latency objective -> 429 with
        │          retry_after; predicted to miss its deadline -> 504; draining -> 503
        ▼
    queue ── batching task: wait until a batch is full or the oldest item has waited max_wait
        │      (while a batch runs: until it is about to end); fail now the requests that can
        │      no longer meet their deadline; pick items by `plan_batch` in the order of
        │      service of `app.scheduling` (priority, deadline, arrival; inputs passed over
        │      `patience` times first; token budget, max size, similar lengths); pad
        ▼
    worker thread(s): backend.predict(batch) ── `workers` batches run at once, and up to
        │                                        max_in_flight - 1 more wait prepared
        ▼
    results scattered back to each request by (request, index): a request whose items were
    split over several batches still gets its answers in input order; each batch's time and
    tokens teach the latency model (`app.scheduling.Workload`) that admission predicts with.

Failure semantics: a request past its deadline fails with RequestTimeoutError and its queued items
are removed; a cancelled request (client gone) has its queued items removed before inference;
a backend exception fails only the requests that had items in that batch.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from app.backend import Backend
from app.errors import (
    InferenceError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    ValidationFailedError,
)
from app.metrics import Metrics
from app.scheduling import (
    PRIORITIES,
    BatcherConfig,
    Deadlines,
    Priority,
    Queued,
    Workload,
    no_room,
    plan_batch,
    rank,
    too_late,
)
from bundle.batch import Batch, WorkItem, pad_batch

__all__ = ["Batcher", "BatcherConfig"]

log = logging.getLogger(__name__)

R = TypeVar("R")

# While a batch runs, the next one is handed over this long before the running one should end
# (by the learned batch latency), so the backend never waits for it and late arrivals still join.
_HANDOVER_S = 0.002
# A class counts as active this long after its last arrival (several active: smaller batches).
_PRIORITY_ACTIVE_S = 1.0
# While a higher class is active, a lower class's batches hold at most this share of the
# batcher's limits (one input at the default 32): an arrival of the higher class waits for at
# most one such batch (a running batch is not interrupted); the highest active class batches in
# full. Measured on 2 cores at 2x overload (`benchmarks/scheduling.py --capacity 230`, four runs
# each): high's p99 15-18 ms = 1.23-1.60x alone, against 20-25 ms = 1.69-2.30x with a sixteenth
# for every class, for a sixth fewer low answers (an eighth, a quarter: worse still).
_MIXED_BATCH_SHARE = 32
# While a higher class is active, a lower one may have this many such batches' worth of inputs
# queued ahead of it (its own and higher); more is refused (429) rather than left waiting.
_SHED_BATCHES = 8
# A batch is chosen among this many batches' worth of the first queued inputs (deep queues).
_WINDOW_BATCHES = 4


class _Request(Generic[R]):
    """One submit() call: its future, results gathered so far, and its items still queued."""

    __slots__ = (
        "admitted", "deadline", "estimate", "finished", "future", "longest", "priority",
        "queued", "remaining", "results", "size", "timer",
    )  # fmt: skip

    def __init__(
        self,
        future: asyncio.Future[list[R]],
        size: int,
        priority: Priority = "normal",
        deadline: float | None = None,
    ) -> None:
        self.future = future
        self.size = size
        self.priority = priority
        self.deadline = deadline  # loop time
        self.admitted = 0.0  # loop time
        self.estimate: float | None = None  # seconds to the answer, estimated at admission
        self.longest = 1  # tokens of its longest input
        self.results: list[Any] = [None] * size
        self.remaining = size
        self.queued: set[int] = set()  # sequence numbers of this request's items in the queue
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False  # cleanup done (idempotence guard)


class Batcher(Generic[R]):
    """Dynamic batcher for one model.

    Args:
        backend: runs the batches (called from a worker thread).
        config: batching limits.
        model: model name, used as the metrics label and in messages.
        metrics: where to record queue depth, batch shapes, timings, drops, rejections and
            timeouts; None records nothing.
        executor: where predict runs; by default a dedicated pool of config.workers threads
            (one per in-flight batch with config.concurrent). One worker by default because
            onnxruntime already parallelises inside a run (intra_op_threads): concurrent runs
            pay off only with fewer threads each (see BatcherConfig.workers).

    Use `async with Batcher(...) as b:` (start, then drain on exit), or start()/drain().
    """

    def __init__(
        self,
        backend: Backend[R],
        config: BatcherConfig | None = None,
        *,
        model: str = "default",
        metrics: Metrics | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or BatcherConfig()
        self.model = model
        self.metrics = metrics
        self._owns_executor = executor is None
        cfg = self.config
        self._executor = executor or ThreadPoolExecutor(
            max_workers=cfg.max_in_flight if cfg.concurrent else cfg.workers,
            thread_name_prefix=f"infer-{model}",
        )
        self._queue: OrderedDict[int, Queued[_Request[R]]] = OrderedDict()  # arrival order
        self._classes = [
            OrderedDict[int, Queued[_Request[R]]]() for _ in PRIORITIES
        ]  # the same, by class
        self._dues = Deadlines()
        self._seq = itertools.count()
        self._accepting = True
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(
            cfg.max_in_flight if cfg.concurrent else cfg.workers + cfg.max_in_flight - 1
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._arrived = [float("-inf")] * len(PRIORITIES)  # last arrival per class (monotonic)
        # Predictions only without concurrent batches (their wall times overlap).
        self._predicts = not cfg.concurrent
        self._load = Workload(
            max_batch_size=cfg.max_batch_size,
            max_batch_tokens=cfg.max_batch_tokens,
            workers=cfg.max_in_flight if cfg.concurrent else cfg.workers,
            target_s=cfg.target_latency_s if self._predicts else None,
        )

    # --- public API ---

    @property
    def queue_depth(self) -> int:
        """Items queued and not yet handed to the backend."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Batches handed to the backend and not finished."""
        return len(self._in_flight)

    @property
    def accepting(self) -> bool:
        """False once drain() has begun (submit raises NotReadyError)."""
        return self._accepting

    def start(self) -> None:
        """Start the batching task on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self.model}"
            )

    def submit(
        self,
        items: Sequence[WorkItem],
        deadline: float | None = None,
        priority: Priority = "normal",
        received: float | None = None,
    ) -> asyncio.Future[list[R]]:
        """Queue one request's items, or refuse them at once.

        Args:
            items: the request's tokenized inputs; each at most max_batch_tokens long.
            deadline: absolute time on the event loop clock (`loop.time()`) after which the
                request fails with RequestTimeoutError, even if some items are running; None
                means no deadline. Within a priority class, earlier deadlines are served first.
            priority: the request's class (`app.scheduling.PRIORITIES`): a higher class is
                served first, and "low" may fill only low_priority_share of the queue.
            received: when (loop time) the request was received, if before now (reading and
                tokenizing it): target_latency_s counts from then.

        Returns:
            A future of the results, one per item, in input order. Cancelling it (e.g. the
            awaiting handler is cancelled because the client left) drops its queued items.

        Raises:
            NotReadyError: the batcher is draining.
            PayloadTooLargeError: more items than the whole queue holds.
            ValidationFailedError: an item longer than max_batch_tokens.
            OverloadedError: the queue (or the class's share of it) cannot take these items now,
                a higher class is served meanwhile, or they would finish after
                target_latency_s (carries retry_after).
            RequestTimeoutError: the deadline has passed, or the learned batch latency says
                the items cannot be answered before it.
        """
        loop = asyncio.get_running_loop()
        cfg = self.config
        if not self._accepting:
            raise NotReadyError(f"model {self.model!r} is shutting down; retry shortly")
        if len(items) > cfg.queue_size:
            raise PayloadTooLargeError(
                f"{len(items)} inputs exceed the queue size ({cfg.queue_size}); split the request"
            )
        for i, item in enumerate(items):
            if item.length > cfg.max_batch_tokens:
                raise ValidationFailedError(
                    f"input {i} has {item.length} tokens, more than max_batch_tokens "
                    f"({cfg.max_batch_tokens}); truncate it",
                    details={"index": i, "tokens": item.length},
                )
        future: asyncio.Future[list[R]] = loop.create_future()
        if not items:
            future.set_result([])
            return future
        at, longest = loop.time(), max(i.length for i in items)
        spent = 0.0 if received is None else at - received
        estimate = self._admit(items, longest, deadline, priority, at, spent)
        req: _Request[R] = _Request(future, len(items), priority, deadline)
        req.admitted, req.estimate, req.longest = at, estimate, longest
        now = time.monotonic()
        cls = rank(priority)
        self._arrived[cls] = now
        due = float("inf") if deadline is None else deadline
        for i, item in enumerate(items):
            seq = next(self._seq)
            self._queue[seq] = self._classes[cls][seq] = Queued(seq, req, i, item, now, cls, due)
            if deadline is not None:
                self._dues.push(deadline, seq)
            req.queued.add(seq)
            self._load.queued(cls, item.length)
        if deadline is not None:
            req.timer = loop.call_at(deadline, self._expire, req)
        future.add_done_callback(functools.partial(self._on_request_done, req))
        self._depth_changed()
        self._wakeup.set()
        return future

    def check_room(self, inputs: int, priority: Priority = "normal") -> None:
        """Refuse now a request that will queue at least `inputs` inputs of `priority`, when
        `submit` would find no room for them (the queue's limits, or a lower class shed while a
        higher one is active): called before tokenizing, so that under overload a refused
        request costs no tokenizing. `submit` checks again with the real inputs.

        Raises:
            NotReadyError: the batcher is draining.
            OverloadedError: no room (carries retry_after).
        """
        if not self._accepting:
            raise NotReadyError(f"model {self.model!r} is shutting down; retry shortly")
        if inputs > self.config.queue_size:
            return  # never room: `submit` answers 413 (split the request), not "retry later"
        err = self._no_room(inputs, priority)
        if err is not None:
            raise self._counted(err, priority)

    async def drain(self) -> None:
        """Stop admitting (NotReadyError), finish everything queued and running, then return."""
        self._accepting = False
        self._wakeup.set()
        if self._task is None and self._queue:
            self.start()
        if self._task is not None:
            # shield: a caller's timeout around drain() must not kill the batching task.
            await asyncio.shield(self._task)
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Batcher[R]:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()

    # --- batching task ---

    async def _run(self) -> None:
        try:
            while True:
                while not self._queue:
                    if not self._accepting:
                        if self._in_flight:
                            await asyncio.gather(*self._in_flight, return_exceptions=True)
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                # Taking a slot before choosing items keeps the batch open to late arrivals
                # for as long as the backend could not start it anyway.
                await self._slots.acquire()
                try:
                    await self._wait_until_due()
                    dispatched = self._dispatch()
                except BaseException:
                    self._slots.release()
                    raise
                if not dispatched:
                    self._slots.release()
        except Exception:
            log.exception("batcher of model %r crashed; failing its queued requests", self.model)
            self._accepting = False
            for req in {e.request for e in self._queue.values()}:
                self._fail(req, InferenceError("the model's batcher failed; retry the request"))

    def _active(self) -> list[bool]:
        """Per class (by rank): whether it has arrived within the last _PRIORITY_ACTIVE_S."""
        now = time.monotonic()
        return [now - t < _PRIORITY_ACTIVE_S for t in self._arrived]

    def _mixed(self) -> bool:
        """Whether several priority classes are active."""
        return sum(self._active()) > 1

    def _full(self) -> bool:
        """Whether the queue holds enough to fill a batch, so waiting longer gains nothing."""
        return (
            len(self._queue) >= self.config.max_batch_size
            or self._load.queued_tokens >= self._load.token_cap()
        )

    async def _wait_until_due(self) -> None:
        """Return when a batch is full, the oldest item has waited max_wait, or draining (or,
        with idle_dispatch, at once when a worker is idle).

        While every worker runs a batch, a batch handed over would only wait behind them: the
        wait then lasts until shortly before the first running batch should end (when that is
        later than max_wait), so requests arriving meanwhile still join. This is where batches
        grow under load, at no cost in latency: the items could not have started earlier
        anyway. With several priority classes active, a full batch waits too, and for longer:
        until a worker is free (a batch that ends wakes the wait), so that a higher-class
        arrival meanwhile leads the next batch instead of queueing behind one chosen early."""
        idle_below = 1 if self.config.concurrent else self.config.workers
        while self._queue and self._accepting:
            full, mixed = self._full(), self._mixed()
            if full and not mixed:
                return
            if self.config.idle_dispatch and len(self._in_flight) < idle_below:
                return
            oldest = next(iter(self._queue.values()))
            due = -math.inf if full else oldest.enqueued_at + self.config.max_wait_s
            if not self.config.concurrent:
                if mixed and self._load.all_busy():
                    due = math.inf
                elif (free := self._load.free_at()) is not None:
                    due = max(due, free - _HANDOVER_S)
            delay = due - time.monotonic()
            if delay <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(delay if delay < math.inf else None):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _dispatch(self) -> bool:
        """Take the next batch off the queue and hand it to the backend; False if none."""
        self._expire_hopeless()
        entries, urgent = self._candidates()
        if not entries:
            return False
        cfg = self.config
        served = entries[0].rank
        if self._mixed():  # a batch of one class: a higher one never waits for lower inputs
            entries = [e for e in entries if e.rank == served]  # the urgent ones lead still
            urgent = min(urgent, len(entries))
        size, tokens = self._limits(served)
        picked = plan_batch(
            [e.item.length for e in entries],
            max_batch_tokens=max(tokens, entries[0].item.length),
            max_batch_size=size,
            group_by_length=cfg.group_by_length,
            max_padding_ratio=cfg.max_padding_ratio,
            urgent=urgent,
            classes=[e.rank for e in entries],
        )
        chosen = [entries[i] for i in picked]
        for e in chosen:
            self._remove(e.seq)
            e.request.queued.discard(e.seq)
        # Passed over: left behind by a batch that took a later input of its own class.
        last = max(e.key() for e in chosen if e.rank == served)
        for e in entries:
            if e.rank == served and e.seq in self._queue and e.key() < last:
                e.skips += 1
        self._depth_changed()
        batch = pad_batch([e.item for e in chosen])
        if self.metrics:
            self.metrics.observe_batch(
                self.model, batch.size, batch.padded_tokens, batch.padding_ratio
            )
        key = self._load.dispatched(batch.padded_tokens)
        task = asyncio.get_running_loop().create_task(self._run_batch(batch, chosen, key))
        self._in_flight.add(task)
        task.add_done_callback(functools.partial(self._batch_done, key))
        return True

    def _limits(self, served: int) -> tuple[int, int]:
        """Most inputs and padded tokens of the next batch, of class `served`: a
        `_MIXED_BATCH_SHARE` of the limits while a higher class is active, so that an arrival of
        it waits for at most that long (a running batch is not interrupted); the highest active
        class batches in full (nothing waits behind it that it must not delay)."""
        size, tokens = self.config.max_batch_size, self._load.token_cap()
        if any(self._active()[:served]):
            return max(1, size // _MIXED_BATCH_SHARE), max(1, tokens // _MIXED_BATCH_SHARE)
        return size, tokens

    def _candidates(self) -> tuple[list[Queued[_Request[R]]], int]:
        """The queued inputs the next batch is chosen from, in order of service, and how many
        of the first are urgent (`plan_batch`'s `urgent`).

        Only a window is looked at, so that choosing stays cheap with a deep queue: the first
        _WINDOW_BATCHES batches' worth of inputs by class and arrival and a batch's worth of the
        earliest deadlines, ordered by (class, deadline, arrival), plus any input of the first
        class whose deadline comes within two batches. Urgent: those, and the inputs of the
        first class passed over `patience` times; while a lower class waits and the first
        class's inputs fit in one batch, all of them.
        """
        cfg = self.config
        width = _WINDOW_BATCHES * cfg.max_batch_size
        window: list[Queued[_Request[R]]] = []
        for queue in self._classes:
            window.extend(itertools.islice(queue.values(), width - len(window)))
            if len(window) >= width:
                break
        # Earliest deadlines too, wherever they are queued (EDF within a class, deep queues).
        window += self._dues.earliest(self._queue, cfg.max_batch_size)
        window = list({e.seq: e for e in window}.values())
        # A request cancelled a moment ago may not have run its done-callback yet.
        for req in {e.request for e in window if e.request.future.done()}:
            self._forget(req)
        window = sorted((e for e in window if e.seq in self._queue), key=Queued.key)
        if not window or not cfg.group_by_length:
            return window, 0
        served = window[0].rank
        batch_s = self._load.batch_s() if self._predicts else None
        soon = asyncio.get_running_loop().time() + 2 * (batch_s or 0.0)
        due = {e.seq: e for e in self._dues.due_by(self._queue, soon) if e.rank == served}
        # A class whose inputs fit in one batch goes in whole while a lower class waits: its
        # few inputs are not passed over for length.
        few = len(self._classes[served]) <= self._limits(served)[0]
        lower = any(self._classes[c] for c in range(served + 1, len(PRIORITIES)))
        patience = 0 if few and lower else cfg.patience
        urgent = sorted(
            {**due, **{e.seq: e for e in window if e.rank == served and e.skips >= patience}}
            .values(),
            key=Queued.key,
        )  # fmt: skip
        if not urgent:
            return window, 0
        first = {e.seq for e in urgent}
        return urgent + [e for e in window if e.seq not in first], len(urgent)

    def _expire_hopeless(self) -> None:
        """Fail now (504) each queued request whose deadline comes before even a batch of its
        own could finish, instead of running it to answer too late."""
        if not self._predicts or not self._load.latency.ready:
            return
        start = asyncio.get_running_loop().time() + self._load.busy_s()
        full = self._load.batch_s() or 0.0  # no batch of one request runs longer
        for req in {e.request for e in self._dues.due_by(self._queue, start + full)}:
            if req.finished or not req.queued:
                continue
            own = [self._queue[seq].item.length for seq in req.queued]
            alone = self._load.latency.predict(len(own) * max(own)) or 0.0
            if req.deadline is not None and start + alone > req.deadline:
                self._expire(req)

    def _remove(self, seq: int) -> Queued[_Request[R]]:
        """Take one input off the queue (its request's `queued` is the caller's)."""
        e = self._queue.pop(seq)
        del self._classes[e.rank][seq]
        self._load.queued(e.rank, e.item.length, -1)
        return e

    def _batch_done(self, key: int, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._load.finished(key)
        self._wakeup.set()  # the backend may be idle now: a held batch need not wait longer

    async def _run_batch(self, batch: Batch, entries: list[Queued[_Request[R]]], key: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            started, results, seconds = await loop.run_in_executor(
                self._executor, self._timed_predict, batch, key
            )
        except asyncio.CancelledError:
            self._slots.release()
            for req in {e.request for e in entries}:
                self._fail(req, NotReadyError("the service stopped before this request finished"))
            raise
        except Exception:
            self._slots.release()
            log.exception("model %r: batch of %d inputs failed", self.model, batch.size)
            for req in {e.request for e in entries}:
                self._fail(req, InferenceError())
            return
        self._slots.release()
        waits = [(e.request.priority, started - e.enqueued_at) for e in entries]
        self._record(batch, seconds, waits)
        for e, result in zip(entries, results, strict=True):
            req = e.request
            if req.future.done():  # timed out or cancelled meanwhile
                continue
            req.results[e.index] = result
            req.remaining -= 1
            if req.remaining == 0:
                req.future.set_result(req.results)
                if req.estimate:
                    self._load.answered(req.estimate, loop.time() - req.admitted, req.longest)

    def _timed_predict(self, batch: Batch, key: int) -> tuple[float, Sequence[R], float]:
        """Worker-thread side: (start time, results, seconds), checking the result count."""
        started = time.monotonic()
        self._load.started(key, started)
        results = self.backend.predict(batch)
        if len(results) != batch.size:
            raise RuntimeError(f"backend returned {len(results)} results for {batch.size} inputs")
        return started, results, time.monotonic() - started

    # --- request bookkeeping ---

    def _expire(self, req: _Request[R]) -> None:
        """Deadline timer: fail the request and remove whatever of it is still queued."""
        if req.future.done():
            return
        if self.metrics:
            self.metrics.inc_timeout(self.model, req.priority)
        queued = len(req.queued)
        self._fail(
            req,
            RequestTimeoutError(
                f"the request passed its deadline with {queued} of its {req.size} inputs still "
                "queued; retry later or send fewer inputs"
            ),
        )

    def _fail(self, req: _Request[R], error: ServiceError) -> None:
        # Remove queued items first so no later batch picks them up.
        self._forget(req)
        if not req.future.done():
            req.future.set_exception(error)

    def _on_request_done(self, req: _Request[R], future: asyncio.Future[list[R]]) -> None:
        self._forget(req)

    def _forget(self, req: _Request[R]) -> None:
        """Once per request: cancel its timer, drop its queued items, count a client drop."""
        if req.finished:
            return
        req.finished = True
        if req.timer is not None:
            req.timer.cancel()
        removed = len(req.queued)
        for seq in req.queued:
            self._remove(seq)
        req.queued.clear()
        if req.future.cancelled() and self.metrics:
            self.metrics.inc_dropped(self.model, removed)
        if removed:
            self._depth_changed()
            self._wakeup.set()

    # --- admission and estimates ---

    def _admit(
        self,
        items: Sequence[WorkItem],
        longest: int,
        deadline: float | None,
        priority: Priority,
        now: float,
        spent: float,
    ) -> float | None:
        """Refuse `items` at once when they cannot be served well: no room in the queue, or in
        the class's share of it, or (a higher class active) _SHED_BATCHES mixed batches of this
        class and higher queued already -> 429 (`no_room`); the deadline has passed or is out
        of reach -> 504; the predicted latency (`longest`: tokens of the longest input), with
        the `spent` seconds since the request was received, passes the objective -> 429.
        Returns the uncalibrated estimate of seconds from now to the answer, for
        `Workload.answered` (None when nothing is estimated)."""
        cfg = self.config
        cls = rank(priority)
        err: ServiceError | None = self._no_room(len(items), priority)
        estimate = None
        if err is None and deadline is not None and deadline <= now:
            err = RequestTimeoutError("the request's deadline passed before it was queued")
        if err is None and self._predicts:
            estimate = self._load.estimate_s(cls, [i.length for i in items])
            if estimate is not None:
                wait = estimate * self._load.calibration_for(longest)
                left = None if deadline is None else deadline - now
                err = too_late(wait, left, cfg.target_latency_s, self.model, spent)
        if err is None:
            return estimate
        raise self._counted(err, priority)

    def _no_room(self, n: int, priority: Priority) -> OverloadedError | None:
        """`no_room` for `n` inputs of `priority` now: the queue's limits, and the shedding of
        a lower class while a higher one is active."""
        cfg = self.config
        shed = _SHED_BATCHES * max(1, cfg.max_batch_size // _MIXED_BATCH_SHARE)
        return no_room(
            self._load,
            priority,
            n,
            queue_size=cfg.queue_size,
            low_share=cfg.low_priority_share,
            shed=shed if any(self._active()[: rank(priority)]) else None,
            model=self.model,
        )

    def _counted(self, err: ServiceError, priority: Priority) -> ServiceError:
        """`err`, counted in the metrics as a timeout or a rejection."""
        if self.metrics:
            timeout = isinstance(err, RequestTimeoutError)
            count = self.metrics.inc_timeout if timeout else self.metrics.inc_rejected
            count(self.model, priority)
        return err

    # --- stats ---

    def _depth_changed(self) -> None:
        if self.metrics:
            self.metrics.set_queue_depth(self.model, len(self._queue))

    def _record(self, batch: Batch, seconds: float, waits: list[tuple[Priority, float]]) -> None:
        if seconds > 0:
            self._load.observe(batch.padded_tokens, batch.padding_ratio, seconds)
        if self.metrics:
            self.metrics.observe_inference_time(self.model, seconds)
            for priority, wait in waits:
                self.metrics.observe_queue_time(self.model, max(0.0, wait), priority)
