"""A small Python client of the service, sync (`Client`) and async (`AsyncClient`), over httpx.

    with Client("http://localhost:8000", api_key="...") as client:
        best = client.classify(["a gripping film"]).results[0].labels[0]
        batch_jobs = client.with_options(priority="low", timeout_ms=5000)  # same connections

Answers are the service's own pydantic response models (`app.schemas`); failures raise one
`ClientError` hierarchy that mirrors the service's error body. Only httpx, pydantic and the
standard library are imported (no FastAPI, no uvicorn), so other services can use it freely.

Every call runs through one sans-IO core, `core.Core.exchange`: a generator that builds the request,
yields it (or a wait) and receives the response (or the transport error), and owns retries,
backoff, the deadline and the parsing of answers and errors. `Client` and `AsyncClient` differ
only in how they drive it: a blocking or an awaited send and sleep.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Self

import httpx

from app.client.core import Call, Calls, Core, Inputs, Outcome, RetryPolicy, Sleep, Texts
from app.client.errors import (
    BadRequestError,
    ClientError,
    ClientTimeoutError,
    ConnectionFailedError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerError,
    T,
    UnauthorizedError,
    UnexpectedResponseError,
    ValidationFailedError,
)
from app.schemas import (
    ClassifyResponse,
    FillMaskResponse,
    ModelsResponse,
    Priority,
    QAResponse,
    Status,
    SummarizeResponse,
    TokenClassifyResponse,
    TokenizeResponse,
    TranslateResponse,
)

__all__ = [
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ClientError",
    "ClientTimeoutError",
    "ConnectionFailedError",
    "NotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "ValidationFailedError",
]


class Client:
    """Blocking client; one connection pool per instance (use it as a context manager, or
    call `close()`). Thread-safe, like the httpx client under it.

    Args:
        base_url: the service, e.g. "http://bert:8000".
        api_key: sent as `Authorization: Bearer <key>` when given.
        connect_timeout, read_timeout: seconds per send (cut to the deadline's time left).
        retry: the retry policy (default `RetryPolicy()`: 3 retries, 60 s deadline).
        headers: extra headers for every request (e.g. a fixed `x-request-id`).
        transport: an httpx transport (tests: `httpx.MockTransport`).
        sleep, clock: how to wait and tell the time (tests: fakes, so no real waiting).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = Core(
            base_url,
            api_key=api_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=retry,
            headers=headers,
            clock=clock,
        )
        self._http = httpx.Client(transport=transport, timeout=self._core.timeout())
        self._sleep = sleep

    def _run(self, call: Call[T]) -> T:
        steps = self._core.exchange(call)
        outcome: Outcome = None
        try:
            while True:
                try:
                    step = steps.send(outcome)
                except StopIteration as done:
                    result: T = done.value
                    return result
                if isinstance(step, Sleep):
                    self._sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = self._http.send(step)
                except httpx.TransportError as exc:
                    outcome = exc
        finally:
            steps.close()

    def models(self) -> ModelsResponse:
        """Loaded bundles (task, labels, variant, provider, figures) and refused ones."""
        return self._run(Calls.models())

    def classify(
        self,
        inputs: Inputs,
        *,
        model: str | None = None,
        top_k: int | None = None,
        truncate: bool | None = None,
    ) -> ClassifyResponse:
        """Labels with scores per input, best first; `inputs` is a text, texts or pairs."""
        return self._run(Calls.classify(inputs, model, top_k, truncate))

    def qa(
        self,
        question: str | Sequence[tuple[str, str]],
        context: str | None = None,
        *,
        model: str | None = None,
        top_k: int | None = None,
        max_answer_length: int | None = None,
        allow_no_answer: bool | None = None,
    ) -> QAResponse:
        """Answer spans: `qa(question, context)` or `qa([(question, context), ...])`."""
        return self._run(
            Calls.qa(question, context, model, top_k, max_answer_length, allow_no_answer)
        )

    def fill_mask(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        top_k: int | None = None,
        truncate: bool | None = None,
    ) -> FillMaskResponse:
        """Candidate tokens for every mask token, and the filled sentence."""
        return self._run(Calls.fill_mask(inputs, model, top_k, truncate))

    def token_classify(
        self, inputs: Texts, *, model: str | None = None, truncate: bool | None = None
    ) -> TokenClassifyResponse:
        """Entities (label, text, character start/end, score) per input."""
        return self._run(Calls.token_classify(inputs, model, truncate))

    def summarize(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        max_sentences: int | None = None,
        truncate: bool | None = None,
    ) -> SummarizeResponse:
        """Extractive summaries: chosen sentences (document order) with offsets and scores."""
        return self._run(Calls.summarize(inputs, model, max_sentences, truncate))

    def translate(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        truncate: bool | None = None,
    ) -> TranslateResponse:
        """Translations (BERT2BERT): greedy with beam_size 1, else beam search."""
        return self._run(Calls.translate(inputs, model, beam_size, max_new_tokens, truncate))

    def tokenize(self, inputs: Inputs, *, model: str | None = None) -> TokenizeResponse:
        """Tokens with ids and character offsets, as the model sees them."""
        return self._run(Calls.tokenize(inputs, model))

    def health(self) -> Status:
        """`GET /healthz` (one send, no retries)."""
        return self._run(Calls.health())

    def ready(self) -> Status:
        """`GET /readyz` (one send); raises `NotReadyError` (details: phase, failed) if not."""
        return self._run(Calls.ready())

    def with_options(
        self, *, priority: Priority | None = None, timeout_ms: int | None = None
    ) -> Self:
        """A client on the same connection pool whose task calls are sent with these
        scheduling options: `priority` ("high", "normal", "low": higher is served first, "low"
        is refused first under overload) and `timeout_ms` (answered 504 at once when the
        service cannot meet it). Closing either closes the pool of both."""
        other = copy.copy(self)
        other._core = self._core.with_scheduling(priority, timeout_ms)
        return other

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`: the same arguments (`transport` an async one, `sleep` a
    coroutine function), methods and errors; close with `async with` or `await aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = Core(
            base_url,
            api_key=api_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=retry,
            headers=headers,
            clock=clock,
        )
        self._http = httpx.AsyncClient(transport=transport, timeout=self._core.timeout())
        self._sleep = sleep

    async def _run(self, call: Call[T]) -> T:
        steps = self._core.exchange(call)
        outcome: Outcome = None
        try:
            while True:
                try:
                    step = steps.send(outcome)
                except StopIteration as done:
                    result: T = done.value
                    return result
                if isinstance(step, Sleep):
                    await self._sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = await self._http.send(step)
                except httpx.TransportError as exc:
                    outcome = exc
        finally:
            steps.close()

    async def models(self) -> ModelsResponse:
        return await self._run(Calls.models())

    async def classify(
        self,
        inputs: Inputs,
        *,
        model: str | None = None,
        top_k: int | None = None,
        truncate: bool | None = None,
    ) -> ClassifyResponse:
        return await self._run(Calls.classify(inputs, model, top_k, truncate))

    async def qa(
        self,
        question: str | Sequence[tuple[str, str]],
        context: str | None = None,
        *,
        model: str | None = None,
        top_k: int | None = None,
        max_answer_length: int | None = None,
        allow_no_answer: bool | None = None,
    ) -> QAResponse:
        return await self._run(
            Calls.qa(question, context, model, top_k, max_answer_length, allow_no_answer)
        )

    async def fill_mask(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        top_k: int | None = None,
        truncate: bool | None = None,
    ) -> FillMaskResponse:
        return await self._run(Calls.fill_mask(inputs, model, top_k, truncate))

    async def token_classify(
        self, inputs: Texts, *, model: str | None = None, truncate: bool | None = None
    ) -> TokenClassifyResponse:
        return await self._run(Calls.token_classify(inputs, model, truncate))

    async def summarize(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        max_sentences: int | None = None,
        truncate: bool | None = None,
    ) -> SummarizeResponse:
        return await self._run(Calls.summarize(inputs, model, max_sentences, truncate))

    async def translate(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        truncate: bool | None = None,
    ) -> TranslateResponse:
        return await self._run(Calls.translate(inputs, model, beam_size, max_new_tokens, truncate))

    async def tokenize(self, inputs: Inputs, *, model: str | None = None) -> TokenizeResponse:
        return await self._run(Calls.tokenize(inputs, model))

    async def health(self) -> Status:
        return await self._run(Calls.health())

    async def ready(self) -> Status:
        return await self._run(Calls.ready())

    def with_options(
        self, *, priority: Priority | None = None, timeout_ms: int | None = None
    ) -> Self:
        """As `Client.with_options`: same pool, these scheduling options on task calls."""
        other = copy.copy(self)
        other._core = self._core.with_scheduling(priority, timeout_ms)
        return other

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
