"""Use cases for cron-driven schedules: run-schedule, prune, next, statistics, health, crontab.

Pure policy lives in ``schedules``, ``retention`` and ``stats``; this module feeds them the
catalog and ``now``, takes the locks, and applies plans.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .catalog import STATUS_COMPLETED, BackupRecord
from .locks import hold
from .ops import Context, CreateOptions, _check_file, create_backup
from .retention import RetentionPlan, RetentionPolicy, plan_all
from .schedule_store import ScheduleSet, load_schedules
from .schedules import Schedule, crontab_lines, next_runs
from .stats import health, prometheus_text, statistics

DEFAULT_GRACE = timedelta(hours=1)
TEST_SCHEDULE = "test"


def schedules(ctx: Context) -> ScheduleSet:
    return load_schedules(ctx.settings, ctx.state_dir)


def policies(ctx: Context, sset: ScheduleSet) -> dict[str | None, RetentionPolicy]:
    manual = RetentionPolicy(ctx.settings.retention_days, 1)
    pol: dict[str | None, RetentionPolicy] = {
        sid: RetentionPolicy(s.retentionDays, s.minKeep) for sid, s in sset.schedules.items()}
    pol[None] = manual
    pol.setdefault(TEST_SCHEDULE, manual)  # restore-drill backups age like manual ones
    return pol


@dataclass
class RunResult:
    scheduleId: str
    status: str  # completed | skipped
    reason: str | None = None
    backup: BackupRecord | None = None
    retention: RetentionPlan | None = None
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"scheduleId": self.scheduleId, "status": self.status, "reason": self.reason,
                "backup": self.backup.to_json() if self.backup else None,
                "retention": self.retention.to_json() if self.retention else None,
                "removed": self.removed}


def run_schedule(ctx: Context, schedule_id: str, now: datetime | None = None) -> RunResult:
    """The cron entry point: lock, back up, re-verify, then (only then) apply retention."""
    sset = schedules(ctx)
    schedule = sset.get(schedule_id)
    if not ctx.settings.enabled:
        return RunResult(schedule_id, "skipped", "scheduled backups are off (DB_BACKUP_ENABLED)")
    if not schedule.enabled:
        return RunResult(schedule_id, "skipped", f"schedule {schedule_id} is disabled")
    with hold(ctx.state_dir, f"schedule-{schedule_id}", f"schedule {schedule_id}"):
        opts = CreateOptions(format=schedule.format, compress=schedule.compression,
                             encrypt=schedule.encryption, schedule_id=schedule_id)
        record = create_backup(ctx, opts, now=now)
        _check_file(ctx, record)  # the checksum must re-verify before anything is pruned
        plan, removed = _prune_locked(ctx, sset, schedule_id, now or datetime.now(UTC), False)
    return RunResult(schedule_id, "completed", None, record, plan, removed)


@dataclass
class PruneResult:
    dryRun: bool
    plan: RetentionPlan
    removed: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"dryRun": self.dryRun, "plan": self.plan.to_json(), "removed": self.removed}


def prune(ctx: Context, schedule_id: str | None, dry_run: bool,
          now: datetime | None = None) -> PruneResult:
    sset = schedules(ctx)
    if schedule_id is not None and schedule_id not in (None, TEST_SCHEDULE):
        sset.get(schedule_id)
    now = now or datetime.now(UTC)
    plan, removed = _prune_locked(ctx, sset, schedule_id, now, dry_run)
    return PruneResult(dry_run, plan, removed)


def _prune_locked(ctx: Context, sset: ScheduleSet, schedule_id: str | None, now: datetime,
                  dry_run: bool) -> tuple[RetentionPlan, list[str]]:
    name = f"prune-{schedule_id or 'all'}"
    with hold(ctx.state_dir, name, f"prune of {schedule_id or 'all schedules'}"):
        records = ctx.catalog.list()
        plan = plan_all(records, policies(ctx, sset), now, only_schedule=schedule_id)
        if dry_run:
            return plan, []
        by_id = {r.id: r for r in records}
        removed = []
        for decision in plan.remove:
            ctx.catalog.delete(by_id[decision.id])
            ctx.audit("prune", decision.id, "deleted", reason=decision.reason)
            removed.append(decision.id)
        return plan, removed


# --- next / statistics / health / crontab ------------------------------------------------

def next_fires(ctx: Context, count: int, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for s in schedules(ctx).schedules.values():
        if not s.enabled or not ctx.settings.enabled:
            rows.append({"scheduleId": s.id, "enabled": False, "cron": s.cron, "next": None,
                         "nextUtc": None, "timezone": s.timezone,
                         "reason": "disabled" if not s.enabled else "DB_BACKUP_ENABLED=false"})
            continue
        for when in next_runs(s, now, count):
            rows.append({"scheduleId": s.id, "enabled": True, "cron": s.cron,
                         "next": when.isoformat(), "nextUtc": when.astimezone(UTC).isoformat(),
                         "timezone": s.timezone, "reason": None})
    rows.sort(key=lambda r: (r["nextUtc"] is None, r["nextUtc"] or "", r["scheduleId"]))
    return rows


def _last_test(ctx: Context) -> dict[str, Any] | None:
    from .selftest import last_restore_test

    return last_restore_test(ctx)


def get_statistics(ctx: Context, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    used, free = ctx.storage.usage()
    sched = list(schedules(ctx).schedules.values())
    return statistics(ctx.catalog.list(), sched, now, DEFAULT_GRACE, used, free, _last_test(ctx))


def get_health(ctx: Context, now: datetime | None = None, min_free: int = 1 << 30,
               restore_test_days: int | None = None) -> Any:
    now = now or datetime.now(UTC)
    stats = get_statistics(ctx, now)
    sched = list(schedules(ctx).schedules.values())
    if not ctx.settings.enabled:
        sched = []
    return health(stats, sched, ctx.catalog.list(), now, DEFAULT_GRACE, min_free,
                  restore_test_days)


def get_metrics(ctx: Context, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    sched = list(schedules(ctx).schedules.values())
    return prometheus_text(ctx.catalog.list(), sched, now, DEFAULT_GRACE)


def get_crontab(ctx: Context) -> list[str]:
    exe = shutil.which("sbbackup") or str(Path(sys.argv[0]).absolute())
    config = str(ctx.settings.config_file) if ctx.settings.config_file else None
    enabled = [s for s in schedules(ctx).schedules.values() if s.enabled]
    return crontab_lines(enabled, exe, config, None)


def schedule_view(ctx: Context, s: Schedule, source: str, now: datetime) -> dict[str, Any]:
    """A schedule's settings with its last run, last success, next run, count and size."""
    mine = [r for r in ctx.catalog.list() if r.scheduleId == s.id]
    done = [r for r in mine if r.status == STATUS_COMPLETED]
    nxt = next_runs(s, now, 1) if s.enabled else []
    return {**s.to_json(), "source": source,
            "lastRun": mine[0].createdAt if mine else None,
            "lastRunStatus": mine[0].status if mine else None,
            "lastSuccess": done[0].createdAt if done else None,
            "nextRun": nxt[0].isoformat() if nxt else None,
            "backupCount": len(done), "totalSize": sum(r.size for r in done)}
