"""The published OpenAPI documents under docs/api/ match what the services serve."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "export_openapi", ROOT / "hack" / "export_openapi.py"
)
assert _spec is not None
assert _spec.loader is not None
export_openapi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_openapi)


@pytest.mark.parametrize("service", sorted(export_openapi.APPS))
def test_openapi_document_is_current(service: str) -> None:
    published = ROOT / "docs" / "api" / f"{service}.openapi.json"
    assert published.exists(), f"run `make openapi` to publish {published.name}"
    assert published.read_text() == export_openapi.render(service), (
        f"{published.name} is stale: run `make openapi`"
    )
