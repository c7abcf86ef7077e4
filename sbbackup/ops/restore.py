"""Use case: restore a backup (verify, prepare, restore, validate, clean up), and the two steps
the restore drill shares with it: loading a backup into a target and comparing the result."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..engines import BeforeCommit, RestoreRequest, compare_contents, compare_properties
from ..errors import (
    IntegrityError,
    PolicyError,
    TargetExistsError,
    UsageError,
    redact_secrets,
)
from ..model import BackupRecord, RestoreRecord, Status, iso
from ..pipeline import BLOCK, HashingReader, check_digest
from ..state.restores import RESTORE_ID_RE
from .backups import show_backup
from .context import Context
from .options import RestoreOptions
from .verify import check_content, check_file, check_key, plaintext, reading

T = TypeVar("T")

__all__ = ["RESTORE_ID_RE", "get_restore", "new_restore_id", "restore_backup"]


def new_restore_id(now: datetime | None = None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"restore_{now:%Y-%m-%dT%H-%M-%S}Z_{secrets.token_hex(3)}"


def restore_backup(ctx: Context, opts: RestoreOptions) -> RestoreRecord:
    """The seed's five steps: verify, prepare, restore, validate, clean up. Returns the record.

    Before anything is written the target is resolved once (reached, pinned, identified):
    an unreachable target fails here, the source needs ``confirmed``, a ``must_be_new`` target
    that exists is refused, and the target is locked for the whole restore (a second restore
    into it gets LockedError, exit 11, HTTP 409).
    """
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
            f"{target.display} is destructive: pass --yes to confirm"
        )
    if opts.must_be_new and target.exists:
        raise TargetExistsError(f"target {target.display} already exists")
    _check_jobs(record, opts.jobs)
    lock = "restore-" + hashlib.sha256(target.key.encode()).hexdigest()[:16]
    with ctx.state.lock(lock, f"a restore into {target.display}"):
        return _restore_locked(ctx, record, opts, target.display)


def _check_jobs(record: BackupRecord, jobs: int | None) -> None:
    """``--jobs`` above 1 only where it is used: a custom archive that is not encrypted (an
    encrypted one loads from the stream, so no plaintext is written to a temporary file)."""
    if jobs is None or jobs <= 1:
        return
    if record.format != "custom":
        raise UsageError(
            f"--jobs {jobs}: backup {record.id} is {record.format} format, which loads "
            "through one psql session; leave out --jobs"
        )
    if record.encryption is not None:
        raise UsageError(
            f"--jobs {jobs}: backup {record.id} is encrypted, and a parallel pg_restore needs "
            "the plaintext in a file; it restores with one job: leave out --jobs"
        )


def _restore_locked(
    ctx: Context, record: BackupRecord, opts: RestoreOptions, display: str
) -> RestoreRecord:
    now = datetime.now(UTC)
    rec = RestoreRecord(
        restoreId=opts.restore_id or new_restore_id(now),
        backupId=record.id,
        target=display,
        startedAt=iso(now),
    )
    ctx.state.write_restore(rec)
    started = time.monotonic()
    try:
        _restore_steps(ctx, record, opts, rec)
        rec.status = Status.COMPLETED
    except BaseException as exc:
        rec.status = Status.FAILED
        rec.error = (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else redact_secrets(str(exc))
        )
        raise
    finally:
        rec.finishedAt = iso(datetime.now(UTC))
        rec.duration = int((time.monotonic() - started) * 1000)
        ctx.state.write_restore(rec)
        ctx.audit("restore", record.id, rec.status, restoreId=rec.restoreId, target=rec.target)
    return rec


def _restore_steps(
    ctx: Context, record: BackupRecord, opts: RestoreOptions, rec: RestoreRecord
) -> None:
    if record.status != Status.COMPLETED or not record.filename:
        raise IntegrityError(f"refusing to restore {record.id}: backup is {record.status}")
    steps = rec.steps

    def step(name: str, fn: Callable[[], T]) -> T:  # the record lists the steps that finished
        return timed(steps, name, fn, failed_too=False)

    step("verify", lambda: check_file(ctx, record))  # 1. verification
    decrypting = record.encryption is not None
    if decrypting:
        check_key(ctx, record)  # a wrong key fails here, before the target is touched
    jobs = 1 if decrypting else (opts.jobs or ctx.settings.restore_jobs)
    # 2. preparation and 3. restore: the engine loads into a staging copy, 4. validation
    # judges that copy (it holds only the backup: strict, except --into-existing), and only
    # then does the engine make it the target.
    request = RestoreRequest(
        opts.target,
        create_target=opts.create_target,
        clean=opts.clean,
        jobs=jobs,
        must_be_new=opts.must_be_new,
        into_existing=opts.into_existing,
        no_owner=opts.no_owner,
        no_privileges=opts.no_privileges,
        role=opts.role,
        properties=record.database.get("properties"),
        database_properties=opts.database_properties,
    )
    strict, applied = not opts.into_existing, opts.database_properties

    def judge(staged: str | None) -> None:
        rec.validation = step(
            "validate", lambda: validate_restore(ctx, record, staged, strict, applied)
        )

    step("restore", lambda: load_backup(ctx, record, request, judge))
    steps["restore"] = max(0, steps["restore"] - steps.get("validate", 0))


def validate_restore(
    ctx: Context, record: BackupRecord, target: str | None, strict: bool, properties: bool = True
) -> dict[str, Any]:
    """4. validation: exact row counts, object counts and database properties against the
    manifest (settings, comment and ACL only when ``properties`` were re-applied)."""
    found = compare_restored(ctx, record, target, strict, properties)
    if found.differences:
        diffs = found.differences
        raise IntegrityError(
            f"restored database differs from backup {record.id}: "
            + "; ".join(diffs[:5])
            + (" ..." if len(diffs) > 5 else "")
        )
    return found.to_json()


# --- shared with the restore drill -------------------------------------------------------


def timed(timings: dict[str, int], step: str, fn: Callable[[], T], *, failed_too: bool = True) -> T:
    """Run ``fn`` and keep its milliseconds in ``timings[step]``; a step that raised is kept
    too unless ``failed_too`` is off (a restore record lists only the steps that finished)."""
    t = time.monotonic()
    ok = False
    try:
        out = fn()
        ok = True
        return out
    finally:
        if ok or failed_too:
            timings[step] = int((time.monotonic() - t) * 1000)


def load_backup(
    ctx: Context,
    record: BackupRecord,
    request: RestoreRequest,
    before_commit: BeforeCommit | None = None,
) -> None:
    """Decrypt, decompress and load the backup into ``request.target``, hashing as it reads;
    ``before_commit`` judges the loaded copy before it becomes the target (``Engine.restore``).
    Both digests (the stored file's ``checksum`` and the dump stream's ``contentChecksum``)
    are checked when the stream ends, before the engine may commit: a mismatch raises
    IntegrityError (exit 13) from the stream itself, and the engine then kills its loader, so
    the load rolls back instead of committing wrong data."""
    assert record.filename
    with ctx.storage.open_read(record.filename) as fh:
        stream = _verified(ctx, record, HashingReader(fh, reading(ctx, "restore", record)))
        ctx.engine.restore(record.format, stream, request, before_commit)


def _verified(ctx: Context, record: BackupRecord, raw: HashingReader) -> Iterator[bytes]:
    """The dump's bytes; after the last one, the stored file is read to its end and both of
    its digests checked (IntegrityError before the stream ends, if either differs)."""
    assert record.filename
    content = hashlib.sha256()
    yield from plaintext(ctx, record, raw, content)
    while raw.read(BLOCK):  # what the decoders did not need still counts
        pass
    check_digest(raw.hash.hexdigest(), record.checksum, record.filename)
    check_content(record, content.hexdigest())


@dataclass
class Comparison:
    tables: int  # tables counted in the restored database (those the backup holds, if lenient)
    differences: list[str]
    checked: bool  # the backup recorded contents to compare with

    def to_json(self) -> dict[str, Any]:
        return {"tables": self.tables, "differences": self.differences, "checked": self.checked}


def compare_restored(
    ctx: Context, record: BackupRecord, target: str | None, strict: bool, properties: bool = True
) -> Comparison:
    """The restored database's row and object counts against the manifest's. ``strict``
    for a target that held nothing else; otherwise only the backup's tables are judged.
    Its encoding and locale are always compared with the manifest's; its settings, comment
    and ACL too when ``properties`` (they were re-applied)."""
    actual = ctx.engine.inventory(target)
    recorded = record.database.get("properties")
    prop_diffs = compare_properties(recorded, actual.get("properties"), applied=properties)
    expected = record.contents
    if expected and not strict:
        # Restoring into a database that held other things: judge only what the backup holds.
        tables = expected.get("tables", {})
        actual = {"tables": {k: v for k, v in actual.get("tables", {}).items() if k in tables}}
        expected = {"tables": tables}
    diffs = compare_contents(expected, actual) + prop_diffs
    return Comparison(len(actual.get("tables", {})), diffs, expected is not None)


# --- restore records ---------------------------------------------------------------------


def get_restore(ctx: Context, restore_id: str) -> RestoreRecord:
    """The record of restore ``restore_id`` (NotFoundError, exit 5, if there is none)."""
    return ctx.state.read_restore(restore_id)
