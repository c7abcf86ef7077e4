"""Append-only audit log: one JSON line per mutating operation.

``audit.log`` is a state file (``sbbackup.state.files``): opened ``O_NOFOLLOW``, created 0600."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import SbbackupError
from ..model import iso
from .files import check_private_dir, ensure_private_dir, open_append, open_read, storage_error

AUDIT_FILE = "audit.log"


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())


def append_audit(
    state_dir: Path, operation: str, target_id: str | None, result: str, **extra: Any
) -> None:
    """One line, one ``write`` on an O_APPEND fd: concurrent writers never interleave."""
    ensure_private_dir(state_dir)
    entry = {
        "time": iso(datetime.now(UTC)),
        "operation": operation,
        "id": target_id,
        "result": result,
        "user": current_user(),
        **extra,
    }
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    path = state_dir / AUDIT_FILE
    try:
        fd = open_append(path)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise storage_error(exc, f"cannot append to {path}") from None


# An audit line is a few hundred bytes (a reason quoting a server's message at most a few
# thousand): a longer one is not ours, and is skipped rather than read into memory whole.
MAX_LINE = 64 * 1024


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """The lines of ``fh``, each read at most ``MAX_LINE`` bytes at a time; an overlong line is
    skipped (to its newline) instead of being held whole."""
    while line := fh.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE:
            yield line
            continue
        while line and not line.endswith(b"\n"):  # the rest of the overlong line
            line = fh.readline(MAX_LINE + 1)


def created_by_schedule(state_dir: Path, wanted: set[str]) -> dict[str, str]:
    """For the backup IDs in ``wanted``: the schedule whose ``create`` the log recorded as
    completed (health attributes an orphan data file or an unreadable manifest this way: the
    manifest that said so is gone). Best effort: a log that is missing, unreadable or in a
    directory others can write tells nothing, and a line that is not a create record of this
    shape (a bare string, a list, an ID that is not a string) is skipped."""
    found: dict[str, str] = {}
    try:
        if not wanted or not check_private_dir(state_dir):
            return found
        with open_read(state_dir / AUDIT_FILE) as fh:
            for line in _lines(fh):
                if b'"create"' not in line:  # cheap: most lines are not creates
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict):
                    continue
                backup_id, sid = entry.get("id"), entry.get("scheduleId")
                if (
                    entry.get("operation") == "create"
                    and entry.get("result") == "completed"
                    and isinstance(backup_id, str)
                    and backup_id in wanted
                    and isinstance(sid, str)
                ):
                    found[backup_id] = sid
    except (OSError, SbbackupError):
        return found
    return found
