"""Statistics, health and Prometheus metrics over the catalog. Pure: ``now`` is a parameter.

A success is a record whose status is ``completed`` (a completed backup whose file later went
missing or corrupt no longer counts). Rates are over finished attempts; ``in_progress`` records
are not counted. The catalog is what retention left, so "all time" means "still recorded".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ..model import BackupRecord, Status, iso, parse_iso
from ..results import (
    DiskUsage,
    DurationStats,
    Finding,
    HealthReport,
    Overdue,
    ScheduleStats,
    SizeStats,
    Statistics,
    SuccessRate,
)
from ..results.base import human_size
from .retention import record_time
from .schedules import Schedule, due_after

_N = TypeVar("_N", int, float)

WINDOWS = {"allTime": None, "last7d": timedelta(days=7), "last30d": timedelta(days=30)}
MANUAL = "manual"
_NEVER = datetime.min.replace(tzinfo=UTC)
# How far in the future a record may be dated before it is taken for clock skew.
_SKEW = timedelta(hours=1)
# An in-progress backup has not finished, and an orphan data file was never an attempt.
_NOT_ATTEMPTS = (Status.IN_PROGRESS, Status.ORPHAN)
_METRIC_STATUSES = (
    Status.COMPLETED,
    Status.FAILED,
    Status.MISSING,
    Status.CORRUPT,
    Status.ABANDONED,
    Status.ORPHAN,
)


def _time(r: BackupRecord) -> datetime:
    """A record's time; a manifest whose createdAt is not a time sorts as the oldest."""
    return record_time(r) or _NEVER


def _rate(records: Iterable[BackupRecord], now: datetime, window: timedelta | None) -> float | None:
    done = [
        r
        for r in records
        if r.status not in _NOT_ATTEMPTS and (window is None or _time(r) > now - window)
    ]
    if not done:
        return None
    return round(sum(r.status == Status.COMPLETED for r in done) / len(done), 4)


def _rates(records: Sequence[BackupRecord], now: datetime) -> SuccessRate:
    return SuccessRate(**{name: _rate(records, now, w) for name, w in WINDOWS.items()})


def p95(values: Sequence[_N]) -> _N | None:
    """Nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def _newest(records: Iterable[BackupRecord], status: str | None = None) -> BackupRecord | None:
    pool = [r for r in records if status is None or r.status == status]
    return max(pool, key=lambda r: (_time(r), r.id), default=None)


def overdue_info(
    schedule: Schedule,
    records: Sequence[BackupRecord],
    now: datetime,
    grace: timedelta,
    since: datetime | None,
) -> Overdue | None:
    """Overdue when the first run due after the last success (plus ``grace``) has passed.

    That is "last success older than the schedule's interval plus grace", measured with the
    real cron calendar (months differ in length). A schedule that never succeeded is measured
    from ``since``, the oldest record in the catalog; with an empty catalog nothing is overdue.
    A success dated more than an hour in the future (clock skew) is not believed: it would
    hide a schedule that stopped running until the clock caught up with it.
    """
    mine = [r for r in records if r.scheduleId == schedule.id and _NEVER < _time(r) <= now + _SKEW]
    last = _newest(mine, Status.COMPLETED)
    start = _time(last) if last else since
    if not schedule.enabled or start is None:
        return None
    deadline = due_after(schedule, start)
    if now <= deadline + grace:
        return None
    return Overdue(
        scheduleId=schedule.id,
        lastSuccess=last.createdAt if last else None,
        dueAt=iso(deadline),
        overdueMs=int((now - deadline).total_seconds() * 1000),
    )


def _schedule_stats(
    s: Schedule | None, sid: str, records: Sequence[BackupRecord], now: datetime
) -> ScheduleStats:
    mine = [r for r in records if (r.scheduleId or MANUAL) == sid]
    # A record dated in the future (clock skew) is no one's last run until its time comes.
    current = [r for r in mine if _time(r) <= now + _SKEW]
    last_run = _newest(current)
    last_ok = _newest(current, Status.COMPLETED)
    return ScheduleStats(
        scheduleId=sid,
        enabled=s.enabled if s else None,
        total=len(mine),
        completed=sum(r.status == Status.COMPLETED for r in mine),
        failed=sum(r.status == Status.FAILED for r in mine),
        successRate=_rates(mine, now),
        lastRun=last_run.createdAt if last_run else None,
        lastRunStatus=last_run.status if last_run else None,
        lastSuccess=last_ok.createdAt if last_ok else None,
        lastDurationMs=last_ok.duration if last_ok else None,
        lastSizeBytes=last_ok.size if last_ok else None,
    )


def statistics(
    records: Sequence[BackupRecord],
    schedules: Sequence[Schedule],
    now: datetime,
    grace: timedelta,
    disk_used: int | None = None,
    disk_free: int | None = None,
    last_restore_test: Mapping[str, object] | None = None,
) -> Statistics:
    """Everything `sbbackup statistics` shows. ``last_restore_test`` is ``last_test.json``
    (``{"lastRun": {...}, "lastSuccess": {...} | None}``), as ``drills`` reads it."""
    done = [r for r in records if r.status == Status.COMPLETED]
    durations = [r.duration for r in done]
    compressed = [r for r in done if r.compression and r.uncompressedSize and r.size]
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    ids = [s.id for s in schedules]
    extra = sorted({r.scheduleId or MANUAL for r in records} - set(ids))
    known = {s.id: s for s in schedules}
    since = min((t for r in records if (t := record_time(r)) is not None), default=None)
    overdue = tuple(o for s in schedules if (o := overdue_info(s, records, now, grace, since)))
    per = tuple(_schedule_stats(known.get(sid), sid, records, now) for sid in ids + extra)
    drills = last_restore_test or {}
    return Statistics(
        generatedAt=iso(now),
        total=len(records),
        completed=len(done),
        failed=by_status.get(Status.FAILED, 0),
        byStatus=dict(sorted(by_status.items())),
        successRate=_rates(records, now),
        duration=DurationStats(
            averageMs=round(sum(durations) / len(durations)) if durations else None,
            p95Ms=p95(durations),
        ),
        size=SizeStats(
            totalBytes=sum(r.size for r in done),
            averageBytes=sum(r.size for r in done) // len(done) if done else None,
            compressionRatio=round(
                sum(r.uncompressedSize for r in compressed) / sum(r.size for r in compressed), 2
            )
            if compressed
            else None,
        ),
        lastSuccess={p.scheduleId: p.lastSuccess for p in per},
        schedules=per,
        graceMs=int(grace.total_seconds() * 1000),
        overdueSchedules=overdue,
        disk=DiskUsage(usedBytes=disk_used, freeBytes=disk_free),
        lastRestoreDrill=_entry(drills.get("lastSuccess")),
    )


def _entry(value: object) -> Mapping[str, object] | None:
    """A drill entry of ``last_test.json``, or None for anything else."""
    return value if isinstance(value, Mapping) else None


# --- health ------------------------------------------------------------------------------


# What the newest record of an enabled schedule may say, and the check that reports it.
# ``failed`` and ``abandoned`` keep their old check name; the others are the backup that
# should be the schedule's newest restorable copy, and is not.
_NEWEST_PROBLEMS: dict[str, str] = {
    Status.FAILED: "last-run-failed",
    Status.ABANDONED: "last-run-failed",
    Status.MISSING: "newest-missing",
    Status.CORRUPT: "newest-corrupt",
    Status.ORPHAN: "newest-orphaned",
}


def health(
    stats: Statistics,
    schedules: Sequence[Schedule],
    records: Sequence[BackupRecord],
    now: datetime,
    grace: timedelta,
    min_free: int,
    restore_test_days: int | None = None,
) -> HealthReport:
    """Unhealthy when an enabled schedule is overdue, or its newest record is not a good
    backup (failed, abandoned, data file missing or of the wrong size, or an orphan data file
    whose manifest is gone), or disk is low.

    ``schedules`` are the ones that should be running (empty when backups are switched off).
    Older missing, corrupt, abandoned and orphaned backups, records dated in the future or not
    at all, and a restore drill older than ``restore_test_days`` are warnings.
    """
    report = HealthReport(iso(now) or "")
    overdue = {o.scheduleId: o for o in stats.overdueSchedules}
    for s in schedules:
        if not s.enabled:
            continue
        if s.id in overdue:
            o = overdue[s.id]
            report.problems.append(
                Finding(
                    "overdue",
                    s.id,
                    f"schedule {s.id} is overdue: last success {o.lastSuccess or 'never'}, "
                    f"a run was due at {o.dueAt}",
                )
            )
        newest = newest_run(records, s.id, now)
        if newest is not None and newest.status in _NEWEST_PROBLEMS:
            report.problems.append(
                Finding(_NEWEST_PROBLEMS[newest.status], s.id, _newest_reason(s.id, newest))
            )
    free = stats.disk.freeBytes
    if free is not None and free < min_free:
        report.problems.append(
            Finding(
                "free-space",
                None,
                f"only {human_size(free)} free in the backup path (threshold "
                f"{human_size(min_free)})",
            )
        )
    _record_warnings(report, records, now)
    if restore_test_days is not None:
        _restore_warning(report, stats.lastRestoreDrill, now, restore_test_days)
    return report


def newest_run(records: Sequence[BackupRecord], sid: str, now: datetime) -> BackupRecord | None:
    """A schedule's newest record that says something: one being written by a live writer
    says nothing yet, and one dated in the future (clock skew) is not believed."""
    mine = [
        r
        for r in records
        if (r.scheduleId or MANUAL) == sid
        and r.status != Status.IN_PROGRESS
        and _time(r) <= now + _SKEW
    ]
    return _newest(mine)


def _newest_reason(sid: str, r: BackupRecord) -> str:
    if r.status in (Status.FAILED, Status.ABANDONED):
        how = "was abandoned" if r.status == Status.ABANDONED else "failed"
        return f"the last run of {sid}, {r.id} ({r.createdAt}), {how}: {r.error or 'no detail'}"
    return (
        f"the newest backup of {sid}, {r.id}, is {r.status}: {r.error or 'no detail'}; "
        "it cannot be restored"
    )


# Warnings for what the catalog holds, newest first in each message.
_STATUS_WARNINGS = (
    (Status.MISSING, "backup(s) whose data file is missing: they cannot be restored"),
    (
        Status.CORRUPT,
        "backup(s) with a data file of the wrong size or an unreadable manifest: they cannot "
        "be restored (sbbackup verify says more)",
    ),
    (Status.ABANDONED, "backup(s) whose writer died; the next create or prune fails them"),
    (Status.ORPHAN, "data file(s) without a manifest; prune removes them after retention"),
)


def _record_warnings(report: HealthReport, records: Sequence[BackupRecord], now: datetime) -> None:
    """Records whose time cannot be trusted (dated in the future, or not dated at all), backups
    that cannot be restored (missing, corrupt), and what dead writers left: abandoned backups
    and orphan data files. Each warning names the newest such backup."""
    future = sorted(r.id for r in records if _time(r) > now + _SKEW)
    undated = sorted(r.id for r in records if record_time(r) is None)
    for status, advice in _STATUS_WARNINGS:
        ids = sorted(r.id for r in records if r.status == status)
        if ids:
            report.warnings.append(
                Finding(str(status), None, f"{len(ids)} {advice}, e.g. {ids[-1]}")
            )
    if future:
        report.warnings.append(
            Finding(
                "clock-skew",
                None,
                f"{len(future)} backup(s) dated in the future, e.g. {future[-1]}: check the "
                "clock; they count for neither last run nor overdue, and retention keeps them",
            )
        )
    if undated:
        report.warnings.append(
            Finding(
                "undated",
                None,
                f"{len(undated)} manifest(s) without a valid createdAt, e.g. {undated[0]}: "
                "retention keeps them; fix or delete them by hand",
            )
        )


def _restore_warning(
    report: HealthReport, last: Mapping[str, object] | None, now: datetime, days: int
) -> None:
    stamp = last.get("at") if last else None
    at = parse_iso(stamp) if isinstance(stamp, str) else None
    if at is None or now - at > timedelta(days=days):
        report.warnings.append(
            Finding(
                "restore-test",
                None,
                f"no successful restore test in the last {days} days (last: "
                f"{stamp if last else 'never'}): run `sbbackup test`",
            )
        )


# --- Prometheus --------------------------------------------------------------------------

METRICS = (
    (
        "sbbackup_last_success_timestamp_seconds",
        "Unix time of the schedule's newest completed backup (0 if none).",
    ),
    ("sbbackup_last_duration_seconds", "Duration of the schedule's newest completed backup."),
    ("sbbackup_last_size_bytes", "Stored size of the schedule's newest completed backup."),
    (
        "sbbackup_backup_last_verified_timestamp_seconds",
        "Unix time of the newest successful restore drill (sbbackup test, verify --deep "
        "--restore) of one of the schedule's backups (0 if none recorded).",
    ),
    ("sbbackup_backups", "Backups in the catalog by status, over all schedules."),
    ("sbbackup_schedule_backups", "Backups in the catalog by schedule and status."),
    (
        "sbbackup_backups_total",
        "Deprecated (a gauge should not end in _total): sbbackup_schedule_backups, under its "
        "old name for one more release.",
    ),
    (
        "sbbackup_schedule_overdue",
        "1 if the schedule's last success is older than its interval plus grace.",
    ),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(
    records: Sequence[BackupRecord],
    schedules: Sequence[Schedule],
    now: datetime,
    grace: timedelta,
    last_verified: Mapping[str, str] | None = None,
) -> str:
    """Text exposition format for node_exporter's textfile collector. All series are gauges:
    backup counts fall when retention prunes, so they are not counters. ``last_verified``:
    schedule ID -> the ISO time of the newest successful restore drill of its backups."""
    stats = statistics(records, schedules, now, grace)
    overdue = {o.scheduleId for o in stats.overdueSchedules}
    verified = last_verified or {}
    samples: dict[str, list[str]] = {name: [] for name, _ in METRICS}
    for p in stats.schedules:
        lab = f'schedule="{_label(p.scheduleId)}"'
        last = next(
            (
                r
                for r in records
                if (r.scheduleId or MANUAL) == p.scheduleId and r.createdAt == p.lastSuccess
            ),
            None,
        )
        ts = _time(last).timestamp() if last and record_time(last) else 0
        samples["sbbackup_last_success_timestamp_seconds"].append(f"{{{lab}}} {ts:.3f}")
        samples["sbbackup_last_duration_seconds"].append(
            f"{{{lab}}} {(p.lastDurationMs or 0) / 1000:.3f}"
        )
        samples["sbbackup_last_size_bytes"].append(f"{{{lab}}} {p.lastSizeBytes or 0}")
        at = parse_iso(verified[p.scheduleId]) if p.scheduleId in verified else None
        samples["sbbackup_backup_last_verified_timestamp_seconds"].append(
            f"{{{lab}}} {at.timestamp() if at else 0:.3f}"
        )
        for status in _METRIC_STATUSES:
            n = sum(r.status == status for r in records if (r.scheduleId or MANUAL) == p.scheduleId)
            for name in ("sbbackup_schedule_backups", "sbbackup_backups_total"):
                samples[name].append(f'{{{lab},status="{status}"}} {n}')
        if p.enabled is not None:
            samples["sbbackup_schedule_overdue"].append(f"{{{lab}}} {int(p.scheduleId in overdue)}")
    for status in (*_METRIC_STATUSES, Status.IN_PROGRESS):
        n = sum(r.status == status for r in records)
        samples["sbbackup_backups"].append(f'{{status="{status}"}} {n}')
    out = []
    for name, help_text in METRICS:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        out += [name + s for s in samples[name]]
    return "\n".join(out) + "\n"
