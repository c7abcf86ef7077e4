"""What a database holds, read from its catalog with psycopg: the tables a dump carries,
their exact row counts, and the counts of the other objects a restore must bring back.

Every query is fixed text or composed with ``psycopg.sql``; a catalog row is data, checked for
its shape before use, never code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import DatabaseError, IntegrityError
from .client import control_free

if TYPE_CHECKING:
    import psycopg

COUNT_BATCH = 200
CLUSTER_ID_SQL = "SELECT system_identifier::text FROM pg_control_system()"

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


# What pg_dump dumps of an index: not an invalid one (a failed CREATE INDEX CONCURRENTLY
# leaves it; pg_dump skips it) unless it is a partitioned index (dumped, and valid again once
# its partitions' indexes are attached), never one that is being dropped, never one of an
# extension's table (the extension's script makes it).
INDEXES_SQL = (
    "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE c.relkind IN ('i', 'I') AND {USER_NS} AND i.indislive "
    "AND (i.indisvalid OR t.relkind = 'p') "
    f"AND {NOT_EXT.format(oid='t.oid', cat='pg_class')}"
)
# Triggers and constraints of an extension's table or type come with the extension too.
TRIGGERS_SQL = (
    "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND {USER_NS} "
    f"AND {NOT_EXT.format(oid='c.oid', cat='pg_class')}"
)
CONSTRAINTS_SQL = (
    "SELECT count(*) FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace "
    f"WHERE {USER_NS} AND {NOT_EXT.format(oid='k.conrelid', cat='pg_class')} "
    f"AND {NOT_EXT.format(oid='k.contypid', cat='pg_type')}"
)
OBJECTS_SQL = "\nUNION ALL ".join(
    [
        f"SELECT 'sequences', ({_count_rel(repr('S'))})",
        f"SELECT 'views', ({_count_rel(repr('v'))})",
        f"SELECT 'materializedViews', ({_count_rel(repr('m'))})",
        f"SELECT 'foreignTables', ({_count_rel(repr('f'))})",
        f"SELECT 'indexes', ({INDEXES_SQL})",
        "SELECT 'functions', (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON "
        f"n.oid = p.pronamespace WHERE {USER_NS} AND "
        f"{NOT_EXT.format(oid='p.oid', cat='pg_proc')})",
        "SELECT 'types', (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON "
        "n.oid = t.typnamespace "
        f"LEFT JOIN pg_class c ON c.oid = t.typrelid WHERE {USER_NS} AND (t.typtype IN "
        "('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND c.relkind = 'c')) AND "
        f"{NOT_EXT.format(oid='t.oid', cat='pg_type')})",
        f"SELECT 'triggers', ({TRIGGERS_SQL})",
        f"SELECT 'constraints', ({CONSTRAINTS_SQL})",
        "SELECT 'largeObjects', (SELECT count(*) FROM pg_largeobject_metadata)",
    ]
)
OBJECT_KINDS = frozenset(
    {
        "sequences",
        "views",
        "materializedViews",
        "foreignTables",
        "indexes",
        "functions",
        "types",
        "triggers",
        "constraints",
        "largeObjects",
    }
)


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
    """``SELECT count(*) FROM ONLY`` every table, a batch per query, names composed as
    identifiers. ``ONLY``: an inheritance parent's count must not include its children's rows
    (each child is counted on its own, as pg_dump copies each on its own; a foreign child is
    not counted at all, and reading it may need a file or server that is not there)."""
    from psycopg import sql

    counts: dict[str, int] = {}
    for start in range(0, len(tables), COUNT_BATCH):
        batch = tables[start : start + COUNT_BATCH]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, count(*) FROM ONLY {}.{}").format(
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
        names = ", ".join(control_free(k) for k in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise IntegrityError(
            f"the plain dump carries no data that psql would load for {names}{more}: "
            "psql could not restore it (an object named like a keyword, such as a function "
            "called begin, can cause this); use backup.format custom for this database"
        )
    return {key: streamed[(schema, table)] for schema, table, key in tables}
