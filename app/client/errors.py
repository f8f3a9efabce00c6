"""The client's errors: one `ClientError` hierarchy mirroring the service's JSON error body
(`{"error": {"type", "message", "details"}}`, `x-request-id`, `Retry-After`), and the mapping
from an answer or a transport failure to it."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from app.schemas import ErrorResponse

T = TypeVar("T", bound=BaseModel)


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

RETRY_STATUSES = frozenset({429, 503})
# No answer and safe to send again (every endpoint is a pure function of its body). A read
# timeout is not among them: the service may still be working on the request.
RETRY_TRANSPORT = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds; None when absent or an HTTP date (the backoff applies)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def error_from(response: httpx.Response) -> ClientError:
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


def transport_error(exc: httpx.TransportError) -> ClientError:
    timed_out = isinstance(exc, httpx.TimeoutException) and not isinstance(
        exc, httpx.ConnectTimeout
    )
    cls = ClientTimeoutError if timed_out else ConnectionFailedError
    return cls(f"{type(exc).__name__}: {exc}")


def parse(result: type[T], response: httpx.Response) -> T:
    try:
        return result.model_validate_json(response.content)
    except ValidationError as exc:
        raise UnexpectedResponseError(
            f"the answer is not a {result.__name__}: {exc.error_count()} problem(s)",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from exc
