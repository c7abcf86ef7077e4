"""The options of the use cases that take many: frozen, and checked when they are made.

This is the one place that validates what a caller may ask for (the command line's click
types and the API's body parsing only check types): a bad value raises ``UsageError`` (exit 2,
HTTP 400) from the constructor, and ``dataclasses.replace`` checks again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

FORMATS = ("plain", "custom")  # what some engine can write; each engine says which it can
LEVELS = (1, 22)  # zstd compression levels
JOBS = (1, 64)  # pg_restore --jobs


def _in_range(name: str, value: int | None, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"field '{name}' must be an integer from {low} to {high}")


@dataclass(frozen=True)
class CreateOptions:
    format: str | None = None  # None: backup.format
    compress: bool | None = None  # None: backup.compression
    level: int | None = None  # None: backup.compressionLevel
    encrypt: bool | None = None  # None: backup.encryption
    schedule_id: str | None = None
    # An ID the caller reserved (the API answers with it before the backup starts).
    backup_id: str | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise UsageError(f"field 'format' must be one of {', '.join(FORMATS)}")
        _in_range("level", self.level, LEVELS)


@dataclass(frozen=True)
class RestoreOptions:
    backup_id: str
    target: str | None = None
    create_target: bool = False
    clean: bool = False
    confirmed: bool = False
    jobs: int | None = None  # None: restore.jobs
    restore_id: str | None = None  # the API names a restore before it starts (new_restore_id)
    # The target must not exist yet: this restore creates it (TargetExistsError otherwise).
    # The API sets it for a bare database name or a file in api.restoreDir.
    must_be_new: bool = False
    # May the target be the source at all? (The API: only with api.allowRestoreOverSource.)
    source_allowed: bool = True
    into_existing: bool = False  # load straight into a non-empty target: not atomic
    no_owner: bool = False  # the restoring role owns everything (pg_restore --no-owner)
    no_privileges: bool = False  # no GRANT/REVOKE (pg_restore --no-privileges)
    role: str | None = None  # SET ROLE before loading (pg_restore --role)
    # Re-apply the database's settings, comment and ACL (its encoding and locale always are).
    database_properties: bool = True

    def __post_init__(self) -> None:
        _in_range("jobs", self.jobs, JOBS)
        if self.into_existing and (self.clean or self.must_be_new):
            raise UsageError(
                "--into-existing loads into the target as it is: it cannot go with --clean "
                "or a new target"
            )
        if self.role is not None and not (
            isinstance(self.role, str)
            and 0 < len(self.role.encode()) <= 63
            and self.role.isprintable()
        ):
            raise UsageError("field 'role' must be a role name of 1 to 63 bytes")
