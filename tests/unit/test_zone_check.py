"""run-schedule's zone check (policy.schedules.zone_mismatch): pure, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from sbbackup.policy.schedules import Schedule, zone_mismatch

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
BERLIN_2AM = Schedule("nightly", "0 2 * * *", 7, timezone="Europe/Berlin")
HOURLY_BERLIN = Schedule("hourly", "0 * * * *", 7, timezone="Europe/Berlin")
KOLKATA_2AM = Schedule("india", "0 2 * * *", 7, timezone="Asia/Kolkata")  # UTC+05:30


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("schedule", "now", "zones", "warns"),
    [
        # 02:00 Berlin in winter is 01:00 UTC: on time.
        (BERLIN_2AM, "2026-01-15T01:00:00+00:00", (UTC,), False),
        # cron started it a few minutes late: still that fire time.
        (BERLIN_2AM, "2026-01-15T01:07:00+00:00", (UTC,), False),
        # 02:00 UTC = 03:00 Berlin: cron reads the line in UTC (Debian ignores CRON_TZ).
        (BERLIN_2AM, "2026-01-15T02:00:00+00:00", (UTC,), True),
        (BERLIN_2AM, "2026-01-15T02:09:00+00:00", (UTC,), True),
        # in summer Berlin is UTC+2: 02:00 UTC is 04:00 there, still the UTC reading.
        (BERLIN_2AM, "2026-07-15T02:00:00+00:00", (UTC,), True),
        (BERLIN_2AM, "2026-07-15T00:00:00+00:00", (UTC,), False),  # 02:00 CEST: on time
        # a machine in New York whose cron ignores CRON_TZ: 02:00 there = 08:00 Berlin.
        (BERLIN_2AM, "2026-01-15T07:00:00+00:00", (NEW_YORK, UTC), True),
        # run by hand at a time that is no fire time anywhere: no warning.
        (BERLIN_2AM, "2026-01-15T13:37:00+00:00", (UTC, NEW_YORK), False),
        # an hourly schedule fires at every whole hour in any whole-hour zone.
        (HOURLY_BERLIN, "2026-01-15T02:00:00+00:00", (UTC,), False),
        # a zone with the schedule's own offset at that moment proves nothing.
        (BERLIN_2AM, "2026-01-15T02:00:00+00:00", (BERLIN,), False),
        # half-hour zones: 02:00 UTC is 07:30 in Kolkata.
        (KOLKATA_2AM, "2026-01-15T02:00:00+00:00", (UTC,), True),
        (KOLKATA_2AM, "2026-01-14T20:30:00+00:00", (UTC,), False),  # 02:00 IST: on time
    ],
)
def test_zone_mismatch(
    schedule: Schedule, now: str, zones: tuple[object, ...], warns: bool
) -> None:
    message = zone_mismatch(schedule, at(now), zones)  # type: ignore[arg-type]
    assert (message is not None) == warns, message
    if message is not None:
        assert message.startswith(f"schedule {schedule.id} ran at 02:00 ")
        assert f"meant in {schedule.timezone}" in message and "CRON_TZ" in message


def test_the_message_names_both_clocks() -> None:
    message = zone_mismatch(BERLIN_2AM, at("2026-01-15T02:00:00+00:00"), (UTC,))
    assert message is not None
    assert "ran at 02:00 UTC (03:00 CET)" in message
    assert "'0 2 * * *' is meant in Europe/Berlin" in message
