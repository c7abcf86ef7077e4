"""StateDir: the one door to the local state directory (locks, audit log, restore records,
the last drill, runtime schedules), on real files in a private temp directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sbbackup.config import load_settings
from sbbackup.errors import LockedError, NotFoundError, StorageError, UsageError
from sbbackup.model import RestoreRecord, Status
from sbbackup.state import StateDir
from sbbackup.state.files import check_name, write_atomic


@pytest.fixture
def sd(tmp_path: Path) -> StateDir:
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    return StateDir(root)


def test_lock_names_its_holder_and_is_released(sd: StateDir) -> None:
    assert sd.lock_holder("job") is None
    with sd.lock("job", "a job"):
        assert sd.lock_holder("job") == os.getpid()
        busy = rf"a job is already running \(pid {os.getpid()}"
        with pytest.raises(LockedError, match=busy), sd.lock("job", "a job"):
            pass
    assert sd.lock_holder("job") is None  # the PID is cleared on release
    assert sd.lock_path("job") == sd.root / "locks" / "job.lock"
    assert (sd.root / "locks").stat().st_mode & 0o777 == 0o700


def test_lock_holder_ignores_a_symlink(sd: StateDir, tmp_path: Path) -> None:
    (sd.root / "locks").mkdir(mode=0o700)
    target = tmp_path / "pid"
    target.write_text(f"{os.getpid()}\n")
    sd.lock_path("job").symlink_to(target)
    assert sd.lock_holder("job") is None
    with pytest.raises(StorageError, match="is a symlink"), sd.lock("job", "a job"):
        pass


def test_audit_appends_one_json_line_each(sd: StateDir) -> None:
    sd.audit("create", "b1", "completed", size=3)
    sd.audit("delete", None, "failed")
    lines = (sd.root / "audit.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["operation"], e["id"], e["result"]) for e in entries] == [
        ("create", "b1", "completed"),
        ("delete", None, "failed"),
    ]
    assert entries[0]["size"] == 3
    assert (sd.root / "audit.log").stat().st_mode & 0o777 == 0o600


def test_restore_records_round_trip(sd: StateDir) -> None:
    rid = "restore_2026-12-03T10-00-00Z_abcdef"
    rec = RestoreRecord(restoreId=rid, backupId="b1", target="db", startedAt="2026-12-03T10:00Z")
    sd.write_restore(rec)
    rec.status = Status.COMPLETED
    rec.steps = {"restore": 12}
    sd.write_restore(rec)
    back = sd.read_restore(rid)
    assert back == rec
    path = sd.root / "restores" / f"{rid}.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_restore_record_errors(sd: StateDir) -> None:
    with pytest.raises(NotFoundError, match="restore restore_2026-12-03T10-00-00Z_000000 not"):
        sd.read_restore("restore_2026-12-03T10-00-00Z_000000")
    with pytest.raises(UsageError, match="invalid restore ID"):
        sd.read_restore("../../etc/passwd")
    bad = "restore_2026-12-03T10-00-00Z_111111"
    (sd.root / "restores").mkdir(mode=0o700, exist_ok=True)
    (sd.root / "restores" / f"{bad}.json").write_text('{"restoreId": 1}')
    with pytest.raises(StorageError, match=f"restore record {bad} is unreadable"):
        sd.read_restore(bad)


def test_last_drill_keeps_the_last_success(sd: StateDir) -> None:
    assert sd.last_drill() is None
    b1 = {"backupId": "b1", "status": "passed", "scheduleId": "daily"}
    sd.record_drill(b1, passed=True)
    sd.record_drill({"backupId": "b2", "status": "failed", "scheduleId": "daily"}, passed=False)
    b3 = {"backupId": "b3", "status": "passed", "scheduleId": "test"}
    sd.record_drill(b3, passed=True)
    sd.record_drill({"backupId": "b4", "status": "failed", "scheduleId": "test"}, passed=False)
    drill = sd.last_drill()
    assert drill == {
        "lastRun": {"backupId": "b4", "status": "failed", "scheduleId": "test"},
        "lastSuccess": b3,
        "lastSuccessBySchedule": {"daily": b1, "test": b3},  # a failed drill changes neither
    }


def test_last_drill_is_not_read_from_a_shared_directory(sd: StateDir) -> None:
    sd.record_drill({"backupId": "b1"}, passed=True)
    sd.root.chmod(0o777)
    try:
        assert sd.last_drill() is None
    finally:
        sd.root.chmod(0o700)


def test_schedules_file(sd: StateDir) -> None:
    assert sd.read_schedules() is None
    sd.write_schedules(b"[schedules]\n")
    assert sd.read_schedules() == b"[schedules]\n"
    assert sd.schedules_file == sd.root / "schedules.toml"
    sd.root.chmod(0o777)
    try:
        with pytest.raises(StorageError, match="writable by"):
            sd.read_schedules()
    finally:
        sd.root.chmod(0o700)


def test_write_atomic_refuses_a_planted_symlink_and_bad_names(sd: StateDir, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (sd.root / "x.json").symlink_to(victim)
    with pytest.raises(StorageError, match="is a symlink"):
        write_atomic(sd.root, "x.json", b"new")
    assert victim.read_text() == "keep"
    for name in ("", "a/b", ".hidden", "nul\0"):
        with pytest.raises(StorageError, match="invalid object name"):
            check_name(name)
    assert check_name("ok.json") == "ok.json"


def test_state_dir_setting() -> None:
    assert load_settings(env={}).state_dir == "~/.local/state/sbbackup"
    assert load_settings(env={"SBBACKUP_STATE_DIR": "/srv/state"}).state_dir == "/srv/state"
