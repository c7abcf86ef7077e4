"""`sbbackup test`, part one: the named preflight checks, in order. Each returns a status and
a reason, or raises an ``SbbackupError`` whose exit code becomes the check's code."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ...errors import (
    ConfigError,
    DatabaseError,
    ExitCode,
    SbbackupError,
    StorageError,
    WrongKeyError,
)
from ...model import Status
from ...policy.sources import load_schedules
from ...results import Check, CheckStatus
from ...state import files as state
from ...storage.local import LocalStorage
from ..context import Context
from ..monitoring import get_statistics
from ..schedules import schedules

Outcome = tuple[str, str]  # (a CheckStatus value, the reason)


def _run_check(name: str, fn: Callable[[], Outcome]) -> Check:
    try:
        status, reason = fn()
        return Check(name, CheckStatus(status), reason)
    except SbbackupError as exc:
        return Check(name, CheckStatus.FAIL, exc.message, int(exc.exit_code))
    except OSError as exc:
        return Check(name, CheckStatus.FAIL, str(exc), int(ExitCode.STORAGE))


def preflight(ctx: Context, now: datetime) -> list[Check]:
    """The named checks, in order. A bad configuration stops here: nothing else is meaningful."""
    checks = [_run_check("config", lambda: _check_config(ctx))]
    if checks[0].status == CheckStatus.FAIL:
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


def _check_config(ctx: Context) -> Outcome:
    ctx.engine  # noqa: B018 - building them validates the database URL and backup path
    ctx.storage  # noqa: B018
    source = ctx.settings.config_file or "environment and defaults"
    return "pass", f"configuration is valid ({source})"


def _check_tools(ctx: Context) -> Outcome:
    engine = ctx.engine
    checked = engine.check()  # DatabaseError when a tool is missing or older than the server
    if not checked.tools:
        return "pass", f"the {engine.name} engine needs no client tools"
    found = ", ".join(f"{name} {version}" for name, version in checked.tools.items())
    if checked.server_major is None:
        return "warn", f"{found} (server unreachable: versions not compared)"
    return "pass", f"{found}, server {checked.server_major}"


def _check_database(ctx: Context) -> Outcome:
    checked = ctx.engine.check()
    if checked.unreachable is not None:
        raise DatabaseError(checked.unreachable)
    return "pass", f"{checked.source} reachable, server {checked.server_version}"


def _check_path(ctx: Context) -> Outcome:
    storage = ctx.storage
    if not isinstance(storage, LocalStorage):
        inner: Any = getattr(storage, "inner", storage)
        if hasattr(inner, "preflight"):  # S3: bucket, credentials, a probe write and delete
            report = inner.preflight(None).split(": ", 1)[-1].split("; ", 1)[0]
            names = storage.list_names()
            return "pass", f"{inner.where()}: {report} ({len(names)} objects)"
        names = storage.list_names()
        return "pass", f"{storage.url} reachable, writable ({len(names)} objects)"
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
    last = ctx.catalog.list(status=Status.COMPLETED, limit=1)
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
    inner: Any = getattr(ctx.storage, "inner", ctx.storage)
    if hasattr(inner, "part_plan"):  # S3: no free space to measure; the part plan instead
        try:
            need, basis = _estimate(ctx)
        except DatabaseError:
            return "pass", f"object storage; {inner.part_plan(None)}"
        return "pass", f"object storage; next backup about {_size(need)} ({basis}): " + str(
            inner.part_plan(need)
        )
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
    try:
        scheds = load_schedules(ctx.settings, ctx.state).schedules.values()
    except SbbackupError:
        return []  # the schedules check reports why
    return [s.id for s in scheds if s.enabled and s.encryption]


def _encryption_wanted(ctx: Context) -> bool:
    return ctx.settings.encryption or bool(_encrypted_schedules(ctx))


def _plan(ctx: Context) -> Any:
    from ...encryption import plan_encryption

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
    from ...encryption import identities

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
    sset = schedules(ctx)  # ConfigError (exit 2) when a schedule does not parse
    overdue = get_statistics(ctx, now).overdueSchedules
    if overdue and ctx.settings.enabled:
        names = ", ".join(o.scheduleId for o in overdue)
        return "warn", f"{len(sset.schedules)} schedules parse; overdue: {names}"
    return "pass", f"{len(sset.schedules)} schedules parse, none overdue"


def _check_locks(ctx: Context) -> Outcome:
    """The lock directory is usable, judged without creating it or anything in it (the
    preflight writes nothing): an existing one must be private and writable; a missing one
    is made by the first run, if its parent is writable."""
    directory = ctx.state.lock_path("preflight-probe").parent
    if not directory.exists():
        parent = next((p for p in directory.parents if p.exists()), directory)
        if not _writable(parent):
            raise StorageError(f"{directory} does not exist and {parent} is not writable")
        return "pass", f"{directory} does not exist yet; the first run creates it (mode 700)"
    if not state.check_private_dir(directory):  # a shared or foreign directory: exit 4
        raise StorageError(f"{directory} is not a private directory")
    if not _writable(directory):
        raise StorageError(f"{directory} is not writable")
    return "pass", f"{directory} is usable"


def _writable(path: Path) -> bool:
    """Writable by this process, on a file system mounted read-write."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
    return not read_only and os.access(path, os.W_OK)
