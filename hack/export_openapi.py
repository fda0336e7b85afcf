"""Write each service's OpenAPI document to docs/api/<service>.openapi.json.

`make openapi` regenerates them; tests/docs/test_openapi_in_sync.py fails when they drift.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_DIR = ROOT / "docs" / "api"
APPS = {
    "enrollment-service": (
        "azora_enrollment.app",
        "azora_enrollment.settings",
        "EnrollmentSettings",
    ),
    "azora-ledger": ("azora_ledger.app", "azora_ledger.settings", "LedgerSettings"),
    "azora-pricing": ("azora_pricing.app", "azora_pricing.settings", "PricingSettings"),
    "ai-orchestrator": (
        "azora_orchestrator.app",
        "azora_orchestrator.settings",
        "OrchestratorSettings",
    ),
}


def render(service: str) -> str:
    app_module, settings_module, settings_class = APPS[service]
    settings_cls: Any = getattr(importlib.import_module(settings_module), settings_class)
    app = importlib.import_module(app_module).create_app(
        settings_cls(database_url="postgresql://openapi@127.0.0.1/none")
    )
    return json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    API_DIR.mkdir(parents=True, exist_ok=True)
    for service in APPS:
        (API_DIR / f"{service}.openapi.json").write_text(render(service))
        print(f"wrote docs/api/{service}.openapi.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
