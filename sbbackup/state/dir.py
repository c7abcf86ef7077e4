"""``StateDir``: the one door to the local state directory.

What sbbackup keeps beside the catalog lives here, each in its own file or directory:
``audit.log``, ``locks/``, ``restores/``, ``last_test.json``, ``schedules.toml`` and
``warned.json``. For a
local backup directory the state directory is that directory; for a backup path that is not
a local directory it is ``state.dir`` (``SBBACKUP_STATE_DIR``). Every file is handled by the
rules of ``sbbackup.state.files``: private directories, no symlink followed, atomic writes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import SbbackupError
from ..model import RestoreRecord
from . import audit, drills, locks, restores
from .files import check_private_dir, ensure_private_dir, read_bytes, storage_error, write_atomic

SCHEDULES_FILE = "schedules.toml"
WARNED_FILE = "warned.json"  # when each once-a-day warning was last given


class StateDir:
    """The state directory ``root`` (resolved, see ``files.resolve_dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r})"

    # --- locks ---

    @contextlib.contextmanager
    def lock(self, name: str, what: str, wait: float = 0, remove: bool = False) -> Iterator[None]:
        """Hold ``locks/NAME.lock`` or raise LockedError (exit 11) naming ``what`` and the
        holder's PID; with ``wait``, retry for that many seconds first; with ``remove``,
        unlink the lock file when done (see ``locks.hold``)."""
        with locks.hold(self.root, name, what, wait, remove):
            yield

    def lock_names(self, prefix: str) -> list[str]:
        """The names of the lock files in ``locks/`` that start with ``prefix`` (a writer that
        died leaves its lock file: only a clean release removes it)."""
        try:
            entries = os.listdir(self.root / locks.LOCK_DIR)
        except OSError:
            return []
        suffix = ".lock"
        return [e[: -len(suffix)] for e in entries if e.startswith(prefix) and e.endswith(suffix)]

    def lock_free(self, name: str) -> bool:
        """Is lock ``name`` free (its holder gone)? Creates nothing."""
        return locks.is_free(self.root, name)

    def lock_path(self, name: str) -> Path:
        return self.root / locks.LOCK_DIR / f"{name}.lock"

    def lock_holder(self, name: str) -> int | None:
        """The PID written in lock ``name`` (as the holder wrote it; it may have died since:
        only the flock says whether it is held), or None."""
        try:
            text = read_bytes(self.lock_path(name)).decode(errors="replace").strip()
        except (OSError, SbbackupError):  # missing, or a symlink in its place: nobody we know
            return None
        return int(text) if text.isdigit() else None

    # --- audit log ---

    def audit(self, operation: str, target_id: str | None, result: str, **extra: Any) -> None:
        """Append one line to ``audit.log`` (StorageError, exit 4, if it cannot)."""
        audit.append_audit(self.root, operation, target_id, result, **extra)

    def created_by_schedule(self, backup_ids: set[str]) -> dict[str, str]:
        """Which schedule created each of ``backup_ids``, as far as ``audit.log`` says."""
        return audit.created_by_schedule(self.root, backup_ids)

    # --- restore records ---

    def write_restore(self, rec: RestoreRecord) -> None:
        restores.write_restore(self.root, rec)

    def read_restore(self, restore_id: str) -> RestoreRecord:
        return restores.read_restore(self.root, restore_id)

    # --- the last restore drill ---

    def record_drill(self, entry: dict[str, Any], passed: bool) -> None:
        drills.record_drill(self.root, entry, passed)

    def last_drill(self) -> dict[str, Any] | None:
        return drills.last_restore_test(self.root)

    # --- runtime schedules ---

    @property
    def schedules_file(self) -> Path:
        return self.root / SCHEDULES_FILE

    def read_schedules(self) -> bytes | None:
        """``schedules.toml``'s bytes, None if there is none. Nothing is trusted from a
        directory others could write (StorageError, exit 4)."""
        if not check_private_dir(self.root):
            return None
        try:
            return read_bytes(self.schedules_file)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, f"cannot read {self.schedules_file}") from None

    def write_schedules(self, data: bytes) -> None:
        ensure_private_dir(self.root)
        write_atomic(self.root, SCHEDULES_FILE, data)

    # --- once-a-day warnings ---

    def warned(self) -> dict[str, str]:
        """When each once-a-day warning was last given: key -> a UTC day (``2026-03-02``).
        Missing, unreadable or untrusted: ``{}`` (the warning is given again, no harm)."""
        try:
            if not check_private_dir(self.root):
                return {}
            data = json.loads(read_bytes(self.root / WARNED_FILE))
        except (OSError, ValueError, SbbackupError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, str)}

    def set_warned(self, key: str, day: str) -> None:
        """Remember that warning ``key`` was given on ``day`` (StorageError if it cannot)."""
        data = {**self.warned(), key: day}
        ensure_private_dir(self.root)
        write_atomic(self.root, WARNED_FILE, json.dumps(data, sort_keys=True).encode() + b"\n")
