"""`sbbackup test`: preflight checks, then a restore drill into a scratch database.

The drill restores a backup into ``sbbackup_test_<id>``, compares it exactly with the counts the
backup recorded in pg_dump's own snapshot, and always drops the scratch database, even when
interrupted. A later run drops any leftovers (it holds the drill lock, so none can be live).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .catalog import STATUS_COMPLETED, BackupRecord, iso
from .errors import (
    ExitCode,
    IntegrityError,
    SbbackupError,
    StorageError,
    WrongKeyError,
)
from .locks import hold
from .ops import (
    Context,
    CreateOptions,
    _check_file,
    _check_key,
    create_backup,
    plaintext,
    show_backup,
)
from .pipeline import HashingReader, check_digest
from .storage.local import LocalStorage

SCRATCH_PREFIX = "sbbackup_test_"
TEST_SCHEDULE = "test"
LAST_TEST_FILE = "last_test.json"


@dataclass
class Check:
    name: str
    status: str  # pass | fail | warn
    reason: str
    code: int = 0


@dataclass
class Drill:
    backupId: str | None = None
    target: str | None = None
    status: str = "skipped"  # passed | failed | skipped
    timings: dict[str, int] = field(default_factory=dict)
    tables: int = 0
    differences: list[str] = field(default_factory=list)
    error: str | None = None
    code: int = 0


@dataclass
class TestReport:
    checks: list[Check]
    drill: Drill
    startedAt: str
    finishedAt: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks) and self.drill.status in (
            "passed", "skipped") and not (self.drill.status == "skipped" and self.drill.error)

    @property
    def exit_code(self) -> int:
        for c in self.checks:
            if c.status == "fail":
                return c.code or int(ExitCode.UNEXPECTED)
        return self.drill.code if self.drill.status == "failed" else 0

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "exitCode": self.exit_code, "startedAt": self.startedAt,
                "finishedAt": self.finishedAt, "checks": [asdict(c) for c in self.checks],
                "drill": asdict(self.drill)}


@dataclass(frozen=True)
class TestOptions:
    drill: bool = True
    backup_id: str | None = None
    latest: bool = False
    target_url: str | None = None


# --- preflight ---------------------------------------------------------------------------

def _run_check(name: str, fn: Callable[[], tuple[str, str]]) -> Check:
    try:
        status, reason = fn()
        return Check(name, status, reason)
    except SbbackupError as exc:
        return Check(name, "fail", exc.message, int(exc.exit_code))
    except OSError as exc:
        return Check(name, "fail", str(exc), int(ExitCode.STORAGE))


def preflight(ctx: Context, now: datetime) -> list[Check]:
    checks = [Check("config", "pass", f"configuration is valid "
                    f"({ctx.settings.config_file or 'environment and defaults'})")]
    checks.append(_run_check("tools", lambda: _check_tools(ctx)))
    checks.append(_run_check("database", lambda: _check_database(ctx)))
    checks.append(_run_check("backup-path", lambda: _check_path(ctx)))
    checks.append(_run_check("free-space", lambda: _check_space(ctx)))
    checks.append(_run_check("encryption", lambda: _check_recipients(ctx)))
    checks.append(_run_check("identity", lambda: _check_identity(ctx)))
    checks.append(_run_check("schedules", lambda: _check_schedules(ctx, now)))
    checks.append(_run_check("locks", lambda: _check_locks(ctx)))
    return checks


def _check_tools(ctx: Context) -> tuple[str, str]:
    engine = ctx.engine
    if engine.name != "postgresql":
        return "pass", f"{engine.name} needs no client tools"
    tools = [(n, engine.client_version(n)) for n in ("pg_dump", "psql", "pg_restore")]  # type: ignore[attr-defined]
    return "pass", ", ".join(f"{n} {v[1]}" for n, v in tools)


def _check_database(ctx: Context) -> tuple[str, str]:
    info = ctx.engine.check()
    return "pass", f"{ctx.engine.redact(None)} reachable, server {info['serverVersion']}"


def _check_path(ctx: Context) -> tuple[str, str]:
    storage = ctx.storage
    if not isinstance(storage, LocalStorage):
        names = storage.list_names()
        return "pass", f"{storage.url} reachable ({len(names)} objects)"
    root = storage.root
    if not root.exists():
        parent = next((p for p in root.parents if p.exists()), root)
        if not os.access(parent, os.W_OK):
            raise StorageError(f"{root} does not exist and {parent} is not writable")
        return "warn", f"{root} does not exist yet; the first backup creates it (0700)"
    probe = root / f".sbbackup-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"{root} is not writable ({exc.strerror})") from None
    mode = root.stat().st_mode & 0o777
    if mode != 0o700:
        return "warn", f"{root} is writable but has mode {mode:o}, expected 700"
    return "pass", f"{root} exists, writable, mode 700"


def _estimate(ctx: Context) -> int:
    completed = ctx.catalog.list(status=STATUS_COMPLETED, limit=1)
    if completed:
        return completed[0].size
    return ctx.engine.size_estimate()  # no ratio known yet: assume no compression


def _check_space(ctx: Context) -> tuple[str, str]:
    from .render import human_size

    _, free = ctx.storage.usage()
    need = _estimate(ctx)
    if free is None:
        return "warn", "free space unknown for this storage"
    if free < need:
        raise StorageError(f"{human_size(free)} free, the next backup needs about "
                           f"{human_size(need)}")
    return "pass", f"{human_size(free)} free, next backup about {human_size(need)}"


def _encryption_wanted(ctx: Context) -> bool:
    if ctx.settings.encryption:
        return True
    try:
        from .schedule_store import load_schedules

        sched = load_schedules(ctx.settings, ctx.state_dir).schedules.values()
    except SbbackupError:
        return False
    return any(s.enabled and s.encryption for s in sched) and ctx.settings.enabled


def _check_recipients(ctx: Context) -> tuple[str, str]:
    if not _encryption_wanted(ctx):
        return "pass", "encryption is off"
    from .encryption import plan_encryption

    plan = plan_encryption(ctx.settings)
    kind = plan.manifest["recipientType"]
    n = len(plan.manifest["recipients"]) or 1
    return "pass", f"{n} {kind} recipient(s) parse"


def _check_identity(ctx: Context) -> tuple[str, str]:
    s = ctx.settings
    if not s.identity_file:
        if _encryption_wanted(ctx) and not s.passphrase_file:
            return "warn", "no identity configured: encrypted backups cannot be drilled here"
        return "pass", "no identity configured"
    from .encryption import identities, plan_encryption

    ids = identities(s)
    if not _encryption_wanted(ctx) and not s.recipients and not s.recipients_file:
        return "pass", f"{len(ids)} identities parse"
    wanted = set(plan_encryption(s).manifest["recipients"])
    mine = {i.recipient().public_key_str for i in ids if hasattr(i, "recipient")}
    if wanted and not wanted & mine:
        raise WrongKeyError("no configured identity matches the configured recipients")
    return "pass", f"identity matches {len(wanted & mine)} recipient(s)"


def _check_schedules(ctx: Context, now: datetime) -> tuple[str, str]:
    from .schedule_store import load_schedules
    from .stats import statistics

    sset = load_schedules(ctx.settings, ctx.state_dir)
    records = ctx.catalog.list()
    stats = statistics(records, list(sset.schedules.values()), now,
                       grace=_grace(ctx), disk_used=None, disk_free=None, last_restore_test=None)
    overdue = stats.get("overdueSchedules", [])
    if overdue and ctx.settings.enabled:
        names = ", ".join(o["scheduleId"] if isinstance(o, dict) else str(o) for o in overdue)
        return "warn", f"overdue: {names}"
    return "pass", f"{len(sset.schedules)} schedules parse, none overdue"


def _grace(ctx: Context) -> Any:
    from datetime import timedelta

    return timedelta(minutes=60)


def _check_locks(ctx: Context) -> tuple[str, str]:
    with hold(ctx.state_dir, "preflight-probe", "preflight"):
        pass
    return "pass", f"{ctx.state_dir / 'locks'} usable"


# --- drill -------------------------------------------------------------------------------

def run_self_test(ctx: Context, opts: TestOptions, now: datetime | None = None) -> TestReport:
    now = now or datetime.now(UTC)
    report = TestReport(checks=preflight(ctx, now), drill=Drill(), startedAt=iso(now) or "")
    if opts.drill and all(c.status != "fail" for c in report.checks):
        with hold(ctx.state_dir, "drill", "a restore drill"):
            _drill(ctx, opts, report.drill)
        _record(ctx, report)
    report.finishedAt = iso(datetime.now(UTC))
    ctx.audit("test", report.drill.backupId, "passed" if report.ok else "failed")
    return report


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
            from .errors import NotFoundError

            raise NotFoundError("no completed backup to drill")
        return found[0]
    return _timed(drill, "backup", lambda: create_backup(
        ctx, CreateOptions(schedule_id=TEST_SCHEDULE)))


def _drill(ctx: Context, opts: TestOptions, drill: Drill) -> None:
    engine = ctx.engine
    for leftover in engine.leftover_targets(SCRATCH_PREFIX, opts.target_url):
        engine.drop_target(leftover)  # we hold the drill lock: nobody else is using it
    scratch: str | None = None
    try:
        record = _pick_backup(ctx, opts, drill)
        drill.backupId = record.id
        if record.status != STATUS_COMPLETED:
            raise IntegrityError(f"backup {record.id} is {record.status}: {record.error}")
        _timed(drill, "verify", lambda: _check_file(ctx, record))
        scratch = engine.scratch_target(SCRATCH_PREFIX + secrets.token_hex(4), opts.target_url)
        drill.target = engine.redact(scratch)
        _timed(drill, "restore", lambda: _restore(ctx, record, scratch or ""))
        _timed(drill, "compare", lambda: _compare(ctx, record, scratch or "", drill))
        drill.status = "passed"
    except SbbackupError as exc:
        drill.status, drill.error, drill.code = "failed", exc.message, int(exc.exit_code)
    finally:
        if scratch is not None:
            try:
                engine.drop_target(scratch)
            except SbbackupError as exc:
                drill.error = (drill.error or "") + f" (could not drop {drill.target}: {exc})"


def _restore(ctx: Context, record: BackupRecord, scratch: str) -> None:
    if record.encryption:
        _check_key(ctx, record)
    assert record.filename
    with ctx.storage.open_read(record.filename) as fh:
        raw = HashingReader(fh)
        ctx.engine.restore(record.format, plaintext(ctx, record, raw), scratch,
                           create_target=True, clean=False, jobs=1)
        check_digest(raw.hash.hexdigest(), record.checksum, record.filename)


def _compare(ctx: Context, record: BackupRecord, scratch: str, drill: Drill) -> None:
    from .engines import compare_contents

    if not record.contents:
        raise IntegrityError(f"backup {record.id} recorded no contents to compare with")
    actual = ctx.engine.inventory(scratch)
    drill.tables = len(actual.get("tables", {}))
    drill.differences = compare_contents(record.contents, actual)
    if drill.differences:
        raise IntegrityError(f"restored {record.id} differs: " + "; ".join(drill.differences[:5]))


def _record(ctx: Context, report: TestReport) -> None:
    """Keep the last drill and the last successful one, for statistics and health."""
    store = LocalStorage(ctx.state_dir)
    try:
        previous = json.loads(store.read_bytes(LAST_TEST_FILE))
    except (FileNotFoundError, ValueError):
        previous = {}
    entry = {"at": report.startedAt, "status": report.drill.status,
             "backupId": report.drill.backupId, "error": report.drill.error,
             "timings": report.drill.timings}
    data = {"lastRun": entry, "lastSuccess": entry if report.drill.status == "passed"
            else previous.get("lastSuccess")}
    store.write_bytes_atomic(LAST_TEST_FILE, json.dumps(data, indent=2).encode() + b"\n")


def last_restore_test(ctx: Context) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(LocalStorage(ctx.state_dir).read_bytes(LAST_TEST_FILE))
        return data
    except (FileNotFoundError, ValueError):
        return None
