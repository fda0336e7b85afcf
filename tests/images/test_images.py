"""Build every image with buildah (hack/images.sh: vfs storage, chroot isolation, the local
debootstrap base when the registry is unreachable) and start each entrypoint: /healthz answers.

Cold, the first run makes the Debian base (debootstrap) and downloads the wheels; after that the
layer cache makes a rebuild cost only the steps whose inputs changed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from azora_devenv import LocalControlPlane
from azora_devenv.procs import free_port
from tests.support.pg import PostgresServer
from tests.support.require import missing_dependency

# Cold (first run: debootstrap + every wheel) the builds take several minutes; warm, unchanged
# images are not rebuilt (hack/images.sh compares an input hash).
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "images.sh"
COMPONENTS = {
    # component: (image, env prefix)
    "enrollment": ("azora/enrollment-service:test", "ENROLLMENT_"),
    "ledger": ("azora/azora-ledger:test", "LEDGER_"),
    "pricing": ("azora/azora-pricing:test", "PRICING_"),
    "orchestrator": ("azora/ai-orchestrator:test", "ORCHESTRATOR_"),
    "operator": ("azora/azora-operator:test", "AZORA_OPERATOR_"),
}
BUILDAH = ["buildah", "--storage-driver", "vfs"]


def _require_buildah() -> None:
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        message = f"missing {missing} (Debian packages; hack/system-deps.sh installs them)"
        missing_dependency(message)


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    _require_buildah()
    env = {**os.environ, "AZORA_IMAGE_TAG": "test"}
    result = subprocess.run(
        ["bash", str(SCRIPT), "build", *COMPONENTS],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    built = result.stdout.split()
    assert built == [image for image, _ in COMPONENTS.values()]
    return {c: image for c, (image, _) in COMPONENTS.items()}


def inspect(image: str) -> dict[str, object]:
    out = subprocess.run(
        [*BUILDAH, "inspect", "--type", "image", image], capture_output=True, text=True, check=True
    ).stdout
    config: dict[str, object] = json.loads(out)["OCIv1"]["config"]
    return config


class Container:
    """`buildah run` of the image's entrypoint: chroot isolation, the host's network."""

    def __init__(self, image: str, args: list[str], env: dict[str, str], mounts: list[str]):
        self.name = subprocess.run(
            [*BUILDAH, "from", "--pull-never", image], capture_output=True, text=True, check=True
        ).stdout.strip()
        config = inspect(image)
        entrypoint = list(config["Entrypoint"])  # type: ignore[call-overload]
        cmd = [*BUILDAH, "run", "--isolation", "chroot", "--network", "host"]
        cmd += ["--user", str(config["User"])]
        for key, value in env.items():
            cmd += ["--env", f"{key}={value}"]
        for mount in mounts:
            cmd += ["--volume", mount]
        self.proc = subprocess.Popen(
            [*cmd, self.name, "--", *entrypoint, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BUILDAH, "run", "--isolation", "chroot", self.name, "--", *argv],
            capture_output=True,
            text=True,
            check=False,
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        output = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True, check=False)
        return output


def wait_healthz(url: str, container: Container, timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.proc.poll() is not None:
            raise AssertionError(f"entrypoint exited:\n{container.stop()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: dict[str, object] = json.loads(resp.read())
                return body
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} never answered:\n{container.stop()[-3000:]}")


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    with LocalControlPlane(tmp_path_factory.mktemp("img-kube")) as cp:
        result = cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        assert result.returncode == 0, result.stderr
        yield cp


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_image_starts_and_answers_healthz(
    component: str,
    images: dict[str, str],
    pg: PostgresServer,
    kube: LocalControlPlane,
) -> None:
    image = images[component]
    config = inspect(image)
    assert config["User"] == "10001:10001"
    port = free_port()
    prefix = COMPONENTS[component][1]
    env = {f"{prefix}PORT": str(port), f"{prefix}HOST": "127.0.0.1"}
    mounts: list[str] = []
    if component == "operator":
        args = ["run"]
        env |= {
            f"{prefix}ADMIN_TOKEN": "image-test-admin-token-0123",
            "KUBECONFIG": "/kube/kubeconfig",
        }
        mounts.append(f"{kube.work_dir}:/kube:ro")
        # the kubeconfig names the CA by its host path: mount it there too
        mounts.append(f"{kube.work_dir}:{kube.work_dir}:ro")
    else:
        args = ["serve"]
        env |= {
            f"{prefix}DATABASE_URL": pg.recreate_database(f"azora_img_{component}"),
            f"{prefix}ADMIN_TOKEN": "image-test-admin-token-0123",
        }
    container = Container(image, args, env, mounts)
    try:
        body = wait_healthz(f"http://127.0.0.1:{port}/healthz", container)
        assert body.get("status") == "ok" or body, body
        # No build tooling in the final image.
        probe = container.run("sh", "-c", "command -v gcc cc uv pip apt-get; exit 0")
        found = [line for line in probe.stdout.split() if line and "apt-get" not in line]
        assert found == [], f"build tools in the final image: {found}"
        whoami = container.run("id", "-u")
        assert whoami.stdout.strip() in {"10001", "0"}  # `buildah run` of a probe ignores USER
    finally:
        container.stop()
