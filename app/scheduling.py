"""What the batcher decides with: its limits (`BatcherConfig`), which queued inputs form the next
batch (`plan_batch`), in what order they are considered (priority, then deadline), and how long
a batch takes (`LatencyModel`).

Pure functions and a small estimator, no asyncio: `app.batching` owns the queue and the clock.

Order of service. Every queued input has a priority class (`PRIORITIES`, "high" first) and a
deadline. The batch is anchored on the first input by (class, deadline, arrival) - strict
priority, earliest deadline first within a class, FIFO among equal deadlines - and filled with
the inputs whose lengths are closest to the anchor's (fewer padded tokens), the anchor's class
before lower ones (never in place of a higher-class input the batch passed over). Grouping by
length passes some inputs over; `patience` bounds that: an input of the anchor's class that has
been passed over `patience` times is *urgent* and goes into the next batch ahead of any
neighbour by length (so with patience 1 no input of the served class waits for more than two
batches besides the one running; 0 is plain FIFO). While a lower class waits, a higher class
whose queued inputs fit in one batch is urgent whole: a few high-priority inputs are never
passed over for their length (and while several classes are active, `app.batching` keeps each
batch to one class, and a lower class's batches to a thirty-second of the limits). Lower
classes are not protected by patience: under overload they wait, and admission refuses them
first (`no_room`: while a higher class is active, a lower one may queue only a few small
batches' worth before it is shed with 429).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, get_args

from app.errors import OverloadedError, RequestTimeoutError
from app.schemas import Priority
from app.settings import Settings
from bundle.batch import WorkItem

__all__ = [
    "PRIORITIES", "BatcherConfig", "Deadlines", "LatencyModel", "Lateness", "Priority", "Queued",
    "Workload", "no_room", "plan_batch", "rank", "retry_hint", "too_late",
]  # fmt: skip

T = TypeVar("T")
Q = TypeVar("Q")

PRIORITIES: tuple[Priority, ...] = get_args(Priority)
_UNBOUNDED = 2**31  # tokens_within when time does not grow with tokens
# Retry-After bounds (seconds): below 1 s clients would hammer us; above 60 s is not a hint.
_MIN_RETRY_S, _MAX_RETRY_S = 1.0, 60.0


def retry_hint(seconds: float) -> float:
    """A Retry-After for a queue expected to have room in `seconds`, within sane bounds."""
    return min(_MAX_RETRY_S, max(_MIN_RETRY_S, seconds))


def rank(priority: Priority) -> int:
    """0 for the most urgent class ("high"), counting up."""
    return PRIORITIES.index(priority)


@dataclass(slots=True, eq=False)
class Queued(Generic[Q]):
    """One queued input: the request (of type Q) and position it answers, when it arrived, its
    place in the order of service (class, deadline, arrival), and how often a batch passed it
    over."""

    seq: int
    request: Q
    index: int
    item: WorkItem
    enqueued_at: float  # time.monotonic()
    rank: int = 1
    due: float = float("inf")  # the request's deadline (loop time), inf without one
    skips: int = 0

    def key(self) -> tuple[int, float, int]:
        return self.rank, self.due, self.seq


@dataclass(frozen=True)
class BatcherConfig:
    """Limits of one model's batcher.

    Args:
        max_batch_tokens: token budget per batch: batch size x padded length <= this.
        max_batch_size: most items per batch.
        max_wait_s: longest the oldest queued item waits for its batch to fill.
        queue_size: most items queued (not yet dispatched); more are refused with 429.
        max_in_flight: batches handed to the backend and not finished, with one worker: 2 =
            one runs while the next is prepared. With more workers: workers + max_in_flight - 1
            (with concurrent: max_in_flight, all running).
        workers: batches that run at the same time, each in its own worker thread (a shared
            onnxruntime session runs concurrent calls). On a CPU with few cores, two
            single-threaded runs side by side beat one two-threaded run for a small model: no
            run waits at a thread barrier for a core the event loop holds.
        group_by_length: pick items of similar length (True) or strictly FIFO (False).
        max_padding_ratio: with group_by_length, an item that would make padding more than this
            share of the batch's tokens is left for a later batch (1.0: no limit).
        idle_dispatch: when no batch is running, send what is queued at once instead of waiting
            up to max_wait for more (waiting only pays while the backend is busy; a lone
            request then pays no batching delay). Off: always wait as described above.
        concurrent: the backend runs the batches it is handed together (continuous batching
            of generation: ``app.generation.ContinuousDecoder``): each of the max_in_flight
            batches gets its own worker thread, and a batch is handed over once it is due,
            not held back while others run. Batch times then overlap: nothing is predicted
            (deadlines are kept by their timers; target_latency_s is unused).
        patience: batches of its class that may pass an input over (length grouping) before
            it must go in the next one (0: FIFO; see `app.scheduling`).
        target_latency_s: latency objective or None: batches run within a quarter of it, and
            requests predicted to finish later are refused (429, Retry-After).
        low_priority_share: share of queue_size that "low" priority inputs may fill.
    """

    max_batch_tokens: int = 8192
    max_batch_size: int = 32
    max_wait_s: float = 0.005
    queue_size: int = 1024
    max_in_flight: int = 2
    workers: int = 1
    group_by_length: bool = True
    max_padding_ratio: float = 1.0
    idle_dispatch: bool = False
    concurrent: bool = False
    patience: int = 4
    target_latency_s: float | None = None
    low_priority_share: float = 0.5

    def __post_init__(self) -> None:
        limits = ("max_batch_tokens", "max_batch_size", "queue_size", "max_in_flight", "workers")
        for name in limits:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"patience must be 0 or more, got {self.patience}")
        if self.target_latency_s is not None and self.target_latency_s <= 0:
            raise ValueError(f"target_latency_s must be > 0, got {self.target_latency_s}")
        if not 0 < self.low_priority_share <= 1:
            raise ValueError(f"low_priority_share must be in (0, 1], got {self.low_priority_share}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must be 0 or more, got {self.max_wait_s}")
        if not 0 <= self.max_padding_ratio <= 1:
            raise ValueError(f"max_padding_ratio must be in [0, 1], got {self.max_padding_ratio}")

    @classmethod
    def from_settings(cls, settings: Settings) -> BatcherConfig:
        """The batcher limits configured in `settings`."""
        return cls(
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            queue_size=settings.queue_size,
            max_in_flight=settings.max_batch_in_flight,
            workers=settings.inference_workers,
            max_padding_ratio=settings.max_padding_ratio,
            idle_dispatch=settings.idle_dispatch,
            patience=settings.grouping_patience,
            target_latency_s=(
                None if settings.target_p99_ms is None else settings.target_p99_ms / 1000.0
            ),
        )


def plan_batch(
    lengths: Sequence[int],
    *,
    max_batch_tokens: int,
    max_batch_size: int,
    group_by_length: bool = True,
    max_padding_ratio: float = 1.0,
    urgent: int = 0,
    classes: Sequence[int] | None = None,
) -> list[int]:
    """Choose the next batch from the queue.

    Args:
        lengths: token count of every queued item, in order of service (index 0 is served
            first: the oldest in a FIFO queue).
        max_batch_tokens: the batch must satisfy len(chosen) x max(chosen lengths) <= this.
        max_batch_size: the batch holds at most this many items.
        group_by_length: False = FIFO: take items in order and stop at the first that does not
            fit (it leads the next batch). True = take the `urgent` items first, then fill with
            the items whose lengths are closest to item 0's (ties: earlier first), skipping any
            that would break the budget.
        max_padding_ratio: with group_by_length, also skip a non-urgent item that would make
            padding more than this share of the batch (padded tokens - real tokens) / padded
            tokens. A batch of the queue's diverse lengths padded to its longest wastes compute
            that on a CPU costs as much as real tokens; the skipped items lead a later batch.
        urgent: the first `urgent` items must go in (in order, each that fits the budget),
            whatever their padding: they have waited long enough.
        classes: priority class of each item (0 first); fill takes item 0's class before lower
            ones, and no item of a lower class once one of a higher class was passed over (for
            the budget or the padding cap): a lower class never takes its place. None: one
            class.

    Returns:
        Indices into `lengths`, always including 0 when lengths[0] <= max_batch_tokens.

    Why nearest-to-the-first: a padded batch costs size x longest, so mixing a 10-token and a
    500-token input wastes 490 tokens of compute. Anchoring on the first item keeps the order of
    service (every batch takes its head), while picking neighbours by length gives most of the
    padding saving of fully length-sorted batches; `urgent` bounds how often an item of odd
    length can be passed over. The cost, a sort of at most queue_size keys per batch, is
    negligible next to inference.
    """
    if not lengths:
        return []
    order: Sequence[int] = range(len(lengths))
    ranks = classes if classes is not None else [0] * len(lengths)
    if group_by_length:
        anchor = lengths[0]
        first = range(min(urgent, len(lengths)))
        rest = sorted(
            range(len(first), len(lengths)), key=lambda i: (ranks[i], abs(lengths[i] - anchor), i)
        )
        order = [*first, *rest]
    chosen: list[int] = []
    padded = real = 0
    passed = math.inf  # the highest class (lowest number) of an item passed over
    for n, i in enumerate(order):
        if ranks[i] > passed:
            break  # a lower class never takes the place of a higher one passed over
        width = max(padded, lengths[i])
        if (len(chosen) + 1) * width > max_batch_tokens:
            if not group_by_length:
                break
            passed = min(passed, ranks[i])
            continue
        padding = 1 - (real + lengths[i]) / ((len(chosen) + 1) * width)
        if chosen and group_by_length and n >= urgent and padding > max_padding_ratio:
            passed = min(passed, ranks[i])
            continue
        chosen.append(i)
        padded, real = width, real + lengths[i]
        if len(chosen) == max_batch_size:
            break
    return chosen


class LatencyModel:
    """Run time of one batch as a line in its padded tokens, fitted over the recent batches:
    ``seconds = fixed + per_token x tokens`` (least squares; BentoML's adaptive batcher fits the
    same kind of line to decide what it can still serve in time).

    Until `min_batches` batches are seen, nothing is predicted (None). While the recent batches
    all have about the same token count, the line's slope is not identifiable and the fit falls
    back to a proportional one (fixed = 0: on a CPU compute grows with tokens); where the fitted
    slope is not positive, time does not grow with tokens and the model is their mean time
    (per_token = 0). A negative intercept is refitted as proportional.

    Args:
        window: batches the fit looks back over (older ones are forgotten: the machine's load
            changes).
        min_batches: batches seen before the model predicts.
    """

    def __init__(self, window: int = 64, min_batches: int = 4) -> None:
        if window < 2 or not 1 <= min_batches <= window:
            raise ValueError("need window >= 2 and 1 <= min_batches <= window")
        self.min_batches = min_batches
        self._points: deque[tuple[int, float]] = deque(maxlen=window)
        self.fixed = 0.0
        self.per_token = 0.0

    @property
    def ready(self) -> bool:
        return len(self._points) >= self.min_batches

    def observe(self, tokens: int, seconds: float) -> None:
        """Add one finished batch (padded tokens, wall seconds) and refit."""
        if tokens <= 0 or seconds <= 0:
            return
        self._points.append((tokens, seconds))
        n = len(self._points)
        mean_x = sum(x for x, _ in self._points) / n
        mean_y = sum(y for _, y in self._points) / n
        var = sum((x - mean_x) ** 2 for x, _ in self._points)
        if n >= 3 and var > (0.05 * mean_x) ** 2 * n:
            slope = sum((x - mean_x) * (y - mean_y) for x, y in self._points) / var
            if slope <= 0:
                self.per_token, self.fixed = 0.0, mean_y
                return
            if mean_y - slope * mean_x >= 0:
                self.per_token, self.fixed = slope, mean_y - slope * mean_x
                return
        self.per_token, self.fixed = mean_y / mean_x, 0.0

    def predict(self, tokens: float, batches: int = 1) -> float | None:
        """Seconds for `batches` batches holding `tokens` padded tokens in all; None before
        `min_batches` observations."""
        if not self.ready:
            return None
        return batches * self.fixed + tokens * self.per_token

    def tokens_within(self, seconds: float) -> int | None:
        """Most padded tokens one batch may hold to run within `seconds` (at least 1); None
        before `min_batches` observations."""
        if not self.ready:
            return None
        if self.per_token == 0:
            return _UNBOUNDED if self.fixed <= seconds else 1
        return max(1, math.floor((seconds - self.fixed) / self.per_token + 1e-9))


@dataclass(slots=True)
class _Flight:
    """A batch handed to the backend: its padded tokens, and when a worker began it
    (time.monotonic, written by the worker thread; None while it waits for one)."""

    tokens: int
    started: float | None = None


class Lateness:
    """How late recent answers came against their estimates: the 99th percentile of actual /
    estimated time over the last 1,024 answers, each weighted by its estimate (`scale`, at least
    1), refitted every 16 answers. A p99 latency objective then holds for 99 requests in 100,
    not for the average one, and the scale is set by the requests whose estimate comes near
    the objective, not by those of a few milliseconds that waited for one batch."""

    QUANTILE, WINDOW, REFIT = 0.99, 1024, 16

    def __init__(self) -> None:
        self._ratios: deque[tuple[float, float]] = deque(maxlen=self.WINDOW)
        self.answers = 0
        self.scale = 1.0

    def add(self, estimate_s: float, actual_s: float) -> None:
        self._ratios.append((actual_s / estimate_s, estimate_s))
        self.answers += 1
        if self.answers % self.REFIT == 0:
            ranked = sorted(self._ratios, reverse=True)  # the largest ratios first
            allowed, late = (1 - self.QUANTILE) * sum(w for _, w in ranked), 0.0
            for ratio, weight in ranked:
                late += weight
                if late > allowed:  # a scale below this one leaves more than the share late
                    self.scale = max(1.0, ratio)
                    break


class Workload:
    """What one batcher has taken on: queued items and tokens per priority class, the batches
    handed to the backend (and when each started), and what they will cost by the learned
    `LatencyModel`. The one estimate of time the batcher uses: when a worker comes free
    (`free_at`), how long the work in flight lasts (`busy_s`), when a request would be answered
    (`estimate_s`, times `calibration_for` its length), how long a backlog takes to clear
    (`clear_s`).

    Args:
        max_batch_size, max_batch_tokens, workers: the batcher's limits (`BatcherConfig`);
            workers = batches that run at the same time.
        target_s: the latency objective, or None; with one, `token_cap` cuts batches to run
            within a quarter of it.
    """

    _SMOOTHING = 0.2  # weight of the newest batch in the padding average
    # Answers of one length group (longest input, by powers of two) that its own lateness
    # needs before it replaces the lateness of all answers.
    _GROUP_ANSWERS = 64

    def __init__(
        self, *, max_batch_size: int, max_batch_tokens: int, workers: int, target_s: float | None
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.workers = workers
        self.target_s = target_s
        self.latency = LatencyModel()
        self.items = [0] * len(PRIORITIES)  # queued items per class
        self.tokens = [0] * len(PRIORITIES)  # their real tokens
        self._flights: dict[int, _Flight] = {}  # batches handed over and not finished
        self._keys = itertools.count()
        self.padding = 1.0  # smoothed padded / real tokens of recent batches
        self._late = Lateness()  # of all answers
        self._late_by_length: dict[int, Lateness] = {}  # by longest input, in powers of two

    @property
    def calibration(self) -> float:
        """How late answers of any length came (`Lateness.scale`)."""
        return self._late.scale

    def calibration_for(self, longest: int) -> float:
        """The scale for the estimate of a request whose longest input has `longest` tokens:
        the lateness of requests of its length group once it has answers enough, else of all.
        Inputs of odd length come later than their estimates say (length grouping passes them
        over up to `patience` times, which the estimate does not count): measured on 2 cores,
        128-token inputs among SST-2 sentences came p99 3.3x their estimates, the sentences
        1.5-1.8x; one scale for both refused sentences that would have been in time."""
        group = self._late_by_length.get(longest.bit_length())
        return group.scale if group and group.answers >= self._GROUP_ANSWERS else self._late.scale

    @property
    def queued_tokens(self) -> int:
        return sum(self.tokens)

    def queued(self, cls: int, tokens: int, sign: int = 1) -> None:
        """Add (sign +1) or remove (-1) one queued item of class `cls`."""
        self.items[cls] += sign
        self.tokens[cls] += sign * tokens

    def dispatched(self, padded_tokens: int) -> int:
        """A batch handed to the backend; returns its key for `started` and `finished`."""
        key = next(self._keys)
        self._flights[key] = _Flight(padded_tokens)
        return key

    def started(self, key: int, at: float) -> None:
        """The backend began batch `key` at `at` (time.monotonic; from the worker thread)."""
        flight = self._flights.get(key)  # gone if the batch was cancelled before it began
        if flight is not None:
            flight.started = at

    def finished(self, key: int) -> None:
        """Batch `key` is done (answered or failed)."""
        del self._flights[key]

    def observe(self, padded_tokens: int, padding_ratio: float, seconds: float) -> None:
        """Learn from one finished batch."""
        self.latency.observe(padded_tokens, seconds)
        if padding_ratio < 1:
            self.padding += self._SMOOTHING * (1 / (1 - padding_ratio) - self.padding)

    def token_cap(self) -> int:
        """Padded tokens one batch may hold: max_batch_tokens, cut with a latency objective so
        that a batch runs within a quarter of it."""
        if self.target_s is not None:
            within = self.latency.tokens_within(self.target_s / 4)
            if within is not None:
                return min(self.max_batch_tokens, within)
        return self.max_batch_tokens

    def batch_s(self) -> float | None:
        """Predicted seconds of a full batch (None before the latency model is ready)."""
        return self.latency.predict(self.token_cap())

    def free_at(self) -> float | None:
        """When (time.monotonic) the first busy worker should come free; None when a worker
        is free now or before the latency model is ready."""
        flights = list(self._flights.values())
        running = [(f.started, f.tokens) for f in flights if f.started is not None]
        if len(running) < self.workers or not self.latency.ready:
            return None
        return min(start + (self.latency.predict(tokens) or 0.0) for start, tokens in running)

    def all_busy(self) -> bool:
        """Whether every worker runs a batch (or one waits for a worker)."""
        return len(self._flights) >= self.workers

    def busy_s(self) -> float:
        """Predicted seconds until the batches in flight have finished, per worker, less what
        the running ones have already run (0 before the latency model is ready)."""
        flights = list(self._flights.values())
        total = self.latency.predict(sum(f.tokens for f in flights), batches=len(flights))
        if not total:
            return 0.0
        now = time.monotonic()
        elapsed = sum(now - f.started for f in flights if f.started is not None)
        return max(0.0, total - elapsed) / self.workers

    def estimate_s(self, cls: int, lengths: Sequence[int]) -> float | None:
        """Estimated seconds until items of class `cls` with these lengths, queued now, are
        answered: the batches in flight, then the queued items of their class and higher ones,
        then their own. Uncalibrated: times `calibration_for` their length, it is what most
        requests see. None before the latency model is ready."""
        if not self.latency.ready:
            return None
        count = len(lengths) + sum(self.items[: cls + 1])
        padded = (sum(lengths) + sum(self.tokens[: cls + 1])) * self.padding
        batches = max(-(-count // self.max_batch_size), math.ceil(padded / self.token_cap()))
        queued = self.latency.predict(padded, batches) or 0.0
        return self.busy_s() + queued / self.workers

    def clear_s(self, items: int) -> float | None:
        """Predicted seconds until `items` of the queued inputs (of their mean length) have been
        served; None before the latency model is ready or with nothing queued."""
        queued = sum(self.items)
        if not self.latency.ready or not queued:
            return None
        padded = items * self.queued_tokens / queued * self.padding
        batches = max(1, -(-items // self.max_batch_size))
        return (self.latency.predict(padded, batches) or 0.0) / self.workers

    def answered(self, estimate_s: float, actual_s: float, longest: int = 1) -> None:
        """Learn from one answered request (its longest input `longest` tokens) how far its
        `estimate_s` (uncalibrated, at admission) was off. Estimates count batch time and what
        is queued ahead, not inputs that length grouping lets overtake, batches that run long or
        the event loop's own work: `calibration_for` scales them by how late answers came.
        (Learning from calibrated estimates instead feeds the scale back into itself: a high
        one makes answers look early, so the next one is low, and so on.)"""
        if estimate_s <= 0:
            return
        self._late.add(estimate_s, actual_s)
        self._late_by_length.setdefault(longest.bit_length(), Lateness()).add(estimate_s, actual_s)


class Deadlines:
    """The deadlines of queued inputs, as a heap of (deadline, seq): finds those due by a time
    while visiting only them. Inputs that left the queue are not removed here; their rows are
    dropped when met (and the heap is rebuilt when they are most of it)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []

    def push(self, deadline: float, seq: int) -> None:
        heapq.heappush(self._heap, (deadline, seq))

    def earliest(self, queued: Mapping[int, T], k: int) -> list[T]:
        """The entries of `queued` with the `k` earliest deadlines, earliest first (a walk of
        the heap from its root: O(k log k), whatever the queue's depth)."""
        heap, found = self._heap, list[T]()
        frontier = [(heap[0], 0)] if heap else []
        while frontier and len(found) < k:
            _, i = heapq.heappop(frontier)
            entry = queued.get(heap[i][1])
            if entry is not None:
                found.append(entry)
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
        return found

    def due_by(self, queued: Mapping[int, T], t: float) -> list[T]:
        """The entries of `queued` (by seq) whose deadline is at or before `t`."""
        heap = self._heap
        if len(heap) > 2 * len(queued) + 64:  # mostly stale rows
            heap[:] = [row for row in heap if row[1] in queued]
            heapq.heapify(heap)
        while heap and heap[0][1] not in queued:
            heapq.heappop(heap)
        found, stack = [], [0]
        while stack:
            i = stack.pop()
            if i < len(heap) and heap[i][0] <= t:
                entry = queued.get(heap[i][1])
                if entry is not None:
                    found.append(entry)
                stack += (2 * i + 1, 2 * i + 2)
        return found


def no_room(
    load: Workload,
    priority: Priority,
    n: int,
    *,
    queue_size: int,
    low_share: float,
    shed: int | None,
    model: str,
) -> OverloadedError | None:
    """Why `n` inputs of class `priority` find no room in the queue that `load` counts (429
    with Retry-After), or None: the queue would hold more than `queue_size` inputs, or "low"
    more than its `low_share` of it; or, with `shed` set (a higher class is active), more than
    `shed` inputs of this class and higher would be queued, so a lower class is refused rather
    than left waiting behind a higher one (a request with nothing ahead of it is admitted)."""
    queued = sum(load.items)
    limit = max(1, int(queue_size * low_share)) if priority == "low" else queue_size
    if queued + n > limit:
        share = "" if limit == queue_size else f"; {priority} priority may use {limit}"
        return OverloadedError(
            f"model {model!r} has {queued} inputs queued (limit {queue_size}{share}); retry later",
            retry_after=retry_hint(load.clear_s(queued + n - limit) or 0.0),
        )
    ahead = sum(load.items[: rank(priority) + 1])  # served before these or alike
    if shed is not None and ahead and ahead + n > shed:
        return OverloadedError(
            f"model {model!r} is serving higher-priority requests first and has {ahead} inputs "
            f"queued ahead of these {priority}-priority ones (at most {shed} meanwhile); retry "
            "later",
            retry_after=retry_hint(load.clear_s(ahead + n - shed) or 0.0),
        )
    return None


def too_late(
    wait_s: float, left_s: float | None, target_s: float | None, model: str, spent_s: float = 0.0
) -> RequestTimeoutError | OverloadedError | None:
    """Why a request predicted to be answered in `wait_s` is refused now, or None: 504 when
    that is past its deadline (`left_s` from now), 429 with Retry-After when it is past the
    latency objective `target_s` counted from its receipt (`spent_s` ago: reading and
    tokenizing it)."""
    if left_s is not None and wait_s > left_s:
        return RequestTimeoutError(
            f"the request cannot be answered within its deadline: what is queued ahead of it "
            f"and its own inputs take about {wait_s * 1000:.0f} ms, and "
            f"{max(0.0, left_s) * 1000:.0f} ms are left; retry later, with a longer timeout_ms "
            "or a higher priority",
            details={"predicted_ms": round(wait_s * 1000)},
        )
    if target_s is not None and spent_s + wait_s > target_s:
        return OverloadedError(
            f"model {model!r} would answer in about {(spent_s + wait_s) * 1000:.0f} ms, past "
            f"its latency objective of {target_s * 1000:.0f} ms; retry later",
            retry_after=retry_hint(spent_s + wait_s - target_s),
        )
    return None
