"""Use cases for cron-driven schedules: run-schedule, schedules, prune, next, crontab.

Pure policy lives in ``sbbackup.policy.schedules`` and ``sbbackup.policy.retention``; this
module feeds them the catalog and ``now``, takes the locks, and applies plans.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..catalog import writer_lock
from ..errors import LockedError, SbbackupError, UsageError
from ..model import BackupRecord, Status, iso
from ..policy.crontab import Job, UnitFile, detect_cron, render_cron
from ..policy.retention import DRILL, RetentionPolicy, plan_all
from ..policy.schedules import (
    Schedule,
    local_zone,
    next_runs,
    validate_schedule_id,
    zone_mismatch,
)
from ..policy.sources import ScheduleSet, change_schedule, load_schedules
from ..results import (
    Crontab,
    NextFire,
    NextFires,
    PruneResult,
    RetentionPlan,
    RunOutcome,
    RunResult,
    ScheduleList,
    ScheduleRemoved,
    ScheduleView,
)
from ..results.schedules import UnitFileView
from ..state import files as state_files
from .backups import create_backup, sweep_abandoned
from .context import Context
from .options import CreateOptions
from .verify import check_file

TEST_SCHEDULE = DRILL  # the schedule ID of the restore drill's own backups
PRUNE_LOCK = "prune"
# run-schedule has already taken a good backup when it reaches retention: wait a while for a
# concurrent `prune` rather than fail at once.
PRUNE_WAIT_SECONDS = 60.0


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def schedules(ctx: Context) -> ScheduleSet:
    return load_schedules(ctx.settings, ctx.state)


def policies(ctx: Context, sset: ScheduleSet) -> dict[str | None, RetentionPolicy]:
    """Retention per schedule ID; ``None`` is manual backups (DB_BACKUP_RETENTION_DAYS) and
    ``test`` the drill backups (DB_BACKUP_TEST_RETENTION_DAYS). Both keep their newest good
    copy (minKeep 1), like every schedule: a manual backup taken before a risky change, or the
    last drill's, is never the one retention takes away."""
    pol: dict[str | None, RetentionPolicy] = {
        sid: RetentionPolicy(s.retentionDays, s.minKeep) for sid, s in sset.schedules.items()
    }
    pol[None] = RetentionPolicy(ctx.settings.retention_days, 1)
    pol[TEST_SCHEDULE] = RetentionPolicy(ctx.settings.test_retention_days, 1)
    return pol


# The groups every run-schedule prunes besides its own schedule: manual backups and drill
# backups have no cron line of their own, so without this they would grow without bound.
UNSCHEDULED: frozenset[str | None] = frozenset({None, TEST_SCHEDULE})

# What a run-schedule never removes on its own: an unreadable manifest (a read that failed
# once, EIO or a storage hiccup, looks the same as a damaged file) and a data file with no
# manifest have lost their scheduleId, so they fall into the manual group and its days
# (DB_BACKUP_RETENTION_DAYS) although they may be a schedule's copy kept for a year. Health
# reports them; `sbbackup prune` or `delete` removes them when someone asks.
UNATTRIBUTED: frozenset[str] = frozenset({Status.CORRUPT, Status.ORPHAN})


# --- run-schedule ------------------------------------------------------------------------


def run_schedule(ctx: Context, schedule_id: str, now: datetime | None = None) -> RunResult:
    """The cron entry point: lock, back up, re-verify, then (only then) apply retention to
    this schedule's backups and to the manual and drill backups (``UNSCHEDULED``), under the
    one prune lock.

    A second run of the same schedule raises LockedError (exit 11) at once. Any failure of
    the backup or its re-verification raises before retention is even planned.
    """
    schedule = schedules(ctx).get(schedule_id)
    started = _now(now)
    if (off := backups_off(ctx)) is not None:
        return RunResult(schedule_id, RunOutcome.SKIPPED, off)
    if not schedule.enabled:
        return RunResult(schedule_id, RunOutcome.SKIPPED, f"schedule {schedule_id} is disabled")
    with ctx.state.lock(f"schedule-{schedule_id}", f"schedule {schedule_id}"):
        opts = CreateOptions(
            format=schedule.format,
            compress=schedule.compression,
            encrypt=schedule.encryption,
            schedule_id=schedule_id,
        )
        record = create_backup(ctx, opts, now=now)
        check_file(ctx, record)  # the checksum must re-verify before anything is pruned
        # Re-read the schedules: a change made while the dump ran must not be ignored.
        groups = UNSCHEDULED | {schedule_id}
        plan, removed = _apply_retention(
            ctx, schedules(ctx), groups, _now(now), False, PRUNE_WAIT_SECONDS, unattributed=False
        )
    # Only a run that completed spends the day's warning: a failure says enough by itself.
    mismatch = zone_mismatch(schedule, started, (local_zone(), UTC))
    warnings = _once_a_day(ctx, f"zone-{schedule_id}", mismatch, started)
    return RunResult(schedule_id, RunOutcome.COMPLETED, None, record, plan, removed, warnings)


def _once_a_day(ctx: Context, key: str, warning: str | None, now: datetime) -> list[str]:
    """``[warning]`` unless it was already given today (UTC), remembered in the state
    directory; a state file that cannot be written only means it is given again."""
    if warning is None:
        return []
    day = now.astimezone(UTC).date().isoformat()
    if ctx.state.warned().get(key) == day:
        return []
    with contextlib.suppress(SbbackupError, OSError):
        ctx.state.set_warned(key, day)
    return [warning]


# --- prune -------------------------------------------------------------------------------


def prune(
    ctx: Context, schedule_id: str | None, dry_run: bool, now: datetime | None = None
) -> PruneResult:
    """Plan retention (for one schedule or all) and apply it unless ``dry_run``."""
    sset = schedules(ctx)
    if schedule_id is not None and schedule_id != TEST_SCHEDULE:
        sset.get(schedule_id)
    groups = None if schedule_id is None else {schedule_id}
    plan, removed = _apply_retention(ctx, sset, groups, _now(now), dry_run, 0)
    return PruneResult(dry_run, schedule_id, plan, removed)


def _apply_retention(
    ctx: Context,
    sset: ScheduleSet,
    groups: Collection[str | None] | None,
    now: datetime,
    dry_run: bool,
    wait: float,
    unattributed: bool = True,
) -> tuple[RetentionPlan, list[str]]:
    """One prune lock for every schedule: two prunes never race over the same manifests. A
    dry run only plans: it takes no lock, so it writes nothing (a read-only path works).
    A real prune first sweeps what dead writers left, then removes each backup under its
    ID's lock, so nothing a live writer holds is touched. ``groups``: the schedule IDs whose
    backups are planned (``None`` in it: manual backups), or None for all. Without
    ``unattributed``, the ``UNATTRIBUTED`` records of the manual group are left out."""
    if dry_run:
        records = _plannable(ctx.catalog.list(), unattributed)
        return plan_all(records, policies(ctx, sset), now, only=groups), []
    with ctx.state.lock(PRUNE_LOCK, "a prune", wait=wait):
        sweep_abandoned(ctx)
        records = _plannable(ctx.catalog.list(), unattributed)
        plan = plan_all(records, policies(ctx, sset), now, only=groups)
        by_id = {r.id: r for r in records}
        removed = []
        for decision in plan.remove:
            try:
                with ctx.state.lock(writer_lock(decision.id), f"backup {decision.id}", remove=True):
                    ctx.catalog.delete_any(by_id[decision.id])
            except LockedError:
                continue  # a writer holds it now: the next prune decides again
            ctx.audit("prune", decision.id, "deleted", reason=decision.reason)
            removed.append(decision.id)
        return plan, removed


def _plannable(records: list[BackupRecord], unattributed: bool) -> list[BackupRecord]:
    if unattributed:
        return records
    return [r for r in records if not (r.scheduleId is None and r.status in UNATTRIBUTED)]


# --- schedules list / show / change ------------------------------------------------------


def backups_off(ctx: Context) -> str | None:
    """Why no schedule runs at all, naming the setting the user set; None when they run."""
    settings = ctx.settings
    if settings.enabled:
        return None
    if settings.env.get("DB_BACKUP_ENABLED", "") != "":
        where = f"DB_BACKUP_ENABLED={settings.env['DB_BACKUP_ENABLED']}"
    else:
        where = f"backup.enabled: false in {settings.config_file}"
    return f"scheduled backups are off ({where})"


def schedule_view(ctx: Context, s: Schedule, sset: ScheduleSet, now: datetime) -> ScheduleView:
    """A schedule's settings with its last run, last success, next run, count and size,
    whether it will run (and why not), and where each setting comes from."""
    mine = [r for r in ctx.catalog.list() if r.scheduleId == s.id]
    done = [r for r in mine if r.status == Status.COMPLETED]
    off = backups_off(ctx) or (None if s.enabled else f"schedule {s.id} is disabled")
    nxt = next_runs(s, now, 1) if off is None else []
    origins = sset.origins.get(s.id, {})
    return ScheduleView(
        scheduleId=s.id,
        cron=s.cron,
        retentionDays=s.retentionDays,
        timezone=s.timezone,
        enabled=s.enabled,
        minKeep=s.minKeep,
        compression=s.compression,
        encryption=s.encryption,
        format=s.format,
        description=s.description,
        source=sset.sources[s.id],
        lastRun=mine[0].createdAt if mine else None,
        lastRunStatus=mine[0].status if mine else None,
        lastSuccess=done[0].createdAt if done else None,
        nextRun=iso(nxt[0]) if nxt else None,
        nextRunLocal=_local(nxt[0]) if nxt else None,
        backupCount=len(done),
        totalSize=sum(r.size for r in done),
        willRun=off is None,
        reason=off,
        sources={name: o.source for name, o in origins.items()},
        shadowed=dict(sset.shadowed.get(s.id, {})),
    )


def list_schedules(ctx: Context, now: datetime | None = None) -> ScheduleList:
    sset = schedules(ctx)
    rows = [schedule_view(ctx, s, sset, _now(now)) for s in sset.schedules.values()]
    return ScheduleList(rows, backups_off(ctx))


def show_schedule(ctx: Context, schedule_id: str, now: datetime | None = None) -> ScheduleView:
    sset = schedules(ctx)
    return schedule_view(ctx, sset.get(schedule_id), sset, _now(now))


def edit_schedule(
    ctx: Context,
    schedule_id: str,
    action: str,
    fields: Mapping[str, object] | None = None,
    now: datetime | None = None,
) -> ScheduleView | ScheduleRemoved:
    """add / update / remove / enable / disable, persisted in the state file."""
    validate_schedule_id(schedule_id)
    result = change_schedule(ctx.settings, ctx.state, schedule_id, action, fields)
    ctx.audit("schedules", None, action, scheduleId=schedule_id)
    if result is None:
        return ScheduleRemoved(scheduleId=schedule_id, removed=True)
    return show_schedule(ctx, schedule_id, now)


# --- next / crontab ----------------------------------------------------------------------


def next_fires(ctx: Context, count: int, now: datetime | None = None) -> NextFires:
    """The next ``count`` fire times per enabled schedule, soonest first; disabled ones last."""
    now = _now(now)
    rows: list[NextFire] = []
    for s in schedules(ctx).schedules.values():
        if not s.enabled or not ctx.settings.enabled:
            why = "disabled" if not s.enabled else "backups off (DB_BACKUP_ENABLED=false)"
            rows.append(_fire(s, False, None, why))
            continue
        for when in next_runs(s, now, count):
            rows.append(_fire(s, True, when, None))
    rows.sort(key=lambda r: (r["nextRun"] is None, r["nextRun"] or "", r["scheduleId"]))
    return NextFires(rows)


def _fire(s: Schedule, enabled: bool, when: datetime | None, reason: str | None) -> NextFire:
    return NextFire(
        scheduleId=s.id,
        cron=s.cron,
        timezone=s.timezone,
        enabled=enabled,
        nextRun=iso(when),
        nextRunLocal=_local(when),
        reason=reason,
    )


def _local(when: datetime | None) -> str | None:
    """A fire time as the schedule's wall clock reads it, with its UTC offset (the one JSON
    timestamp that is not UTC; its key ends in ``Local``)."""
    return None if when is None else when.isoformat(timespec="milliseconds")


def get_crontab(
    ctx: Context,
    executable: str | None = None,
    config_path: str | None = None,
    log: str | None = None,
    cron: str | None = None,
    output_dir: Path | None = None,
    now: datetime | None = None,
) -> Crontab:
    """Crontab lines (or systemd units) for the enabled schedules, with absolute paths.

    ``cron`` None: the machine's, as ``detect_cron`` finds it. ``output_dir`` (systemd only)
    gets the unit files, mode 0644, each written atomically; a symlink there is refused."""
    if output_dir is not None and cron != "systemd":
        raise UsageError("--output-dir writes systemd units: use it with --cron systemd")
    kind, why = (cron, "--cron") if cron else detect_cron()
    command = [executable] if executable else _own_command()
    if config_path is None and ctx.settings.config_file:
        config_path = str(ctx.settings.config_file)
    enabled = [s for s in schedules(ctx).schedules.values() if s.enabled]
    out = render_cron(
        kind,
        enabled,
        Job(command, config_path, log),
        _now(now),
        local_zone(),
        not ctx.settings.enabled,
    )
    files = [UnitFileView(name=f.name, content=f.content) for f in out.files]
    written = _write_units(output_dir, out.files) if output_dir is not None else []
    return Crontab(cron=kind, cronReason=why, lines=out.lines, files=files, written=written)


def _write_units(directory: Path, files: Sequence[UnitFile]) -> list[str]:
    """Each unit to ``directory/name`` through a temp file renamed over it (0644: systemd and
    ``systemctl cat`` read units as any user); a symlink at a name is refused, not followed."""
    if not directory.is_dir() or directory.is_symlink():
        raise UsageError(f"--output-dir {directory}: not a directory (or a symlink)")
    written = []
    for f in files:
        path = directory / state_files.check_name(f.name)
        if path.is_symlink():
            raise state_files.symlink_error(path)
        fd, tmp = state_files.create_temp(directory, f.name)
        try:
            try:
                os.fchmod(fd, 0o644)
                os.write(fd, f.content.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            state_files.fsync_dir(directory)
        except OSError as exc:
            raise state_files.storage_error(exc, f"cannot write {path}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        written.append(str(path))
    return written


def _own_command() -> list[str]:
    """How cron should call this very sbbackup, by absolute path."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "sbbackup":
        return [str(argv0.absolute())]
    found = shutil.which("sbbackup")
    return [found] if found else [sys.executable, "-m", "sbbackup"]
