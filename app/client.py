"""A small Python client of the service, sync (`Client`) and async (`AsyncClient`), over httpx.

    with Client("http://localhost:8000", api_key="...") as client:
        best = client.classify(["a gripping film"]).results[0].labels[0]

Answers are the service's own pydantic response models (`app.schemas`); failures raise one
`ClientError` hierarchy that mirrors the service's error body. Only httpx, pydantic and the
standard library are imported (no FastAPI, no uvicorn), so other services can use it freely.

Every call runs through one sans-IO core, `_Core.exchange`: a generator that builds the request,
yields it (or a wait) and receives the response (or the transport error), and owns retries,
backoff, the deadline and the parsing of answers and errors. `Client` and `AsyncClient` differ
only in how they drive it: a blocking or an awaited send and sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeAlias, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from app.schemas import (
    ClassifyResponse,
    ErrorResponse,
    FillMaskResponse,
    ModelsResponse,
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

T = TypeVar("T", bound=BaseModel)

# A text, a list of texts, or a list of (text, text_pair) pairs.
Inputs: TypeAlias = str | Sequence[str] | Sequence[tuple[str, str]]
Texts: TypeAlias = str | Sequence[str]


# --- errors --------------------------------------------------------------------------------------


class ClientError(Exception):
    """Base of every error the client raises.

    Attributes:
        status: the HTTP status, or None when no answer came (connection failure, timeout).
        type: the service's machine-readable error type (e.g. "model_not_found"), or the
            client's own ("connection_error", "client_timeout", "invalid_response", "http_error"
            for a body that is not the service's error shape).
        message: one sentence from the service (or the client).
        details: the service's optional `details` (e.g. per-field validation errors).
        request_id: the answer's `x-request-id`, to find the request in the service's logs.
        retry_after: seconds from the answer's `Retry-After` header, when it sent one.
    """

    default_type: ClassVar[str] = "http_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        details: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type or self.default_type
        self.message = message
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        head = f"{self.status} {self.type}" if self.status is not None else self.type
        tail = f" (request id {self.request_id})" if self.request_id else ""
        return f"{head}: {self.message}{tail}"


class ConnectionFailedError(ClientError):
    """No answer: the connection could not be made, or broke (retried; raised when spent)."""

    default_type = "connection_error"


class ClientTimeoutError(ClientError):
    """No answer in time: the read timeout or the call's deadline passed (not retried)."""

    default_type = "client_timeout"


class UnexpectedResponseError(ClientError):
    """A success status whose body is not the expected answer (a proxy, another service)."""

    default_type = "invalid_response"


class BadRequestError(ClientError):
    """400: the body could not be read."""


class UnauthorizedError(ClientError):
    """401: missing or wrong API key."""


class NotFoundError(ClientError):
    """404: unknown model (type "model_not_found") or path."""


class PayloadTooLargeError(ClientError):
    """413: the body, or the number of inputs, is over the service's limit."""


class ValidationFailedError(ClientError):
    """422: invalid input; `details` lists `{loc, msg, type}` per problem."""


class OverloadedError(ClientError):
    """429: the model's queue is full (retried after `Retry-After`; raised when spent)."""


class ServerError(ClientError):
    """5xx: the service failed (500 inference error, and the classes below)."""


class NotReadyError(ServerError):
    """503: starting, draining, or a bundle was refused (retried; raised when spent)."""


class RequestTimeoutError(ServerError):
    """504: the service's own deadline for the request passed."""


_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: ValidationFailedError,
    429: OverloadedError,
    503: NotReadyError,
    504: RequestTimeoutError,
}

_RETRY_STATUSES = frozenset({429, 503})
# No answer and safe to send again (every endpoint is a pure function of its body). A read
# timeout is not among them: the service may still be working on the request.
_RETRY_TRANSPORT = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds; None when absent or an HTTP date (the backoff applies)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _error_from(response: httpx.Response) -> ClientError:
    """The `ClientError` for an error answer, from the service's `{"error": {...}}` body."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ClientError)
    common: dict[str, Any] = {
        "status": status,
        "request_id": response.headers.get("x-request-id"),
        "retry_after": _retry_after(response),
    }
    try:
        err = ErrorResponse.model_validate_json(response.content).error
    except ValidationError:  # not the service's shape (a proxy's page): keep a little of it
        message = response.text.strip()[:200] or response.reason_phrase or f"HTTP {status}"
        return cls(message, **common)
    return cls(err.message, type=err.type, details=err.details, **common)


def _transport_error(exc: httpx.TransportError) -> ClientError:
    timed_out = isinstance(exc, httpx.TimeoutException) and not isinstance(
        exc, httpx.ConnectTimeout
    )
    cls = ClientTimeoutError if timed_out else ConnectionFailedError
    return cls(f"{type(exc).__name__}: {exc}")


def _parse(result: type[T], response: httpx.Response) -> T:
    try:
        return result.model_validate_json(response.content)
    except ValidationError as exc:
        raise UnexpectedResponseError(
            f"the answer is not a {result.__name__}: {exc.error_count()} problem(s)",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from exc


# --- retries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a call again, and how long to wait first.

    Retried: 429 and 503 answers, and connection failures (refused, reset, connect timeout).
    Never retried: any other status (a 4xx will not change), a read timeout. Wait before retry
    n (0-based): `min(max_backoff, backoff * 2**n)`, of which a random `jitter` fraction is taken
    off (so that clients refused together do not come back together), and at least the answer's
    `Retry-After`.

    Args:
        max_retries: sends after the first one (0: no retries).
        backoff: the first wait in seconds; it doubles with every retry.
        max_backoff: the longest computed wait (a longer Retry-After is still honoured).
        jitter: fraction of each computed wait drawn at random, in [0, 1].
        deadline: seconds for the whole call, waits included (None: no limit). A retry whose
            wait would pass it is not made (the last error is raised), and every send's
            timeouts are cut to the time left.
    """

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    jitter: float = 0.5
    deadline: float | None = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("max_retries, backoff and max_backoff must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], not {self.jitter}")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError(f"deadline must be > 0 seconds (or None), not {self.deadline}")

    def delay(self, retry: int, retry_after: float | None, rand: float) -> float:
        """Seconds to wait before retry `retry` (0-based); `rand` is uniform in [0, 1)."""
        wait = min(self.max_backoff, self.backoff * 2**retry) * (1 - self.jitter * rand)
        return wait if retry_after is None else max(retry_after, wait)


# --- the shared core -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One endpoint call: what to send and what the answer parses into."""

    method: str
    path: str
    result: type[T]
    body: dict[str, Any] | None = None
    retry: bool = True


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Step: TypeAlias = httpx.Request | _Sleep
# What the driver sends back: the answer or the transport error of a request, None after a sleep.
_Outcome: TypeAlias = httpx.Response | httpx.TransportError | None


def _body(**fields: Any) -> dict[str, Any]:
    """A request body without the options left unset (the service's defaults apply)."""
    return {k: v for k, v in fields.items() if v is not None}


def _listed(inputs: Inputs) -> str | list[Any]:
    return inputs if isinstance(inputs, str) else list(inputs)


class _Core:
    """Everything but the transport: settings, request building, retries, parsing."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        connect_timeout: float,
        read_timeout: float,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
        clock: Callable[[], float],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry = retry or RetryPolicy()
        self.headers = {"accept": "application/json", "user-agent": "bert-forge-client"}
        self.headers.update(headers or {})
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.clock = clock

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)

    def exchange(self, call: _Call[T]) -> Generator[_Step, _Outcome, T]:
        """Send `call` until it succeeds, fails for good, or the retries or deadline are spent.

        Yields an `httpx.Request` (to be answered with its response or the `TransportError` it
        raised) or a `_Sleep` (answered with None); returns the parsed answer or raises a
        `ClientError`.
        """
        policy = self.retry
        deadline = None if policy.deadline is None else self.clock() + policy.deadline
        retries = policy.max_retries if call.retry else 0
        for attempt in range(retries + 1):
            outcome = yield self._request(call, deadline)
            if isinstance(outcome, httpx.Response):
                if outcome.is_success:
                    return _parse(call.result, outcome)
                error, cause = _error_from(outcome), None
                retryable = outcome.status_code in _RETRY_STATUSES
            else:
                assert isinstance(outcome, httpx.TransportError), outcome
                error, cause = _transport_error(outcome), outcome
                retryable = isinstance(outcome, _RETRY_TRANSPORT)
            wait = policy.delay(attempt, error.retry_after, random.random())
            past_deadline = deadline is not None and self.clock() + wait >= deadline
            if not retryable or attempt == retries or past_deadline:
                raise error from cause
            yield _Sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _request(self, call: _Call[Any], deadline: float | None) -> httpx.Request:
        connect, read = self.connect_timeout, self.read_timeout
        if deadline is not None:
            left = deadline - self.clock()
            if left <= 0:
                raise ClientTimeoutError(f"no answer within the {self.retry.deadline} s deadline")
            connect, read = min(connect, left), min(read, left)
        timeout = httpx.Timeout(read, connect=connect, pool=connect)
        return httpx.Request(
            call.method,
            self.base_url + call.path,
            json=call.body,
            headers=self.headers,
            extensions={"timeout": timeout.as_dict()},
        )


class _Calls:
    """The endpoint calls, built once for both clients."""

    @staticmethod
    def models() -> _Call[ModelsResponse]:
        return _Call("GET", "/v1/models", ModelsResponse)

    @staticmethod
    def classify(
        inputs: Inputs, model: str | None, top_k: int | None, truncate: bool | None
    ) -> _Call[ClassifyResponse]:
        body = _body(model=model, inputs=_listed(inputs), top_k=top_k, truncate=truncate)
        return _Call("POST", "/v1/classify", ClassifyResponse, body)

    @staticmethod
    def qa(
        question: str | Sequence[tuple[str, str]],
        context: str | None,
        model: str | None,
        top_k: int | None,
        max_answer_length: int | None,
        allow_no_answer: bool | None,
    ) -> _Call[QAResponse]:
        if isinstance(question, str) != (context is not None):
            raise TypeError("call qa(question, context) or qa([(question, context), ...])")
        options = _body(
            model=model,
            top_k=top_k,
            max_answer_length=max_answer_length,
            allow_no_answer=allow_no_answer,
        )
        if isinstance(question, str):
            pair: dict[str, Any] = {"question": question, "context": context}
        else:
            pair = {"inputs": [{"question": q, "context": c} for q, c in question]}
        return _Call("POST", "/v1/qa", QAResponse, {**pair, **options})

    @staticmethod
    def fill_mask(
        inputs: Texts, model: str | None, top_k: int | None, truncate: bool | None
    ) -> _Call[FillMaskResponse]:
        body = _body(model=model, inputs=_listed(inputs), top_k=top_k, truncate=truncate)
        return _Call("POST", "/v1/fill-mask", FillMaskResponse, body)

    @staticmethod
    def token_classify(
        inputs: Texts, model: str | None, truncate: bool | None
    ) -> _Call[TokenClassifyResponse]:
        body = _body(model=model, inputs=_listed(inputs), truncate=truncate)
        return _Call("POST", "/v1/token-classify", TokenClassifyResponse, body)

    @staticmethod
    def summarize(
        inputs: Texts, model: str | None, max_sentences: int | None, truncate: bool | None
    ) -> _Call[SummarizeResponse]:
        body = _body(
            model=model, inputs=_listed(inputs), max_sentences=max_sentences, truncate=truncate
        )
        return _Call("POST", "/v1/summarize", SummarizeResponse, body)

    @staticmethod
    def translate(
        inputs: Texts,
        model: str | None,
        beam_size: int | None,
        max_new_tokens: int | None,
        truncate: bool | None,
    ) -> _Call[TranslateResponse]:
        body = _body(
            model=model,
            inputs=_listed(inputs),
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            truncate=truncate,
        )
        return _Call("POST", "/v1/translate", TranslateResponse, body)

    @staticmethod
    def tokenize(inputs: Inputs, model: str | None) -> _Call[TokenizeResponse]:
        body = _body(model=model, inputs=_listed(inputs))
        return _Call("POST", "/v1/tokenize", TokenizeResponse, body)

    # Probes answer now: one send, no retries (a 503 from /readyz is the answer).
    @staticmethod
    def health() -> _Call[Status]:
        return _Call("GET", "/healthz", Status, retry=False)

    @staticmethod
    def ready() -> _Call[Status]:
        return _Call("GET", "/readyz", Status, retry=False)


# --- the clients ---------------------------------------------------------------------------------


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
        self._core = _Core(
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

    def _run(self, call: _Call[T]) -> T:
        steps = self._core.exchange(call)
        outcome: _Outcome = None
        try:
            while True:
                try:
                    step = steps.send(outcome)
                except StopIteration as done:
                    result: T = done.value
                    return result
                if isinstance(step, _Sleep):
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
        return self._run(_Calls.models())

    def classify(
        self,
        inputs: Inputs,
        *,
        model: str | None = None,
        top_k: int | None = None,
        truncate: bool | None = None,
    ) -> ClassifyResponse:
        """Labels with scores per input, best first; `inputs` is a text, texts or pairs."""
        return self._run(_Calls.classify(inputs, model, top_k, truncate))

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
            _Calls.qa(question, context, model, top_k, max_answer_length, allow_no_answer)
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
        return self._run(_Calls.fill_mask(inputs, model, top_k, truncate))

    def token_classify(
        self, inputs: Texts, *, model: str | None = None, truncate: bool | None = None
    ) -> TokenClassifyResponse:
        """Entities (label, text, character start/end, score) per input."""
        return self._run(_Calls.token_classify(inputs, model, truncate))

    def summarize(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        max_sentences: int | None = None,
        truncate: bool | None = None,
    ) -> SummarizeResponse:
        """Extractive summaries: chosen sentences (document order) with offsets and scores."""
        return self._run(_Calls.summarize(inputs, model, max_sentences, truncate))

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
        return self._run(_Calls.translate(inputs, model, beam_size, max_new_tokens, truncate))

    def tokenize(self, inputs: Inputs, *, model: str | None = None) -> TokenizeResponse:
        """Tokens with ids and character offsets, as the model sees them."""
        return self._run(_Calls.tokenize(inputs, model))

    def health(self) -> Status:
        """`GET /healthz` (one send, no retries)."""
        return self._run(_Calls.health())

    def ready(self) -> Status:
        """`GET /readyz` (one send); raises `NotReadyError` (details: phase, failed) if not."""
        return self._run(_Calls.ready())

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
        self._core = _Core(
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

    async def _run(self, call: _Call[T]) -> T:
        steps = self._core.exchange(call)
        outcome: _Outcome = None
        try:
            while True:
                try:
                    step = steps.send(outcome)
                except StopIteration as done:
                    result: T = done.value
                    return result
                if isinstance(step, _Sleep):
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
        return await self._run(_Calls.models())

    async def classify(
        self,
        inputs: Inputs,
        *,
        model: str | None = None,
        top_k: int | None = None,
        truncate: bool | None = None,
    ) -> ClassifyResponse:
        return await self._run(_Calls.classify(inputs, model, top_k, truncate))

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
            _Calls.qa(question, context, model, top_k, max_answer_length, allow_no_answer)
        )

    async def fill_mask(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        top_k: int | None = None,
        truncate: bool | None = None,
    ) -> FillMaskResponse:
        return await self._run(_Calls.fill_mask(inputs, model, top_k, truncate))

    async def token_classify(
        self, inputs: Texts, *, model: str | None = None, truncate: bool | None = None
    ) -> TokenClassifyResponse:
        return await self._run(_Calls.token_classify(inputs, model, truncate))

    async def summarize(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        max_sentences: int | None = None,
        truncate: bool | None = None,
    ) -> SummarizeResponse:
        return await self._run(_Calls.summarize(inputs, model, max_sentences, truncate))

    async def translate(
        self,
        inputs: Texts,
        *,
        model: str | None = None,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        truncate: bool | None = None,
    ) -> TranslateResponse:
        return await self._run(_Calls.translate(inputs, model, beam_size, max_new_tokens, truncate))

    async def tokenize(self, inputs: Inputs, *, model: str | None = None) -> TokenizeResponse:
        return await self._run(_Calls.tokenize(inputs, model))

    async def health(self) -> Status:
        return await self._run(_Calls.health())

    async def ready(self) -> Status:
        return await self._run(_Calls.ready())

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
