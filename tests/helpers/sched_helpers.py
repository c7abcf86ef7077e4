"""In-process command line runs for the schedule tests (fast: no interpreter start-up)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helpers.cli import Result
from helpers.schemas import check_run
from sbbackup.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    check_run(args, code, out, err)
    return Result(code, out, err)


def sqlite_db(path: Path, rows: int = 50) -> str:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    con.commit()
    con.close()
    return f"sqlite:///{path}"
