"""The one factory of backup records for tests that feed policy (retention, statistics,
health) without running a backup."""

from __future__ import annotations

from datetime import datetime

from sbbackup.model import BackupRecord, iso, new_backup_id


def record(
    when: datetime,
    schedule: str | None = "daily",
    status: str = "completed",
    *,
    size: int = 100,
    duration: int = 1000,
    raw: int | None = None,
    error: str | None = None,
    tag: str | None = None,
) -> BackupRecord:
    """A record as ``catalog`` would return it: a completed one names a data file, a failed
    one does not. ``tag`` makes the ID unique when two times round to one millisecond."""
    backup_id = new_backup_id(when)
    if tag is not None:
        backup_id = f"{backup_id[:-1]}Z-{tag}"
    return BackupRecord(
        id=backup_id,
        filename=f"{backup_id}.sql.zst" if status == "completed" else None,
        size=size,
        createdAt=iso(when) or "",
        checksum=None,
        status=status,
        duration=duration,
        scheduleId=schedule,
        compression={"algorithm": "zstd"},
        uncompressedSize=raw,
        error=error,
    )
