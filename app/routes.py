"""HTTP routes: the task endpoints under /v1 (behind the API key when one is set), health,
readiness and metrics. Handlers only translate between JSON and the service; errors are raised
as `ServiceError`s and rendered in one place (app.errors)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

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
            load_seconds=round(m.load_seconds, 3),
        )
        for m in service.models
    ]
    failed = [
        FailedModel(name=f.name, path=f.path, reason=f.reason)
        for f in service.registry.failures.values()
    ]
    return ModelsResponse(models=models, failed=failed, loading=service.loading)


@v1.post("/v1/classify", responses=TASK_ERRORS)
async def classify(
    body: ClassifyRequest, request: Request, service: ServiceDep
) -> ClassifyResponse:
    """Labels with scores (softmax, or sigmoid for multi-label models) per input, best first."""
    inputs = _as_list(body.inputs)
    model = service.resolve("classification", body.model)
    service.check_count(len(inputs))
    tm = model.task_model
    small = service.is_small(inputs)
    prepared, rows = await service.infer(
        request, model, lambda: tm.prepare(inputs, body.truncate), inline=small
    )
    results = await service.offload(tm.finish, prepared, rows, body.top_k, inline=small)
    usage = Usage(inputs=len(inputs), tokens=prepared.tokens)
    return ClassifyResponse(model=model.name, results=results, usage=usage)


@v1.post("/v1/qa", responses=TASK_ERRORS)
async def question_answering(body: QARequest, request: Request, service: ServiceDep) -> QAResponse:
    """Answer spans with character offsets into each context; long contexts are read in
    overlapping windows."""
    pairs = body.pairs()
    model = service.resolve("qa", body.model)
    service.check_count(len(pairs))
    tm = model.task_model
    small = service.is_small([(p.question, p.context) for p in pairs])
    prepared, rows = await service.infer(request, model, lambda: tm.prepare(pairs), inline=small)
    results = await service.offload(
        tm.finish,
        prepared,
        rows,
        body.top_k,
        body.max_answer_length,
        body.allow_no_answer,
        inline=small,
    )
    usage = Usage(inputs=len(pairs), tokens=prepared.tokens)
    return QAResponse(model=model.name, results=results, usage=usage)


@v1.post("/v1/fill-mask", responses=TASK_ERRORS)
async def fill_mask(
    body: FillMaskRequest, request: Request, service: ServiceDep
) -> FillMaskResponse:
    """For every mask token, candidate tokens with ids and scores, and the filled sentence."""
    texts = _as_list(body.inputs)
    model = service.resolve("fill-mask", body.model)
    service.check_count(len(texts))
    tm = model.task_model
    small = service.is_small(texts)
    prepared, rows = await service.infer(
        request, model, lambda: tm.prepare(texts, body.truncate, body.top_k), inline=small
    )
    results = await service.offload(tm.finish, prepared, rows, texts, body.top_k, inline=small)
    usage = Usage(inputs=len(texts), tokens=prepared.tokens)
    return FillMaskResponse(model=model.name, results=results, usage=usage)


@v1.post("/v1/token-classify", responses=TASK_ERRORS)
async def token_classify(
    body: TokenClassifyRequest, request: Request, service: ServiceDep
) -> TokenClassifyResponse:
    """Entities (label, text, character start/end, score) per input."""
    texts = _as_list(body.inputs)
    model = service.resolve("token-classification", body.model)
    service.check_count(len(texts))
    tm = model.task_model
    small = service.is_small(texts)
    prepared, rows = await service.infer(
        request, model, lambda: tm.prepare(texts, body.truncate), inline=small
    )
    results = await service.offload(tm.finish, prepared, rows, texts, inline=small)
    usage = Usage(inputs=len(texts), tokens=prepared.tokens)
    return TokenClassifyResponse(model=model.name, results=results, usage=usage)


@v1.post("/v1/summarize", responses=TASK_ERRORS)
async def summarize(
    body: SummarizeRequest, request: Request, service: ServiceDep
) -> SummarizeResponse:
    """Extractive summary per input: the best-scored sentences (a sentence repeating a word
    trigram of one already chosen is skipped), in document order, with character offsets."""
    texts = _as_list(body.inputs)
    model = service.resolve("extractive-summarization", body.model)
    service.check_count(len(texts))
    tm = model.task_model
    small = service.is_small(texts)
    prepared, rows = await service.infer(
        request, model, lambda: tm.prepare(texts, body.truncate), inline=small
    )
    results = await service.offload(tm.finish, prepared, rows, body.max_sentences, inline=small)
    usage = Usage(inputs=len(texts), tokens=prepared.tokens)
    return SummarizeResponse(model=model.name, results=results, usage=usage)


@v1.post("/v1/translate", responses=TASK_ERRORS)
async def translate(
    body: TranslateRequest, request: Request, service: ServiceDep
) -> TranslateResponse:
    """Translation per input (BERT2BERT): greedy decoding (beam_size 1) or beam search. Inputs
    of concurrent requests are batched, and generation is batched continuously: a new input
    joins the decoder steps in flight at the next step."""
    texts = _as_list(body.inputs)
    model = service.resolve("translation", body.model)
    service.check_count(len(texts))
    tm = model.task_model
    small = service.is_small(texts)
    prepared, rows = await service.infer(
        request,
        model,
        lambda: tm.prepare(texts, body.beam_size, body.max_new_tokens, body.truncate),
        inline=small,
    )
    results = await service.offload(tm.finish, prepared, rows, inline=small)
    generated = sum(r.tokens for r in results)
    usage = Usage(inputs=len(texts), tokens=prepared.tokens + generated)
    return TranslateResponse(model=model.name, results=results, usage=usage)


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
