"""Operator logging (``azora_operator.logs``): JSON lines with the services' keys plus the
Kubernetes object, and no line per routine timer firing."""

from __future__ import annotations

import json
import logging

from azora_operator.logs import JsonFormatter, QuietTimerSuccess


def _record(name: str, level: int, msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_services_keys_and_the_object() -> None:
    ref = {"kind": "PricingRule", "namespace": "ns", "name": "r", "uid": "u"}
    line = JsonFormatter().format(
        _record("kopf.objects", logging.INFO, "Handler 'apply' succeeded.", k8s_ref=ref)
    )
    entry = json.loads(line)
    assert {"ts", "level", "logger", "msg", "object"} <= set(entry)
    assert (entry["level"], entry["logger"], entry["object"]) == ("info", "kopf.objects", ref)
    plain = json.loads(JsonFormatter().format(_record("azora_operator", logging.WARNING, "x")))
    assert "object" not in plain


def test_a_routine_timer_success_is_not_logged_but_its_failure_is() -> None:
    quiet = QuietTimerSuccess()
    assert not quiet.filter(_record("kopf.objects", logging.INFO, "Timer 'resync' succeeded."))
    assert quiet.filter(
        _record("kopf.objects", logging.ERROR, "Timer 'resync' failed temporarily: x")
    )
    assert quiet.filter(_record("kopf.objects", logging.INFO, "Handler 'apply' succeeded."))
