"""Routes: the OpenAI data plane, /v1/models, /healthz and /metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response, StreamingResponse

from azora_model_backend.errors import BackendError, json_response
from azora_model_backend.schemas import ChatCompletionRequest, EmbeddingsRequest
from azora_model_backend.service import ModelBackend

router = APIRouter()


def get_backend(request: Request) -> ModelBackend:
    backend: ModelBackend = request.app.state.backend
    return backend


BackendDep = Annotated[ModelBackend, Depends(get_backend)]


def _headers(backend: ModelBackend) -> dict[str, str]:
    return {"x-azora-instance": backend.settings.instance_name}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, backend: BackendDep) -> Response:
    started = time.perf_counter()
    try:
        prep = backend.prepare_chat(body)
    except BackendError as exc:
        backend.metrics.observe_request("chat", exc.status, None)
        raise
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> Any:
            try:
                async for piece in backend.chat_stream(prep, include_usage):
                    yield piece
            finally:
                backend.metrics.observe_request("chat", 200, time.perf_counter() - started)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={**_headers(backend), "cache-control": "no-cache"},
        )
    answer = await backend.chat_completion(prep)
    backend.metrics.observe_request("chat", 200, time.perf_counter() - started)
    return json_response(answer, headers=_headers(backend))


@router.post("/v1/embeddings", response_model=None)
async def create_embeddings(body: EmbeddingsRequest, backend: BackendDep) -> Response:
    started = time.perf_counter()
    try:
        answer = await backend.embed(body)
    except BackendError as exc:
        backend.metrics.observe_request("embeddings", exc.status, None)
        raise
    backend.metrics.observe_request("embeddings", 200, time.perf_counter() - started)
    return json_response(answer, headers=_headers(backend))


@router.get("/v1/models", response_model=None)
async def list_models(backend: BackendDep) -> Response:
    return json_response(backend.models(), headers=_headers(backend))


@router.get("/healthz", response_model=None)
async def healthz(backend: BackendDep) -> Response:
    # Models load before the server accepts connections, so answering at all means ready.
    return json_response({"status": "ok", "instance": backend.settings.instance_name})


@router.get("/metrics", response_model=None)
async def metrics(backend: BackendDep) -> Response:
    return Response(generate_latest(backend.metrics.registry), media_type=CONTENT_TYPE_LATEST)
