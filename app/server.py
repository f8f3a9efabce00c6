"""uvicorn with a graceful drain: on SIGTERM (or SIGINT) stop admitting, finish what is queued,
then exit; a second signal falls back to uvicorn's own handling (forced exit on a second ^C).

One process, one worker: every model has one batcher, and batching only works when all requests
for a model share its queue.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.service import Service

__all__ = ["Server", "uvicorn_config"]

log = logging.getLogger(__name__)


def uvicorn_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """The one-worker uvicorn configuration (logs go through app.logging, not uvicorn's)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        log_config=None,
        access_log=False,  # the middleware writes one JSON line per request instead
        lifespan="on",
        timeout_graceful_shutdown=30,
    )


class Server(uvicorn.Server):
    """A uvicorn server whose first exit signal drains the service before stopping.

    Args:
        config: the uvicorn config (its app is the one `service` belongs to).
        service: the app's service (`app.state.service`).
        grace_s: seconds to keep listening after the drain began (readyz 503 meanwhile).
    """

    def __init__(self, config: uvicorn.Config, service: Service, grace_s: float = 0.0) -> None:
        super().__init__(config)
        self.service = service
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None or not self.started:
            super().handle_exit(sig, frame)
            return
        log.info("%s received: draining before exit", signal.Signals(sig).name)
        self.request_drain()

    def request_drain(self) -> None:
        """Begin the drain-then-exit sequence (callable from any thread)."""
        loop = self._loop
        if loop is None or self._draining:
            return
        self._draining = True
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        try:
            await self.service.drain(self.grace_s)
        finally:
            self.should_exit = True
