"""HTTP routes: the task endpoints under /v1 (behind the API key when one is set), health,
readiness and metrics. Handlers only translate between JSON and the service; errors are raised
as `ServiceError`s and rendered in one place (app.errors)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.errors import NotReadyError, UnauthorizedError, error_response
from app.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    FailedModel,
    FillMaskRequest,
    FillMaskResponse,
    ModelInfo,
    ModelsResponse,
    Priority,
    QARequest,
    QAResponse,
    Status,
    SummarizeRequest,
    SummarizeResponse,
    TokenClassifyRequest,
    TokenClassifyResponse,
    TokenizeRequest,
    TokenizeResponse,
    TranslateRequest,
    TranslateResponse,
    Usage,
)
from app.service import Service

__all__ = ["install_routes", "require_api_key"]


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, a thread hop per request for a dictionary lookup.
async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_api_key(request: Request, service: ServiceDep) -> None:
    """With an API key configured, accept only `Authorization: Bearer <key>` (constant time)."""
    key = service.settings.api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise UnauthorizedError()


async def require_metrics_key(request: Request, service: ServiceDep) -> None:
    if service.settings.metrics_requires_key:
        await require_api_key(request, service)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed JSON.",
        401: "Missing or wrong API key.",
        404: "Unknown model.",
        413: "Body too large, or more inputs than the queue holds.",
        422: "Invalid request (empty text, too many inputs, too long with truncate=false, "
        "no mask, no readable sentence, beam_size or max_new_tokens out of range, wrong types).",
        429: "Overloaded: the model's queue is full; see Retry-After.",
        500: "Inference failed for the batch holding this request.",
        503: "Not ready: starting, draining, or the model failed to load.",
        504: "The request timed out.",
    }
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


TASK_ERRORS = _errors(400, 401, 404, 413, 422, 429, 500, 503, 504)

router = APIRouter()
v1 = APIRouter(dependencies=[Depends(require_api_key)])  # full paths: see install_routes


def _as_list(inputs: Any) -> list[Any]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


def _inputs_as_list(body: Any) -> list[Any]:
    return _as_list(body.inputs)


class _TaskRequest(Protocol):
    model: str | None
    priority: Priority
    timeout_ms: int | None


B = TypeVar("B", bound=_TaskRequest)


@v1.get("/v1/models", responses=_errors(401))
async def list_models(service: ServiceDep) -> ModelsResponse:
    """Every loaded bundle (task, labels, variant and provider in use, evaluation figures) and
    every bundle refused at start-up with its reason."""
    models = [
        ModelInfo(
            name=m.name,
            task=m.task,
            path=str(m.bundle.path),
            labels=m.bundle.manifest.labels,
            multi_label=m.bundle.manifest.multi_label,
            variant=m.bundle.variant.precision,
            provider=m.backend.provider,
            max_length=m.task_model.max_length,
            parity=m.bundle.variant.parity.model_dump(exclude_none=True),
            evaluation=m.bundle.manifest.evaluation,
            generation=(
                None
                if m.bundle.manifest.generation is None
                else m.bundle.manifest.generation.model_dump()
            ),
            rerun=None if m.rerun is None else m.rerun.spec.model_dump(),
            load_seconds=round(m.load_seconds, 3),
        )
        for m in service.models
    ]
    failed = [
        FailedModel(name=f.name, path=f.path, reason=f.reason)
        for f in service.registry.failures.values()
    ]
    return ModelsResponse(models=models, failed=failed, loading=service.loading)


@dataclass(frozen=True)
class _TaskRoute(Generic[B]):
    """One task endpoint: all that sets it apart from the others. Every task request takes the
    same path (`_answer`): resolve the model, check the input count, tokenize and wait for the
    batcher (`Service.infer`, which times it), post-process, build the response.

    Args:
        path: the endpoint's full path.
        name: the handler's name (OpenAPI summary and operationId).
        task: the bundle task that answers it.
        request: the request body model.
        response: the response body model (`{model, results, usage}`).
        doc: the endpoint's description in the OpenAPI schema (its line breaks too).
        prepare_args: the task model's `prepare` arguments, from the body and the inputs.
        finish_args: the task model's `finish` arguments after the prepared request and its rows.
        inputs: the body's inputs, one per result.
        texts: what of the inputs `Service.is_small` measures.
        generated: tokens the results generated, counted in the usage besides the inputs'.
    """

    path: str
    name: str
    task: str
    request: type[B]
    response: type[BaseModel]
    doc: str
    prepare_args: Callable[[B, list[Any]], tuple[Any, ...]]
    finish_args: Callable[[B, list[Any]], tuple[Any, ...]]
    inputs: Callable[[B], list[Any]] = _inputs_as_list
    texts: Callable[[list[Any]], Sequence[Any]] = lambda inputs: inputs
    generated: Callable[[list[Any]], int] = lambda results: 0


async def _answer(route: _TaskRoute[B], body: B, request: Request, service: Service) -> BaseModel:
    """The request path of every task endpoint."""
    inputs = route.inputs(body)
    model = service.resolve(route.task, body.model)
    service.check_count(len(inputs))
    tm = model.task_model
    small = service.is_small(route.texts(inputs))
    prepare_args = route.prepare_args(body, inputs)
    prepared, rows = await service.infer(
        request,
        model,
        lambda: tm.prepare(*prepare_args),
        inline=small,
        priority=body.priority,
        timeout_ms=body.timeout_ms,
        inputs=len(inputs),
    )
    finish_args = route.finish_args(body, inputs)
    results = await service.offload(tm.finish, prepared, rows, *finish_args, inline=small)
    usage = Usage(inputs=len(inputs), tokens=prepared.tokens + route.generated(results))
    return route.response(model=model.name, results=results, usage=usage)


def _add_task_route(route: _TaskRoute[Any]) -> None:
    """Register `route` on `v1` as if its handler had been written out with its own name,
    docstring and body/response annotations (what FastAPI builds the OpenAPI schema from)."""

    async def endpoint(body: Any, request: Request, service: ServiceDep) -> Any:
        return await _answer(route, body, request, service)

    endpoint.__name__ = endpoint.__qualname__ = route.name
    endpoint.__doc__ = route.doc
    endpoint.__annotations__ = {
        **endpoint.__annotations__,
        "body": route.request,
        "return": route.response,
    }
    v1.post(route.path, responses=TASK_ERRORS)(endpoint)


# In the order of the OpenAPI schema.
TASK_ROUTES: tuple[_TaskRoute[Any], ...] = (
    _TaskRoute(
        path="/v1/classify",
        name="classify",
        task="classification",
        request=ClassifyRequest,
        response=ClassifyResponse,
        doc="Labels with scores (softmax, or sigmoid for multi-label models) per input, "
        "best first.",
        prepare_args=lambda body, inputs: (inputs, body.truncate),
        finish_args=lambda body, inputs: (body.top_k,),
    ),
    _TaskRoute(
        path="/v1/qa",
        name="question_answering",
        task="qa",
        request=QARequest,
        response=QAResponse,
        doc="Answer spans with character offsets into each context; long contexts are read "
        "in\noverlapping windows.",
        prepare_args=lambda body, pairs: (pairs,),
        finish_args=lambda body, pairs: (body.top_k, body.max_answer_length, body.allow_no_answer),
        inputs=lambda body: body.pairs(),
        texts=lambda pairs: [(p.question, p.context) for p in pairs],
    ),
    _TaskRoute(
        path="/v1/fill-mask",
        name="fill_mask",
        task="fill-mask",
        request=FillMaskRequest,
        response=FillMaskResponse,
        doc="For every mask token, candidate tokens with ids and scores, and the filled sentence.",
        prepare_args=lambda body, texts: (texts, body.truncate, body.top_k),
        finish_args=lambda body, texts: (texts, body.top_k),
    ),
    _TaskRoute(
        path="/v1/token-classify",
        name="token_classify",
        task="token-classification",
        request=TokenClassifyRequest,
        response=TokenClassifyResponse,
        doc="Entities (label, text, character start/end, score) per input.",
        prepare_args=lambda body, texts: (texts, body.truncate),
        finish_args=lambda body, texts: (texts,),
    ),
    _TaskRoute(
        path="/v1/summarize",
        name="summarize",
        task="extractive-summarization",
        request=SummarizeRequest,
        response=SummarizeResponse,
        doc="Extractive summary per input: the best-scored sentences (a sentence repeating a "
        "word\ntrigram of one already chosen is skipped), in document order, with character "
        "offsets.",
        prepare_args=lambda body, texts: (texts, body.truncate),
        finish_args=lambda body, texts: (body.max_sentences,),
    ),
    _TaskRoute(
        path="/v1/translate",
        name="translate",
        task="translation",
        request=TranslateRequest,
        response=TranslateResponse,
        doc="Translation per input (BERT2BERT): greedy decoding (beam_size 1) or beam search. "
        "Inputs\nof concurrent requests are batched, and generation is batched continuously: a "
        "new input\njoins the decoder steps in flight at the next step.",
        prepare_args=lambda body, texts: (
            texts,
            body.beam_size,
            body.max_new_tokens,
            body.truncate,
        ),
        finish_args=lambda body, texts: (),
        generated=lambda results: sum(r.tokens for r in results),
    ),
)
for _route in TASK_ROUTES:
    _add_task_route(_route)


@v1.post("/v1/tokenize", responses=_errors(400, 401, 404, 413, 422, 503))
async def tokenize(body: TokenizeRequest, service: ServiceDep) -> TokenizeResponse:
    """Tokens with ids and character offsets, as the model would see them (debugging aid)."""
    inputs = _as_list(body.inputs)
    model = service.resolve(None, body.model)
    service.check_count(len(inputs))
    results = await service.offload(
        model.task_model.tokenize, inputs, inline=service.is_small(inputs)
    )
    tokens = sum(len(r.tokens) for r in results)
    return TokenizeResponse(
        model=model.name, results=results, usage=Usage(inputs=len(inputs), tokens=tokens)
    )


@router.get("/healthz")
async def healthz() -> Status:
    """The process is alive (it may still be loading models)."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses=_errors(503))
async def readyz(service: ServiceDep) -> Any:
    """200 only when every configured model is loaded and warmed up; 503 while starting or
    draining, or when a bundle was refused (named in the message)."""
    if service.ready:
        return Status(status="ready", models=sorted(service.registry.models))
    failures = service.registry.failures
    if service.phase in ("draining", "stopped"):
        message = "the service is draining"
    elif service.loading:
        message = "models are loading"
    else:
        message = "refused: " + "; ".join(f"{f.name}: {f.reason}" for f in failures.values())
    details = {
        "phase": service.phase,
        "loading": service.loading,
        "failed": {f.name: f.reason for f in failures.values()},
    }
    return error_response(NotReadyError(message, details=details))


@router.get("/metrics", dependencies=[Depends(require_metrics_key)], response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics (every name starts with `bert_`)."""
    body, content_type = service.metrics.render()
    return Response(content=body, media_type=content_type)


def install_routes(app: FastAPI) -> None:
    """Add every route to ``app`` itself. Not ``include_router``: FastAPI resolves an included
    router's routes on each request (``_IncludedRouter``), measurable in a profile under load;
    the routes here carry their full paths and dependencies instead."""
    app.router.routes.extend([*router.routes, *v1.routes])
