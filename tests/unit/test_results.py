"""The result types: every one the CLI prints has its own human view, and their JSON is the
shape the CLI and the API promise (statuses dump as their strings, tuples as lists)."""

from __future__ import annotations

import io
import json
from dataclasses import fields

import pytest
from rich.console import Console

from sbbackup import results as res
from sbbackup.policy.schedules import Schedule
from sbbackup.render import render, show

SHOWN = [
    res.VerifyReport,
    res.TestReport,
    res.RunResult,
    res.PruneResult,
    res.ScheduleList,
    res.NextFires,
    res.Crontab,
    res.Statistics,
    res.HealthReport,
    res.Metrics,
]


@pytest.mark.parametrize("kind", SHOWN, ids=lambda k: k.__name__)
def test_every_result_the_cli_prints_has_its_own_view(kind: type) -> None:
    assert show.dispatch(kind) is not show.dispatch(object)


def test_statuses_dump_as_their_strings() -> None:
    drill = res.Drill(status=res.DrillStatus.PASSED)
    check = res.Check("config", res.CheckStatus.WARN, "why")
    report = res.TestReport([check], drill, "2026-03-20T12:00:00.000Z")
    data = json.loads(json.dumps(report.to_json()))
    assert (data["ok"], data["checks"][0]["status"], data["drill"]["status"]) == (
        True,
        "warn",
        "passed",
    )
    run = res.RunResult("daily", res.RunOutcome.SKIPPED, "schedule daily is disabled")
    assert json.dumps(run.to_json()).startswith('{"scheduleId": "daily", "status": "skipped"')


def test_statistics_json_is_plain_data_in_field_order() -> None:
    rate = res.SuccessRate(1.0, None, 0.5)
    row = res.ScheduleStats("daily", True, 2, 1, 1, rate, None, "failed", None, None, None)
    st = res.Statistics(
        generatedAt="2026-03-20T12:00:00.000Z",
        total=2,
        completed=1,
        failed=1,
        byStatus={"completed": 1, "failed": 1},
        successRate=rate,
        duration=res.DurationStats(None, None),
        size=res.SizeStats(0, None, None),
        lastSuccess={"daily": None},
        schedules=(row,),
        graceMs=3_600_000,
        overdueSchedules=(res.Overdue("daily", None, "2026-03-20T02:00:00.000Z", 36_000_000),),
        disk=res.DiskUsage(None, None),
        lastRestoreDrill=None,
    )
    data = st.to_json()
    assert list(data) == [f.name for f in fields(res.Statistics)]
    assert data["schedules"] == [
        {
            "scheduleId": "daily",
            "enabled": True,
            "total": 2,
            "completed": 1,
            "failed": 1,
            "successRate": {"allTime": 1.0, "last7d": None, "last30d": 0.5},
            "lastRun": None,
            "lastRunStatus": "failed",
            "lastSuccess": None,
            "lastDurationMs": None,
            "lastSizeBytes": None,
        }
    ]
    assert data["overdueSchedules"][0]["overdueMs"] == 36_000_000
    out = io.StringIO()
    render(st, False, Console(file=out, width=160))
    assert "OVERDUE daily: due 2026-03-20T02:00:00.000Z, last success never" in out.getvalue()


def test_a_schedule_view_starts_with_every_schedule_field_in_order() -> None:
    names = [f.name for f in fields(Schedule)]
    assert names[0] == "id"  # the JSON contract's one name for it is scheduleId
    assert list(res.ScheduleView.__annotations__)[: len(names)] == ["scheduleId", *names[1:]]
