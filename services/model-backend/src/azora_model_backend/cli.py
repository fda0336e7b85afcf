"""``azora-model-backend [serve] [--host H] [--port P] [--instance-name N]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from azora_model_backend.settings import BackendSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="azora-model-backend",
        description="OpenAI-compatible local model server (settings: MODEL_BACKEND_* env vars)",
    )
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.add_argument("--host", default=None, help="bind address (MODEL_BACKEND_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (MODEL_BACKEND_PORT)")
    parser.add_argument(
        "--instance-name",
        default=None,
        help="name in responses and metrics (MODEL_BACKEND_INSTANCE_NAME)",
    )
    args = parser.parse_args(argv)
    # One BLAS thread unless told otherwise (read when numpy loads, which is after this line).
    # Measured on a shared 2-core machine: OpenBLAS's default threads made one embedding 10x
    # slower (435 vs 42 ms) as its spinning workers fight other processes for the cores.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Flags win over the environment; the settings class reads both the same way.
    for flag, env in (
        (args.host, "MODEL_BACKEND_HOST"),
        (args.port, "MODEL_BACKEND_PORT"),
        (args.instance_name, "MODEL_BACKEND_INSTANCE_NAME"),
    ):
        if flag is not None:
            os.environ[env] = str(flag)

    settings = BackendSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    uvicorn.run(
        "azora_model_backend.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    sys.exit(0)
