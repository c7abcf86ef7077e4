"""The record of the last restore drill: ``last_test.json`` in the state directory.

Written by the restore drill (``ops.selftest.drill``), read by ``statistics``, ``health`` and
``metrics`` (``ops.monitoring``): state beside the catalog, below the use cases that share it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import SbbackupError
from .storage.local import LocalStorage

LAST_TEST_FILE = "last_test.json"


def record_drill(state_dir: Path, entry: dict[str, Any], passed: bool) -> None:
    """Keep ``entry`` as the last drill and, if it ``passed``, as the last successful one."""
    previous = last_restore_test(state_dir) or {}
    data = {"lastRun": entry, "lastSuccess": entry if passed else previous.get("lastSuccess")}
    store = LocalStorage(state_dir)
    store.write_bytes_atomic(LAST_TEST_FILE, json.dumps(data, indent=2).encode() + b"\n")


def last_restore_test(state_dir: Path) -> dict[str, Any] | None:
    """``{"lastRun": {...}, "lastSuccess": {...} | None}``, or None if no drill ever ran."""
    try:
        data = json.loads(LocalStorage(state_dir).read_bytes(LAST_TEST_FILE))
    except (FileNotFoundError, ValueError, SbbackupError):
        return None
    return data if isinstance(data, dict) else None
