"""One rule for missing test dependencies: in CI (``CI=true``) a failure, elsewhere a skip."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_dependency(message: str) -> NoReturn:
    """Stop the test: a missing tool fails CI; on a developer's machine it skips, saying why."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tools(*names: str) -> None:
    """The binaries ``make tools`` builds (etcd, kube-apiserver, kubectl, helm) must exist."""
    from azora_devenv.tools import missing_tools

    missing = missing_tools(*names)
    if missing:
        missing_dependency(f"tools not built ({', '.join(missing)}): run `make tools`")
