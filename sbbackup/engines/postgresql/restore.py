"""Loading a dump with psql or pg_restore, and reading a custom dump through.

psql's and pg_restore's stdin carries only the dump. A load is one transaction except for a
parallel pg_restore, which needs a seekable file and is used only for unencrypted backups.

Nothing commits a dump that is not whole. The loader is fed through ``held_back``: it gets
the last 64 KiB only once the stream has ended without an error and (plain) ends the way
pg_dump ends a dump (``trailer``); otherwise it is killed holding its open transaction,
which the server rolls back. psql commits at EOF, so it never gets EOF early; pg_restore
commits once it has read the archive's last block, so it never gets that block early.
The parallel path first copies the whole stream to a temporary file (the stream's own
checks run to its end before anything loads) and reads that file through with
``pg_restore --file=/dev/null`` (``read_custom``): an archive that does not read to its end
is refused (IntegrityError) before anything is loaded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterable

from ...errors import DatabaseError, IntegrityError
from ..base import held_back
from .client import Client, first_error
from .conn import PgConn
from .trailer import end_problem


def load(client: Client, fmt: str, conn: PgConn, chunks: Iterable[bytes], jobs: int) -> None:
    """Load the dump ``chunks`` into the database ``conn`` reaches."""
    if fmt == "custom" and jobs > 1:
        code, stderr = restore_parallel(client, conn, chunks, jobs)
    else:
        checked = held_back(chunks, None if fmt == "custom" else end_problem)
        code, stderr = client.run(
            _loader(client, fmt, conn),
            conn,
            lambda proc: feed(proc, checked),
            stdin=subprocess.PIPE,
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
    client): no COMMIT is sent. A client that stopped on an error stops the feeding."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # the client stopped on an error: see stderr
        for chunk in chunks:
            proc.stdin.write(chunk)


def drain_into(proc: subprocess.Popen[bytes], chunks: Iterable[bytes]) -> None:
    """Stream into a client and read the stream to its end even after the client exits:
    the stream's own checks (digests, framing) run to its end too."""
    assert proc.stdin is not None
    alive = True
    for chunk in chunks:
        if alive:
            try:
                proc.stdin.write(chunk)
            except BrokenPipeError:
                alive = False


def restore_parallel(
    client: Client, conn: PgConn, chunks: Iterable[bytes], jobs: int
) -> tuple[int, str]:
    """pg_restore --jobs needs a seekable file. Only used for unencrypted backups. It is not
    one transaction, so the file is read through (``read_custom``) before it loads."""
    fd, path = tempfile.mkstemp(prefix="sbbackup-restore-", suffix=".dump")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        read_custom(client, path=path)
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


def read_custom(client: Client, chunks: Iterable[bytes] = (), path: str | None = None) -> None:
    """``pg_restore --file=/dev/null`` over a custom-format archive (the stream ``chunks``, or
    the file ``path``): it reads every data block, where ``--list`` reads only the table of
    contents. IntegrityError when it cannot read the archive to its end."""
    args = [client.tool("pg_restore"), "--file=/dev/null"]
    if path is not None:
        code, stderr = client.run(
            [*args, path], None, subprocess.Popen.wait, stdin=subprocess.DEVNULL
        )
    else:
        code, stderr = client.run(
            args, None, lambda proc: drain_into(proc, chunks), stdin=subprocess.PIPE
        )
    if code != 0:
        raise IntegrityError(f"pg_restore cannot read the dump through: {first_error(stderr)}")
