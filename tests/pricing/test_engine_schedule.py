"""Schedules: validity windows and wall-clock windows in a named zone across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.pricing.helpers import rule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


OFFICE_HOURS = rule(
    "office",
    {
        "schedule": {
            "timeZone": "Europe/Berlin",
            "windows": [{"days": ["mon"], "start": "09:00", "end": "17:00"}],
        },
        "action": {"percentOff": "10"},
    },
)


@pytest.mark.parametrize(
    ("instant", "active"),
    [
        # Monday 2025-03-24, CET (UTC+1): 09:00 local is 08:00 UTC.
        ("2025-03-24T07:59", False),
        ("2025-03-24T08:00", True),
        ("2025-03-24T15:59", True),
        ("2025-03-24T16:00", False),
        # Clocks go forward on Sunday 2025-03-30; Monday 2025-03-31 is CEST (UTC+2).
        ("2025-03-31T06:59", False),
        ("2025-03-31T07:00", True),  # 09:00 local: one hour earlier in UTC than a week before
        ("2025-03-31T08:00", True),
        ("2025-03-31T14:59", True),
        ("2025-03-31T15:00", False),  # 17:00 local
        ("2025-03-25T08:30", False),  # a Tuesday
    ],
)
def test_weekly_window_follows_the_zone_across_spring_forward(instant: str, active: bool) -> None:
    assert OFFICE_HOURS.active_at(at(instant)) is active


OVERNIGHT = rule(
    "night",
    {
        "schedule": {
            "timeZone": "Europe/Berlin",
            "windows": [{"days": ["sat"], "start": "22:00", "end": "06:00"}],
        },
        "action": {"percentOff": "10"},
    },
)


@pytest.mark.parametrize(
    ("instant", "active"),
    [
        # Saturday 2025-10-25 is CEST (UTC+2); the clocks fall back at 03:00 on Sunday.
        ("2025-10-25T19:59", False),
        ("2025-10-25T20:00", True),  # 22:00 CEST
        ("2025-10-26T00:30", True),  # 02:30 CEST, the first pass through the repeated hour
        ("2025-10-26T01:30", True),  # 02:30 CET, the second pass
        ("2025-10-26T04:59", True),  # 05:59 CET
        ("2025-10-26T05:00", False),  # 06:00 CET: the night lasted nine hours, as on the wall
        ("2025-10-26T20:00", False),  # Sunday night is not in the window
    ],
)
def test_overnight_window_across_fall_back(instant: str, active: bool) -> None:
    assert OVERNIGHT.active_at(at(instant)) is active


def test_window_in_the_skipped_hour_never_opens_that_day() -> None:
    skipped = rule(
        "skipped",
        {
            "schedule": {
                "timeZone": "Europe/Berlin",
                "windows": [{"days": ["sun"], "start": "02:00", "end": "03:00"}],
            },
            "action": {"percentOff": "10"},
        },
    )
    # 2025-03-30 01:00 UTC jumps from 02:00 CET to 03:00 CEST: 02:xx does not exist locally.
    assert not skipped.active_at(at("2025-03-30T00:59"))
    assert not skipped.active_at(at("2025-03-30T01:00"))
    assert skipped.active_at(at("2025-04-06T00:30"))  # a week later 02:30 CEST exists


def test_validity_window_is_half_open() -> None:
    limited = rule(
        "limited",
        {
            "schedule": {"validFrom": "2026-01-01T00:00:00Z", "validUntil": "2026-02-01T00:00:00Z"},
            "action": {"percentOff": "10"},
        },
    )
    assert not limited.active_at(at("2025-12-31T23:59:59"))
    assert limited.active_at(at("2026-01-01T00:00"))
    assert limited.active_at(at("2026-01-31T23:59:59"))
    assert not limited.active_at(at("2026-02-01T00:00"))


def test_window_ending_at_midnight() -> None:
    evening = rule(
        "evening",
        {
            "schedule": {"windows": [{"days": ["fri"], "start": "18:00", "end": "24:00"}]},
            "action": {"percentOff": "10"},
        },
    )
    assert evening.active_at(at("2026-01-16T23:59"))  # Friday, UTC
    assert not evening.active_at(at("2026-01-17T00:00"))
    assert not evening.active_at(at("2026-01-16T17:59"))
