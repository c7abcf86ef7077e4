"""The client side of one engine: the tools it runs and the sessions it opens.

``Client`` finds pg_dump, psql and pg_restore on the engine's PATH and reads their versions,
runs them with a minimal environment and a private passfile (``run``), opens psycopg
sessions, and keeps all of them so that ``cancel()`` can stop everything at once. What a child
or the server says comes back as one printable line (``first_error``, ``pg_error``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from ...errors import DatabaseError, InterruptedError_, redact_secrets
from .conn import PgConn, child_env, passfile_for

if TYPE_CHECKING:
    import psycopg

TOOLS = ("pg_dump", "psql", "pg_restore")
INSTALL_HINT = "install the PostgreSQL client tools (e.g. apt install postgresql-client)"


def parse_major(version_output: str) -> tuple[int, str]:
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", version_output)
    if not m:
        raise DatabaseError(f"cannot parse client version from {version_output.strip()!r}")
    return int(m.group(1)), m.group(0).split()[-1]


class StderrCollector(threading.Thread):
    """Drain a child's stderr so it never blocks; keep the tail for the error message."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.data = b""

    def run(self) -> None:
        for line in self.stream:
            self.data = (self.data + line)[-16384:]

    def text(self) -> str:
        self.join(5)
        return self.data.decode(errors="replace").strip()


def exit_status(code: int) -> str:
    """A child's return code in words: ``exit 1``, or ``killed by SIGKILL`` for -9."""
    if code >= 0:
        return f"exit {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def first_error(stderr: str) -> str:
    """The line of a client tool's stderr that says what went wrong, fit for one line of a
    message (the server's text may hold a name with control characters)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() or "fatal" in ln.lower() or "failed" in ln.lower():
            return redact_secrets(printable(ln))
    return redact_secrets(printable(lines[-1])) if lines else "no message"


def printable(text: str, limit: int = 2000) -> str:
    """``text`` with control characters (escapes, newlines, BEL) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:limit]


def control_free(text: str) -> str:
    """A name the server sent, fit for one line of a message."""
    return printable(text, 200)


def pg_error(exc: Exception, what: str) -> DatabaseError:
    """One line from a psycopg error: the server's message and SQLSTATE when it sent them."""
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        text = f"{primary} (SQLSTATE {sqlstate})" if sqlstate else primary
    else:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        text = lines[0] if lines else type(exc).__name__
        text = text.removeprefix("connection failed: ")
        text = "; ".join([text, *[ln for ln in lines[1:2] if "failed" not in ln]])
    return DatabaseError(redact_secrets(printable(f"{what}: {text}")))


def pinned_params(session: psycopg.Connection[Any]) -> dict[str, str]:
    """The host, address and port a session actually reached (one of a multi-host list, the
    address a name resolved to), so the next connection reaches the same server."""
    info = session.info
    pinned = {"host": str(info.host), "port": str(info.port)}
    hostaddr = getattr(info, "hostaddr", "")
    if hostaddr and not pinned["host"].startswith("/"):
        pinned["hostaddr"] = str(hostaddr)
    return pinned


def scalar(session: psycopg.Connection[Any], query: Any, params: Any = None) -> Any:
    row = session.execute(query, params).fetchone()
    if row is None or len(row) < 1:
        raise DatabaseError("the server answered a query with no value")
    return row[0]


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(10)


class Client:
    """The children and sessions of one engine, reached through ``env``."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self._tools: dict[str, str] = {}
        # Long-running children and open sessions, for cancel().
        self._children: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # --- children ----------------------------------------------------------------------
    def spawn(self, args: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a child that ``cancel()`` can stop."""
        if self._cancelled.is_set():
            raise InterruptedError_("interrupted")
        proc: subprocess.Popen[Any] = subprocess.Popen(args, **kw)
        self._children.add(proc)
        if self._cancelled.is_set():  # cancel() ran between the check and the start
            proc.kill()
        return proc

    def cancel(self) -> None:
        """Kill every child and cancel every query (a server shutting down): a thread blocked
        reading pg_dump's output sees EOF and goes on to its cleanup. Later work is refused."""
        self._cancelled.set()
        for proc in list(self._children):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
        for session in list(self._sessions):
            with contextlib.suppress(Exception):
                session.cancel_safe(timeout=2)

    def tool(self, name: str) -> str:
        if name not in self._tools:
            path = shutil.which(name, path=self.env.get("PATH", os.defpath))
            if path is None:
                raise DatabaseError(f"{name} not found: {INSTALL_HINT}")
            self._tools[name] = path
        return self._tools[name]

    def run(
        self,
        args: list[str],
        conn: PgConn | None,
        talk: Callable[[subprocess.Popen[bytes]], object],
        *,
        stdin: int | None = None,
        stdout: int = subprocess.DEVNULL,
    ) -> tuple[int, str]:
        """Run a client tool reaching ``conn`` (None: no server) to its exit: its minimal
        environment and the passfile, a session of its own, stderr drained. ``talk(proc)``
        feeds its stdin, reads its stdout or waits for it; if it raises, the tool's whole
        process group is killed. Then stdin is closed (EOF: psql commits) and the exit
        awaited. Returns the exit code and the tail of stderr (``first_error`` makes it one
        line)."""
        with self.child(conn) as child:
            proc = self.spawn(
                args,
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                start_new_session=True,
                **child,
            )
            assert proc.stderr is not None
            err = StderrCollector(proc.stderr)
            err.start()
            try:
                talk(proc)
            except BaseException:
                kill_group(proc)
                raise
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            code = proc.wait()
        return code, err.text()

    @contextlib.contextmanager
    def child(self, conn: PgConn | None) -> Iterator[dict[str, Any]]:
        """``Popen`` keywords for a client tool reaching ``conn``: its minimal environment and
        the passfile descriptor it inherits."""
        with passfile_for(conn.password if conn else None) as passfile:
            yield {
                "env": child_env(self.env, passfile, strict=bool(conn and conn.strict)),
                "pass_fds": passfile.pass_fds if passfile else (),
            }

    def client_version(self, name: str = "pg_dump") -> tuple[int, str]:
        res = subprocess.run(
            [self.tool(name), "--version"],
            capture_output=True,
            text=True,
            env=child_env(self.env, None),
        )
        if res.returncode < 0:  # killed: say so (as dump does), not "cannot parse ''"
            raise DatabaseError(f"{name} --version was {exit_status(res.returncode)}")
        if res.returncode > 0:
            detail = first_error(res.stderr) if res.stderr.strip() else "no message"
            raise DatabaseError(
                f"{name} --version failed ({exit_status(res.returncode)}): {detail}"
            )
        return parse_major(res.stdout)

    # --- sessions ----------------------------------------------------------------------
    def connect(self, conn: PgConn, autocommit: bool = True) -> psycopg.Connection[Any]:
        """A psycopg session; DatabaseError with the server's message when it fails."""
        import psycopg

        if self._cancelled.is_set():
            raise InterruptedError_("interrupted")
        try:
            session = psycopg.connect(autocommit=True, **conn.connect_kwargs(self.env))
            if session.info.parameter_status("server_encoding") == "SQL_ASCII":
                # Names are bytes there; psycopg would hand them over as bytes. Latin-1 reads
                # any byte losslessly, the same way on every side (dump, catalog, restore).
                session.execute("SET client_encoding TO 'LATIN1'")
            session.autocommit = autocommit
        except psycopg.Error as exc:
            raise pg_error(exc, f"cannot connect to {conn.redacted()}") from None
        self._sessions.add(session)
        return session

    def snapshot_session(self, conn: PgConn) -> psycopg.Connection[Any]:
        """A read-only REPEATABLE READ session: every query sees one snapshot."""
        import psycopg

        session = self.connect(conn, autocommit=False)
        try:
            session.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            session.read_only = True
        except BaseException:
            session.close()
            raise
        return session

    @contextlib.contextmanager
    def session(
        self, conn: PgConn, what: str, snapshot: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """A session whose errors become DatabaseError naming ``what``; always closed.
        ``snapshot``: a ``snapshot_session``."""
        import psycopg

        session = self.snapshot_session(conn) if snapshot else self.connect(conn)
        try:
            yield session
        except psycopg.Error as exc:
            raise self.failure(exc, what) from None
        finally:
            with contextlib.suppress(Exception):
                session.close()

    def failure(self, exc: Exception, what: str) -> Exception:
        """What a psycopg error becomes: an interruption after ``cancel()``, else one line."""
        if self._cancelled.is_set():
            return InterruptedError_("interrupted")
        return pg_error(exc, what)
