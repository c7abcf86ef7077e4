"""Use case: verify backups (the checksum, or with ``deep`` the whole dump), and the checks
that every reader of a stored backup shares: the file's checksum, the key, the plaintext."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from ..engines import IncompleteDumpError
from ..errors import IntegrityError, SbbackupError, UsageError, WrongKeyError
from ..model import BackupRecord, Status
from ..pipeline import Digest, HashingReader, check_digest, iter_plaintext, sha256_of
from ..results import VerifyReport, VerifyResult
from .backups import show_backup
from .context import Context


def verify_backups(ctx: Context, backup_id: str | None, all_: bool, deep: bool) -> VerifyReport:
    if backup_id is None and not all_:
        raise UsageError("give a backup ID or --all")
    if backup_id is not None and all_:
        raise UsageError("give a backup ID or --all, not both")
    if all_:
        # A failed attempt was never a backup, one still being written is not one yet, and an
        # abandoned one is a failed attempt awaiting its sweep; everything else is judged
        # (an orphan data file fails: it has no manifest to vouch for it).
        skip = (Status.FAILED, Status.IN_PROGRESS, Status.ABANDONED)
        records = [r for r in ctx.catalog.list() if r.status not in skip]
    else:
        records = [show_backup(ctx, backup_id or "")]
    report = VerifyReport()
    for record in records:
        report.results.append(_verify_one(ctx, record, deep))
    return report


def _verify_one(ctx: Context, record: BackupRecord, deep: bool) -> VerifyResult:
    result = VerifyResult(record.id, record.filename, ok=False, deep=deep)
    try:
        if record.status != Status.COMPLETED or not record.filename:
            raise IntegrityError(
                f"{record.filename or record.id}: backup is {record.status}"
                + (f" ({record.error})" if record.error else "")
            )
        progress = reading(ctx, "verify", record)
        if deep:
            _deep_check(ctx, record, progress)
        else:
            check_file(ctx, record, progress)
        result.ok, result.checksum = True, record.checksum
    except FileNotFoundError:
        result.error = f"{record.filename}: data file is missing"
        result.exitCode = int(IntegrityError.exit_code)
    except SbbackupError as exc:
        result.error = exc.message
        result.exitCode = int(exc.exit_code)
    return result


def _deep_check(
    ctx: Context, record: BackupRecord, progress: Callable[[int], None] | None = None
) -> None:
    """Hash, decrypt, decompress and check the dump's structure, all in one pass; then the
    stored file's digest, the dump stream's own digest, and only then the structure verdict.
    No key opening the file (exit 12) is the verdict only for a file whose digest matches."""
    assert record.filename
    content = hashlib.sha256()
    with ctx.storage.open_read(record.filename) as fh:
        raw = HashingReader(fh, progress)
        incomplete: IncompleteDumpError | None = None
        try:
            chunks = plaintext(ctx, record, raw, content)
            ctx.reader_for(record).check_structure(record.format, chunks)
            for _ in chunks:  # what the structure check left unread still counts
                pass
        except IncompleteDumpError as exc:  # the whole file was read: its digest comes first
            incomplete = exc
            for _ in chunks:
                pass
        except WrongKeyError:  # a damaged file is exit 13 whatever else fails on it
            raw.drain()
            check_digest(raw.hash.hexdigest(), record.checksum, record.filename)
            raise
        check_digest(raw.hash.hexdigest(), record.checksum, record.filename)
    check_content(record, content.hexdigest())
    if incomplete is not None:
        raise IntegrityError(f"{record.filename}: {incomplete.message}")


# --- what every reader of a stored backup checks -----------------------------------------


def reading(ctx: Context, what: str, record: BackupRecord) -> Callable[[int], None] | None:
    """A progress bar for reading ``record``'s stored bytes (None off a terminal)."""
    if ctx.meter is None:
        return None
    return ctx.meter(f"{what} {record.id.rsplit('_', 1)[-1]}", record.size)  # the ID's time


def check_file(
    ctx: Context, record: BackupRecord, progress: Callable[[int], None] | None = None
) -> None:
    """The data file is there and its SHA-256 is the manifest's (exit 13 otherwise)."""
    assert record.filename
    try:
        with ctx.storage.open_read(record.filename) as fh:
            if progress is None:
                digest, _ = sha256_of(fh)
            else:
                raw = HashingReader(fh, progress)
                raw.drain()
                digest = raw.hash.hexdigest()
    except FileNotFoundError:
        raise IntegrityError(f"{record.filename}: data file is missing") from None
    check_digest(digest, record.checksum, record.filename)


def check_key(ctx: Context, record: BackupRecord) -> None:
    """Open the age header with the configured identities (exit 12 if none matches)."""
    from ..encryption import decryptor

    assert record.filename
    opener = decryptor(ctx.settings, record.id, ctx.identities, _recipients(record))
    with ctx.storage.open_read(record.filename) as fh:
        opener(fh)


def check_content(record: BackupRecord, actual: str) -> None:
    """The dump stream's SHA-256 is the manifest's ``contentChecksum`` (older manifests have
    none: their stored checksum and the format's own checks are all there is)."""
    if record.contentChecksum is not None:
        check_digest(actual, record.contentChecksum, f"the dump stream of {record.filename}")


def plaintext(
    ctx: Context, record: BackupRecord, raw: HashingReader, content: Digest | None = None
) -> Iterator[bytes]:
    """The dump's bytes, decrypted and decompressed as the manifest says, from ``raw``."""
    decrypt = None
    if record.encryption:
        from ..encryption import decryptor

        decrypt = decryptor(ctx.settings, record.id, ctx.identities, _recipients(record))
    return iter_plaintext(raw, record.compression is not None, decrypt, content)


def _recipients(record: BackupRecord) -> list[str]:
    """The public keys the manifest says the backup was encrypted to."""
    keys = (record.encryption or {}).get("recipients") or []
    return [k for k in keys if isinstance(k, str)]
