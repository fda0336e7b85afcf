"""The compose files: each service folder's docker-compose.yml and the whole platform's
(examples/compose/docker-compose.yml). Valid against the Compose specification (a strict subset
schema, tests/images/compose_schema.json) and wired right: PostgreSQL healthy -> the migrations
run once -> the service starts, hardened, on the image its Dockerfile builds, under the name
hack/images.sh gives it. tests/images/test_compose_run.py runs them for real with podman."""

from __future__ import annotations

import json
import re
import subprocess
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
PLATFORM = ROOT / "examples" / "compose" / "docker-compose.yml"


def load(folder: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (ROOT / "services" / folder / "docker-compose.yml").read_text()
    )
    return data


def local_images() -> dict[str, str]:
    """Dockerfile -> the image name hack/images.sh builds from it (localhost/azora/...:dev)."""
    listed = subprocess.run(
        ["bash", "hack/images.sh", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    images = {}
    for line in listed:
        _, dockerfile, image = line.split()
        images[dockerfile] = "localhost/" + image.replace(":dev", ":${AZORA_IMAGE_TAG:-dev}")
    return images


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
    assert app["image"] == local_images()[f"services/{folder}/Dockerfile"]
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

    # Linux has no host.docker.internal unless the file maps it (Docker Desktop does).
    uses_host = "host.docker.internal" in json.dumps(services)
    for svc in services.values():
        if "host.docker.internal" in json.dumps(svc.get("environment", {})):
            assert "host.docker.internal:host-gateway" in svc.get("extra_hosts", [])
    assert uses_host == (folder == "enrollment-service")


def test_whole_platform_compose_file() -> None:
    """examples/compose: one PostgreSQL with a database per service, four migrations, the four
    services wired by service name; every service on its own port of 127.0.0.1."""
    compose: dict[str, Any] = yaml.safe_load(PLATFORM.read_text())
    jsonschema.validate(compose, SCHEMA)
    services = compose["services"]
    assert set(services) == {"postgres"} | {
        name for key, _, _ in SERVICES.values() for name in (key, f"migrate-{key}")
    }
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # The init script creates the databases POSTGRES_DB does not.
    (init,) = [v for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v]
    init_dir = PLATFORM.parent / init.split(":")[0]
    created = set(re.findall(r"CREATE DATABASE (\w+);", "".join(
        p.read_text() for p in sorted(init_dir.glob("*.sql"))
    )))  # fmt: skip
    databases = created | {postgres["environment"]["POSTGRES_DB"]}
    images = local_images()
    ports = set()
    for folder, (key, script, prefix) in SERVICES.items():
        app, migrate = services[key], services[f"migrate-{key}"]
        assert migrate["command"] == ["migrate"] and app["command"] == ["serve"]
        assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert app["depends_on"][f"migrate-{key}"] == {
            "condition": "service_completed_successfully"
        }
        assert migrate["build"] == {
            "context": "../..",
            "dockerfile": f"services/{folder}/Dockerfile",
        }
        assert migrate["image"] == app["image"] == images[f"services/{folder}/Dockerfile"]
        database = script.replace("-", "_")
        assert database in databases
        for svc in (migrate, app):
            env = svc["environment"]
            assert env[f"{prefix}DATABASE_URL"].endswith(f"@postgres:5432/{database}")
            assert json.loads(env[f"{prefix}API_TOKENS"])
            assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        (port,) = app["ports"]
        match = re.fullmatch(r"127\.0\.0\.1:\$\{AZORA_[A-Z]+_PORT:-(81\d\d)\}:8000", port)
        assert match, port
        ports.add(match.group(1))
        assert "/readyz" in " ".join(app["healthcheck"]["test"])
    assert ports == {"8101", "8102", "8103", "8104"}
    # Enrollment calls pricing and ledger by service name, with a token both accept.
    enrollment = services["enrollment"]["environment"]
    assert enrollment["ENROLLMENT_PRICING_URL"] == "http://pricing:8000"
    assert enrollment["ENROLLMENT_LEDGER_URL"] == "http://ledger:8000"
    token = enrollment["ENROLLMENT_SERVICE_TOKEN"]
    for key, scope in (("ledger", "LEDGER"), ("pricing", "PRICING")):
        granted = json.loads(services[key]["environment"][f"{scope}_API_TOKENS"])
        assert granted[token] == [f"{key}:read", f"{key}:write"]
