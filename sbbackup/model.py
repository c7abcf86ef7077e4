"""The records sbbackup keeps and speaks in: a backup's manifest record, a restore record, the
backup statuses and IDs. Pure data: no storage, no I/O; ``catalog`` stores the manifests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .errors import IntegrityError, UsageError

SCHEMA_VERSION = 1
ID_PREFIX = "streambuddy_backup_"
# streambuddy_backup_2026-11-24T14-05-00-123Z, optionally -N for a same-millisecond clash.
BACKUP_ID_RE = re.compile(
    r"^streambuddy_backup_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z(?:-\d{1,3})?$"
)


class Status(StrEnum):
    """A backup's status. A member is its string: it compares equal to it and JSON dumps it."""

    COMPLETED = "completed"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    # Derived at list time, never stored:
    MISSING = "missing"  # completed, but the data file is gone
    CORRUPT = "corrupt"  # the manifest is unreadable, or the data file has the wrong size
    ABANDONED = "abandoned"  # in_progress, but its writer is gone (swept by create and prune)
    ORPHAN = "orphan"  # a data file without a manifest: no backup (prune removes it)


STATUS_COMPLETED = Status.COMPLETED
STATUS_FAILED = Status.FAILED
STATUS_IN_PROGRESS = Status.IN_PROGRESS
STATUS_MISSING = Status.MISSING
STATUS_CORRUPT = Status.CORRUPT


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
    # SHA-256 of the dump stream itself (before zstd and age): ``verify --deep`` and restore
    # check it, so a stored file rewritten together with ``checksum`` is still caught.
    contentChecksum: str | None = None
    toolVersion: str = ""
    pgDumpVersion: str | None = None
    contents: dict[str, Any] | None = None
    # Who wrote it: {"pid": N, "host": "..."}; how `list` tells a running backup from one
    # whose writer died.
    writer: dict[str, Any] | None = None

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
        try:  # (listing builds 10,000 of these: no filtering copy when every key is known)
            known = data if _KNOWN.issuperset(data) else {k: data[k] for k in _KNOWN & data.keys()}
            record = cls(**known)
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
        values = self.__dict__
        for name, types in _FIELD_TYPES.items():
            value = values[name]
            if type(value) in types:  # what JSON parses to: the common case, checked first
                continue
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
    "contentChecksum": _OPT_STR,
    "contents": _OPT_DICT,
    "writer": _OPT_DICT,
}


class NewerSchemaError(IntegrityError):
    """A manifest written by a newer sbbackup: readable by that version, so never removed."""


@dataclass
class RestoreRecord:
    """One restore, as ``restores/RESTORE_ID.json`` keeps it (written when it starts and when
    it ends). Field names are the JSON keys; ``to_json`` keeps this order."""

    restoreId: str
    backupId: str
    target: str
    startedAt: str | None
    finishedAt: str | None = None
    status: str = Status.IN_PROGRESS
    error: str | None = None
    duration: int = 0
    steps: dict[str, int] = field(default_factory=dict)  # the steps that finished, in ms
    validation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RESTORE_FIELDS}

    @classmethod
    def from_json(cls, data: Any) -> RestoreRecord:
        """Raises ValueError for anything that is not a restore record."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(**{k: data[k] for k in _RESTORE_FIELDS})
        except KeyError as exc:
            raise ValueError(f"field {exc} is missing") from None


_RESTORE_FIELDS = tuple(f.name for f in fields(RestoreRecord))
