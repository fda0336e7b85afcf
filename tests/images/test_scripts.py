"""hack/ scripts of the images/kind area: shellcheck clean, and each kind-up step testable on
its own with stand-in tools (no Docker engine here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.chart.conftest import CHART, helm
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


def test_kind_config() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]


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


def test_kind_up_steps_run_alone_with_stand_in_tools(tmp_path: Path) -> None:
    env = _fake_tools(tmp_path, ["kind", "kubectl", "helm", "docker"])
    result = subprocess.run(
        ["bash", "hack/kind-up.sh", "cluster", "images", "load", "install", "info"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0] == "kind get clusters"
    assert calls[1].startswith("kind create cluster --name azora --config ")
    builds = [c for c in calls if c.startswith("docker build")]
    assert len(builds) == 5
    assert any("services/azora-ledger/Dockerfile -t azora/azora-ledger:kind" in b for b in builds)
    (load,) = [c for c in calls if c.startswith("kind load docker-image")]
    assert load.count("azora/") == 5
    (install,) = [c for c in calls if c.startswith("helm upgrade --install azora")]
    assert "helm test azora --namespace azora --timeout 5m" in calls
    assert "kubectl -n azora port-forward svc/azora-ledger 8102:8000" in result.stdout

    # What kind-up installs is accepted by the chart (schema and templates): render it.
    args = install.split()[1:]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    rendered = helm(
        "template", "azora", str(CHART), *[x for s in sets for x in ("--set", s)]
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    images = {c["image"] for d in docs for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {
        "azora/enrollment-service:kind",
        "azora/azora-ledger:kind",
        "azora/azora-pricing:kind",
        "azora/ai-orchestrator:kind",
        "azora/azora-operator:kind",
    }
    assert {
        c["imagePullPolicy"] for d in docs for c in d["spec"]["template"]["spec"]["containers"]
    } == {"Never"}


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
