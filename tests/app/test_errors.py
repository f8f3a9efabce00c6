"""The error hierarchy, its one body shape, and the FastAPI handlers (in-process ASGI client)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, field_validator

from app.errors import (
    BadRequestError,
    InferenceError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    ValidationFailedError,
    error_body,
    install_error_handlers,
)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (BadRequestError(), 400, "bad_request"),
        (ModelNotFoundError(), 404, "model_not_found"),
        (PayloadTooLargeError(), 413, "payload_too_large"),
        (ValidationFailedError(), 422, "validation_error"),
        (OverloadedError(retry_after=2), 429, "overloaded"),
        (InferenceError(), 500, "inference_error"),
        (NotReadyError(), 503, "not_ready"),
        (RequestTimeoutError(), 504, "timeout"),
    ],
)
def test_each_error_has_its_status_type_and_a_default_message(
    error: ServiceError, status: int, kind: str
) -> None:
    assert isinstance(error, ServiceError)
    assert (error.status_code, error.type) == (status, kind)
    assert error_body(error) == {"error": {"type": kind, "message": error.message}}
    assert error.message


def test_body_carries_details_only_when_given() -> None:
    err = ValidationFailedError("bad input 3", details={"index": 3})
    assert error_body(err) == {
        "error": {"type": "validation_error", "message": "bad input 3", "details": {"index": 3}}
    }
    assert str(err) == "bad input 3"


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (2.3, "3")])
def test_overloaded_sends_whole_seconds_retry_after(retry_after: float, header: str) -> None:
    assert OverloadedError(retry_after=retry_after).headers() == {"Retry-After": header}


class Body(BaseModel):
    text: str
    top_k: int = 1

    @field_validator("top_k")
    @classmethod
    def positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("top_k must be at least 1")  # lands in ctx as an exception object
        return v


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    def echo(body: Body) -> Body:
        return body

    @app.get("/busy")
    def busy() -> None:
        raise OverloadedError("queue full", retry_after=2.5)

    @app.get("/missing")
    def missing() -> None:
        raise ModelNotFoundError("no model 'x'", details={"available": ["a"]})

    @app.post("/raw")
    async def raw(request: Request) -> object:
        return json.loads(await request.body())

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("secret internal detail")

    return TestClient(app, raise_server_exceptions=False)


def test_service_error_is_rendered_with_status_headers_and_body(client: TestClient) -> None:
    r = client.get("/busy")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json() == {"error": {"type": "overloaded", "message": "queue full"}}
    r = client.get("/missing")
    assert r.status_code == 404
    assert r.json()["error"]["details"] == {"available": ["a"]}


def test_validation_error_is_422_with_safe_details(client: TestClient) -> None:
    r = client.post("/echo", json={"top_k": 0})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "validation_error"
    locs = {tuple(d["loc"]) for d in err["details"]}
    assert locs == {("body", "text"), ("body", "top_k")}
    assert all(set(d) == {"loc", "msg", "type"} for d in err["details"])


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/echo", content=b'{"text": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "bad_request"


def test_json_decode_error_raised_by_a_handler_is_400(client: TestClient) -> None:
    r = client.post("/raw", content=b"{nope")
    assert r.status_code == 400
    assert r.json()["error"]["details"] == {"line": 1, "column": 2}


def test_unexpected_exception_is_a_generic_500(client: TestClient) -> None:
    r = client.get("/crash")
    assert r.status_code == 500
    assert r.json() == {"error": {"type": "internal_error", "message": "internal server error"}}
    assert "secret" not in r.text
    assert "Traceback" not in r.text


def test_unknown_route_uses_the_same_body_shape(client: TestClient) -> None:
    r = client.get("/nowhere")
    assert r.status_code == 404
    assert r.json() == {"error": {"type": "not_found", "message": "Not Found"}}
