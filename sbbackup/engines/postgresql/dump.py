"""One pg_dump run inside a snapshot that a psycopg session exported and holds open.

Row counts cover exactly what the dump carries: a plain dump is counted from its own stream
(``copycount``), a custom-format one by the snapshot's session while pg_dump runs.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ...errors import DatabaseError, SbbackupError
from ...pipeline import Writer, pump_fd
from .client import Client, exit_status, first_error, pg_error, pinned_params
from .conn import PgConn
from .inventory import count_rows, stream_counts

if TYPE_CHECKING:
    import psycopg

    from .copycount import CopyCounter

SNAPSHOT_RE = re.compile(r"[0-9A-F]{1,16}-[0-9A-F]{1,16}(-[0-9]{1,10})?")
Tables = list[tuple[str, str, str]]


def dump_encoding(session: psycopg.Connection[Any]) -> str:
    """The Python codec of the names in a plain dump: pg_dump writes in the database's
    encoding (SQL_ASCII: bytes, read as Latin-1 as ``connect`` makes psycopg read them)."""
    from psycopg._encodings import pg2pyenc

    name = str(session.info.parameter_status("server_encoding") or "UTF8")
    return "latin-1" if name == "SQL_ASCII" else str(pg2pyenc(name.encode()))


class Tee:
    """Writes through to ``out`` and lets the COPY counter see every byte."""

    def __init__(self, out: Writer, counter: CopyCounter) -> None:
        self.out, self.counter = out, counter

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.counter.feed(data)
        return self.out.write(data)


class SnapshotCounts(threading.Thread):
    """Counts rows in the exported snapshot while pg_dump streams (custom format)."""

    def __init__(self, session: psycopg.Connection[Any], tables: Tables) -> None:
        super().__init__(daemon=True)
        self.session, self.tables = session, tables
        self.value: dict[str, int] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = count_rows(self.session, self.tables)
        except BaseException as exc:  # noqa: BLE001 - re-raised in result()
            self.error = exc

    def result(self) -> dict[str, int]:
        self.join()
        if isinstance(self.error, SbbackupError):
            raise self.error
        if isinstance(self.error, Exception):
            raise pg_error(self.error, "counting rows failed")
        if self.error is not None:
            raise self.error
        return self.value or {}


class PgDump:
    """pg_dump importing ``snapshot``, which the session ``snap`` exported and holds open."""

    def __init__(
        self,
        client: Client,
        conn: PgConn,
        snap: psycopg.Connection[Any],
        snapshot: str,
        lock_wait_timeout: int,
    ) -> None:
        self.client, self.snap, self.snapshot = client, snap, snapshot
        self.conn = conn.with_params(**pinned_params(snap))  # the server holding the snapshot
        self.lock_wait_timeout = lock_wait_timeout

    def args(self, fmt: str) -> list[str]:
        args = [
            self.client.tool("pg_dump"),
            "--no-password",
            f"--snapshot={self.snapshot}",
            f"--lock-wait-timeout={self.lock_wait_timeout}s",
        ]
        args += ["--format=custom", "--compress=0"] if fmt == "custom" else ["--format=plain"]
        return [*args, "-d", self.conn.conninfo()]

    def run(
        self,
        fmt: str,
        out: Writer,
        tables: Tables,
        row_counts: bool,
        progress: Callable[[int], None] | None,
    ) -> dict[str, Any] | None:
        """Stream the dump into ``out``; the row counts of ``tables`` when asked for."""
        counter = None
        if row_counts and fmt == "plain":
            from .copycount import CopyCounter

            counter = CopyCounter(dump_encoding(self.snap))
        sink: Writer = Tee(out, counter) if counter is not None else out
        scan = SnapshotCounts(self.snap, tables) if row_counts and fmt != "plain" else None
        code, err = self._stream(fmt, sink, scan, progress)
        if code != 0:
            self._failed(code, err, scan)
        if counter is not None:
            return {"tables": stream_counts(counter.finish(), tables)}
        if scan is not None:
            return {"tables": scan.result()}
        return None

    def _stream(
        self,
        fmt: str,
        sink: Writer,
        scan: SnapshotCounts | None,
        progress: Callable[[int], None] | None,
    ) -> tuple[int, str]:
        def talk(proc: subprocess.Popen[bytes]) -> None:
            assert proc.stdout is not None
            if scan is not None:
                scan.start()
            pump_fd(proc.stdout.fileno(), sink, progress)
            proc.wait()

        try:
            return self.client.run(self.args(fmt), self.conn, talk, stdout=subprocess.PIPE)
        except BaseException:
            if scan is not None and scan.ident is not None:  # started: pg_dump is killed
                self._stop(scan)
            raise

    def _stop(self, scan: SnapshotCounts) -> None:
        """Cancel the snapshot's count query if it still runs, and wait for the thread."""
        if scan.is_alive():
            with contextlib.suppress(Exception):
                self.snap.cancel_safe(timeout=2)
        scan.join()

    def _failed(self, code: int, stderr: str, scan: SnapshotCounts | None) -> NoReturn:
        if scan is not None:
            failed_first = not scan.is_alive() and scan.error is not None
            self._stop(scan)
            if failed_first:  # its failure ended the snapshot pg_dump wanted to import
                scan.result()
        msg = first_error(stderr)
        if "timeout" in msg.lower():
            msg += (
                f" (a table could not be locked within {self.lock_wait_timeout}s:"
                " another session holds an exclusive lock; see database.lockWaitTimeout)"
            )
        if code < 0 and msg == "no message":
            raise DatabaseError(f"pg_dump was {exit_status(code)}")
        raise DatabaseError(f"pg_dump failed ({exit_status(code)}): {msg}")
