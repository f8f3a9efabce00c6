"""The sans-IO core both clients drive: `RetryPolicy`, the endpoint calls (`Calls`: what to
send, what the answer parses into) and `Core.exchange`, a generator that builds each request,
yields it (or a wait), receives the response (or the transport error) and owns retries, backoff,
the deadline and parsing. No I/O happens here."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias

import httpx

from app.client.errors import (
    RETRY_STATUSES,
    RETRY_TRANSPORT,
    ClientTimeoutError,
    T,
    error_from,
    parse,
    transport_error,
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

# A text, a list of texts, or a list of (text, text_pair) pairs.
Inputs: TypeAlias = str | Sequence[str] | Sequence[tuple[str, str]]
Texts: TypeAlias = str | Sequence[str]


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
class Call(Generic[T]):
    """One endpoint call: what to send and what the answer parses into."""

    method: str
    path: str
    result: type[T]
    body: dict[str, Any] | None = None
    retry: bool = True
    scheduled: bool = False  # queued for a model: takes the priority and timeout_ms options


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step: TypeAlias = httpx.Request | Sleep
# What the driver sends back: the answer or the transport error of a request, None after a sleep.
Outcome: TypeAlias = httpx.Response | httpx.TransportError | None


def _body(**fields: Any) -> dict[str, Any]:
    """A request body without the options left unset (the service's defaults apply)."""
    return {k: v for k, v in fields.items() if v is not None}


def _listed(inputs: Inputs) -> str | list[Any]:
    return inputs if isinstance(inputs, str) else list(inputs)


class Core:
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
        self.scheduling: dict[str, Any] = {}  # priority / timeout_ms sent with task calls

    def with_scheduling(self, priority: Priority | None, timeout_ms: int | None) -> Core:
        """A copy whose task calls carry these scheduling options (None: leave as is)."""
        core = copy.copy(self)
        core.scheduling = {**self.scheduling, **_body(priority=priority, timeout_ms=timeout_ms)}
        return core

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)

    def exchange(self, call: Call[T]) -> Generator[Step, Outcome, T]:
        """Send `call` until it succeeds, fails for good, or the retries or deadline are spent.

        Yields an `httpx.Request` (to be answered with its response or the `TransportError` it
        raised) or a `Sleep` (answered with None); returns the parsed answer or raises a
        `ClientError`.
        """
        policy = self.retry
        deadline = None if policy.deadline is None else self.clock() + policy.deadline
        retries = policy.max_retries if call.retry else 0
        for attempt in range(retries + 1):
            outcome = yield self._request(call, deadline)
            if isinstance(outcome, httpx.Response):
                if outcome.is_success:
                    return parse(call.result, outcome)
                error, cause = error_from(outcome), None
                retryable = outcome.status_code in RETRY_STATUSES
            else:
                assert isinstance(outcome, httpx.TransportError), outcome
                error, cause = transport_error(outcome), outcome
                retryable = isinstance(outcome, RETRY_TRANSPORT)
            wait = policy.delay(attempt, error.retry_after, random.random())
            past_deadline = deadline is not None and self.clock() + wait >= deadline
            if not retryable or attempt == retries or past_deadline:
                raise error from cause
            yield Sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _request(self, call: Call[Any], deadline: float | None) -> httpx.Request:
        connect, read = self.connect_timeout, self.read_timeout
        if deadline is not None:
            left = deadline - self.clock()
            if left <= 0:
                raise ClientTimeoutError(f"no answer within the {self.retry.deadline} s deadline")
            connect, read = min(connect, left), min(read, left)
        timeout = httpx.Timeout(read, connect=connect, pool=connect)
        body = call.body
        if call.scheduled and self.scheduling and body is not None:
            body = {**self.scheduling, **body}
        return httpx.Request(
            call.method,
            self.base_url + call.path,
            json=body,
            headers=self.headers,
            extensions={"timeout": timeout.as_dict()},
        )


class Calls:
    """The endpoint calls, built once for both clients."""

    @staticmethod
    def models() -> Call[ModelsResponse]:
        return Call("GET", "/v1/models", ModelsResponse)

    @staticmethod
    def classify(
        inputs: Inputs, model: str | None, top_k: int | None, truncate: bool | None
    ) -> Call[ClassifyResponse]:
        body = _body(model=model, inputs=_listed(inputs), top_k=top_k, truncate=truncate)
        return Call("POST", "/v1/classify", ClassifyResponse, body, scheduled=True)

    @staticmethod
    def qa(
        question: str | Sequence[tuple[str, str]],
        context: str | None,
        model: str | None,
        top_k: int | None,
        max_answer_length: int | None,
        allow_no_answer: bool | None,
    ) -> Call[QAResponse]:
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
        return Call("POST", "/v1/qa", QAResponse, {**pair, **options}, scheduled=True)

    @staticmethod
    def fill_mask(
        inputs: Texts, model: str | None, top_k: int | None, truncate: bool | None
    ) -> Call[FillMaskResponse]:
        body = _body(model=model, inputs=_listed(inputs), top_k=top_k, truncate=truncate)
        return Call("POST", "/v1/fill-mask", FillMaskResponse, body, scheduled=True)

    @staticmethod
    def token_classify(
        inputs: Texts, model: str | None, truncate: bool | None
    ) -> Call[TokenClassifyResponse]:
        body = _body(model=model, inputs=_listed(inputs), truncate=truncate)
        return Call("POST", "/v1/token-classify", TokenClassifyResponse, body, scheduled=True)

    @staticmethod
    def summarize(
        inputs: Texts, model: str | None, max_sentences: int | None, truncate: bool | None
    ) -> Call[SummarizeResponse]:
        body = _body(
            model=model, inputs=_listed(inputs), max_sentences=max_sentences, truncate=truncate
        )
        return Call("POST", "/v1/summarize", SummarizeResponse, body, scheduled=True)

    @staticmethod
    def translate(
        inputs: Texts,
        model: str | None,
        beam_size: int | None,
        max_new_tokens: int | None,
        truncate: bool | None,
    ) -> Call[TranslateResponse]:
        body = _body(
            model=model,
            inputs=_listed(inputs),
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            truncate=truncate,
        )
        return Call("POST", "/v1/translate", TranslateResponse, body, scheduled=True)

    @staticmethod
    def tokenize(inputs: Inputs, model: str | None) -> Call[TokenizeResponse]:
        body = _body(model=model, inputs=_listed(inputs))
        return Call("POST", "/v1/tokenize", TokenizeResponse, body)

    # Probes answer now: one send, no retries (a 503 from /readyz is the answer).
    @staticmethod
    def health() -> Call[Status]:
        return Call("GET", "/healthz", Status, retry=False)

    @staticmethod
    def ready() -> Call[Status]:
        return Call("GET", "/readyz", Status, retry=False)
