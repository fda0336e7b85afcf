"""hack/ scripts of the images/kind area: shellcheck clean, and kind-up's steps checked through
its dry run (no Docker engine here): what it builds, loads and installs, and that the chart
then runs only images it loaded."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.conftest import CHART, render
from tests.support.require import missing_dependency

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["hack/images.sh", "hack/kind-up.sh", "hack/kind-down.sh", "hack/sync-chart-crds.sh"]


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        missing_dependency("shellcheck missing")
    result = subprocess.run(
        [shellcheck, "--severity=style", *SCRIPTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


NODE_IMAGE = re.compile(r"kindest/node:v1\.35\.\d+@sha256:[0-9a-f]{64}")


def test_kind_config() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    # Every node runs the same Kubernetes 1.35 node image, pinned by digest (a tag can move).
    images = {n["image"] for n in config["nodes"]}
    assert len(images) == 1
    assert NODE_IMAGE.fullmatch(images.pop())


def test_image_names_match_the_chart_defaults() -> None:
    listed = subprocess.run(
        ["bash", "hack/images.sh", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for line in listed:
        component, dockerfile, image = line.split()
        assert (ROOT / dockerfile).is_file()
        section = values["operator"] if component == "operator" else values["services"][component]
        assert image == f"{section['image']['repository']}:dev"


def _fake_tools(tmp_path: Path, names: list[str]) -> dict[str, str]:
    """Stand-ins that log their arguments; `kind get clusters` prints nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls.log"\n')
        script.chmod(0o755)
    # The real helm, under another name, for rendering what kind-up would install.
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _kind_up_dry_run(
    tmp_path: Path, *steps: str, env: dict[str, str]
) -> tuple[list[list[str]], subprocess.CompletedProcess[str]]:
    """hack/kind-up.sh --dry-run: the commands it would run, parsed from its "+ ..." lines."""
    run_env = {**os.environ, **env, "AZORA_KIND_STATE": str(tmp_path / "state")}
    run_env["KIND_CLUSTER"] = "azora-dry-run-test"
    result = subprocess.run(
        ["bash", "hack/kind-up.sh", "--dry-run", *steps],
        cwd=ROOT, env=run_env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line[:2] == "+ "]
    return commands, result


def _kind_images() -> dict[str, tuple[str, str]]:
    """component -> (Dockerfile, full local image name), from hack/images.sh: every image the
    local cluster needs except the pause image (kind brings its own)."""
    listed = subprocess.run(
        ["bash", "hack/images.sh", "list", "all"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    images = {}
    for line in listed:
        component, dockerfile, image = line.split()
        if component != "pause":
            images[component] = (dockerfile, f"localhost/{image}")
    return images


def _pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for obj in objects:
        if obj["kind"] == "Pod":
            specs.append(obj["spec"])
        elif obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            specs.append(obj["spec"]["template"]["spec"])
    return specs


def test_kind_up_with_docker_builds_loads_and_installs_every_image_the_chart_runs(
    tmp_path: Path,
) -> None:
    """The bug a new user hit: the chart's dev PostgreSQL and migration Jobs ran an image that
    was never loaded into kind, under pullPolicy Never. Now every image any pod of the install
    runs (Deployments, the PostgreSQL StatefulSet, the hook Jobs, the helm test Pod) is one that
    kind-up built and loaded."""
    commands, result = _kind_up_dry_run(tmp_path, env={"AZORA_KIND_ENGINE": "docker"})
    assert "engine docker" in result.stderr
    assert commands[0][:5] == ["kind", "create", "cluster", "--name", "azora-dry-run-test"]
    assert commands[0][commands[0].index("--config") + 1] == str(ROOT / "kind-config.yaml")
    expected = _kind_images()
    assert {"enrollment", "ledger", "pricing", "orchestrator", "operator", "postgresql"} <= set(
        expected
    )
    builds = {c[c.index("-t") + 1]: c for c in commands if c[:2] == ["docker", "build"]}
    assert set(builds) == {image for _, image in expected.values()}
    for dockerfile, image in expected.values():
        build = builds[image]
        assert build[build.index("-f") + 1] == str(ROOT / dockerfile)
        assert (ROOT / dockerfile).is_file()
    # The PostgreSQL image builds from its own folder, the services from the workspace root.
    assert builds[expected["postgresql"][1]][-1] == str(ROOT / "hack/images/postgresql")
    assert builds[expected["ledger"][1]][-1] == str(ROOT)
    (load,) = [c for c in commands if c[:3] == ["kind", "load", "docker-image"]]
    loaded = set(load[5:])
    assert loaded == {image for _, image in expected.values()}
    (install,) = [c for c in commands if c[:3] == ["helm", "upgrade", "--install"]]
    assert ["helm", "test", "azora", "--namespace", "azora", "--timeout", "5m"] in commands
    assert "kubectl -n azora port-forward svc/azora-ledger 8102:8000" in result.stdout

    # Render exactly what kind-up installs (its values file) with the real chart.
    values = Path(install[install.index("--values") + 1])
    assert values.is_file()
    specs = _pod_specs(render(values=[values]))
    containers = [c for s in specs for c in s.get("initContainers", []) + s["containers"]]
    assert len(specs) >= 10  # 5 Deployments, PostgreSQL, 4 migration Jobs, the test Pod
    running = {c["image"] for c in containers}
    assert running <= loaded, f"not loaded into kind: {running - loaded}"
    assert expected["postgresql"][1] in running
    assert {c.get("imagePullPolicy") for c in containers} == {"Never"}


def test_kind_up_without_a_docker_daemon_builds_with_buildah(tmp_path: Path) -> None:
    """A docker CLI whose daemon does not answer must not pick the Docker branch. The real
    docker CLI (when installed) is pointed at a socket nobody listens on."""
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    commands, result = _kind_up_dry_run(tmp_path, "images", "load", env=env)
    assert "engine buildah" in result.stderr
    assert not [c for c in commands if c[0] == "docker"]
    expected = _kind_images()
    components = list(expected)
    build = ["env", "AZORA_IMAGE_TAG=dev", "bash", str(ROOT / "hack/images.sh"), "build"]
    assert [*build, *components] in commands
    archive = [*build[:-1], "archive", *components]
    assert archive in commands
    loads = [c[-1] for c in commands if c[:3] == ["kind", "load", "image-archive"]]
    assert loads == [f"<archive of {image}>" for _, image in expected.values()]


def test_kind_up_rejects_unknown_steps_and_kind_down_is_safe(tmp_path: Path) -> None:
    bad = subprocess.run(
        ["bash", "hack/kind-up.sh", "deploy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert "unknown step: deploy" in bad.stderr
    env = _fake_tools(tmp_path, ["kind"])
    down = subprocess.run(
        ["bash", "hack/kind-down.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 0
    assert "no kind cluster named azora" in down.stderr


def test_sync_chart_crds_copies_byte_for_byte(tmp_path: Path) -> None:
    fake = tmp_path / "repo"
    (fake / "hack").mkdir(parents=True)
    shutil.copy(ROOT / "hack/sync-chart-crds.sh", fake / "hack")
    shutil.copytree(ROOT / "crds", fake / "crds")
    stale = fake / "charts/azora/crds"
    stale.mkdir(parents=True)
    (stale / "removed.azora.io.yaml").write_text("old")
    result = subprocess.run(
        ["bash", str(fake / "hack/sync-chart-crds.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in stale.iterdir()) == sorted(
        p.name for p in (ROOT / "crds").iterdir()
    )
    for path in (ROOT / "crds").iterdir():
        assert (stale / path.name).read_bytes() == path.read_bytes()
