"""A database whose owner is hostile: names built to become psql meta-commands, to break line
parsing, or to look like the end of a COPY header. create, verify --deep, restore and test all
succeed, count every row exactly, and run nothing: a canary file must never appear."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import SB
from helpers.pgcluster import Cluster
from psycopg import sql

ROLE = "mallory"
ROLE_PASSWORD = "m4ll0ry-pw-" + "x" * 8


def hostile_names(canary: str) -> list[str]:
    bang = f"\\! touch {canary}"
    return [
        'quo"te',
        "back\\slash",
        bang,
        f"x'; {bang}; --",
        f'"\n{bang}\n',
        "unit\x1fsep",
        "new\nline",
        "semi;colon",
        "per%cent %s %(x)s",
        "ünïcødé 😀",
        "\\.",
        ") FROM stdin;",
        "COPY public.t (a) FROM stdin;",
        "Upper Case",
        "é" * 31 + "x",  # 63 bytes of UTF-8: the longest name PostgreSQL keeps
    ]


def _exec(conn: psycopg.Connection[object], query: sql.Composable, *params: object) -> None:
    conn.execute(query, params or None)


@pytest.fixture
def hostile_db(pg: Cluster) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
    """(database, canary path, [(schema, table)]) of a database owned by a role without
    superuser rights, with standard_conforming_strings off."""
    db = "hostile_" + uuid.uuid4().hex[:8]
    canary = f"/tmp/sbb-canary-{secrets.token_hex(4)}"
    pg.psql(
        f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN "
        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'; END IF; END$$"
    )
    pg.psql(f"CREATE DATABASE {db} OWNER {ROLE}")
    pg.psql(f"ALTER DATABASE {db} SET standard_conforming_strings = off")
    names = hostile_names(canary)
    tables: list[tuple[str, str]] = []
    with psycopg.connect(
        host=str(pg.sockdir), port=pg.port, user=ROLE, dbname=db, autocommit=True
    ) as conn:
        schemas = ["public", names[2], names[4], names[6], names[9]]
        for schema in schemas[1:]:
            _exec(conn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for i, name in enumerate(names):
            schema = schemas[i % len(schemas)]
            ident = sql.Identifier(schema, name)
            col = sql.Identifier(names[(i + 1) % len(names)])
            _exec(
                conn,
                sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, {} text)").format(ident, col),
            )
            rows = [f"row {n}: {name}\n\\.\n\t{canary}" for n in range(i + 1)]
            with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(ident, col)) as copy:
                for row in rows:
                    copy.write_row((row,))
            tables.append((schema, name))
        # A table with no columns but rows, an empty table, a view, a sequence, a function
        # whose body looks like a COPY block, and a comment holding a meta-command.
        _exec(conn, sql.SQL("CREATE TABLE {} ()").format(sql.Identifier(names[0] + " empty")))
        _exec(
            conn,
            sql.SQL("INSERT INTO {} SELECT FROM generate_series(1, 3)").format(
                sql.Identifier(names[0] + " empty")
            ),
        )
        tables.append(("public", names[0] + " empty"))
        _exec(conn, sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier("nothing")))
        tables.append(("public", "nothing"))
        _exec(
            conn,
            sql.SQL("CREATE VIEW {} AS SELECT 1 AS {}").format(
                sql.Identifier(names[3]), sql.Identifier(names[5])
            ),
        )
        _exec(conn, sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(names[7])))
        body = f"\nCOPY public.nothing (x) FROM stdin;\n1\n2\n\\.\n{names[2]}\n"
        _exec(
            conn,
            sql.SQL("CREATE FUNCTION {}() RETURNS text LANGUAGE sql AS {}").format(
                sql.Identifier(names[8]), sql.Literal(f"SELECT {body!r}::text")
            ),
        )
        _exec(
            conn,
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                sql.Identifier("nothing"), sql.Literal(f"\n{names[2]}\n\\.\n")
            ),
        )
    yield db, canary, tables
    pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)
    assert not os.path.exists(canary), "a name in the database ran as a command"


def real_counts(pg: Cluster, db: str, tables: list[tuple[str, str]]) -> dict[str, int]:
    """Exact row counts, keyed as the manifest keys them (format('%I.%I'))."""
    out: dict[str, int] = {}
    with psycopg.connect(host=str(pg.sockdir), port=pg.port, user="postgres", dbname=db) as conn:
        for schema, table in tables:
            key = conn.execute("SELECT format('%%I.%%I', %s::text, %s::text)", (schema, table))
            name = key.fetchone()
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            ).fetchone()
            assert name is not None and count is not None
            out[str(name[0])] = int(count[0])
    return out


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_hostile_names_back_up_restore_and_drill(
    pg: Cluster, sb: SB, hostile_db: tuple[str, str, list[tuple[str, str]]], fmt: str
) -> None:
    db, canary, tables = hostile_db
    env = {"DATABASE_URL": pg.url(db), "DB_BACKUP_FORMAT": fmt}
    expected = real_counts(pg, db, tables)
    assert len(expected) == len(tables) and sum(expected.values()) > 0

    record = sb.ok("create", "--json", env=env, timeout=120).json()
    assert isinstance(record, dict)
    assert record["contents"]["tables"] == expected, "the manifest's counts are not exact"
    assert not os.path.exists(canary)

    verify = sb.ok("verify", "--deep", record["id"], "--json", env=env, timeout=120).json()
    assert isinstance(verify, dict) and verify["ok"] is True

    target = f"restored_{uuid.uuid4().hex[:8]}"
    res = sb.ok(
        "restore",
        record["id"],
        "--target-url",
        target,
        "--create-target",
        "--json",
        env=env,
        timeout=120,
    )
    restored = json.loads(res.out)
    assert restored["status"] == "completed"
    assert restored["validation"]["differences"] == []
    assert real_counts(pg, target, tables) == expected
    pg.psql(f"DROP DATABASE {target}")

    drill = sb("test", "--latest", "--json", env=env, timeout=180)
    report = json.loads(drill.out)
    assert report["drill"]["status"] == "passed", report["drill"]
    assert report["drill"]["scratchDropped"] is True
    assert not os.path.exists(canary), "a name in the database ran as a command"


def test_counts_come_from_the_stream_not_a_second_scan(
    pg: Cluster, sb: SB, fresh_db: str, tmp_path: Path
) -> None:
    """A plain dump's counts are what pg_dump wrote: no count(*) ran during create."""
    pg.psql("CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 5000) g", db=fresh_db)
    pg.psql("CREATE TABLE parent (x int) PARTITION BY RANGE (x)", db=fresh_db)
    pg.psql("CREATE TABLE leaf PARTITION OF parent FOR VALUES FROM (0) TO (100)", db=fresh_db)
    pg.psql("INSERT INTO parent SELECT g FROM generate_series(0, 41) g", db=fresh_db)
    pg.psql("CREATE MATERIALIZED VIEW mv AS SELECT * FROM big", db=fresh_db)
    pg.psql("INSERT INTO big VALUES (0)", db=fresh_db)  # mv is now stale
    pg.psql("SELECT pg_stat_reset()", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    record = sb.ok("create", "--json", env=env).json()
    assert isinstance(record, dict)
    # The partitioned parent and the materialized view carry no rows of their own.
    assert record["contents"]["tables"] == {"public.big": 5001, "public.leaf": 42}
    # pg_dump's backend reports its scans as it exits; wait for them, then read once more.
    query = "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables WHERE relname = 'big'"
    deadline = time.monotonic() + 10
    while pg.psql(query, db=fresh_db) == "0" and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    scans = pg.psql(query, db=fresh_db)
    assert scans == "1", f"big was scanned {scans} times: pg_dump's COPY should be the only scan"
    res = sb("test", "--latest", "--json", env=env, timeout=180)
    assert json.loads(res.out)["drill"]["status"] == "passed", res.out


def test_sql_ascii_names_are_bytes_and_still_counted(pg: Cluster, sb: SB) -> None:
    """In an SQL_ASCII database names are raw bytes (here Latin-1 é): create reads them
    losslessly, from the catalog and from the dump stream alike."""
    db = "ascii_" + uuid.uuid4().hex[:8]
    pg.psql(f"CREATE DATABASE {db} ENCODING 'SQL_ASCII' TEMPLATE template0 LOCALE 'C'")
    try:
        script = 'CREATE TABLE "caf\xe9" (x text); INSERT INTO "caf\xe9" VALUES (\'\xe9t\xe9\');\n'
        subprocess.run(
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db],
            input=script.encode("latin-1"),
            env=pg.env(),
            check=True,
            capture_output=True,
        )
        record = sb.ok("create", "--json", env={"DATABASE_URL": pg.url(db)}).json()
        assert isinstance(record, dict)
        assert record["contents"]["tables"] == {'public."café"': 1}
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {db}", check=False)


def test_a_dump_psql_could_not_restore_is_no_backup(pg: Cluster, sb: SB, fresh_db: str) -> None:
    """A function named begin makes psql's BEGIN ATOMIC heuristic swallow the rest of a plain
    dump, every COPY block with it: create fails (exit 13) rather than record a backup no psql
    can restore. The custom format is not affected, and its drill passes."""
    pg.psql("CREATE FUNCTION public.begin() RETURNS int LANGUAGE sql AS $$SELECT 1$$", db=fresh_db)
    pg.psql("CREATE TABLE t1 AS SELECT 'r' || g AS a FROM generate_series(1, 5) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    res = sb("create", env=env)
    assert res.code == 13, res.err
    assert "public.t1" in res.err and "custom" in res.err
    assert [r["status"] for r in sb.ok("list", "--json", env=env).json()] == ["failed"]
    record = sb.ok("create", "--format", "custom", "--json", env=env).json()
    assert isinstance(record, dict) and record["contents"]["tables"] == {"public.t1": 5}
    drill = sb("test", "--latest", "--json", env=env, timeout=180)
    assert json.loads(drill.out)["drill"]["status"] == "passed", drill.out
