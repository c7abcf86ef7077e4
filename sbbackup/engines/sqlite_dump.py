"""SQL text for an SQLite database, the way the ``sqlite3`` shell's ``.dump`` writes it.

``Connection.iterdump()`` (Python 3.11) cannot be restored once a virtual table exists: it
inserts the virtual table's row into ``sqlite_master`` and then its rows into the virtual
table itself, which does not work yet (``no such table``). Like ``.dump``, this module writes
a virtual table only as its ``sqlite_master`` row (under ``PRAGMA writable_schema``) and
copies its shadow tables (FTS5 ``_data``, ``_idx``, ...) as the ordinary tables they are, so
the restored index is the source's, byte for byte, and ``MATCH`` answers the same.

What ``.dump`` leaves out and this keeps: ``PRAGMA user_version`` and ``application_id``,
rowids of rowid tables without an ``INTEGER PRIMARY KEY`` (an FTS external-content index
refers to them), infinities, and text holding NUL or bytes that are not UTF-8.

Order (``.dump``'s): tables in ``sqlite_master`` order with ``sqlite_sequence`` last, then
indexes, triggers and views, so data loads before indexes exist and no trigger fires.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from typing import Any

INTERNAL_PREFIX = "sqlite_"  # names SQLite reserves (case-insensitively) for itself


def is_internal(name: str) -> bool:
    """SQLite's own objects (``sqlite_sequence``, ``sqlite_stat1``, ``sqlite_autoindex_*``):
    a user cannot create a name that starts with ``sqlite_`` in any case. No LIKE, whose
    ``_`` matches any character (``sqliteusers`` is a user's table)."""
    return name[: len(INTERNAL_PREFIX)].lower() == INTERNAL_PREFIX


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class RawText(bytes):
    """A TEXT value Python cannot carry as ``str`` (a NUL, or bytes that are not UTF-8)."""


def text_factory(data: bytes) -> str | RawText:
    """For ``Connection.text_factory``: ``str`` where that is exact, else the bytes."""
    if b"\0" in data:
        return RawText(data)
    try:
        return data.decode()
    except UnicodeDecodeError:
        return RawText(data)


def literal(value: object) -> str:
    """``value`` as an SQL literal that reads back as the same value of the same type."""
    if value is None:
        return "NULL"
    if isinstance(value, RawText):
        return f"CAST(X'{value.hex()}' AS TEXT)"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return quote_text(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)  # the shortest text that reads back as the same double
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"unexpected SQLite value {value!r}")


def dump_lines(con: sqlite3.Connection) -> Iterator[str]:
    """Every statement of the dump, one per item without its newline (a statement spans
    lines only where a value or the schema holds a newline). Runs in the caller's read
    transaction; sets ``con.text_factory``. Starts with ``BEGIN TRANSACTION;`` and ends with
    ``COMMIT;``, as ``iterdump`` did."""
    con.text_factory = text_factory
    yield "BEGIN TRANSACTION;"
    for pragma in ("user_version", "application_id"):
        yield f"PRAGMA {pragma}={int(con.execute(f'PRAGMA {pragma}').fetchone()[0])};"
    tables = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql NOT NULL "
        "ORDER BY tbl_name = 'sqlite_sequence', rowid"
    ).fetchall()
    writable = False
    for name, sql in tables:
        if sql.upper().startswith("CREATE VIRTUAL TABLE"):
            if not writable:
                yield "PRAGMA writable_schema=ON;"
                writable = True
            yield (
                "INSERT INTO sqlite_master(type,name,tbl_name,rootpage,sql) VALUES("
                f"'table',{quote_text(name)},{quote_text(name)},0,{quote_text(sql)});"
            )
            continue  # its rows live in its shadow tables (dumped as tables) or outside
        if name == "sqlite_sequence":
            yield "DELETE FROM sqlite_sequence;"
        elif name.startswith("sqlite_stat"):
            yield "ANALYZE sqlite_master;"  # creates the sqlite_stat tables, empty
        elif is_internal(name):
            continue
        else:
            yield f"{sql};"
        yield from _rows(con, name)
    yield from (
        f"{sql};"
        for (sql,) in con.execute(
            "SELECT sql FROM sqlite_master WHERE sql NOT NULL "
            "AND type IN ('index', 'trigger', 'view') ORDER BY rowid"
        )
    )
    if writable:
        yield "PRAGMA writable_schema=OFF;"
    yield "COMMIT;"


def _rows(con: sqlite3.Connection, table: str) -> Iterator[str]:
    """One INSERT per row naming its columns (generated columns are not among them), and the
    rowid where it is not an alias of an ``INTEGER PRIMARY KEY`` column."""
    q = quote_ident(table)
    info = con.execute(f"PRAGMA table_info({q})").fetchall()
    columns = [str(row[1]) for row in info]
    rowid = _hidden_rowid(con, table, info)
    names = ([rowid] if rowid else []) + [quote_ident(c) for c in columns]
    head = f"INSERT INTO {q}({','.join(names)}) VALUES("
    for row in con.execute(f"SELECT {','.join(names)} FROM {q}"):
        yield head + ",".join(map(literal, row)) + ");"


def _hidden_rowid(con: sqlite3.Connection, table: str, info: list[Any]) -> str | None:
    """The name that reaches ``table``'s rowid when no column carries it (as ``.dump
    --preserve-rowids`` finds it); None for a WITHOUT ROWID table, an INTEGER PRIMARY KEY
    (the column is the rowid), or when columns take all of rowid, _rowid_ and oid."""
    q = quote_ident(table)
    pk = [row for row in info if row[5]]
    pk_index = any(row[3] == "pk" for row in con.execute(f"PRAGMA index_list({q})"))
    if len(pk) == 1 and str(pk[0][2]).upper() == "INTEGER" and not pk_index:
        return None  # an INTEGER PRIMARY KEY (not DESC, which has an index): the rowid
    taken = {str(row[1]).lower() for row in info}
    for name in ("rowid", "_rowid_", "oid"):
        if name in taken:
            continue
        try:
            con.execute(f"SELECT {name} FROM {q} LIMIT 0")
        except sqlite3.OperationalError:  # no such column: a WITHOUT ROWID table
            return None
        return name
    return None
