"""The insight change feed (azora_common.changes): cursors, the long poll, reset, delivery."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from azora_common.changes import ChangeFeed, publish_change


async def test_a_cursor_sees_each_later_key_of_its_plural_once() -> None:
    feed = ChangeFeed("postgresql://unused/none")
    start = await feed.changes("cohorts", None, wait=5)
    assert (start.reset, start.keys) == (False, [])  # no cursor: "from now", at once

    feed.record("cohorts/ns/a")
    feed.record("routes/ns/r")  # another plural: not ours
    feed.record("cohorts/ns/b")
    feed.record("cohorts/ns/a")  # twice: once in the answer
    got = await feed.changes("cohorts", start.cursor, wait=5)
    assert (got.reset, got.keys) == (False, ["ns/a", "ns/b"])

    again = await feed.changes("cohorts", got.cursor, wait=0)
    assert (again.reset, again.keys, again.cursor) == (False, [], got.cursor)


async def test_the_long_poll_waits_for_a_change_and_answers_it() -> None:
    feed = ChangeFeed("postgresql://unused/none")
    cursor = (await feed.changes("cohorts", None, wait=0)).cursor
    poll = asyncio.create_task(feed.changes("cohorts", cursor, wait=30))
    await asyncio.sleep(0.05)
    feed.record("routes/ns/r")  # wakes the poll, which is not about it and waits on
    await asyncio.sleep(0.05)
    assert not poll.done()
    feed.record("cohorts/ns/c")
    got = await asyncio.wait_for(poll, 5)
    assert (got.reset, got.keys) == (False, ["ns/c"])


async def test_nothing_changed_answers_empty_after_the_wait_with_the_cursor_moved_on() -> None:
    feed = ChangeFeed("postgresql://unused/none")
    cursor = (await feed.changes("cohorts", None, wait=0)).cursor
    feed.record("routes/ns/r")
    got = await feed.changes("cohorts", cursor, wait=0.1)
    assert (got.reset, got.keys) == (False, [])
    assert got.cursor != cursor  # past the other plural's key


async def test_a_cursor_this_ring_cannot_answer_is_a_reset() -> None:
    feed = ChangeFeed("postgresql://unused/none", size=4)
    cursor = (await feed.changes("cohorts", None, wait=0)).cursor
    other = ChangeFeed("postgresql://unused/none")  # another replica, or a restart
    foreign = (await other.changes("cohorts", None, wait=0)).cursor
    for cursor_ in (foreign, "garbage", f"{feed.epoch}.99"):
        got = await feed.changes("cohorts", cursor_, wait=5)
        assert (got.reset, got.keys) == (True, []), cursor_
        assert got.cursor == feed.cursor
    for i in range(5):  # one more than the ring holds: the cursor fell off
        feed.record(f"cohorts/ns/{i}")
    got = await feed.changes("cohorts", cursor, wait=5)
    assert got.reset
    # Going on from the reset's cursor works as usual.
    feed.record("cohorts/ns/after")
    assert (await feed.changes("cohorts", got.cursor, wait=5)).keys == ["ns/after"]

    feed._new_epoch()  # what a lost LISTEN connection does: notifications may be gone
    assert (await feed.changes("cohorts", got.cursor, wait=5)).reset


async def test_every_replica_hears_committed_changes_and_never_rolled_back_ones(
    sample_db: str,
) -> None:
    replicas = [ChangeFeed(sample_db), ChangeFeed(sample_db)]
    engine = create_async_engine(sample_db)
    try:
        for feed in replicas:
            await feed.start()
        cursors = []
        for feed in replicas:
            # LISTEN is in place once a published key comes back.
            first = (await feed.changes("widgets", None, wait=0)).cursor
            while True:
                feed.publish("widgets", "probe", "probe")
                got = await feed.changes("widgets", first, wait=1)
                if got.keys:
                    break
            cursors.append(got.cursor)
        await asyncio.sleep(0.2)
        cursors = [
            (await f.changes("widgets", c, wait=0)).cursor
            for f, c in zip(replicas, cursors, strict=True)
        ]

        async with engine.connect() as conn:
            trans = await conn.begin()
            session = AsyncSession(bind=conn)
            await publish_change(session, "widgets", "ns", "rolled-back")
            await trans.rollback()
        async with AsyncSession(engine) as session, session.begin():
            await publish_change(session, "widgets", "ns", "committed")
            await session.execute(sa.text("SELECT 1"))
        replicas[1].publish("widgets", "ns", "in-memory")  # seen by one replica only

        for feed, cursor in zip(replicas, cursors, strict=True):
            keys: list[str] = []
            while "ns/in-memory" not in keys:
                got = await asyncio.wait_for(feed.changes("widgets", cursor, wait=5), 10)
                keys += got.keys
                cursor = got.cursor
            assert "ns/committed" in keys
            assert "ns/rolled-back" not in keys
    finally:
        for feed in replicas:
            await feed.stop()
        await engine.dispose()
