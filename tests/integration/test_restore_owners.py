"""Owners and privileges come back as pg_dump wrote them, in both formats; a role that may not
give objects away gets a hint naming --no-owner, and --no-owner / --no-privileges / --role
work for plain dumps too. Against the real session cluster and the real command line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import SB
from helpers.pgcluster import PASSWORD, Cluster, plain_dump

STAGING = r"^sbbackup_(restore|replaced)_[0-9a-f]{8}$"


def schema_dump(pg: Cluster, db: str) -> str:
    return plain_dump(pg, db, "--schema-only")


@dataclass
class App:
    db: str
    owner: str  # owns the application's schema, tables, sequence and view
    reader: str  # has SELECT on a table (an ACL the restore must keep)
    restorer: str  # LOGIN CREATEDB, not a superuser, not a member of owner


@pytest.fixture
def app(pg: Cluster, fresh_db: str) -> Iterator[App]:
    tag = uuid.uuid4().hex[:8]
    a = App(fresh_db, f"app_{tag}", f"reader_{tag}", f"restorer_{tag}")
    pg.psql(
        f"CREATE ROLE {a.owner}; CREATE ROLE {a.reader};"
        f"CREATE ROLE {a.restorer} LOGIN CREATEDB PASSWORD '{PASSWORD}'"
    )
    pg.psql(
        f"CREATE SCHEMA shop AUTHORIZATION {a.owner};"
        "CREATE TABLE shop.orders (id serial PRIMARY KEY, item text);"
        "INSERT INTO shop.orders (item) SELECT 'item ' || g FROM generate_series(1, 50) g;"
        "CREATE VIEW shop.recent AS SELECT * FROM shop.orders WHERE id > 40;"
        f"ALTER TABLE shop.orders OWNER TO {a.owner};"
        f"ALTER VIEW shop.recent OWNER TO {a.owner};"
        f"GRANT SELECT ON shop.orders TO {a.reader};"
        "SELECT lo_from_bytea(424242, 'blob');"
        f"ALTER LARGE OBJECT 424242 OWNER TO {a.owner};",
        db=fresh_db,
    )
    yield a
    for db in pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'own_%'").split():
        pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)
    pg.psql(f"DROP DATABASE IF EXISTS {fresh_db} WITH (FORCE)", check=False)
    for role in (a.owner, a.reader, a.restorer):
        pg.psql(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}", check=False)


def owners(pg: Cluster, db: str) -> dict[str, str]:
    rows = pg.psql(
        "SELECT c.relname || '=' || pg_get_userbyid(c.relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'shop' "
        "UNION ALL SELECT 'schema=' || pg_get_userbyid(nspowner) FROM pg_namespace "
        "WHERE nspname = 'shop' UNION ALL SELECT 'lo=' || pg_get_userbyid(lomowner) "
        "FROM pg_largeobject_metadata ORDER BY 1",
        db=db,
    )
    return dict(line.split("=", 1) for line in rows.splitlines())


def as_role(pg: Cluster, role: str, db: str) -> dict[str, str]:
    return {"DATABASE_URL": f"postgresql://{role}:{PASSWORD}@127.0.0.1:{pg.port}/{db}"}


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_a_superuser_restore_keeps_owners_and_privileges(
    pg: Cluster, sb: SB, app: App, fmt: str
) -> None:
    env = {"DATABASE_URL": pg.url(app.db)}
    record = sb.ok("create", "--format", fmt, "--json", env=env).json()
    target = f"own_{fmt}_{uuid.uuid4().hex[:6]}"
    sb.ok("restore", record["id"], "--target-url", target, "--create-target", env=env)
    assert schema_dump(pg, target) == schema_dump(pg, app.db)
    assert set(owners(pg, target).values()) == {app.owner}
    assert (
        pg.psql(f"SELECT has_table_privilege('{app.reader}', 'shop.orders', 'SELECT')", db=target)
        == "t"
    )


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_a_non_superuser_needs_no_owner_and_is_told_so(
    pg: Cluster, sb: SB, app: App, fmt: str
) -> None:
    record = sb.ok("create", "--format", fmt, "--json", env={"DATABASE_URL": pg.url(app.db)}).json()
    env = as_role(pg, app.restorer, app.db)
    target = f"own_nsu_{fmt}_{uuid.uuid4().hex[:6]}"
    res = sb("restore", record["id"], "--target-url", target, "--create-target", env=env)
    assert res.code == 3, res.err
    assert "must be" in res.err and "hint: restore with --no-owner" in res.err
    assert len(res.err.strip().splitlines()) == 1
    dbs = pg.psql("SELECT datname FROM pg_database").split()
    assert target not in dbs and not [d for d in dbs if d.startswith("sbbackup_")]
    res = sb(
        "restore",
        record["id"],
        "--target-url",
        target,
        "--create-target",
        "--no-owner",
        "--json",
        env=env,
    )
    assert res.code == 0, res.err
    assert set(owners(pg, target).values()) == {app.restorer}
    # Privileges are still restored (the restorer owns the objects, so it may grant them).
    assert (
        pg.psql(f"SELECT has_table_privilege('{app.reader}', 'shop.orders', 'SELECT')", db=target)
        == "t"
    )
    assert pg.psql("SELECT count(*) FROM shop.orders", db=target) == "50"


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_no_privileges_and_role(pg: Cluster, sb: SB, app: App, fmt: str) -> None:
    env = {"DATABASE_URL": pg.url(app.db)}
    record = sb.ok("create", "--format", fmt, "--json", env=env).json()
    # An empty target owned by the application role: the swap keeps that owner, so the role
    # may create in it once the load runs SET ROLE.
    target = f"own_np_{fmt}_{uuid.uuid4().hex[:6]}"
    pg.psql(f"CREATE DATABASE {target} OWNER {app.owner}")
    res = sb(
        "restore",
        record["id"],
        "--target-url",
        target,
        "--no-owner",
        "--no-privileges",
        "--role",
        app.owner,
        env=env,
    )
    assert res.code == 0, res.err
    # SET ROLE: what the restore creates belongs to that role, and no GRANT was replayed.
    assert set(owners(pg, target).values()) == {app.owner}
    assert (
        pg.psql(f"SELECT has_table_privilege('{app.reader}', 'shop.orders', 'SELECT')", db=target)
        == "f"
    )
