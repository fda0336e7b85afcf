"""The collector tuning every service gets from create_service_app, once, after warm-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from azora_common.runtime import tune_gc
from tests.common.sample_app import SampleSettings, create_app
from tests.support.apps import running


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


@pytest.mark.usefixtures("restore_gc")
async def test_service_start_freezes_the_heap_and_raises_the_young_threshold(
    settings: SampleSettings,
) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    app = create_app(settings.model_copy(update={"gc_threshold": 12_345}))
    async with running(app):
        assert gc.get_threshold() == (12_345, 10, 10)
        assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restore_gc")
def test_zero_keeps_the_interpreter_defaults() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
