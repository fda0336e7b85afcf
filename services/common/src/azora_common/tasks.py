"""Stopping background tasks: every service's loops (listeners, flushers, sweepers, workers)
stop the same way."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel every task given (``None`` is skipped), then wait for each to end. A task's own
    cancellation is the expected ending; any other exception it ends with is raised."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
