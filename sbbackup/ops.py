"""Use cases. Never imports click or rich, never prints, never exits: returns results or raises."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from . import __version__
from .audit import append_audit
from .catalog import (
    STATUS_COMPLETED,
    STATUS_FAILED,
    BackupRecord,
    Catalog,
    NewerSchemaError,
    iso,
    new_backup_id,
    validate_backup_id,
)
from .config import Settings
from .engines import Engine, IncompleteDumpError, compare_contents, engine_for
from .errors import (
    IntegrityError,
    NotFoundError,
    PolicyError,
    SbbackupError,
    StorageError,
    TargetExistsError,
    UsageError,
    redact_secrets,
)
from .pipeline import (
    BackupWriter,
    Compression,
    HashingReader,
    check_digest,
    iter_plaintext,
    sha256_of,
)
from .storage import Storage
from .storage.local import LocalStorage, ensure_private_dir

Progress = Callable[[int], None]


@dataclass
class Context:
    """Everything a use case needs, built once from validated settings."""

    settings: Settings
    remote: str | None = None  # the API's client address, for the audit log

    @cached_property
    def storage(self) -> Storage:
        from .storage import open_storage

        return open_storage(self.settings.backup_path)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.storage)

    @cached_property
    def engine(self) -> Engine:
        return engine_for(self.settings.database_url, self.settings)

    @property
    def state_dir(self) -> Path:
        """Audit log, restore records, locks: always on the local filesystem."""
        storage = self.storage
        if isinstance(storage, LocalStorage):
            return storage.root
        from .state import resolve_dir

        state = self.settings.env.get("SBBACKUP_STATE_DIR", "~/.local/state/sbbackup")
        return resolve_dir(Path(state).expanduser())

    @cached_property
    def identities(self) -> list[Any]:
        """The configured age identities, read once: checking the key and then restoring reuse
        them, and a passphrase identity remembers its scrypt result (about a second each)."""
        from .encryption import identities

        return identities(self.settings)

    def cancel(self) -> None:
        """Stop the engine's children, if an engine was ever made (server shutdown)."""
        if "engine" in self.__dict__:
            self.engine.cancel()

    def audit(self, operation: str, target_id: str | None, result: str, **extra: Any) -> None:
        if self.remote:
            extra["remote"] = self.remote
        append_audit(self.state_dir, operation, target_id, result, **extra)


# --- create ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateOptions:
    format: str | None = None
    compress: bool | None = None
    level: int | None = None
    encrypt: bool | None = None
    schedule_id: str | None = None
    # An ID the caller reserved (the API answers with it before the backup starts).
    backup_id: str | None = None


def create_backup(
    ctx: Context, opts: CreateOptions, now: datetime | None = None, progress: Progress | None = None
) -> BackupRecord:
    """Dump, stream to storage, commit, then write the manifest (the commit record)."""
    s = ctx.settings
    engine = ctx.engine
    fmt = opts.format or s.format
    if fmt not in engine.formats:
        raise UsageError(f"the {engine.name} engine cannot write the {fmt} format")
    compress = s.compression if opts.compress is None else opts.compress
    compression = (
        Compression(opts.level or s.compression_level, s.compression_threads) if compress else None
    )
    encrypt = s.encryption if opts.encrypt is None else opts.encrypt
    plan = None
    if encrypt:
        from .encryption import plan_encryption

        plan = plan_encryption(s)  # fail closed, before anything is dumped
    storage = ctx.storage
    storage.sweep_partials()
    now = now or datetime.now(UTC)
    backup_id = (
        validate_backup_id(opts.backup_id) if opts.backup_id else unique_backup_id(ctx.catalog, now)
    )
    filename = (
        backup_id
        + engine.file_extension[fmt]
        + (".zst" if compression else "")
        + (".age" if plan else "")
    )
    record = BackupRecord(
        id=backup_id,
        filename=filename,
        size=0,
        createdAt=iso(now) or "",
        checksum=None,
        status="in_progress",
        duration=0,
        scheduleId=opts.schedule_id,
        database=engine.describe(),
        format=fmt,
        compression=compression.to_json() if compression else None,
        encryption=plan.manifest if plan else None,
        toolVersion=__version__,
    )
    started = time.monotonic()
    writer = BackupWriter(storage.open_write(filename), compression, plan.stage if plan else None)
    committed = False
    try:
        dumped = engine.dump(fmt, writer, s.row_counts, progress)
        result = writer.finish()
        committed = True
        record.size = result.size
        record.checksum = result.checksum
        record.uncompressedSize = result.uncompressed_size
        record.database = {**record.database, **dumped.database}
        record.pgDumpVersion = dumped.tool_version
        record.contents = dumped.contents
        record.status = STATUS_COMPLETED
        record.completedAt = iso(datetime.now(UTC))
        record.duration = int((time.monotonic() - started) * 1000)
        ctx.catalog.save(record)  # the commit record
    except BaseException as exc:
        writer.abort()
        if committed:
            # The data file made it but its manifest did not (disk full, Ctrl-C): without a
            # manifest it is no backup, so it must not sit there looking like one.
            with contextlib.suppress(SbbackupError, OSError):
                storage.delete(filename)
        _record_failure(ctx, record, exc, started)
        raise
    ctx.audit("create", record.id, "completed", size=record.size, scheduleId=record.scheduleId)
    return record


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
    record.status = STATUS_FAILED
    record.error = message
    record.filename = None
    record.size, record.checksum, record.uncompressedSize = 0, None, 0
    record.completedAt = iso(datetime.now(UTC))
    record.duration = int((time.monotonic() - started) * 1000)
    try:
        ctx.catalog.save(record)
        ctx.audit("create", record.id, "failed", error=message)
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


# --- verify ------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    id: str
    filename: str | None
    ok: bool
    deep: bool
    checksum: str | None = None
    error: str | None = None
    exitCode: int = 0
    restore: dict[str, Any] | None = None  # the drill, with `verify --deep --restore`

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    results: list[VerifyResult] = field(default_factory=list)

    @property
    def failed(self) -> list[VerifyResult]:
        return [r for r in self.results if not r.ok]

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "results": [r.to_json() for r in self.results]}


def verify_backups(ctx: Context, backup_id: str | None, all_: bool, deep: bool) -> VerifyReport:
    if backup_id is None and not all_:
        raise UsageError("give a backup ID or --all")
    if all_:
        records = [r for r in ctx.catalog.list() if r.status != STATUS_FAILED]
    else:
        records = [show_backup(ctx, backup_id or "")]
    report = VerifyReport()
    for record in records:
        report.results.append(_verify_one(ctx, record, deep))
    return report


def _verify_one(ctx: Context, record: BackupRecord, deep: bool) -> VerifyResult:
    result = VerifyResult(record.id, record.filename, ok=False, deep=deep)
    try:
        if record.status != STATUS_COMPLETED or not record.filename:
            raise IntegrityError(
                f"{record.filename or record.id}: backup is {record.status}"
                + (f" ({record.error})" if record.error else "")
            )
        if deep:
            _deep_check(ctx, record)
        else:
            with ctx.storage.open_read(record.filename) as fh:
                digest, _ = sha256_of(fh)
            check_digest(digest, record.checksum, record.filename)
        result.ok, result.checksum = True, record.checksum
    except FileNotFoundError:
        result.error = f"{record.filename}: data file is missing"
        result.exitCode = int(IntegrityError.exit_code)
    except SbbackupError as exc:
        result.error = exc.message
        result.exitCode = int(exc.exit_code)
    return result


def plaintext(ctx: Context, record: BackupRecord, raw: HashingReader) -> Iterator[bytes]:
    decrypt = None
    if record.encryption:
        from .encryption import decryptor

        decrypt = decryptor(ctx.settings, record.id, ctx.identities)
    return iter_plaintext(raw, record.compression is not None, decrypt)


def _deep_check(ctx: Context, record: BackupRecord) -> None:
    """Hash, decrypt, decompress and check the dump's structure, all in one pass."""
    assert record.filename
    with ctx.storage.open_read(record.filename) as fh:
        raw = HashingReader(fh)
        incomplete: IncompleteDumpError | None = None
        try:
            ctx.engine.check_structure(record.format, plaintext(ctx, record, raw))
        except IncompleteDumpError as exc:  # the whole file was read: its digest comes first
            incomplete = exc
        check_digest(raw.hash.hexdigest(), record.checksum, record.filename)
    if incomplete is not None:
        raise IntegrityError(f"{record.filename}: {incomplete.message}")


# --- restore -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreOptions:
    backup_id: str
    target: str | None = None
    create_target: bool = False
    clean: bool = False
    confirmed: bool = False
    jobs: int | None = None
    restore_id: str | None = None  # the API names a restore before it starts (new_restore_id)
    # The target must not exist yet: this restore creates it (TargetExistsError otherwise).
    # The API sets it for a bare database name or a file in api.restoreDir.
    must_be_new: bool = False
    # May the target be the source at all? (The API: only with api.allowRestoreOverSource.)
    source_allowed: bool = True


RESTORE_DIR = "restores"


def _restore_store(ctx: Context) -> LocalStorage:
    store = LocalStorage(ctx.state_dir / RESTORE_DIR)
    ensure_private_dir(store.root, under=ctx.state_dir)
    return store


RESTORE_ID_RE = r"restore_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z_[0-9a-f]{6}"


def new_restore_id(now: datetime | None = None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"restore_{now:%Y-%m-%dT%H-%M-%S}Z_{secrets.token_hex(3)}"


def restore_backup(ctx: Context, opts: RestoreOptions) -> dict[str, Any]:
    """The seed's five steps: verify, prepare, restore, validate, clean up. Returns the record.

    Before anything is written the target is resolved once (reached, pinned, identified):
    an unreachable target fails here, the source needs ``confirmed``, a ``must_be_new`` target
    that exists is refused, and the target is locked for the whole restore (a second restore
    into it gets LockedError, exit 11, HTTP 409).
    """
    import hashlib

    from .locks import hold

    record = show_backup(ctx, opts.backup_id)
    engine = ctx.engine
    target = engine.resolve_target(opts.target)
    if target.is_source and not opts.source_allowed:
        raise PolicyError(
            f"{target.display} is the source database: restoring over it is not allowed here"
        )
    if target.is_source and not opts.confirmed:
        raise UsageError(
            f"restoring {record.id} over the source database "
            f"{engine.redact(None)} is destructive: pass --yes to confirm"
        )
    if opts.must_be_new and target.exists:
        raise TargetExistsError(f"target {target.display} already exists")
    lock = "restore-" + hashlib.sha256(target.key.encode()).hexdigest()[:16]
    with hold(ctx.state_dir, lock, f"a restore into {target.display}"):
        return _restore_locked(ctx, record, opts, target.display)


def _restore_locked(
    ctx: Context, record: BackupRecord, opts: RestoreOptions, display: str
) -> dict[str, Any]:
    now = datetime.now(UTC)
    rec: dict[str, Any] = {
        "restoreId": opts.restore_id or new_restore_id(now),
        "backupId": record.id,
        "target": display,
        "startedAt": iso(now),
        "finishedAt": None,
        "status": "in_progress",
        "error": None,
        "duration": 0,
        "steps": {},
        "validation": None,
    }
    store = _restore_store(ctx)
    store.write_bytes_atomic(rec["restoreId"] + ".json", _dumps(rec))
    started = time.monotonic()
    try:
        fresh = opts.create_target or opts.clean or opts.must_be_new
        _restore_steps(ctx, record, opts, rec, fresh=fresh)
        rec["status"] = "completed"
    except BaseException as exc:
        rec["status"] = "failed"
        rec["error"] = (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else redact_secrets(str(exc))
        )
        raise
    finally:
        rec["finishedAt"] = iso(datetime.now(UTC))
        rec["duration"] = int((time.monotonic() - started) * 1000)
        store.write_bytes_atomic(rec["restoreId"] + ".json", _dumps(rec))
        ctx.audit(
            "restore", record.id, rec["status"], restoreId=rec["restoreId"], target=rec["target"]
        )
    return rec


def _timed(rec: dict[str, Any], step: str, fn: Callable[[], Any]) -> Any:
    t = time.monotonic()
    out = fn()
    rec["steps"][step] = int((time.monotonic() - t) * 1000)
    return out


def _restore_steps(
    ctx: Context, record: BackupRecord, opts: RestoreOptions, rec: dict[str, Any], fresh: bool
) -> None:
    if record.status != STATUS_COMPLETED or not record.filename:
        raise IntegrityError(f"refusing to restore {record.id}: backup is {record.status}")
    filename = record.filename
    _timed(rec, "verify", lambda: _check_file(ctx, record))  # 1. verification
    decrypting = record.encryption is not None
    if decrypting:
        _check_key(ctx, record)  # a wrong key fails here, before the target is touched
    jobs = 1 if decrypting else (opts.jobs or ctx.settings.restore_jobs)

    def load() -> None:  # 2. preparation and 3. restore (the engine prepares its target)
        with ctx.storage.open_read(filename) as fh:
            raw = HashingReader(fh)
            ctx.engine.restore(
                record.format,
                plaintext(ctx, record, raw),
                opts.target,
                create_target=opts.create_target,
                clean=opts.clean,
                jobs=jobs,
                must_be_new=opts.must_be_new,
            )
            check_digest(raw.hash.hexdigest(), record.checksum, filename)

    _timed(rec, "restore", load)
    rec["validation"] = _timed(
        rec, "validate", lambda: validate_restore(ctx, record, opts.target, strict=fresh)
    )


def validate_restore(
    ctx: Context, record: BackupRecord, target: str | None, strict: bool
) -> dict[str, Any]:
    """4. validation: exact row counts and object counts against the manifest."""
    actual = ctx.engine.inventory(target)
    expected = record.contents
    if expected and not strict:
        # Restoring into a database that held other things: judge only what the backup holds.
        actual = {
            "tables": {
                k: v for k, v in actual.get("tables", {}).items() if k in expected.get("tables", {})
            }
        }
        expected = {"tables": expected.get("tables", {})}
    diffs = compare_contents(expected, actual)
    summary = {
        "tables": len(actual.get("tables", {})),
        "differences": diffs,
        "checked": expected is not None,
    }
    if diffs:
        raise IntegrityError(
            f"restored database differs from backup {record.id}: "
            + "; ".join(diffs[:5])
            + (" ..." if len(diffs) > 5 else "")
        )
    return summary


def _check_key(ctx: Context, record: BackupRecord) -> None:
    """Open the age header with the configured identities (exit 12 if none matches)."""
    from .encryption import decryptor

    assert record.filename
    opener = decryptor(ctx.settings, record.id, ctx.identities)
    with ctx.storage.open_read(record.filename) as fh:
        opener(fh)


def _check_file(ctx: Context, record: BackupRecord) -> None:
    assert record.filename
    try:
        with ctx.storage.open_read(record.filename) as fh:
            digest, _ = sha256_of(fh)
    except FileNotFoundError:
        raise IntegrityError(f"{record.filename}: data file is missing") from None
    check_digest(digest, record.checksum, record.filename)


def get_restore(ctx: Context, restore_id: str) -> dict[str, Any]:
    import json
    import re

    if not isinstance(restore_id, str) or not re.fullmatch(RESTORE_ID_RE, restore_id):
        raise UsageError(f"invalid restore ID {restore_id[:80]!r}")
    try:
        data: dict[str, Any] = json.loads(_restore_store(ctx).read_bytes(restore_id + ".json"))
    except FileNotFoundError:
        raise NotFoundError(f"restore {restore_id} not found") from None
    except ValueError as exc:
        raise StorageError(f"restore record {restore_id} is unreadable: {exc}") from None
    return data


def _dumps(data: dict[str, Any]) -> bytes:
    import json

    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
