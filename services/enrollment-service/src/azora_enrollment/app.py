"""Application factory for azora-enrollment."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_enrollment import __version__
from azora_enrollment.api import router
from azora_enrollment.settings import EnrollmentSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: EnrollmentSettings | None = None) -> FastAPI:
    settings = settings or EnrollmentSettings()
    return create_service_app(
        settings=settings,
        title="Azora Enrollment",
        version=__version__,
        description="Student enrollment, waitlists and analytics that never over-enroll.",
        migrations=MIGRATIONS,
        routers=[router],
    )
