"""The manifest catalog: backup records (``model``) stored as JSON beside their data files.

A backup exists only when its JSON manifest exists and says ``completed``: the manifest
is written last, atomically, and is the commit record. Listing reads manifests only,
never data files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

from .errors import IntegrityError, NotFoundError, StorageError
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


class Catalog:
    """Manifests stored beside the data files in one storage backend."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def manifest_name(backup_id: str) -> str:
        return validate_backup_id(backup_id) + MANIFEST_SUFFIX

    def save(self, record: BackupRecord) -> None:
        data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        self.storage.write_bytes_atomic(self.manifest_name(record.id), data)

    def get(self, backup_id: str) -> BackupRecord:
        name = self.manifest_name(backup_id)
        try:
            raw = self.storage.read_bytes(name)
        except FileNotFoundError:
            raise NotFoundError(f"backup {backup_id} not found") from None
        return self._parse(name, raw)

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
        if _depth(data) > MAX_MANIFEST_DEPTH:
            raise IntegrityError(f"{name}: manifest is nested too deeply")
        record = BackupRecord.from_json(data, source=name)
        if record.id + MANIFEST_SUFFIX != name:
            raise IntegrityError(f"{name}: malformed manifest (it describes backup {record.id})")
        return record

    def iter_records(self) -> Iterator[BackupRecord]:
        """All manifests; ``missing``/``corrupt`` status derived from the data file."""
        sizes = self.storage.list_sizes()
        for name in sizes:
            if not name.endswith(MANIFEST_SUFFIX):
                continue
            stem = name[: -len(MANIFEST_SUFFIX)]
            if not BACKUP_ID_RE.fullmatch(stem):
                continue
            try:
                record = self._parse(name, self.storage.read_bytes(name))
            except (IntegrityError, StorageError, OSError) as exc:
                yield corrupt_placeholder(stem, str(exc))
                continue
            yield self.with_file_status(record, sizes)

    def with_file_status(
        self, record: BackupRecord, sizes: dict[str, int] | None = None
    ) -> BackupRecord:
        """Mark a completed record ``missing`` or ``corrupt`` from its data file's presence and
        size (``sizes``: a listing already made, so 10,000 records cost one directory scan)."""
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
