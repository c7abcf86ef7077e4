"""The fake PostgreSQL server (tests/helpers/fakepg.py) against real clients: psycopg 3, psql and
pg_restore from PostgreSQL 15. The hostile-server tests rely on it answering like a server."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from helpers.fakepg import (
    HOST,
    Command,
    CopyIn,
    CopyOut,
    Disconnect,
    Error,
    FakePG,
    Query,
    Rows,
    Sleep,
    default_response,
    guess_type,
    parse_select,
    split_statements,
)
from helpers.pgcluster import Cluster

CRAFTED = [
    ["x'; \\! touch CANARY; --", 1],
    ['"\n\\! touch CANARY\n', 2],
    ["a\x1fb", 3],
    ["ŝ" * 31 + "a", 4],  # 63 bytes of UTF-8
]


def things(query: Query) -> Rows | None:
    if "things" in query.text:
        return Rows(["name", "n"], CRAFTED)
    return None


def psql(
    srv: FakePG, *args: str, password: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(
        ["psql", "-X", "-At", "--no-password", "-d", srv.conninfo(**extra), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_listens_on_its_own_loopback_address_and_stops() -> None:
    with FakePG() as srv:
        assert srv.host == HOST != "127.0.0.1" and srv.port > 0
        assert srv.url("db") == f"postgresql://postgres@{HOST}:{srv.port}/db"
        with psycopg.connect(srv.conninfo(), connect_timeout=5) as conn:
            assert conn.info.host == HOST and conn.info.port == srv.port
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(srv.conninfo(), connect_timeout=2)
    assert all(not t.is_alive() for t in srv._threads)


def test_psycopg_trust_parametrised_select_gets_crafted_rows() -> None:
    with FakePG(things) as srv:
        with psycopg.connect(srv.conninfo("victim", application_name="probe")) as conn:
            rows = conn.execute(
                "SELECT name, n FROM things WHERE kind = %s AND n > %s AND big = %s AND f = %s",
                ["x'; --", 5, 10**30, 2.5],
            ).fetchall()
            assert rows == [tuple(r) for r in CRAFTED]  # ints arrive as int8, names exactly
            binary = conn.cursor(binary=True).execute("SELECT name, n FROM things").fetchall()
            assert binary == rows
            assert conn.execute("SELECT %s::text, 7", ["echo"]).fetchone() == ("echo", 7)
        session = srv.wait_closed()[0]
        assert session.user == "postgres" and session.database == "victim"
        assert session.startup["application_name"] == "probe"
        assert session.password is None and session.authenticated and session.terminated
        query = next(q for q in session.queries if "kind" in q.text)
        assert query.text == (
            "SELECT name, n FROM things WHERE kind = $1 AND n > $2 AND big = $3 AND f = $4"
        )
        assert query.params == ("x'; --", "5", "1" + "0" * 30, "2.5")
        assert [q.text for q in session.queries][0] == "BEGIN"  # psycopg opened a transaction


@pytest.mark.parametrize("auth", ["cleartext", "md5"])
def test_psycopg_password_is_recorded_exactly(auth: str) -> None:
    secret = "p@ss:w/rd'\"\\ é"
    with FakePG(auth=auth, password=secret) as srv:
        with psycopg.connect(srv.conninfo(password=secret)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(srv.conninfo(password="wrong"))
        good, bad = srv.sessions
        if auth == "cleartext":
            assert (good.password, bad.password) == (secret, "wrong")
        else:
            assert good.password == good.md5_of(secret) and bad.password == bad.md5_of("wrong")
        assert good.authenticated and not bad.authenticated


def test_psql_connects_and_runs_select_1() -> None:
    with FakePG() as srv:
        res = psql(srv, "-c", "select 1")
        assert (res.returncode, res.stdout, res.stderr) == (0, "1\n", "")
        session = srv.sessions[0]
        assert session.startup["application_name"] == "psql"
        assert [q.text for q in session.queries] == ["select 1"]
        assert session.ssl_requests == 1  # sslmode=prefer asked first, was told no


def test_psql_cleartext_sends_pgpassword_and_none_without_it() -> None:
    with FakePG(auth="cleartext") as srv:
        assert psql(srv, "-c", "select 1", password="from-env").returncode == 0
        res = psql(srv, "-c", "select 1")
        assert res.returncode == 2 and "no password supplied" in res.stderr
        assert [s.password for s in srv.sessions] == ["from-env", None]
        assert srv.passwords() == ["from-env"]


def test_psql_sees_crafted_rows_errors_and_several_statements() -> None:
    def responder(query: Query) -> Rows | Error | None:
        if "missing" in query.text:
            return Error('relation "missing" does not exist', "42P01")
        return things(query)

    with FakePG(responder) as srv:
        res = psql(srv, "-F", "|", "-c", "SELECT name, n FROM things")
        assert res.returncode == 0
        assert res.stdout == "".join(f"{name}|{n}\n" for name, n in CRAFTED)
        res = psql(srv, "-c", "select 1; select 2 from missing; select 3")
        assert res.returncode == 1 and 'relation "missing" does not exist' in res.stderr
        assert res.stdout == "1\n"  # psql 15 shows each result; the error stopped the third
        assert srv.sessions[1].queries[-1].text == "select 2 from missing"


def test_psycopg_errors_transactions_and_copy() -> None:
    def responder(query: Query) -> Error | None:
        if "boom" in query.text:
            return Error("boom", "22012")
        return None

    with FakePG(responder) as srv:
        with psycopg.connect(srv.conninfo()) as conn:
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT boom")
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT 1")
            conn.rollback()
            assert conn.execute("SELECT 1").fetchone() == (1,)
            with conn.cursor().copy("COPY public.t (a, b) FROM STDIN") as copy:
                copy.write_row((1, "x\ty"))
                copy.write_row((2, None))
            conn.commit()
            conn.autocommit = True
            conn.execute("CREATE TABLE x (); SET search_path = ''")  # two statements, simple
        texts = srv.queries()
        assert texts[:3] == ["BEGIN", "SELECT boom", "SELECT 1"]
        assert texts[-2:] == ["CREATE TABLE x ()", "SET search_path = ''"]
        assert b"".join(srv.sessions[0].copy_data) == b"1\tx\\ty\n2\t\\N\n"


def test_psycopg_prepared_statements_and_copy_out() -> None:
    def responder(query: Query) -> Rows | CopyOut | None:
        if query.text.startswith("COPY"):
            return CopyOut(["1\ta\n", "2\tb\n"], columns=2)
        if query.params:
            return Rows(["v"], [[f"got {query.params[0]}"]])
        return None

    with FakePG(responder) as srv:
        with psycopg.connect(srv.conninfo(), autocommit=True) as conn:
            got = [conn.execute("SELECT %s", [str(i)], prepare=True).fetchone() for i in range(3)]
            assert got == [("got 0",), ("got 1",), ("got 2",)]
            with conn.cursor().copy("COPY t TO STDOUT") as copy:
                assert [bytes(b) for b in copy] == [b"1\ta\n", b"2\tb\n"]
        assert [q.params for q in srv.sessions[0].queries[:3]] == [("0",), ("1",), ("2",)]


def test_cancel_request_interrupts_a_sleeping_query() -> None:
    started = threading.Event()

    def responder(query: Query) -> Sleep | None:
        if "slow" in query.text:
            started.set()
            return Sleep(30)
        return None

    with FakePG(responder) as srv:
        with psycopg.connect(srv.conninfo(), autocommit=True) as conn:
            # cancel(), the blocking PQcancel, holds the GIL: an in-process server cannot answer it.
            timer = threading.Thread(target=lambda: started.wait(10) and conn.cancel_safe())
            timer.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT slow")
            timer.join()
            assert conn.execute("SELECT 1").fetchone() == (1,)
        session = srv.sessions[0]
        assert srv.cancels == [(session.pid, session.key)]


def test_disconnect_and_fatal_errors_reach_the_client() -> None:
    def responder(query: Query) -> Disconnect | Error | Command | None:
        if "crash" in query.text:
            return Disconnect()
        if "fatal" in query.text:
            return Error("terminating connection", "57P01", "FATAL")
        if "vacuum" in query.text.lower():
            return Command("VACUUM")
        return None

    with FakePG(responder) as srv:
        for word in ("crash", "fatal"):
            conn = psycopg.connect(srv.conninfo(), autocommit=True)
            with conn, pytest.raises(psycopg.OperationalError):
                conn.execute(f"SELECT {word}")
            assert conn.closed
        res = psql(srv, "-c", "VACUUM")
        assert (res.returncode, res.stdout) == (0, "VACUUM\n")
        assert srv.queries() == ["SELECT crash", "SELECT fatal", "VACUUM"]


def test_a_responder_bug_fails_the_test_instead_of_passing_silently() -> None:
    def broken(query: Query) -> None:
        raise RuntimeError("bug in the responder")

    srv = FakePG(broken)
    with pytest.raises(AssertionError, match="bug in the responder"), srv:
        assert psql(srv, "-c", "select 1").returncode == 1


def test_pg_restore_and_psql_restore_real_dumps(pg: Cluster, fresh_db: str, tmp_path: Path) -> None:
    pg.psql("CREATE TABLE public.pets (id int PRIMARY KEY, name text)", db=fresh_db)
    pg.psql("INSERT INTO public.pets VALUES (1, 'rex'), (2, 'tab\there')", db=fresh_db)
    custom = tmp_path / "db.dump"
    plain = tmp_path / "db.sql"
    for fmt, out in (("custom", custom), ("plain", plain)):
        subprocess.run(
            ["pg_dump", f"--format={fmt}", "-f", str(out), "-d", fresh_db],
            env=pg.env(),
            check=True,
            capture_output=True,
        )
    with FakePG(auth="cleartext", password="pw") as srv:
        env = {**pg.env(), "PGPASSWORD": "pw"}
        env.pop("PGHOST"), env.pop("PGPORT")
        res = subprocess.run(
            ["pg_restore", "--exit-on-error", "--single-transaction", "--no-owner"]
            + ["-d", srv.conninfo("victim"), str(custom)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        res = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
            + ["-d", srv.conninfo("victim2"), "-f", str(plain)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        for session in srv.sessions:
            assert session.password == "pw" and session.database in ("victim", "victim2")
            texts = [q.text for q in session.queries]
            assert any(t.startswith("CREATE TABLE public.pets") for t in texts), texts
            assert any(t.startswith("COPY public.pets (id, name) FROM stdin") for t in texts)
            data = b"".join(session.copy_data)
            assert data.split(b"\\.\n")[0] == b"1\trex\n2\ttab\\there\n"  # pg_restore sends \.
            assert texts[-1] == "COMMIT"


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        ("select 1", ["select 1"]),
        ("select 'a;b'; select $x$;$x$ ;", ["select 'a;b'", "select $x$;$x$"]),
        (
            "select E'\\';'; /* ; /* ; */ */ select \"a;\"",
            ["select E'\\';'", '/* ; /* ; */ */ select "a;"'],
        ),
        ("-- only a comment;", []),
        (" ; ;", []),
        ("select 'unterminated; select 2", ["select 'unterminated; select 2"]),
    ],
)
def test_split_statements(sql: str, statements: list[str]) -> None:
    assert split_statements(sql) == statements


@pytest.mark.parametrize(
    ("sql", "names", "types", "has_from"),
    [
        ("SELECT 1", ["?column?"], [23], False),
        ("select format('%I.%I', n.nspname, c.relname) from pg_class c", ["format"], [25], True),
        (
            "SELECT n.nspname AS s, c.relname, count(*) n FROM x",
            ["s", "relname", "n"],
            [25, 25, 20],
            True,
        ),
        (
            "SELECT 'views', (SELECT count(*) FROM pg_class)",
            ["?column?", "?column?"],
            [25, 20],
            False,
        ),
        ("WITH t AS (SELECT 1 a) SELECT a::bigint FROM t", ["a"], [20], True),
        ("SELECT DISTINCT ON (a) a, b FROM t", ["a", "b"], [25, 25], True),
        ("SHOW server_version_num", ["server_version_num"], [25], False),
        ("VALUES (1, 'x')", ["column1", "column2"], [23, 25], False),
        ("SELECT EXISTS (SELECT 1 FROM pg_database)", ["exists"], [16], False),
    ],
)
def test_parse_select(sql: str, names: list[str], types: list[int], has_from: bool) -> None:
    select = parse_select(sql)
    assert select is not None
    assert [c.name for c in select.columns] == names
    assert [guess_type(c.expr) for c in select.columns] == types
    assert select.has_from is has_from


def test_default_answers_like_an_empty_cluster() -> None:
    objects = default_response(
        Query("SELECT 'views', (SELECT count(*) FROM pg_class) UNION ALL SELECT 'types', 0", None)
    )
    assert isinstance(objects, Rows) and objects.rows == [["views", 0], ["types", 0]]
    tables = default_response(Query("SELECT format('%I', relname) FROM pg_class", None))
    assert isinstance(tables, Rows) and tables.rows == [] and tables.columns == ["format"]
    assert default_response(Query("COPY t (a, b) FROM stdin", None)) == CopyIn(2)
    assert default_response(Query("CREATE UNIQUE INDEX i ON t (a)", None)) == Command(
        "CREATE INDEX"
    )


def test_parse_select_is_none_for_commands() -> None:
    for sql in (
        "CREATE TABLE x ()",
        "WITH d AS (DELETE FROM t) INSERT INTO u SELECT 1",
        "SET x = 1",
    ):
        assert parse_select(sql) is None
