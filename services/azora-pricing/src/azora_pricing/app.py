"""Application factory for azora-pricing."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_pricing import __version__
from azora_pricing.api import router
from azora_pricing.settings import PricingSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: PricingSettings | None = None) -> FastAPI:
    settings = settings or PricingSettings()
    return create_service_app(
        settings=settings,
        title="Azora Pricing",
        version=__version__,
        description="A dynamic pricing engine: products, rules, promotions and explainable quotes.",
        migrations=MIGRATIONS,
        routers=[router],
    )
