"""Statistics, overdue detection, health and Prometheus metrics; a simulated day of cron runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers.records import record
from helpers.sched_helpers import run, sqlite_db
from prometheus_client.parser import text_string_to_metric_families

from sbbackup.catalog import BackupRecord, iso
from sbbackup.policy.schedules import DEFAULT_SCHEDULES, Schedule
from sbbackup.policy.stats import health, p95, prometheus_text, statistics
from sbbackup.results import DiskUsage, SizeStats, SuccessRate

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)
DAILY, WEEKLY, MONTHLY = (
    Schedule(s.id, s.cron, s.retentionDays, timezone="UTC") for s in DEFAULT_SCHEDULES
)


def rec(
    when: datetime,
    schedule: str | None,
    status: str = "completed",
    size: int = 100,
    duration: int = 2000,
    raw: int = 400,
    error: str | None = None,
) -> BackupRecord:
    return record(when, schedule, status, size=size, duration=duration, raw=raw, error=error)


def day(d: int, hour: int = 2) -> datetime:
    return datetime(2026, 3, d, hour, tzinfo=UTC)


def test_statistics_numbers() -> None:
    records = [
        rec(day(20), "daily", duration=1000),
        rec(day(19), "daily", "failed", size=0, duration=500, error="boom"),
        rec(day(18), "daily", duration=3000, size=300, raw=900),
        rec(day(15, 3), "weekly", duration=10000, size=1000, raw=5000),
        rec(day(1, 4), "monthly"),
        rec(datetime(2026, 1, 1, tzinfo=UTC), None, "failed", size=0),
    ]
    st = statistics(
        records,
        [DAILY, WEEKLY, MONTHLY],
        NOW,
        GRACE,
        1234,
        5678,
        {"lastSuccess": {"at": "2026-03-19T00:00:00.000Z"}, "lastRun": None},
    )
    assert (st.total, st.completed, st.failed) == (6, 4, 2)
    assert st.successRate == SuccessRate(allTime=round(4 / 6, 4), last7d=0.75, last30d=0.8)
    assert st.duration.averageMs == 4000 and st.duration.p95Ms == 10_000
    assert st.size == SizeStats(
        totalBytes=1500, averageBytes=375, compressionRatio=round(6700 / 1500, 2)
    )
    per = {p.scheduleId: p for p in st.schedules}
    assert per["daily"].successRate.allTime == round(2 / 3, 4)
    assert per["manual"].successRate.allTime == 0.0
    assert st.lastSuccess["daily"] == "2026-03-20T02:00:00.000Z"
    assert st.overdueSchedules == ()
    assert st.disk == DiskUsage(usedBytes=1234, freeBytes=5678)
    assert st.lastRestoreDrill == {"at": "2026-03-19T00:00:00.000Z"}  # the newest that passed
    data = json.loads(json.dumps(st.to_json()))
    assert data["successRate"] == {"allTime": round(4 / 6, 4), "last7d": 0.75, "last30d": 0.8}
    assert data["size"] == {
        "totalBytes": 1500,
        "averageBytes": 375,
        "compressionRatio": round(6700 / 1500, 2),
    }
    assert data["disk"] == {"usedBytes": 1234, "freeBytes": 5678}
    assert data["overdueSchedules"] == [] and "lastRestoreTest" not in data
    assert [p["scheduleId"] for p in data["schedules"]] == ["daily", "weekly", "monthly", "manual"]


@pytest.mark.parametrize(
    ("schedule", "last", "now", "overdue"),
    [
        (DAILY, day(19), day(20, 2), False),  # due 20th 02:00, within grace
        (DAILY, day(19), day(20, 3) + timedelta(seconds=1), True),
        (WEEKLY, day(15, 3), day(22, 3) + timedelta(minutes=59), False),  # Sunday 22nd + grace
        (WEEKLY, day(15, 3), day(22, 4) + timedelta(seconds=1), True),
        (MONTHLY, datetime(2026, 2, 1, 4, tzinfo=UTC), day(1, 5), False),  # 28-day month
        (MONTHLY, datetime(2026, 2, 1, 4, tzinfo=UTC), day(1, 5) + timedelta(seconds=1), True),
    ],
)
def test_overdue_is_last_success_plus_interval_plus_grace(
    schedule: Schedule, last: datetime, now: datetime, overdue: bool
) -> None:
    st = statistics([rec(last, schedule.id)], [schedule], now, GRACE)
    assert bool(st.overdueSchedules) == overdue


def test_not_overdue_on_the_day_clocks_go_back() -> None:
    berlin = Schedule("daily", "30 2 * * *", 7, timezone="Europe/Berlin")
    ran = datetime(2026, 10, 25, 0, 30, 0, 120000, tzinfo=UTC)  # the first 02:30 (+02:00)
    for hours_later in (2, 12, 24):
        now = ran + timedelta(hours=hours_later)
        assert statistics([rec(ran, "daily")], [berlin], now, GRACE).overdueSchedules == ()
    # the 26th's 02:30 (+01:00, 01:30Z) did not happen: overdue an hour after it
    late = datetime(2026, 10, 26, 2, 30, 1, tzinfo=UTC)
    [overdue] = statistics([rec(ran, "daily")], [berlin], late, GRACE).overdueSchedules
    assert overdue.dueAt == "2026-10-26T01:30:00.000Z"


def test_never_succeeded_is_measured_from_the_oldest_record_and_disabled_is_never_overdue() -> None:
    records = [rec(day(10), "daily"), rec(day(19), "weekly", "failed")]
    st = statistics(records, [DAILY, WEEKLY], NOW, GRACE)
    assert [o.scheduleId for o in st.overdueSchedules] == ["daily", "weekly"]
    assert st.overdueSchedules[1].lastSuccess is None
    off = Schedule("daily", "0 2 * * *", 7, timezone="UTC", enabled=False)
    assert statistics(records, [off], NOW, GRACE).overdueSchedules == ()
    assert statistics([], [DAILY], NOW, GRACE).overdueSchedules == ()


def test_health_reasons() -> None:
    records = [
        rec(day(20), "daily", "failed", error="pg_dump failed"),
        rec(day(19), "daily"),
        rec(day(15, 3), "weekly"),
    ]
    st = statistics(records, [DAILY, WEEKLY], NOW, GRACE, 0, 10)
    report = health(st, [DAILY, WEEKLY], records, NOW, GRACE, min_free=100, restore_test_days=7)
    checks = sorted((p.check, p.scheduleId or "") for p in report.problems)
    # the 20th's run failed, so daily is also overdue (its last success is the 19th's)
    assert checks == [("free-space", ""), ("last-run-failed", "daily"), ("overdue", "daily")]
    assert "pg_dump failed" in report.problems[0].reason + report.problems[1].reason
    assert [w.check for w in report.warnings] == ["restore-test"]
    good = [rec(day(20), "daily"), *records[1:]]
    ok = statistics(good, [DAILY, WEEKLY], NOW, GRACE, 0, 1000)
    assert health(ok, [DAILY, WEEKLY], good, NOW, GRACE, 100).ok


def test_clock_skew_and_undated_manifests_neither_crash_nor_hide_a_stopped_schedule() -> None:
    future = rec(NOW + timedelta(days=30), "daily")  # written while the clock was wrong
    undated = rec(day(18), "daily")
    undated.createdAt = "not a date"
    records = [future, undated, rec(day(17), "daily")]
    st = statistics(records, [DAILY], NOW, GRACE, 0, 10)
    # the last believable success is the 17th's: the 18th's run was due, so daily is overdue
    [overdue] = st.overdueSchedules
    assert (overdue.lastSuccess, overdue.dueAt) == (iso(day(17)), iso(day(18)))
    assert st.schedules[0].lastSuccess == iso(day(17))
    report = health(st, [DAILY], records, NOW, GRACE, min_free=0)
    assert [p.check for p in report.problems] == ["overdue"]
    assert [w.check for w in report.warnings] == ["clock-skew", "undated"]
    assert future.id in report.warnings[0].reason
    assert undated.id in report.warnings[1].reason
    families = {
        f.name: f
        for f in text_string_to_metric_families(prometheus_text(records, [DAILY], NOW, GRACE))
    }
    [last] = families["sbbackup_last_success_timestamp_seconds"].samples
    assert last.value == day(17).timestamp()


def test_odd_manifests_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    for when in ("2026-03-19T02:00:00Z", "2026-03-20T02:00:00Z"):
        assert run(capsys, "run-schedule", "daily", "--now", when).code == 0
    [newest, older] = [b["id"] for b in run(capsys, "list", "--json").json()]
    manifest = tmp_path / "backups" / f"{newest}.json"
    manifest.write_text(manifest.read_text().replace("2026-03-20T02:00:00.000Z", "garbage"))
    later = "2026-04-20T12:00:00Z"
    res = run(capsys, "prune", "--json", "--now", later)
    assert res.code == 0, res.err
    # the undated copy is kept, and so is the newest dated good copy, although past retention
    assert res.json()["removed"] == [] and res.json()["keep"] == 2
    assert run(capsys, "statistics", "--json", "--now", later).code == 0
    assert run(capsys, "metrics", "--now", later).code == 0
    res = run(capsys, "health", "--json", "--min-free", "0", "--now", later)
    assert res.code == 14
    assert "undated" in [w["check"] for w in res.json()["warnings"]]


def test_p95() -> None:
    assert p95([]) is None
    assert p95([5.0]) == 5.0
    assert p95([float(i) for i in range(1, 101)]) == 95.0


def test_prometheus_text_parses() -> None:
    records = [rec(day(20), "daily"), rec(day(19), "daily", "failed"), rec(day(1), None)]
    text = prometheus_text(records, [DAILY, WEEKLY], NOW, GRACE)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) >= {
        "sbbackup_last_success_timestamp_seconds",
        "sbbackup_last_duration_seconds",
        "sbbackup_last_size_bytes",
        "sbbackup_backups_total",
        "sbbackup_schedule_overdue",
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("sbbackup_last_success_timestamp_seconds", (("schedule", "daily"),))] == (
        day(20).timestamp()
    )
    assert samples[("sbbackup_backups_total", (("schedule", "daily"), ("status", "failed")))] == 1
    assert (
        samples[("sbbackup_backups_total", (("schedule", "manual"), ("status", "completed")))] == 1
    )
    assert samples[("sbbackup_schedule_overdue", (("schedule", "weekly"),))] == 1
    assert samples[("sbbackup_schedule_overdue", (("schedule", "daily"),))] == 0
    assert samples[("sbbackup_last_duration_seconds", (("schedule", "daily"),))] == 2.0


def test_a_simulated_day_of_cron_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's schedules plus an hourly one, driven through the CLI with an injected
    clock over a week and a day: backups, retention, statistics, health, next and metrics."""
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    monkeypatch.setenv("TZ", "UTC")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "schedules:\n"
        "  weekly: {encryption: false}\n"
        "  monthly: {encryption: false}\n"
        "  hourly: {cron: '0 * * * *', retentionDays: 1, minKeep: 2}\n"
    )
    c = ("--config", str(cfg))
    # Which runs does cron start? Ask `next` itself, from one minute before to a day later.
    start = datetime(2026, 2, 28, 23, 59, tzinfo=UTC)
    fires = run(capsys, *c, "next", "--count", "200", "--now", start.isoformat(), "--json").json()
    end = start + timedelta(days=8)
    plan = sorted(
        (f["nextRun"], f["scheduleId"]) for f in fires if f["nextRun"] and f["nextRun"] < iso(end)
    )
    for when, sid in plan:
        res = run(capsys, *c, "run-schedule", sid, "--now", when)
        assert (res.code, res.out) == (0, ""), res.err  # quiet on success
    counts: dict[str, int] = {}
    for sid in ("hourly", "daily", "weekly", "monthly"):
        counts[sid] = sum(1 for _, s in plan if s == sid)
    # 8 days: 192 hourly, 8 daily, 2 weekly (Sundays 1 and 8 March), 1 monthly (1 March)
    assert counts == {"hourly": 192, "daily": 8, "weekly": 2, "monthly": 1}
    now = end.isoformat()
    backups = run(capsys, "list", "--json").json()
    by = {sid: [b for b in backups if b["scheduleId"] == sid] for sid in counts}
    # retention: hourly keeps the last day (24 runs; the run exactly 1 day old is gone),
    # daily the last 7 days, weekly and monthly everything so far.
    assert len(by["hourly"]) == 24
    assert len(by["daily"]) == 7 and by["daily"][-1]["createdAt"] == "2026-03-02T02:00:00.000Z"
    assert len(by["weekly"]) == 2 and len(by["monthly"]) == 1
    st = run(capsys, *c, "statistics", "--json", "--now", now).json()
    assert st["completed"] == 34 and st["failed"] == 0 and st["successRate"]["allTime"] == 1.0
    assert st["overdueSchedules"] == []
    assert st["size"]["compressionRatio"] > 1
    assert run(capsys, *c, "health", "--min-free", "0", "--now", now).code == 0
    human = run(capsys, *c, "statistics", "--now", now).out
    assert "100.0% all time" in human
    # Durations in the unit people read (these runs take milliseconds: never "0.0s").
    avg = st["duration"]["averageMs"]
    assert f"avg {avg} ms" in human if avg < 1000 else f"avg {avg / 1000:.1f} s" in human
    # A day later with no runs: hourly and daily are overdue, and health says so.
    later = (end + timedelta(days=1)).isoformat()
    res = run(capsys, *c, "health", "--min-free", "0", "--json", "--now", later)
    assert res.code == 14
    assert {p["scheduleId"] for p in res.json()["problems"]} == {"hourly", "daily"}
    metrics = run(capsys, *c, "metrics", "--now", later).out
    overdue = {
        s.labels["schedule"]: s.value
        for f in text_string_to_metric_families(metrics)
        if f.name == "sbbackup_schedule_overdue"
        for s in f.samples
    }
    assert overdue == {"daily": 1, "weekly": 0, "monthly": 0, "hourly": 1}
    assert run(capsys, *c, "statistics", "--format", "prometheus", "--now", later).out == metrics
    # prune has nothing more to do at the time of the last run: retention is idempotent.
    res = run(capsys, *c, "prune", "--dry-run", "--json", "--now", now).json()
    assert res["remove"] == 0 and res["keep"] == 34


def test_disabled_backups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    monkeypatch.setenv("DB_BACKUP_ENABLED", "false")
    res = run(capsys, "run-schedule", "daily")
    assert res.code == 0 and res.out == ""
    assert len(res.err.strip().splitlines()) == 1 and "DB_BACKUP_ENABLED" in res.err
    assert run(capsys, "run-schedule", "daily", "--json").json()["status"] == "skipped"
    assert run(capsys, "list", "--json").json() == []
    rows = run(capsys, "next", "--json").json()
    assert all(not r["enabled"] for r in rows)
    (tmp_path / "backups").mkdir(mode=0o700)  # a missing backup path is a problem of its own
    res = run(capsys, "health", "--min-free", "0", "--json")
    assert res.code == 0 and res.json()["warnings"][0]["check"] == "disabled", res.out
    assert "backup.enabled is false" in run(capsys, "crontab").out
    monkeypatch.delenv("DB_BACKUP_ENABLED")
    assert run(capsys, "run-schedule", "nope").code == 10
    assert run(capsys, "run-schedule", "../x").code == 2
    run(capsys, "schedules", "disable", "daily")
    res = run(capsys, "run-schedule", "daily")
    assert res.code == 0 and "disabled" in res.err
