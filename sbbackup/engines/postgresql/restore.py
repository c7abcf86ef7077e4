"""Loading a dump with psql or pg_restore, and reading a custom dump through.

psql's and pg_restore's stdin carries only the dump. A load is one transaction except for a
parallel pg_restore, which needs a seekable file and is used only for unencrypted backups; the
engine loads into a staging database either way, so the target sees all of a load or none.
Owners and privileges are kept as pg_dump wrote them unless the request says otherwise
(pg_restore's flags; for psql, ``stmtfilter`` and a leading ``SET ROLE``).

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
from collections.abc import Iterable, Iterator

from ...errors import DatabaseError, IntegrityError
from ..base import RestoreRequest, held_back
from .client import Client, first_error
from .conn import PgConn
from .stmtfilter import filter_statements
from .trailer import end_problem


def load(
    client: Client, fmt: str, conn: PgConn, chunks: Iterable[bytes], request: RestoreRequest
) -> None:
    """Load the dump ``chunks`` into the database ``conn`` reaches, with the request's owner,
    privilege and role options."""
    if fmt == "custom" and request.jobs > 1:
        code, stderr = restore_parallel(client, conn, chunks, request)
    else:
        checked: Iterable[bytes] = held_back(chunks, None if fmt == "custom" else end_problem)
        if fmt == "plain":
            checked = _plain_options(checked, request)
        code, stderr = client.run(
            _loader(client, fmt, conn, request),
            conn,
            lambda proc: feed(proc, checked),
            stdin=subprocess.PIPE,
        )
    if code != 0:
        error = first_error(stderr)
        raise DatabaseError(f"restore into {conn.redacted()} failed: {error}{hint(error)}")


HINTS = (
    ("must be member of role", "restore with --no-owner (the restoring role then owns it all)"),
    ("must be able to SET ROLE", "restore with --no-owner (the restoring role then owns it all)"),
    ("already exists", "use --clean to replace the target, or restore into a new database"),
    ("does not exist", "a role or object the dump needs is missing from this server"),
)


def hint(error: str) -> str:
    """A one-line hint for a loader error of a known kind ("" for the others)."""
    for needle, text in HINTS:
        if needle in error:
            if needle == "does not exist" and "database" in error.split(needle)[0][-80:]:
                return " (hint: create it with --create-target)"
            return f" (hint: {text})"
    return ""


def _plain_options(chunks: Iterable[bytes], request: RestoreRequest) -> Iterator[bytes]:
    """psql has no --no-owner, -x nor --role: leave those statements out, and set the role
    first (inside psql's single transaction)."""
    if request.role is not None:
        from psycopg import sql

        yield sql.SQL("SET ROLE {};\n").format(sql.Identifier(request.role)).as_bytes(None)
    yield from filter_statements(chunks, request.no_owner, request.no_privileges)


def _restore_flags(request: RestoreRequest) -> list[str]:
    flags = []
    if request.no_owner:
        flags.append("--no-owner")
    if request.no_privileges:
        flags.append("--no-privileges")
    if request.role is not None:
        flags.append(f"--role={request.role}")
    return flags


def _loader(client: Client, fmt: str, conn: PgConn, request: RestoreRequest) -> list[str]:
    """pg_restore (custom) or psql (plain), in one transaction, reading the dump on stdin."""
    if fmt == "custom":
        return [
            client.tool("pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            *_restore_flags(request),
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
    client: Client, conn: PgConn, chunks: Iterable[bytes], request: RestoreRequest
) -> tuple[int, str]:
    """pg_restore --jobs needs a seekable file. Only used for unencrypted backups. It is not
    one transaction (the staging database makes it atomic for the target), and the file is
    read through (``read_custom``) before it loads."""
    fd, path = tempfile.mkstemp(prefix="sbbackup-restore-", suffix=".dump")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        read_custom(client, path=path)
        args = [
            client.tool("pg_restore"),
            "--exit-on-error",
            f"--jobs={request.jobs}",
            "--no-password",
            *_restore_flags(request),
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
