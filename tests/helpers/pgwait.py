"""Waiting on a real PostgreSQL server: hold a table lock so pg_dump blocks, and poll for
readiness (never an assertion about timing)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from helpers.pgcluster import Cluster


@contextmanager
def table_locked(pg: Cluster, db: str, table: str) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on ``table`` in an open transaction: pg_dump blocks on it."""
    holder = subprocess.Popen(
        ["psql", "-X", "-q", "-d", db], stdin=subprocess.PIPE, env=pg.env(), text=True
    )
    assert holder.stdin is not None
    holder.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n")
    holder.stdin.flush()
    try:
        wait_for(
            lambda: (
                pg.psql(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    f"WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted",
                    db=db,
                )
                == "1"
            ),
            "the table lock",
        )
        yield
    finally:
        holder.stdin.write("COMMIT;\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def wait_for(cond: object, what: str, timeout: float = 30) -> None:
    """Poll a condition (a readiness check, never an assertion about timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def dump_waiting(pg: Cluster, db: str) -> bool:
    return (
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'",
            db=db,
        )
        != "0"
    )
