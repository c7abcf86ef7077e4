"""What crosses the wire: ID patterns, statuses, limits, the fields a body or a query may
carry, the error shape, and the helpers that type-check them. Pure data and pure functions:
the OpenAPI document is built from the same constants the handlers validate with."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..errors import (
    ConfigError,
    ExitCode,
    LockedError,
    NotFoundError,
    PolicyError,
    SbbackupError,
    TargetExistsError,
    UsageError,
    error_json,
)
from ..model import Status

MAX_BODY = 1 << 20  # 1 MiB
MAX_ID = 200
TEST_ID_RE = re.compile(r"test_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z_[0-9a-f]{6}")
RUN_ID_RE = re.compile(r"run_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z_[0-9a-f]{6}")
BACKUP_STATUSES = tuple(s.value for s in Status)  # stored and derived: see model.Status


class JobStatus(StrEnum):
    """A background job's status (``jobs.Job``); a member is its string, as for ``Status``."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


JOB_STATUSES = tuple(s.value for s in JobStatus)
# Every query parameter some route takes: the log shows these unmasked (see ``auth.scrub``).
QUERY_PARAMS = frozenset({"wait", "status", "scheduleId", "limit", "count"})
# A new database on the source's server: a bare name, no quoting games (PostgreSQL's limit is
# 63 bytes; these are ASCII).
DATABASE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
# A new SQLite file in api.restoreDir: a bare name, never a path, never hidden.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
BACKUP_FIELDS = ("format", "compression", "level", "encryption")
# Deprecated input names (until the next major version) -> the record field they mean.
BACKUP_ALIASES = {"compress": "compression", "encrypt": "encryption"}
SCHEDULE_ALIASES = {"id": "scheduleId"}
TARGET_FIELDS = ("targetDatabase", "target", "targetFile")
RESTORE_FIELDS = (
    *TARGET_FIELDS,
    "createTarget",
    "clean",
    "confirm",
    "jobs",
    "noOwner",
    "noPrivileges",
)
TEST_FIELDS = ("drill", "backupId", "latest", "target")
# JSON types of the schedule fields (their values are checked by ``schedules.FIELDS``).
SCHEDULE_FIELDS: dict[str, type] = {
    "cron": str,
    "timezone": str,
    "enabled": bool,
    "retentionDays": int,
    "minKeep": int,
    "compression": bool,
    "encryption": bool,
    "format": str,
    "description": str,
}
_JSON_NAMES = {"bool": "a boolean", "str": "a string", "int": "an integer"}


class HttpError(Exception):
    """An error decided by the HTTP layer itself (auth, routing, limits, body parsing)."""

    def __init__(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.headers = dict(headers or {})

    @property
    def code(self) -> int:
        """The exit code the CLI would use for the same trouble."""
        if self.status >= 500:
            return int(ExitCode.UNEXPECTED)
        codes = {404: ExitCode.NOT_FOUND, 429: ExitCode.LOCKED}
        return int(codes.get(self.status, ExitCode.USAGE))


# First match wins: PolicyError and TargetExistsError are UsageErrors.
STATUS_FOR: tuple[tuple[type[SbbackupError], int], ...] = (
    (PolicyError, 403),
    (TargetExistsError, 409),
    (UsageError, 400),
    (ConfigError, 400),
    (NotFoundError, 404),
    (LockedError, 409),
)


def status_for(exc: SbbackupError) -> int:
    for cls, status in STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(code: int, kind: str, message: str) -> dict[str, Any]:
    """Same shape as the CLI's ``--json`` errors; ``code`` is the sbbackup exit code."""
    return error_json(code, kind, message)


def exc_body(exc: SbbackupError) -> dict[str, Any]:
    return error_body(int(exc.exit_code), exc.kind, exc.message)


def stamp_id(prefix: str) -> str:
    """A new ID matching ``TEST_ID_RE`` (``test``) or ``RUN_ID_RE`` (``run``)."""
    return f"{prefix}_{datetime.now(UTC):%Y-%m-%dT%H-%M-%S}Z_{secrets.token_hex(3)}"


# --- body fields -------------------------------------------------------------------------


def field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``body[name]`` if it has the JSON type ``kind`` (a bool is no int), None if absent."""
    value = body.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UsageError(f"field {name!r} must be {_JSON_NAMES.get(names, names)}")
    return value


def aliased(body: Mapping[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    """``body`` with each deprecated name replaced by the field it stands for; both given is
    a 400 (which one would win is not for the server to guess)."""
    out = dict(body)
    for old, new in aliases.items():
        if old in out:
            if new in out:
                raise UsageError(f"field {old!r} is a deprecated name of {new!r}: give one")
            out[new] = out.pop(old)
    return out


def only(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise UsageError(
            f"unknown field {unknown[0][:60]!r} (expected {', '.join(allowed) or 'no fields'})"
        )


def validated(pattern: re.Pattern[str], value: str, what: str) -> str:
    if len(value) > MAX_ID or not pattern.fullmatch(value):
        raise UsageError(f"invalid {what} {value[:80]!r}")
    return value


# --- query parameters --------------------------------------------------------------------

Query = Mapping[str, list[str]]


def check_query(query: Query, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise UsageError(
            f"unknown query parameter {unknown[0][:60]!r} (expected {', '.join(allowed) or 'none'})"
        )


def query_one(query: Query, name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise UsageError(f"query parameter {name!r} given more than once")
    return values[0]


def query_int(query: Query, name: str, lo: int, hi: int) -> int | None:
    raw = query_one(query, name)
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,9}", raw) or not lo <= int(raw) <= hi:
        raise UsageError(f"query parameter {name!r} must be an integer from {lo} to {hi}")
    return int(raw)


def query_bool(query: Query, name: str) -> bool:
    raw = query_one(query, name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false", "1", "0"):
        raise UsageError(f"query parameter {name!r} must be true or false")
    return raw.lower() in ("true", "1")
