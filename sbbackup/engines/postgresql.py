"""PostgreSQL: psycopg 3 for every query; pg_dump, psql and pg_restore dump and load.

Trust boundaries. What a database contains (names, settings, catalog rows, even from the server
being backed up) is data, never code:

- every query goes through psycopg; identifiers are composed with ``psycopg.sql.Identifier``
  and values travel as parameters; psql's stdin carries only a dump being restored, and
  nothing is parsed back out of a client tool's text output;
- row counts of a plain dump come from the dump stream itself (``copycount``): each
  ``COPY ... FROM stdin`` block is counted as it streams past, so they cover exactly what
  pg_dump wrote and what a restore loads. A custom-format dump is counted by a session in
  pg_dump's exported snapshot while pg_dump runs;
- a target is resolved once (``resolve_target``): connect, read the server's system identifier
  and the host and port actually used, and pin them for every later step (create, drop, load,
  validate), so a name that resolves elsewhere later cannot redirect a DROP;
- children get a minimal environment; a password reaches them only through a private passfile.
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from ..errors import (
    ConfigError,
    DatabaseError,
    IntegrityError,
    InterruptedError_,
    SbbackupError,
    TargetExistsError,
    redact_secrets,
)
from ..pipeline import Writer, pump_fd
from .base import ClientTools, DumpResult, IncompleteDumpError, Target, read_tail
from .pgconn import PgConn, child_env, passfile_for

if TYPE_CHECKING:
    import psycopg

TOOLS = ("pg_dump", "psql", "pg_restore")
INSTALL_HINT = "install the PostgreSQL client tools (e.g. apt install postgresql-client)"
DUMP_COMPLETE = b"-- PostgreSQL database dump complete"
SNAPSHOT_RE = re.compile(r"[0-9A-F]{1,16}-[0-9A-F]{1,16}(-[0-9]{1,10})?")
COUNT_BATCH = 200

USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"
)
NOT_EXT = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.classid = "
    "'{cat}'::regclass AND d.deptype = 'e')"
)
# The tables whose rows pg_dump writes and a restore loads: ordinary tables only. Not a
# partitioned parent (its leaves carry the rows), a materialized view (the restore refreshes
# it), a foreign table (its rows live elsewhere) or an extension's member.
TABLES_SQL = f"""SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {USER_NS} AND {NOT_EXT.format(oid="c.oid", cat="pg_class")}
ORDER BY 3"""


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
OBJECT_KINDS = frozenset(
    {
        "sequences",
        "views",
        "materializedViews",
        "indexes",
        "functions",
        "types",
        "triggers",
        "constraints",
        "largeObjects",
    }
)


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
    """The line of a client tool's stderr that says what went wrong, fit for one line of a
    message (the server's text may hold a name with control characters)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() or "fatal" in ln.lower() or "failed" in ln.lower():
            return redact_secrets(_printable(ln))
    return redact_secrets(_printable(lines[-1])) if lines else "no message"


def _printable(text: str, limit: int = 2000) -> str:
    """``text`` with control characters (escapes, newlines, BEL) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:limit]


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
    return DatabaseError(redact_secrets(_printable(f"{what}: {text}")))


def _control_free(text: str) -> str:
    """A name the server sent, fit for one line of a message."""
    return _printable(text, 200)


@dataclass
class _Resolved:
    """A target after ``resolve_target``: pinned to the server it reached."""

    conn: PgConn  # the target database, host and port pinned
    admin: PgConn  # the maintenance database on the same server
    system_id: str
    exists: bool
    server_version_num: int


class PostgreSQLEngine:
    name = "postgresql"
    formats: tuple[str, ...] = ("plain", "custom")
    file_extension = {"plain": ".sql", "custom": ".dump"}

    def __init__(
        self, url: str | None, env: Mapping[str, str] | None = None, lock_wait_timeout: int = 300
    ) -> None:
        """``env``: the environment libpq and the children see (empty: this process's)."""
        self.lock_wait_timeout = lock_wait_timeout
        self.env = dict(env) if env else dict(os.environ)
        self.conn = PgConn.source(url, self.env)
        self._tools: dict[str, str] = {}
        self._resolved: dict[str | None, _Resolved] = {}
        # Long-running children and open sessions, for cancel().
        self._children: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._cancelled = threading.Event()

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

    @contextlib.contextmanager
    def _child(self, conn: PgConn | None) -> Iterator[dict[str, Any]]:
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

    @contextlib.contextmanager
    def session(self, conn: PgConn, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A session whose errors become DatabaseError naming ``what``; always closed."""
        import psycopg

        session = self.connect(conn)
        try:
            yield session
        except psycopg.Error as exc:
            if self._cancelled.is_set():
                raise InterruptedError_("interrupted") from None
            raise pg_error(exc, what) from None
        finally:
            with contextlib.suppress(Exception):
                session.close()

    @staticmethod
    def _scalar(session: psycopg.Connection[Any], query: Any, params: Any = None) -> Any:
        row = session.execute(query, params).fetchone()
        if row is None or len(row) < 1:
            raise DatabaseError("the server answered a query with no value")
        return row[0]

    # --- targets -----------------------------------------------------------------------
    def _parse(self, target: str | None) -> PgConn:
        """``None`` is the source; a bare name is a database on the source's server."""
        if target is None:
            return self.conn
        if target.startswith(("postgresql://", "postgres://")):
            return PgConn.target(target, self.env)
        if re.match(r"\s*\w+\s*=", target):  # never echoed: it may hold a password
            raise ConfigError(
                "a target must be a postgresql:// URL or a database name, not a libpq connection "
                "string (keep its password in ~/.pgpass)"
            )
        if "://" not in target and "/" not in target and target and "\0" not in target:
            return self.conn.with_db(target)
        raise ConfigError("target must be a postgresql:// URL or a database name")

    def _resolve(self, target: str | None) -> _Resolved:
        """Connect once to the target's server (its maintenance database: the target may not
        exist yet) and pin the host, address and port it reached for every later step."""
        if target in self._resolved:
            return self._resolved[target]
        if target is not None and "://" not in target and "/" not in target:
            base = self._resolve(None)  # a bare name: the source's (pinned) server
            conn = base.conn.with_db(self._parse(target).dbname)
        else:
            conn = self._parse(target)
        admin = conn.with_db("postgres" if conn.dbname != "postgres" else "template1")
        with self.session(admin, f"cannot query {admin.redacted()}") as session:
            info = session.info
            pinned = pinned_params(session)
            system_id = str(self._scalar(session, CLUSTER_ID_SQL))
            exists = (
                session.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (conn.dbname,)
                ).fetchone()
                is not None
            )
            version = int(info.server_version)
        resolved = _Resolved(
            conn=conn.with_params(**pinned),
            admin=admin.with_params(**pinned),
            system_id=system_id,
            exists=exists,
            server_version_num=version,
        )
        self._resolved[target] = resolved
        return resolved

    def resolve_target(self, target: str | None) -> Target:
        """Connect to ``target``'s server and say what it is: DatabaseError when unreachable
        (a restore never guesses), ConfigError for a refused form."""
        r = self._resolve(target)
        return Target(
            key=f"postgresql:{r.system_id}:{r.conn.dbname}",
            display=r.conn.redacted(),
            exists=r.exists,
            is_source=self.is_source(target),
        )

    def is_source(self, target: str | None) -> bool:
        """Is ``target`` the source database, however it is spelled?

        Names are unique within a cluster, so a different (decoded) name is never the source.
        The same name is the source when both reach the same cluster
        (``pg_control_system().system_identifier``). When the source does not answer, the
        answer is yes: a needless confirmation is cheap, a restore over production is not.
        A target that does not answer raises: it cannot be restored into anyway.
        """
        t = self._parse(target)
        if t.dbname != self.conn.dbname:
            return False
        if target is None or t.params == self.conn.params:
            return True
        theirs = self._resolve(target).system_id
        try:
            ours = self._resolve(None).system_id
        except DatabaseError:
            return True
        return theirs == ours

    def redact(self, target: str | None) -> str:
        return self._parse(target).redacted()

    def scratch_target(self, name: str, server: str | None) -> str:
        """A database called ``name`` on ``server`` (default: the source's server)."""
        if server is None or "://" not in server:
            return name
        conn = self._parse(server).with_db(name)
        scheme, rest = server.split("://", 1)
        netloc, _, tail = rest.partition("/")
        _, q, query = tail.partition("?")
        from urllib.parse import quote

        return f"{scheme}://{netloc}/{quote(conn.dbname)}{q}{query}"

    def drop_target(self, target: str, force: bool = True) -> None:
        """Drop a scratch database. Without ``force`` one that has sessions is left alone
        (DatabaseError), so a cleanup never kills another live drill."""
        self._drop(self._resolve(target), force)

    def _admin(self, r: _Resolved) -> contextlib.AbstractContextManager[Any]:
        return self.session(r.admin, f"cannot manage databases on {r.admin.redacted()}")

    def _drop(self, r: _Resolved, force: bool = True) -> None:
        from psycopg import sql

        query = sql.SQL("DROP DATABASE IF EXISTS {}{}").format(
            sql.Identifier(r.conn.dbname), sql.SQL(" WITH (FORCE)" if force else "")
        )
        with self._admin(r) as session:
            self._same_server(session, r)
            session.execute(query)

    def _same_server(self, session: psycopg.Connection[Any], r: _Resolved) -> None:
        if str(self._scalar(session, CLUSTER_ID_SQL)) != r.system_id:
            raise DatabaseError(
                f"{r.admin.redacted()} is no longer the server it was (its system identifier "
                "changed): refusing to go on"
            )

    def leftover_targets(self, prefix: str, server: str | None) -> list[str]:
        """Unused databases named ``prefix`` plus 8 hex digits (what ``scratch_target`` makes)."""
        r = self._resolve(server)
        regex = "^" + re.escape(prefix) + "[0-9a-f]{8}$"
        # One with sessions belongs to a live drill: skip it here rather than have DROP wait
        # five seconds for its sessions and then fail.
        with self._admin(r) as session:
            rows = session.execute(
                "SELECT datname FROM pg_database d WHERE datname ~ %s AND NOT EXISTS "
                "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname) ORDER BY 1",
                (regex,),
            ).fetchall()
        names = [str(row[0]) for row in rows]
        return [self.scratch_target(n, server) for n in names if re.fullmatch(regex, n)]

    def size_estimate(self) -> int:
        with self.session(self.conn, f"cannot query {self.conn.redacted()}") as session:
            return int(self._scalar(session, "SELECT pg_database_size(current_database())"))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "name": self.conn.dbname, "url": self.conn.redacted()}

    # --- checks ------------------------------------------------------------------------
    def server_version_num(self) -> int:
        """The source server's version number (150018); DatabaseError when unreachable."""
        with self.session(self.conn, f"cannot query {self.conn.redacted()}") as session:
            return int(session.info.server_version)

    def check(self) -> dict[str, Any]:
        for name in TOOLS:
            self.tool(name)  # "pg_dump not found: ..." before anything runs
        # Three short-lived children at once while the session connects.
        with ThreadPoolExecutor(max_workers=len(TOOLS)) as pool:
            futures = {name: pool.submit(self.client_version, name) for name in TOOLS}
            server_num = self.server_version_num()
            versions = {name: f.result() for name, f in futures.items()}
        return self._compare_versions(versions, server_num)

    def tools(self) -> ClientTools:
        """pg_dump, psql and pg_restore: found, and no older than the server when it answers."""
        versions = {name: self.client_version(name) for name in TOOLS}  # DatabaseError if missing
        found = {name: full for name, (_, full) in versions.items()}
        try:
            server = self.server_version_num() // 10000
        except DatabaseError:
            return ClientTools(found, None)
        older = [f"{name} {full}" for name, (major, full) in versions.items() if major < server]
        if older:
            raise DatabaseError(
                f"{', '.join(older)} older than the server ({server}): install "
                f"postgresql-client-{server} or newer and put it first on PATH"
            )
        return ClientTools(found, server)

    def _compare_versions(
        self, versions: dict[str, tuple[int, str]], server_num: int
    ) -> dict[str, Any]:
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
        """pg_dump in the snapshot of a session that holds it open for the whole dump."""
        import psycopg

        for name in TOOLS:
            self.tool(name)
        with ThreadPoolExecutor(max_workers=len(TOOLS)) as pool:
            futures = {name: pool.submit(self.client_version, name) for name in TOOLS}
            snap = self._snapshot_session()
            try:
                versions = {name: f.result() for name, f in futures.items()}
            except BaseException:
                snap.close()
                raise
        what = f"cannot read the catalog of {self.conn.redacted()}"
        try:
            info = self._compare_versions(versions, int(snap.info.server_version))
            snapshot = str(self._scalar(snap, "SELECT pg_export_snapshot()"))
            if not SNAPSHOT_RE.fullmatch(snapshot):
                raise DatabaseError(f"the server sent an invalid snapshot name {snapshot[:40]!r}")
            tables = catalog_tables(snap) if row_counts else []
            objects = object_counts(snap) if row_counts else {}
            contents = self._dump_with(fmt, snapshot, out, snap, tables, row_counts, progress)
            if contents is not None:
                contents["objects"] = objects
            snap.execute("COMMIT")
        except psycopg.Error as exc:
            if self._cancelled.is_set():
                raise InterruptedError_("interrupted") from None
            raise pg_error(exc, what) from None
        finally:
            with contextlib.suppress(Exception):
                snap.close()
        database = {
            "engine": self.name,
            "name": self.conn.dbname,
            "serverVersion": info["serverVersion"],
        }
        return DumpResult(database=database, tool_version=info["pgDumpVersion"], contents=contents)

    def _snapshot_session(self) -> psycopg.Connection[Any]:
        import psycopg

        session = self.connect(self.conn, autocommit=False)
        session.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        session.read_only = True
        return session

    def _dump_args(self, fmt: str, snapshot: str, conn: PgConn) -> list[str]:
        args = [
            self.tool("pg_dump"),
            "--no-password",
            f"--snapshot={snapshot}",
            f"--lock-wait-timeout={self.lock_wait_timeout}s",
        ]
        args += ["--format=custom", "--compress=0"] if fmt == "custom" else ["--format=plain"]
        return [*args, "-d", conn.conninfo()]

    def _dump_with(
        self,
        fmt: str,
        snapshot: str,
        out: Writer,
        snap: psycopg.Connection[Any],
        tables: list[tuple[str, str, str]],
        row_counts: bool,
        progress: Callable[[int], None] | None,
    ) -> dict[str, Any] | None:
        conn = self.conn.with_params(**pinned_params(snap))  # pg_dump imports this snapshot
        counter = None
        if row_counts and fmt == "plain":
            from .copycount import CopyCounter

            counter = CopyCounter(dump_encoding(snap))
        sink: Writer = _Tee(out, counter) if counter is not None else out
        scan = _SnapshotCounts(snap, tables) if row_counts and fmt != "plain" else None
        with self._child(conn) as child:
            proc = self.spawn(
                self._dump_args(fmt, snapshot, conn),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                **child,
            )
            assert proc.stdout is not None and proc.stderr is not None
            err = StderrCollector(proc.stderr)
            err.start()
            try:
                if scan is not None:
                    scan.start()
                pump_fd(proc.stdout.fileno(), sink, progress)
                code = proc.wait()
            except BaseException:
                kill_group(proc)
                if scan is not None:
                    with contextlib.suppress(Exception):
                        snap.cancel_safe(timeout=2)
                    scan.join()
                raise
            finally:
                proc.stdout.close()
        if code != 0:
            if scan is not None:
                failed_first = not scan.is_alive() and scan.error is not None
                if scan.is_alive():
                    with contextlib.suppress(Exception):
                        snap.cancel_safe(timeout=2)
                scan.join()
                if failed_first:  # its failure ended the snapshot pg_dump wanted to import
                    scan.result()
            msg = first_error(err.text())
            if "timeout" in msg.lower():
                msg += (
                    f" (a table could not be locked within {self.lock_wait_timeout}s:"
                    " another session holds an exclusive lock; see database.lockWaitTimeout)"
                )
            raise DatabaseError(f"pg_dump failed (exit {code}): {msg}")
        if counter is not None:
            return {"tables": stream_counts(counter.finish(), tables)}
        if scan is not None:
            return {"tables": scan.result()}
        return None

    # --- restore -----------------------------------------------------------------------
    def prepare_target(
        self, target: str | None, create_target: bool, clean: bool, must_be_new: bool = False
    ) -> tuple[_Resolved, bool]:
        """The target, reachable; and whether this restore created it (so owns it)."""
        from psycopg import errors as pgerrors
        from psycopg import sql

        r = self._resolve(target)
        name = r.conn.dbname
        if not (create_target or clean or must_be_new):
            if not r.exists:
                raise DatabaseError(f"target database {_control_free(name)} does not exist")
            return r, False
        ident = sql.Identifier(name)
        with self._admin(r) as session:
            self._same_server(session, r)
            exists = (
                session.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                is not None
            )
            if exists and must_be_new:
                raise TargetExistsError(f"target database {_control_free(name)} already exists")
            if exists and clean:
                session.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
                exists = False
            if exists:
                return r, False
            try:
                session.execute(sql.SQL("CREATE DATABASE {}").format(ident))
            except pgerrors.DuplicateDatabase:
                raise TargetExistsError(
                    f"target database {_control_free(name)} already exists"
                ) from None
        r.exists = True
        return r, True

    def restore(
        self,
        fmt: str,
        chunks: Iterable[bytes],
        target: str | None,
        *,
        create_target: bool,
        clean: bool,
        jobs: int,
        must_be_new: bool = False,
    ) -> None:
        r, created = self.prepare_target(target, create_target, clean, must_be_new)
        try:
            self._load(fmt, r.conn, chunks, jobs)
        except BaseException:
            # A database this restore created holds nothing worth keeping after a failure (a
            # parallel pg_restore is not one transaction): drop it rather than leave a half.
            if created:
                with contextlib.suppress(SbbackupError):
                    self._drop(r)
            raise

    def _load(self, fmt: str, conn: PgConn, chunks: Iterable[bytes], jobs: int) -> None:
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
                "-d",
                conn.conninfo(),
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
                "-d",
                conn.conninfo(),
            ]
        self._feed(args, conn, chunks)

    def _feed(self, args: list[str], conn: PgConn, chunks: Iterable[bytes]) -> None:
        """Stream into a client. On a stream error kill it before EOF: no COMMIT is sent."""
        with self._child(conn) as child:
            proc = self.spawn(
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

    def _restore_parallel(self, conn: PgConn, chunks: Iterable[bytes], jobs: int) -> None:
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
                "-d",
                conn.conninfo(),
                path,
            ]
            with self._child(conn) as child:
                proc = self.spawn(
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
                raise DatabaseError(
                    f"restore into {conn.redacted()} failed: {first_error(err.text())}"
                )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def inventory(self, target: str | None) -> dict[str, Any]:
        """Tables with exact row counts and object counts, in one REPEATABLE READ snapshot."""
        import psycopg

        conn = self._resolve(target).conn
        session = self.connect(conn, autocommit=False)
        try:
            session.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            session.read_only = True
            tables = catalog_tables(session)
            result = {"tables": count_rows(session, tables), "objects": object_counts(session)}
            session.rollback()
            return result
        except psycopg.Error as exc:
            if self._cancelled.is_set():
                raise InterruptedError_("interrupted") from None
            raise pg_error(exc, f"cannot count rows in {conn.redacted()}") from None
        finally:
            with contextlib.suppress(Exception):
                session.close()

    def check_structure(self, fmt: str, chunks: Iterable[bytes]) -> None:
        """Custom: ``pg_restore --list`` must parse the TOC. Plain: the completion marker."""
        if fmt == "custom":
            self._list_custom(chunks)
        elif DUMP_COMPLETE not in read_tail(chunks):
            raise IncompleteDumpError()

    def _list_custom(self, chunks: Iterable[bytes]) -> None:
        """``pg_restore --list`` over a custom-format stream: its TOC must parse."""
        proc = self.spawn(
            [self.tool("pg_restore"), "--list"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(self.env, None),
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


CLUSTER_ID_SQL = "SELECT system_identifier::text FROM pg_control_system()"


def dump_encoding(session: psycopg.Connection[Any]) -> str:
    """The Python codec of the names in a plain dump: pg_dump writes in the database's
    encoding (SQL_ASCII: bytes, read as Latin-1 as ``connect`` makes psycopg read them)."""
    from psycopg._encodings import pg2pyenc

    name = str(session.info.parameter_status("server_encoding") or "UTF8")
    return "latin-1" if name == "SQL_ASCII" else str(pg2pyenc(name.encode()))


def pinned_params(session: psycopg.Connection[Any]) -> dict[str, str]:
    """The host, address and port a session actually reached (one of a multi-host list, the
    address a name resolved to), so the next connection reaches the same server."""
    info = session.info
    pinned = {"host": str(info.host), "port": str(info.port)}
    hostaddr = getattr(info, "hostaddr", "")
    if hostaddr and not pinned["host"].startswith("/"):
        pinned["hostaddr"] = str(hostaddr)
    return pinned


# --- catalog queries (psycopg, composed) ---------------------------------------------------


def catalog_tables(session: psycopg.Connection[Any]) -> list[tuple[str, str, str]]:
    """(schema, table, key) of every table whose rows a dump carries; ``key`` is the
    manifest's name for it, ``format('%I.%I')``."""
    rows = session.execute(TABLES_SQL).fetchall()
    out: list[tuple[str, str, str]] = []
    for row in rows:
        if len(row) != 3 or not all(isinstance(v, str) for v in row):
            raise DatabaseError("the server answered the table list with unexpected data")
        out.append((row[0], row[1], row[2]))
    return out


def object_counts(session: psycopg.Connection[Any]) -> dict[str, int]:
    objects: dict[str, int] = {}
    for row in session.execute(OBJECTS_SQL).fetchall():
        try:
            kind, n = str(row[0]), int(row[1])
        except (IndexError, TypeError, ValueError):
            raise DatabaseError(
                "the server answered the object counts with unexpected data"
            ) from None
        if kind in OBJECT_KINDS:
            objects[kind] = n
    return objects


def count_rows(
    session: psycopg.Connection[Any], tables: list[tuple[str, str, str]]
) -> dict[str, int]:
    """``SELECT count(*)`` of every table, a batch per query, names composed as identifiers."""
    from psycopg import sql

    counts: dict[str, int] = {}
    for start in range(0, len(tables), COUNT_BATCH):
        batch = tables[start : start + COUNT_BATCH]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, count(*) FROM {}.{}").format(
                sql.Literal(i), sql.Identifier(schema), sql.Identifier(table)
            )
            for i, (schema, table, _) in enumerate(batch)
        )
        for row in session.execute(query).fetchall():
            try:
                i, n = int(row[0]), int(row[1])
                key = batch[i][2] if 0 <= i < len(batch) else None
            except (IndexError, TypeError, ValueError):
                key = None
            if key is None:
                raise DatabaseError("the server answered a row count with unexpected data")
            counts[key] = n
    return counts


def stream_counts(
    streamed: dict[tuple[str, str], int], tables: list[tuple[str, str, str]]
) -> dict[str, int]:
    """The rows counted in the dump stream, for the tables the catalog says a dump carries.

    pg_dump writes a COPY block for every such table, an empty one included. A table without
    one means psql would not load it from this file (a function or type named ``begin`` makes
    psql's BEGIN ATOMIC heuristic swallow the rest of the dump, for one): that is no backup,
    so it fails here rather than at the next restore.
    """
    missing = [key for schema, table, key in tables if (schema, table) not in streamed]
    if missing:
        names = ", ".join(_control_free(k) for k in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise IntegrityError(
            f"the plain dump carries no data that psql would load for {names}{more}: "
            "psql could not restore it (an object named like a keyword, such as a function "
            "called begin, can cause this); use backup.format custom for this database"
        )
    return {key: streamed[(schema, table)] for schema, table, key in tables}


class _Tee:
    """Writes through to ``out`` and lets the COPY counter see every byte."""

    def __init__(self, out: Writer, counter: Any) -> None:
        self.out, self.counter = out, counter

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.counter.feed(data)
        return self.out.write(data)


class _SnapshotCounts(threading.Thread):
    """Counts rows in the exported snapshot while pg_dump streams (custom format)."""

    def __init__(
        self, session: psycopg.Connection[Any], tables: list[tuple[str, str, str]]
    ) -> None:
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


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(10)
