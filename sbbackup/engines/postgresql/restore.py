"""Loading a dump with psql or pg_restore, and checking a custom dump's table of contents.

psql's and pg_restore's stdin carries only the dump. A load is one transaction except for a
parallel pg_restore, which needs a seekable file and is used only for unencrypted backups.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterable

from ...errors import DatabaseError, IntegrityError
from .client import Client, StderrCollector, first_error
from .conn import PgConn, child_env


def load(client: Client, fmt: str, conn: PgConn, chunks: Iterable[bytes], jobs: int) -> None:
    """Load the dump ``chunks`` into the database ``conn`` reaches."""
    if fmt == "custom" and jobs > 1:
        code, stderr = restore_parallel(client, conn, chunks, jobs)
    else:
        code, stderr = client.run(
            _loader(client, fmt, conn), conn, lambda proc: feed(proc, chunks), stdin=subprocess.PIPE
        )
    if code != 0:
        raise DatabaseError(f"restore into {conn.redacted()} failed: {first_error(stderr)}")


def _loader(client: Client, fmt: str, conn: PgConn) -> list[str]:
    """pg_restore (custom) or psql (plain), in one transaction, reading the dump on stdin."""
    if fmt == "custom":
        return [
            client.tool("pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            "--no-owner",
            "-d",
            conn.conninfo(),
        ]
    return [
        client.tool("psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--no-password",
        "-f",
        "-",
        "-d",
        conn.conninfo(),
    ]


def feed(proc: subprocess.Popen[bytes], chunks: Iterable[bytes]) -> None:
    """Stream into a client. A stream error raises before EOF (``Client.run`` kills the
    client): no COMMIT is sent."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # the client stopped on an error: see stderr
        for chunk in chunks:
            proc.stdin.write(chunk)


def restore_parallel(
    client: Client, conn: PgConn, chunks: Iterable[bytes], jobs: int
) -> tuple[int, str]:
    """pg_restore --jobs needs a seekable file. Only used for unencrypted backups."""
    fd, path = tempfile.mkstemp(prefix="sbbackup-restore-", suffix=".dump")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        args = [
            client.tool("pg_restore"),
            "--exit-on-error",
            f"--jobs={jobs}",
            "--no-password",
            "--no-owner",
            "-d",
            conn.conninfo(),
            path,
        ]
        return client.run(args, conn, subprocess.Popen.wait)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def list_custom(client: Client, chunks: Iterable[bytes]) -> None:
    """``pg_restore --list`` over a custom-format stream: its TOC must parse."""
    proc = client.spawn(
        [client.tool("pg_restore"), "--list"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(client.env, None),
    )
    assert proc.stdin is not None and proc.stderr is not None
    err = StderrCollector(proc.stderr)
    err.start()
    alive = True
    for chunk in chunks:  # keep draining after pg_restore exits: the stream is checked too
        if alive:
            try:
                proc.stdin.write(chunk)
            except BrokenPipeError:
                alive = False
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    if proc.wait() != 0:
        raise IntegrityError(f"pg_restore --list rejects the dump: {first_error(err.text())}")
