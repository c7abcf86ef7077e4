"""`sbbackup serve`: a small JSON REST API over the same ``ops`` functions as the CLI.

Built on the standard library's ``ThreadingHTTPServer``. Contracts:

- every request needs ``Authorization: Bearer <token>`` (``/api/health`` and ``/metrics`` may be
  opened with ``public_health``, then without any detail that could name a host, a user or a
  URL); tokens come from the environment or a private file, never from argv, and are compared
  in constant time; a missing or wrong token gets the same 401, before any routing, so nothing
  about what exists leaks, and the connection is closed after it;
- a connection takes one of ``MAX_CONNECTIONS`` slots only once a request on it carried a valid
  token; before that it holds one of ``MAX_UNAUTHENTICATED`` places, and a newcomer evicts the
  oldest, so idle or token-less clients cannot starve authenticated ones;
- a client never sends a URL, a path or a libpq parameter: a restore goes to a new database
  named by a bare name on the source's server, to a target the operator declared
  (``api.restoreTargets``), or (SQLite) to a new file named by a bare name in ``api.restoreDir``;
- a client can make a backup stronger, never weaker than the configuration (encryption,
  compression), unless ``api.allowWeakerBackups``, which then marks the audit lines;
- running jobs are capped per kind (``api.maxBackupJobs``, ...): past the cap, 429;
- IDs in paths are percent-decoded per segment and validated by their owners' validators
  (``validate_backup_id``, ``validate_schedule_id``, ...) before any filesystem access;
- bodies are JSON objects of at most ``MAX_BODY`` bytes with a Content-Length;
- long operations (backup, restore, self test, schedule run) run as background jobs; the
  server's shutdown lets them finish for ``grace`` seconds, then interrupts them, which makes
  ``create_backup`` remove its partial file and record the attempt as interrupted;
- every mutating request appends one audit line (remote address, token label, operation, ID,
  HTTP status) besides the lines the operations write themselves;
- messages that reach a client or the log are passed through ``redact_secrets``, and the log
  escapes control characters, so a request line cannot forge log lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import hmac
import io
import ipaddress
import json
import os
import re
import secrets
import socket
import stat
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import __version__, ops
from .audit import append_audit
from .catalog import STATUS_FAILED, BackupRecord, iso, validate_backup_id
from .config import TARGET_NAME_RE, Settings
from .errors import (
    ConfigError,
    ExitCode,
    LockedError,
    NotFoundError,
    PolicyError,
    SbbackupError,
    TargetExistsError,
    UsageError,
    redact_secrets,
)
from .render import to_jsonable

MAX_BODY = 1 << 20  # 1 MiB
DRAIN_LIMIT = 8 * MAX_BODY  # a refused body up to this size is read and dropped, not reset
SOCKET_TIMEOUT = 30.0  # seconds a client gets to send a whole request (line, headers, body)
DEFAULT_GRACE = 60.0  # seconds running jobs get to finish on shutdown
MAX_ID = 200
JOB_HISTORY = 500  # finished jobs remembered for their status URLs
TOKEN_ENV = "SBBACKUP_API_TOKEN"
TOKEN_FILE_ENV = "SBBACKUP_API_TOKEN_FILE"
TEST_ID_RE = re.compile(r"test_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z_[0-9a-f]{6}")
RUN_ID_RE = re.compile(r"run_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z_[0-9a-f]{6}")
BACKUP_STATUSES = ("completed", "failed", "in_progress", "missing", "corrupt")
QUERY_PARAMS = frozenset({"wait", "status", "scheduleId", "limit", "count"})
RETRY_AFTER = 5  # seconds a client is told to wait when the job cap is reached
# A new database on the source's server: a bare name, no quoting games (PostgreSQL's limit is
# 63 bytes; these are ASCII).
DATABASE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
# A new SQLite file in api.restoreDir: a bare name, never a path, never hidden.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
TARGET_FIELDS = ("targetDatabase", "target", "targetFile")
RESTORE_FIELDS = (*TARGET_FIELDS, "createTarget", "clean", "confirm", "jobs")
TEST_FIELDS = ("drill", "backupId", "latest", "target")
NO_TARGET_URL = (
    "'targetUrl' is not accepted: an API client never sends a URL. Send 'targetDatabase' (a new "
    "database on the source's server), 'target' (a restore target declared in the "
    "configuration's api.restoreTargets) or, for SQLite, 'targetFile' (a new file in "
    "api.restoreDir)"
)
UNDECLARED = (
    "'target' must name a restore target declared in the configuration (api.restoreTargets)"
)
# What a job kind counts against: (the kinds that share its cap, the setting, its config key).
JOB_CAPS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "backup": (("backup", "run"), "api_max_backup_jobs", "api.maxBackupJobs"),
    "run": (("backup", "run"), "api_max_backup_jobs", "api.maxBackupJobs"),
    "restore": (("restore",), "api_max_restore_jobs", "api.maxRestoreJobs"),
    "test": (("test",), "api_max_test_jobs", "api.maxTestJobs"),
}
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


# --- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    label: str  # written to the audit log; the secret never is
    secret: bytes = field(repr=False)


def generate_token() -> str:
    return "sbb_" + secrets.token_urlsafe(32)


def load_tokens(env: Mapping[str, str]) -> list[Token]:
    """Tokens from ``SBBACKUP_API_TOKEN_FILE`` (lines ``TOKEN`` or ``LABEL TOKEN``, ``#``
    comments) and ``SBBACKUP_API_TOKEN`` (label ``env``). Several lines allow rotation."""
    tokens: list[Token] = []
    path = env.get(TOKEN_FILE_ENV, "")
    if path:
        text = _read_token_file(Path(path).expanduser())
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) > 2:
                raise ConfigError(f"{path}:{n}: expected TOKEN or LABEL TOKEN")
            label, secret = (parts[0], parts[1]) if len(parts) == 2 else (f"file:{n}", parts[0])
            tokens.append(Token(label, _token_bytes(secret, f"{path}:{n}")))
    if env.get(TOKEN_ENV, ""):
        tokens.append(Token("env", _token_bytes(env[TOKEN_ENV].strip(), TOKEN_ENV)))
    return tokens


def _read_token_file(path: Path) -> str:
    """The token file's text, refused when group or others may read or write it (as identity
    files are): a token there is anyone's token."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"{TOKEN_FILE_ENV}: cannot read {path} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{TOKEN_FILE_ENV}: {path} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{TOKEN_FILE_ENV}: {path} is readable or writable by group or others "
                f"(mode {st.st_mode & 0o777:o}): chmod 600 it"
            )
        raw = fh.read(1 << 20)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{TOKEN_FILE_ENV}: {path} is not UTF-8 text") from None


def _token_bytes(secret: str, where: str) -> bytes:
    if len(secret) < 16:
        raise ConfigError(
            f"{where}: the API token is too short (use `sbbackup serve --generate-token`)"
        )
    return secret.encode()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- errors ------------------------------------------------------------------------------


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
    return {"error": {"code": code, "kind": kind, "message": redact_secrets(message)}}


def exc_body(exc: SbbackupError) -> dict[str, Any]:
    return error_body(int(exc.exit_code), exc.kind, exc.message)


_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters (CR, LF, ESC, ...) as ``\\xNN`` escapes, so
    nothing a client sends can end a log line early or drive a terminal."""

    def esc(m: re.Match[str]) -> str:
        n = ord(m.group())
        return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"

    return _CONTROL_RE.sub(esc, text)


# --- requests, responses, routes ---------------------------------------------------------


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    body: dict[str, Any]
    ctx: ApiContext
    wait: bool = False


@dataclass
class ApiContext(ops.Context):
    """An ops context whose audit lines also name the API token that asked, and carry
    ``audit_extra`` (``encryption: off`` for a backup the API was allowed to weaken)."""

    token_label: str | None = None
    audit_extra: dict[str, Any] = field(default_factory=dict)

    def audit(self, operation: str, target_id: str | None, result: str, **extra: Any) -> None:
        extra = {**self.audit_extra, **extra}
        if self.token_label:
            extra["token"] = self.token_label
        super().audit(operation, target_id, result, **extra)


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/api/backup/{backupId}"
    handler: str  # name of an Api method
    operation: str  # operationId in the OpenAPI document and the audit log

    @property
    def parts(self) -> list[str]:
        return self.template.strip("/").split("/")

    @property
    def literals(self) -> int:
        return sum(1 for p in self.parts if not p.startswith("{"))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        parts = self.parts
        if len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, seg in zip(parts, segments, strict=True):
            if part.startswith("{"):
                if not seg:
                    return None
                params[part[1:-1]] = seg
            elif part != seg:
                return None
        return params


ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/backup", "create_backup", "createBackup"),
    Route("GET", "/api/backup", "list_backups", "listBackups"),
    Route("POST", "/api/backup/test", "start_test", "runSelfTest"),
    Route("GET", "/api/backup/test/{testId}", "get_test", "getSelfTest"),
    Route("GET", "/api/backup/restore/{restoreId}", "get_restore", "getRestore"),
    Route("GET", "/api/backup/schedules", "list_schedules", "listSchedules"),
    Route("POST", "/api/backup/schedules", "add_schedule", "createSchedule"),
    Route("GET", "/api/backup/schedules/next", "next_schedules", "nextScheduleRuns"),
    Route("GET", "/api/backup/schedules/statistics", "statistics", "getStatistics"),
    Route("GET", "/api/backup/schedules/{scheduleId}", "get_schedule", "getSchedule"),
    Route("POST", "/api/backup/schedules/{scheduleId}", "update_schedule", "updateSchedule"),
    Route("DELETE", "/api/backup/schedules/{scheduleId}", "remove_schedule", "deleteSchedule"),
    Route("POST", "/api/backup/schedules/{scheduleId}/enable", "enable_schedule", "enableSchedule"),
    Route(
        "POST", "/api/backup/schedules/{scheduleId}/disable", "disable_schedule", "disableSchedule"
    ),
    Route("POST", "/api/backup/schedules/{scheduleId}/run", "run_schedule", "runSchedule"),
    Route("GET", "/api/backup/schedules/{scheduleId}/run/{runId}", "get_run", "getScheduleRun"),
    Route("GET", "/api/backup/{backupId}", "show_backup", "getBackup"),
    Route("DELETE", "/api/backup/{backupId}", "delete_backup", "deleteBackup"),
    Route("POST", "/api/backup/{backupId}/restore", "restore_backup", "restoreBackup"),
    Route("GET", "/api/health", "health", "getHealth"),
    Route("GET", "/metrics", "metrics", "getMetrics"),
    Route("GET", "/api/openapi.json", "openapi", "getOpenApi"),
)
PUBLIC_HEALTH_PATHS = ("/api/health", "/metrics")


def resolve(method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
    """The matching route with the most literal segments wins: ``schedules/next`` beats
    ``schedules/{scheduleId}``. A path that exists without this method is a 405."""
    matches = [(r, p) for r in ROUTES if (p := r.match(segments)) is not None]
    if not matches:
        raise HttpError(404, "not_found", "no such endpoint")
    best = max(r.literals for r, _ in matches)
    matches = [(r, p) for r, p in matches if r.literals == best]
    for route, params in matches:
        if route.method == method:
            return route, params
    allowed = ", ".join(sorted({r.method for r, _ in matches}))
    raise HttpError(405, "method_not_allowed", f"{method} is not allowed here", {"Allow": allowed})


# --- background jobs ---------------------------------------------------------------------


@dataclass
class Job:
    kind: str
    id: str
    startedAt: str
    thread: threading.Thread | None = None
    status: str = "in_progress"  # in_progress | completed | failed | interrupted
    result: Any = None
    error: SbbackupError | None = None
    finishedAt: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    extra: dict[str, Any] = field(default_factory=dict)
    cancel: Callable[[], None] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        result = self.result.to_json() if hasattr(self.result, "to_json") else self.result
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "startedAt": self.startedAt,
            "finishedAt": self.finishedAt,
            "result": result,
            "error": exc_body(self.error)["error"] if self.error else None,
            **self.extra,
        }


class Jobs:
    """Background threads for long operations, remembered for their status URLs."""

    def __init__(
        self,
        caps: Mapping[str, int] | None = None,
        on_crash: Callable[[], None] = traceback.print_exc,
    ) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._last_backup_time: datetime | None = None
        self.accepting = True
        self.caps = dict(caps or {})  # setting name (api_max_backup_jobs, ...) -> limit
        self.on_crash = on_crash  # logs an unexpected exception (called inside ``except``)

    def check_cap(self, kind: str) -> None:
        """429 when ``kind``'s cap is reached. ``start`` checks again under its lock."""
        with self._lock:
            self._check_cap(kind)

    def _check_cap(self, kind: str) -> None:
        if kind not in JOB_CAPS:
            return
        kinds, setting, key = JOB_CAPS[kind]
        limit = self.caps.get(setting)
        if limit is None:
            return
        running = sum(1 for j in self._jobs.values() if j.kind in kinds and not j.done.is_set())
        if running >= limit:
            raise HttpError(
                429,
                "too_many_jobs",
                f"{running} {'/'.join(kinds)} job(s) already running, the most the configuration "
                f"allows ({key}: {limit}): retry later",
                {"Retry-After": str(RETRY_AFTER)},
            )

    def start(
        self,
        kind: str,
        job_id: str,
        fn: Callable[[], Any],
        cancel: Callable[[], None] | None = None,
        **extra: Any,
    ) -> Job:
        """Run ``fn`` in a thread; ``cancel`` stops its child processes at shutdown. Refused
        (429) past the kind's cap, counted under the same lock that registers the job."""
        job = Job(kind, job_id, iso(datetime.now(UTC)) or "", extra=extra, cancel=cancel)
        job.thread = threading.Thread(
            target=self._run, args=(job, fn), name=f"sbbackup-{kind}-{job_id}", daemon=True
        )
        with self._lock:
            if not self.accepting:
                raise HttpError(503, "shutting_down", "the server is shutting down")
            self._check_cap(kind)
            self._jobs[job_id] = job
            self._forget_old()
        job.thread.start()
        return job

    def _run(self, job: Job, fn: Callable[[], Any]) -> None:
        try:
            job.result = fn()
            job.status = "completed"
        except SbbackupError as exc:
            job.error, job.status = exc, "failed"
        except KeyboardInterrupt:
            job.error, job.status = SbbackupError("interrupted by server shutdown"), "interrupted"
            job.error.exit_code, job.error.kind = ExitCode.INTERRUPTED, "interrupted"
        except Exception as exc:  # noqa: BLE001 - a job thread is an error boundary too
            self.on_crash()
            job.error, job.status = SbbackupError(f"unexpected error: {exc}"), "failed"
        finally:
            job.finishedAt = iso(datetime.now(UTC))
            job.done.set()

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.done.is_set()]
        for key in finished[: max(0, len(self._jobs) - JOB_HISTORY)]:
            del self._jobs[key]

    def get(self, job_id: str, kind: str | None = None) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and (kind is None or job.kind == kind) else None

    def running(self, kind: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in jobs if not j.done.is_set() and kind in (None, j.kind)]

    def backup_time(self) -> datetime:
        """A distinct millisecond per API backup, so the IDs it reserves never collide."""
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        with self._lock:
            if self._last_backup_time is not None and now <= self._last_backup_time:
                now = self._last_backup_time + timedelta(milliseconds=1)
            self._last_backup_time = now
        return now

    def drain(self, grace: float) -> list[Job]:
        """Stop accepting jobs, let running ones finish for ``grace`` seconds, then interrupt
        them (KeyboardInterrupt, which every operation turns into cleanup and a record)."""
        with self._lock:
            self.accepting = False
        deadline = time.monotonic() + grace
        for job in self.running():
            job.done.wait(max(0.0, deadline - time.monotonic()))
        late = self.running()
        for job in late:
            if job.thread is not None and job.thread.ident is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(job.thread.ident), ctypes.py_object(KeyboardInterrupt)
                )
            # The exception lands at the thread's next bytecode; one blocked reading pg_dump
            # (waiting on a lock, say) gets there once its children are gone.
            if job.cancel is not None:
                with contextlib.suppress(Exception):
                    job.cancel()
        for job in late:
            job.done.wait(30)
        return late


def _stamp_id(prefix: str) -> str:
    return f"{prefix}_{datetime.now(UTC):%Y-%m-%dT%H-%M-%S}Z_{secrets.token_hex(3)}"


# --- body and query parsing --------------------------------------------------------------


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UsageError(f"field {name!r} must be {_JSON_NAMES.get(names, names)}")
    return value


_JSON_NAMES = {"bool": "a boolean", "str": "a string", "int": "an integer"}


def _only(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise UsageError(
            f"unknown field {unknown[0][:60]!r} (expected {', '.join(allowed) or 'no fields'})"
        )


def _query_one(req: Request, name: str) -> str | None:
    values = req.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise UsageError(f"query parameter {name!r} given more than once")
    return values[0]


def _query_int(req: Request, name: str, lo: int, hi: int) -> int | None:
    raw = _query_one(req, name)
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,9}", raw) or not lo <= int(raw) <= hi:
        raise UsageError(f"query parameter {name!r} must be an integer from {lo} to {hi}")
    return int(raw)


def _query_bool(req: Request, name: str) -> bool:
    raw = _query_one(req, name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false", "1", "0"):
        raise UsageError(f"query parameter {name!r} must be true or false")
    return raw.lower() in ("true", "1")


def _check_query(req: Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(req.query) - set(allowed))
    if unknown:
        raise UsageError(
            f"unknown query parameter {unknown[0][:60]!r} (expected {', '.join(allowed) or 'none'})"
        )


def _validated(pattern: re.Pattern[str], value: str, what: str) -> str:
    if len(value) > MAX_ID or not pattern.fullmatch(value):
        raise UsageError(f"invalid {what} {value[:80]!r}")
    return value


# --- the API -----------------------------------------------------------------------------


class Api:
    """Routes, auth and job bookkeeping. Each handler calls one ops/scheduling function."""

    def __init__(
        self,
        settings: Settings,
        tokens: list[Token],
        public_health: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.public_health = public_health
        self._sink = log or (lambda line: print(line, file=sys.stderr, flush=True))
        caps = {name: getattr(settings, name) for _, name, _ in JOB_CAPS.values()}
        self.jobs = Jobs(caps, on_crash=self.log_traceback)
        self._run_guard = threading.Lock()
        self.state_dir = ops.Context(settings).state_dir
        self.restore_dir = check_restore_dir(settings)

    # --- plumbing ----------------------------------------------------------------------

    def log(self, line: str) -> None:
        """One line to the server log: secrets masked, control characters escaped."""
        self._sink(escape_controls(redact_secrets(line)))

    def log_traceback(self) -> None:
        """The exception being handled, one escaped log line per traceback line."""
        for line in traceback.format_exc().rstrip("\n").splitlines():
            self.log(line)

    def authenticate(self, header: str | None) -> str | None:
        """The label of the matching token, or None. Every token is compared, in constant
        time, whatever matched earlier."""
        if not header:
            return None
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        candidate = given.strip().encode("utf-8", "surrogateescape")
        label = None
        for token in self.tokens:
            if hmac.compare_digest(candidate, token.secret) and label is None:
                label = token.label
        return label

    def context(self, remote: str, token_label: str | None) -> ApiContext:
        return ApiContext(self.settings, remote=remote, token_label=token_label)

    def call(self, route: Route, req: Request) -> Response:
        handler: Callable[[Request], Response] = getattr(self, route.handler)
        return handler(req)

    # --- backups -----------------------------------------------------------------------

    def guard_strength(
        self, ctx: ApiContext, requested: Mapping[str, bool | None], current: Mapping[str, bool]
    ) -> None:
        """A client may turn encryption or compression on, never off where the configuration
        (or the schedule) has it on: 403, unless ``api.allowWeakerBackups``, and then every
        audit line of the request says ``"encryption": "off"`` (or compression)."""
        weakened = [k for k in ("encryption", "compression") if requested.get(k) is False]
        weakened = [k for k in weakened if current[k]]
        if not weakened:
            return
        if not self.settings.api_allow_weaker_backups:
            raise PolicyError(
                f"the configuration has {' and '.join(weakened)} on: an API client cannot turn "
                "it off (the operator may allow it with api.allowWeakerBackups)"
            )
        for k in weakened:
            ctx.audit_extra[k] = "off"

    def create_backup(self, req: Request) -> Response:
        _check_query(req, ("wait",))
        body = req.body
        _only(body, ("format", "compress", "level", "encrypt"))
        opts = ops.CreateOptions(
            format=_field(body, "format", str),
            compress=_field(body, "compress", bool),
            level=_field(body, "level", int),
            encrypt=_field(body, "encrypt", bool),
        )
        ctx = req.ctx
        s = self.settings
        self.guard_strength(
            ctx,
            {"encryption": opts.encrypt, "compression": opts.compress},
            {"encryption": s.encryption, "compression": s.compression},
        )
        self.jobs.check_cap("backup")
        if opts.format is not None and opts.format not in ctx.engine.formats:
            raise UsageError(f"the {ctx.engine.name} engine cannot write the {opts.format} format")
        if opts.level is not None and not 1 <= opts.level <= 22:
            raise UsageError("field 'level' must be an integer from 1 to 22")
        now = self.jobs.backup_time()
        backup_id = ops.unique_backup_id(ctx.catalog, now)
        opts = replace(opts, backup_id=backup_id)  # the ID this answer promises
        placeholder = BackupRecord(
            id=backup_id,
            filename=None,
            size=0,
            createdAt=iso(now) or "",
            checksum=None,
            status="in_progress",
            duration=0,
            toolVersion=__version__,
        )
        job = self.jobs.start(
            "backup",
            backup_id,
            lambda: ops.create_backup(ctx, opts, now=now),
            cancel=ctx.cancel,
            record=placeholder,
        )
        location = {"Location": f"/api/backup/{backup_id}"}
        if not req.wait:
            return Response(202, placeholder.to_json(), location)
        job.done.wait()
        if job.error is not None:
            raise job.error
        record: BackupRecord = job.result
        return Response(201, record.to_json(), {"Location": f"/api/backup/{record.id}"})

    def list_backups(self, req: Request) -> Response:
        _check_query(req, ("status", "scheduleId", "limit"))
        status = _query_one(req, "status")
        if status is not None and status not in BACKUP_STATUSES:
            raise UsageError(
                f"query parameter 'status' must be one of {', '.join(BACKUP_STATUSES)}"
            )
        schedule = _query_one(req, "scheduleId")
        if schedule is not None and (
            len(schedule) > 64 or not re.fullmatch(r"[a-z0-9_-]+", schedule)
        ):
            raise UsageError(f"invalid schedule ID {schedule[:80]!r}")
        limit = _query_int(req, "limit", 1, 100_000)
        records = [r.to_json() for r in ops.list_backups(req.ctx, status, schedule, None)]
        if status in (None, "in_progress") and schedule is None:
            known = {r["id"] for r in records}
            running = [
                j.extra["record"].to_json()
                for j in self.jobs.running("backup")
                if j.id not in known
            ]
            records = sorted(running + records, key=lambda r: r["createdAt"], reverse=True)
        return Response(200, records[:limit] if limit else records)

    def show_backup(self, req: Request) -> Response:
        _check_query(req, ())
        backup_id = validate_backup_id(req.params["backupId"])
        job = self.jobs.get(backup_id, "backup")
        if job is not None and not job.done.is_set():
            return Response(200, job.extra["record"].to_json())
        try:
            return Response(200, ops.show_backup(req.ctx, backup_id).to_json())
        except NotFoundError:
            if job is None or job.status == "completed":  # never started, or since deleted
                raise
        # A job whose backup never got a manifest (it failed before dumping).
        record: BackupRecord = job.extra["record"]
        failed = {**record.to_json(), "status": STATUS_FAILED, "completedAt": job.finishedAt}
        failed["error"] = redact_secrets(job.error.message) if job.error else None
        return Response(200, failed)

    def delete_backup(self, req: Request) -> Response:
        _check_query(req, ())
        backup_id = validate_backup_id(req.params["backupId"])
        job = self.jobs.get(backup_id, "backup")
        if job is not None and not job.done.is_set():
            raise LockedError(f"backup {backup_id} is still running")
        return Response(200, ops.delete_backup(req.ctx, backup_id).to_json())

    def restore_backup(self, req: Request) -> Response:
        """Everything refused here is refused before the job starts: nothing is connected to,
        created or dropped. The engine's own refusals (an existing target: 409, a target
        another restore holds: 409, policy: 403) come back through ``_await_record``."""
        _check_query(req, ())
        backup_id = validate_backup_id(req.params["backupId"])
        body = req.body
        if "targetUrl" in body:
            raise UsageError(NO_TARGET_URL)
        _only(body, RESTORE_FIELDS)
        jobs = _field(body, "jobs", int)
        if jobs is not None and not 1 <= jobs <= 64:
            raise UsageError("field 'jobs' must be an integer from 1 to 64")
        ctx = req.ctx
        self.jobs.check_cap("restore")
        restore_id = ops.new_restore_id()
        opts = ops.RestoreOptions(
            backup_id=backup_id, jobs=jobs, restore_id=restore_id, **self.restore_target(ctx, body)
        )
        ops.show_backup(ctx, backup_id)  # 404 now rather than in the job
        job = self.jobs.start(
            "restore", restore_id, lambda: ops.restore_backup(ctx, opts), cancel=ctx.cancel
        )
        record = self._await_record(job, lambda: ops.get_restore(ctx, restore_id))
        return Response(202, record, {"Location": f"/api/backup/restore/{restore_id}"})

    def restore_target(self, ctx: ApiContext, body: Mapping[str, Any]) -> dict[str, Any]:
        """The ``RestoreOptions`` fields for the one target form the body names."""
        given = [k for k in TARGET_FIELDS if body.get(k) is not None]
        if len(given) != 1:
            raise UsageError(
                "name exactly one target: 'targetDatabase' (a new database on the source's "
                "server), 'target' (declared in api.restoreTargets) or 'targetFile' (SQLite: a "
                "new file in api.restoreDir)"
            )
        kind = given[0]
        value = _field(body, kind, str)
        create = _field(body, "createTarget", bool)
        clean = bool(_field(body, "clean", bool))
        confirm = bool(_field(body, "confirm", bool))
        if kind == "target":
            url = self.declared_target(ctx, value)
            ctx.audit_extra["restoreTarget"] = f"declared:{value}"
            return {
                "target": url,
                "create_target": bool(create),
                "clean": clean,
                "confirmed": confirm,
                # A declared target that turns out to be the source (however it is spelled)
                # is refused unless the configuration allows restoring over the source.
                "source_allowed": self.settings.api_allow_restore_over_source,
            }
        if create is False:
            raise UsageError(f"a {kind} is always created by the restore: leave out createTarget")
        if kind == "targetDatabase":
            return self.new_database(ctx, value, clean, confirm)
        return self.new_file(ctx, value, clean)

    def declared_target(self, ctx: ApiContext, name: str) -> str:
        """The operator's string for a declared target; the same 403 for a malformed name
        and an unknown one."""
        targets = self.settings.api_restore_targets
        if not TARGET_NAME_RE.fullmatch(name) or name not in targets:
            raise PolicyError(UNDECLARED)
        url = targets[name]
        if (ctx.engine.name == "sqlite") != url.startswith("sqlite:"):
            raise UsageError(f"restore target {name} is not a {ctx.engine.name} database")
        return url

    def new_database(
        self, ctx: ApiContext, name: str, clean: bool, confirm: bool
    ) -> dict[str, Any]:
        """A bare name: a database this restore creates on the source's server. The source's
        own name only with api.allowRestoreOverSource and ``"confirm": true``."""
        from .selftest import SCRATCH_PREFIX

        if ctx.engine.name != "postgresql":
            raise UsageError(
                "'targetDatabase' is for PostgreSQL: restore a SQLite backup to a 'targetFile' "
                "(in api.restoreDir) or a declared 'target'"
            )
        if len(name.encode()) > 63 or not DATABASE_NAME_RE.fullmatch(name):
            raise UsageError(
                "invalid targetDatabase: 1 to 63 letters, digits, '_', '$' or '-', starting "
                "with a letter or '_'"
            )
        ctx.audit_extra["restoreTarget"] = f"database:{name}"
        if name == ctx.engine.describe()["name"]:
            return self.over_source(name, clean, confirm)
        if name.startswith(SCRATCH_PREFIX):
            raise UsageError(f"'{SCRATCH_PREFIX}...' names belong to restore drills")
        if name in RESERVED_DATABASES:
            raise PolicyError(f"{name} is a system database: never a restore target")
        if clean:
            raise PolicyError(
                "'clean' drops a database: through the API only a declared target may be "
                "cleaned (a targetDatabase is always a new database)"
            )
        return {
            "target": name,
            "create_target": True,
            "clean": False,
            "must_be_new": True,
            "source_allowed": False,
        }

    def over_source(self, name: str, clean: bool, confirm: bool) -> dict[str, Any]:
        """The source database by its own name: the one existing database the operator named
        (database.url), so ``clean`` may drop it, once the configuration and the request agree."""
        if not self.settings.api_allow_restore_over_source:
            raise PolicyError(
                "targetDatabase is the source database: the configuration does not allow "
                "restoring over it through the API (api.allowRestoreOverSource)"
            )
        if not confirm:
            raise UsageError(
                'restoring over the source database is destructive: send "confirm": true'
            )
        return {"target": name, "create_target": False, "clean": clean, "confirmed": True}

    def new_file(self, ctx: ApiContext, name: str, clean: bool) -> dict[str, Any]:
        """A bare file name: a new SQLite file directly inside api.restoreDir. No answer tells
        anything about a path outside it."""
        if ctx.engine.name != "sqlite":
            raise UsageError(
                "'targetFile' is for SQLite: restore a PostgreSQL backup to a 'targetDatabase' "
                "or a declared 'target'"
            )
        if self.restore_dir is None:
            raise PolicyError("restores to a file are off: the configuration has no api.restoreDir")
        if clean:
            raise PolicyError("'clean' replaces a file: a targetFile is always a new file")
        if ".." in name or "\0" in name or not FILE_NAME_RE.fullmatch(name):
            raise UsageError(
                "invalid targetFile: a bare file name of at most 200 letters, digits, '.', '_' "
                "or '-', not starting with '.', without '..'"
            )
        root = os.path.realpath(self.restore_dir)
        path = os.path.join(root, name)
        if os.path.lexists(path):  # a symlink counts, wherever it points
            raise TargetExistsError(f"{name} already exists in api.restoreDir: choose a new name")
        if os.path.dirname(os.path.realpath(path)) != root:
            raise PolicyError(f"{name} is not inside api.restoreDir")
        ctx.audit_extra["restoreTarget"] = f"file:{name}"
        return {"target": path, "create_target": True, "clean": False, "must_be_new": True}

    @staticmethod
    def _await_record(job: Job, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Wait until the operation has written its record, or has failed before it could."""
        while True:
            finished = job.done.wait(0.02)
            try:
                return _redacted_record(read())
            except NotFoundError:
                if finished:
                    raise job.error or SbbackupError("the operation left no record") from None

    def get_restore(self, req: Request) -> Response:
        _check_query(req, ())
        restore_id = req.params["restoreId"]
        if len(restore_id) > MAX_ID:
            raise UsageError("invalid restore ID")
        return Response(200, _redacted_record(ops.get_restore(req.ctx, restore_id)))

    # --- self test ---------------------------------------------------------------------

    def start_test(self, req: Request) -> Response:
        from .selftest import TestOptions, run_self_test

        _check_query(req, ("wait",))
        body = req.body
        if "targetUrl" in body:
            raise UsageError(
                "'targetUrl' is not accepted: an API client never sends a URL. Send 'target', a "
                "restore target declared in api.restoreTargets (the drill's scratch database "
                "goes on its server), or nothing (the source's server)"
            )
        _only(body, TEST_FIELDS)
        backup_id = _field(body, "backupId", str)
        if backup_id is not None:
            validate_backup_id(backup_id)
        drill = _field(body, "drill", bool)
        ctx = req.ctx
        name = _field(body, "target", str)
        opts = TestOptions(
            drill=True if drill is None else drill,
            backup_id=backup_id,
            latest=bool(_field(body, "latest", bool)),
            target_url=None if name is None else self.declared_target(ctx, name),
        )
        self.jobs.check_cap("test")
        test_id = _stamp_id("test")
        location = f"/api/backup/test/{test_id}"
        job = self.jobs.start(
            "test", test_id, lambda: run_self_test(ctx, opts), ctx.cancel, statusUrl=location
        )
        if req.wait:
            job.done.wait()
            if job.error is not None:
                raise job.error
            return Response(200, job.to_json(), {"Location": location})
        return Response(202, job.to_json(), {"Location": location})

    def get_test(self, req: Request) -> Response:
        _check_query(req, ())
        test_id = _validated(TEST_ID_RE, req.params["testId"], "test ID")
        job = self.jobs.get(test_id, "test")
        if job is None:
            raise NotFoundError(f"self test {test_id} not found (tests are kept in memory)")
        return Response(200, job.to_json())

    # --- schedules ---------------------------------------------------------------------

    def list_schedules(self, req: Request) -> Response:
        from .scheduling import list_schedules

        _check_query(req, ())
        return Response(200, to_jsonable(list_schedules(req.ctx)))

    def get_schedule(self, req: Request) -> Response:
        from .scheduling import show_schedule

        _check_query(req, ())
        return Response(200, show_schedule(req.ctx, self._schedule_id(req)))

    @staticmethod
    def _schedule_id(req: Request) -> str:
        from .schedules import validate_schedule_id

        return validate_schedule_id(req.params["scheduleId"])

    def _edit(self, req: Request, schedule_id: str, action: str, fields: Any = None) -> Any:
        from .scheduling import edit_schedule

        return edit_schedule(req.ctx, schedule_id, action, fields)

    @staticmethod
    def _schedule_fields(body: Mapping[str, Any], allow_id: bool) -> dict[str, Any]:
        """The body's schedule fields, type-checked; their values are checked by the store."""
        _only(body, (("id",) if allow_id else ()) + tuple(SCHEDULE_FIELDS))
        return {k: _field(body, k, SCHEDULE_FIELDS[k]) for k in body if k != "id"}

    def _guard_schedule(self, req: Request, fields: Mapping[str, Any], current: Any) -> None:
        """``current``: the schedule as it is (None for a new one, which is judged against the
        configuration's defaults, what it would inherit)."""
        s = self.settings
        effective = {
            "encryption": s.encryption,
            "compression": s.compression,
        }
        if current is not None and current.encryption is not None:
            effective["encryption"] = current.encryption
        if current is not None and current.compression is not None:
            effective["compression"] = current.compression
        requested = {k: fields.get(k) for k in ("encryption", "compression")}
        self.guard_strength(req.ctx, requested, effective)

    def add_schedule(self, req: Request) -> Response:
        from .schedules import validate_schedule_id

        _check_query(req, ())
        schedule_id = _field(req.body, "id", str)
        if schedule_id is None:
            raise UsageError("field 'id' is required")
        validate_schedule_id(schedule_id)
        fields = self._schedule_fields(req.body, True)
        self._guard_schedule(req, fields, None)
        view = self._edit(req, schedule_id, "add", fields)
        return Response(201, view, {"Location": f"/api/backup/schedules/{schedule_id}"})

    def update_schedule(self, req: Request) -> Response:
        from .scheduling import schedules

        _check_query(req, ())
        schedule_id = self._schedule_id(req)
        fields = self._schedule_fields(req.body, allow_id=False)
        if any(fields.get(k) is False for k in ("encryption", "compression")):
            self._guard_schedule(req, fields, schedules(req.ctx).get(schedule_id))
        return Response(200, self._edit(req, schedule_id, "update", fields))

    def remove_schedule(self, req: Request) -> Response:
        _check_query(req, ())
        return Response(200, self._edit(req, self._schedule_id(req), "remove"))

    def enable_schedule(self, req: Request) -> Response:
        _check_query(req, ())
        _only(req.body, ())
        return Response(200, self._edit(req, self._schedule_id(req), "enable"))

    def disable_schedule(self, req: Request) -> Response:
        _check_query(req, ())
        _only(req.body, ())
        return Response(200, self._edit(req, self._schedule_id(req), "disable"))

    def run_schedule(self, req: Request) -> Response:
        """Start the same ``run_schedule`` as cron, under the same lock. Answer once the lock
        is ours (202), or with the run's own error (409 when cron holds the lock)."""
        from .locks import LOCK_DIR
        from .scheduling import run_schedule

        _check_query(req, ())
        _only(req.body, ())
        schedule_id = self._schedule_id(req)
        ctx = req.ctx
        run_id = _stamp_id("run")
        location = f"/api/backup/schedules/{schedule_id}/run/{run_id}"
        lock = ctx.state_dir / LOCK_DIR / f"schedule-{schedule_id}.lock"
        with self._run_guard:  # our own threads share our PID: tell them apart here
            if any(j.extra["scheduleId"] == schedule_id for j in self.jobs.running("run")):
                raise LockedError(f"schedule {schedule_id} is already running (via the API)")
            self.jobs.check_cap("run")
            job = self.jobs.start(
                "run",
                run_id,
                lambda: run_schedule(ctx, schedule_id),
                ctx.cancel,
                scheduleId=schedule_id,
                statusUrl=location,
            )
        while not job.done.wait(0.01) and not _held_by_us(lock):
            pass
        if job.done.is_set() and job.error is not None:
            raise job.error
        status = 200 if job.done.is_set() else 202
        return Response(status, job.to_json(), {"Location": location})

    def get_run(self, req: Request) -> Response:
        _check_query(req, ())
        schedule_id = self._schedule_id(req)
        run_id = _validated(RUN_ID_RE, req.params["runId"], "run ID")
        job = self.jobs.get(run_id, "run")
        if job is None or job.extra.get("scheduleId") != schedule_id:
            raise NotFoundError(f"run {run_id} not found (runs are kept in memory)")
        return Response(200, job.to_json())

    def next_schedules(self, req: Request) -> Response:
        from .scheduling import next_fires

        _check_query(req, ("count",))
        count = _query_int(req, "count", 1, 100) or 1
        return Response(200, to_jsonable(next_fires(req.ctx, count)))

    def statistics(self, req: Request) -> Response:
        from .scheduling import get_statistics

        _check_query(req, ())
        return Response(200, to_jsonable(get_statistics(req.ctx)))

    # --- health, metrics, the document -------------------------------------------------

    def health(self, req: Request) -> Response:
        from .scheduling import get_health

        _check_query(req, ())
        report = get_health(req.ctx)
        body = report.to_json()
        if req.ctx.token_label is None:  # public: no reason text (it may name a host or user)
            for key in ("problems", "warnings"):
                body[key] = [_public_finding(f) for f in body[key]]
        else:
            for key in ("problems", "warnings"):
                body[key] = [
                    {**f, "reason": redact_secrets(str(f.get("reason")))} for f in body[key]
                ]
        return Response(200 if report.ok else 503, body)

    def metrics(self, req: Request) -> Response:
        from .scheduling import get_metrics

        _check_query(req, ())
        text = get_metrics(req.ctx).text
        return Response(200, text, content_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi(self, req: Request) -> Response:
        from .openapi import openapi_document

        _check_query(req, ())
        return Response(200, openapi_document())


def _public_finding(finding: Mapping[str, Any]) -> dict[str, Any]:
    """A health finding fit for anyone: which check and which schedule, no free text."""
    return {"check": finding.get("check"), "scheduleId": finding.get("scheduleId")}


def _redacted_record(record: dict[str, Any]) -> dict[str, Any]:
    """A restore record for a client: its error text with secrets masked."""
    if isinstance(record.get("error"), str):
        return {**record, "error": redact_secrets(record["error"])}
    return record


def check_restore_dir(settings: Settings) -> Path | None:
    """``api.restoreDir`` as an absolute path, refused (exit 2) unless it is a directory owned
    by the running user (or root) that neither group nor others can write (ssh's rule): a
    restore must not land where someone else can swap the name under it."""
    if not settings.api_restore_dir:
        return None
    path = Path(settings.api_restore_dir).expanduser().absolute()
    where = f"api.restoreDir {path}"
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{where} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"{where} is owned by uid {st.st_uid}, not by the user running sbbackup")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{where} is writable by group or others (mode {st.st_mode & 0o777:o}): chmod go-w it"
        )
    return path


def _held_by_us(lock: Path) -> bool:
    """Has a thread of this process taken ``lock`` (``locks.hold`` writes the holder's PID)?"""
    import os

    from . import state

    try:
        return state.read_bytes(lock).decode(errors="replace").strip() == str(os.getpid())
    except (OSError, SbbackupError):
        return False


# --- HTTP --------------------------------------------------------------------------------

_QUERY_PAIR = re.compile(r"([?&])([^&\s\"'#]*)")


def scrub(text: str, tokens: list[Token]) -> str:
    """``text`` (a request line or path) fit for the log and the audit log: the values of
    query parameters the API does not take are masked, so a client that puts its token in
    ``?access_token=`` does not get it written down, and so is any configured token."""

    def mask(m: re.Match[str]) -> str:
        name, eq, _ = m.group(2).partition("=")
        return m.group(0) if name in QUERY_PARAMS else f"{m.group(1)}{name if eq else ''}{eq}***"

    text = _QUERY_PAIR.sub(mask, text)
    for token in tokens:
        text = text.replace(token.secret.decode("utf-8", "replace"), "***")
    return text


class DeadlineReader(io.RawIOBase):
    """The socket's reading side, where no single ``recv`` may wait past ``deadline``: the
    socket timeout alone bounds each silence, so a client trickling a byte now and then could
    otherwise hold its connection (and one of ``MAX_CONNECTIONS``) for ever."""

    def __init__(self, sock: Any, timeout: float) -> None:
        super().__init__()
        self.sock, self.timeout = sock, timeout
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the client took too long to send its request")
            self.sock.settimeout(min(self.timeout, left))
        try:
            return int(self.sock.recv_into(buffer))
        finally:
            self.sock.settimeout(self.timeout)  # writes keep the full timeout


class Handler(BaseHTTPRequestHandler):
    """One request: auth, route, body, handler, JSON out, audit line."""

    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "sbbackup"
    sys_version = ""
    timeout = SOCKET_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the stdlib's reader: it holds a reference that keeps the fd open
        self.reader = DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        """A client gets ``timeout`` seconds, from the end of its previous request, to send the
        whole of the next one (line, headers and body)."""
        self.reader.deadline = time.monotonic() + self.timeout
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        """``100 Continue`` only for a valid token: a body is never invited before that."""
        if self.server.api.authenticate(self.headers.get("Authorization")) is None:
            return True  # no 100; dispatch answers 401 and closes
        return super().handle_expect_100()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self.dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self.dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self.dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self.dispatch()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self.dispatch()

    def __getattr__(self, name: str) -> Any:
        """Any other method (TRACE, CONNECT, ...) is routed too: 401, 404 or 405, not 501."""
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def admit(self, label: str | None, path: str) -> None:
        """Move an authenticated connection to its slot; an unauthenticated one gets this one
        answer (public health, or 401) and is closed after it."""
        slots = self.server.slots
        if label is not None:
            outcome = slots.promote(self.connection)
            if outcome == "ok":
                return
            self.close_connection = True
            if outcome == "evicted":  # its socket is shut already: nobody to answer
                raise ConnectionAbortedError("evicted")
            raise HttpError(
                503, "busy", "too many connections: retry shortly", {"Retry-After": "1"}
            )
        slots.serving(self.connection)
        self.close_connection = True
        if not (self.server.api.public_health and path in PUBLIC_HEALTH_PATHS):
            raise HttpError(
                401, "unauthorized", "authentication required", {"WWW-Authenticate": "Bearer"}
            )

    def dispatch(self) -> None:
        api = self.server.api
        remote = self.client_address[0]
        label: str | None = None
        route: Route | None = None
        params: dict[str, str] = {}
        req: Request | None = None
        response: Response
        try:
            url = urlsplit(self.path)
            label = api.authenticate(self.headers.get("Authorization"))
            self.admit(label, url.path)
            segments = [unquote(s, errors="strict") for s in url.path.strip("/").split("/")]
            route, params = resolve(self.command, segments)
            body = self.read_body()
            query = parse_qs(url.query, keep_blank_values=True, errors="strict")
            req = Request(self.command, url.path, params, query, body, api.context(remote, label))
            req.wait = "wait" in query and _query_bool(req, "wait")
            response = api.call(route, req)
        except ConnectionAbortedError:
            return
        except HttpError as exc:
            response = Response(
                exc.status, error_body(exc.code, exc.kind, exc.message), exc.headers
            )
        except SbbackupError as exc:
            response = Response(status_for(exc), exc_body(exc))
        except UnicodeDecodeError:
            response = Response(400, error_body(2, "usage", "the URL is not valid UTF-8"))
        except Exception as exc:  # noqa: BLE001 - the request's error boundary
            api.log_traceback()
            message = f"unexpected error ({type(exc).__name__}): please report it"
            response = Response(500, error_body(1, "unexpected", message))
        if self.body_unread():
            self.discard_body()
            self.close_connection = True  # what is left of it would be read as the next request
        # Audit before answering: a client that has its answer finds the line written.
        if self.command not in ("GET", "HEAD"):
            extra = req.ctx.audit_extra if req is not None else {}
            self.audit(route, params, label, response.status, extra)
        self.respond(response)

    body_consumed = False

    def body_unread(self) -> bool:
        if self.body_consumed:
            return False
        length = self.headers.get("Content-Length", "0").strip()
        return bool(self.headers.get("Transfer-Encoding")) or length not in ("", "0")

    def discard_body(self) -> None:
        """Read a refused body (up to ``DRAIN_LIMIT``) so that a client still sending it gets to
        read the answer instead of a reset connection; a larger or chunked one is not read."""
        length = self.headers.get("Content-Length", "").strip()
        if self.headers.get("Transfer-Encoding") or not re.fullmatch(r"\d{1,12}", length):
            return
        left = int(length)
        if left > DRAIN_LIMIT:
            return
        with contextlib.suppress(OSError):
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        self.body_consumed = True

    def read_body(self) -> dict[str, Any]:
        if self.command != "POST":
            return {}
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "length_required", "send a Content-Length, not chunked bodies")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise HttpError(411, "length_required", "POST needs a Content-Length header")
        if not re.fullmatch(r"\d{1,12}", raw_length.strip()):
            raise HttpError(400, "usage", "invalid Content-Length")
        length = int(raw_length)
        if length > MAX_BODY:
            raise HttpError(413, "too_large", f"the body is over {MAX_BODY} bytes")
        if length == 0:
            return {}
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, "unsupported_media_type", "send Content-Type: application/json")
        raw = self.rfile.read(length)
        self.body_consumed = True
        if len(raw) != length:
            raise HttpError(400, "usage", "the body ended early")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise HttpError(400, "usage", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "usage", "the body must be a JSON object")
        return body

    def respond(self, response: Response) -> None:
        if isinstance(response.body, str):
            payload = response.body.encode()
        else:
            payload = (json.dumps(response.body, indent=2) + "\n").encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            with contextlib.suppress(OSError):
                self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, header limits) in our JSON shape."""
        self.close_connection = True
        status = HTTPStatus(code)
        body = error_body(2 if code < 500 else 1, "http", message or status.phrase)
        with contextlib.suppress(OSError):
            self.respond(Response(code, body))

    def audit(
        self,
        route: Route | None,
        params: dict[str, str],
        label: str | None,
        status: int,
        extra: Mapping[str, Any],
    ) -> None:
        api = self.server.api
        target = scrub(next(iter(params.values())), api.tokens) if params else None
        try:
            append_audit(
                api.state_dir,
                f"api:{route.operation if route else self.command}",
                target[:MAX_ID] if target else None,
                str(status),
                **extra,
                remote=self.client_address[0],
                token=label,
                method=self.command,
                path=scrub(self.path, api.tokens)[:MAX_ID],
            )
        except SbbackupError as exc:
            api.log(f"sbbackup serve: audit log: {exc.message}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        api = self.server.api
        api.log(f"{self.client_address[0]} - {scrub(format % args, api.tokens)}")


MAX_CONNECTIONS = 64  # connections whose requests carried a valid token
MAX_UNAUTHENTICATED = 16  # connections before (or without) one: the oldest is evicted


class ConnectionSlots:
    """Who may hold one of the server's connection threads.

    A new connection is unauthenticated: it holds one of ``unauthenticated`` places, from its
    accept until a request on it carries a valid token. A newcomer that finds them all taken
    evicts the oldest (preferring one still waiting for its request), whose socket is shut
    down, so idle, slow or token-less clients cannot keep anyone else out. A valid token moves
    the connection to one of ``authenticated`` slots, which it keeps until it closes; past
    that it gets 503.
    """

    def __init__(self, authenticated: int, unauthenticated: int) -> None:
        self._lock = threading.Lock()
        self._free = authenticated
        self._places = unauthenticated
        self._waiting: OrderedDict[Any, bool] = OrderedDict()  # socket -> answering a request
        self._authenticated: set[Any] = set()

    def admit(self, sock: Any) -> None:
        with self._lock:
            if len(self._waiting) >= self._places:
                idle = [s for s, answering in self._waiting.items() if not answering]
                victim = idle[0] if idle else next(iter(self._waiting))
                del self._waiting[victim]
                # Under the lock: a socket is released (here) before it is closed, so this
                # never reaches a descriptor that has since been reused.
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)  # its thread reads EOF and ends
            self._waiting[sock] = False

    def serving(self, sock: Any) -> None:
        with self._lock:
            if sock in self._waiting:
                self._waiting[sock] = True

    def promote(self, sock: Any) -> str:
        """``ok``, ``busy`` (no authenticated slot free) or ``evicted`` (too late)."""
        with self._lock:
            if sock in self._authenticated:
                return "ok"
            if sock not in self._waiting:
                return "evicted"
            if self._free <= 0:
                return "busy"
            del self._waiting[sock]
            self._free -= 1
            self._authenticated.add(sock)
            return "ok"

    def release(self, sock: Any) -> None:
        with self._lock:
            if sock in self._authenticated:
                self._authenticated.discard(sock)
                self._free += 1
            self._waiting.pop(sock, None)

    def counts(self) -> tuple[int, int]:
        """(authenticated, unauthenticated) connections held now."""
        with self._lock:
            return len(self._authenticated), len(self._waiting)


class ApiServer(ThreadingHTTPServer):
    """One thread per connection, bounded by ``ConnectionSlots``: at most ``MAX_CONNECTIONS``
    authenticated and ``MAX_UNAUTHENTICATED`` other connections, so slow, idle or token-less
    clients cannot make the server start threads without bound, nor starve real clients."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        self.api = api
        self.slots = ConnectionSlots(MAX_CONNECTIONS, MAX_UNAUTHENTICATED)
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.slots.admit(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release(request)

    def shutdown_request(self, request: Any) -> None:
        self.slots.release(request)  # before the close: see ConnectionSlots.admit
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was evicted) mid-answer is no error worth a traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        self.api.log_traceback()


def make_server(
    settings: Settings,
    host: str,
    port: int,
    tokens: list[Token],
    public_health: bool = False,
    log: Callable[[str], None] | None = None,
) -> ApiServer:
    """Refuse to start without a token: on a non-loopback address that would expose backups,
    and on loopback every request would get 401 anyway."""
    if not tokens:
        where = "" if is_loopback(host) else f" on {host}"
        raise ConfigError(
            f"refusing to serve{where} without an API token: set {TOKEN_FILE_ENV} "
            f"(or {TOKEN_ENV}); `sbbackup serve --generate-token` makes one"
        )
    api = Api(settings, tokens, public_health=public_health, log=log)
    try:
        return ApiServer((host, port), api)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def serve(server: ApiServer, grace: float = DEFAULT_GRACE) -> list[Job]:
    """Serve until ``server.shutdown()`` (the CLI calls it on SIGTERM), then drain the jobs.
    Returns the jobs that had to be interrupted."""
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return server.api.jobs.drain(grace)
