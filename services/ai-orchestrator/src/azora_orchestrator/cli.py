"""``azora-orchestrator serve|migrate``."""

from __future__ import annotations

import sys

from azora_common.cli import service_main
from azora_orchestrator.app import MIGRATIONS
from azora_orchestrator.settings import OrchestratorSettings


def main() -> None:
    sys.exit(
        service_main(
            prog="azora-orchestrator",
            settings_factory=OrchestratorSettings,
            app_factory="azora_orchestrator.app:create_app",
            migrations=MIGRATIONS,
        )
    )


if __name__ == "__main__":
    main()
