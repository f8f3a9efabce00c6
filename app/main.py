"""The app factory: `create_app(settings)` builds one service (uvicorn: `--factory`).

    uvicorn app.main:create_app --factory --port 8000     # settings from BERT_* variables
    python -m app --models-dir models                      # the same, with flags and drain

The lifespan starts loading the models in the background (so /healthz answers at once and
/readyz flips to 200 once every model is loaded and warmed up) and, at shutdown, drains: no new
work, everything queued finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app.errors import install_error_handlers
from app.logging import configure_logging
from app.metrics import Metrics
from app.middleware import TIMING_HEADERS, ServiceMiddleware
from app.routes import install_routes, require_api_key
from app.service import Service
from app.settings import Settings

__all__ = ["create_app"]

DESCRIPTION = """\
Classification, extractive QA, fill-mask, token classification, extractive summarisation and
translation over ONNX model bundles, with dynamic batching. Every task response is \
`{model, results, usage}` with one result per
input in input order; every error is `{"error": {"type", "message", "details"?}}`.
"""


def _version() -> str:
    try:
        return metadata.version("bert-forge")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None, *, setup_logging: bool = True) -> FastAPI:
    """A new app with its own service, metrics registry and models.

    Args:
        settings: the configuration; None reads it from the environment (`BERT_*`).
        setup_logging: route all logs through `settings.log_format` (off in tests that keep
            pytest's log capture).
    """
    settings = settings or Settings()
    if setup_logging:
        configure_logging(settings.log_format, settings.log_level)
    metrics = Metrics(version=_version())
    service = Service(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await service.drain()
            service.close()

    keyed = settings.api_key is not None  # then the schema and docs need the key too
    app = FastAPI(
        title="bert-forge inference service",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None if keyed else "/openapi.json",
        docs_url=None if keyed else "/docs",
        redoc_url=None if keyed else "/redoc",
        # FastAPI's OpenTelemetry bridge looks up the global providers on every request; this
        # service reports through Prometheus (app/metrics.py) and request-id logs instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    if keyed:
        guard = [Depends(require_api_key)]

        @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
        def keyed_openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=guard)
        def keyed_docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    install_routes(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "X-Total-Time-Ms",
                *(f"X-{n.title()}-Time-Ms" for n in TIMING_HEADERS),
            ],
        )
    # Outermost (added last): request id and timing cover everything, CORS answers included.
    app.add_middleware(ServiceMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    return app
