"""The manifest catalog: backup records (``model``) stored as JSON beside their data files.

A backup exists only when its JSON manifest exists and says ``completed``: the manifest
is written last, atomically, and is the commit record. Listing reads manifests only,
never data files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

from .errors import IntegrityError, NotFoundError, StorageError
from .jsonable import paused_gc
from .model import (
    BACKUP_ID_RE,
    ID_PREFIX,
    SCHEMA_VERSION,
    STATUS_COMPLETED,
    STATUS_CORRUPT,
    STATUS_FAILED,
    STATUS_IN_PROGRESS,
    STATUS_MISSING,
    BackupRecord,
    NewerSchemaError,
    Status,
    iso,
    new_backup_id,
    parse_iso,
    validate_backup_id,
)
from .storage import Storage

__all__ = [  # the records moved to ``model``; these names stay importable from here
    "BACKUP_ID_RE",
    "ID_PREFIX",
    "MANIFEST_SUFFIX",
    "PARTIAL_SUFFIX",
    "SCHEMA_VERSION",
    "STATUS_COMPLETED",
    "STATUS_CORRUPT",
    "STATUS_FAILED",
    "STATUS_IN_PROGRESS",
    "STATUS_MISSING",
    "BackupRecord",
    "Catalog",
    "NewerSchemaError",
    "Status",
    "corrupt_placeholder",
    "iso",
    "new_backup_id",
    "parse_iso",
    "validate_backup_id",
]

MANIFEST_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"  # the storage backends' in-flight suffix
# A manifest is a few KiB; the bounds keep a damaged or planted one from costing memory or
# blowing the stack of every command that lists (it is listed as corrupt instead).
MAX_MANIFEST_BYTES = 1 << 20
MAX_MANIFEST_DEPTH = 32


def writer_lock(backup_id: str) -> str:
    """The name of the state-directory lock a backup's writer holds from the reservation of
    its ID to its last manifest write: whoever gets it knows the writer is gone."""
    return f"backup-{backup_id}"


class Catalog:
    """Manifests stored beside the data files in one storage backend.

    ``writer_alive(ID)`` says whether an ``in_progress`` backup's writer still holds its lock
    (``Context`` asks the state directory); without it nothing is shown as ``abandoned``."""

    def __init__(self, storage: Storage, writer_alive: Callable[[str], bool] | None = None) -> None:
        self.storage = storage
        self.writer_alive = writer_alive

    @staticmethod
    def manifest_name(backup_id: str) -> str:
        return validate_backup_id(backup_id) + MANIFEST_SUFFIX

    def save(self, record: BackupRecord) -> None:
        self.storage.write_bytes_atomic(self.manifest_name(record.id), _dumps(record))

    def reserve(self, record: BackupRecord) -> bool:
        """Write ``record`` (in progress) as the manifest of a new backup ID, only if that ID
        has no manifest yet; False if it has one (someone else took the ID)."""
        try:
            self.storage.create_exclusive(self.manifest_name(record.id), _dumps(record))
        except FileExistsError:
            return False
        return True

    def get(self, backup_id: str) -> BackupRecord:
        name = self.manifest_name(backup_id)
        try:
            raw = self.storage.read_bytes(name)
        except FileNotFoundError:
            raise NotFoundError(f"backup {backup_id} not found") from None
        return self._parse(name, raw)

    def get_or_orphan(self, backup_id: str) -> BackupRecord:
        """``get``; for an ID with no manifest but a data file named after it, that data
        file as an ``orphan`` (so ``show``/``verify ID`` flag it rather than say "not found")."""
        try:
            return self.get(backup_id)
        except NotFoundError:
            for name, size in self.storage.list_sizes().items():
                if data_file_id(name) == backup_id:
                    return orphan_record(backup_id, name, size)
            raise

    def _parse(self, name: str, raw: bytes) -> BackupRecord:
        if len(raw) > MAX_MANIFEST_BYTES:
            raise IntegrityError(f"{name}: manifest is too large ({len(raw)} bytes)")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise IntegrityError(f"{name}: manifest is not valid JSON ({exc})") from None
        except RecursionError:
            raise IntegrityError(f"{name}: manifest is nested too deeply") from None
        if not isinstance(data, dict):
            raise IntegrityError(f"{name}: manifest is not a JSON object")
        # Every level of nesting opens a bracket: with few of them in the text (a manifest
        # has about six), the walk over the parsed values is not needed.
        brackets = raw.count(b"{") + raw.count(b"[")
        if brackets > MAX_MANIFEST_DEPTH and _depth(data) > MAX_MANIFEST_DEPTH:
            raise IntegrityError(f"{name}: manifest is nested too deeply")
        record = BackupRecord.from_json(data, source=name)
        if record.id + MANIFEST_SUFFIX != name:
            raise IntegrityError(f"{name}: malformed manifest (it describes backup {record.id})")
        return record

    def iter_records(self) -> Iterator[BackupRecord]:
        """All manifests; ``missing``/``corrupt`` status derived from the data file. Then
        every data file that no manifest claims, as an ``orphan``. One directory listing;
        only data files are sized (a manifest's size is never needed)."""
        sizes = self.storage.list_sizes()
        claimed: set[str] = set()
        for name in sizes:
            stem = name[: -len(MANIFEST_SUFFIX)]
            if not name.endswith(MANIFEST_SUFFIX) or not BACKUP_ID_RE.fullmatch(stem):
                continue
            claimed.add(stem)
            try:
                record = self._parse(name, self.storage.read_bytes(name))
            except NewerSchemaError as exc:
                placeholder = corrupt_placeholder(stem, str(exc))
                placeholder.schemaVersion = SCHEMA_VERSION + 1  # kept by retention
                yield placeholder
                continue
            except (IntegrityError, StorageError, OSError) as exc:
                yield corrupt_placeholder(stem, str(exc))
                continue
            yield self.with_file_status(record, sizes)
        for name in sizes:
            backup_id = data_file_id(name)
            if backup_id is not None and backup_id not in claimed:
                yield orphan_record(backup_id, name, sizes[name])

    def with_file_status(
        self, record: BackupRecord, sizes: Mapping[str, int] | None = None
    ) -> BackupRecord:
        """Mark a completed record ``missing`` or ``corrupt`` from its data file's presence and
        size (``sizes``: a listing already made, so 10,000 records cost one directory scan),
        and an ``in_progress`` one ``abandoned`` when its writer is gone."""
        alive = self.writer_alive
        if record.status == Status.IN_PROGRESS and alive is not None and not alive(record.id):
            writer = record.writer or {}
            record.status = Status.ABANDONED
            record.error = (
                f"its writer (pid {writer.get('pid', '?')} on {writer.get('host', '?')}) "
                "is gone; the next create or prune cleans it up"
            )
        if record.status == Status.COMPLETED and record.filename:
            if sizes is not None:
                size = sizes.get(record.filename, -1)
            else:
                size = self.storage.size(record.filename)
            if size < 0:
                record.status = Status.MISSING
                record.error = f"data file {record.filename} is missing"
            elif size != record.size:
                record.status = Status.CORRUPT
                record.error = f"data file {record.filename} has the wrong size"
        return record

    def list(
        self, status: str | None = None, schedule: str | None = None, limit: int | None = None
    ) -> list[BackupRecord]:
        """Newest first."""
        with paused_gc():
            records = sorted(self.iter_records(), key=lambda r: (r.createdAt, r.id), reverse=True)
        if status:
            records = [r for r in records if r.status == status]
        if schedule:
            records = [r for r in records if r.scheduleId == schedule]
        return records[:limit] if limit else records

    def delete(self, record: BackupRecord) -> None:
        """Data file first, then the manifest: a crash never leaves an orphan that looks whole."""
        if record.filename and self.storage.exists(record.filename):
            self.storage.delete(record.filename)
        self.storage.delete(self.manifest_name(record.id))

    def delete_any(self, record: BackupRecord) -> None:
        """Remove whatever ``list`` showed as ``record``: a backup, a failed attempt, an
        unreadable manifest with the data files named after its ID, or an orphan data file."""
        if record.status == Status.ORPHAN:
            if record.filename:
                self.storage.delete(record.filename)
        elif record.status == Status.CORRUPT and record.filename is None:
            self.delete_unreadable(record.id, record.error or "unreadable manifest")
        else:
            self.delete(record)

    def delete_unreadable(self, backup_id: str, reason: str) -> BackupRecord:
        """Remove a backup whose manifest cannot be parsed (damaged, truncated, edited): every
        data file named after its ID (never a live ``.partial``), then the manifest."""
        manifest = self.manifest_name(backup_id)
        for name in self.storage.list_names():
            ours = name.startswith(backup_id + ".") and name != manifest
            if ours and not name.endswith(PARTIAL_SUFFIX):
                self.storage.delete(name)
        self.storage.delete(manifest)
        return corrupt_placeholder(backup_id, reason)


def _dumps(record: BackupRecord) -> bytes:
    return json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n"


def data_file_id(name: str) -> str | None:
    """The backup ID a finished data file is named after (``ID.sql.zst``...), or None for a
    manifest, a partial, a hidden temp file or anything not named after a backup."""
    if name.endswith((MANIFEST_SUFFIX, PARTIAL_SUFFIX)) or "." not in name:
        return None
    stem = name.split(".", 1)[0]
    return stem if BACKUP_ID_RE.fullmatch(stem) else None


def partial_id(name: str) -> str | None:
    """The backup ID of a partial data file (``ID.sql.zst.partial``), or None."""
    if not name.endswith(PARTIAL_SUFFIX):
        return None
    stem = name.split(".", 1)[0]
    return stem if BACKUP_ID_RE.fullmatch(stem) else None


def orphan_record(backup_id: str, filename: str, size: int) -> BackupRecord:
    """What ``list`` shows for a data file that no manifest claims: not a backup."""
    return BackupRecord(
        id=backup_id,
        filename=filename,
        size=max(size, 0),
        createdAt=_id_time(backup_id),
        checksum=None,
        status=Status.ORPHAN,
        duration=0,
        error=f"data file {filename} has no manifest: it is no backup (prune removes it)",
    )


def _depth(value: object) -> int:
    """How deeply JSON containers nest in ``value`` (iterative: no recursion to exhaust)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_MANIFEST_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def corrupt_placeholder(backup_id: str, error: str) -> BackupRecord:
    """What ``list`` shows for a manifest that cannot be read."""
    return BackupRecord(
        id=backup_id,
        filename=None,
        size=0,
        createdAt=_id_time(backup_id),
        checksum=None,
        status=Status.CORRUPT,
        duration=0,
        error=error,
    )


def _id_time(stem: str) -> str:
    ts = stem[len(ID_PREFIX) : len(ID_PREFIX) + 23]
    try:
        dt = datetime.strptime(ts, "%Y-%m-%dT%H-%M-%S-%f").replace(tzinfo=UTC)
    except ValueError:
        return "1970-01-01T00:00:00.000Z"
    return iso(dt) or ""
