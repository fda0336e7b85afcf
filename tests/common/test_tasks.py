"""azora_common.tasks.stop_tasks: how every service stops its background loops."""

from __future__ import annotations

import asyncio

import pytest

from azora_common.tasks import stop_tasks


async def test_every_task_is_cancelled_and_awaited_and_none_is_skipped() -> None:
    forever = asyncio.Event()
    tasks = [asyncio.create_task(forever.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    await stop_tasks(tasks[0], None, *tasks[1:])
    assert all(t.cancelled() for t in tasks)


async def test_an_exception_other_than_cancellation_is_raised() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await stop_tasks(task)
