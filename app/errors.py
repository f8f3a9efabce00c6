"""The service's one error hierarchy and the one place it becomes HTTP.

Every failure a client can see is a `ServiceError` subclass carrying its HTTP status, a stable
machine-readable `type`, a human `message` and optional JSON-safe `details`. Every error response,
including FastAPI's own validation errors and unexpected crashes, has the same body:

    {"error": {"type": "...", "message": "...", "details": ...}}   # details only when present
"""

from __future__ import annotations

import json
import logging
import math
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "BadRequestError",
    "ClientClosedError",
    "InferenceError",
    "ModelNotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "ServiceError",
    "UnauthorizedError",
    "ValidationFailedError",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error a client may see.

    Args:
        message: one sentence for the client; say what to change when the client can fix it.
        details: optional JSON-serializable extra data (e.g. per-field validation errors).
    """

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "internal server error"

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        """Extra HTTP response headers for this error (none by default)."""
        return {}


class BadRequestError(ServiceError):
    """The request cannot be read at all (malformed JSON, wrong content type)."""

    status_code = 400
    type = "bad_request"
    default_message = "the request body could not be read"


class UnauthorizedError(ServiceError):
    """An API key is configured and the request did not send it (or sent another)."""

    status_code = 401
    type = "unauthorized"
    default_message = "send the API key as 'Authorization: Bearer <key>'"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFoundError(ServiceError):
    """The named model is not loaded by this server."""

    status_code = 404
    type = "model_not_found"
    default_message = "no such model; GET /v1/models lists the loaded ones"


class PayloadTooLargeError(ServiceError):
    """The body or the number of inputs exceeds a configured limit."""

    status_code = 413
    type = "payload_too_large"
    default_message = "the request is too large; split it into smaller requests"


class ValidationFailedError(ServiceError):
    """The request is well-formed JSON but its content is invalid."""

    status_code = 422
    type = "validation_error"
    default_message = "the request is invalid"


class OverloadedError(ServiceError):
    """The model's queue is full; the client should retry after `retry_after` seconds.

    Args:
        retry_after: seconds after which a retry is likely to be admitted (sent as Retry-After,
            rounded up to a whole second as HTTP requires).
    """

    status_code = 429
    type = "overloaded"
    default_message = "the server is overloaded; retry later"

    def __init__(
        self, message: str | None = None, *, retry_after: float, details: Any = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class NotReadyError(ServiceError):
    """The service (or one model) is starting up or shutting down."""

    status_code = 503
    type = "not_ready"
    default_message = "the service is not ready; retry shortly"


class RequestTimeoutError(ServiceError):
    """The request's deadline passed before its answer was ready."""

    status_code = 504
    type = "timeout"
    default_message = "the request timed out; retry, or send fewer inputs per request"


class ClientClosedError(ServiceError):
    """The client disconnected before its answer was ready; its queued work was dropped.

    The response is never seen; 499 (nginx's "client closed request") marks it in logs/metrics.
    """

    status_code = 499
    type = "client_closed_request"
    default_message = "the client closed the connection before the answer was ready"


class InferenceError(ServiceError):
    """The backend failed on a batch holding this request's inputs (other batches unaffected)."""

    status_code = 500
    type = "inference_error"
    default_message = "inference failed for this request; retry it"


def error_body(err: ServiceError) -> dict[str, Any]:
    """The JSON body of an error response: `{"error": {"type", "message", "details"?}}`."""
    inner: dict[str, Any] = {"type": err.type, "message": err.message}
    if err.details is not None:
        inner["details"] = err.details
    return {"error": inner}


def error_response(err: ServiceError) -> JSONResponse:
    """The full HTTP response for `err`: status, headers and body."""
    return JSONResponse(error_body(err), status_code=err.status_code, headers=err.headers())


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Reduce pydantic error dicts to JSON-safe `{loc, msg, type}` entries.

    `input` and `ctx` are dropped on purpose: they may hold the client's whole payload or raw
    exception objects that do not serialize.
    """
    out: list[dict[str, Any]] = []
    for e in errors:
        loc = [p if isinstance(p, int | str) else str(p) for p in e.get("loc", ())]
        out.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


async def _on_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.type, exc.message)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    # FastAPI reports an unparseable body as a validation error; it is a 400 for us.
    if any(d["type"] == "json_invalid" for d in details):
        return error_response(BadRequestError("the body is not valid JSON", details=details))
    return error_response(ValidationFailedError(details=details))


async def _on_json_decode_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, json.JSONDecodeError)
    return error_response(
        BadRequestError(
            "the body is not valid JSON", details={"line": exc.lineno, "column": exc.colno}
        )
    )


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own 404 (unknown route) / 405 get the same body shape as ours.
    assert isinstance(exc, StarletteHTTPException)
    try:
        kind = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        kind = "http_error"
    body = {"error": {"type": kind, "message": str(exc.detail)}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The trace goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ServiceError())


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the common error body.

    ServiceError -> its own status; RequestValidationError -> 422 (400 for malformed JSON);
    json.JSONDecodeError -> 400; Starlette HTTPException -> its status; anything else -> 500
    with a generic message.
    """
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(json.JSONDecodeError, _on_json_decode_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
