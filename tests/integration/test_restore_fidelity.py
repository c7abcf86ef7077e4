"""Restore fidelity against the real session cluster (issue 13): database properties survive a
restore, objects are counted as pg_dump dumps them, and the drill's verdict is right both ways.

Every fixture is its own database. Each passing case runs ``create``, ``restore`` into a new
database and the drill (``test --backup``), then compares ``pg_dump --schema-only`` and a full
``pg_dump`` of the source and the restored copy byte for byte (without pg_dump's random
``\\restrict`` lines) and their database properties as ``dbprops.read`` sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import SB
from helpers.manifests import edit_manifest, read_manifest
from helpers.pgcluster import Cluster, dump_bytes
from hypothesis import given
from hypothesis import strategies as st

from sbbackup.engines.base import compare_properties
from sbbackup.engines.postgresql import dbprops


def props_of(pg: Cluster, db: str) -> dict[str, Any]:
    with psycopg.connect(pg.url(db), autocommit=True) as conn:
        if conn.info.parameter_status("server_encoding") == "SQL_ASCII":
            conn.execute("SET client_encoding TO 'LATIN1'")  # as sbbackup reads it
        return dbprops.read(conn)


def drop(pg: Cluster, *names: str) -> None:
    for name in names:
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)


def scratch_dbs(pg: Cluster) -> list[str]:
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'sbbackup_test_%'")
    return [n for n in out.splitlines() if n]


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def role(pg: Cluster, name: str) -> str:
    pg.psql(
        f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') "
        f"THEN CREATE ROLE {quoted(name)}; END IF; END$$"
    )
    return name


@pytest.fixture
def fdw_dir() -> Iterator[Path]:
    """A directory the server (user postgres) can read, for file_fdw's files."""
    path = Path(tempfile.mkdtemp(prefix="sbbackup-fdw-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    for f in path.iterdir():
        f.unlink()
    path.rmdir()


# --- the fixtures ----------------------------------------------------------------------------
# Each builds database ``db`` (already created unless it says how) and returns nothing.

Builder = Callable[[Cluster, str, Path], None]


def stale_matview(pg: Cluster, db: str, _: Path) -> None:
    pg.psql(
        "CREATE TABLE base AS SELECT g AS id FROM generate_series(1, 10) g;"
        "CREATE MATERIALIZED VIEW mv AS SELECT id FROM base;"
        "CREATE INDEX mv_id ON mv (id);"
        "CREATE MATERIALIZED VIEW never_filled AS SELECT 1 AS one WITH NO DATA;"
        "INSERT INTO base SELECT g FROM generate_series(11, 25) g;",  # mv is stale: 10 of 25
        db=db,
    )


def invalid_index(pg: Cluster, db: str, _: Path) -> None:
    pg.psql("CREATE TABLE dup (k int); INSERT INTO dup VALUES (1), (1), (2);", db=db)
    res = subprocess.run(
        ["psql", "-XAtq", "-d", db, "-c", "CREATE UNIQUE INDEX CONCURRENTLY dup_k ON dup (k)"],
        env=pg.env(),
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and "could not create unique index" in res.stderr
    assert (
        pg.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'dup_k'::regclass", db) == "f"
    )
    pg.psql("CREATE INDEX dup_ok ON dup (k)", db=db)


def foreign_children(pg: Cluster, db: str, files: Path) -> None:
    """A file_fdw table as a partition and as an inheritance child, their files missing (as on
    a host where the external data is not mounted), beside ordinary inheritance."""
    missing = files / "not-there.csv"
    pg.psql(
        "CREATE EXTENSION file_fdw; CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;"
        "CREATE TABLE m (id int, v text) PARTITION BY RANGE (id);"
        "CREATE TABLE m_local PARTITION OF m FOR VALUES FROM (0) TO (100);"
        "CREATE FOREIGN TABLE m_ext PARTITION OF m FOR VALUES FROM (100) TO (200) "
        f"SERVER files OPTIONS (filename '{missing}', format 'csv');"
        "INSERT INTO m_local SELECT g, 'v' || g FROM generate_series(1, 7) g;"
        "CREATE TABLE parent (id int, v text);"
        "CREATE TABLE child () INHERITS (parent);"
        "CREATE FOREIGN TABLE ext_child () INHERITS (parent) SERVER files "
        f"OPTIONS (filename '{missing}', format 'csv');"
        "INSERT INTO parent VALUES (1, 'p'), (2, 'p');"
        "INSERT INTO child VALUES (3, 'c'), (4, 'c'), (5, 'c');",
        db=db,
    )


def extension_members(pg: Cluster, db: str, _: Path) -> None:
    pg.psql(
        "CREATE EXTENSION hstore; CREATE EXTENSION pg_trgm;"
        "CREATE TABLE docs (id int PRIMARY KEY, attrs hstore, body text);"
        "CREATE INDEX docs_trgm ON docs USING gin (body gin_trgm_ops);"
        "INSERT INTO docs SELECT g, hstore('k', g::text), 'text ' || g "
        "FROM generate_series(1, 20) g;",
        db=db,
    )


def settings_comment_acl(pg: Cluster, db: str, _: Path) -> None:
    app, tuned, odd = role(pg, "app"), role(pg, "tuned"), role(pg, 'Odd "Role", x=y/z')
    odd_q = quoted(odd)
    pg.psql(
        f"ALTER DATABASE {db} SET work_mem = '7MB';"
        f"ALTER DATABASE {db} SET myapp.flag = 'it''s on';"  # a placeholder (custom) setting
        f'ALTER DATABASE {db} SET search_path = "$user", public, "My Schema";'
        f"ALTER ROLE {tuned} IN DATABASE {db} SET statement_timeout = '5s';"
        f"ALTER ROLE {tuned} IN DATABASE {db} SET search_path = app, public;"
        f"COMMENT ON DATABASE {db} IS 'it''s \"ours\"';"
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC;"
        f"GRANT CONNECT ON DATABASE {db} TO {app};"
        f"GRANT CREATE ON DATABASE {db} TO {odd_q} WITH GRANT OPTION;"
    )
    pg.psql('CREATE SCHEMA "My Schema"; CREATE TABLE "My Schema".t AS SELECT 1 AS one;', db=db)
    # The settings read back as the server stores them; pg_dump's quoting restores them.
    rows = pg.psql(
        "SELECT unnest(setconfig) FROM pg_db_role_setting s "
        f"JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{db}' AND s.setrole = 0"
    )
    assert 'search_path="$user", public, "My Schema"' in rows.splitlines()


def sql_ascii(pg: Cluster, db: str, _: Path) -> None:
    pg.psql(
        f"CREATE DATABASE {db} TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    pg.psql(
        "CREATE TABLE latin (id int, name text);"
        "INSERT INTO latin VALUES (1, E'caf\\xe9'), (2, E'\\xff\\xfe raw'), (3, 'plain');",
        db=db,
    )


def icu_locale(pg: Cluster, db: str, _: Path) -> None:
    pg.psql(
        f"CREATE DATABASE {db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und-u-ks-level2' "
        "LOCALE 'C.UTF-8'"
    )
    pg.psql("CREATE TABLE words AS SELECT unnest(ARRAY['b', 'A', 'a', 'B']) AS w;", db=db)


CASES: dict[str, tuple[Builder, bool]] = {  # name -> (builder, does it create the database)
    "stale_matview": (stale_matview, False),
    "invalid_index": (invalid_index, False),
    "foreign_children": (foreign_children, False),
    "extension_members": (extension_members, False),
    "settings_comment_acl": (settings_comment_acl, False),
    "sql_ascii": (sql_ascii, True),
    "icu_locale": (icu_locale, True),
}


def build(pg: Cluster, case: str, files: Path) -> str:
    builder, creates = CASES[case]
    db = f"fid_{case}_{uuid.uuid4().hex[:6]}"
    if not creates:
        pg.psql(f"CREATE DATABASE {db}")
    builder(pg, db, files)
    return db


@pytest.mark.parametrize("fmt", ["plain", "custom"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_restore_and_drill_are_faithful(
    pg: Cluster, sb: SB, fdw_dir: Path, case: str, fmt: str
) -> None:
    db = build(pg, case, fdw_dir)
    target = f"{db}_r"
    env = {"DATABASE_URL": pg.url(db)}
    try:
        rec = sb.ok("create", "--format", fmt, "--json", env=env).json()
        recorded = read_manifest(sb.backup_path, rec["id"])["database"]["properties"]
        assert recorded == props_of(pg, db)
        res = sb.ok(
            "restore", rec["id"], "--target-url", target, "--create-target", "--json", env=env
        ).json()
        assert res["status"] == "completed"
        assert res["validation"]["differences"] == []
        assert props_of(pg, target) == props_of(pg, db)
        assert dump_bytes(pg, target, "--schema-only") == dump_bytes(pg, db, "--schema-only")
        assert dump_bytes(pg, target) == dump_bytes(pg, db)

        drill = sb("test", "--backup", rec["id"], "--json", env=env)
        assert drill.code == 0, drill.out + drill.err
        report = drill.json()["drill"]
        assert report["status"] == "passed" and report["differences"] == []
        assert report["tables"] == len(rec["contents"]["tables"])
        print(f"{case}/{fmt}: {report['tables']} tables, objects {rec['contents']['objects']}")
        _case_checks(pg, case, db, target, rec)
    finally:
        drop(pg, db, target)
    assert scratch_dbs(pg) == []


def _case_checks(pg: Cluster, case: str, db: str, target: str, rec: dict[str, Any]) -> None:
    """What each fixture is about, seen in the manifest and the restored database."""
    contents, props = rec["contents"], rec["database"]["properties"]
    if case == "stale_matview":
        assert (
            "public.mv" not in contents["tables"] and contents["objects"]["materializedViews"] == 2
        )
        assert contents["objects"]["indexes"] == 1
        # Restored, the view is refreshed (25 rows where the source's still shows 10): no alarm.
        assert pg.psql("SELECT count(*) FROM mv", db) == "10"
        assert pg.psql("SELECT count(*) FROM mv", target) == "25"
        assert (
            pg.psql("SELECT relispopulated FROM pg_class WHERE relname = 'never_filled'", target)
            == "f"
        )
    elif case == "invalid_index":
        assert contents["objects"]["indexes"] == 1  # dup_ok, not the invalid dup_k
        assert pg.psql("SELECT count(*) FROM pg_class WHERE relname = 'dup_k'", target) == "0"
    elif case == "foreign_children":
        assert contents["tables"] == {
            "public.child": 3,
            "public.m_local": 7,
            "public.parent": 2,  # its own rows only, not its children's
        }
        assert contents["objects"]["foreignTables"] == 2
        assert pg.psql("SELECT count(*) FROM ONLY parent", target) == "2"
    elif case == "extension_members":
        # hstore's and pg_trgm's types and functions are theirs: not counted, not dumped.
        assert contents["objects"]["functions"] == 0 and contents["objects"]["types"] == 0
        assert contents["objects"]["indexes"] == 2 and contents["tables"] == {"public.docs": 20}
        assert pg.psql("SELECT count(*) FROM docs WHERE body % 'text 7'", target) != "0"
    elif case == "settings_comment_acl":
        assert {"role": None, "name": "work_mem", "value": "7MB"} in props["settings"]
        assert {"role": None, "name": "myapp.flag", "value": "it's on"} in props["settings"]
        assert {"role": "tuned", "name": "statement_timeout", "value": "5s"} in props["settings"]
        assert props["comment"] == 'it\'s "ours"'
        assert {"grantee": None, "privilege": "CONNECT", "grantable": False} not in props["acl"]
        assert {"grantee": "app", "privilege": "CONNECT", "grantable": False} in props["acl"]
        odd = {"grantee": 'Odd "Role", x=y/z', "privilege": "CREATE", "grantable": True}
        assert odd in props["acl"]
        shown = pg.psql("SHOW search_path", target)  # a new session in the restored database
        assert shown == '"$user", public, "My Schema"'
    elif case == "sql_ascii":
        assert props["encoding"] == "SQL_ASCII" and props["collate"] == "C"
        raw = subprocess.run(
            ["psql", "-XAtq", "-d", target, "-c", "SELECT name FROM latin ORDER BY id"],
            env=pg.env(),
            capture_output=True,
            check=True,
        ).stdout
        assert raw == b"caf\xe9\n\xff\xfe raw\nplain\n"
    elif case == "icu_locale":
        assert props["localeProvider"] == "icu" and props["locale"] == "und-u-ks-level2"
        order = "SELECT string_agg(w, ',' ORDER BY w, w COLLATE \"C\") FROM words"
        assert pg.psql(order, target) == pg.psql(order, db) == "A,a,B,b"


# --- the drill and the validation catch real loss ----------------------------------------------


def test_counts_above_what_the_dump_holds_fail_the_drill(
    pg: Cluster, sb: SB, fdw_dir: Path
) -> None:
    """A manifest that records one materialized view more than the dump holds (counts edited,
    nothing else recomputed): the drill fails with 13 and names the kind."""
    db = build(pg, "stale_matview", fdw_dir)
    env = {"DATABASE_URL": pg.url(db)}
    try:
        rec = sb.ok("create", "--json", env=env).json()
        contents = read_manifest(sb.backup_path, rec["id"])["contents"]
        contents["objects"]["materializedViews"] += 1
        edit_manifest(sb.backup_path, rec["id"], contents=contents)
        res = sb("test", "--backup", rec["id"], "--json", env=env)
        assert res.code == 13, res.out + res.err
        drill = res.json()["drill"]
        assert drill["differences"] == ["materializedViews: 3 in the backup, 2 restored"]
        assert drill["scratchDropped"]
    finally:
        drop(pg, db)
    assert scratch_dbs(pg) == []


def test_sql_ascii_forced_into_utf8_fails_validation(pg: Cluster, sb: SB, fdw_dir: Path) -> None:
    """The issue's false pass: an SQL_ASCII backup loaded into an existing UTF8 database.
    An empty existing target is swapped for a staging database made like the source (so it
    comes back SQL_ASCII); ``--into-existing`` forces the load into the UTF8 one: psql loads
    it, but the rows are not readable as UTF8, and the validation says why (13)."""
    db = build(pg, "sql_ascii", fdw_dir)
    target = f"{db}_utf8"
    env = {"DATABASE_URL": pg.url(db)}
    try:
        rec = sb.ok("create", "--json", env=env).json()
        pg.psql(f"CREATE DATABASE {target}")  # UTF8, the cluster's default
        swapped = sb("restore", rec["id"], "--target-url", target, "--json", env=env)
        assert swapped.code == 0, swapped.err
        encoding = pg.psql(
            f"SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = '{target}'"
        )
        assert encoding.strip() == "SQL_ASCII", encoding
        drop(pg, target)
        pg.psql(f"CREATE DATABASE {target}")
        res = sb("restore", rec["id"], "--target-url", target, "--into-existing", "--json", env=env)
        print(f"exit {res.code}: {res.err.strip()}")
        assert res.code == 13, res.out + res.err
        assert 'database encoding: "SQL_ASCII" in the backup, "UTF8" restored' in res.err
        # Without properties in the manifest (an older sbbackup) there is nothing to compare.
        doc = read_manifest(sb.backup_path, rec["id"])
        database = {k: v for k, v in doc["database"].items() if k != "properties"}
        edit_manifest(sb.backup_path, rec["id"], database=database)
        drop(pg, target)
        pg.psql(f"CREATE DATABASE {target}")
        old = sb("restore", rec["id"], "--target-url", target, "--into-existing", "--json", env=env)
        print(f"old manifest: exit {old.code}")
        assert old.code == 0, old.err  # the limit of an old manifest: documented in the README
    finally:
        drop(pg, db, target)


def test_without_properties_restore_passes_and_a_strict_compare_names_the_loss(
    pg: Cluster, sb: SB, fdw_dir: Path
) -> None:
    """``--no-database-properties``: the restore validates (settings, comment, ACL are not
    judged; the encoding and locale still are), and the strict comparison lists what is lost."""
    db = build(pg, "settings_comment_acl", fdw_dir)
    target = f"{db}_bare"
    env = {"DATABASE_URL": pg.url(db)}
    try:
        rec = sb.ok("create", "--json", env=env).json()
        res = sb.ok(
            "restore",
            rec["id"],
            "--target-url",
            target,
            "--create-target",
            "--no-database-properties",
            "--json",
            env=env,
        ).json()
        assert res["validation"]["differences"] == []
        bare = props_of(pg, target)
        assert bare["settings"] == [] and bare["comment"] is None
        recorded = rec["database"]["properties"]
        assert compare_properties(recorded, bare, applied=False) == []
        diffs = compare_properties(recorded, bare, applied=True)
        print("\n".join(diffs))
        assert any('"work_mem"' in d and "not restored" in d for d in diffs)
        assert any(d.startswith("database comment:") for d in diffs)
        assert any('"grantee": "app"' in d for d in diffs)
        assert any('"grantee": null' in d and "restored, not in the backup" in d for d in diffs)
    finally:
        drop(pg, db, target)


def test_missing_role_and_missing_locale_are_named(pg: Cluster, sb: SB, fdw_dir: Path) -> None:
    """A role the target lacks: exit 3 naming it and --no-database-properties, before any
    database is made; with the flag the restore goes through. A locale the target lacks: exit 3
    naming it, also from the drill, which drops nothing it did not make."""
    db = build(pg, "settings_comment_acl", fdw_dir)
    target = f"{db}_r"
    env = {"DATABASE_URL": pg.url(db)}
    try:
        rec = sb.ok("create", "--json", env=env).json()
        doc = read_manifest(sb.backup_path, rec["id"])
        database = json.loads(json.dumps(doc["database"]))
        database["properties"]["acl"].append(
            {"grantee": "ghost_role", "privilege": "CONNECT", "grantable": False}
        )
        edit_manifest(sb.backup_path, rec["id"], database=database)
        res = sb("restore", rec["id"], "--target-url", target, "--create-target", env=env)
        assert res.code == 3, res.err
        assert "ghost_role" in res.err and "--no-database-properties" in res.err
        assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}'") == "0"
        sb.ok(
            "restore",
            rec["id"],
            "--target-url",
            target,
            "--create-target",
            "--no-database-properties",
            env=env,
        )
        drop(pg, target)

        database["properties"]["acl"].pop()
        database["properties"]["collate"] = "xx_XX.UTF-8"
        edit_manifest(sb.backup_path, rec["id"], database=database)
        res = sb("restore", rec["id"], "--target-url", target, "--create-target", env=env)
        assert res.code == 3 and "LC_COLLATE 'xx_XX.UTF-8'" in res.err, res.err
        print(res.err.strip())
        drill = sb("test", "--backup", rec["id"], "--json", env=env)
        assert drill.code == 3 and "xx_XX.UTF-8" in drill.json()["drill"]["error"]
    finally:
        drop(pg, db, target)
    assert scratch_dbs(pg) == []


# --- pure pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "items"),
    [
        ('"$user", public', ["$user", "public"]),
        ('""$user"", public, ""My Schema""'.replace('""', '"'), ["$user", "public", "My Schema"]),
        ('"a""b", c', ['a"b', "c"]),
        ('""', [""]),
        ("Mixed,  Case ", ["Mixed", "Case"]),
        ('"unterminated', None),
        ("a b", None),
    ],
)
def test_split_guc_list_is_pg_dumps(stored: str, items: list[str] | None) -> None:
    assert dbprops.split_guc_list(stored) == items


def test_create_sql_is_composed(pg: Cluster) -> None:
    props = {
        "encoding": "UTF8",
        "collate": "C.UTF-8",
        "ctype": "C.UTF-8",
        "localeProvider": "icu",
        "locale": "und'; DROP",
        "icuRules": None,
    }
    with psycopg.connect(pg.url()) as conn:
        text = dbprops.create_sql('we"ird', props).as_string(conn)
    assert text == (
        "CREATE DATABASE \"we\"\"ird\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' "
        "LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER 'icu' ICU_LOCALE 'und''; DROP'"
    )


@given(
    st.lists(st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=12), min_size=1)
)
def test_split_guc_list_round_trips_quoted_elements(items: list[str]) -> None:
    stored = ", ".join('"' + i.replace('"', '""') + '"' for i in items)
    assert dbprops.split_guc_list(stored) == items


BASE = {"encoding": "UTF8", "collate": "C.UTF-8", "ctype": "C.UTF-8", "localeProvider": "libc"}
SETTING = {"role": None, "name": "work_mem", "value": "7MB"}


@pytest.mark.parametrize(
    ("expected", "actual", "applied", "diffs"),
    [
        (
            None,
            {**BASE, "encoding": "SQL_ASCII"},
            True,
            [],
        ),  # an older manifest: nothing to compare
        (
            {**BASE, "encoding": "SQL_ASCII"},
            BASE,
            False,
            ['database encoding: "SQL_ASCII" in the backup, "UTF8" restored'],
        ),
        ({**BASE, "settings": [SETTING]}, {**BASE, "settings": []}, False, []),
        (
            {**BASE, "settings": [SETTING]},
            {**BASE, "settings": []},
            True,
            [
                'database settings: {"name": "work_mem", "role": null, "value": "7MB"} '
                "in the backup, not restored"
            ],
        ),
        (
            {**BASE, "comment": "x"},
            {**BASE, "comment": None},
            True,
            ['database comment: "x" in the backup, null restored'],
        ),
        (
            BASE,
            {**BASE, "icuRules": None, "settings": [SETTING]},
            True,
            [],
        ),  # keys it does not hold
        (
            BASE,
            None,
            True,
            ["database properties: recorded in the backup, none read from the restore"],
        ),
    ],
)
def test_compare_properties(
    expected: dict[str, Any] | None, actual: dict[str, Any] | None, applied: bool, diffs: list[str]
) -> None:
    assert compare_properties(expected, actual, applied=applied) == diffs


def test_a_role_that_may_not_apply_the_settings_is_told_what_to_do(pg: Cluster, sb: SB) -> None:
    """A non-superuser restorer cannot ``ALTER ROLE ... IN DATABASE ... SET``: exit 3 with the
    way out, the database it created is dropped; with --no-database-properties it restores."""
    pg.psql(
        "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'restorer') THEN "
        "CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'restorer-pw'; END IF; END$$"
    )
    tuned = role(pg, "tuned")
    db = f"fid_nonsuper_{uuid.uuid4().hex[:6]}"
    target = f"{db}_r"
    pg.psql(f"CREATE DATABASE {db}")
    pg.psql(f"ALTER ROLE {tuned} IN DATABASE {db} SET work_mem = '3MB'")
    env = {"DATABASE_URL": pg.url(db)}
    url = f"postgresql://restorer:restorer-pw@127.0.0.1:{pg.port}/{target}"
    try:
        rec = sb.ok("create", "--json", env=env).json()
        res = sb("restore", rec["id"], "--target-url", url, "--create-target", env=env)
        print(res.err.strip())
        assert res.code == 3, res.err
        assert "may not re-apply" in res.err and "--no-database-properties" in res.err
        assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}'") == "0"
        sb.ok(
            "restore",
            rec["id"],
            "--target-url",
            url,
            "--create-target",
            "--no-database-properties",
            env=env,
        )
        assert props_of(pg, target)["settings"] == []
    finally:
        drop(pg, db, target)
