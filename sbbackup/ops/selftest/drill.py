"""`sbbackup test`, part two: the restore drill. It restores a backup into a scratch target
``sbbackup_test_<id>``, compares it exactly with the counts the backup recorded, and always
drops the scratch target, even when interrupted. A later run drops leftovers that nobody is
connected to. The outcome is kept (``drills``) for `statistics` and `health`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from ...engines import RestoreRequest, signals_deferred
from ...errors import (
    DatabaseError,
    ExitCode,
    IntegrityError,
    NotFoundError,
    SbbackupError,
    StorageError,
)
from ...model import BackupRecord, Status, iso, validate_backup_id
from ...results import Check, CheckStatus, Drill, DrillStatus, TestReport, VerifyReport
from ..backups import create_backup, delete_backup, show_backup
from ..context import Context
from ..options import CreateOptions
from ..restore import compare_restored, load_backup, timed
from ..schedules import TEST_SCHEDULE
from ..verify import check_file, check_key, verify_backups
from .preflight import preflight
from .report import TestOptions

SCRATCH_PREFIX = "sbbackup_test_"
DRILL_LOCK = "drill"


def run_self_test(ctx: Context, opts: TestOptions, now: datetime | None = None) -> TestReport:
    now = now or datetime.now(UTC)
    if opts.drill and opts.backup_id:  # a bad argument is refused before any check runs
        validate_backup_id(opts.backup_id)  # UsageError (2)
        with contextlib.suppress(StorageError):  # an unusable path: the checks say why
            show_backup(ctx, opts.backup_id)  # NotFoundError (10), IntegrityError (13)
    report = TestReport(checks=preflight(ctx, now), drill=Drill(), startedAt=iso(now) or "")
    if opts.drill and any(c.status == CheckStatus.FAIL for c in report.checks):
        report.drill.error = "not run: a preflight check failed"
    elif opts.drill:
        run_drill(ctx, lambda d: _pick_backup(ctx, opts, d), opts.target_url, report.drill)
        if not opts.keep:
            _delete_drill_backup(ctx, report)
    report.finishedAt = iso(datetime.now(UTC))
    try:  # only a drill writes: the preflight alone leaves no trace
        if opts.drill:
            ctx.audit("test", report.drill.backupId, "passed" if report.ok else "failed")
    except StorageError as exc:  # diagnose, don't die: the report says it, with the rest
        report.checks.append(Check("audit", CheckStatus.FAIL, exc.message, int(exc.exit_code)))
    return report


def _delete_drill_backup(ctx: Context, report: TestReport) -> None:
    """`test --no-keep`: delete the backup this drill made, once the drill has passed. A
    failed drill keeps it, to be inspected (drill-backup retention removes it later). A
    deletion that fails is a failed check: CI must not believe its backups are gone."""
    drill = report.drill
    if drill.status != DrillStatus.PASSED or drill.backupId is None:
        return
    try:
        delete_backup(ctx, drill.backupId)
    except SbbackupError as exc:
        report.checks.append(Check("no-keep", CheckStatus.FAIL, exc.message, int(exc.exit_code)))
        return
    drill.backupDeleted = True


def drill_backup(ctx: Context, record: BackupRecord, server: str | None) -> Drill:
    """`verify --deep --restore`: the drill of one existing backup."""
    drill = Drill()
    run_drill(ctx, lambda _: record, server, drill)
    return drill


def run_drill(
    ctx: Context, pick: Callable[[Drill], BackupRecord], server: str | None, drill: Drill
) -> None:
    """Hold the drill lock, drill, and record the outcome for `statistics` and `health`."""
    started = iso(datetime.now(UTC)) or ""
    try:
        with ctx.state.lock(DRILL_LOCK, "a restore drill"):
            try:
                _drill(ctx, pick, server, drill)
            except KeyboardInterrupt:  # SIGINT/SIGTERM: the scratch target is already dropped
                drill.status, drill.error = DrillStatus.FAILED, "interrupted"
                drill.code = int(ExitCode.INTERRUPTED)
                with contextlib.suppress(SbbackupError, OSError):
                    _record(ctx, drill, started)  # statistics count it as a failed drill
                raise
            _record(ctx, drill, started)
    except SbbackupError as exc:  # the lock is held, or the record could not be written
        drill.status, drill.error, drill.code = DrillStatus.FAILED, exc.message, int(exc.exit_code)


def _pick_backup(ctx: Context, opts: TestOptions, drill: Drill) -> BackupRecord:
    if opts.backup_id:
        return show_backup(ctx, opts.backup_id)
    if opts.latest:
        found = ctx.catalog.list(status=Status.COMPLETED, limit=1)
        if not found:
            raise NotFoundError("no completed backup to drill: run `sbbackup create` first")
        return found[0]
    return timed(
        drill.timings,
        "backup",
        lambda: create_backup(ctx, CreateOptions(schedule_id=TEST_SCHEDULE)),
    )


def _drill(
    ctx: Context, pick: Callable[[Drill], BackupRecord], server: str | None, drill: Drill
) -> None:
    engine = ctx.engine
    scratch: str | None = None
    try:
        _drop_leftovers(ctx, server, drill)
        record = pick(drill)
        drill.backupId = record.id
        if record.status != Status.COMPLETED or not record.filename:
            raise IntegrityError(f"backup {record.id} is {record.status}: {record.error or ''}")
        timed(drill.timings, "verify", lambda: check_file(ctx, record))
        scratch = engine.scratch_target(SCRATCH_PREFIX + secrets.token_hex(4), server)
        drill.target = engine.resolve_target(scratch).display
        target = scratch

        # The drill takes the restore's own path (a staging database, judged, then renamed
        # to the scratch name): a passing drill proves that path too.
        def judge(staged: str | None) -> None:
            assert staged is not None
            timed(drill.timings, "compare", lambda: _compare(ctx, record, staged, drill))

        timed(drill.timings, "restore", lambda: _restore(ctx, record, target, judge))
        drill.timings["restore"] = max(
            0, drill.timings["restore"] - drill.timings.get("compare", 0)
        )
        drill.status = DrillStatus.PASSED
    except SbbackupError as exc:
        drill.status, drill.error, drill.code = DrillStatus.FAILED, exc.message, int(exc.exit_code)
    finally:
        if scratch is not None:
            with signals_deferred():
                try:
                    engine.drop_target(scratch)
                    drill.scratchDropped = True
                except SbbackupError as exc:
                    drill.status, drill.code = DrillStatus.FAILED, drill.code or int(exc.exit_code)
                    drill.error = f"{drill.error + '; ' if drill.error else ''}{exc.message}"


def _drop_leftovers(ctx: Context, server: str | None, drill: Drill) -> None:
    """Drop scratch targets of earlier runs that died. One still in use is left alone."""
    engine = ctx.engine
    for leftover in engine.leftover_targets(SCRATCH_PREFIX, server):
        try:
            engine.drop_target(leftover, force=False)
        except DatabaseError:
            continue  # a concurrent drill (another configuration) is using it
        drill.leftoversDropped.append(engine.resolve_target(leftover).display)


def _restore(
    ctx: Context, record: BackupRecord, scratch: str, judge: Callable[[str | None], None]
) -> None:
    if record.encryption:
        check_key(ctx, record)  # a wrong key fails here (exit 12), before anything is created
    props = record.database.get("properties")
    load_backup(ctx, record, RestoreRequest(scratch, create_target=True, properties=props), judge)


def _compare(ctx: Context, record: BackupRecord, scratch: str, drill: Drill) -> None:
    if not record.contents:
        raise IntegrityError(
            f"backup {record.id} recorded no row counts to compare with "
            "(backup.rowCounts is off): nothing proves the restore is complete"
        )
    found = compare_restored(ctx, record, scratch, strict=True)  # the scratch held nothing
    drill.tables, drill.differences = found.tables, found.differences
    if drill.differences:
        more = f" (and {len(drill.differences) - 5} more)" if len(drill.differences) > 5 else ""
        raise IntegrityError(
            f"the restored copy of {record.id} differs from the backup: "
            + "; ".join(drill.differences[:5])
            + more
        )


# --- the record of the last drill --------------------------------------------------------


def _record(ctx: Context, drill: Drill, started: str) -> None:
    """Keep the last drill and the last successful one, for `statistics` and `health`."""
    entry = {
        "at": started,
        "status": drill.status,
        "backupId": drill.backupId,
        "scheduleId": _schedule_of(ctx, drill.backupId),  # for the last-verified metric
        "error": drill.error,
        "timings": drill.timings,
    }
    ctx.state.record_drill(entry, passed=drill.status == "passed")


def _schedule_of(ctx: Context, backup_id: str | None) -> str | None:
    """The schedule of the drilled backup (``manual`` for none), None if it cannot be read."""
    if backup_id is None:
        return None
    try:
        return ctx.catalog.get(backup_id).scheduleId or "manual"
    except (SbbackupError, OSError):
        return None


# --- verify --deep --restore -------------------------------------------------------------


def verify_with_restore(
    ctx: Context, backup_id: str | None, all_: bool, server: str | None
) -> VerifyReport:
    """`verify --deep --restore`: the deep check, then a drill of every backup that passed it."""
    report = verify_backups(ctx, backup_id, all_, deep=True)
    for result in report.results:
        if not result.ok:
            continue
        drill = drill_backup(ctx, ctx.catalog.get(result.id), server)
        result.restore = drill
        if drill.status != DrillStatus.PASSED:
            result.ok, result.error, result.exitCode = False, drill.error, drill.code
    return report
