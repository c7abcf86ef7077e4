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
from .client import Client, StderrCollector, first_error, kill_group
from .conn import PgConn, child_env


def load(client: Client, fmt: str, conn: PgConn, chunks: Iterable[bytes], jobs: int) -> None:
    """Load the dump ``chunks`` into the database ``conn`` reaches."""
    if fmt == "custom" and jobs > 1:
        restore_parallel(client, conn, chunks, jobs)
        return
    if fmt == "custom":
        args = [
            client.tool("pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            "--no-owner",
            "-d",
            conn.conninfo(),
        ]
    else:
        args = [
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
    feed(client, args, conn, chunks)


def feed(client: Client, args: list[str], conn: PgConn, chunks: Iterable[bytes]) -> None:
    """Stream into a client. On a stream error kill it before EOF: no COMMIT is sent."""
    with client.child(conn) as child:
        proc = client.spawn(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **child,
        )
        assert proc.stdin is not None and proc.stderr is not None
        err = StderrCollector(proc.stderr)
        err.start()
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the client stopped on an error; its message is in stderr
        except BaseException:
            kill_group(proc)
            raise
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        code = proc.wait()
    if code != 0:
        raise DatabaseError(f"restore into {conn.redacted()} failed: {first_error(err.text())}")


def restore_parallel(client: Client, conn: PgConn, chunks: Iterable[bytes], jobs: int) -> None:
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
        with client.child(conn) as child:
            proc = client.spawn(
                args,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                **child,
            )
            assert proc.stderr is not None
            err = StderrCollector(proc.stderr)
            err.start()
            try:
                code = proc.wait()
            except BaseException:
                kill_group(proc)
                raise
        if code != 0:
            raise DatabaseError(f"restore into {conn.redacted()} failed: {first_error(err.text())}")
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
