"""``azora-enrollment serve|migrate``."""

from __future__ import annotations

import sys

from azora_common.cli import service_main
from azora_enrollment.app import MIGRATIONS
from azora_enrollment.settings import EnrollmentSettings


def main() -> None:
    sys.exit(
        service_main(
            prog="azora-enrollment",
            settings_factory=EnrollmentSettings,
            app_factory="azora_enrollment.app:create_app",
            migrations=MIGRATIONS,
        )
    )
