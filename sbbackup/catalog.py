"""Backup records and the manifest catalog.

A backup exists only when its JSON manifest exists and says ``completed``: the manifest
is written last, atomically, and is the commit record. Listing reads manifests only,
never data files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .errors import IntegrityError, NotFoundError, StorageError, UsageError
from .storage import Storage

SCHEMA_VERSION = 1
ID_PREFIX = "streambuddy_backup_"
# streambuddy_backup_2026-11-24T14-05-00-123Z, optionally -N for a same-millisecond clash.
BACKUP_ID_RE = re.compile(
    r"^streambuddy_backup_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z(?:-\d{1,3})?$"
)
MANIFEST_SUFFIX = ".json"
PARTIAL_SUFFIX = ".partial"  # the storage backends' in-flight suffix

STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
STATUS_IN_PROGRESS = "in_progress"
# Derived at list time, never stored:
STATUS_MISSING = "missing"
STATUS_CORRUPT = "corrupt"


def validate_backup_id(backup_id: str) -> str:
    """Refuse anything that is not a backup ID before it reaches a path."""
    if not isinstance(backup_id, str) or not BACKUP_ID_RE.fullmatch(backup_id):
        raise UsageError(
            f"invalid backup ID {str(backup_id)[:80]!r}: "
            f"expected {ID_PREFIX}YYYY-MM-DDTHH-MM-SS-sssZ"
        )
    return backup_id


def new_backup_id(now: datetime) -> str:
    now = now.astimezone(UTC)
    return f"{ID_PREFIX}{now:%Y-%m-%dT%H-%M-%S}-{now.microsecond // 1000:03d}Z"


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class BackupRecord:
    """One backup attempt. Field names are the camelCase JSON keys users see."""

    id: str
    filename: str | None
    size: int
    createdAt: str
    checksum: str | None
    status: str
    duration: int
    error: str | None = None
    schemaVersion: int = SCHEMA_VERSION
    scheduleId: str | None = None
    completedAt: str | None = None
    database: dict[str, Any] = field(default_factory=dict)
    format: str = "plain"
    compression: dict[str, Any] | None = None
    encryption: dict[str, Any] | None = None
    uncompressedSize: int = 0
    checksumAlgorithm: str = "sha256"
    toolVersion: str = ""
    pgDumpVersion: str | None = None
    contents: dict[str, Any] | None = None

    @property
    def created(self) -> datetime:
        dt = parse_iso(self.createdAt)
        assert dt is not None
        return dt

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: ``asdict`` deep-copies and dominates listing 10,000 backups.
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "manifest") -> BackupRecord:
        version = data.get("schemaVersion", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"{source}: schemaVersion {version} is newer than this sbbackup understands "
                f"({SCHEMA_VERSION}); upgrade sbbackup to read it"
            )
        try:
            record = cls(**{k: v for k, v in data.items() if k in _KNOWN})
        except TypeError as exc:
            raise IntegrityError(f"{source}: malformed manifest ({exc})") from None
        problem = record._malformed()
        if problem:
            raise IntegrityError(f"{source}: malformed manifest ({problem})")
        return record

    def _malformed(self) -> str | None:
        """Why a parsed manifest cannot be trusted, or None. Checked on every read, so an
        edited or damaged manifest is listed as corrupt instead of crashing a command, and
        its ``filename`` can never name another backup's file (``delete`` removes it)."""
        for name, types in _FIELD_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                return f"{name} has the wrong type"
        if not BACKUP_ID_RE.fullmatch(self.id):
            return "invalid id"
        if self.filename is not None and not (
            self.filename.startswith(self.id + ".") and "/" not in self.filename
        ):
            return f"filename {self.filename[:80]!r} does not belong to backup {self.id}"
        return None


_FIELD_NAMES = tuple(f.name for f in fields(BackupRecord))
_KNOWN = frozenset(_FIELD_NAMES)
_OPT_STR = (str, type(None))
_OPT_DICT = (dict, type(None))
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "filename": _OPT_STR,
    "size": (int,),
    "createdAt": (str,),
    "checksum": _OPT_STR,
    "status": (str,),
    "duration": (int,),
    "error": _OPT_STR,
    "scheduleId": _OPT_STR,
    "completedAt": _OPT_STR,
    "database": (dict,),
    "format": (str,),
    "compression": _OPT_DICT,
    "encryption": _OPT_DICT,
    "uncompressedSize": (int,),
    "contents": _OPT_DICT,
}


class NewerSchemaError(IntegrityError):
    """A manifest written by a newer sbbackup: readable by that version, so never removed."""


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
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise IntegrityError(f"{name}: manifest is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise IntegrityError(f"{name}: manifest is not a JSON object")
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
        if record.status == STATUS_COMPLETED and record.filename:
            if sizes is not None:
                size = sizes.get(record.filename, -1)
            else:
                size = self.storage.size(record.filename)
            if size < 0:
                record.status = STATUS_MISSING
                record.error = f"data file {record.filename} is missing"
            elif size != record.size:
                record.status = STATUS_CORRUPT
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


def corrupt_placeholder(backup_id: str, error: str) -> BackupRecord:
    """What ``list`` shows for a manifest that cannot be read."""
    return BackupRecord(
        id=backup_id,
        filename=None,
        size=0,
        createdAt=_id_time(backup_id),
        checksum=None,
        status=STATUS_CORRUPT,
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
