"""Kopf's Event queue as a test seam: ``kopf.event`` outside a running operator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import kopf
from kopf._core.engines import posting


@contextlib.contextmanager
def kopf_events() -> Iterator[list[tuple[str, str]]]:
    """Collect ``(type, reason)`` of the Events posted inside the block (call from async code).

    Kopf's handlers find their Event queue in context variables; this sets the same ones.
    """
    queue: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()
    tokens = (
        posting.settings_var.set(kopf.OperatorSettings()),
        posting.event_queue_loop_var.set(asyncio.get_running_loop()),
        posting.event_queue_var.set(queue),
    )
    posted: list[tuple[str, str]] = []
    try:
        yield posted
    finally:
        while not queue.empty():
            event = queue.get_nowait()
            posted.append((event.type, event.reason))
        posting.event_queue_var.reset(tokens[2])
        posting.event_queue_loop_var.reset(tokens[1])
        posting.settings_var.reset(tokens[0])
