"""Application factory for azora-ledger."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_ledger import __version__
from azora_ledger.api import router
from azora_ledger.settings import LedgerSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    settings = settings or LedgerSettings()
    return create_service_app(
        settings=settings,
        title="Azora Ledger",
        version=__version__,
        description="A double-entry ledger: accounts, transactions, balances and reports.",
        migrations=MIGRATIONS,
        routers=[router],
    )
