"""ops.monitoring.last_verified: the per-schedule time of the last successful drill, read from
last_test.json as written, or damaged: an entry whose time is no time is skipped, so
`metrics` and /metrics never fail on it (parse_iso raised ValueError before)."""

from __future__ import annotations

from sbbackup.ops.monitoring import last_verified

GOOD = "2026-03-02T04:05:06.789Z"


def test_a_time_that_is_no_time_is_skipped() -> None:
    state = {
        "lastSuccessBySchedule": {
            "daily": {"at": "yesterday"},
            "weekly": {"at": GOOD},
            "monthly": {"at": 17},
            "hourly": "not an entry",
        },
        "lastSuccess": {"scheduleId": "daily", "at": "2026-13-45T99:00:00Z"},
    }
    assert last_verified(state) == {"weekly": GOOD}


def test_the_newest_of_both_keys_wins() -> None:
    older = "2026-03-01T00:00:00.000Z"
    state = {
        "lastSuccessBySchedule": {"daily": {"at": older}},
        "lastSuccess": {"scheduleId": "daily", "at": GOOD},
    }
    assert last_verified(state) == {"daily": GOOD}
    assert last_verified(None) == {}
