"""Progress on a terminal: ``verify`` (and ``--deep``), ``restore`` and the drill draw a bar
per backup on stderr when it is a TTY (bytes of the stored size, rate, elapsed, time left),
and print nothing there when it is not (cron mail, pipes)."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path


def backups(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    con.executemany("INSERT INTO t (b) VALUES (?)", ((os.urandom(300),) for _ in range(20_000)))
    con.commit()
    con.close()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "DB_BACKUP_PATH": str(tmp_path / "b")}
    env.pop("SBBACKUP_STATE_DIR", None)
    made = subprocess.run(
        [sys.executable, "-m", "sbbackup", "create"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    return env


def run_with_tty_stderr(env: dict[str, str], *args: str) -> tuple[int, str, bytes]:
    """stdout piped, stderr a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", *args],
        env={**env, "COLUMNS": "120", "TERM": "xterm"},
        stdout=subprocess.PIPE,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            block = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not block:
            break
        seen += block
    out = proc.stdout.read().decode() if proc.stdout else ""
    os.close(leader)
    return proc.wait(), out, seen


def test_verify_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    env = backups(tmp_path)
    for args in (("verify", "--all"), ("verify", "--deep", "--all")):
        code, out, tty = run_with_tty_stderr(env, *args)
        assert code == 0, tty.decode(errors="replace")
        assert out.startswith("ok ")  # the report itself goes to stdout, as always
        assert b"verify " in tty and b"MiB" in tty, tty[:500]
        piped = subprocess.run(
            [sys.executable, "-m", "sbbackup", *args], env=env, capture_output=True, text=True
        )
        assert piped.returncode == 0 and piped.stderr == "", piped.stderr


def test_restore_and_the_drill_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    env = backups(tmp_path)
    listed = subprocess.run(
        [sys.executable, "-m", "sbbackup", "list", "--json"], env=env, capture_output=True
    )
    backup_id = json.loads(listed.stdout)[0]["id"]
    for n, args in enumerate(
        [
            ("restore", backup_id, "--target-url", f"sqlite:///{tmp_path / 'r1.db'}"),
            ("test", "--latest"),
        ]
    ):
        code, out, tty = run_with_tty_stderr(env, *args)
        assert code == 0, tty.decode(errors="replace")
        assert b"restore 20" in tty and b"MiB" in tty, tty[:500]  # the drill restores too
        piped_args = [a.replace("r1.db", f"r{n + 2}.db") for a in args]
        piped = subprocess.run(
            [sys.executable, "-m", "sbbackup", *piped_args], env=env, capture_output=True, text=True
        )
        assert piped.returncode == 0, piped.stderr
        assert piped.stderr == "", piped.stderr


def test_progress_uses_binary_units_like_the_records(tmp_path: Path) -> None:
    """Sizes and rates in MiB and MiB/s, as `list` and the records say, never decimal MB."""
    env = backups(tmp_path)
    for args in (("create",), ("verify", "--deep", "--all")):
        code, _, tty = run_with_tty_stderr(env, *args)
        assert code == 0, tty.decode(errors="replace")
        assert b"MiB" in tty and b"MB/s" not in tty and b" MB" not in tty, tty[:600]
