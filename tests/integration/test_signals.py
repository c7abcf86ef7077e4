"""Signals and the codes they give: at start-up, after the commit, and to pg_dump.

Real processes and real signals. Where a moment must be hit exactly, the child's own code is
patched to send the signal at that moment (the only way to land it there every time).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SB
from helpers.cli import run_patched
from helpers.pgcluster import Cluster
from helpers.pgwait import dump_waiting, table_locked, wait_for


def caught(pid: int, signum: int) -> bool:
    """Has process ``pid`` installed a handler for ``signum`` (``SigCgt`` in /proc)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) & (1 << (signum - 1)))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "shop.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t (v) VALUES (?)", [(f"v{i}",) for i in range(1000)])
    con.commit()
    con.close()
    return {"DATABASE_URL": f"sqlite:///{db}"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1, 0.2])
def test_a_signal_during_start_up_gives_130_and_one_line(
    sb: SB, env: dict[str, str], signum: int, delay: float
) -> None:
    """From the moment sbbackup's handler is in place (the interpreter's own start-up is
    before any of our code), a signal during the imports gives 130 and one line, or, if the
    command got done first, its own exit 0: never a traceback, never a bare -15."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "list", "--json"],
        env={**sb.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not caught(proc.pid, signal.SIGTERM) and proc.poll() is None:
        assert time.monotonic() < deadline, "sbbackup never installed its SIGTERM handler"
        time.sleep(0.001)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode in (0, 130), (proc.returncode, err)
    if proc.returncode == 130:
        lines = err.strip().splitlines()
        assert lines[0] == "sbbackup: error: interrupted", err
        assert json.loads(lines[-1])["error"]["code"] == 130, err
        assert len(lines) == 2, err  # the line, and the JSON error under --json
    else:
        json.loads(out)


# Each patch sends SIGTERM to the create itself at one moment of the commit.
AT_FINISH = """
import sbbackup.pipeline as p
_finish = p.BackupWriter.finish
def finish(self):
    os.kill(os.getpid(), signal.SIGTERM)
    return _finish(self)
p.BackupWriter.finish = finish
"""
AFTER_SAVE = """
import sbbackup.catalog as c
_save = c.Catalog.save
def save(self, record):
    _save(self, record)
    if record.status == "completed":
        os.kill(os.getpid(), signal.SIGTERM)
c.Catalog.save = save
"""
BEFORE_COMMIT = """
import sbbackup.engines.sqlite as e
_dump = e.SQLiteEngine.dump
def dump(self, *a, **k):
    result = _dump(self, *a, **k)
    os.kill(os.getpid(), signal.SIGTERM)
    return result
e.SQLiteEngine.dump = dump
"""


@pytest.mark.parametrize("patch", [AT_FINISH, AFTER_SAVE], ids=["at-finish", "after-save"])
def test_a_signal_inside_the_commit_keeps_the_backup_and_exits_130(
    sb: SB, env: dict[str, str], patch: str
) -> None:
    """The data file's commit and the manifest's are one step: a signal that arrives inside
    it waits for the step to end. The backup is kept whole (and verifies), the audit log says
    completed, and the exit is 130 ("interrupted": the signal was not ignored)."""
    res = run_patched({**sb.env, **env}, patch, "create")
    assert res.code == 130, (res.code, res.err)
    assert res.err.strip() == "sbbackup: error: interrupted"
    records = sb.ok("list", "--json", env=env).json()
    assert [r["status"] for r in records] == ["completed"]
    sb.ok("verify", "--deep", records[0]["id"], env=env)
    audit = [json.loads(x) for x in (sb.backup_path / "audit.log").read_text().splitlines()]
    assert [(a["operation"], a["result"]) for a in audit] == [("create", "completed")]


def test_a_signal_before_the_commit_removes_everything_and_records_the_attempt(
    sb: SB, env: dict[str, str]
) -> None:
    res = run_patched({**sb.env, **env}, BEFORE_COMMIT, "create")
    assert res.code == 130, (res.code, res.err)
    records = sb.ok("list", "--json", env=env).json()
    assert [(r["status"], r["error"]) for r in records] == [("failed", "interrupted")]
    leftovers = [p.name for p in sb.backup_path.iterdir() if p.is_file()]
    assert sorted(leftovers) == sorted(["audit.log", f"{records[0]['id']}.json"])


def test_a_killed_pg_dump_names_its_signal(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    with table_locked(pg, fresh_db, "t"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sbbackup", "create"],
            env={**sb.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: dump_waiting(pg, fresh_db), "pg_dump to block on the table lock")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        dumps = [int(c) for c in children if "pg_dump" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(dumps) == 1, children
        os.kill(dumps[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (proc.returncode, err)
    assert err.strip() == "sbbackup: error: pg_dump was killed by SIGKILL", err
    records = sb.ok("list", "--json", env=env).json()
    assert [(r["status"], r["error"]) for r in records] == [
        ("failed", "pg_dump was killed by SIGKILL")
    ]


def test_missing_parents_are_made_0700_under_umask_000(
    sb: SB, env: dict[str, str], tmp_path: Path
) -> None:
    deep = tmp_path / "a" / "b" / "backups"
    code = "import os, sys, sbbackup.cli\nos.umask(0)\nsbbackup.cli.main(sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, "create"],
        env={**sb.env, **env, "DB_BACKUP_PATH": str(deep)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for d in (tmp_path / "a", tmp_path / "a" / "b", deep, deep / "locks"):
        assert d.stat().st_mode & 0o777 == 0o700, d
    for f in deep.iterdir():
        if f.is_file():
            assert f.stat().st_mode & 0o777 == 0o600, f
