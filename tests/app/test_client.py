"""app.client: every endpoint against the real server (sync and async), errors with the service's
body and request id, the API key; retries, backoff and the deadline over an httpx.MockTransport
with a fake clock and sleep (exact, no real waiting)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import (
    AsyncClient,
    BadRequestError,
    Client,
    ClientError,
    ClientTimeoutError,
    ConnectionFailedError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RetryPolicy,
    ServerError,
    UnauthorizedError,
    ValidationFailedError,
)
from tests.app.live import Live, models_dir, serve

REPO = Path(__file__).resolve().parents[2]

# (client method, args, kwargs) -> (HTTP method, path, raw body) that must give the same JSON.
CASES: list[tuple[str, tuple[Any, ...], dict[str, Any], str, str, Any]] = [
    ("models", (), {}, "GET", "/v1/models", None),
    ("health", (), {}, "GET", "/healthz", None),
    ("ready", (), {}, "GET", "/readyz", None),
    (
        "classify",
        (["a gripping film", "a dull film"],),
        {"model": "classification", "top_k": 1},
        "POST",
        "/v1/classify",
        {"model": "classification", "inputs": ["a gripping film", "a dull film"], "top_k": 1},
    ),
    (
        "classify",
        ([("a man sleeps", "a person rests")],),
        {"model": "multi-label", "truncate": True},
        "POST",
        "/v1/classify",
        {"model": "multi-label", "inputs": [["a man sleeps", "a person rests"]], "truncate": True},
    ),
    (
        "qa",
        ("who sat?", "the cat sat on the mat ."),
        {"model": "qa", "top_k": 2},
        "POST",
        "/v1/qa",
        {"model": "qa", "question": "who sat?", "context": "the cat sat on the mat .", "top_k": 2},
    ),
    (
        "qa",
        ([("who sat?", "the cat sat ."), ("where?", "on the mat .")],),
        {"model": "qa", "max_answer_length": 5, "allow_no_answer": True},
        "POST",
        "/v1/qa",
        {
            "model": "qa",
            "inputs": [
                {"question": "who sat?", "context": "the cat sat ."},
                {"question": "where?", "context": "on the mat ."},
            ],
            "max_answer_length": 5,
            "allow_no_answer": True,
        },
    ),
    (
        "fill_mask",
        ("the cat [MASK] on the [MASK] .",),
        {"model": "fill-mask", "top_k": 3},
        "POST",
        "/v1/fill-mask",
        {"model": "fill-mask", "inputs": "the cat [MASK] on the [MASK] .", "top_k": 3},
    ),
    (
        "token_classify",
        (["alice lives in paris", "bob ."],),
        {"model": "token-classification"},
        "POST",
        "/v1/token-classify",
        {"model": "token-classification", "inputs": ["alice lives in paris", "bob ."]},
    ),
    (
        "summarize",
        ("The cat sat. The dog ran. Paris is big.",),
        {"model": "summarization", "max_sentences": 2},
        "POST",
        "/v1/summarize",
        {
            "model": "summarization",
            "inputs": "The cat sat. The dog ran. Paris is big.",
            "max_sentences": 2,
        },
    ),
    (
        "tokenize",
        ("hello world",),
        {"model": "classification"},
        "POST",
        "/v1/tokenize",
        {"model": "classification", "inputs": "hello world"},
    ),
]


def test_import_pulls_no_server_or_torch() -> None:
    code = (
        "import sys, app.client\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- against the real server ---------------------------------------------------------------------


def call(
    url: str, flavour: str, name: str, *args: Any, headers: dict[str, str] | None = None, **kw: Any
) -> Any:
    """`name(*args, **kw)` on a fresh sync or async client of `url`."""
    if flavour == "sync":
        with Client(url, headers=headers) as client:
            return getattr(client, name)(*args, **kw)

    async def run() -> Any:
        async with AsyncClient(url, headers=headers) as client:
            return await getattr(client, name)(*args, **kw)

    return asyncio.run(run())


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    ("name", "args", "kw", "method", "path", "body"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_every_endpoint_gives_the_raw_json_typed(
    fp32: Live,
    flavour: str,
    name: str,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    method: str,
    path: str,
    body: Any,
) -> None:
    typed = call(fp32.url, flavour, name, *args, **kw)
    raw = fp32.client.request(method, path, json=body)
    assert raw.status_code == 200, raw.text
    assert type(typed).__module__ == "app.schemas"
    assert typed.model_dump(mode="json") == raw.json()


def test_one_client_reuses_its_connection(fp32: Live) -> None:
    with Client(fp32.url) as client:
        client.health()
        client.tokenize("hello", model="classification")
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        assert len(pool.connections) == 1


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_unknown_model_raises_not_found_with_request_id(fp32: Live, flavour: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        call(fp32.url, flavour, "classify", "ok", model="nope", headers={"x-request-id": "rid-404"})
    err = caught.value
    assert (err.status, err.type, err.request_id) == (404, "model_not_found", "rid-404")
    assert "'nope'" in err.message and "classification" in err.details["available"]


class Counting(httpx.HTTPTransport):
    """The real transport, counting sends."""

    sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return super().handle_request(request)


def test_invalid_input_raises_validation_error_once(fp32: Live) -> None:
    transport = Counting()
    with Client(fp32.url, transport=transport) as client, pytest.raises(ValidationFailedError) as e:
        client.classify(["fine", "   "], model="classification")
    assert transport.sent == 1
    assert (e.value.status, e.value.type) == (422, "validation_error")
    assert e.value.request_id and e.value.message
    assert any("text is empty" in d["msg"] for d in e.value.details)


def test_api_key_is_sent(bundles: Path, tmp_path: Path) -> None:
    with serve(models_dir(bundles, tmp_path, "classification"), api_key="s3cret") as live:
        with Client(live.url, api_key="s3cret") as client:
            assert client.classify("ok").model == "classification"
        for key in (None, "wrong"):
            with Client(live.url, api_key=key) as client, pytest.raises(UnauthorizedError) as e:
                client.models()
            assert (e.value.status, e.value.type) == (401, "unauthorized")


# --- retries over a mock transport ---------------------------------------------------------------

CLASSIFIED = {
    "model": "m",
    "results": [{"labels": [{"label": "pos", "score": 0.9}]}],
    "usage": {"inputs": 1, "tokens": 3},
}


class FakeTime:
    """A clock that only sleeping moves; records every sleep asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Script:
    """A MockTransport handler answering from a list (the last entry repeats); keeps requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def error(status: int, kind: str = "x", **headers: str) -> httpx.Response:
    body = {"error": {"type": kind, "message": f"{kind} happened", "details": {"n": 1}}}
    return httpx.Response(status, json=body, headers={"x-request-id": "r1", **headers})


def ok() -> httpx.Response:
    return httpx.Response(200, json=CLASSIFIED)


def mock_client(script: Script, fake: FakeTime, **kw: Any) -> Client:
    return Client(
        "http://svc/",
        transport=httpx.MockTransport(script),
        sleep=fake.sleep,
        clock=fake.clock,
        **kw,
    )


def test_429_is_retried_after_retry_after() -> None:
    fake = FakeTime()
    script = Script(
        error(429, "overloaded", **{"Retry-After": "2"}), error(429, **{"Retry-After": "3"}), ok()
    )
    with mock_client(script, fake, api_key="k") as client:
        result = client.classify("hi")
    assert result.results[0].labels[0].label == "pos"
    assert len(script.requests) == 3
    assert fake.sleeps == [2.0, 3.0]  # Retry-After beats the 0.5 s / 1 s backoff
    assert {r.headers["authorization"] for r in script.requests} == {"Bearer k"}
    assert json.loads(script.requests[0].content) == {"inputs": "hi"}
    assert str(script.requests[0].url) == "http://svc/v1/classify"


def test_async_client_retries_the_same_way() -> None:
    fake = FakeTime()
    script = Script(error(429, **{"Retry-After": "2"}), error(503), ok())

    async def run() -> Any:
        async with AsyncClient(
            "http://svc",
            transport=httpx.MockTransport(script),
            sleep=fake.async_sleep,
            clock=fake.clock,
            retry=RetryPolicy(backoff=0.1, jitter=0),
        ) as client:
            return await client.classify(["hi"])

    assert asyncio.run(run()).model == "m"
    assert len(script.requests) == 3
    assert fake.sleeps == [2.0, 0.2]


def test_503_backs_off_exponentially_until_retries_are_spent() -> None:
    fake = FakeTime()
    script = Script(error(503, "not_ready"))
    policy = RetryPolicy(max_retries=3, backoff=0.1, jitter=0)
    with mock_client(script, fake, retry=policy) as client, pytest.raises(NotReadyError) as e:
        client.models()
    assert len(script.requests) == 4
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert (e.value.status, e.value.type, e.value.request_id) == (503, "not_ready", "r1")


def test_backoff_jitter_and_cap() -> None:
    policy = RetryPolicy(backoff=1, max_backoff=5, jitter=0.5)
    assert [policy.delay(n, None, 0.0) for n in range(5)] == [1, 2, 4, 5, 5]
    assert policy.delay(1, None, 0.5) == 1.5
    assert policy.delay(1, None, 0.999) == pytest.approx(1.0, abs=0.01)  # at most half taken off
    assert policy.delay(0, 30.0, 0.0) == 30.0  # a longer Retry-After is honoured, not capped
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


def test_connection_errors_are_retried() -> None:
    fake = FakeTime()
    script = Script(httpx.ConnectError("refused"), httpx.RemoteProtocolError("closed"), ok())
    with mock_client(script, fake, retry=RetryPolicy(jitter=0)) as client:
        assert client.classify("hi").model == "m"
    assert len(script.requests) == 3
    assert fake.sleeps == [0.5, 1.0]

    script = Script(httpx.ConnectError("refused"))
    with mock_client(script, fake) as client, pytest.raises(ConnectionFailedError) as e:
        client.classify("hi")
    assert len(script.requests) == 4
    assert e.value.status is None and isinstance(e.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    ("answer", "raised", "kind"),
    [
        (error(400, "bad_request"), BadRequestError, "bad_request"),
        (error(401, "unauthorized"), UnauthorizedError, "unauthorized"),
        (error(404, "model_not_found"), NotFoundError, "model_not_found"),
        (error(413, "payload_too_large"), PayloadTooLargeError, "payload_too_large"),
        (error(422, "validation_error"), ValidationFailedError, "validation_error"),
        (error(405, "method_not_allowed"), ClientError, "method_not_allowed"),
        (error(504, "timeout"), ServerError, "timeout"),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError, "http_error"),
        (httpx.ReadTimeout("slow"), ClientTimeoutError, "client_timeout"),
    ],
)
def test_other_failures_are_not_retried(
    answer: httpx.Response | Exception, raised: type[ClientError], kind: str
) -> None:
    fake = FakeTime()
    script = Script(answer, ok())
    with mock_client(script, fake) as client, pytest.raises(raised) as e:
        client.classify("hi")
    assert len(script.requests) == 1 and fake.sleeps == []
    assert e.value.type == kind and e.value.message
    if isinstance(answer, httpx.Response) and answer.status_code != 502:
        assert (e.value.status, e.value.details, e.value.request_id) == (
            answer.status_code,
            {"n": 1},
            "r1",
        )


def test_deadline_bounds_waits_and_timeouts() -> None:
    fake = FakeTime()
    script = Script(error(429, "overloaded", **{"Retry-After": "2"}))
    policy = RetryPolicy(max_retries=10, deadline=5)
    with mock_client(script, fake, retry=policy) as client, pytest.raises(OverloadedError) as e:
        client.classify("hi")
    # sends at t=0, 2, 4; a third wait would end at 6 > 5, so the 429 is raised instead
    assert fake.sleeps == [2.0, 2.0] and fake.now == 4.0
    assert e.value.retry_after == 2.0
    reads = [r.extensions["timeout"]["read"] for r in script.requests]
    assert reads == [5.0, 3.0, 1.0]  # every send's timeout cut to the time left


def test_probes_are_not_retried() -> None:
    fake = FakeTime()
    script = Script(error(503, "not_ready"), httpx.Response(200, json={"status": "ready"}))
    with mock_client(script, fake) as client, pytest.raises(NotReadyError):
        client.ready()
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "bad",
    [lambda c: c.qa("question only"), lambda c: c.qa([("q", "c")], "context")],
    ids=["no-context", "pairs-and-context"],
)
def test_qa_needs_one_form(bad: Callable[[Client], Any]) -> None:
    script = Script(ok())
    with mock_client(script, FakeTime()) as client, pytest.raises(TypeError, match="qa"):
        bad(client)
    assert script.requests == []


def test_with_options_sends_priority_and_timeout_on_task_calls_only() -> None:
    fake = FakeTime()
    script = Script(ok())
    with mock_client(script, fake) as client:
        low = client.with_options(priority="low", timeout_ms=250)
        low.classify("hi")
        client.classify("hi")  # the original is unchanged
        with contextlib.suppress(ClientError):
            low.tokenize("hi")  # not queued for a model: no scheduling fields
    bodies = [json.loads(r.content) for r in script.requests]
    assert bodies[0] == {"priority": "low", "timeout_ms": 250, "inputs": "hi"}
    assert bodies[1] == {"inputs": "hi"}
    assert bodies[2] == {"inputs": "hi"}
