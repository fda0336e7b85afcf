"""Logging of the operator process: one stderr handler, JSON lines by default.

The lines have the same keys as the services' logs (``ts``, ``level``, ``logger``, ``msg``,
``exc``) plus ``object``, the Kubernetes object a Kopf log line is about (Kopf's own
reference: apiVersion, kind, namespace, name, uid). Standard library only: the operator does
not carry the services' web stack for one formatter.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry["object"] = ref
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class QuietTimerSuccess(logging.Filter):
    """Drop Kopf's "Timer '…' succeeded." line.

    The resync timer fires for every resource every interval; one INFO line per firing
    (500 resources every 30 s: ~17 lines/s) would say nothing. Failures still log, and
    ``LOG_LEVEL=DEBUG`` keeps everything.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "kopf.objects"
            and record.levelno == logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith("Timer ")
            and record.msg.endswith(" succeeded.")
        )


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    if level.upper() != "DEBUG":
        handler.addFilter(QuietTimerSuccess())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
