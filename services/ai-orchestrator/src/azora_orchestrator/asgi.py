"""ASGI plumbing of the data plane: reading the body, writing answers and SSE, OpenAI errors.

The data plane speaks raw ASGI messages rather than Starlette's response classes: an answer is
two ``send`` calls with a prepared header list, and a stream is relayed chunk by chunk as the
backend delivers it. The routes themselves are ordinary ServiceApp plain routes (``api.py``);
what a handler returns is one of the :class:`Answer` objects here or the upstream relay, both
ASGI callables that ServiceApp sends as it sends any response.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from azora_orchestrator.errors import ERROR_TYPES, openai_error_body

JSON = b"application/json"
SSE = b"text/event-stream"

Headers = Sequence[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` when it grows beyond ``limit`` (also without Content-Length)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: Headers
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    status: int,
    message: str,
    code: str,
    param: str | None = None,
    headers: Headers = (),
) -> None:
    body = openai_error_body(message, ERROR_TYPES.get(status, "api_error"), code, param)
    await respond(send, status, body, JSON, headers)


class Answer(Response):
    """A complete answer (status, body, content type, extra headers) as an ASGI response.

    Starlette's ``Response`` is subclassed only so that a handler may return it wherever a
    response is expected; its header machinery is not used.
    """

    background = None

    def __init__(
        self, status: int, body: bytes, content_type: bytes = JSON, extra: Headers = ()
    ) -> None:
        self.status_code = status
        self.payload = body
        self.content_type = content_type
        self.extra = extra

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, self.status_code, self.payload, self.content_type, self.extra)


class NoAnswer(Response):
    """For a client that left before its request was complete: nothing to send."""

    background = None

    def __init__(self) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def error(
    status: int, message: str, code: str, param: str | None = None, headers: Headers = ()
) -> Answer:
    body = openai_error_body(message, ERROR_TYPES.get(status, "api_error"), code, param)
    return Answer(status, body, JSON, headers)


def too_large(limit: int) -> Answer:
    return error(413, f"the request body exceeds {limit} bytes", "request_too_large")


# -- server-sent events ------------------------------------------------------------------------
# Message builders rather than coroutines: the relay loop in upstream.py sends them itself, so a
# stream costs no await beyond the ``send`` of each message.


def stream_start(status: int, content_type: bytes, extra: Headers) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type or SSE),
            (b"cache-control", b"no-cache"),
            *extra,
        ],
    }


def stream_chunk(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


def stream_error(message: str) -> Message:
    """The one last SSE event of a stream whose backend failed after the first byte."""
    event = openai_error_body(message, "api_error", "upstream_stream_error")
    return stream_chunk(b"data: " + event + b"\n\n")


def stream_end() -> Message:
    return {"type": "http.response.body", "body": b"", "more_body": False}
