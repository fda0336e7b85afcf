"""``azora-pricing serve|migrate``."""

from __future__ import annotations

import sys

from azora_common.cli import service_main
from azora_pricing.app import MIGRATIONS
from azora_pricing.settings import PricingSettings


def main() -> None:
    sys.exit(
        service_main(
            prog="azora-pricing",
            settings_factory=PricingSettings,
            app_factory="azora_pricing.app:create_app",
            migrations=MIGRATIONS,
        )
    )
