"""The one ASGI middleware around every request: request id, body limit, timing, access log.

Pure ASGI (not BaseHTTPMiddleware) so that the route still receives `http.disconnect` when the
client leaves, which is how abandoned requests get their queued work dropped.

- `x-request-id`: the client's (when it is a short token) or a new one; set in the logging
  context and returned on every response.
- Body limit: a `Content-Length` over `max_body_bytes` is refused before anything is read; a
  chunked body is read up to the limit and refused as soon as it passes it. Either way 413
  happens before JSON parsing. The body is then replayed to the app.
- Timing: `x-total-time-ms` on every response, plus `x-tokenize-time-ms`, `x-queue-time-ms`,
  `x-inference-time-ms` and (a cascade that answered some inputs again) `x-rerun-time-ms` when
  the route recorded them in `request.state.timings`.
- Anything that escapes the app becomes the common 500 body here (logged with its trace).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLargeError, ServiceError, error_response
from app.logging import request_id
from app.metrics import Metrics

__all__ = ["ServiceMiddleware"]

log = logging.getLogger("app.access")

_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
TIMING_HEADERS = ("tokenize", "queue", "inference", "rerun")


class ServiceMiddleware:
    """See the module docstring.

    Args:
        app: the wrapped ASGI app.
        max_body_bytes: largest accepted request body.
        metrics: where request counts and latencies go (route template, status).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        rid = given if _GOOD_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                extra = [(b"x-request-id", rid.encode())]
                total = (time.perf_counter() - t0) * 1000
                extra.append((b"x-total-time-ms", f"{total:.2f}".encode()))
                timings = state.get("timings") or {}
                for name in TIMING_HEADERS:
                    if name in timings:
                        value = f"{timings[name] * 1000:.2f}".encode()
                        extra.append((f"x-{name}-time-ms".encode(), value))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            body_receive = await self._read_body(scope, receive, headers)
            if body_receive is None:
                limit = self.max_body_bytes
                err = PayloadTooLargeError(
                    f"the body is larger than {limit} bytes; send fewer or shorter inputs",
                    details={"max_body_bytes": limit},
                )
                await error_response(err)(scope, receive, send_wrapper)
            else:
                await self.app(scope, body_receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(ServiceError())(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(template, status, seconds)
            log.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            request_id.reset(token)

    async def _read_body(
        self, scope: Scope, receive: Receive, headers: dict[str, str]
    ) -> Receive | None:
        """A receive that replays the whole body, or None when the body is over the limit."""
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected while sending the body
                pending: Message | None = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                pending = None
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed, pending
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            if pending is not None:
                message, pending = pending, None
                return message
            return await receive()  # after the body: waits for http.disconnect

        return replay
