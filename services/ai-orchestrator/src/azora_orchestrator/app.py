"""Application factory for azora-orchestrator."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_orchestrator import __version__
from azora_orchestrator.api import router
from azora_orchestrator.settings import OrchestratorSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()
    return create_service_app(
        settings=settings,
        title="Azora AI Orchestrator",
        version=__version__,
        description="An OpenAI-compatible gateway with weighted, health-aware routing.",
        migrations=MIGRATIONS,
        routers=[router],
    )
