"""The audit-log reader health uses (StateDir.created_by_schedule): a hand-edited or damaged
audit.log is best effort, never a traceback, and an overlong line is skipped, not held."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbbackup.state import StateDir
from sbbackup.state.audit import AUDIT_FILE, MAX_LINE


@pytest.fixture
def sd(tmp_path: Path) -> StateDir:
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    return StateDir(root)


def _create(backup_id: str, schedule: str) -> bytes:
    entry = {"operation": "create", "id": backup_id, "result": "completed", "scheduleId": schedule}
    return json.dumps(entry).encode() + b"\n"


def _write(sd: StateDir, *lines: bytes) -> None:
    path = sd.root / AUDIT_FILE
    path.write_bytes(b"".join(lines))
    path.chmod(0o600)


def test_lines_that_are_no_create_record_are_skipped(sd: StateDir) -> None:
    # Each of these once raised (AttributeError on a str or list, TypeError on a list ID).
    _write(
        sd,
        b'"create"\n',
        b'["create", "completed"]\n',
        b'{"operation": "create", "result": "completed", "id": ["x"], "scheduleId": "a"}\n',
        b'{"operation": "create", "result": "completed", "id": {"k": 1}, "scheduleId": "a"}\n',
        b'{"operation": "create", "result": "completed", "id": "b1", "scheduleId": 7}\n',
        _create("b2", "nightly"),
    )
    assert sd.created_by_schedule({"b1", "b2", "x"}) == {"b2": "nightly"}


def test_an_overlong_line_is_skipped_and_the_next_one_read(sd: StateDir) -> None:
    huge = b'{"operation": "create", "pad": "' + b"x" * (3 * MAX_LINE) + b'"}\n'
    unterminated = b'{"operation": "create", "id": "b9", "pad": "' + b"y" * (2 * MAX_LINE)
    _write(sd, _create("b1", "hourly"), huge, _create("b2", "nightly"), unterminated)
    assert sd.created_by_schedule({"b1", "b2", "b9"}) == {"b1": "hourly", "b2": "nightly"}


def test_a_line_of_exactly_the_limit_is_read(sd: StateDir) -> None:
    line = _create("b1", "nightly")
    padded = line[:-2] + b" " * (MAX_LINE - len(line)) + b"}\n"
    assert len(padded) == MAX_LINE
    _write(sd, padded)
    assert sd.created_by_schedule({"b1"}) == {"b1": "nightly"}
