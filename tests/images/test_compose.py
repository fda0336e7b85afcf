"""Each service folder's docker-compose.yml: valid against the Compose specification (a strict
subset schema, tests/images/compose_schema.json) and wired right: PostgreSQL healthy -> the
migrations run once -> the service starts, hardened, on the image its Dockerfile builds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "enrollment-service": ("enrollment", "azora-enrollment", "ENROLLMENT_"),
    "azora-ledger": ("ledger", "azora-ledger", "LEDGER_"),
    "azora-pricing": ("pricing", "azora-pricing", "PRICING_"),
    "ai-orchestrator": ("orchestrator", "azora-orchestrator", "ORCHESTRATOR_"),
}
SCHEMA = json.loads((Path(__file__).parent / "compose_schema.json").read_text())


def load(folder: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (ROOT / "services" / folder / "docker-compose.yml").read_text()
    )
    return data


@pytest.mark.parametrize("folder", sorted(SERVICES))
def test_compose_file_matches_the_specification(folder: str) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(load(folder), SCHEMA)


def test_the_schema_rejects_typos() -> None:
    compose = load("azora-ledger")
    compose["services"]["ledger"]["enviroment"] = {"X": "1"}
    with pytest.raises(jsonschema.ValidationError, match="enviroment"):
        jsonschema.validate(compose, SCHEMA)
    compose = load("azora-ledger")
    compose["services"]["migrate"]["depends_on"]["postgres"]["condition"] = "healthy"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, SCHEMA)


@pytest.mark.parametrize("folder", sorted(SERVICES))
def test_compose_wiring(folder: str) -> None:
    key, script, prefix = SERVICES[folder]
    compose = load(folder)
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", key}
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    migrate, app = services["migrate"], services[key]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert app["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert migrate["command"] == ["migrate"]
    assert app["command"] == ["serve"]
    # One image, built from the service's Dockerfile at the workspace root.
    assert migrate["image"] == app["image"]
    assert migrate["build"] == {"context": "../..", "dockerfile": f"services/{folder}/Dockerfile"}
    assert (ROOT / "services" / folder / "Dockerfile").is_file()
    for svc in (migrate, app):
        env = svc["environment"]
        database = env[f"{prefix}DATABASE_URL"]
        assert database.startswith("postgresql://azora:")
        assert database.endswith(f"@postgres:5432/{script.replace('-', '_')}")
        assert json.loads(env[f"{prefix}API_TOKENS"])
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    # Only on the loopback interface of the host.
    (port,) = app["ports"]
    assert re.fullmatch(r"127\.0\.0\.1:81\d\d:8000", port)
    assert "/readyz" in " ".join(app["healthcheck"]["test"])
    db_name = services["postgres"]["environment"]["POSTGRES_DB"]
    assert db_name == script.replace("-", "_")
