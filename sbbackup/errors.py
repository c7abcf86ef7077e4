"""Typed errors. Each carries the exit code documented in README, --help and the man page.

Only ``cli.main()`` catches these; everything below raises.
"""

from __future__ import annotations

import re
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    DATABASE = 3
    STORAGE = 4
    NOT_FOUND = 10
    LOCKED = 11
    WRONG_KEY = 12
    INTEGRITY = 13
    UNHEALTHY = 14
    INTERRUPTED = 130


EXIT_CODE_HELP = """Exit codes:
  0    ok
  1    unexpected error (traceback plus "please report")
  2    usage or configuration error
  3    database or dump tool failure
  4    storage error (permission, disk full, I/O)
  10   not found
  11   lock held by another run
  12   wrong key or no identity
  13   integrity failure
  14   unhealthy (health found a problem)
  130  interrupted"""


class SbbackupError(Exception):
    """Root of all known errors: one clear line for the user, no traceback."""

    exit_code: ExitCode = ExitCode.UNEXPECTED
    kind: str = "error"

    def __init__(self, message: str) -> None:
        message = redact_secrets(message)  # whatever it quotes, a credential never goes out
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, object]:
        return error_json(int(self.exit_code), self.kind, self.message)


def error_json(code: int, kind: str, message: str) -> dict[str, object]:
    """The one shape of an error on stderr (``--json``) and in an API answer."""
    return {"error": {"code": code, "kind": kind, "message": redact_secrets(message)}}


class ConfigError(SbbackupError):
    exit_code = ExitCode.USAGE
    kind = "config"


class UsageError(SbbackupError):
    exit_code = ExitCode.USAGE
    kind = "usage"


class PolicyError(UsageError):
    """A request that the configuration does not allow (the API answers 403)."""

    kind = "forbidden"


class TargetExistsError(UsageError):
    """A restore that must create its target found it already there (the API answers 409)."""

    kind = "conflict"


class DatabaseError(SbbackupError):
    exit_code = ExitCode.DATABASE
    kind = "database"


class StorageError(SbbackupError):
    exit_code = ExitCode.STORAGE
    kind = "storage"


class NotFoundError(SbbackupError):
    exit_code = ExitCode.NOT_FOUND
    kind = "not_found"


class LockedError(SbbackupError):
    exit_code = ExitCode.LOCKED
    kind = "locked"


class WrongKeyError(SbbackupError):
    """No configured identity or passphrase opens the file."""

    exit_code = ExitCode.WRONG_KEY
    kind = "wrong_key"


class IntegrityError(SbbackupError):
    """Checksum mismatch, truncation, tampering, or a restore that does not match its manifest."""

    exit_code = ExitCode.INTEGRITY
    kind = "integrity"


class InterruptedError_(SbbackupError):
    exit_code = ExitCode.INTERRUPTED
    kind = "interrupted"


class UnhealthyError(SbbackupError):
    """``health`` found a problem (the report says which)."""

    exit_code = ExitCode.UNHEALTHY
    kind = "unhealthy"


def error_for_code(code: int, message: str) -> SbbackupError:
    """An error of the class that owns exit ``code`` (a report's first failure, re-raised
    after the report was shown): exit codes stay fixed per class, never set on an instance."""
    for cls in _BY_CODE:
        if int(cls.exit_code) == code:
            return cls(message)
    return SbbackupError(message)


_BY_CODE: tuple[type[SbbackupError], ...] = (
    UsageError,
    DatabaseError,
    StorageError,
    NotFoundError,
    LockedError,
    WrongKeyError,
    IntegrityError,
    UnhealthyError,
    InterruptedError_,
)


_SECRET_RE = re.compile(
    r"(?i)(password|passwd|pwd|token|secret)(\s*[=:]\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&,;'\"]+)"
)
# "password": "..." in JSON (the key quoted, then the value quoted).
_JSON_SECRET_RE = re.compile(r'(?i)("(?:password|passwd|token|secret)"\s*:\s*)"(?:[^"\\]|\\.)*"')
# scheme://user:password@host, the password running to the authority's last '@'.
_URL_PASSWORD_RE = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^/?#\s]*@")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s,;]+")


def redact_secrets(text: str) -> str:
    """``text`` with anything that looks like a credential masked: ``password=...`` in any
    case (libpq conninfo, query strings, JSON), the password of ``scheme://user:pass@host``
    and a bearer token. Applied to every message that reaches a log, stderr or an API answer."""
    text = _URL_PASSWORD_RE.sub(r"\1:***@", text)
    text = _JSON_SECRET_RE.sub(r'\1"***"', text)
    text = _BEARER_RE.sub(r"\1***", text)
    return _SECRET_RE.sub(r"\1\2***", text)


def from_interrupt(exc: BaseException) -> bool:
    """Is ``exc`` a KeyboardInterrupt in disguise? Python 3.11 wraps one raised while a class
    is being made (a dataclass field's ``__set_name__``, during a lazy import) in a
    RuntimeError."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
