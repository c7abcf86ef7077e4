"""Human output where people read it: a terminal of a given width, and a pipe.

Under a pseudo-terminal (stdin, stdout and stderr all on it, its size set with TIOCSWINSZ)
at 80 and 200 columns: a long ``create`` and ``verify --deep`` draw progress in binary units
that fits the width; tables fit the width (columns are hidden, with a note, before anything is
shortened); backup IDs and checksums are never cut: at 80 columns an ID is whole, and only a
narrower terminal elides an ID's middle, never its ends. Under a pipe: no escape sequence, no
trailing space on any line, every column and every ID and checksum whole, whatever COLUMNS
says.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"
WIDTHS = [80, 200]


def on_terminal(env: dict[str, str], cols: int, *args: str) -> tuple[int, str]:
    """Run sbbackup with stdin, stdout and stderr on a pty ``cols`` wide: (code, raw text)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    child_env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    child_env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbbackup", *args],
        env=child_env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
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
    os.close(leader)
    return proc.wait(timeout=120), seen.decode()


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows, line by line: escapes removed, every carriage-return redraw
    (a progress frame) a line of its own."""
    return [seg for line in ANSI.sub("", raw).split("\n") for seg in line.split("\r")]


def in_pipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sbbackup", *args],
        env={**env, "COLUMNS": "40", "TERM": "xterm-256color"},  # a narrow width: ignored
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A SQLite database big enough for a dump that takes a while (about 12 MiB), and
    three backups of it: one with its data file deleted (listed as missing)."""
    tmp = tmp_path_factory.mktemp("terminal")
    db = tmp / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    con.executemany("INSERT INTO t (b) VALUES (?)", ((os.urandom(300),) for _ in range(40_000)))
    con.commit()
    con.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_BACKUP_", "SBBACKUP_"))}
    env |= {"DATABASE_URL": f"sqlite:///{db}", "DB_BACKUP_PATH": str(tmp / "backups")}
    env["HOME"] = str(tmp / "home")
    for _ in range(3):
        made = subprocess.run(
            [sys.executable, "-m", "sbbackup", "create", "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
    newest = json.loads(made.stdout)
    (tmp / "backups" / newest["filename"]).unlink()
    return env


def records(env: dict[str, str]) -> list[dict[str, object]]:
    listed = subprocess.run(
        [sys.executable, "-m", "sbbackup", "list", "--json"], env=env, capture_output=True
    )
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, object]] = json.loads(listed.stdout)
    return rows


@pytest.mark.parametrize("cols", WIDTHS)
def test_a_long_create_and_a_deep_verify_draw_progress_in_binary_units(
    catalog: dict[str, str], tmp_path: Path, cols: int
) -> None:
    env = {**catalog, "DB_BACKUP_PATH": str(tmp_path / "own")}  # a catalog of its own
    code, raw = on_terminal(env, cols, "create")
    assert code == 0, raw
    frames = [ln for ln in screen_lines(raw) if "dumping" in ln]
    assert frames, raw[:2000]
    sizes = [m for f in frames for m in re.findall(r"[\d.]+/\? (bytes|KiB|MiB|GiB)", f)]
    assert {"KiB", "MiB"} & set(sizes), frames  # binary units, as the records use
    assert not re.search(r"\d ?(kB|MB|GB)\b", raw), frames  # never decimal ones
    assert all(len(f) <= cols for f in frames), [f for f in frames if len(f) > cols]
    (made,) = records(env)
    assert str(made["checksum"]) in raw  # the record printed after the progress, whole

    code, raw = on_terminal(env, cols, "verify", "--deep", str(made["id"]))
    assert code == 0, raw
    bars = [ln for ln in screen_lines(raw) if ln.startswith("verify ")]
    assert bars and any("MiB" in b for b in bars), raw[:2000]
    assert all(len(b) <= cols for b in bars), [b for b in bars if len(b) > cols]


@pytest.mark.parametrize("cols", WIDTHS)
def test_tables_fit_the_terminal_and_ids_stay_whole(catalog: dict[str, str], cols: int) -> None:
    ids = [str(r["id"]) for r in records(catalog)]
    assert len(ids) == 3
    for args in (("list",), ("prune", "--dry-run"), ("schedules",), ("next",), ("statistics",)):
        code, raw = on_terminal(catalog, cols, *args)
        assert code == 0, raw
        lines = [ln for ln in screen_lines(raw) if ln]
        too_wide = [ln for ln in lines if len(ln) > cols]
        assert not too_wide, (args, cols, too_wide)
        if args[0] in ("list", "prune"):
            for backup_id in ids:  # each on a line of its own, whole
                assert any(backup_id in ln for ln in lines), (args, backup_id, lines)
            assert ELLIPSIS not in raw
    code, raw = on_terminal(catalog, cols, "list")
    header = screen_lines(raw)[0].split()
    if cols >= 200:  # room for everything: nothing hidden
        assert header == ["ID", "STATUS", "SCHEDULE", "FORMAT", "SIZE", "CREATED", "DURATION"]
        assert "hidden" not in raw
    else:  # the columns that do not fit are named, never silently lost
        assert header[:2] == ["ID", "STATUS"] and "CREATED" not in header
        assert "(hidden to fit: " in raw and "CREATED" in raw and "--json" in raw
    assert "missing" in raw


@pytest.mark.parametrize("cols", WIDTHS)
def test_show_keeps_ids_and_checksums_whole_on_a_terminal(
    catalog: dict[str, str], cols: int
) -> None:
    rec = next(r for r in records(catalog) if r["status"] == "completed")
    code, raw = on_terminal(catalog, cols, "show", str(rec["id"]))
    assert code == 0, raw
    text = ANSI.sub("", raw)
    for value in (rec["id"], rec["filename"], rec["checksum"], rec["contentChecksum"]):
        assert str(value) in text, (value, text)  # written whole; the terminal may wrap it


def test_a_narrow_terminal_elides_an_id_in_the_middle_only(catalog: dict[str, str]) -> None:
    ids = [str(r["id"]) for r in records(catalog)]
    code, raw = on_terminal(catalog, 40, "list")
    assert code == 0, raw
    lines = [ln for ln in screen_lines(raw) if ln]
    assert all(len(ln) <= 40 for ln in lines), lines
    shown = [ln.split()[0] for ln in lines[1 : 1 + len(ids)]]
    for backup_id, cell in zip(ids, shown, strict=True):
        head, sep, tail = cell.partition(ELLIPSIS)
        assert sep and head and tail, cell  # shortened in the middle, both ends kept
        assert backup_id.startswith(head) and backup_id.endswith(tail), (backup_id, cell)
        assert len(tail) >= 7  # the end of an ID is its milliseconds: what tells IDs apart


def test_pipes_get_plain_whole_unpadded_lines(catalog: dict[str, str]) -> None:
    recs = records(catalog)
    rec = next(r for r in recs if r["status"] == "completed")
    commands = [
        ("list",),
        ("show", str(rec["id"])),
        ("prune", "--dry-run"),
        ("schedules",),
        ("next",),
        ("statistics",),
        ("verify", "--all"),
        ("health",),
        ("test", "--no-drill"),
    ]
    seen: dict[str, str] = {}
    for args in commands:
        res = in_pipe(catalog, *args)
        out = res.stdout + res.stderr
        assert out.strip(), args
        assert "\x1b" not in out, (args, out)
        padded = [ln for ln in out.splitlines() if ln != ln.rstrip()]
        assert not padded, (args, padded)
        assert ELLIPSIS not in out and "hidden to fit" not in out, (args, out)
        seen[args[0]] = out
    for r in recs:  # every ID whole, in every listing
        assert str(r["id"]) in seen["list"] and str(r["id"]) in seen["prune"]
    header = seen["list"].splitlines()[0].split()
    assert header == ["ID", "STATUS", "SCHEDULE", "FORMAT", "SIZE", "CREATED", "DURATION"]
    for field in ("checksum", "contentChecksum", "filename"):
        assert str(rec[field]) in seen["show"]
    longest = max(len(ln) for ln in seen["list"].splitlines())
    assert longest < 150  # the table is as wide as its cells, not a console's width
