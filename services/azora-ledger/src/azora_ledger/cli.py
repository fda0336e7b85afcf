"""``azora-ledger serve|migrate|verify``."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg
import orjson

from azora_common.cli import service_main
from azora_common.listener import libpq_url
from azora_common.settings import ServiceSettings
from azora_ledger.app import MIGRATIONS
from azora_ledger.settings import LedgerSettings
from azora_ledger.verify.service import verify


def verify_command(args: argparse.Namespace, settings: ServiceSettings) -> int:
    """Print the verification report as JSON; exit 0 when every invariant holds, 1 otherwise."""

    async def run() -> dict[str, object]:
        conn = await asyncpg.connect(libpq_url(settings.database_url))
        try:
            return await verify(conn)
        finally:
            await conn.close()

    result = asyncio.run(run())
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> None:
    sys.exit(
        service_main(
            prog="azora-ledger",
            settings_factory=LedgerSettings,
            app_factory="azora_ledger.app:create_app",
            migrations=MIGRATIONS,
            extra_commands={
                "verify": ("recompute every balance and check invariants", verify_command)
            },
            argv=argv,
        )
    )
