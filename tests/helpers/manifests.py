"""The one manifest editor for tests: change a stored backup the way a bug, a bad disk or a
careless operator would, with or without keeping its manifest consistent."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sbbackup.model import iso, new_backup_id


def manifest_path(backup_dir: Path, backup_id: str) -> Path:
    return backup_dir / f"{backup_id}.json"


def read_manifest(backup_dir: Path, backup_id: str) -> dict[str, Any]:
    doc = json.loads(manifest_path(backup_dir, backup_id).read_text())
    assert isinstance(doc, dict)
    return doc


def edit_manifest(backup_dir: Path, backup_id: str, **changes: Any) -> dict[str, Any]:
    """Overwrite fields of a manifest in place; returns the new document."""
    doc = read_manifest(backup_dir, backup_id)
    doc.update(changes)
    manifest_path(backup_dir, backup_id).write_text(json.dumps(doc))
    return doc


def replace_data(
    backup_dir: Path, backup_id: str, data: bytes, *, recompute: bool = True, **changes: Any
) -> dict[str, Any]:
    """Store ``data`` as the backup's data file. With ``recompute`` the manifest's ``checksum``
    and ``size`` are made to match it (a file rewritten together with its manifest), so only
    the content digest and the formats' own checks can object."""
    doc = read_manifest(backup_dir, backup_id)
    (backup_dir / doc["filename"]).write_bytes(data)
    if recompute:
        changes = {"checksum": hashlib.sha256(data).hexdigest(), "size": len(data), **changes}
    return edit_manifest(backup_dir, backup_id, **changes) if changes else doc


def backdate(backup_dir: Path, backup_id: str, when: datetime) -> str:
    """Move a backup to ``when``, as if it had been taken then (data file and manifest renamed
    to the new ID, ``createdAt`` rewritten); returns the new ID."""
    new_id = new_backup_id(when)
    doc = read_manifest(backup_dir, backup_id)
    filename = str(doc["filename"])
    new_name = new_id + filename[len(backup_id) :]
    (backup_dir / filename).rename(backup_dir / new_name)
    doc.update(id=new_id, filename=new_name, createdAt=iso(when))
    manifest_path(backup_dir, new_id).write_text(json.dumps(doc))
    manifest_path(backup_dir, backup_id).unlink()
    return new_id
