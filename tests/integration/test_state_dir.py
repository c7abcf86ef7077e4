"""The backup directory is handled like ssh handles ``~/.ssh`` (sbbackup/state.py).

No state file is ever followed if it is a symlink (locks, audit.log, restores/ and its records,
manifests and their temp files, schedules.toml and its temp file, last_test.json), and a
directory someone else could write is refused, never chmodded. Every command is the real CLI
on a tiny SQLite database. These tests need root: they chown to ``nobody``, as an attacker's
files would be.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SB, Result
from helpers.cli import run_patched

NOBODY = pwd.getpwnam("nobody").pw_uid
PRECIOUS = b"root's precious file: must not be truncated, appended to or chmodded\n"


@pytest.fixture(autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/integration/test_state_dir.py must run as root (it chowns to nobody)")


@dataclass
class Victim:
    """A file outside the backup directory that a planted symlink points at."""

    path: Path

    def __post_init__(self) -> None:
        self.path.write_bytes(PRECIOUS)
        os.chmod(self.path, 0o640)

    def assert_intact(self) -> None:
        st = os.lstat(self.path)
        assert stat.S_ISREG(st.st_mode)
        assert self.path.read_bytes() == PRECIOUS
        assert st.st_size == len(PRECIOUS)
        assert stat.S_IMODE(st.st_mode) == 0o640


@pytest.fixture
def victim(tmp_path: Path) -> Victim:
    return Victim(tmp_path / "victim.txt")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "shop.db"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');"
    )
    con.close()
    return {"DATABASE_URL": f"sqlite:///{db}"}


@pytest.fixture
def ready(sb: SB, env: dict[str, str]) -> SB:
    """A backup directory with one completed backup (and so audit.log) in it."""
    sb.ok("create", env=env)
    return sb


def plant(link: Path, target: Path) -> Path:
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)  # locks/ exists once a backup was made
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    return link


def assert_refused_symlink(res: Result, link: Path) -> None:
    assert res.code == 4, (res.code, res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert f"refusing to use {link}: it is a symlink" in lines[0]


FIXED_TEMP = "sbbackup.state.files.temp_name = lambda directory, name: directory / '.planted.tmp'"


# --- symlinks in place of state files -------------------------------------------------------


def test_schedule_lock_symlink(ready: SB, env: dict[str, str], victim: Victim) -> None:
    before = len(ready.ok("list", "--json", env=env).json())  # type: ignore[arg-type]
    (ready.backup_path / "locks").mkdir(mode=0o700, exist_ok=True)
    link = plant(ready.backup_path / "locks" / "schedule-daily.lock", victim.path)
    assert_refused_symlink(ready("run-schedule", "daily", env=env), link)
    victim.assert_intact()
    assert len(ready.ok("list", "--json", env=env).json()) == before  # type: ignore[arg-type]


def test_drill_lock_symlink(ready: SB, env: dict[str, str], victim: Victim) -> None:
    (ready.backup_path / "locks").mkdir(mode=0o700, exist_ok=True)
    link = plant(ready.backup_path / "locks" / "drill.lock", victim.path)
    res = ready("test", "--latest", "--json", env=env)
    assert res.code == 4, res.err
    # `test` prints its report on stdout; the drill's error names the symlink.
    drill = json.loads(res.out)["drill"]
    assert drill["status"] == "failed"
    assert drill["error"].startswith(f"refusing to use {link}: it is a symlink")
    victim.assert_intact()


def test_locks_directory_symlink(ready: SB, env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = plant(ready.backup_path / "locks", elsewhere)
    res = ready("run-schedule", "daily", env=env)
    assert res.code == 4 and len(res.err.strip().splitlines()) == 1, res.err
    assert f"refusing to use {link}: it is a symlink" in res.err
    assert list(elsewhere.iterdir()) == []


def test_audit_log_symlink(sb: SB, env: dict[str, str], victim: Victim) -> None:
    sb.backup_path.mkdir(mode=0o700)
    link = plant(sb.backup_path / "audit.log", victim.path)
    assert_refused_symlink(sb("create", env=env), link)
    victim.assert_intact()
    assert link.is_symlink()


def test_restores_directory_symlink(
    ready: SB, env: dict[str, str], tmp_path: Path, victim: Victim
) -> None:
    backup_id = ready.ok("list", "--json", env=env).json()[0]["id"]  # type: ignore[index]
    link = plant(ready.backup_path / "restores", victim.path.parent)
    target = tmp_path / "restored.db"
    res = ready("restore", backup_id, "--target-url", f"sqlite:///{target}", env=env)
    assert res.code == 4 and len(res.err.strip().splitlines()) == 1, res.err
    assert f"refusing to use {link}: it is a symlink" in res.err
    assert not target.exists()  # refused before anything was restored
    assert not list(tmp_path.glob("restore_*.json"))
    victim.assert_intact()


def test_restore_record_symlink(
    ready: SB, env: dict[str, str], tmp_path: Path, victim: Victim
) -> None:
    backup_id = ready.ok("list", "--json", env=env).json()[0]["id"]  # type: ignore[index]
    restore_id = "restore_2030-01-01T00-00-00Z_abcdef"
    (ready.backup_path / "restores").mkdir(mode=0o700)
    link = plant(ready.backup_path / "restores" / f"{restore_id}.json", victim.path)
    target = tmp_path / "restored.db"
    patch = f"sbbackup.ops.restore.new_restore_id = lambda now=None: {restore_id!r}"
    res = run_patched(
        {**ready.env, **env}, patch, "restore", backup_id, "--target-url", f"sqlite:///{target}"
    )
    assert_refused_symlink(res, link)
    assert not target.exists()
    victim.assert_intact()


def test_manifest_temp_file_symlink(ready: SB, env: dict[str, str], victim: Victim) -> None:
    link = plant(ready.backup_path / ".planted.tmp", victim.path)
    assert_refused_symlink(run_patched({**ready.env, **env}, FIXED_TEMP, "create"), link)
    victim.assert_intact()
    assert link.is_symlink()  # not replaced either


def test_manifest_and_data_file_symlinks_are_not_read(
    ready: SB, env: dict[str, str], tmp_path: Path
) -> None:
    record = ready.ok("list", "--json", env=env).json()[0]  # type: ignore[index]
    manifest = ready.backup_path / f"{record['id']}.json"
    copy = tmp_path / "manifest-copy.json"
    copy.write_bytes(manifest.read_bytes())
    plant(manifest, copy)
    assert_refused_symlink(ready("show", record["id"], env=env), manifest)
    listed = ready.ok("list", "--json", env=env).json()[0]  # type: ignore[index]
    assert listed["status"] == "corrupt" and "is a symlink" in listed["error"]


def test_schedules_toml_symlink(sb: SB, env: dict[str, str], victim: Victim) -> None:
    sb.backup_path.mkdir(mode=0o700)
    link = plant(sb.backup_path / "schedules.toml", victim.path)
    add = ("schedules", "add", "hourly", "--cron", "0 * * * *", "--retention-days", "2")
    assert_refused_symlink(sb(*add, env=env), link)
    assert_refused_symlink(sb("schedules", "list", env=env), link)
    victim.assert_intact()


def test_schedules_toml_temp_file_symlink(sb: SB, env: dict[str, str], victim: Victim) -> None:
    sb.backup_path.mkdir(mode=0o700)
    link = plant(sb.backup_path / ".planted.tmp", victim.path)
    add = ("schedules", "add", "hourly", "--cron", "0 * * * *", "--retention-days", "2")
    assert_refused_symlink(run_patched({**sb.env, **env}, FIXED_TEMP, *add), link)
    victim.assert_intact()
    assert not (sb.backup_path / "schedules.toml").exists()


def test_last_test_json_symlink(ready: SB, env: dict[str, str], victim: Victim) -> None:
    link = plant(ready.backup_path / "last_test.json", victim.path)
    res = ready("test", "--latest", "--json", env=env)
    assert res.code == 4, res.err
    drill = json.loads(res.out)["drill"]
    assert drill["error"].startswith(f"refusing to use {link}: it is a symlink")
    victim.assert_intact()


def test_old_predictable_temp_name_is_not_used(tmp_path: Path, victim: Victim) -> None:
    """The temp name was ``.NAME.PID.tmp``, opened O_TRUNC: a symlink planted there truncated
    its target. Now the name is random and the file O_EXCL."""
    from sbbackup.storage.local import LocalStorage

    root = tmp_path / "store"
    store = LocalStorage(root)
    store.ensure()
    link = plant(root / f".x.json.{os.getpid()}.tmp", victim.path)
    store.write_bytes_atomic("x.json", b"{}\n")
    store.write_bytes_atomic("x.json", b"{}\n")
    assert (root / "x.json").read_bytes() == b"{}\n"
    assert stat.S_IMODE((root / "x.json").stat().st_mode) == 0o600
    assert link.is_symlink()
    victim.assert_intact()
    assert sorted(p.name for p in root.iterdir()) == [link.name, "x.json"]


# --- directories: ssh's StrictModes --------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def assert_refused_dir(res: Result, *parts: str) -> None:
    assert res.code == 4, (res.code, res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    for part in parts:
        assert part in lines[0], lines[0]


def test_backup_dir_owned_by_another_user(sb: SB, env: dict[str, str]) -> None:
    sb.backup_path.mkdir(mode=0o700)
    os.chown(sb.backup_path, NOBODY, -1)
    res = sb("create", env=env)
    assert_refused_dir(
        res, f"refusing to use {sb.backup_path}: it is owned by nobody (uid {NOBODY})"
    )
    assert _mode(sb.backup_path) == 0o700 and sb.backup_path.stat().st_uid == NOBODY
    assert list(sb.backup_path.iterdir()) == []
    assert_refused_dir(sb("list", env=env), "owned by nobody")  # reading is using it too


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (0o770, "it is writable by group (mode 770); chmod 700 it"),
        (0o1777, "it is writable by group and others (mode 1777); chmod 700 it"),
        (0o702, "it is writable by others (mode 702); chmod 700 it"),
    ],
)
def test_backup_dir_writable_by_others(sb: SB, env: dict[str, str], mode: int, reason: str) -> None:
    sb.backup_path.mkdir()
    os.chmod(sb.backup_path, mode)
    assert_refused_dir(sb("create", env=env), f"refusing to use {sb.backup_path}: {reason}")
    assert _mode(sb.backup_path) == mode  # refused, never "fixed"
    assert list(sb.backup_path.iterdir()) == []


def test_state_subdirectory_writable_by_group(ready: SB, env: dict[str, str]) -> None:
    locks = ready.backup_path / "locks"
    locks.mkdir(exist_ok=True)
    os.chmod(locks, 0o770)
    res = ready("run-schedule", "daily", env=env)
    assert_refused_dir(res, f"refusing to use {locks}: it is writable by group (mode 770)")
    assert _mode(locks) == 0o770


def test_parent_owned_by_another_user(tmp_path: Path, sb: SB, env: dict[str, str]) -> None:
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o755)
    os.chown(parent, NOBODY, -1)
    backups = parent / "backups"
    res = sb("create", env={**env, "DB_BACKUP_PATH": str(backups)})
    assert_refused_dir(
        res, f"refusing to use {backups}: its parent {parent} is owned by nobody (uid {NOBODY})"
    )
    assert not backups.exists()


def test_parent_writable_without_sticky_bit(tmp_path: Path, sb: SB, env: dict[str, str]) -> None:
    parent = tmp_path / "loose"
    parent.mkdir()
    os.chmod(parent, 0o777)
    backups = parent / "backups"
    res = sb("create", env={**env, "DB_BACKUP_PATH": str(backups)})
    assert_refused_dir(res, f"its parent {parent} is writable by group and others without")
    assert not backups.exists() and _mode(parent) == 0o777
    os.chmod(parent, 0o1777)  # sticky, like /tmp: only an entry's owner may rename it
    sb.ok("create", env={**env, "DB_BACKUP_PATH": str(backups)})
    assert _mode(backups) == 0o700


def test_existing_0755_dir_is_accepted_as_is(sb: SB, env: dict[str, str]) -> None:
    sb.backup_path.mkdir()
    os.chmod(sb.backup_path, 0o755)
    sb.ok("create", env=env)
    sb.ok("run-schedule", "daily", env=env)
    assert _mode(sb.backup_path) == 0o755
    files = [p for p in sb.backup_path.iterdir() if p.is_file()]
    assert files and all(_mode(p) == 0o600 for p in files)
    assert _mode(sb.backup_path / "locks") == 0o700


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_000")
def test_fresh_dirs_are_0700_under_umask_000(tmp_path: Path, sb: SB, env: dict[str, str]) -> None:
    backups = tmp_path / "new" / "deeper" / "backups"
    env = {**env, "DB_BACKUP_PATH": str(backups)}
    sb.ok("run-schedule", "daily", env=env)
    for directory in (tmp_path / "new", tmp_path / "new" / "deeper", backups, backups / "locks"):
        assert _mode(directory) == 0o700, directory
    files = [p for p in backups.iterdir() if p.is_file()]
    assert (backups / "audit.log") in files
    assert all(_mode(p) == 0o600 for p in files), [(p.name, oct(_mode(p))) for p in files]


def test_symlinked_backup_dir(tmp_path: Path, sb: SB, env: dict[str, str]) -> None:
    """An operator's symlink to the real directory is followed once; one that someone else
    owns (and so could repoint) is refused."""
    real = tmp_path / "disk" / "backups"
    real.parent.mkdir()
    link = plant(tmp_path / "backups-link", real)
    sb.ok("create", env={**env, "DB_BACKUP_PATH": str(link)})
    assert _mode(real) == 0o700 and (real / "audit.log").is_file()
    os.lchown(link, NOBODY, -1)
    res = sb("list", env={**env, "DB_BACKUP_PATH": str(link)})
    assert_refused_dir(res, f"{link} is a symlink owned by nobody (uid {NOBODY})")
