"""Use cases: create, list, show and delete backups."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from .. import __version__
from ..catalog import (
    BACKUP_ID_RE,
    BackupRecord,
    Catalog,
    NewerSchemaError,
    Status,
    iso,
    new_backup_id,
    validate_backup_id,
    writer_lock,
)
from ..engines import Engine
from ..errors import (
    IntegrityError,
    LockedError,
    NotFoundError,
    SbbackupError,
    TargetExistsError,
    UsageError,
    redact_secrets,
)
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
    now = now or datetime.now(UTC)
    fmt = opts.format or s.format
    compress = s.compression if opts.compress is None else opts.compress
    compression = (
        Compression(opts.level or s.compression_level, s.compression_threads) if compress else None
    )
    encrypt = s.encryption if opts.encrypt is None else opts.encrypt
    plan = None
    # A refusal the configuration caused (every choice of a schedule's run, or a setting the
    # caller did not override) is a failed run: it leaves a failed record. A choice the
    # caller made for this one backup is bad input: refused, nothing recorded.
    scheduled = opts.schedule_id is not None
    configured = scheduled or opts.format is None
    try:
        check_format(ctx.engine, fmt)
        if encrypt:
            from ..encryption import plan_encryption

            configured = scheduled or opts.encrypt is None
            plan = plan_encryption(s)  # fail closed, before anything is dumped
    except SbbackupError as exc:
        if configured:
            _record_refusal(ctx, opts, fmt, now, exc)
        raise
    ctx.storage.check_writable()  # before any lock: a read-only path says so
    sweep_abandoned(ctx, partials_only=True)
    suffix = (
        ctx.engine.file_extension[fmt] + (".zst" if compression else "") + (".age" if plan else "")
    )
    record = BackupRecord(
        id="",
        filename=None,
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
        writer={"pid": os.getpid(), "host": socket.gethostname()},
    )
    stage = plan.stage if plan else None
    with contextlib.ExitStack() as held:
        _reserve(ctx, record, suffix, now, opts.backup_id, held)
        try:
            _write(
                ctx,
                record,
                lambda name: BackupWriter(ctx.storage.open_write(name), compression, stage),
                progress,
            )
        finally:
            if record.status == Status.COMPLETED:  # committed, even if a signal came after
                ctx.audit(
                    "create",
                    record.id,
                    record.status,
                    size=record.size,
                    scheduleId=record.scheduleId,
                )
    return record


def _record_refusal(
    ctx: Context, opts: CreateOptions, fmt: str, now: datetime, exc: SbbackupError
) -> None:
    """Record a backup refused before its dump (fail closed: no recipient, a format the
    engine cannot write) as a ``failed`` attempt with the reason, so statistics, metrics and
    health count it at once. Reserved like any backup (the ID's lock, then an exclusive
    manifest), with no data file. Best effort: if the path cannot take a record, the refusal
    alone is reported."""
    record = BackupRecord(
        id="",
        filename=None,
        size=0,
        createdAt=iso(now) or "",
        checksum=None,
        status=Status.IN_PROGRESS,
        duration=0,
        scheduleId=opts.schedule_id,
        database=ctx.engine.describe(),
        format=fmt,
        toolVersion=__version__,
        writer={"pid": os.getpid(), "host": socket.gethostname()},
    )
    started = time.monotonic()
    with contextlib.ExitStack() as held:
        try:
            ctx.storage.check_writable()
            _reserve(ctx, record, ".refused", now, opts.backup_id, held)
        except (SbbackupError, OSError):
            return
        _record_failure(ctx, record, exc, started)


MAX_ID_TRIES = 1000


def _reserve(
    ctx: Context,
    record: BackupRecord,
    suffix: str,
    now: datetime,
    wanted: str | None,
    held: contextlib.ExitStack,
) -> None:
    """Make ``record``'s ID ours: take the ID's lock, then create its manifest (in progress)
    only if none exists. Two creates in one millisecond never share an ID: the loser of
    either step moves on to ``ID-1``, ``ID-2``... (an ID asked for is taken or refused)."""
    base = validate_backup_id(wanted) if wanted else new_backup_id(now)
    for n in range(1 if wanted else MAX_ID_TRIES):
        candidate = base if n == 0 else f"{base}-{n}"
        attempt = contextlib.ExitStack()
        try:
            attempt.enter_context(
                ctx.state.lock(writer_lock(candidate), f"backup {candidate}", remove=True)
            )
        except LockedError:
            continue
        record.id, record.filename = candidate, candidate + suffix
        try:
            reserved = ctx.catalog.reserve(record)
        except BaseException:
            attempt.close()
            raise
        if reserved:
            held.push(attempt.pop_all())
            return
        attempt.close()
    raise TargetExistsError(
        f"backup ID {base} is taken" if wanted else f"no free backup ID after {base}"
    )


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
    committed = saved = False
    writer: BackupWriter | None = None
    try:
        writer = open_writer(record.filename)
        dumped = ctx.engine.dump(record.format, writer, ctx.settings.row_counts, progress)
        with deferred_signals():  # the commit happens whole, or not at all
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
            saved = True
    except BaseException as exc:
        if saved:
            raise  # committed: a signal that arrives now never undoes the backup
        if writer is not None:
            writer.abort()
        if committed:
            # The data file made it but its manifest did not (disk full, Ctrl-C): without a
            # manifest it is no backup, so it must not sit there looking like one.
            with contextlib.suppress(SbbackupError, OSError):
                ctx.storage.delete(record.filename)
        _record_failure(ctx, record, exc, started)
        raise


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then are delivered (as the
    KeyboardInterrupt their handlers raise): the data file's commit and the manifest's are one
    step, so a signal never lands between them, and a backup is kept whole or removed whole.

    Python runs signal handlers in the main thread whichever thread the kernel picked (zstd's
    workers included), so a signal mask cannot defer them: the handlers are swapped for ones
    that only take note. Outside the main thread (API jobs) there is nothing to swap: the
    server's own handler decides there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in wanted}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


def unique_backup_id(catalog: Catalog, now: datetime) -> str:
    """An ID free now, to promise before the backup starts (the API's 202). The create still
    reserves it; if another host or process took it meanwhile, that create is refused."""
    base = new_backup_id(now)
    names = set(catalog.storage.list_names())
    candidate, n = base, 0
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


# --- writers that died ------------------------------------------------------------------


def _id_of(name: str) -> str | None:
    stem = name.split(".", 1)[0]
    return stem if BACKUP_ID_RE.fullmatch(stem) else None


def sweep_abandoned(ctx: Context, partials_only: bool = False) -> list[str]:
    """Clean up after backup writers that died (kill -9, a crash, a power cut): their partial
    and temp files, and, unless ``partials_only``, backups left ``in_progress``, which become
    ``failed`` ("abandoned") with their data files removed. Returns the IDs swept.

    A backup ID's writer holds the ID's lock from reservation to its last manifest write, so
    an ID is touched only while its lock is ours, and its manifest is read again under the
    lock: a live writer's files, or a backup completed meanwhile, are never removed.
    ``create`` sweeps what a listing and the lock files show (cheap: no manifest is parsed but
    the candidates'); ``prune`` also every manifest listed as abandoned.
    """
    storage = ctx.storage
    unfinished: dict[str, list[str]] = {}
    for name in storage.unfinished():
        backup_id = _id_of(name)
        if backup_id is not None:
            unfinished.setdefault(backup_id, []).append(name)
    ids = set(unfinished)
    # A writer killed after its data file was committed leaves no partial, but its lock file.
    for name in ctx.state.lock_names(writer_lock("")):
        backup_id = name[len(writer_lock("")) :]
        if BACKUP_ID_RE.fullmatch(backup_id):
            ids.add(backup_id)
    if not partials_only:
        ids |= {r.id for r in ctx.catalog.list() if r.status == Status.ABANDONED}
    swept = []
    for backup_id in sorted(ids):
        if not ctx.state.lock_free(writer_lock(backup_id)):
            continue  # its writer is alive (checked without creating a lock file)
        try:
            with ctx.state.lock(writer_lock(backup_id), f"backup {backup_id}", remove=True):
                _sweep_one(ctx, backup_id, unfinished.get(backup_id, []))
        except LockedError:
            continue  # a writer or another sweeper got there first
        swept.append(backup_id)
    return swept


def _sweep_one(ctx: Context, backup_id: str, unfinished: list[str]) -> None:
    """Under ``backup_id``'s lock: remove its leftovers; fail its manifest if in progress."""
    try:
        record: BackupRecord | None = ctx.catalog.get(backup_id)
    except NotFoundError:
        record = None
    except IntegrityError:
        record = None  # unreadable: `delete` or prune's corrupt handling deals with it
    for name in set(unfinished):
        ctx.storage.sweep(name)
    if record is None or record.status != Status.IN_PROGRESS:
        return
    writer = record.writer or {}
    who = f"pid {writer.get('pid', '?')} on {writer.get('host', '?')}"
    if record.filename:
        ctx.storage.sweep(record.filename)
        ctx.storage.delete(record.filename)  # a data file committed before the writer died
    error = f"abandoned: its writer ({who}) died before the backup was complete"
    record.status, record.error, record.filename = Status.FAILED, error, None
    record.size, record.checksum, record.uncompressedSize = 0, None, 0
    record.contentChecksum = None
    ctx.catalog.save(record)
    ctx.audit("sweep", backup_id, Status.FAILED, error=error)


# --- list / show / delete ----------------------------------------------------------------


def list_backups(
    ctx: Context, status: str | None = None, schedule: str | None = None, limit: int | None = None
) -> list[BackupRecord]:
    return ctx.catalog.list(status=status, schedule=schedule, limit=limit)


def show_backup(ctx: Context, backup_id: str) -> BackupRecord:
    """A backup's record, with its file status; an orphan data file as an ``orphan``."""
    return ctx.catalog.with_file_status(ctx.catalog.get_or_orphan(backup_id))


def delete_backup(ctx: Context, backup_id: str) -> BackupRecord:
    """Data file, then manifest, under the ID's lock (a backup being written is refused, exit
    11). A damaged manifest does not make a backup undeletable, nor does a missing one make an
    orphan data file so; one from a newer sbbackup (NewerSchemaError) is refused: that version
    can still read it."""
    validate_backup_id(backup_id)
    with ctx.state.lock(writer_lock(backup_id), f"backup {backup_id}", remove=True):
        try:
            record = show_backup(ctx, backup_id)
        except NewerSchemaError:
            raise
        except IntegrityError as exc:
            record = ctx.catalog.delete_unreadable(backup_id, exc.message)
            ctx.audit("delete", backup_id, "deleted", note="unreadable manifest")
            return record
        if record.status == Status.ORPHAN:  # every data file named after the ID goes
            for orphan in [r for r in ctx.catalog.iter_records() if r.id == backup_id]:
                ctx.catalog.delete_any(orphan)
            ctx.audit("delete", backup_id, "deleted", note="orphan data file")
            return record
        ctx.catalog.delete(record)
    ctx.audit("delete", backup_id, "deleted")
    return record
