"""Handlers for backups and restores: body -> ops options -> one ops call. The route table
(``routes.py``) has checked the query parameters' names before any of these runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .. import __version__, ops
from ..errors import LockedError, NotFoundError, SbbackupError, UsageError, redact_secrets
from ..model import BackupRecord, RestoreRecord, Status, iso, validate_backup_id
from ..policy.schedules import SCHEDULE_ID_RE
from .app import Api
from .context import Request, Response
from .jobs import Job, wait_for
from .policy import NO_TARGET_URL, guard_strength, restore_target
from .wire import (
    BACKUP_ALIASES,
    BACKUP_FIELDS,
    BACKUP_STATUSES,
    MAX_ID,
    RESTORE_FIELDS,
    JobStatus,
    aliased,
    field,
    only,
    query_int,
    query_one,
    validated,
)


def create_backup(api: Api, req: Request) -> Response:
    body, ctx, s = aliased(req.body, BACKUP_ALIASES), req.ctx, api.settings
    only(body, BACKUP_FIELDS)
    opts = ops.CreateOptions(
        format=field(body, "format", str),
        compress=field(body, "compression", bool),
        level=field(body, "level", int),
        encrypt=field(body, "encryption", bool),
    )
    guard_strength(
        s,
        ctx,
        {"encryption": opts.encrypt, "compression": opts.compress},
        {"encryption": s.encryption, "compression": s.compression},
    )
    api.jobs.check_cap("backup")
    if opts.format is not None:
        ops.check_format(ctx.engine, opts.format)  # now, rather than in the job
    now = api.jobs.backup_time()
    backup_id = ops.unique_backup_id(ctx.catalog, now)
    opts = replace(opts, backup_id=backup_id)  # the ID this answer promises
    placeholder = BackupRecord(
        id=backup_id,
        filename=None,
        size=0,
        createdAt=iso(now) or "",
        checksum=None,
        status=Status.IN_PROGRESS,
        duration=0,
        toolVersion=__version__,
    )
    job = api.jobs.start(
        "backup",
        backup_id,
        lambda: ops.create_backup(ctx, opts, now=now),
        cancel=ctx.cancel,
        record=placeholder,
    )
    if not req.wait:
        return Response(202, placeholder.to_json(), {"Location": f"/api/backup/{backup_id}"})
    record: BackupRecord = wait_for(job)
    return Response(201, record.to_json(), {"Location": f"/api/backup/{record.id}"})


def list_backups(api: Api, req: Request) -> Response:
    status = query_one(req.query, "status")
    if status is not None and status not in BACKUP_STATUSES:
        raise UsageError(f"query parameter 'status' must be one of {', '.join(BACKUP_STATUSES)}")
    schedule = query_one(req.query, "scheduleId")
    if schedule is not None:
        validated(SCHEDULE_ID_RE, schedule, "schedule ID")
    limit = query_int(req.query, "limit", 1, 100_000)
    records = [r.to_json() for r in ops.list_backups(req.ctx, status, schedule, None)]
    if status in (None, Status.IN_PROGRESS) and schedule is None:
        known = {r["id"] for r in records}
        running = [
            j.extra["record"].to_json() for j in api.jobs.running("backup") if j.id not in known
        ]
        records = sorted(running + records, key=lambda r: r["createdAt"], reverse=True)
    return Response(200, records[:limit] if limit else records)


def show_backup(api: Api, req: Request) -> Response:
    backup_id = validate_backup_id(req.params["backupId"])
    job = api.jobs.get(backup_id, "backup")
    if job is not None and not job.done.is_set():
        return Response(200, job.extra["record"].to_json())
    try:
        return Response(200, ops.show_backup(req.ctx, backup_id).to_json())
    except NotFoundError:
        if job is None or job.status == JobStatus.COMPLETED:  # never started, or since deleted
            raise
    # A job whose backup never got a manifest (it failed before dumping).
    record: BackupRecord = job.extra["record"]
    failed = {**record.to_json(), "status": Status.FAILED, "completedAt": job.finishedAt}
    failed["error"] = redact_secrets(job.error.message) if job.error else None
    return Response(200, failed)


def delete_backup(api: Api, req: Request) -> Response:
    backup_id = validate_backup_id(req.params["backupId"])
    job = api.jobs.get(backup_id, "backup")
    if job is not None and not job.done.is_set():
        raise LockedError(f"backup {backup_id} is still running")
    return Response(200, ops.delete_backup(req.ctx, backup_id).to_json())


def restore_backup(api: Api, req: Request) -> Response:
    """Everything refused here is refused before the job starts: nothing is connected to,
    created or dropped. The engine's own refusals (an existing target: 409, a target
    another restore holds: 409, policy: 403) come back through ``_await_record``."""
    backup_id = validate_backup_id(req.params["backupId"])
    body, ctx = req.body, req.ctx
    if "targetUrl" in body:
        raise UsageError(NO_TARGET_URL)
    only(body, RESTORE_FIELDS)
    opts = ops.RestoreOptions(  # checks jobs
        backup_id=backup_id,
        jobs=field(body, "jobs", int),
        no_owner=bool(field(body, "noOwner", bool)),
        no_privileges=bool(field(body, "noPrivileges", bool)),
    )
    api.jobs.check_cap("restore")
    restore_id = ops.new_restore_id()
    target = restore_target(api.settings, api.restore_dir, ctx, body)
    opts = replace(opts, restore_id=restore_id, **target)
    ops.show_backup(ctx, backup_id)  # 404 now rather than in the job
    job = api.jobs.start(
        "restore", restore_id, lambda: ops.restore_backup(ctx, opts), cancel=ctx.cancel
    )
    record = _await_record(job, lambda: ops.get_restore(ctx, restore_id))
    return Response(202, record, {"Location": f"/api/backup/restore/{restore_id}"})


def get_restore(api: Api, req: Request) -> Response:
    restore_id = req.params["restoreId"]
    if len(restore_id) > MAX_ID:
        raise UsageError("invalid restore ID")
    return Response(200, _redacted_record(ops.get_restore(req.ctx, restore_id)))


def _await_record(job: Job, read: Callable[[], RestoreRecord]) -> dict[str, Any]:
    """Wait until the operation has written its record, or has failed before it could."""
    while True:
        finished = job.done.wait(0.02)
        try:
            return _redacted_record(read())
        except NotFoundError:
            if finished:
                raise job.error or SbbackupError("the operation left no record") from None


def _redacted_record(record: RestoreRecord) -> dict[str, Any]:
    """A restore record for a client: its error text with secrets masked, its keys in the
    record file's (sorted) order."""
    data = dict(sorted(record.to_json().items()))
    if isinstance(data["error"], str):
        data["error"] = redact_secrets(data["error"])
    return data
