"""``azora-operator run|crd-docs``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import kopf

from azora_operator.logs import configure_logging
from azora_operator.registration import build_registry
from azora_operator.settings import OperatorSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azora-operator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (Kopf) until SIGTERM")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; globs allowed); default: cluster-wide",
    )
    run.add_argument(
        "--peering",
        default=None,
        help="join this Kopf peering (needs the KopfPeering CRDs); default: standalone",
    )
    run.add_argument("--priority", type=int, default=0, help="peering priority")
    docs = sub.add_parser("crd-docs", help="render docs/crds/<kind>.md from crds/*.yaml")
    docs.add_argument("--crds", type=Path, default=Path("crds"))
    docs.add_argument("--out", type=Path, default=Path("docs/crds"))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_command(argv))


def run_command(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crd-docs":
        from azora_operator.crddocs import write_docs

        for path in write_docs(args.crds, args.out):
            sys.stderr.write(f"wrote {path}\n")
        return 0

    settings = OperatorSettings()
    configure_logging(settings.log_level, settings.log_json)
    namespaces: list[str] = list(args.namespace) or list(settings.namespaces)
    registry, _ = build_registry(settings)
    # One replica is the supported setup (Deployment strategy Recreate): standalone means no
    # KopfPeering objects are needed or touched. See docs/operator.md before running more.
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            # Passing a peering name makes peering mandatory in Kopf: only when asked for.
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority if args.peering else None,
        )
    )
    return 0
