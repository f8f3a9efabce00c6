"""The running service: its models, its phase (starting -> running -> draining -> stopped) and
the path every task request takes.

    resolve model ─► tokenize (thread pool) ─► batcher.submit (admit or 429 at once, deadline)
        ─► wait for the answer or the client leaving (then its queued work is dropped)
        ─► post-process (thread pool)

Loading runs in the background after the server starts listening, so /healthz answers at once
and /readyz says 503 until every configured model is loaded and warmed up (and keeps saying 503,
naming them, when some bundle was refused). Draining stops admitting (503), lets every batcher
finish what it queued, and only then lets the server exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from fastapi import Request

from app.backend import RowOutput
from app.batching import Batcher, BatcherConfig
from app.errors import (
    ClientClosedError,
    InferenceError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
    RequestTimeoutError,
    ValidationFailedError,
)
from app.metrics import Metrics
from app.registry import LoadedModel, Registry, choose_provider
from app.schemas import Priority
from app.settings import Settings, available_cores
from app.tasks import Prepared, make_task_model

__all__ = ["Phase", "Service"]

log = logging.getLogger(__name__)

Phase = Literal["starting", "running", "draining", "stopped"]
T = TypeVar("T")

# Requests with at most this many characters of text are tokenized and post-processed on the
# event loop itself: for a sentence that takes tens of microseconds, less than the two thread
# hops it would otherwise cost (a measured share of a small model's per-request overhead).
# Longer requests go to the pool so that one big request cannot stall the loop.
INLINE_MAX_CHARS = 2048


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body has been read: only that message is left)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class Service:
    """Models, batchers and the request path of one server process.

    Args:
        settings: the service settings.
        metrics: where every metric goes.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = Registry(settings, make_task_model)
        self.phase: Phase = "starting"
        self.loading = True
        # Tokenization and post-processing; `tokenizers` releases the GIL while encoding.
        self.pool = ThreadPoolExecutor(
            max_workers=max(2, min(4, available_cores())), thread_name_prefix="tokenize"
        )
        self._loader: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # --- lifecycle ---

    @property
    def ready(self) -> bool:
        """Every configured model loaded and warmed up, none refused, not draining."""
        return self.phase == "running" and not self.loading and not self.registry.failures

    def start(self) -> None:
        """Begin loading the models in the background (on the running loop)."""
        if self._loader is None:
            self._loader = asyncio.get_running_loop().create_task(self._load_all(), name="load")

    async def _load_all(self) -> None:
        loop = asyncio.get_running_loop()
        reg = self.registry
        t0 = time.perf_counter()
        try:
            provider, why = await loop.run_in_executor(
                None, choose_provider, self.settings.provider
            )
            reg.provider = provider
            log.info("execution provider %s (%s)", provider, why)
            found = await loop.run_in_executor(None, reg.discover)
            for folder, path in found:
                if self.phase != "starting":
                    break
                model = await loop.run_in_executor(None, reg.load, folder, path)
                if model is None:
                    continue
                if self.settings.provider == "cuda" and model.backend.provider != provider:
                    reg.models.pop(model.name)
                    reg._fail(folder, path, "BERT_PROVIDER=cuda but onnxruntime could not use CUDA")
                    continue
                config = BatcherConfig.from_settings(self.settings)
                if getattr(model.backend, "continuous", False):
                    config = dataclasses.replace(
                        config,
                        max_in_flight=self.settings.max_generation_batches,
                        concurrent=True,
                    )
                model.batcher = Batcher(
                    model.backend, config, model=model.name, metrics=self.metrics
                )
                model.batcher.start()
                if model.rerun is not None:
                    model.rerun.batcher = Batcher(
                        model.rerun.backend,
                        config,
                        model=f"{model.name}:rerun",
                        metrics=self.metrics,
                    )
                    model.rerun.batcher.start()
                self.metrics.set_model_load_time(model.name, model.load_seconds)
        except Exception:
            log.exception("loading the models failed")
            reg._fail("*", self.settings.models_dir, "loading stopped on an unexpected error")
        finally:
            self.loading = False
            self.metrics.models_failed.set(len(reg.failures))
        if self.phase == "starting":
            self.phase = "running"
        seconds = time.perf_counter() - t0
        if reg.failures:
            log.error(
                "serving %d model(s); NOT ready: %d refused (%s) after %.2f s",
                len(reg.models),
                len(reg.failures),
                "; ".join(f"{f.name}: {f.reason}" for f in reg.failures.values()),
                seconds,
            )
        else:
            log.info("ready: %d model(s) in %.2f s", len(reg.models), seconds)

    async def drain(self, grace_s: float = 0.0) -> None:
        """Stop admitting and finish everything queued (waiting at least `grace_s`)."""
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain(grace_s))
        await asyncio.shield(self._drain_task)

    async def _drain(self, grace_s: float) -> None:
        if self.phase == "stopped":
            return
        self.phase = "draining"
        queued = sum(b.queue_depth for b in self._batchers())
        log.info("draining: no new work; finishing %d queued input(s)", queued)
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        batchers = [b.drain() for b in self._batchers()]
        await asyncio.gather(asyncio.sleep(grace_s), *batchers)
        # The tokenizer pool stays up: answered requests still post-process on it (close()).
        self.phase = "stopped"
        log.info("drained")

    def _batchers(self) -> list[Batcher[RowOutput]]:
        """Every batcher: each model's, and its rerun graph's."""
        found = []
        for m in self.models:
            found.append(m.batcher)
            if m.rerun is not None:
                found.append(m.rerun.batcher)
        return [b for b in found if b is not None]

    # --- models ---

    @property
    def models(self) -> list[LoadedModel]:
        return list(self.registry.models.values())

    def resolve(self, task: str | None, name: str | None) -> LoadedModel:
        """The model that answers a request for `task` (None: any) naming `name` (or not).

        Raises:
            NotReadyError: starting, draining, or the named bundle was refused at start-up.
            ModelNotFoundError: no such model, or no model of that task.
            ValidationFailedError: the model serves another task, or `name` is omitted while
                several models of the task are loaded.
        """
        if self.phase == "starting":
            raise NotReadyError("the service is starting (models are loading); retry shortly")
        if self.phase != "running":
            raise NotReadyError("the service is shutting down; retry on another instance")
        reg = self.registry
        if name is not None:
            model = reg.models.get(name)
            if model is None:
                failed = reg.failures.get(name)
                if failed is not None:
                    raise NotReadyError(
                        f"model {name!r} failed to load: {failed.reason}",
                        details={"model": name},
                    )
                raise ModelNotFoundError(
                    f"no model {name!r}; GET /v1/models lists the loaded ones",
                    details={"available": sorted(reg.models)},
                )
            if task is not None and model.task != task:
                raise ValidationFailedError(
                    f"model {name!r} is a {model.task} model, not {task}; pick a {task} model",
                    details={"model": name, "task": model.task},
                )
            return model
        candidates = [m for m in reg.models.values() if task is None or m.task == task]
        if len(candidates) == 1:
            return candidates[0]
        what = f"{task} model" if task else "model"
        if not candidates:
            raise ModelNotFoundError(
                f"no {what} is loaded", details={"available": sorted(reg.models)}
            )
        names = sorted(m.name for m in candidates)
        raise ValidationFailedError(
            f"several {what}s are loaded ({', '.join(names)}); name one in 'model'",
            details={"available": names},
        )

    def check_count(self, n: int) -> None:
        limit = self.settings.max_inputs_per_request
        if n > limit:
            raise ValidationFailedError(
                f"{n} inputs exceed the limit of {limit} per request; split the request",
                details={"inputs": n, "max_inputs_per_request": limit},
            )

    # --- the request path ---

    async def offload(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """Run `fn(*args)` in the tokenizer pool (CPU work off the event loop), or right here
        when `inline` (small work: see INLINE_MAX_CHARS)."""
        if inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    @staticmethod
    def is_small(texts: Sequence[Any]) -> bool:
        """Whether a request's texts (strings, or sequences of strings such as sentence pairs)
        are short enough to tokenize and post-process on the event loop."""
        total = 0
        for t in texts:
            parts = (t,) if isinstance(t, str) else t
            total += sum(len(p) for p in parts if isinstance(p, str))
            if total > INLINE_MAX_CHARS:
                return False
        return True

    async def infer(
        self,
        request: Request,
        model: LoadedModel,
        prepare: Callable[[], Prepared],
        *,
        inline: bool = False,
        priority: Priority = "normal",
        timeout_ms: int | None = None,
        inputs: int = 1,
    ) -> tuple[Prepared, Sequence[RowOutput]]:
        """Tokenize (on the loop when `inline`, else in the pool), queue, and wait for the rows
        of one request (in input order). Its deadline is `timeout_ms` from now, at most the
        server's request timeout; `priority` is its scheduling class. A request of `inputs`
        inputs (at least as many batch items) that the batcher has no room for is refused before
        it is tokenized.

        Timings go to `request.state.timings` (the middleware turns them into headers).

        Raises:
            ServiceError: 422 from `prepare`; 413/429/503/504 from the batcher; 500 when the
                request's batch failed; ClientClosedError when the client left.
        """
        loop = asyncio.get_running_loop()
        timeout_s = self.settings.request_timeout_s
        if timeout_ms is not None:
            timeout_s = min(timeout_s, timeout_ms / 1000.0)
        received = loop.time()
        deadline = received + timeout_s
        assert model.batcher is not None
        model.batcher.check_room(inputs, priority)
        t0 = time.monotonic()
        prepared = await self.offload(prepare, inline=inline)
        t1 = time.monotonic()
        future = model.batcher.submit(prepared.items, deadline, priority, received)
        rows = await self._wait(request, future)
        t2 = time.monotonic()
        starts = {(r.started, r.seconds) for r in rows}
        timings = request.state.timings = {
            "tokenize": t1 - t0,
            "queue": max((s for s, _ in starts), default=t1) - t1,
            "inference": sum(sec for _, sec in starts),
        }
        self.metrics.inc_tokens(model.name, prepared.tokens)
        if model.rerun is not None:
            first = rows
            rows = await self._rerun(request, model, prepared, rows, deadline, priority, inline)
            if rows is not first:
                timings["rerun"] = time.monotonic() - t2
        return prepared, rows

    async def _rerun(
        self,
        request: Request,
        model: LoadedModel,
        prepared: Prepared,
        rows: Sequence[RowOutput],
        deadline: float,
        priority: Priority,
        inline: bool,
    ) -> Sequence[RowOutput]:
        """The rows of a cascade: the inputs the served graph is unsure of (the task model's
        `unsure`: qa answers within the manifest's margin of another) run again through the
        rerun graph's batcher, under the request's deadline, their rows replaced. Where the
        rerun cannot be had (its queue full, its deadline passed, its batch failed, draining)
        the first rows stand."""
        rerun = model.rerun
        assert rerun is not None and rerun.batcher is not None
        tm = model.task_model
        unsure = await self.offload(tm.unsure, prepared, rows, rerun.spec.max_margin, inline=inline)
        if not unsure:
            return rows
        picked = [i for items in unsure for i in items]
        try:
            future = rerun.batcher.submit([prepared.items[i] for i in picked], deadline, priority)
            again = await self._wait(request, future)
        except (OverloadedError, NotReadyError, RequestTimeoutError, InferenceError) as exc:
            # The first answers stand: less sure ones, rather than none (counted, logged).
            log.warning("model %s: %d input(s) not rerun: %s", model.name, len(unsure), exc)
            self.metrics.inc_reruns(model.name, len(unsure), "skipped")
            return rows
        self.metrics.inc_reruns(model.name, len(unsure))
        out = list(rows)
        for i, row in zip(picked, again, strict=True):
            out[i] = row
        return out

    async def _wait(self, request: Request, future: asyncio.Future[list[RowOutput]]) -> Any:
        gone: asyncio.Future[Any] = asyncio.ensure_future(_client_gone(request))
        waiting: set[asyncio.Future[Any]] = {future, gone}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not future.done():
                # The batcher's done-callback removes what is still queued and counts it.
                future.cancel()
        if future.cancelled():
            raise ClientClosedError()
        return future.result()

    def close(self) -> None:
        """Release the worker threads (after the server has finished every response)."""
        self.pool.shutdown(wait=False)
