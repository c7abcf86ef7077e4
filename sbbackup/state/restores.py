"""Restore records: ``restores/RESTORE_ID.json`` in the state directory, written when a
restore starts and again when it ends, read by ``GET /api/backup/restores/ID``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import NotFoundError, StorageError, UsageError
from ..model import RestoreRecord
from .files import ensure_private_dir, read_bytes, write_atomic

RESTORE_DIR = "restores"
RESTORE_ID_RE = r"restore_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z_[0-9a-f]{6}"


def _directory(state_dir: Path) -> Path:
    directory = state_dir / RESTORE_DIR
    ensure_private_dir(directory, under=state_dir)
    return directory


def write_restore(state_dir: Path, rec: RestoreRecord) -> None:
    data = json.dumps(rec.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    write_atomic(_directory(state_dir), rec.restoreId + ".json", data)


def read_restore(state_dir: Path, restore_id: str) -> RestoreRecord:
    """The record, NotFoundError (exit 5) if there is none, UsageError for a malformed ID."""
    if not isinstance(restore_id, str) or not re.fullmatch(RESTORE_ID_RE, restore_id):
        raise UsageError(f"invalid restore ID {str(restore_id)[:80]!r}")
    try:
        raw = read_bytes(_directory(state_dir) / (restore_id + ".json"))
        return RestoreRecord.from_json(json.loads(raw))
    except FileNotFoundError:
        raise NotFoundError(f"restore {restore_id} not found") from None
    except OSError as exc:
        raise StorageError(f"restore record {restore_id} is unreadable: {exc}") from None
    except ValueError as exc:
        raise StorageError(f"restore record {restore_id} is unreadable: {exc}") from None
