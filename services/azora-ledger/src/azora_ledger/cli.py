"""``azora-ledger serve|migrate``."""

from __future__ import annotations

import sys

from azora_common.cli import service_main
from azora_ledger.app import MIGRATIONS
from azora_ledger.settings import LedgerSettings


def main() -> None:
    sys.exit(
        service_main(
            prog="azora-ledger",
            settings_factory=LedgerSettings,
            app_factory="azora_ledger.app:create_app",
            migrations=MIGRATIONS,
        )
    )
