"""The record of the last restore drill: ``last_test.json`` in the state directory.

Written by the restore drill (``ops.selftest.drill``), read by ``statistics``, ``health`` and
``metrics`` (``ops.monitoring``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import SbbackupError
from .files import check_private_dir, ensure_private_dir, read_bytes, write_atomic

LAST_TEST_FILE = "last_test.json"


def record_drill(state_dir: Path, entry: dict[str, Any], passed: bool) -> None:
    """Keep ``entry`` as the last drill and, if it ``passed``, as the last successful one and
    the last successful one of its ``scheduleId`` (``lastSuccessBySchedule``, for metrics)."""
    previous = last_restore_test(state_dir) or {}
    by = previous.get("lastSuccessBySchedule")
    by = dict(by) if isinstance(by, dict) else {}
    sid = entry.get("scheduleId")
    if passed and isinstance(sid, str):
        by[sid] = entry
    data = {
        "lastRun": entry,
        "lastSuccess": entry if passed else previous.get("lastSuccess"),
        "lastSuccessBySchedule": by,
    }
    ensure_private_dir(state_dir)
    write_atomic(state_dir, LAST_TEST_FILE, json.dumps(data, indent=2).encode() + b"\n")


def last_restore_test(state_dir: Path) -> dict[str, Any] | None:
    """``{"lastRun": {...}, "lastSuccess": {...} | None, "lastSuccessBySchedule": {ID: {...}}}``
    (files written by older versions lack the last key), or None if no drill ever ran."""
    try:
        if not check_private_dir(state_dir):  # a directory others can write is not trusted
            return None
        data = json.loads(read_bytes(state_dir / LAST_TEST_FILE))
    except (OSError, ValueError, SbbackupError):
        return None
    return data if isinstance(data, dict) else None
