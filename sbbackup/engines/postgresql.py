"""PostgreSQL through its own client tools: pg_dump, psql, pg_restore.

Passwords never reach argv: the child gets the URL without its password and the password in
``PGPASSWORD``. Row counts come from the very snapshot pg_dump dumps: a psql session opens a
REPEATABLE READ transaction, exports its snapshot, and pg_dump runs with ``--snapshot``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import IO, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from ..errors import (
    ConfigError,
    DatabaseError,
    IntegrityError,
    InterruptedError_,
    SbbackupError,
)
from ..pipeline import Writer, pump_fd
from . import DumpResult

TOOLS = ("pg_dump", "psql", "pg_restore")
INSTALL_HINT = "install the PostgreSQL client tools (e.g. apt install postgresql-client)"
SEP = "\x1f"
END = "__sbbackup_end__"
CLUSTER_ID_SQL = "SELECT system_identifier FROM pg_control_system()"
DUMP_COMPLETE = b"-- PostgreSQL database dump complete"
USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"
)
NOT_EXT = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.classid = "
    "'{cat}'::regclass AND d.deptype = 'e')"
)

TABLES_SQL = f"""SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND (c.relkind <> 'm' OR c.relispopulated) AND {USER_NS}
AND {NOT_EXT.format(oid="c.oid", cat="pg_class")} ORDER BY 1"""


def _count_rel(kinds: str) -> str:
    return (
        f"SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ({kinds}) AND {USER_NS} "
        f"AND {NOT_EXT.format(oid='c.oid', cat='pg_class')}"
    )


INDEX_KINDS = "'i', 'I'"
OBJECTS_SQL = "\nUNION ALL ".join(
    [
        f"SELECT 'sequences', ({_count_rel(repr('S'))})",
        f"SELECT 'views', ({_count_rel(repr('v'))})",
        f"SELECT 'materializedViews', ({_count_rel(repr('m'))})",
        f"SELECT 'indexes', ({_count_rel(INDEX_KINDS)})",
        "SELECT 'functions', (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON "
        f"n.oid = p.pronamespace WHERE {USER_NS} AND "
        f"{NOT_EXT.format(oid='p.oid', cat='pg_proc')})",
        "SELECT 'types', (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON "
        "n.oid = t.typnamespace "
        f"LEFT JOIN pg_class c ON c.oid = t.typrelid WHERE {USER_NS} AND (t.typtype IN "
        "('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND c.relkind = 'c')) AND "
        f"{NOT_EXT.format(oid='t.oid', cat='pg_type')})",
        "SELECT 'triggers', (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON "
        "c.oid = t.tgrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND {USER_NS})",
        "SELECT 'constraints', (SELECT count(*) FROM pg_constraint k JOIN pg_namespace n ON "
        f"n.oid = k.connamespace WHERE {USER_NS})",
        "SELECT 'largeObjects', (SELECT count(*) FROM pg_largeobject_metadata)",
    ]
)


@dataclass(frozen=True)
class Conn:
    """A connection target: a password-free URL (or libpq environment) plus the password."""

    url: str | None
    password: str | None
    dbname: str

    @classmethod
    def parse(cls, url: str | None, env: dict[str, str]) -> Conn:
        if url is None:
            db = env.get("PGDATABASE") or env.get("PGUSER") or _login_name()
            return cls(None, None, db)
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("database URL must start with postgresql:// (or sqlite:///)")
        scheme, rest = url.split("://", 1)
        netloc, _, tail = rest.partition("/")
        if "@" not in netloc and "@" in tail.partition("?")[0]:
            # user:pa/ss@host: libpq ends the authority at the first "/", so the password's
            # head would pass as a host name into argv, logs and the manifest. Never echo it.
            raise ConfigError(
                "database URL: the part before '@' contains '/' (a password with '/' "
                "must be percent-encoded as %2F, or kept in ~/.pgpass)"
            )
        path, _, query = tail.partition("?")
        userinfo, at, hosts = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        params = parse_qsl(query, keep_blank_values=True)
        qpass = [v for k, v in params if k == "password"]
        params = [(k, v) for k, v in params if k != "password"]
        pw = unquote(password) if colon else (qpass[0] if qpass else None)
        safe = f"{scheme}://{user + '@' if at and user else ''}{hosts}/{path}"
        if params:
            safe += "?" + urlencode(params)
        dbname = unquote(path) or unquote(user) or env.get("PGDATABASE") or _login_name()
        return cls(safe, pw or None, dbname)

    def with_db(self, dbname: str) -> Conn:
        if self.url is None:
            return replace(self, dbname=dbname, url=None)
        head, _, tail = self.url.partition("://")
        netloc, _, rest = tail.partition("/")
        _, q, query = rest.partition("?")
        return replace(self, url=f"{head}://{netloc}/{quote(dbname)}{q}{query}", dbname=dbname)

    def args(self) -> list[str]:
        return ["-d", self.url if self.url is not None else self.dbname]

    def redacted(self) -> str:
        return self.url if self.url is not None else f"(libpq environment) dbname={self.dbname}"


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "postgres"


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


def first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() or "fatal" in ln.lower() or "failed" in ln.lower():
            return ln
    return lines[-1] if lines else "no message"


class PsqlSession:
    """An interactive psql child, for queries that must share one transaction."""

    def __init__(self, engine: PostgreSQLEngine, conn: Conn) -> None:
        self.proc = engine.spawn(
            [
                engine.tool("psql"),
                "-X",
                "-A",
                "-t",
                "-q",
                "-F",
                SEP,
                "-v",
                "ON_ERROR_STOP=1",
                "--no-password",
                *conn.args(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=engine.child_env(conn),
            text=True,
            bufsize=1,
        )
        assert self.proc.stderr is not None
        self.err = StderrCollector(self.proc.stderr.buffer)  # type: ignore[attr-defined]
        self.err.start()
        self.conn = conn

    def query(self, sql: str) -> list[list[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + END + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail()
        rows: list[list[str]] = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self._fail()
            line = line.rstrip("\n")
            if line == END:
                return rows
            rows.append(line.split(SEP))

    def _fail(self) -> None:
        self.proc.wait()
        raise DatabaseError(f"cannot query {self.conn.redacted()}: {first_error(self.err.text())}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write("\\q\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def inventory(session: PsqlSession) -> dict[str, Any]:
    tables = [row[0] for row in session.query(TABLES_SQL)]
    counts: dict[str, int] = {}
    for i in range(0, len(tables), 200):
        batch = tables[i : i + 200]
        sql = "\nUNION ALL ".join(
            f"SELECT '{t.replace(chr(39), chr(39) * 2)}', count(*) FROM {t}" for t in batch
        )
        for name, n in session.query(sql):
            counts[name] = int(n)
    objects = {kind: int(n) for kind, n in session.query(OBJECTS_SQL)}
    return {"tables": counts, "objects": objects}


class PostgreSQLEngine:
    name = "postgresql"
    formats: tuple[str, ...] = ("plain", "custom")
    file_extension = {"plain": ".sql", "custom": ".dump"}

    def __init__(self, url: str | None, settings: Any) -> None:
        self.settings = settings
        self.env = dict(settings.env) if settings.env else dict(os.environ)
        self.conn = Conn.parse(url, self.env)
        self._tools: dict[str, str] = {}
        # Long-running children (pg_dump, psql, pg_restore), for cancel().
        self._children: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()
        self._cancelled = threading.Event()

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
        """Kill every child (a server shutting down): a thread blocked reading pg_dump's
        output sees EOF and goes on to its cleanup. Later spawns are refused."""
        self._cancelled.set()
        for proc in list(self._children):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()

    # --- helpers -----------------------------------------------------------------------
    def tool(self, name: str) -> str:
        if name not in self._tools:
            path = shutil.which(name, path=self.env.get("PATH", os.defpath))
            if path is None:
                raise DatabaseError(f"{name} not found: {INSTALL_HINT}")
            self._tools[name] = path
        return self._tools[name]

    def child_env(self, conn: Conn) -> dict[str, str]:
        env = dict(self.env)
        env.setdefault("PGAPPNAME", "sbbackup")
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        if conn.password is not None:
            env["PGPASSWORD"] = conn.password
        return env

    def target(self, target: str | None) -> Conn:
        """``None`` is the source; a bare name is a database on the source's server."""
        if target is None:
            return self.conn
        if target.startswith(("postgresql://", "postgres://")):
            return Conn.parse(target, self.env)
        if re.match(r"\s*\w+\s*=", target):  # never echoed: it may hold a password
            raise ConfigError(
                "a target must be a postgresql:// URL or a database name, not a libpq connection "
                "string (keep its password in PGPASSWORD or ~/.pgpass)"
            )
        if "://" not in target and "/" not in target and target:
            return self.conn.with_db(target)
        raise ConfigError("target must be a postgresql:// URL or a database name")

    def scratch_target(self, name: str, server: str | None) -> str:
        """A database called ``name`` on ``server`` (default: the source's server)."""
        conn = self.target(server).with_db(name)
        if conn.url is None:
            return name
        if conn.password is None:
            return conn.url
        scheme, rest = conn.url.split("://", 1)
        user, at, tail = rest.partition("@")
        return f"{scheme}://{user}:{quote(conn.password, safe='')}@{tail}" if at else conn.url

    def drop_target(self, target: str, force: bool = True) -> None:
        """Drop a scratch database. Without ``force`` one that has sessions is left alone
        (DatabaseError), so a cleanup never kills another live drill."""
        self._drop(self.target(target), force)

    def _drop(self, conn: Conn, force: bool = True) -> None:
        admin = conn.with_db("postgres" if conn.dbname != "postgres" else "template1")
        ident = '"' + conn.dbname.replace('"', '""') + '"'
        force_opt = " WITH (FORCE)" if force else ""
        self.run_psql(admin, f"DROP DATABASE IF EXISTS {ident}{force_opt}")

    def leftover_targets(self, prefix: str, server: str | None) -> list[str]:
        """Unused databases named ``prefix`` plus 8 hex digits (what ``scratch_target`` makes)."""
        conn = self.target(server)
        admin = conn.with_db("postgres" if conn.dbname != "postgres" else "template1")
        regex = "^" + re.escape(prefix).replace("'", "''") + "[0-9a-f]{8}$"
        # One with sessions belongs to a live drill: skip it here rather than have DROP wait
        # five seconds for its sessions and then fail.
        out = self.run_psql(
            admin,
            f"SELECT datname FROM pg_database d WHERE datname ~ '{regex}' AND NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname) ORDER BY 1",
        )
        return [self.scratch_target(name, server) for name in out.splitlines() if name]

    def size_estimate(self) -> int:
        return int(self.run_psql(self.conn, "SELECT pg_database_size(current_database())"))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "name": self.conn.dbname, "url": self.conn.redacted()}

    def redact(self, target: str | None) -> str:
        return self.target(target).redacted()

    def is_source(self, target: str | None) -> bool:
        """Is ``target`` the source database, however it is spelled?

        Names are unique within a cluster, so a different (decoded) name is never the source.
        The same name behind another spelling of the server (``localhost`` for ``127.0.0.1``,
        ``postgres://``, another port alias) is the source when both connections reach the same
        cluster (``pg_control_system().system_identifier``). When that cannot be told, because the
        source does not answer, the answer is yes: a needless confirmation is cheap, a restore
        over production is not. A target that does not answer cannot be restored into anyway.
        """
        t = self.target(target)
        if t.dbname != self.conn.dbname:
            return False
        if t.url == self.conn.url:
            return True
        try:
            theirs = self.run_psql(t, CLUSTER_ID_SQL)
        except DatabaseError:
            return False
        try:
            ours = self.run_psql(self.conn, CLUSTER_ID_SQL)
        except DatabaseError:
            return True
        return theirs == ours

    def run_psql(self, conn: Conn, sql: str) -> str:
        res = subprocess.run(
            [
                self.tool("psql"),
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--no-password",
                *conn.args(),
                "-c",
                sql,
            ],
            env=self.child_env(conn),
            capture_output=True,
            text=True,
            start_new_session=True,  # a terminal's Ctrl-C must not cancel a cleanup's DROP
        )
        if res.returncode != 0:
            raise DatabaseError(f"cannot connect to {conn.redacted()}: {first_error(res.stderr)}")
        return res.stdout.strip()

    def client_version(self, name: str = "pg_dump") -> tuple[int, str]:
        res = subprocess.run(
            [self.tool(name), "--version"], capture_output=True, text=True, env=self.env
        )
        return parse_major(res.stdout)

    def check(self, conn: Conn | None = None) -> dict[str, Any]:
        conn = conn or self.conn
        for name in TOOLS:
            self.tool(name)  # "pg_dump not found: ..." before anything runs
        # Four short-lived children at once: sequentially they cost a dump ~0.1 s of latency.
        with ThreadPoolExecutor(max_workers=len(TOOLS) + 1) as pool:
            server = pool.submit(self.run_psql, conn, "SHOW server_version_num")
            futures = {name: pool.submit(self.client_version, name) for name in TOOLS}
            versions = {name: f.result() for name, f in futures.items()}
            server_num = int(server.result())
        server_major = server_num // 10000
        server_version = f"{server_major}.{server_num % 10000}"
        for name, (major, full) in versions.items():
            if major < server_major:
                raise DatabaseError(
                    f"{name} {full} is older than the server ({server_version}): install "
                    f"postgresql-client-{server_major} or newer and put it first on PATH"
                )
        return {
            "serverVersion": server_version,
            "serverMajor": server_major,
            "pgDumpVersion": versions["pg_dump"][1],
            "tools": {n: self.tool(n) for n in TOOLS},
        }

    # --- dump --------------------------------------------------------------------------
    def dump(
        self, fmt: str, out: Writer, row_counts: bool, progress: Callable[[int], None] | None = None
    ) -> DumpResult:
        info = self.check()
        session = PsqlSession(self, self.conn)
        try:
            session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = session.query("SELECT pg_export_snapshot()")[0][0]
            contents = self._dump_with(
                fmt, snapshot, out, session if row_counts else None, progress
            )
            session.query("COMMIT")
        finally:
            session.close()
        database = {
            "engine": self.name,
            "name": self.conn.dbname,
            "serverVersion": info["serverVersion"],
        }
        return DumpResult(database=database, tool_version=info["pgDumpVersion"], contents=contents)

    def _dump_args(self, fmt: str, snapshot: str) -> list[str]:
        args = [
            self.tool("pg_dump"),
            "--no-password",
            f"--snapshot={snapshot}",
            f"--lock-wait-timeout={self.settings.lock_wait_timeout}s",
        ]
        args += ["--format=custom", "--compress=0"] if fmt == "custom" else ["--format=plain"]
        return [*args, *self.conn.args()]

    def _dump_with(
        self,
        fmt: str,
        snapshot: str,
        out: Writer,
        session: PsqlSession | None,
        progress: Callable[[int], None] | None,
    ) -> dict[str, Any] | None:
        proc = self.spawn(
            self._dump_args(fmt, snapshot),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.child_env(self.conn),
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        err = StderrCollector(proc.stderr)
        err.start()
        counter = _Inventory(session) if session else None
        try:
            if counter:
                counter.start()
            pump_fd(proc.stdout.fileno(), out, progress)
            code = proc.wait()
        except BaseException:
            kill_group(proc)
            raise
        finally:
            proc.stdout.close()
        if code != 0:
            msg = first_error(err.text())
            if "timeout" in msg.lower():
                msg += (
                    f" (a table could not be locked within {self.settings.lock_wait_timeout}s:"
                    " another session holds an exclusive lock; see database.lockWaitTimeout)"
                )
            raise DatabaseError(f"pg_dump failed (exit {code}): {msg}")
        return counter.result() if counter else None

    # --- restore -----------------------------------------------------------------------
    def prepare_target(
        self, target: str | None, create_target: bool, clean: bool
    ) -> tuple[Conn, bool]:
        """The target, reachable; and whether this restore created it (so owns it)."""
        conn = self.target(target)
        if not (create_target or clean):
            self.run_psql(conn, "SELECT 1")
            return conn, False
        admin = conn.with_db("postgres" if conn.dbname != "postgres" else "template1")
        ident = '"' + conn.dbname.replace('"', '""') + '"'
        lit = "'" + conn.dbname.replace("'", "''") + "'"
        exists = self.run_psql(admin, f"SELECT 1 FROM pg_database WHERE datname = {lit}") == "1"
        if exists and clean:
            self.run_psql(admin, f"DROP DATABASE {ident} WITH (FORCE)")
            exists = False
        if not exists:
            if not create_target and not clean:
                raise DatabaseError(f"target database {conn.dbname} does not exist")
            self.run_psql(admin, f"CREATE DATABASE {ident}")
            return conn, True
        return conn, False

    def restore(
        self,
        fmt: str,
        chunks: Iterable[bytes],
        target: str | None,
        *,
        create_target: bool,
        clean: bool,
        jobs: int,
    ) -> None:
        conn, created = self.prepare_target(target, create_target, clean)
        try:
            self._load(fmt, conn, chunks, jobs)
        except BaseException:
            # A database this restore created holds nothing worth keeping after a failure (a
            # parallel pg_restore is not one transaction): drop it rather than leave a half.
            if created:
                with contextlib.suppress(SbbackupError):
                    self._drop(conn)
            raise

    def _load(self, fmt: str, conn: Conn, chunks: Iterable[bytes], jobs: int) -> None:
        if fmt == "custom" and jobs > 1:
            self._restore_parallel(conn, chunks, jobs)
            return
        if fmt == "custom":
            args = [
                self.tool("pg_restore"),
                "--exit-on-error",
                "--single-transaction",
                "--no-password",
                "--no-owner",
                *conn.args(),
            ]
        else:
            args = [
                self.tool("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "--no-password",
                "-f",
                "-",
                *conn.args(),
            ]
        self._feed(args, conn, chunks)

    def _feed(self, args: list[str], conn: Conn, chunks: Iterable[bytes]) -> None:
        """Stream into a client. On a stream error kill it before EOF: no COMMIT is sent."""
        proc = self.spawn(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.child_env(conn),
            start_new_session=True,
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

    def _restore_parallel(self, conn: Conn, chunks: Iterable[bytes], jobs: int) -> None:
        """pg_restore --jobs needs a seekable file. Only used for unencrypted backups."""
        fd, path = tempfile.mkstemp(prefix="sbbackup-restore-", suffix=".dump")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
            args = [
                self.tool("pg_restore"),
                "--exit-on-error",
                f"--jobs={jobs}",
                "--no-password",
                "--no-owner",
                *conn.args(),
                path,
            ]
            res = subprocess.run(args, capture_output=True, text=True, env=self.child_env(conn))
            if res.returncode != 0:
                raise DatabaseError(
                    f"restore into {conn.redacted()} failed: {first_error(res.stderr)}"
                )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def inventory(self, target: str | None) -> dict[str, Any]:
        session = PsqlSession(self, self.target(target))
        try:
            session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            result = inventory(session)
            session.query("COMMIT")
            return result
        finally:
            session.close()

    def dump_complete(self, fmt: str, tail: bytes) -> bool:
        return DUMP_COMPLETE in tail

    def list_custom(self, chunks: Iterable[bytes]) -> None:
        """``pg_restore --list`` over a custom-format stream: its TOC must parse."""
        proc = self.spawn(
            [self.tool("pg_restore"), "--list"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
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


class _Inventory(threading.Thread):
    """Counts rows in the exported snapshot while pg_dump streams."""

    def __init__(self, session: PsqlSession) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.value: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = inventory(self.session)
        except BaseException as exc:  # noqa: BLE001 - re-raised in result()
            self.error = exc

    def result(self) -> dict[str, Any] | None:
        self.join()
        if isinstance(self.error, SbbackupError):
            raise self.error
        if self.error is not None:
            raise DatabaseError(f"counting rows failed: {self.error}")
        return self.value


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(10)
