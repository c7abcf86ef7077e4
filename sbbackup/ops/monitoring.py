"""Use cases: statistics, health and metrics, computed from the catalog, the schedules and the
last restore drill (the pure computations are ``sbbackup.policy.stats``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ..config import DEFAULT_MIN_FREE
from ..policy.schedules import Schedule
from ..policy.stats import health, prometheus_text, statistics
from ..results import HealthReport, Metrics, Statistics
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


def get_statistics(ctx: Context, now: datetime | None = None) -> Statistics:
    used, free = ctx.storage.usage()
    sched = _schedules_as_run(ctx)
    last_test = ctx.state.last_drill()
    return statistics(ctx.catalog.list(), sched, _now(now), DEFAULT_GRACE, used, free, last_test)


def get_health(
    ctx: Context,
    now: datetime | None = None,
    min_free: int = DEFAULT_MIN_FREE,
    restore_test_days: int | None = None,
) -> HealthReport:
    """Problems (overdue, last run failed, low disk) fail; a stale restore drill only warns.

    ``restore_test_days`` defaults to the ``health.restoreTestDays`` setting.
    """
    now = _now(now)
    if restore_test_days is None:
        restore_test_days = getattr(ctx.settings, "restore_test_days", None)
    stats = get_statistics(ctx, now)
    sched = list(schedules(ctx).schedules.values()) if ctx.settings.enabled else []
    records = ctx.catalog.list()
    return health(stats, sched, records, now, DEFAULT_GRACE, min_free, restore_test_days)


def get_metrics(ctx: Context, now: datetime | None = None) -> Metrics:
    sched = _schedules_as_run(ctx)
    return Metrics(prometheus_text(ctx.catalog.list(), sched, _now(now), DEFAULT_GRACE))
