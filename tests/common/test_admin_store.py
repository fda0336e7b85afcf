"""The generation-stamped admin store every service's admin API writes through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from azora_common.admin_store import (
    AdminStore,
    ConfigPut,
    ConfigWritten,
    StoredConfig,
    check_generation,
    listing_item,
    stored_config,
)
from azora_common.errors import StaleGeneration
from tests.common.sample_app import SampleSettings

SPEC = {"capacity": 3}


def put(generation: int, uid: str = "u1", spec: dict[str, Any] | None = None) -> ConfigPut:
    return ConfigPut(generation=generation, uid=uid, spec=SPEC if spec is None else spec)


def stored(generation: int, uid: str = "u1", live: bool = True) -> StoredConfig:
    return StoredConfig(uid=uid, generation=generation, revision=7, spec=SPEC, live=live)


def test_nothing_stored_is_a_write() -> None:
    assert check_generation(None, put(1), SPEC) is None


def test_same_generation_and_spec_is_a_replay_of_the_stored_revision() -> None:
    assert check_generation(stored(2), put(2), SPEC) == ConfigWritten(revision=7, generation=2)


def test_same_generation_with_another_spec_is_written() -> None:
    # Drift repair: the operator re-sends the resource's spec after the service's copy changed.
    assert check_generation(stored(2), put(2), {"capacity": 4}) is None


def test_older_generation_of_the_same_object_is_stale() -> None:
    with pytest.raises(StaleGeneration) as refused:
        check_generation(stored(3), put(2), SPEC)
    assert refused.value.extra == {"stored_generation": 3}


def test_another_uid_is_a_new_object_whose_generations_count_again() -> None:
    assert check_generation(stored(9, uid="old"), put(1, uid="new"), SPEC) is None


def test_a_soft_deleted_object_is_brought_back_at_its_generation() -> None:
    assert check_generation(stored(2, live=False), put(2), SPEC) is None


def test_the_body_refuses_unknown_fields_and_absurd_generations() -> None:
    with pytest.raises(ValueError, match="extra"):
        ConfigPut.model_validate({"generation": 1, "spec": {}, "status": {}})
    with pytest.raises(ValueError, match="less than or equal"):
        ConfigPut.model_validate({"generation": 2**63, "spec": {}})


# --- against PostgreSQL ---------------------------------------------------------------------

metadata = sa.MetaData()
things = sa.Table(
    "admin_store_things",
    metadata,
    sa.Column("namespace", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("uid", sa.Text, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("spec", JSONB, nullable=False),
    sa.Column("colour", sa.Text, nullable=True),
)
revisions = sa.Sequence("admin_store_things_revision", metadata=metadata)


async def next_revision(session: AsyncSession) -> int:
    return int((await session.execute(sa.select(revisions.next_value()))).scalar_one())


STORE = AdminStore(kind="thing", table=things, next_revision=next_revision, channel="things")


@pytest.fixture
async def engine(settings: SampleSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()


async def apply(engine: AsyncEngine, name: str, body: ConfigPut) -> ConfigWritten:
    async with AsyncSession(engine) as session, session.begin():
        await STORE.lock(session, "ns", name)
        replay = check_generation(
            stored_config(await STORE.get(session, "ns", name)), body, body.spec
        )
        if replay is not None:
            return replay
        written = await STORE.write(session, "ns", name, body, body.spec, colour="blue")
        await STORE.publish(session, name)
        return written


async def test_write_replace_replay_list_and_remove(engine: AsyncEngine) -> None:
    first = await apply(engine, "a", put(1))
    assert await apply(engine, "a", put(1)) == first  # replay: no new revision
    second = await apply(engine, "a", put(2, spec={"capacity": 5}))
    assert (second.generation, second.revision > first.revision) == (2, True)
    async with AsyncSession(engine) as session:
        rows = await STORE.list(session)
    assert [listing_item(r) for r in rows] == [
        {
            "namespace": "ns",
            "name": "a",
            "generation": 2,
            "uid": "u1",
            "revision": second.revision,
            "spec": {"capacity": 5},
        }
    ]
    assert rows[0].colour == "blue"
    async with AsyncSession(engine) as session, session.begin():
        await STORE.lock(session, "ns", "a")
        removed = await STORE.remove(session, "ns", "a")
        assert removed is not None
        assert removed.generation == 2
        assert removed.revision > second.revision
        assert await STORE.remove(session, "ns", "a") is None


async def test_racing_first_writes_of_one_object_serialise(engine: AsyncEngine) -> None:
    # Without the advisory lock both would see "nothing stored" and the older generation could
    # land last; with it, the newer generation always stays.
    results = await asyncio.gather(
        *(apply(engine, "raced", put(g)) for g in (3, 1, 2, 3, 1)), return_exceptions=True
    )
    assert all(isinstance(r, ConfigWritten | StaleGeneration) for r in results)
    async with AsyncSession(engine) as session:
        row = await STORE.get(session, "ns", "raced")
    assert row is not None
    assert row.generation == 3
