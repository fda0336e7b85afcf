"""``azora-<service> serve|migrate``: the console entry point every service shares."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from azora_common.migrations import upgrade_to_head
from azora_common.settings import ServiceSettings

ExtraCommand = Callable[[argparse.Namespace, ServiceSettings], int]


def service_main(
    *,
    prog: str,
    settings_factory: Callable[[], ServiceSettings],
    app_factory: str,
    migrations: Path,
    extra_commands: dict[str, tuple[str, ExtraCommand]] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default=None, help="bind address (default from settings)")
    serve.add_argument("--port", type=int, default=None, help="port (default from settings)")
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--migrate", action="store_true", help="apply database migrations before serving"
    )
    sub.add_parser("migrate", help="apply database migrations up to head")
    for name, (help_text, _) in (extra_commands or {}).items():
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)

    settings = settings_factory()
    if args.command == "migrate" or (args.command == "serve" and args.migrate):
        upgrade_to_head(migrations, settings.database_url)
        if args.command == "migrate":
            return 0
    if args.command == "serve":
        uvicorn.run(
            app_factory,
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=10,
        )
        return 0
    _, command = (extra_commands or {})[args.command]
    return command(args, settings)


def exit_with(code: int) -> None:
    sys.exit(code)
