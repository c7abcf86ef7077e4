"""``PostgreSQLEngine``: targets, dump, restore and inventory of one source database.

The trust-boundary contract it keeps is in the package's docstring (``postgresql/__init__``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, DatabaseError, SbbackupError, TargetExistsError
from ...pipeline import Writer
from ..base import (
    BeforeCommit,
    DumpResult,
    EngineCheck,
    RestoreRequest,
    Target,
    check_end,
    signals_deferred,
)
from . import dbprops
from .client import TOOLS, Client, control_free, pinned_params, scalar
from .conn import PgConn, url_with_db
from .dump import SNAPSHOT_RE, PgDump
from .inventory import CLUSTER_ID_SQL, catalog_tables, count_rows, object_counts
from .restore import load, read_custom
from .trailer import end_problem

if TYPE_CHECKING:
    import psycopg


STAGING_LOCK = int.from_bytes(b"sbbackup", "big")  # pg_advisory_lock key (fits a bigint)
STAGING_PREFIX = "sbbackup_restore_"  # a restore loads here, then renames it to the target
REPLACED_PREFIX = "sbbackup_replaced_"  # the old target during a swap, dropped right after

# Objects a fresh database from a stock template does not have: initdb's own objects all
# have OIDs below FirstNormalObjectId (16384); large objects have none at all.
USER_OBJECTS_SQL = (
    " OR ".join(
        f"EXISTS (SELECT 1 FROM pg_catalog.{cat} WHERE oid >= 16384)"
        for cat in (
            "pg_namespace",
            "pg_class",
            "pg_proc",
            "pg_type",
            "pg_operator",
            "pg_collation",
            "pg_conversion",
            "pg_ts_config",
            "pg_ts_dict",
            "pg_extension",
            "pg_event_trigger",
            "pg_publication",
            "pg_foreign_data_wrapper",
            "pg_foreign_server",
            "pg_cast",
            "pg_default_acl",
            "pg_language",
        )
    )
    + " OR EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata)"
)
USER_OBJECTS_SQL = "SELECT " + USER_OBJECTS_SQL


@dataclass(frozen=True)
class _Plan:
    """How a staged restore ends: rename into place, or replace an existing target."""

    replace: bool  # an existing target is renamed aside and dropped
    owner: str | None  # the staging database's owner (the old target's); None: this role
    terminate: bool  # end the old target's sessions first (--clean)


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
        self.client = Client(env if env else os.environ)
        self.env = self.client.env
        self.conn = PgConn.source(url, self.env)
        self._resolved: dict[str | None, _Resolved] = {}

    def cancel(self) -> None:
        """Kill every child and cancel every query (a server shutting down); refuse new work."""
        self.client.cancel()

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
        with self.client.session(admin, f"cannot query {admin.redacted()}") as session:
            info = session.info
            pinned = pinned_params(session)
            system_id = str(scalar(session, CLUSTER_ID_SQL))
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
            is_source=self._is_source(target),
        )

    def _is_source(self, target: str | None) -> bool:
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

    def scratch_target(self, name: str, server: str | None) -> str:
        """A database called ``name`` on ``server`` (default: the source's server)."""
        if server is None or "://" not in server:
            return name
        self._parse(server)  # ConfigError for a refused form
        return url_with_db(server, name)

    def drop_target(self, target: str, force: bool = True) -> None:
        """Drop a scratch database. Without ``force`` one that has sessions is left alone
        (DatabaseError), so a cleanup never kills another live drill."""
        self._drop(self._resolve(target), force)

    def _admin(self, r: _Resolved) -> contextlib.AbstractContextManager[Any]:
        return self.client.session(r.admin, f"cannot manage databases on {r.admin.redacted()}")

    def _drop(self, r: _Resolved, force: bool = True) -> None:
        from psycopg import sql

        query = sql.SQL("DROP DATABASE IF EXISTS {}{}").format(
            sql.Identifier(r.conn.dbname), sql.SQL(" WITH (FORCE)" if force else "")
        )
        with self._admin(r) as session:
            self._same_server(session, r)
            session.execute(query)
        r.exists = False  # the pinned target stays; what it holds is gone

    def _same_server(self, session: psycopg.Connection[Any], r: _Resolved) -> None:
        if str(scalar(session, CLUSTER_ID_SQL)) != r.system_id:
            raise DatabaseError(
                f"{r.admin.redacted()} is no longer the server it was (its system identifier "
                "changed): refusing to go on"
            )

    def leftover_targets(self, prefix: str, server: str | None) -> list[str]:
        """Unused databases named ``prefix`` plus 8 hex digits (what ``scratch_target`` makes).
        Unused staging databases of restores that died are dropped on the way."""
        r = self._resolve(server)
        with self._staging_lock(r):
            self._drop_unused_staging(r)
        return [self.scratch_target(n, server) for n in self._unused(r, prefix)]

    def size_estimate(self) -> int:
        with self.client.session(self.conn, f"cannot query {self.conn.redacted()}") as session:
            return int(scalar(session, "SELECT pg_database_size(current_database())"))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "name": self.conn.dbname, "url": self.conn.redacted()}

    # --- checks ------------------------------------------------------------------------
    def server_version_num(self) -> int:
        """The source server's version number (150018); DatabaseError when unreachable."""
        with self.client.session(self.conn, f"cannot query {self.conn.redacted()}") as session:
            return int(session.info.server_version)

    def check(self) -> EngineCheck:
        """pg_dump, psql and pg_restore: found, and no older than the server when it answers."""
        source = self.conn.redacted()
        for name in TOOLS:
            self.client.tool(name)  # "pg_dump not found: ..." before anything runs
        # Three short-lived children at once while the session connects.
        with ThreadPoolExecutor(max_workers=len(TOOLS)) as pool:
            futures = {name: pool.submit(self.client.client_version, name) for name in TOOLS}
            server_num: int | None = None
            unreachable: str | None = None
            try:
                server_num = self.server_version_num()
            except DatabaseError as exc:
                unreachable = exc.message
            versions = {name: f.result() for name, f in futures.items()}
        tools = {name: full for name, (_, full) in versions.items()}
        if server_num is None:
            return EngineCheck(source, tools, unreachable=unreachable)
        server_version = self._compare_versions(versions, server_num)
        return EngineCheck(source, tools, server_version, server_major=server_num // 10000)

    @staticmethod
    def _compare_versions(versions: dict[str, tuple[int, str]], server_num: int) -> str:
        """The server's version ("15.18"); DatabaseError naming a client tool older than it."""
        server_major = server_num // 10000
        server_version = f"{server_major}.{server_num % 10000}"
        for name, (major, full) in versions.items():
            if major < server_major:
                raise DatabaseError(
                    f"{name} {full} is older than the server ({server_version}): install "
                    f"postgresql-client-{server_major} or newer and put it first on PATH"
                )
        return server_version

    # --- dump --------------------------------------------------------------------------
    def dump(
        self, fmt: str, out: Writer, row_counts: bool, progress: Callable[[int], None] | None = None
    ) -> DumpResult:
        """pg_dump in the snapshot of a session that holds it open for the whole dump."""
        import psycopg

        for name in TOOLS:
            self.client.tool(name)
        with ThreadPoolExecutor(max_workers=len(TOOLS)) as pool:
            futures = {name: pool.submit(self.client.client_version, name) for name in TOOLS}
            snap = self.client.snapshot_session(self.conn)
            try:
                versions = {name: f.result() for name, f in futures.items()}
            except BaseException:
                snap.close()
                raise
        what = f"cannot read the catalog of {self.conn.redacted()}"
        try:
            server_version = self._compare_versions(versions, int(snap.info.server_version))
            snapshot = str(scalar(snap, "SELECT pg_export_snapshot()"))
            if not SNAPSHOT_RE.fullmatch(snapshot):
                raise DatabaseError(f"the server sent an invalid snapshot name {snapshot[:40]!r}")
            tables = catalog_tables(snap) if row_counts else []
            objects = object_counts(snap) if row_counts else {}
            properties = dbprops.read(snap)
            run = PgDump(self.client, self.conn, snap, snapshot, self.lock_wait_timeout)
            contents = run.run(fmt, out, tables, row_counts, progress)
            if contents is not None:
                contents["objects"] = objects
            snap.execute("COMMIT")
        except psycopg.Error as exc:
            raise self.client.failure(exc, what) from None
        finally:
            with contextlib.suppress(Exception):
                snap.close()
        database = {
            "engine": self.name,
            "name": self.conn.dbname,
            "serverVersion": server_version,
            "properties": properties,
        }
        return DumpResult(database=database, tool_version=versions["pg_dump"][1], contents=contents)

    # --- restore -----------------------------------------------------------------------
    def restore(
        self,
        fmt: str,
        chunks: Iterable[bytes],
        request: RestoreRequest,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Stage, validate, swap (``Engine.restore``). The dump loads into a new database
        ``sbbackup_restore_<8 hex>`` on the target's server; ``before_commit`` judges it;
        then one transaction renames it to the target (an existing target is renamed aside
        first, and dropped after). Any exception before the swap drops the staging database;
        a signal during the swap waits for it to end. ``into_existing`` loads straight into
        the target (not atomic)."""
        r = self._resolve(request.target)
        plan = self._plan(r, request)
        if plan is None:  # --into-existing
            load(self.client, fmt, r.conn, chunks, request)
            self._apply_properties(r, request)
            if before_commit is not None:
                before_commit(request.target)
            return
        # A session of our own in the staging database until the swap: no other run takes
        # it for a leftover and drops it (cleanups skip databases with sessions). The staging
        # lock covers the moments it has none: from its CREATE until the guard is in, and
        # from the guard's close until the swap has committed.
        guard = contextlib.ExitStack()
        with self._staging_lock(r):
            staged = self._stage(r, plan, request)
            try:
                guard.enter_context(
                    self.client.session(staged.conn, f"cannot reach {staged.conn.redacted()}")
                )
            except BaseException:
                with signals_deferred(), contextlib.suppress(SbbackupError):
                    self._drop(staged)
                raise
        try:
            with guard:
                load(self.client, fmt, staged.conn, chunks, request)
                self._apply_properties(staged, request)  # they follow it through the rename
                if before_commit is not None:
                    before_commit(self._staged_target(request.target, staged.conn.dbname))
                # A swap is one transaction: never stopped halfway.
                with signals_deferred(), self._staging_lock(r):
                    guard.close()
                    self._swap_explained(r, staged, plan)
        except BaseException:
            with signals_deferred(), contextlib.suppress(SbbackupError):
                self._drop(staged)  # gone already after a swap: IF EXISTS
            raise

    def _swap_explained(self, r: _Resolved, staged: _Resolved, plan: _Plan) -> None:
        try:
            self._swap(r, staged, plan)
        except DatabaseError as exc:
            if "being accessed by other users" not in exc.message:
                raise
            raise DatabaseError(
                f"{exc.message} (hint: close its sessions, or use --clean, which terminates them)"
            ) from None

    @contextlib.contextmanager
    def _staging_lock(self, r: _Resolved) -> Iterator[None]:
        """The server-wide advisory lock every sbbackup run on ``r``'s server holds while it
        drops leftovers, and while its own staging database has no session of its own (just
        created, or about to be renamed): a cleanup never takes a live run's for a leftover.
        Held by a session on the maintenance database (advisory locks are per database)."""
        with self._admin(r) as session:
            session.execute("SELECT pg_advisory_lock(%s)", (STAGING_LOCK,))
            yield

    def _plan(self, r: _Resolved, request: RestoreRequest) -> _Plan | None:
        """What this restore does with what is there; None: load into the target itself.
        Refusals come here, before anything is created."""
        name = control_free(r.conn.dbname)
        with self._admin(r) as session:
            self._same_server(session, r)
            row = session.execute(
                "SELECT pg_get_userbyid(datdba), pg_has_role(datdba, 'MEMBER') "
                "FROM pg_database WHERE datname = %s",
                (r.conn.dbname,),
            ).fetchone()
        r.exists = row is not None
        if row is None:
            if request.create_target or request.clean or request.must_be_new:
                return _Plan(replace=False, owner=None, terminate=False)
            raise DatabaseError(
                f"target database {name} does not exist (hint: create it with --create-target)"
            )
        if request.must_be_new:
            raise TargetExistsError(f"target database {name} already exists")
        owner = str(row[0]) if row[1] else None  # kept where this role may give it away
        if request.clean:
            return _Plan(replace=True, owner=owner, terminate=True)
        if request.into_existing:
            return None
        if not self._is_empty(r):
            raise TargetExistsError(
                f"target database {name} is not empty: use --clean to replace it, or "
                "--into-existing to load into it (not atomic)"
            )
        return _Plan(replace=True, owner=owner, terminate=False)

    def _is_empty(self, r: _Resolved) -> bool:
        """No user objects: nothing a fresh ``CREATE DATABASE`` from a stock template lacks."""
        with self.client.session(r.conn, f"cannot query {r.conn.redacted()}") as session:
            return not scalar(session, USER_OBJECTS_SQL)

    def _apply_properties(self, r: _Resolved, request: RestoreRequest) -> None:
        """Re-apply the backup's database settings, comment and ACL (``dbprops.apply``)."""
        if request.database_properties:
            with self.client.session(r.conn, f"cannot set up {r.conn.redacted()}") as session:
                dbprops.apply(session, r.conn.dbname, request.properties)

    def _stage(self, r: _Resolved, plan: _Plan, request: RestoreRequest) -> _Resolved:
        """Create the staging database beside the target (after dropping unused leftovers
        of runs that died), pinned to the same server, with the backup's encoding and
        locale (``dbprops.create``). The caller holds the staging lock."""
        self._drop_unused_staging(r)
        name = STAGING_PREFIX + secrets.token_hex(4)
        staged = _Resolved(
            conn=r.conn.with_db(name),
            admin=r.admin,
            system_id=r.system_id,
            exists=True,
            server_version_num=r.server_version_num,
        )
        with self._admin(r) as session:
            self._same_server(session, r)
            if request.database_properties:
                dbprops.check_roles(session, request.properties)  # before anything is made
            dbprops.create(session, name, request.properties, plan.owner)
        return staged

    def _staged_target(self, target: str | None, name: str) -> str:
        """``name`` spelled the way ``target`` is (a URL, or a bare name on the source's
        server), pinned where the target is."""
        spelled = url_with_db(target, name) if target and "://" in target else name
        r = self._resolved.get(target)
        if r is not None:
            self._resolved[spelled] = _Resolved(
                r.conn.with_db(name), r.admin, r.system_id, True, r.server_version_num
            )
        return spelled

    def _swap(self, r: _Resolved, staged: _Resolved, plan: _Plan) -> None:
        """One transaction: the old target aside, the staged copy in. Then drop the old one.
        ALTER DATABASE RENAME runs in a transaction block and waits up to five seconds for
        the sessions of a renamed database to end, so a failure anywhere in the block rolls
        both renames back."""
        from psycopg import sql

        target = sql.Identifier(r.conn.dbname)
        aside = REPLACED_PREFIX + secrets.token_hex(4)
        with self._admin(r) as session:
            self._same_server(session, r)
            with session.transaction():
                if plan.replace:
                    if plan.terminate:
                        session.execute(
                            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()",
                            (r.conn.dbname,),
                        )
                    session.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            target, sql.Identifier(aside)
                        )
                    )
                session.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(staged.conn.dbname), target
                    )
                )
            r.exists = True
            if plan.replace:
                session.execute(
                    sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(aside))
                )

    def _drop_unused_staging(self, r: _Resolved) -> None:
        """Drop staging and replaced databases of runs that died (kill -9): those nobody is
        connected to. A live restore holds a session in its own."""
        for prefix in (STAGING_PREFIX, REPLACED_PREFIX):
            for name in self._unused(r, prefix):
                old = _Resolved(r.conn.with_db(name), r.admin, r.system_id, True, 0)
                with contextlib.suppress(DatabaseError):
                    self._drop(old, force=False)

    def _unused(self, r: _Resolved, prefix: str) -> list[str]:
        regex = "^" + re.escape(prefix) + "[0-9a-f]{8}$"
        # One with sessions belongs to a live run: skip it here rather than have DROP wait
        # five seconds for its sessions and then fail.
        with self._admin(r) as session:
            rows = session.execute(
                "SELECT datname FROM pg_database d WHERE datname ~ %s AND NOT EXISTS "
                "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname) ORDER BY 1",
                (regex,),
            ).fetchall()
        return [str(row[0]) for row in rows if re.fullmatch(regex, str(row[0]))]

    def inventory(self, target: str | None) -> dict[str, Any]:
        """Tables with exact row counts and object counts, in one REPEATABLE READ snapshot."""
        conn = self._resolve(target).conn
        what = f"cannot count rows in {conn.redacted()}"
        with self.client.session(conn, what, snapshot=True) as session:
            tables = catalog_tables(session)
            result = {
                "tables": count_rows(session, tables),
                "objects": object_counts(session),
                "properties": dbprops.read(session),
            }
            session.rollback()
            return result

    def check_structure(self, fmt: str, chunks: Iterable[bytes]) -> None:
        """Custom: ``pg_restore`` must read every block (IntegrityError). Plain: the end
        pg_dump writes (``trailer``; IncompleteDumpError after the last chunk)."""
        if fmt == "custom":
            read_custom(self.client, chunks)
        else:
            check_end(chunks, end_problem)
