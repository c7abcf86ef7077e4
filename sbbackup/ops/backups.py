"""Use cases: create, list, show and delete backups."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .. import __version__
from ..catalog import (
    BackupRecord,
    Catalog,
    NewerSchemaError,
    Status,
    iso,
    new_backup_id,
    validate_backup_id,
)
from ..engines import Engine
from ..errors import IntegrityError, SbbackupError, UsageError, redact_secrets
from ..pipeline import BackupWriter, Compression
from .context import Context
from .options import CreateOptions

Progress = Callable[[int], None]


# --- create ------------------------------------------------------------------------------


def check_format(engine: Engine, fmt: str) -> None:
    """The engine must be able to write ``fmt`` (the API asks before it starts the job)."""
    if fmt not in engine.formats:
        raise UsageError(f"the {engine.name} engine cannot write the {fmt} format")


def create_backup(
    ctx: Context, opts: CreateOptions, now: datetime | None = None, progress: Progress | None = None
) -> BackupRecord:
    """Dump, stream to storage, commit, then write the manifest (the commit record)."""
    s = ctx.settings
    fmt = opts.format or s.format
    check_format(ctx.engine, fmt)
    compress = s.compression if opts.compress is None else opts.compress
    compression = (
        Compression(opts.level or s.compression_level, s.compression_threads) if compress else None
    )
    encrypt = s.encryption if opts.encrypt is None else opts.encrypt
    plan = None
    if encrypt:
        from ..encryption import plan_encryption

        plan = plan_encryption(s)  # fail closed, before anything is dumped
    ctx.storage.sweep_partials()
    now = now or datetime.now(UTC)
    backup_id = (
        validate_backup_id(opts.backup_id) if opts.backup_id else unique_backup_id(ctx.catalog, now)
    )
    record = BackupRecord(
        id=backup_id,
        filename=backup_id
        + ctx.engine.file_extension[fmt]
        + (".zst" if compression else "")
        + (".age" if plan else ""),
        size=0,
        createdAt=iso(now) or "",
        checksum=None,
        status=Status.IN_PROGRESS,
        duration=0,
        scheduleId=opts.schedule_id,
        database=ctx.engine.describe(),
        format=fmt,
        compression=compression.to_json() if compression else None,
        encryption=plan.manifest if plan else None,
        toolVersion=__version__,
    )
    assert record.filename
    stage = plan.stage if plan else None
    _write(
        ctx,
        record,
        lambda name: BackupWriter(ctx.storage.open_write(name), compression, stage),
        progress,
    )
    ctx.audit("create", record.id, Status.COMPLETED, size=record.size, scheduleId=record.scheduleId)
    return record


def _write(
    ctx: Context,
    record: BackupRecord,
    open_writer: Callable[[str], BackupWriter],
    progress: Progress | None,
) -> None:
    """Dump into a new writer, commit it, then save the manifest; undo everything on failure
    (the writer is opened inside the ``try``: an interrupt just after the partial file appears
    still removes it and records the attempt)."""
    assert record.filename
    started = time.monotonic()
    committed = False
    writer: BackupWriter | None = None
    try:
        writer = open_writer(record.filename)
        dumped = ctx.engine.dump(record.format, writer, ctx.settings.row_counts, progress)
        result = writer.finish()
        committed = True
        record.size = result.size
        record.checksum = result.checksum
        record.uncompressedSize = result.uncompressed_size
        record.contentChecksum = result.content_checksum
        record.database = {**record.database, **dumped.database}
        record.pgDumpVersion = dumped.tool_version
        record.contents = dumped.contents
        record.status = Status.COMPLETED
        record.completedAt = iso(datetime.now(UTC))
        record.duration = int((time.monotonic() - started) * 1000)
        ctx.catalog.save(record)  # the commit record
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if committed:
            # The data file made it but its manifest did not (disk full, Ctrl-C): without a
            # manifest it is no backup, so it must not sit there looking like one.
            with contextlib.suppress(SbbackupError, OSError):
                ctx.storage.delete(record.filename)
        _record_failure(ctx, record, exc, started)
        raise


def unique_backup_id(catalog: Catalog, now: datetime) -> str:
    base = new_backup_id(now)
    names = set(catalog.storage.list_names())
    candidate = base
    n = 0
    while any(name.startswith(candidate + ".") for name in names):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _record_failure(ctx: Context, record: BackupRecord, exc: BaseException, started: float) -> None:
    """Keep a small failed-attempt record so statistics can count it. Never mask ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        message = "interrupted"
    else:
        message = redact_secrets(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
    record.status = Status.FAILED
    record.error = message
    record.filename = None
    record.size, record.checksum, record.uncompressedSize = 0, None, 0
    record.contentChecksum = None
    record.completedAt = iso(datetime.now(UTC))
    record.duration = int((time.monotonic() - started) * 1000)
    try:
        ctx.catalog.save(record)
        ctx.audit("create", record.id, Status.FAILED, error=message)
    except (SbbackupError, OSError):
        pass


# --- list / show / delete ----------------------------------------------------------------


def list_backups(
    ctx: Context, status: str | None = None, schedule: str | None = None, limit: int | None = None
) -> list[BackupRecord]:
    return ctx.catalog.list(status=status, schedule=schedule, limit=limit)


def show_backup(ctx: Context, backup_id: str) -> BackupRecord:
    return ctx.catalog.with_file_status(ctx.catalog.get(backup_id))


def delete_backup(ctx: Context, backup_id: str) -> BackupRecord:
    """Data file, then manifest. A damaged manifest does not make a backup undeletable; one
    from a newer sbbackup (NewerSchemaError) is refused: that version can still read it."""
    try:
        record = show_backup(ctx, backup_id)
    except NewerSchemaError:
        raise
    except IntegrityError as exc:
        record = ctx.catalog.delete_unreadable(backup_id, exc.message)
        ctx.audit("delete", backup_id, "deleted", note="unreadable manifest")
        return record
    ctx.catalog.delete(record)
    ctx.audit("delete", backup_id, "deleted")
    return record
