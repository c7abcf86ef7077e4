"""Use cases: statistics, health and metrics, computed from the catalog, the schedules and the
last restore drill (the pure computations are ``sbbackup.policy.stats``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ..config import DEFAULT_MIN_FREE
from ..errors import SbbackupError, StorageError
from ..model import BackupRecord, Status, iso, parse_iso
from ..policy.schedules import Schedule
from ..policy.stats import health, prometheus_text, statistics
from ..results import Finding, HealthReport, Metrics, Statistics
from ..state.files import check_private_dir
from ..storage.local import LocalStorage
from .context import Context
from .schedules import schedules

DEFAULT_GRACE = timedelta(hours=1)  # how late a schedule may be before it is overdue


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _schedules_as_run(ctx: Context) -> list[Schedule]:
    """Every schedule, each disabled while scheduled backups are off (DB_BACKUP_ENABLED)."""
    sched = list(schedules(ctx).schedules.values())
    if not ctx.settings.enabled:
        sched = [replace(s, enabled=False) for s in sched]
    return sched


def _records(ctx: Context) -> list[BackupRecord]:
    """The catalog, with each orphan data file and unreadable manifest given back to the
    schedule that created it, as the audit log says (its manifest, which said so, is gone):
    health then sees a schedule whose newest backup lost its manifest."""
    records = ctx.catalog.list()
    nameless = {
        r.id
        for r in records
        if r.scheduleId is None
        and (r.status == Status.ORPHAN or (r.status == Status.CORRUPT and r.filename is None))
    }
    if not nameless:
        return records
    owners = ctx.state.created_by_schedule(nameless)
    return [
        replace(r, scheduleId=owners[r.id]) if r.id in nameless and r.id in owners else r
        for r in records
    ]


def get_statistics(
    ctx: Context, now: datetime | None = None, records: list[BackupRecord] | None = None
) -> Statistics:
    """``records``: the catalog as ``_records`` read it, if the caller has it already."""
    used, free = ctx.storage.usage()
    sched = _schedules_as_run(ctx)
    last_test = ctx.state.last_drill()
    if records is None:
        records = _records(ctx)
    return statistics(records, sched, _now(now), DEFAULT_GRACE, used, free, last_test)


def get_health(
    ctx: Context,
    now: datetime | None = None,
    min_free: int = DEFAULT_MIN_FREE,
    restore_test_days: int | None = None,
) -> HealthReport:
    """Problems (overdue, newest backup failed/missing/corrupt/orphaned/abandoned, low disk, an
    unusable backup path) fail; a stale restore drill, older broken backups and backups
    switched off (DB_BACKUP_ENABLED=false) only warn.

    Diagnose, don't die: a backup path that cannot be used is one more problem in the report,
    never an exception. Nothing is written. ``restore_test_days`` defaults to the
    ``health.restoreTestDays`` setting.
    """
    now = _now(now)
    if restore_test_days is None:
        restore_test_days = getattr(ctx.settings, "restore_test_days", None)
    unusable = path_problem(ctx)
    if unusable is None:
        try:
            records = _records(ctx)
            stats = get_statistics(ctx, now, records)
            sched = list(schedules(ctx).schedules.values()) if ctx.settings.enabled else []
            report = health(stats, sched, records, now, DEFAULT_GRACE, min_free, restore_test_days)
        except (StorageError, OSError) as exc:  # it became unusable while we looked
            unusable = f"backup path {ctx.settings.backup_path} unusable: {_why(exc)}"
    if unusable is not None:
        report = HealthReport(iso(now) or "")
        report.problems.append(Finding("backup-path", None, unusable))
    if not ctx.settings.enabled:
        report.warnings.insert(0, Finding("disabled", None, disabled_reason(ctx)))
    return report


def disabled_reason(ctx: Context) -> str:
    """The warning for DB_BACKUP_ENABLED=false, naming where it was set."""
    value = ctx.settings.env.get("DB_BACKUP_ENABLED")
    if value is not None:
        where = f"DB_BACKUP_ENABLED={value}"
    else:
        where = f"backup.enabled: false in {ctx.settings.config_file or 'the configuration'}"
    return f"backups are disabled ({where}): no schedule runs"


def path_problem(ctx: Context) -> str | None:
    """Why the backup path cannot hold backups (``backup path X unusable: why``), or None.

    Creates nothing, unlike a backup (which makes a missing directory): a directory that is
    missing, not a directory, owned by someone else, open to others, read-only, or not
    listable is a problem health reports. A configuration error (a bad URL) still raises."""
    where = ctx.settings.backup_path
    try:
        storage = ctx.storage
        if isinstance(storage, LocalStorage):
            where = str(storage.root)
            if not check_private_dir(storage.root):
                return (
                    f"backup path {where} unusable: it does not exist (no backup was written there)"
                )
            if not os.access(storage.root, os.R_OK | os.W_OK | os.X_OK):
                return f"backup path {where} unusable: {_access_problem(storage.root)}"
        storage.list_names()
    except (StorageError, OSError) as exc:
        return f"backup path {where} unusable: {_why(exc)}"
    return None


def _access_problem(root: os.PathLike[str] | str) -> str:
    try:
        if os.statvfs(root).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def _why(exc: BaseException) -> str:
    if isinstance(exc, SbbackupError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def get_metrics(ctx: Context, now: datetime | None = None) -> Metrics:
    sched = _schedules_as_run(ctx)
    verified = last_verified(ctx.state.last_drill())
    return Metrics(
        prometheus_text(_records(ctx), sched, _now(now), DEFAULT_GRACE, last_verified=verified)
    )


def last_verified(last_test: Mapping[str, object] | None) -> dict[str, str]:
    """Schedule ID -> the time (ISO) of the newest successful restore drill of one of its
    backups, from ``last_test.json`` (``lastSuccessBySchedule``; a file written before that
    key existed gives its ``lastSuccess`` to the schedule it names, if any)."""
    if not last_test:
        return {}
    found: dict[str, str] = {}
    by = last_test.get("lastSuccessBySchedule")
    entries = list(by.items()) if isinstance(by, Mapping) else []
    last = last_test.get("lastSuccess")
    if isinstance(last, Mapping) and isinstance(last.get("scheduleId"), str):
        entries.append((last["scheduleId"], last))
    for sid, entry in entries:
        at = entry.get("at") if isinstance(entry, Mapping) else None
        if isinstance(sid, str) and _is_time(at) and str(at) > found.get(sid, ""):
            found[sid] = str(at)
    return found


def _is_time(value: object) -> bool:
    """A time ``parse_iso`` reads (a damaged or hand-edited last_test.json must not make
    ``metrics`` or ``/metrics`` fail)."""
    if not isinstance(value, str):
        return False
    try:
        return parse_iso(value) is not None
    except ValueError:
        return False
