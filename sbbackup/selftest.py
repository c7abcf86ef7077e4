"""`sbbackup test`: preflight checks, then a restore drill into a scratch database.

The drill restores a backup into ``sbbackup_test_<id>``, compares it exactly with the counts the
backup recorded in pg_dump's own snapshot, and always drops the scratch database, even when
interrupted. A later run drops leftovers that nobody is connected to.

Like ``ops``, this module never prints and never exits: it returns a ``TestReport``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .catalog import STATUS_COMPLETED, BackupRecord, iso
from .drills import record_drill
from .engines import compare_contents
from .errors import (
    ConfigError,
    DatabaseError,
    ExitCode,
    IntegrityError,
    NotFoundError,
    SbbackupError,
    StorageError,
    WrongKeyError,
)
from .locks import hold
from .ops import (
    Context,
    CreateOptions,
    VerifyReport,
    _check_file,
    _check_key,
    create_backup,
    plaintext,
    show_backup,
    verify_backups,
)
from .pipeline import HashingReader, check_digest
from .storage.local import LocalStorage

SCRATCH_PREFIX = "sbbackup_test_"
TEST_SCHEDULE = "test"
DRILL_LOCK = "drill"


@dataclass
class Check:
    name: str
    status: str  # pass | fail | warn
    reason: str
    code: int = 0  # the exit code of a failure


@dataclass
class Drill:
    backupId: str | None = None
    target: str | None = None
    status: str = "skipped"  # passed | failed | skipped
    timings: dict[str, int] = field(default_factory=dict)  # milliseconds per step
    tables: int = 0
    differences: list[str] = field(default_factory=list)
    scratchDropped: bool = False
    leftoversDropped: list[str] = field(default_factory=list)
    error: str | None = None
    code: int = 0


@dataclass
class TestReport:
    __test__ = False  # not a pytest class

    checks: list[Check]
    drill: Drill
    startedAt: str
    finishedAt: str | None = None

    @property
    def ok(self) -> bool:
        """Every check passed or warned, and the drill passed (or was not asked for)."""
        if any(c.status == "fail" for c in self.checks):
            return False
        return self.drill.status == "passed" or (
            self.drill.status == "skipped" and self.drill.error is None
        )

    @property
    def exit_code(self) -> int:
        """0, or the exit code of the first failure (preflight order, then the drill)."""
        for c in self.checks:
            if c.status == "fail":
                return c.code or int(ExitCode.UNEXPECTED)
        if self.drill.status == "failed":
            return self.drill.code or int(ExitCode.UNEXPECTED)
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exitCode": self.exit_code,
            "startedAt": self.startedAt,
            "finishedAt": self.finishedAt,
            "checks": [asdict(c) for c in self.checks],
            "drill": asdict(self.drill),
        }


@dataclass(frozen=True)
class TestOptions:
    __test__ = False

    drill: bool = True
    backup_id: str | None = None
    latest: bool = False
    target_url: str | None = None


# --- preflight ---------------------------------------------------------------------------

Outcome = tuple[str, str]  # (status, reason)


def _run_check(name: str, fn: Callable[[], Outcome]) -> Check:
    try:
        status, reason = fn()
        return Check(name, status, reason)
    except SbbackupError as exc:
        return Check(name, "fail", exc.message, int(exc.exit_code))
    except OSError as exc:
        return Check(name, "fail", str(exc), int(ExitCode.STORAGE))


def preflight(ctx: Context, now: datetime) -> list[Check]:
    """The named checks, in order. A bad configuration stops here: nothing else is meaningful."""
    checks = [_run_check("config", lambda: _check_config(ctx))]
    if checks[0].status == "fail":
        return checks
    steps: list[tuple[str, Callable[[], Outcome]]] = [
        ("tools", lambda: _check_tools(ctx)),
        ("database", lambda: _check_database(ctx)),
        ("backup-path", lambda: _check_path(ctx)),
        ("free-space", lambda: _check_space(ctx)),
        ("encryption", lambda: _check_recipients(ctx)),
        ("identity", lambda: _check_identity(ctx)),
        ("schedules", lambda: _check_schedules(ctx, now)),
        ("locks", lambda: _check_locks(ctx)),
    ]
    checks += [_run_check(name, fn) for name, fn in steps]
    return checks


def config_failure(exc: ConfigError) -> TestReport:
    """The report when the settings themselves do not load."""
    now = iso(datetime.now(UTC)) or ""
    check = Check("config", "fail", exc.message, int(exc.exit_code))
    return TestReport([check], Drill(error="not run: the configuration is invalid"), now, now)


def _check_config(ctx: Context) -> Outcome:
    ctx.engine  # noqa: B018 - building them validates the database URL and backup path
    ctx.storage  # noqa: B018
    source = ctx.settings.config_file or "environment and defaults"
    return "pass", f"configuration is valid ({source})"


def _check_tools(ctx: Context) -> Outcome:
    engine = ctx.engine
    tools = engine.tools()  # DatabaseError when one is missing or older than the server
    if not tools.versions:
        return "pass", f"the {engine.name} engine needs no client tools"
    found = ", ".join(f"{name} {version}" for name, version in tools.versions.items())
    if tools.server_major is None:
        return "warn", f"{found} (server unreachable: versions not compared)"
    return "pass", f"{found}, server {tools.server_major}"


def _check_database(ctx: Context) -> Outcome:
    info = ctx.engine.check()
    return "pass", f"{ctx.engine.redact(None)} reachable, server {info['serverVersion']}"


def _check_path(ctx: Context) -> Outcome:
    from . import state

    storage = ctx.storage
    if not isinstance(storage, LocalStorage):
        names = storage.list_names()
        return "pass", f"{getattr(storage, 'url', 'storage')} reachable ({len(names)} objects)"
    root = storage.root
    if not state.check_private_dir(root):  # refuses a shared or foreign directory (exit 4)
        parent = next((p for p in root.parents if p.exists()), root)
        if not os.access(parent, os.W_OK):
            raise StorageError(f"{root} does not exist and {parent} is not writable")
        return "warn", f"{root} does not exist yet; the first backup creates it (mode 700)"
    try:
        fd, probe = state.create_temp(root, "sbbackup-probe")
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"{root} is not writable ({exc.strerror})") from None
    mode = root.stat().st_mode & 0o777
    if mode != 0o700:
        return "pass", f"{root} exists, is writable, mode {mode:o} (nobody else can write it)"
    return "pass", f"{root} exists, is writable, mode 700"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _estimate(ctx: Context) -> tuple[int, str]:
    """The next backup's size: the last one's, or the database's times the last ratio."""
    last = ctx.catalog.list(status=STATUS_COMPLETED, limit=1)
    if last and last[0].size > 0:
        return last[0].size, "the last backup's size"
    return ctx.engine.size_estimate(), "the database's size, uncompressed"


def _free_space(ctx: Context) -> int | None:
    storage = ctx.storage
    if isinstance(storage, LocalStorage):  # measure where the path will be if it is not yet
        existing = next((p for p in (storage.root, *storage.root.parents) if p.exists()), None)
        return shutil.disk_usage(existing).free if existing else None
    return storage.usage()[1]


def _check_space(ctx: Context) -> Outcome:
    free = _free_space(ctx)
    if free is None:
        return "warn", "free space is unknown for this storage"
    try:
        need, basis = _estimate(ctx)
    except DatabaseError:
        return "warn", f"{_size(free)} free; next backup's size unknown (database unreachable)"
    if free < need:
        raise StorageError(
            f"{_size(free)} free, the next backup needs about {_size(need)} ({basis})"
        )
    return "pass", f"{_size(free)} free, next backup about {_size(need)} ({basis})"


def _encrypted_schedules(ctx: Context) -> list[str]:
    """Enabled schedules that encrypt (the default weekly and monthly ones do)."""
    if not ctx.settings.enabled:
        return []
    from .schedule_store import load_schedules

    try:
        scheds = load_schedules(ctx.settings, ctx.state_dir).schedules.values()
    except SbbackupError:
        return []  # the schedules check reports why
    return [s.id for s in scheds if s.enabled and s.encryption]


def _encryption_wanted(ctx: Context) -> bool:
    return ctx.settings.encryption or bool(_encrypted_schedules(ctx))


def _plan(ctx: Context) -> Any:
    from .encryption import plan_encryption

    return plan_encryption(ctx.settings)


def _check_recipients(ctx: Context) -> Outcome:
    """backup.encryption on: the recipients must parse (fail). Only some schedules encrypt:
    a warning, since manual backups and this drill still work."""
    scheds = _encrypted_schedules(ctx)
    if not ctx.settings.encryption and not scheds:
        return "pass", "encryption is off"
    try:
        manifest = _plan(ctx).manifest
    except ConfigError as exc:
        if ctx.settings.encryption:
            raise
        s = ctx.settings
        why = exc.message
        if not (s.recipients or s.recipients_file or s.passphrase_file):
            why = "no recipient is configured (DB_BACKUP_ENCRYPTION_RECIPIENTS, `sbbackup keygen`)"
        return "warn", f"schedules {', '.join(scheds)} encrypt but will fail: {why}"
    if manifest["recipientType"] == "scrypt":
        return "pass", "passphrase file readable (age scrypt)"
    return "pass", f"{len(manifest['recipients'])} X25519 recipient(s) parse"


def _check_identity(ctx: Context) -> Outcome:
    s = ctx.settings
    if not s.identity_file:
        if _encryption_wanted(ctx) and not s.passphrase_file:
            return "warn", "no identity configured: encrypted backups cannot be drilled here"
        return "pass", "no identity configured"
    from .encryption import identities

    ids = identities(s)
    if not (s.recipients or s.recipients_file):
        return "pass", f"{len(ids)} identities parse (no recipients configured to match)"
    wanted = set(_plan(ctx).manifest["recipients"])
    mine = {i.recipient().public_key_str for i in ids if hasattr(i, "recipient")}
    if not wanted & mine:
        raise WrongKeyError(
            f"no identity in {s.identity_file} matches the configured recipients: "
            "backups made now could not be restored with it"
        )
    return "pass", f"identity matches {len(wanted & mine)} of {len(wanted)} recipient(s)"


def _check_schedules(ctx: Context, now: datetime) -> Outcome:
    from .scheduling import get_statistics, schedules

    sset = schedules(ctx)  # ConfigError (exit 2) when a schedule does not parse
    overdue: list[Any] = get_statistics(ctx, now)["overdueSchedules"] or []
    if overdue and ctx.settings.enabled:
        names = ", ".join(o["scheduleId"] if isinstance(o, dict) else str(o) for o in overdue)
        return "warn", f"{len(sset.schedules)} schedules parse; overdue: {names}"
    return "pass", f"{len(sset.schedules)} schedules parse, none overdue"


def _check_locks(ctx: Context) -> Outcome:
    with hold(ctx.state_dir, "preflight-probe", "preflight"):
        pass
    return "pass", f"{ctx.state_dir / 'locks'} is usable"


# --- drill -------------------------------------------------------------------------------


def run_self_test(ctx: Context, opts: TestOptions, now: datetime | None = None) -> TestReport:
    now = now or datetime.now(UTC)
    report = TestReport(checks=preflight(ctx, now), drill=Drill(), startedAt=iso(now) or "")
    if opts.drill and any(c.status == "fail" for c in report.checks):
        report.drill.error = "not run: a preflight check failed"
    elif opts.drill:
        run_drill(ctx, lambda d: _pick_backup(ctx, opts, d), opts.target_url, report.drill)
    report.finishedAt = iso(datetime.now(UTC))
    ctx.audit("test", report.drill.backupId, "passed" if report.ok else "failed")
    return report


def drill_backup(ctx: Context, record: BackupRecord, server: str | None) -> Drill:
    """`verify --deep --restore`: the drill of one existing backup."""
    drill = Drill()
    run_drill(ctx, lambda _: record, server, drill)
    return drill


def run_drill(
    ctx: Context, pick: Callable[[Drill], BackupRecord], server: str | None, drill: Drill
) -> None:
    """Hold the drill lock, drill, and record the outcome for `statistics` and `health`."""
    started = iso(datetime.now(UTC)) or ""
    try:
        with hold(ctx.state_dir, DRILL_LOCK, "a restore drill"):
            try:
                _drill(ctx, pick, server, drill)
            except KeyboardInterrupt:  # SIGINT/SIGTERM: the scratch target is already dropped
                drill.status, drill.error = "failed", "interrupted"
                drill.code = int(ExitCode.INTERRUPTED)
                with contextlib.suppress(SbbackupError, OSError):
                    _record(ctx, drill, started)  # statistics count it as a failed drill
                raise
            _record(ctx, drill, started)
    except SbbackupError as exc:  # the lock is held, or the record could not be written
        drill.status, drill.error, drill.code = "failed", exc.message, int(exc.exit_code)


def _timed(drill: Drill, step: str, fn: Callable[[], Any]) -> Any:
    t = time.monotonic()
    try:
        return fn()
    finally:
        drill.timings[step] = int((time.monotonic() - t) * 1000)


def _pick_backup(ctx: Context, opts: TestOptions, drill: Drill) -> BackupRecord:
    if opts.backup_id:
        return show_backup(ctx, opts.backup_id)
    if opts.latest:
        found = ctx.catalog.list(status=STATUS_COMPLETED, limit=1)
        if not found:
            raise NotFoundError("no completed backup to drill: run `sbbackup create` first")
        return found[0]
    record: BackupRecord = _timed(
        drill, "backup", lambda: create_backup(ctx, CreateOptions(schedule_id=TEST_SCHEDULE))
    )
    return record


def _drill(
    ctx: Context, pick: Callable[[Drill], BackupRecord], server: str | None, drill: Drill
) -> None:
    engine = ctx.engine
    scratch: str | None = None
    try:
        _drop_leftovers(ctx, server, drill)
        record = pick(drill)
        drill.backupId = record.id
        if record.status != STATUS_COMPLETED or not record.filename:
            raise IntegrityError(f"backup {record.id} is {record.status}: {record.error or ''}")
        _timed(drill, "verify", lambda: _check_file(ctx, record))
        scratch = engine.scratch_target(SCRATCH_PREFIX + secrets.token_hex(4), server)
        drill.target = engine.redact(scratch)
        target = scratch
        _timed(drill, "restore", lambda: _restore(ctx, record, target))
        _timed(drill, "compare", lambda: _compare(ctx, record, target, drill))
        drill.status = "passed"
    except SbbackupError as exc:
        drill.status, drill.error, drill.code = "failed", exc.message, int(exc.exit_code)
    finally:
        if scratch is not None:
            with _signals_deferred():
                try:
                    engine.drop_target(scratch)
                    drill.scratchDropped = True
                except SbbackupError as exc:
                    drill.status, drill.code = "failed", drill.code or int(exc.exit_code)
                    drill.error = f"{drill.error + '; ' if drill.error else ''}{exc.message}"


def _drop_leftovers(ctx: Context, server: str | None, drill: Drill) -> None:
    """Drop scratch targets of earlier runs that died. One still in use is left alone."""
    engine = ctx.engine
    for leftover in engine.leftover_targets(SCRATCH_PREFIX, server):
        try:
            engine.drop_target(leftover, force=False)
        except DatabaseError:
            continue  # a concurrent drill (another configuration) is using it
        drill.leftoversDropped.append(engine.redact(leftover))


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the scratch database is dropped, then act on them.

    A second Ctrl-C must not leave a scratch database behind. Signal handlers can only be
    set in the main thread; elsewhere (the API server) there is nothing to defer.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def note(signum: int, frame: Any) -> None:
        pending.append(signum)

    old = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt


def _restore(ctx: Context, record: BackupRecord, scratch: str) -> None:
    """Decrypt, decompress and load the backup into the scratch target, hashing as it reads."""
    if record.encryption:
        _check_key(ctx, record)  # a wrong key fails here (exit 12), before anything is created
    assert record.filename
    with ctx.storage.open_read(record.filename) as fh:
        raw = HashingReader(fh)
        ctx.engine.restore(
            record.format,
            plaintext(ctx, record, raw),
            scratch,
            create_target=True,
            clean=False,
            jobs=1,
        )
        check_digest(raw.hash.hexdigest(), record.checksum, record.filename)


def _compare(ctx: Context, record: BackupRecord, scratch: str, drill: Drill) -> None:
    if not record.contents:
        raise IntegrityError(
            f"backup {record.id} recorded no row counts to compare with "
            "(backup.rowCounts is off): nothing proves the restore is complete"
        )
    actual = ctx.engine.inventory(scratch)
    drill.tables = len(actual.get("tables", {}))
    drill.differences = compare_contents(record.contents, actual)
    if drill.differences:
        more = f" (and {len(drill.differences) - 5} more)" if len(drill.differences) > 5 else ""
        raise IntegrityError(
            f"the restored copy of {record.id} differs from the backup: "
            + "; ".join(drill.differences[:5])
            + more
        )


# --- the record of the last drill --------------------------------------------------------


def _record(ctx: Context, drill: Drill, started: str) -> None:
    """Keep the last drill and the last successful one, for `statistics` and `health`."""
    entry = {
        "at": started,
        "status": drill.status,
        "backupId": drill.backupId,
        "error": drill.error,
        "timings": drill.timings,
    }
    record_drill(ctx.state_dir, entry, passed=drill.status == "passed")


# --- verify --deep --restore -------------------------------------------------------------


def verify_with_restore(
    ctx: Context, backup_id: str | None, all_: bool, server: str | None
) -> VerifyReport:
    """`verify --deep --restore`: the deep check, then a drill of every backup that passed it."""
    report = verify_backups(ctx, backup_id, all_, deep=True)
    for result in report.results:
        if not result.ok:
            continue
        drill = drill_backup(ctx, ctx.catalog.get(result.id), server)
        result.restore = asdict(drill)
        if drill.status != "passed":
            result.ok, result.error, result.exitCode = False, drill.error, drill.code
    return report
